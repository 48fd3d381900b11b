//! One RESP connection: address parsing, connect + handshake, a streaming reply
//! reader, and the reconnect backoff.
//!
//! RESP is spoken by hand over a plain tokio `TcpStream` rather than through
//! `redis::aio`'s multiplexed connection because the link needs control the
//! driver does not give: exactly one `write` per batch, replies matched to the
//! batch in order, a deadline on the whole round trip, and failure of everything in
//! flight the moment the socket breaks. The `redis` crate still does all the
//! encoding (`Cmd::write_packed_command`) and the incremental decoding
//! (`ValueCodec`), so no protocol parsing lives here.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use redis::{ConnectionAddr, IntoConnectionInfo, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// `url` with any password replaced by `***`, for logs and errors.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Where and how to connect, parsed once from the `redis://` URL.
#[derive(Clone)]
pub(super) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Endpoint {
    pub fn parse(url: &str) -> std::io::Result<Endpoint> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let shown = redact(url);
        let info = url
            .into_connection_info()
            .map_err(|e| invalid(format!("bad redis url {shown:?}: {e}")))?;
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => {
                return Err(invalid(format!(
                    "redis url {shown:?}: only plain tcp (redis://) is supported, got {other:?}"
                )))
            }
        };
        let r = info.redis_settings();
        Ok(Endpoint {
            host,
            port,
            db: r.db(),
            username: r.username().map(str::to_owned),
            password: r.password().map(str::to_owned),
        })
    }
}

/// Why a connection attempt or an established connection failed. Internal: callers
/// only ever see [`super::LinkError::Down`]; this is for logs and `last_error`.
#[derive(Debug)]
pub(super) enum ConnError {
    Io(std::io::Error),
    Timeout(&'static str),
    Closed,
    Protocol(String),
    Redis(String),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "i/o error: {e}"),
            ConnError::Timeout(what) => write!(f, "timed out {what}"),
            ConnError::Closed => f.write_str("connection closed by server"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Redis(e) => write!(f, "redis error: {e}"),
        }
    }
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(e)
    }
}

/// Reading side of a connection: a buffer plus the incremental RESP decoder.
/// `next` is cancel-safe (its only await point is `read_buf`, and partial input
/// stays in `buf`/`codec`), so it can sit in a `select!`.
pub(super) struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    codec: redis::ValueCodec,
}

const READ_CHUNK: usize = 64 * 1024;
/// Buffers that grew past this (one huge reply or batch) are given back afterwards.
pub(super) const SHRINK_ABOVE: usize = 4 * 1024 * 1024;

impl Reader {
    /// The next value if it is already complete in the buffer; never reads.
    pub fn decode_buffered(&mut self) -> Result<Option<Value>, ConnError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.codec
            .decode(&mut self.buf)
            .map_err(|e| ConnError::Protocol(e.to_string()))
    }

    pub async fn next(&mut self) -> Result<Value, ConnError> {
        loop {
            if !self.buf.is_empty() {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(v)) => return Ok(v),
                    Ok(None) => {}
                    Err(e) => return Err(ConnError::Protocol(e.to_string())),
                }
            }
            if self.buf.capacity() > SHRINK_ABOVE && self.buf.is_empty() {
                self.buf = BytesMut::with_capacity(READ_CHUNK);
            }
            self.buf.reserve(READ_CHUNK);
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }
}

/// Connects, applies the handshake (AUTH, SELECT when `select_db`, PING) and splits
/// the stream. The whole attempt is bounded by `timeout`.
pub(super) async fn connect(
    ep: &Endpoint,
    select_db: bool,
    timeout: Duration,
) -> Result<(Reader, OwnedWriteHalf), ConnError> {
    tokio::time::timeout(timeout, connect_inner(ep, select_db))
        .await
        .map_err(|_| ConnError::Timeout("connecting"))?
}

async fn connect_inner(
    ep: &Endpoint,
    select_db: bool,
) -> Result<(Reader, OwnedWriteHalf), ConnError> {
    let stream = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
    stream.set_nodelay(true)?;
    let (rd, mut wr) = stream.into_split();
    let mut reader = Reader {
        rd,
        buf: BytesMut::with_capacity(READ_CHUNK),
        codec: redis::ValueCodec::default(),
    };
    let mut hello = redis::pipe();
    if let Some(pw) = &ep.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &ep.username {
            auth.arg(user);
        }
        auth.arg(pw);
        hello.add_command(auth);
    }
    if select_db && ep.db != 0 {
        hello.cmd("SELECT").arg(ep.db);
    }
    // PING proves the server is serving (not still LOADING) before we report Up.
    hello.cmd("PING");
    wr.write_all(&hello.get_packed_pipeline()).await?;
    for _ in 0..hello.len() {
        if let Value::ServerError(e) = reader.next().await? {
            return Err(ConnError::Redis(e.to_string()));
        }
    }
    Ok((reader, wr))
}

/// Exponential reconnect backoff, 50 ms doubling up to `max`, with ±25 % jitter so
/// that a fleet of nodes does not reconnect in lock step after a Redis restart.
pub(super) struct Backoff {
    next: Duration,
    max: Duration,
    seed: u64,
}

const BACKOFF_START: Duration = Duration::from_millis(50);

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        Backoff {
            next: BACKOFF_START.min(max),
            max,
            seed,
        }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START.min(self.max);
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter only, no need for a real RNG.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let quarter = base / 4;
        let span = quarter.as_micros() as u64 * 2 + 1;
        base - quarter + Duration::from_micros(self.seed % span)
    }
}

/// Appends `PUBLISH channel payload` (`SPUBLISH` when `sharded`) in RESP, copying
/// the payload once, straight into the batch buffer (building a `redis::Cmd` would
/// copy it twice). Tested byte-for-byte against `redis::cmd("PUBLISH")`.
pub(super) fn encode_publish(out: &mut Vec<u8>, sharded: bool, channel: &[u8], payload: &[u8]) {
    out.extend_from_slice(if sharded {
        b"*3\r\n$8\r\nSPUBLISH\r\n"
    } else {
        b"*3\r\n$7\r\nPUBLISH\r\n"
    });
    bulk(out, channel);
    bulk(out, payload);
}

/// Appends `*N` / `$len` style headers and bulk strings.
fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    decimal(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_encoding_matches_redis_crate() {
        for (ch, payload) in [
            ("ringcast:app:1", &b"{\"x\":1}"[..]),
            ("", &b""[..]),
            ("c", &[0u8, 13, 10, 255][..]),
            ("chan", &[b'a'; 1234][..]),
        ] {
            for (sharded, verb) in [(false, "PUBLISH"), (true, "SPUBLISH")] {
                let mut ours = Vec::new();
                encode_publish(&mut ours, sharded, ch.as_bytes(), payload);
                let theirs = redis::cmd(verb).arg(ch).arg(payload).get_packed_command();
                assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:pw@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("redis://u:p@ss@h"), "redis://u:***@h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let err = Endpoint::parse("rediss://:topsecret@h:1").err().unwrap();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }

    #[test]
    fn parses_urls() {
        let ep = Endpoint::parse("redis://:secret@127.0.0.1:6380/3").unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.db), ("127.0.0.1", 6380, 3));
        assert_eq!(ep.password.as_deref(), Some("secret"));
        let ep = Endpoint::parse("redis://localhost").unwrap();
        assert_eq!((ep.port, ep.db), (6379, 0));
        assert!(Endpoint::parse("not a url").is_err());
        assert!(Endpoint::parse("unix:///tmp/redis.sock").is_err());
    }

    #[test]
    fn backoff_grows_to_max_with_jitter() {
        let max = Duration::from_millis(400);
        let mut b = Backoff::new(max);
        let first = b.next_delay();
        assert!(first >= Duration::from_micros(37_500) && first <= Duration::from_micros(62_500));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= max + max / 4, "{d:?}");
        }
        let d = b.next_delay();
        assert!(d >= max - max / 4, "{d:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_micros(62_500));
    }
}
