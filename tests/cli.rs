//! Scenario: the commands around the server — `init` writes a config that `check-config`
//! accepts; `check-config` explains a broken file; `token` mints a token the server accepts.
mod common;
use common::*;
use std::process::Command;

fn ringcast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn init_then_check_config() {
    let out = ringcast(&["init"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[apps.main]"));
    let p = temp_file("init.toml", &text);
    let check = ringcast(&["check-config", p.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("OK"));
    // Fresh secrets every time.
    assert_ne!(text, String::from_utf8(ringcast(&["init"]).stdout).unwrap());
}

#[test]
fn check_config_explains_mistakes() {
    let p = temp_file(
        "bad.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 3\n",
    );
    let out = ringcast(&["check-config", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen_typo") && err.contains("line 3"),
        "{err}"
    );
    let p = temp_file(
        "bad2.toml",
        "[apps.a]\napi_key = \"k\"\n[[apps.a.endpoints]]\npath = \"ws\"\n",
    );
    let out = ringcast(&["check-config", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apps.a.endpoints[0].path"), "{err}");
}

#[tokio::test]
async fn minted_token_is_accepted() {
    let secret = "cli-secret-cli-secret-cli-secret-cli";
    let out = ringcast(&[
        "token",
        "--sub",
        "u42",
        "--user-type",
        "staff",
        "--role",
        "admin",
        "--jwt-secret",
        secret,
        "--ttl",
        "5m",
    ]);
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let srv = Server::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--no-pin",
        "--jwt-secret",
        secret,
    ]);
    let mut ws = srv.connect(&format!("/ws?token={token}")).await;
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["user_id"].as_str(), m["user_type"].as_str()),
        (Some("u42"), Some("staff"))
    );
}
