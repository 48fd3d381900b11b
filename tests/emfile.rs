//! Scenario: the server runs out of file descriptors (EMFILE on accept). It backs off,
//! keeps serving the connections it has, and accepts again once descriptors free up.
mod common;
use common::*;
use std::process::{Command, Stdio};

#[tokio::test]
async fn emfile_on_accept_is_survived() {
    // Lower (never raise) the open-file limit for the server process only.
    let bin = env!("CARGO_BIN_EXE_ringcast");
    let script =
        format!("ulimit -n 64 && exec {bin} serve --dev --listen 127.0.0.1:0 --shards 1 --no-pin");
    let srv = Server::from_command(
        Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped()),
    );
    let mut first = srv.user("first").await;
    subscribe(&mut first, "t").await;

    // Open far more TCP connections than descriptors remain; many will not be accepted.
    let mut extra = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(srv.addr).await {
            extra.push(s);
        }
    }
    // The existing connection still works while descriptors are exhausted.
    send_json(&mut first, serde_json::json!({"type":"ping","id":1})).await;
    assert_eq!(recv_json(&mut first).await["type"], "pong");
    // Free the descriptors: the server accepts again.
    drop(extra);
    let deadline = std::time::Instant::now() + WAIT;
    let mut later = loop {
        let attempt = tokio_tungstenite::connect_async(srv.url("/ws?user_id=later"));
        if let Ok(Ok((ws, _))) =
            tokio::time::timeout(std::time::Duration::from_millis(500), attempt).await
        {
            break ws;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server never accepted again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(recv_json(&mut later).await["type"], "auth_success");
    let stats = srv.stats().await;
    assert!(
        stats["shards"][0]["accept_errors"].as_u64().unwrap() > 0,
        "{stats}"
    );
    srv.publish("t", serde_json::json!("still here")).await;
    assert_eq!(recv_json(&mut first).await["data"], "still here");
}
