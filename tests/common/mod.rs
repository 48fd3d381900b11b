//! Shared test harness: start the real `ringcast` binary on 127.0.0.1:0 and talk to it
//! with independent clients (tokio-tungstenite, raw TCP for malformed input).
#![allow(dead_code)]
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any single expected event may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server process, stopped (by its PID) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// `ringcast serve --dev --listen 127.0.0.1:0 --shards 2` plus `extra` flags.
    pub fn dev(extra: &[&str]) -> Server {
        let mut args = vec![
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--no-pin",
        ];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
        cmd.args(args).stdout(Stdio::piped());
        Server::from_command(&mut cmd)
    }

    /// Start a prepared command that runs the server (stdout must be piped).
    pub fn from_command(cmd: &mut Command) -> Server {
        let mut child = cmd
            .env("RINGCAST_LOG", "info")
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ringcast");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                if std::env::var_os("RINGCAST_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("server printed its address");
        Server {
            child,
            addr: addr.parse().expect("address"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` (e.g. "TERM") to the process by its PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Wait up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the process (by its PID) and reap it: no goodbye to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Connect to `/ws` as `user` (dev mode) and wait for `auth_success`.
    pub async fn user(&self, user: &str) -> Ws {
        let mut ws = self.connect(&format!("/ws?user_id={user}")).await;
        let m = recv_json(&mut ws).await;
        assert_eq!(m["type"], "auth_success", "{m}");
        assert_eq!(m["user_id"], user);
        ws
    }

    pub async fn connect(&self, path: &str) -> Ws {
        let (ws, resp) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(self.url(path)))
                .await
                .expect("connect in time")
                .expect("connect");
        assert_eq!(resp.status(), 101);
        ws
    }

    /// One HTTP/1.1 request with `Connection: close`; returns (status, body).
    pub async fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.http_with(method, path, body, &[]).await
    }

    /// Like [`http`](Self::http) with extra headers.
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let body = body.unwrap_or("");
        let extra: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        );
        let raw = raw_exchange(self.addr, req.as_bytes()).await;
        parse_response(&raw)
    }

    pub async fn publish(&self, topic: &str, data: Value) {
        let body = serde_json::json!({ "topic": topic, "data": data }).to_string();
        let (status, resp) = self.http("POST", "/api/v1/publish", Some(&body)).await;
        assert_eq!(status, 200, "{resp}");
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.http("GET", "/api/v1/stats", None).await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }
}

/// Write `text` to a fresh file under the temp dir and return its path.
pub fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ringcast-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Start a server from a config file (2 shards, a free port).
pub fn with_config(toml: &str) -> Server {
    let p = temp_file("ringcast.toml", toml);
    Server::start(&[
        "serve",
        "--config",
        p.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--no-pin",
    ])
}

/// Read until the server closes; the close code (panics on anything else than a close).
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `req`, read until the server closes (or 10 s).
pub async fn raw_exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    out
}

pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Next text message as JSON (control frames are skipped), failing after [`WAIT`].
pub async fn recv_json(ws: &mut Ws) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => panic!("no message within {WAIT:?}"),
            Ok(None) => panic!("connection ended"),
            Ok(Some(Err(e))) => panic!("websocket error: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(&t).expect("server sent JSON")
            }
            Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Assert nothing arrives for `d`.
pub async fn expect_silence(ws: &mut Ws, d: Duration) {
    if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, ws.next()).await {
        panic!("unexpected message: {t}");
    }
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Subscribe and wait for `subscribed`.
pub async fn subscribe(ws: &mut Ws, topic: &str) {
    send_json(ws, serde_json::json!({"type": "subscribe", "topic": topic})).await;
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "subscribed", "{m}");
    assert_eq!(m["topic"], topic);
}

/// Poll `f` until it returns true or [`WAIT`] passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Open connections until both shards hold at least `per_shard` of them (the kernel
/// spreads SO_REUSEPORT connections by hash, so a few tries suffice).
pub async fn users_on_both_shards(srv: &Server, prefix: &str, per_shard: u64) -> Vec<Ws> {
    let mut conns = Vec::new();
    for i in 0..200 {
        conns.push(srv.user(&format!("{prefix}{i}")).await);
        if i % 4 == 3 {
            let s = srv.stats().await;
            let ok = s["shards"]
                .as_array()
                .unwrap()
                .iter()
                .all(|sh| sh["connections"].as_u64().unwrap() >= per_shard);
            if ok {
                return conns;
            }
        }
    }
    panic!("connections did not spread over both shards");
}
