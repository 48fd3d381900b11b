//! Scenario: without dev mode a connection that does not authenticate is told
//! `auth_required` and closed with 4001 after the auth timeout.
mod common;
use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn unauthenticated_connection_is_closed_with_4001() {
    let srv = Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--no-pin",
        "--auth-timeout",
        "1",
    ]);
    let mut ws = srv.connect("/ws").await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["type"], "auth_required");
    assert_eq!(m["timeout"], 1);
    // Subscribing before authenticating is refused.
    send_json(&mut ws, serde_json::json!({"type":"subscribe","topic":"t"})).await;
    assert_eq!(recv_json(&mut ws).await["code"], "not_authenticated");
    let started = std::time::Instant::now();
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 4001);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
