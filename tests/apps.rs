//! Scenario: one server, two apps from a config file. Apps never see each other's
//! messages; namespaces decide who may subscribe and publish (roles, token topics,
//! owners); endpoint templates auto-subscribe; origins, the per-user connection limit
//! and the message rate limit are enforced.
mod common;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::Duration;

const SA: &str = "secret-of-app-a-secret-of-app-a-secret";
const SB: &str = "secret-of-app-b-secret-of-app-b-secret";

fn config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_key = "admin-key"

[apps.a]
api_key = "key-a"
[apps.a.jwt]
hs256_secrets = ["{SA}"]
[apps.a.limits]
max_connections_per_user = 4
[[apps.a.endpoints]]
path = "/ws/a"
allowed_origins = ["https://a.example"]
[[apps.a.endpoints]]
path = "/ws/a/posts/{{post_id}}/"
subscribe = ["post:{{post_id}}"]
[[apps.a.endpoints]]
path = "/ws/a/status"
auth = "none"
subscribe = ["public:status"]
[[apps.a.namespaces]]
name = "chat"
subscribe = "authenticated"
publish = "authenticated"
[[apps.a.namespaces]]
name = "staff"
subscribe = "role:staff"
[[apps.a.namespaces]]
name = "team"
subscribe = "token"
[[apps.a.namespaces]]
name = "inbox"
subscribe = "owner"
[[apps.a.namespaces]]
name = "post"
subscribe = "authenticated"
[[apps.a.namespaces]]
name = "public"
subscribe = "anyone"
[[apps.a.namespaces]]
name = "room"
subscribe = "authenticated"
join_leave = true

[apps.b]
api_key = "key-b"
[apps.b.jwt]
hs256_secrets = ["{SB}"]
[apps.b.limits]
messages_per_second = 1
message_burst = 3
connect_attempts_per_ip_per_minute = 6
[[apps.b.endpoints]]
path = "/ws/b"
[[apps.b.namespaces]]
name = "chat"
subscribe = "authenticated"
"#
    )
}

fn token(secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn join(srv: &Server, path: &str, secret: &str, claims: serde_json::Value) -> Ws {
    let mut ws = srv
        .connect(&format!("{path}?token={}", token(secret, claims)))
        .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["type"], "auth_success", "{m}");
    ws
}

async fn api(
    srv: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, text) = srv
        .http_with(
            method,
            path,
            body,
            &[("Authorization", &format!("apikey {key}"))],
        )
        .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn apps_are_isolated() {
    let srv = with_config(&config());
    let mut a = join(&srv, "/ws/a", SA, json!({"sub": "u1"})).await;
    let mut b = join(&srv, "/ws/b", SB, json!({"sub": "u1"})).await;
    subscribe(&mut a, "chat:lobby").await;
    subscribe(&mut b, "chat:lobby").await;
    // Same topic name, same user id: each app's API reaches only its own app.
    assert_eq!(
        api(
            &srv,
            "key-a",
            "POST",
            "/api/v1/publish",
            Some(r#"{"topic":"chat:lobby","data":"for a"}"#)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api(
            &srv,
            "key-b",
            "POST",
            "/api/v1/users/user/u1/send",
            Some(r#"{"data":"for b"}"#)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api(
            &srv,
            "key-a",
            "POST",
            "/api/v1/broadcast",
            Some(r#"{"data":"all of a"}"#)
        )
        .await
        .0,
        200
    );
    assert_eq!(recv_json(&mut a).await["data"], "for a");
    assert_eq!(recv_json(&mut a).await["data"], "all of a");
    assert_eq!(recv_json(&mut b).await["data"], "for b");
    expect_silence(&mut a, Duration::from_millis(150)).await;
    expect_silence(&mut b, Duration::from_millis(150)).await;
    // A client publish in app a stays in app a.
    send_json(
        &mut a,
        json!({"type":"publish","topic":"chat:lobby","data":"from a client"}),
    )
    .await;
    assert_eq!(recv_json(&mut a).await["data"], "from a client");
    expect_silence(&mut b, Duration::from_millis(150)).await;
    // A token of app b does not open app a; app a's key cannot act on app b.
    let mut wrong = srv
        .connect(&format!("/ws/a?token={}", token(SB, json!({"sub": "x"}))))
        .await;
    assert_eq!(recv_json(&mut wrong).await["code"], "auth_failed");
    assert_eq!(
        api(
            &srv,
            "key-a",
            "POST",
            "/api/v1/publish?app=b",
            Some(r#"{"topic":"chat:lobby","data":1}"#)
        )
        .await
        .0,
        403
    );
    // The admin key can act on app b and broadcast everywhere.
    assert_eq!(
        api(
            &srv,
            "admin-key",
            "POST",
            "/api/v1/publish?app=b",
            Some(r#"{"topic":"chat:lobby","data":"admin"}"#)
        )
        .await
        .0,
        200
    );
    assert_eq!(recv_json(&mut b).await["data"], "admin");
    assert_eq!(
        api(
            &srv,
            "admin-key",
            "POST",
            "/api/v1/broadcast",
            Some(r#"{"data":"everyone","all_apps":true}"#)
        )
        .await
        .0,
        200
    );
    assert_eq!(recv_json(&mut a).await["data"], "everyone");
    assert_eq!(recv_json(&mut b).await["data"], "everyone");
    assert_eq!(
        api(
            &srv,
            "key-a",
            "POST",
            "/api/v1/broadcast",
            Some(r#"{"data":1,"all_apps":true}"#)
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn namespaces_decide_who_may_subscribe_and_publish() {
    let srv = with_config(&config());
    let mut plain = join(&srv, "/ws/a", SA, json!({"sub": "p"})).await;
    let mut staff = join(
        &srv,
        "/ws/a",
        SA,
        json!({"sub": "s", "roles": ["staff"], "topics": ["team:red*"]}),
    )
    .await;
    let deny = |m: serde_json::Value| assert_eq!(m["code"], "forbidden", "{m}");
    send_json(&mut plain, json!({"type":"subscribe","topic":"staff:dash"})).await;
    deny(recv_json(&mut plain).await);
    subscribe(&mut staff, "staff:dash").await;
    send_json(&mut plain, json!({"type":"subscribe","topic":"team:red-1"})).await;
    deny(recv_json(&mut plain).await);
    subscribe(&mut staff, "team:red-1").await;
    send_json(&mut staff, json!({"type":"subscribe","topic":"team:blue"})).await;
    deny(recv_json(&mut staff).await);
    subscribe(&mut plain, "inbox:p").await;
    send_json(&mut plain, json!({"type":"subscribe","topic":"inbox:s"})).await;
    deny(recv_json(&mut plain).await);
    // No namespace and no default namespace: refused.
    send_json(&mut plain, json!({"type":"subscribe","topic":"other:x"})).await;
    deny(recv_json(&mut plain).await);
    // Publishing: chat allows it, staff (default publish = nobody) does not.
    send_json(
        &mut staff,
        json!({"type":"publish","topic":"staff:dash","data":1}),
    )
    .await;
    deny(recv_json(&mut staff).await);
}

#[tokio::test]
async fn endpoint_templates_origins_and_limits() {
    let srv = with_config(&config());
    // /ws/a/posts/42/ auto-subscribes post:42.
    let t = token(SA, json!({"sub": "reader"}));
    let mut ws = srv.connect(&format!("/ws/a/posts/42/?token={t}")).await;
    let mut got = [recv_json(&mut ws).await, recv_json(&mut ws).await];
    got.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(
        (got[0]["type"].as_str(), got[1]["topic"].as_str()),
        (Some("auth_success"), Some("post:42"))
    );
    let (status, _) = api(
        &srv,
        "key-a",
        "POST",
        "/api/v1/publish",
        Some(r#"{"topic":"post:42","data":"comment"}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(recv_json(&mut ws).await["data"], "comment");

    // A forbidden Origin gets 403 at the upgrade; an allowed one passes.
    let up = |origin: &str| {
        format!("GET /ws/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n")
    };
    assert_eq!(
        parse_response(&raw_exchange(srv.addr, up("https://evil.example").as_bytes()).await).0,
        403
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(up("https://a.example").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");

    // The fifth connection of a user beyond a limit of four is closed with 4008.
    let mut four = Vec::new();
    for _ in 0..4 {
        four.push(join(&srv, "/ws/a", SA, json!({"sub": "many"})).await);
    }
    let mut fifth = srv
        .connect(&format!(
            "/ws/a?token={}",
            token(SA, json!({"sub": "many"}))
        ))
        .await;
    assert_eq!(close_code(&mut fifth).await, 4008);
    let (_, online) = api(&srv, "key-a", "GET", "/api/v1/users/user/many/online", None).await;
    assert_eq!(online["connections"], 4, "{online}");

    // Rate limit (app b): 1 msg/s with a burst of 3. Errors first, then 4029 for abuse.
    let mut chatty = join(&srv, "/ws/b", SB, json!({"sub": "chatty"})).await;
    for _ in 0..3 {
        send_json(&mut chatty, json!({"type":"ping"})).await;
        assert_eq!(recv_json(&mut chatty).await["type"], "pong");
    }
    send_json(&mut chatty, json!({"type":"ping"})).await;
    assert_eq!(recv_json(&mut chatty).await["code"], "rate_limited");
    for _ in 0..10 {
        send_json(&mut chatty, json!({"type":"ping"})).await;
    }
    assert_eq!(close_code(&mut chatty).await, 4029);
}

#[tokio::test]
async fn join_and_leave_events_where_the_namespace_wants_them() {
    let srv = with_config(&config());
    let mut ann = join(&srv, "/ws/a", SA, json!({"sub": "ann"})).await;
    let mut ben = join(&srv, "/ws/a", SA, json!({"sub": "ben"})).await;
    subscribe(&mut ann, "room:1").await;
    subscribe(&mut ben, "room:1").await;
    assert_eq!(
        recv_json(&mut ann).await,
        json!({"type":"join","topic":"room:1","user_type":"user","user_id":"ben"})
    );
    // Subscribing again is not a second join (ben may first see its own join).
    send_json(&mut ben, json!({"type": "subscribe", "topic": "room:1"})).await;
    while recv_json(&mut ben).await["type"] != "subscribed" {}
    drop(ben);
    assert_eq!(
        recv_json(&mut ann).await,
        json!({"type":"leave","topic":"room:1","user_type":"user","user_id":"ben"})
    );
    // No events in namespaces without join_leave.
    subscribe(&mut ann, "chat:quiet").await;
    let mut cal = join(&srv, "/ws/a", SA, json!({"sub": "cal"})).await;
    subscribe(&mut cal, "chat:quiet").await;
    expect_silence(&mut ann, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn connection_attempts_per_ip_are_limited() {
    let srv = with_config(&config());
    let mut ok = Vec::new();
    for _ in 0..6 {
        ok.push(join(&srv, "/ws/b", SB, json!({"sub": "x"})).await);
    }
    let req = "GET /ws/b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (status, body) = parse_response(&raw_exchange(srv.addr, req.as_bytes()).await);
    assert_eq!(status, 429, "{body}");
    // Other apps have their own (higher) limit.
    let _a = join(&srv, "/ws/a", SA, json!({"sub": "y"})).await;
}

#[tokio::test]
async fn public_endpoint_beside_authenticated_ones() {
    let srv = with_config(&config());
    // A public status stream: no token, anonymous, auto-subscribed.
    let mut status = srv.connect("/ws/a/status").await;
    let mut got = [recv_json(&mut status).await, recv_json(&mut status).await];
    got.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(
        (got[0]["user_type"].as_str(), got[1]["topic"].as_str()),
        (Some("anonymous"), Some("public:status"))
    );
    let (code, _) = api(
        &srv,
        "key-a",
        "POST",
        "/api/v1/publish",
        Some(r#"{"topic":"public:status","data":"all good"}"#),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(recv_json(&mut status).await["data"], "all good");
    // The app's main endpoint still requires a token.
    let mut ws = srv.connect("/ws/a").await;
    assert_eq!(recv_json(&mut ws).await["type"], "auth_required");
    send_json(&mut ws, json!({"type":"subscribe","topic":"public:status"})).await;
    assert_eq!(recv_json(&mut ws).await["code"], "not_authenticated");
}
