//! Scenario: frames that break RFC 6455 get a Close frame with the right code before the
//! server drops the TCP connection, and the server keeps serving. Raw sockets, since a
//! conforming client library refuses to send such frames.
mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn open(srv: &Server, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Read the 101 head exactly (up to the blank line).
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Read server frames until a Close; return its code. Other frames are skipped.
async fn close_code(s: &mut TcpStream) -> u16 {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    // Walk the unmasked server frames.
    let mut i = 0;
    while i + 2 <= all.len() {
        let op = all[i] & 0x0f;
        let (len, off) = match all[i + 1] & 0x7f {
            126 => (u16::from_be_bytes([all[i + 2], all[i + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(all[i + 2..i + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if op == 0x8 {
            return u16::from_be_bytes([all[i + off], all[i + off + 1]]);
        }
        i += off + len;
    }
    panic!("no close frame in {} bytes", all.len());
}

async fn expect_close(srv: &Server, path: &str, bytes: Vec<u8>, want: u16) {
    let mut s = open(srv, path).await;
    s.write_all(&bytes).await.unwrap();
    assert_eq!(
        close_code(&mut s).await,
        want,
        "{path} {:02x?}",
        &bytes[..bytes.len().min(12)]
    );
}

#[tokio::test]
async fn protocol_violations_get_their_close_codes() {
    let srv = Server::dev(&["--max-message", "2048"]);
    // Unmasked client frame.
    expect_close(&srv, "/echo", vec![0x81, 0x02, b'h', b'i'], 1002).await;
    // Reserved bit set.
    expect_close(&srv, "/echo", frame(0x81 | 0x40, b"hi"), 1002).await;
    // Reserved opcode 3.
    expect_close(&srv, "/echo", frame(0x83, b"hi"), 1002).await;
    // Continuation with nothing to continue.
    expect_close(&srv, "/echo", frame(0x80, b"hi"), 1002).await;
    // Fragmented control frame.
    expect_close(&srv, "/echo", frame(0x09, b"x"), 1002).await;
    // Invalid UTF-8 in a text message.
    expect_close(&srv, "/echo", frame(0x81, &[0xce, 0xba, 0xff, 0xfe]), 1007).await;
    // Message over the protocol endpoint's limit.
    expect_close(&srv, "/ws", frame(0x81, &vec![b'a'; 4096]), 1009).await;
    // Binary on the JSON protocol endpoint.
    expect_close(&srv, "/ws", frame(0x82, b"\x00\x01"), 1003).await;
    // Close with an invalid code.
    expect_close(&srv, "/echo", frame(0x88, &999u16.to_be_bytes()), 1002).await;
    // A client's Close is answered with the same code.
    expect_close(&srv, "/echo", frame(0x88, &4321u16.to_be_bytes()), 4321).await;
    expect_close(&srv, "/ws", frame(0x88, &1000u16.to_be_bytes()), 1000).await;
    // Still serving.
    let _ws = srv.user("ok").await;
}

#[tokio::test]
async fn fragments_with_interleaved_ping_are_reassembled() {
    let srv = Server::dev(&[]);
    let mut s = open(&srv, "/echo").await;
    let mut bytes = frame(0x01, b"Hel");
    bytes.extend(frame(0x89, b"p"));
    bytes.extend(frame(0x80, b"lo"));
    s.write_all(&bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 3 + 7 {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // Pong for the ping first, then the whole message.
    assert_eq!(&got[..3], &[0x8a, 0x01, b'p']);
    assert_eq!(&got[3..10], &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
}

#[tokio::test]
async fn quiet_peer_is_pinged_then_closed() {
    let srv = Server::dev(&["--ping-interval", "1"]);
    let mut s = open(&srv, "/ws").await;
    let started = std::time::Instant::now();
    // Never answer: after a ping and another quiet interval the server closes (1001).
    assert_eq!(close_code(&mut s).await, 1001);
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A client that answers pings (tungstenite does) stays connected.
    let mut ws = srv.user("alive").await;
    expect_silence(&mut ws, Duration::from_secs(4)).await;
    send_json(&mut ws, serde_json::json!({"type":"ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
}
