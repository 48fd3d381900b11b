//! Scenario: a server with `--jwt-secret` / `--jwt-public-key` and `--api-key`. Valid tokens
//! (query, header, cookie or `authenticate`) become their user; expired, unsigned
//! (`alg: none`), wrongly signed and algorithm-confused tokens are refused with 4001.
mod common;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: serde_json::Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn server() -> Server {
    Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--no-pin",
        "--jwt-secret",
        SECRET,
        "--api-key",
        "k",
        "--auth-timeout",
        "2",
    ])
}

async fn refused(srv: &Server, token: &str) {
    let mut ws = srv.connect(&format!("/ws?token={token}")).await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("auth_failed")),
        "{m}"
    );
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn valid_tokens_authenticate_from_every_source() {
    let srv = server();
    let t = hs(
        json!({"sub": "alice", "roles": ["staff"], "exp": now() + 60}),
        SECRET.as_bytes(),
    );
    let mut q = srv.connect(&format!("/ws?token={t}")).await;
    let m = recv_json(&mut q).await;
    assert_eq!(
        (
            m["type"].as_str(),
            m["user_id"].as_str(),
            m["user_type"].as_str()
        ),
        (Some("auth_success"), Some("alice"), Some("user"))
    );

    // Authorization header and cookie.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    for (name, value) in [
        ("authorization", format!("Bearer {t}")),
        ("cookie", format!("a=1; ringcast_token={t}")),
    ] {
        let mut req = srv.url("/ws").into_client_request().unwrap();
        req.headers_mut().insert(name, value.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(recv_json(&mut ws).await["user_id"], "alice", "{name}");
    }

    // The authenticate message, after auth_required.
    let mut late = srv.connect("/ws").await;
    assert_eq!(recv_json(&mut late).await["type"], "auth_required");
    let bob = hs(
        json!({"sub": "bob", "user_type": "staff"}),
        SECRET.as_bytes(),
    );
    send_json(&mut late, json!({"type": "authenticate", "token": bob})).await;
    let m = recv_json(&mut late).await;
    assert_eq!(
        (m["user_id"].as_str(), m["user_type"].as_str()),
        (Some("bob"), Some("staff"))
    );

    // send-to-user reaches alice's connection and not bob's.
    let (status, _) = srv
        .http_with(
            "POST",
            "/api/v1/users/user/alice/send",
            Some(r#"{"data":"hi"}"#),
            &[("Authorization", "apikey k")],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(recv_json(&mut q).await["data"], "hi");
    expect_silence(&mut late, std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let srv = server();
    // Expired.
    refused(
        &srv,
        &hs(json!({"sub": "a", "exp": now() - 3600}), SECRET.as_bytes()),
    )
    .await;
    // Wrong signature.
    refused(
        &srv,
        &hs(
            json!({"sub": "a"}),
            b"another-secret-another-secret-another",
        ),
    )
    .await;
    // alg: none.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(br#"{"sub":"a"}"#)
    );
    refused(&srv, &none).await;
    // Garbage.
    refused(&srv, "not.a.token").await;
    // The authenticate message with a bad token closes too.
    let mut ws = srv.connect("/ws").await;
    assert_eq!(recv_json(&mut ws).await["type"], "auth_required");
    send_json(
        &mut ws,
        json!({"type": "authenticate", "token": "x.y.z", "id": 1}),
    )
    .await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["code"].as_str(), m["id"].as_i64()),
        (Some("auth_failed"), Some(1))
    );
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn rs256_key_accepts_rs256_and_refuses_algorithm_confusion() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let public = format!("{dir}/tests/fixtures/rsa-public.pem");
    let srv = Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--no-pin",
        "--jwt-public-key",
        &public,
    ]);
    let private = std::fs::read(format!("{dir}/tests/fixtures/rsa-private.pem")).unwrap();
    let good = encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "rsa-user"}),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let mut ws = srv.connect(&format!("/ws?token={good}")).await;
    assert_eq!(recv_json(&mut ws).await["user_id"], "rsa-user");
    // HS256 "signed" with the public key's bytes: the classic confusion attack.
    let pem = std::fs::read(&public).unwrap();
    refused(&srv, &hs(json!({"sub": "attacker"}), &pem)).await;
}
