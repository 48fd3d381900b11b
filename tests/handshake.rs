//! Scenario: malformed and refused handshakes get the right HTTP answer, and the server
//! keeps serving afterwards.
mod common;
use common::*;

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn handshake_answers() {
    let srv = Server::dev(&["--request-timeout", "1"]);
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases: Vec<(String, u16)> = vec![
        (upgrade("/ws", &format!("{key}Sec-WebSocket-Version: 13\r\n")), 101),
        (upgrade("/ws", &format!("{key}Sec-WebSocket-Version: 8\r\n")), 426),
        (upgrade("/ws", "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n"), 400),
        (upgrade("/ws", "Sec-WebSocket-Version: 13\r\n"), 400),
        (upgrade("/nowhere", &format!("{key}Sec-WebSocket-Version: 13\r\n")), 404),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".into(), 426),
        (format!("POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"), 405),
        ("NOT HTTP AT ALL\r\n\r\n".into(), 400),
        (format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)), 431),
        (format!("GET / HTTP/1.1\r\n{}\r\n", (0..80).map(|i| format!("H{i}: v\r\n")).collect::<String>()), 431),
        ("POST /api/v1/publish HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n".into(), 413),
        ("POST /api/v1/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".into(), 411),
        ("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 200),
        ("DELETE /health HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 405),
        ("GET /missing HTTP/1.1\r\nConnection: close\r\n\r\n".into(), 404),
    ];
    for (req, want) in cases {
        let raw = if want == 101 {
            // The server keeps a WebSocket open: read just the head.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(
                head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                "{head}"
            );
            buf.truncate(n);
            buf
        } else {
            raw_exchange(srv.addr, req.as_bytes()).await
        };
        let (status, _) = parse_response(&raw);
        assert_eq!(status, want, "request {:?}", &req[..req.len().min(60)]);
    }
    // Still serving.
    let _ws = srv.user("after").await;
}

#[tokio::test]
async fn slowloris_is_cut_off() {
    let srv = Server::dev(&["--request-timeout", "1"]);
    let started = std::time::Instant::now();
    // Half a request, then nothing: answered 408 and closed at the deadline.
    let raw = raw_exchange(srv.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(parse_response(&raw).0, 408);
    assert!(
        started.elapsed() < WAIT,
        "closed by the server, not by the test's timeout"
    );
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let srv = Server::dev(&[]);
    let two = "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let raw = raw_exchange(srv.addr, two.as_bytes()).await;
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
}
