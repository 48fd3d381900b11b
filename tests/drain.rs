//! SIGTERM drains: the server stops accepting, sends every connection Close 1001
//! ("going away", so clients reconnect elsewhere), and exits 0 once they are gone or
//! the drain timeout passed. A fleet node also takes its presence out of Redis at once.
mod common;
#[path = "redis_support/mod.rs"]
mod redis_support;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_connections_with_1001_and_exits_zero() {
    let mut srv = Server::dev(&["--drain-timeout", "5s"]);
    let mut a = srv.user("a").await;
    let mut b = srv.user("b").await;
    subscribe(&mut b, "chat:x").await;
    let started = Instant::now();
    srv.signal("TERM");
    assert_eq!(close_code(&mut a).await, 1001);
    assert_eq!(close_code(&mut b).await, 1001);
    drop((a, b));
    let status = tokio::task::block_in_place(|| srv.wait_exit(Duration::from_secs(8)));
    let status = status.expect("exited after the drain");
    assert!(status.success(), "{status}");
    // It left because the connections were gone, not because the timeout ran out.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_closes_is_cut_at_the_drain_timeout() {
    let mut srv = Server::dev(&["--drain-timeout", "1s"]);
    // A raw TCP client that completes the handshake and then never reads or answers.
    let _stuck = srv.connect("/ws?user_id=stuck").await;
    let started = Instant::now();
    srv.signal("TERM");
    let status = tokio::task::block_in_place(|| srv.wait_exit(Duration::from_secs(6)));
    assert!(status.expect("exited").success());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_fleet_node_leaves_presence_at_once() {
    let redis = redis_support::RedisServer::start();
    let url = redis.url();
    let args = |id: &'static str| {
        vec![
            "--redis".to_string(),
            url.clone(),
            "--node-id".into(),
            id.into(),
            "--presence-ttl".into(),
            "60s".into(),
        ]
    };
    let a_args = args("a");
    let c_args = args("c");
    let mut a = Server::dev(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let c = Server::dev(&c_args.iter().map(String::as_str).collect::<Vec<_>>());
    let online = |srv: &Server| {
        let srv_addr = srv.addr;
        async move {
            let req = "GET /api/v1/users/user/alice/online HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            let (status, body) = parse_response(&raw_exchange(srv_addr, req.as_bytes()).await);
            status == 200 && body.contains("\"online\":true")
        }
    };
    let mut alice = a.user("alice").await;
    eventually("alice online, seen from C", || online(&c)).await;
    a.signal("TERM");
    assert_eq!(close_code(&mut alice).await, 1001);
    drop(alice);
    let status = tokio::task::block_in_place(|| a.wait_exit(Duration::from_secs(8)));
    assert!(status.expect("exited").success());
    // Gone at once: well before the 60 s TTL could have run out.
    let gone = Instant::now();
    eventually("alice offline, seen from C", || async { !online(&c).await }).await;
    assert!(
        gone.elapsed() < Duration::from_secs(30),
        "{:?}",
        gone.elapsed()
    );
}
