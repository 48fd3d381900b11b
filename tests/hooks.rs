//! Scenario: an app with backend hooks pointing at a real HTTP server started by the test
//! (standing in for Django). The connect hook authenticates from a session cookie, the
//! subscribe hook allows or denies, `custom` messages get the backend's answer as `reply`,
//! the disconnect hook is told; every request is HMAC-signed; a slow or failing backend
//! gives the client a clear error in time.
mod common;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SECRET: &str = "hook-secret-hook-secret-hook-secret";

/// A tiny HTTP backend: verifies signatures, answers per path, reports every event.
async fn backend(events: mpsc::UnboundedSender<(String, Value)>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let events = events.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        while buf.len() < i + 4 + len {
                            let n = s.read(&mut chunk).await.unwrap();
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        break (head, buf[i + 4..i + 4 + len].to_vec());
                    }
                };
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let ts = header("x-ringcast-timestamp").unwrap_or_default();
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(format!("{ts}.").as_bytes());
                mac.update(&body);
                let want: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let signed = header("x-ringcast-signature") == Some(format!("v1={want}"));
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = events.send((path.clone(), json!({ "signed": signed, "body": v })));
                let (status, answer) = if !signed {
                    (401, json!({}))
                } else {
                    match path.as_str() {
                        "/connect" => {
                            let cookie = v["headers"]["cookie"].as_str().unwrap_or("");
                            if cookie.contains("sessionid=good") {
                                (
                                    200,
                                    json!({"user_id": 7, "user_type": "user", "roles": ["staff"]}),
                                )
                            } else if cookie.contains("sessionid=bad") {
                                (403, json!({}))
                            } else {
                                (200, json!({}))
                            }
                        }
                        "/subscribe" => (200, json!({ "allow": v["topic"] == "private:ok" })),
                        "/publish" => (200, json!({ "allow": v["data"]["text"] != "bad" })),
                        "/custom" => match v["message_type"].as_str() {
                            Some("echo") => {
                                (200, json!({ "echo": v["payload"], "user": v["user"] }))
                            }
                            Some("slow") => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                (200, json!({}))
                            }
                            _ => (500, json!({})),
                        },
                        _ => (200, json!({})),
                    }
                };
                let body = answer.to_string();
                let resp = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

fn config(port: u16) -> String {
    format!(
        r#"
[apps.main]
api_key = "k"
secret = "{SECRET}"
[apps.main.hooks]
connect = "http://127.0.0.1:{port}/connect"
disconnect = "http://127.0.0.1:{port}/disconnect"
subscribe = "http://127.0.0.1:{port}/subscribe"
custom = "http://127.0.0.1:{port}/custom"
publish = "http://127.0.0.1:{port}/publish"
timeout = "500ms"
[[apps.main.endpoints]]
path = "/ws"
auth = "optional"
[[apps.main.namespaces]]
name = "private"
subscribe = "hook"
[[apps.main.namespaces]]
name = "moderated"
subscribe = "anyone"
publish = "hook"
"#
    )
}

async fn with_cookie(srv: &Server, cookie: &str) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = srv.url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn event(rx: &mut mpsc::UnboundedReceiver<(String, Value)>, path: &str) -> Value {
    loop {
        let (p, v) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("hook called in time")
            .unwrap();
        if p == path {
            assert_eq!(v["signed"], true, "request to {path} was signed correctly");
            return v["body"].clone();
        }
    }
}

#[tokio::test]
async fn hooks_authenticate_authorize_answer_and_observe() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let port = backend(tx).await;
    let srv = with_config(&config(port));

    // Connect hook: a good session becomes its user; a bad one is refused at the upgrade.
    let mut ws = with_cookie(&srv, "sessionid=good").await.unwrap();
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["user_id"].as_str()),
        (Some("auth_success"), Some("7"))
    );
    let connect = event(&mut rx, "/connect").await;
    assert_eq!(connect["headers"]["cookie"], "sessionid=good");
    assert_eq!(with_cookie(&srv, "sessionid=bad").await.err(), Some(403));
    let mut anon = with_cookie(&srv, "theme=dark").await.unwrap();
    assert_eq!(recv_json(&mut anon).await["user_type"], "anonymous");

    // Subscribe hook decides for the `private` namespace.
    send_json(
        &mut ws,
        json!({"type":"subscribe","topic":"private:ok","id":1}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_i64()),
        (Some("subscribed"), Some(1))
    );
    assert_eq!(event(&mut rx, "/subscribe").await["user"]["user_id"], "7");
    send_json(
        &mut ws,
        json!({"type":"subscribe","topic":"private:no","id":2}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("forbidden"), Some(2))
    );

    // Publish hook: the backend moderates client messages.
    subscribe(&mut ws, "moderated:1").await;
    send_json(
        &mut ws,
        json!({"type":"publish","topic":"moderated:1","data":{"text":"bad"},"id":3}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("forbidden"), Some(3))
    );
    send_json(
        &mut ws,
        json!({"type":"publish","topic":"moderated:1","data":{"text":"fine"},"id":4}),
    )
    .await;
    let mut got = [recv_json(&mut ws).await, recv_json(&mut ws).await];
    got.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(
        (got[0]["type"].as_str(), got[1]["data"]["text"].as_str()),
        (Some("ack"), Some("fine"))
    );

    // Custom messages: the backend's JSON comes back as `reply` with the request's id.
    send_json(
        &mut ws,
        json!({"type":"custom","message_type":"echo","payload":{"x":1},"id":"c1"}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("reply"), Some("c1"))
    );
    assert_eq!(m["data"]["echo"]["x"], 1);
    assert_eq!(m["data"]["user"]["user_id"], "7");
    // A failing and a slow backend: clear errors, the slow one within the hook timeout.
    send_json(
        &mut ws,
        json!({"type":"custom","message_type":"boom","id":"c2"}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_str()),
        (Some("hook_failed"), Some("c2"))
    );
    let started = std::time::Instant::now();
    send_json(
        &mut ws,
        json!({"type":"custom","message_type":"slow","id":"c3"}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_str()),
        (Some("hook_failed"), Some("c3"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered within the 500 ms timeout (plus slack)"
    );
    // The connection kept working meanwhile.
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");

    // Disconnect hook.
    drop(ws);
    let d = event(&mut rx, "/disconnect").await;
    assert_eq!(d["user"]["user_id"], "7");
}

#[tokio::test]
async fn unreachable_backend_fails_clearly() {
    // Nothing listens on this port: the connect hook fails, the upgrade gets 503.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let srv = with_config(&config(port));
    assert_eq!(with_cookie(&srv, "sessionid=good").await.err(), Some(503));
    let (status, _) = srv.http("GET", "/health", None).await;
    assert_eq!(status, 200, "the server is still serving");
}
