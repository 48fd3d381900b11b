//! Integration tests of the Redis link against real redis-server processes.

#[path = "redis_support/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{block_on, numpat, numsub, wait_for, RedisServer};
use ringcast::broker::redis::{Incoming, LinkError, LinkStatus, RedisConfig, RedisLink};

fn config(url: String) -> RedisConfig {
    let mut cfg = RedisConfig::new(url);
    cfg.reconnect_backoff_max = Duration::from_millis(200);
    cfg.io_timeout = Duration::from_secs(2);
    cfg
}

fn start(cfg: RedisConfig) -> (RedisLink, flume::Receiver<Incoming>) {
    let (tx, rx) = flume::unbounded();
    let link = RedisLink::start(cfg, move |m| {
        let _ = tx.send(m);
    })
    .unwrap();
    (link, rx)
}

fn wait_up(link: &RedisLink) {
    wait_for("link up", 10, || link.status() == LinkStatus::Up);
}

fn message(channel: &str, payload: &str) -> Incoming {
    Incoming::Message {
        channel: channel.into(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

#[test]
fn publishes_are_pipelined_and_arrive_in_order() {
    let server = RedisServer::start();
    let mut client = server.client();
    let (link, rx) = start(config(server.url()));
    link.subscribe("t:ch");
    wait_up(&link);
    wait_for("subscription", 5, || numsub(&mut client, "t:ch") == 1);

    // A publish from another client reaches on_message.
    redis::cmd("PUBLISH")
        .arg("t:ch")
        .arg("hello")
        .query::<i64>(&mut client)
        .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        message("t:ch", "hello")
    );

    let before = link.metrics();
    const N: usize = 10_000;
    for i in 0..N {
        link.publish("t:ch", Bytes::from(i.to_string())).unwrap();
    }
    for i in 0..N {
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, message("t:ch", &i.to_string()));
    }
    wait_for("all publish replies", 5, || {
        link.metrics().publishes_sent - before.publishes_sent == N as u64
    });
    let m = link.metrics();
    let pipelines = m.pipelines - before.pipelines;
    eprintln!(
        "{N} publishes in {pipelines} pipelines, max {} avg {:.1}, rtt avg {} us",
        m.max_pipeline, m.avg_pipeline, m.rtt_avg_us
    );
    assert!(
        pipelines * 10 <= N as u64,
        "{pipelines} pipelines for {N} publishes"
    );
    assert!(m.max_pipeline > 1);
    assert_eq!(m.publish_drops, 0);
    assert_eq!(m.queued, 0);
    assert!(m.rtt_last_us > 0 && m.rtt_max_us >= m.rtt_last_us);
    assert_eq!(m.pipeline_hist.iter().sum::<u64>(), m.pipelines);
    link.shutdown();
}

#[test]
fn subscriptions_are_batched_and_patterns_work() {
    let server = RedisServer::start();
    let mut client = server.client();
    let (link, rx) = start(config(server.url()));
    wait_up(&link);
    let base = link.metrics().subscription_commands;

    for i in 0..300 {
        link.subscribe(&format!("s:{i}"));
    }
    // Idempotent: the caller owns the reference counts.
    link.subscribe("s:0");
    wait_for("300 subscriptions", 5, || {
        let n: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("s:*")
            .query(&mut client)
            .unwrap();
        n.len() == 300
    });
    let sent = link.metrics().subscription_commands - base;
    assert!(sent <= 10, "{sent} SUBSCRIBE commands for 300 channels");

    // Churn that cancels out before a sync costs nothing; real removals are batched.
    for i in 0..150 {
        link.unsubscribe(&format!("s:{i}"));
    }
    wait_for("150 unsubscriptions", 5, || {
        let n: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("s:*")
            .query(&mut client)
            .unwrap();
        n.len() == 150
    });
    assert_eq!(numsub(&mut client, "s:0"), 0);
    assert_eq!(numsub(&mut client, "s:299"), 1);
    let sent = link.metrics().subscription_commands - base;
    assert!(sent <= 20, "{sent} subscription commands for 450 changes");

    redis::cmd("PUBLISH")
        .arg("s:299")
        .arg("x")
        .query::<i64>(&mut client)
        .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        message("s:299", "x")
    );

    link.psubscribe("p:*");
    wait_for("pattern", 5, || numpat(&mut client) == 1);
    redis::cmd("PUBLISH")
        .arg("p:one")
        .arg("y")
        .query::<i64>(&mut client)
        .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        Incoming::PMessage {
            pattern: "p:*".into(),
            channel: "p:one".into(),
            payload: Bytes::from_static(b"y")
        }
    );
    link.punsubscribe("p:*");
    wait_for("pattern gone", 5, || numpat(&mut client) == 0);
    link.shutdown();
}

#[test]
fn commands_round_trip() {
    let server = RedisServer::start();
    let (link, _rx) = start(config(format!("{}/2", server.url())));
    wait_up(&link);

    let v = block_on(link.command(redis::cmd("SET").arg("k").arg("v").clone())).unwrap();
    assert_eq!(v, redis::Value::Okay);
    let v = block_on(link.command(redis::cmd("GET").arg("k").clone())).unwrap();
    assert_eq!(v, redis::Value::BulkString(b"v".to_vec()));
    let v = block_on(link.command(redis::cmd("EXPIRE").arg("k").arg(30).clone())).unwrap();
    assert_eq!(v, redis::Value::Int(1));

    let replies = block_on(link.commands(vec![
        redis::cmd("SADD").arg("presence:room").arg("alice").arg("bob").clone(),
        redis::cmd("SMEMBERS").arg("presence:room").clone(),
        redis::cmd("HSET").arg("h").arg("f").arg("1").clone(),
        redis::cmd("HGET").arg("h").arg("f").clone(),
        redis::cmd("TTL").arg("k").clone(),
    ]))
    .unwrap();
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[0], redis::Value::Int(2));
    let mut members: Vec<String> = redis::from_redis_value(replies[1].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    assert_eq!(replies[2], redis::Value::Int(1));
    assert_eq!(replies[3], redis::Value::BulkString(b"1".to_vec()));
    assert!(matches!(replies[4], redis::Value::Int(t) if t > 0 && t <= 30));
    assert_eq!(
        block_on(link.commands(Vec::new())).unwrap(),
        Vec::<redis::Value>::new()
    );

    // The URL's db was selected: db 0 does not have the key, db 2 does.
    let mut c0 = server.client();
    assert_eq!(
        redis::cmd("EXISTS").arg("k").query::<i64>(&mut c0).unwrap(),
        0
    );
    redis::cmd("SELECT").arg(2).query::<()>(&mut c0).unwrap();
    assert_eq!(
        redis::cmd("EXISTS").arg("k").query::<i64>(&mut c0).unwrap(),
        1
    );

    // Error replies surface as LinkError::Redis, without harming the pipeline.
    let err = block_on(link.command(redis::cmd("INCR").arg("presence:room").clone())).unwrap_err();
    assert!(
        matches!(&err, LinkError::Redis(m) if m.contains("WRONGTYPE")),
        "{err:?}"
    );
    let err = block_on(link.commands(vec![
        redis::cmd("PING").clone(),
        redis::cmd("NOSUCHCMD").clone(),
    ]))
    .unwrap_err();
    assert!(
        matches!(&err, LinkError::Redis(m) if m.starts_with("command 1:")),
        "{err:?}"
    );
    assert_eq!(
        block_on(link.command(redis::cmd("PING").clone())).unwrap(),
        redis::Value::SimpleString("PONG".into())
    );

    // Many concurrent commands share pipelines and each gets its own reply.
    let futs: Vec<_> = (0..2000)
        .map(|i| link.command(redis::cmd("ECHO").arg(i).clone()))
        .collect();
    for (i, f) in futs.into_iter().enumerate() {
        assert_eq!(
            block_on(f).unwrap(),
            redis::Value::BulkString(i.to_string().into_bytes())
        );
    }
    assert!(link.metrics().max_pipeline > 1);
    link.shutdown();
}

#[test]
fn survives_redis_restart() {
    let mut server = RedisServer::start();
    let port = server.port;
    let (link, rx) = start(config(server.url()));
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    link.on_reconnect(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    link.subscribe("o:ch");
    link.psubscribe("o:*");
    wait_up(&link);
    let mut client = server.client();
    wait_for("subscription", 5, || numsub(&mut client, "o:ch") == 1);
    let hooks_before = hooks.load(Ordering::SeqCst);

    server.kill();
    wait_for("link down", 5, || {
        matches!(link.status(), LinkStatus::Down { .. })
    });
    wait_for("command connection down", 5, || !link.is_command_up());
    let t = Instant::now();
    assert_eq!(
        link.publish("o:ch", Bytes::from_static(b"lost")),
        Err(LinkError::Down)
    );
    assert_eq!(
        block_on(link.command(redis::cmd("PING").clone())),
        Err(LinkError::Down)
    );
    // Refused at once, not after waiting for the (2 s) I/O deadline.
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "failing took {:?}",
        t.elapsed()
    );
    // Local state keeps changing during the outage and is applied after it.
    link.subscribe("o:later");
    link.unsubscribe("o:ch");
    link.subscribe("o:ch");
    assert!(link.last_error().is_some());
    assert!(link.metrics().publish_drops >= 1);
    wait_for("a failed reconnect attempt", 5, || {
        link.metrics().connect_failures >= 1
    });

    let server = RedisServer::start_on(port);
    wait_up(&link);
    let mut client = server.client();
    wait_for("resubscribed", 5, || {
        numsub(&mut client, "o:ch") == 1
            && numsub(&mut client, "o:later") == 1
            && numpat(&mut client) == 1
    });
    wait_for("on_reconnect", 5, || {
        hooks.load(Ordering::SeqCst) > hooks_before
    });
    let m = link.metrics();
    assert!(m.reconnects >= 2, "{m:?}"); // command + pub/sub connections
    assert!(m.connect_failures >= 1);

    redis::cmd("PUBLISH")
        .arg("o:later")
        .arg("back")
        .query::<i64>(&mut client)
        .unwrap();
    let mut got = [
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
    ];
    got.sort_by_key(|m| matches!(m, Incoming::PMessage { .. }));
    assert_eq!(got[0], message("o:later", "back"));
    assert!(matches!(&got[1], Incoming::PMessage { pattern, .. } if pattern == "o:*"));

    link.publish("o:ch", Bytes::from_static(b"again")).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(rx.recv_timeout(Duration::from_secs(5)).unwrap());
    }
    assert!(seen.contains(&message("o:ch", "again")));
    assert_eq!(
        block_on(link.command(redis::cmd("PING").clone())).unwrap(),
        redis::Value::SimpleString("PONG".into())
    );
    link.shutdown();
}

#[test]
fn queue_is_bounded_while_redis_is_unavailable() {
    let mut server = RedisServer::start();
    let mut cfg = config(server.url());
    cfg.max_queued = 100;
    cfg.max_batch = 10;
    cfg.io_timeout = Duration::from_millis(800);
    let (link, _rx) = start(cfg);
    wait_up(&link);

    // Stalled (SIGSTOP): the connection looks fine, so submissions queue, up to the bound.
    server.signal("STOP");
    let (mut ok, mut overloaded) = (0, 0);
    let mut pending = Vec::new();
    for i in 0..2000 {
        match link.publish("b:ch", Bytes::from_static(b"x")) {
            Ok(()) => ok += 1,
            Err(LinkError::Overloaded) => overloaded += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
        if i % 100 == 0 {
            pending.push(link.command(redis::cmd("PING").clone()));
        }
        assert!(link.metrics().queued <= 100);
    }
    assert!(ok <= 100 + 10 + 1, "{ok} accepted");
    assert!(overloaded >= 1800, "{overloaded} overloaded");
    assert!(link.metrics().queued <= 100);
    // The stall is detected by the I/O deadline; everything queued or in flight fails.
    wait_for("stall detected", 5, || !link.is_command_up());
    for f in pending {
        assert!(matches!(
            block_on(f),
            Err(LinkError::Down | LinkError::Overloaded)
        ));
    }
    wait_for("queue drained", 5, || link.metrics().queued == 0);

    // Stopped for good (SIGKILL): everything is refused at once, nothing queues.
    server.signal("CONT");
    server.kill();
    // "At once": no call waits for anything (the I/O deadline here is 2 s).
    let mut slowest = Duration::ZERO;
    for _ in 0..100_000 {
        let t = Instant::now();
        assert_eq!(
            link.publish("b:ch", Bytes::from_static(b"x")),
            Err(LinkError::Down)
        );
        slowest = slowest.max(t.elapsed());
    }
    for _ in 0..1000 {
        let t = Instant::now();
        assert_eq!(
            block_on(link.command(redis::cmd("PING").clone())),
            Err(LinkError::Down)
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "slowest call {slowest:?}"
    );
    let m = link.metrics();
    assert_eq!(m.queued, 0);
    assert!(m.publish_drops >= 100_000);
    link.shutdown();
}

#[test]
fn starts_down_and_connects_later_and_shuts_down() {
    let port = common::free_port();
    let (link, rx) = start(config(format!("redis://127.0.0.1:{port}")));
    link.subscribe("late:ch");
    wait_for("a failed connection attempt", 5, || {
        link.last_error().is_some()
    });
    assert!(matches!(link.status(), LinkStatus::Down { .. }));
    assert_eq!(link.publish("late:ch", Bytes::new()), Err(LinkError::Down));

    let server = RedisServer::start_on(port);
    wait_up(&link);
    let mut client = server.client();
    wait_for("subscription", 5, || numsub(&mut client, "late:ch") == 1);
    link.publish("late:ch", Bytes::from_static(b"hi")).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        message("late:ch", "hi")
    );

    link.shutdown();
    assert_eq!(
        link.publish("late:ch", Bytes::new()),
        Err(LinkError::Closed)
    );
    assert_eq!(
        block_on(link.command(redis::cmd("PING").clone())),
        Err(LinkError::Closed)
    );
    wait_for("connections closed", 5, || {
        numsub(&mut client, "late:ch") == 0
    });
}

#[test]
fn dropping_the_last_handle_stops_the_thread() {
    let server = RedisServer::start();
    let mut client = server.client();
    let (link, _rx) = start(config(server.url()));
    link.subscribe("d:ch");
    wait_up(&link);
    wait_for("subscription", 5, || numsub(&mut client, "d:ch") == 1);
    let clone = link.clone();
    drop(link);
    assert_eq!(numsub(&mut client, "d:ch"), 1);
    drop(clone);
    wait_for("connections closed", 5, || numsub(&mut client, "d:ch") == 0);
}

#[test]
fn a_panicking_callback_does_not_kill_the_link() {
    let server = RedisServer::start();
    let mut client = server.client();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let link = RedisLink::start(config(server.url()), move |m| {
        s.fetch_add(1, Ordering::SeqCst);
        if matches!(&m, Incoming::Message { payload, .. } if &payload[..] == b"boom") {
            panic!("callback bug");
        }
    })
    .unwrap();
    link.on_reconnect(|| panic!("hook bug"));
    link.subscribe("x:ch");
    wait_up(&link);
    wait_for("subscription", 5, || numsub(&mut client, "x:ch") == 1);
    link.publish("x:ch", Bytes::from_static(b"boom")).unwrap();
    link.publish("x:ch", Bytes::from_static(b"fine")).unwrap();
    wait_for("both delivered", 5, || seen.load(Ordering::SeqCst) == 2);
    assert_eq!(
        block_on(link.command(redis::cmd("PING").clone())).unwrap(),
        redis::Value::SimpleString("PONG".into())
    );
    link.shutdown();
}

#[test]
fn authenticates_and_reports_auth_failures() {
    let server = RedisServer::start_with(common::free_port(), Some("s3cret"));
    let (link, rx) = start(config(format!("{}/1", server.url())));
    link.subscribe("a:ch");
    wait_up(&link);
    assert_eq!(
        block_on(link.command(redis::cmd("SET").arg("k").arg("v").clone())).unwrap(),
        redis::Value::Okay
    );
    let mut client = server.client();
    wait_for("subscription", 5, || numsub(&mut client, "a:ch") == 1);
    link.publish("a:ch", Bytes::from_static(b"ok")).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        message("a:ch", "ok")
    );
    link.shutdown();

    let url = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let (bad, _rx) = start(config(url));
    wait_for("auth error reported", 5, || {
        bad.last_error()
            .is_some_and(|e| e.contains("WRONGPASS") || e.contains("invalid"))
    });
    assert!(matches!(bad.status(), LinkStatus::Down { .. }));
    assert_eq!(bad.publish("a:ch", Bytes::new()), Err(LinkError::Down));
    bad.shutdown();
}

#[test]
fn rejects_bad_config() {
    assert!(RedisLink::start(RedisConfig::new("nope"), |_| {}).is_err());
    let mut cfg = RedisConfig::new("redis://127.0.0.1:1");
    cfg.max_queued = 0;
    assert!(RedisLink::start(cfg, |_| {}).is_err());
}
