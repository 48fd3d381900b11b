//! Scenario: every kind of bad client message gets an `error` with a stable code and the
//! request's id, and the connection keeps working afterwards.
mod common;
use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(ws: &mut Ws, raw: &str, code: &str) {
    ws.send(Message::Text(raw.to_owned().into())).await.unwrap();
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "error", "{raw} -> {m}");
    assert_eq!(m["code"], code, "{raw} -> {m}");
    assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn bad_messages_get_clear_errors() {
    let srv = Server::dev(&[]);
    let mut ws = srv.user("eve").await;
    expect_error(&mut ws, "{not json", "bad_json").await;
    expect_error(&mut ws, "[1,2]", "bad_request").await;
    expect_error(&mut ws, r#"{"no":"type"}"#, "bad_request").await;
    expect_error(&mut ws, r#"{"type":"teleport"}"#, "unknown_type").await;
    expect_error(&mut ws, r#"{"type":"subscribe"}"#, "bad_request").await;
    expect_error(
        &mut ws,
        r#"{"type":"subscribe","topic":"has space"}"#,
        "invalid_topic",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"unsubscribe","topic":"never"}"#,
        "not_subscribed",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"unsubscribe","topic":"user:user:eve"}"#,
        "forbidden",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"custom","message_type":"x","payload":{}}"#,
        "unsupported",
    )
    .await;
    ws.send(Message::Text(r#"{"type":"subscribe","id":"abc"}"#.into()))
        .await
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["id"], "abc", "id echoed on errors");
    // Still usable.
    send_json(&mut ws, json!({"type":"ping","id":5})).await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_i64(), m["user_id"].as_str()),
        (Some("pong"), Some(5), Some("eve"))
    );
    assert!(m["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn subscription_limit_is_enforced() {
    let srv = Server::dev(&["--max-subscriptions", "3"]);
    let mut ws = srv.user("lim").await;
    // The personal topic counts as one.
    subscribe(&mut ws, "a").await;
    subscribe(&mut ws, "b").await;
    send_json(&mut ws, json!({"type":"subscribe","topic":"c"})).await;
    assert_eq!(recv_json(&mut ws).await["code"], "too_many_subscriptions");
}

#[tokio::test]
async fn api_rejects_bad_bodies() {
    let srv = Server::dev(&[]);
    let cases = [
        ("POST", "/api/v1/publish", Some("{oops"), 400),
        ("POST", "/api/v1/publish", Some("[]"), 422),
        ("POST", "/api/v1/publish", Some(r#"{"data":1}"#), 422),
        (
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"a b","data":1}"#),
            422,
        ),
        ("POST", "/api/v1/publish", Some(r#"{"topic":"t"}"#), 422),
        ("GET", "/api/v1/publish", None, 405),
        ("POST", "/api/v1/stats", None, 405),
        ("POST", "/api/v1/nope", None, 404),
        (
            "POST",
            "/api/v1/users/user/%ZZ/send",
            Some(r#"{"data":1}"#),
            422,
        ),
    ];
    for (m, p, b, want) in cases {
        let (status, body) = srv.http(m, p, b).await;
        assert_eq!(status, want, "{m} {p} {b:?} -> {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(v["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let srv = Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--no-pin",
        "--api-key",
        "k1",
    ]);
    let (status, _) = srv.http("GET", "/api/v1/stats", None).await;
    assert_eq!(status, 401);
    let req = "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: apikey k1\r\nConnection: close\r\n\r\n";
    let (status, _) = parse_response(&raw_exchange(srv.addr, req.as_bytes()).await);
    assert_eq!(status, 200);
    let req = "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: apikey nope\r\nConnection: close\r\n\r\n";
    let (status, _) = parse_response(&raw_exchange(srv.addr, req.as_bytes()).await);
    assert_eq!(status, 401);
    // Production mode without a token: told to authenticate, no dev page, no echo.
    let mut ws = srv.connect("/ws").await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["type"], "auth_required");
    assert_eq!(srv.http("GET", "/", None).await.0, 404);
    assert_eq!(srv.http("GET", "/echo", None).await.0, 404);
}
