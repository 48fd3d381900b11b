//! Backend hooks: signed HTTP calls from ringcast to an app's backend (connect,
//! disconnect, subscribe, custom messages).
//!
//! Shards never block on a backend. Calls are handed to one dedicated thread that runs
//! a small tokio runtime with a pooled HTTP client (`reqwest`, rustls), and the answer
//! comes back through a channel the calling task awaits with its own deadline. A slow or
//! failing backend therefore costs the caller a clear error after the timeout, never a
//! stalled shard.
//!
//! Each request carries `X-Ringcast-Timestamp` (unix seconds) and
//! `X-Ringcast-Signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`, so the
//! backend can reject forged or replayed requests (see README for a verifier).
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Queue bound between shards and the hook thread: beyond it calls fail fast
/// ("hook queue full") instead of buffering without bound.
const QUEUE: usize = 65_536;

/// Most bytes of a backend answer read into memory.
pub const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("the backend did not answer in time")]
    Timeout,
    #[error("the backend is unreachable")]
    Unreachable,
    #[error("the backend answered HTTP {0}")]
    Status(u16),
    #[error("the backend's answer is too large")]
    TooLarge,
    #[error("too many backend calls in flight")]
    Overloaded,
}

/// A backend's successful answer.
#[derive(Debug, Clone)]
pub struct HookAnswer {
    pub status: u16,
    pub body: Bytes,
}

struct Job {
    url: Arc<str>,
    secret: Arc<[u8]>,
    body: Bytes,
    timeout: Duration,
    reply: flume::Sender<Result<HookAnswer, HookError>>,
}

/// Handle to the hook thread; cheap to clone, usable from any shard.
#[derive(Clone)]
pub struct HookClient {
    tx: flume::Sender<Job>,
}

impl HookClient {
    /// Start the hook thread.
    pub fn start() -> std::io::Result<HookClient> {
        let (tx, rx) = flume::bounded::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("hooks".into())
            .spawn(move || {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("hook runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let client = match reqwest::Client::builder()
                        .pool_max_idle_per_host(64)
                        .build()
                    {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!("hook HTTP client: {e}");
                            return;
                        }
                    };
                    while let Ok(job) = rx.recv_async().await {
                        let client = client.clone();
                        tokio::spawn(async move {
                            let res = tokio::time::timeout(job.timeout, send(&client, &job)).await;
                            let _ = job.reply.send(res.unwrap_or(Err(HookError::Timeout)));
                        });
                    }
                });
            })?;
        Ok(HookClient { tx })
    }

    /// POST `body` (JSON) to `url`, signed with `secret`; resolves within `timeout`.
    pub async fn call(
        &self,
        url: Arc<str>,
        secret: Arc<[u8]>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<HookAnswer, HookError> {
        let (reply, answer) = flume::bounded(1);
        self.tx
            .try_send(Job {
                url,
                secret,
                body,
                timeout,
                reply,
            })
            .map_err(|_| HookError::Overloaded)?;
        // The hook thread enforces the timeout; this deadline is a backstop in case it is gone.
        match monoio::time::timeout(timeout + Duration::from_millis(250), answer.recv_async()).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HookError::Unreachable),
            Err(_) => Err(HookError::Timeout),
        }
    }
}

async fn send(client: &reqwest::Client, job: &Job) -> Result<HookAnswer, HookError> {
    let ts = unix_secs();
    let resp = client
        .post(&*job.url)
        .header("content-type", "application/json")
        .header("x-ringcast-timestamp", ts.to_string())
        .header(
            "x-ringcast-signature",
            signature(&job.secret, ts, &job.body),
        )
        .body(job.body.clone())
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                HookError::Timeout
            } else {
                HookError::Unreachable
            }
        })?;
    let status = resp.status().as_u16();
    if resp
        .content_length()
        .is_some_and(|n| n as usize > MAX_ANSWER)
    {
        return Err(HookError::TooLarge);
    }
    let body = resp.bytes().await.map_err(|_| HookError::Unreachable)?;
    if body.len() > MAX_ANSWER {
        return Err(HookError::TooLarge);
    }
    Ok(HookAnswer { status, body })
}

pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // The signed message is exactly "{timestamp}.{body}" (what backends recompute);
        // expected value computed independently with Python's `hmac` module:
        // hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#),
            "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        assert_ne!(
            signature(b"other", 1_700_000_000, br#"{"a":1}"#),
            signature(b"key", 1_700_000_000, br#"{"a":1}"#)
        );
    }
}
