//! Scenario: a backend sends to one user; every connection of that user receives it (on
//! whichever shard), and no other user does.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn send_to_user_reaches_all_of_its_connections_only() {
    let srv = Server::dev(&[]);
    // Several connections for alice so they land on both shards.
    let mut alice = Vec::new();
    for _ in 0..6 {
        alice.push(srv.user("alice").await);
    }
    let mut bob = srv.user("bob").await;
    let (status, body) = srv
        .http(
            "POST",
            "/api/v1/users/user/alice/send",
            Some(r#"{"data":{"toast":"hello"}}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for ws in alice.iter_mut() {
        let m = recv_json(ws).await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["topic"], "user");
        assert_eq!(m["data"]["toast"], "hello");
    }
    expect_silence(&mut bob, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn user_types_are_separate_and_personal_topics_are_private() {
    let srv = Server::dev(&[]);
    let mut staff = srv.connect("/ws?user_id=7&user_type=staff").await;
    assert_eq!(recv_json(&mut staff).await["user_type"], "staff");
    let mut user7 = srv.user("7").await;
    srv.http("POST", "/api/v1/users/staff/7/send", Some(r#"{"data":1}"#))
        .await;
    assert_eq!(recv_json(&mut staff).await["data"], 1);
    expect_silence(&mut user7, Duration::from_millis(150)).await;

    // Nobody may join or publish to someone else's personal topic.
    send_json(
        &mut user7,
        json!({"type":"subscribe","topic":"user:staff:7","id":2}),
    )
    .await;
    let m = recv_json(&mut user7).await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str(), m["id"].as_i64()),
        (Some("error"), Some("forbidden"), Some(2))
    );
    send_json(
        &mut user7,
        json!({"type":"publish","topic":"user:staff:7","data":1}),
    )
    .await;
    assert_eq!(recv_json(&mut user7).await["code"], "forbidden");
}

#[tokio::test]
async fn authenticate_message_in_dev_mode() {
    let srv = Server::dev(&[]);
    let mut ws = srv.connect("/ws").await;
    assert_eq!(recv_json(&mut ws).await["user_type"], "anonymous");
    send_json(&mut ws, json!({"type":"authenticate","token":"carol"})).await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["type"], "auth_success");
    assert_eq!(m["user_id"], "carol");
    srv.http(
        "POST",
        "/api/v1/users/user/carol/send",
        Some(r#"{"data":"x"}"#),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["data"], "x");
    send_json(
        &mut ws,
        json!({"type":"authenticate","token":"dave","id":9}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("already_authenticated"), Some(9))
    );
}
