//! Scenario: a backend drives the node through the whole API — batch, presence queries,
//! connection info, topic subscribers, send to a connection, disconnects — and the
//! OpenAPI document describes exactly the routes that exist.
mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn get(srv: &Server, path: &str) -> Value {
    let (status, body) = srv.http("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn post(srv: &Server, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = srv.http("POST", path, Some(&body.to_string())).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn presence_queries_and_disconnects() {
    let srv = Server::dev(&[]);
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(srv.user("alice").await);
    }
    let mut staff = srv.connect("/ws?user_id=boss&user_type=staff").await;
    assert_eq!(recv_json(&mut staff).await["type"], "auth_success");
    subscribe(&mut staff, "room:1").await;
    subscribe(&mut alice[0], "room:1").await;

    assert_eq!(
        get(&srv, "/api/v1/users/user/alice/online").await,
        json!({"online": true, "connections": 3})
    );
    assert_eq!(
        get(&srv, "/api/v1/users/user/nobody/online").await["online"],
        false
    );
    let users = get(&srv, "/api/v1/users?user_type=staff").await;
    assert_eq!(
        users,
        json!({"count": 1, "users": [{"user_type": "staff", "user_id": "boss"}]})
    );
    assert_eq!(get(&srv, "/api/v1/users").await["count"], 2);
    let conns = get(&srv, "/api/v1/users/user/alice/connections").await;
    let conns = conns["connections"].as_array().unwrap().clone();
    assert_eq!(conns.len(), 3);
    let cid = conns[0]["conn_id"].as_str().unwrap().to_owned();
    let info = get(&srv, &format!("/api/v1/connections/{cid}")).await;
    assert_eq!(
        (
            info["user_id"].as_str(),
            info["endpoint"].as_str(),
            info["app"].as_str()
        ),
        (Some("alice"), Some("/ws"), Some("default"))
    );
    assert!(info["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let subs = get(&srv, "/api/v1/topics/room:1/subscribers").await;
    assert_eq!(subs["count"], 2);

    // Send to one connection (whichever shard holds it): only that one receives.
    let (status, _) = post(
        &srv,
        &format!("/api/v1/connections/{cid}/send"),
        json!({"data": "just you"}),
    )
    .await;
    assert_eq!(status, 200);
    let mut got = 0;
    for ws in alice.iter_mut() {
        if let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) =
            tokio::time::timeout(
                Duration::from_millis(300),
                futures_util::StreamExt::next(ws),
            )
            .await
        {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(
                (v["topic"].as_str(), v["data"].as_str()),
                (Some("direct"), Some("just you"))
            );
            got += 1;
        }
    }
    assert_eq!(got, 1);
    assert_eq!(
        post(&srv, "/api/v1/connections/9-999/send", json!({"data": 1}))
            .await
            .0,
        404
    );
    assert_eq!(
        post(
            &srv,
            "/api/v1/connections/nonsense/send",
            json!({"data": 1})
        )
        .await
        .0,
        422
    );

    // Disconnect one connection, then the whole user: close 4000, and offline after.
    let (status, _) = post(
        &srv,
        &format!("/api/v1/connections/{cid}/disconnect"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = post(&srv, "/api/v1/users/user/alice/disconnect", json!({})).await;
    assert_eq!((status, v["ok"].as_bool()), (200, Some(true)));
    for ws in alice.iter_mut() {
        assert_eq!(close_code(ws).await, 4000);
    }
    eventually("alice offline", || async {
        get(&srv, "/api/v1/users/user/alice/online").await["online"] == false
    })
    .await;
    assert_eq!(
        get(&srv, "/api/v1/topics/room:1/subscribers").await["count"],
        1
    );
}

#[tokio::test]
async fn batch_runs_commands_in_order_with_per_command_results() {
    let srv = Server::dev(&[]);
    let mut a = srv.user("a").await;
    subscribe(&mut a, "t").await;
    let (status, v) = post(
        &srv,
        "/api/v1/batch",
        json!({"commands": [
            {"method": "publish", "params": {"topic": "t", "data": 1}},
            {"method": "send_user", "params": {"user_type": "user", "user_id": "a", "data": 2}},
            {"method": "publish", "params": {"topic": "bad topic", "data": 3}},
            {"method": "nope"},
            {"method": "is_online", "params": {"user_type": "user", "user_id": "a"}},
            {"method": "publish", "params": {"topic": "t", "data": 4}}
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert_eq!(r[0], json!({"ok": true}));
    assert_eq!(r[2]["error"]["status"], 422);
    assert_eq!(r[3]["error"]["status"], 404);
    assert_eq!(r[4]["online"], true);
    for want in [1, 2, 4] {
        assert_eq!(recv_json(&mut a).await["data"], want, "in order");
    }
    assert_eq!(
        post(&srv, "/api/v1/batch", json!({"commands": 5})).await.0,
        422
    );
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let srv = Server::dev(&[]);
    let doc = get(&srv, "/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13);
    for (path, ops) in paths {
        let concrete = path
            .replace("{user_type}", "user")
            .replace("{user_id}", "x")
            .replace("{conn_id}", "0-1")
            .replace("{topic}", "t");
        for method in ops.as_object().unwrap().keys() {
            let body = if method == "post" {
                Some(r#"{"data":1,"topic":"t","commands":[]}"#)
            } else {
                None
            };
            let (status, text) = srv.http(&method.to_uppercase(), &concrete, body).await;
            // Routed: anything but "no such API endpoint" / wrong method.
            assert!(
                status != 405 && !text.contains("no such API endpoint"),
                "{method} {path} -> {status} {text}"
            );
        }
    }
}

/// `/metrics` is Prometheus text with per-shard families, and only for operators.
#[tokio::test]
async fn metrics_are_prometheus_text_for_the_admin_only() {
    let open = Server::dev(&[]);
    let mut ws = open.user("m1").await;
    subscribe(&mut ws, "chat:m").await;
    let (status, body) = open.http("GET", "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE ringcast_connections gauge"), "{body}");
    let conns: u64 = body
        .lines()
        .filter(|l| l.starts_with("ringcast_connections{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(conns, 1, "{body}");
    assert!(
        body.contains("ringcast_accepted_total{shard=\"0\"}"),
        "{body}"
    );
    assert!(
        body.contains("ringcast_authenticated_connections 1"),
        "{body}"
    );
    assert!(
        !body.contains("ringcast_redis_"),
        "no Redis on a single node"
    );

    let keyed = Server::dev(&[
        "--api-key",
        "app-key-app-key",
        "--admin-key",
        "admin-key-admin",
    ]);
    let (status, _) = keyed.http("GET", "/metrics", None).await;
    assert_eq!(status, 401);
    let (status, _) = keyed
        .http_with(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "apikey app-key-app-key")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = keyed
        .http_with(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "apikey admin-key-admin")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = keyed.http("POST", "/metrics", None).await;
    assert_eq!(status, 405);
}
