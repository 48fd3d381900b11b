//! Redis Cluster support of the Redis link, against a real local 3-primary cluster
//! started by each test (and a standalone server for the sharded single link).

#[path = "redis_support/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{block_on, wait_for, RedisCluster, RedisServer};
use redis::Value;
use ringcast::broker::redis::{
    key_slot, ClusterLink, Incoming, LinkError, LinkStatus, RedisConfig, RedisLink, Sink,
};

fn config(url: String) -> RedisConfig {
    let mut cfg = RedisConfig::new(url);
    cfg.reconnect_backoff_max = Duration::from_millis(200);
    cfg.io_timeout = Duration::from_secs(2);
    cfg
}

/// What a sink saw. `confirmed` follows the Sink contract the way a broker would:
/// `subscribed` adds, `lost` clears.
#[derive(Default)]
struct Seen {
    subscribed: Mutex<HashMap<String, usize>>,
    confirmed: Mutex<HashSet<String>>,
    lost: AtomicUsize,
}

impl Seen {
    fn confirmed(&self, channels: &[String]) -> bool {
        let c = self.confirmed.lock().unwrap();
        channels.iter().all(|ch| c.contains(ch))
    }
}

struct TestSink {
    tx: flume::Sender<Incoming>,
    seen: Arc<Seen>,
}

impl Sink for TestSink {
    fn message(&self, msg: Incoming) {
        let _ = self.tx.send(msg);
    }
    fn subscribed(&self, channel: &str) {
        *self
            .seen
            .subscribed
            .lock()
            .unwrap()
            .entry(channel.to_owned())
            .or_default() += 1;
        self.seen
            .confirmed
            .lock()
            .unwrap()
            .insert(channel.to_owned());
    }
    fn lost(&self) {
        self.seen.lost.fetch_add(1, Ordering::SeqCst);
        self.seen.confirmed.lock().unwrap().clear();
    }
}

fn sink() -> (TestSink, flume::Receiver<Incoming>, Arc<Seen>) {
    let (tx, rx) = flume::unbounded();
    let seen = Arc::new(Seen::default());
    (
        TestSink {
            tx,
            seen: seen.clone(),
        },
        rx,
        seen,
    )
}

fn start(
    cluster: &RedisCluster,
    seeds: &[String],
) -> (ClusterLink, flume::Receiver<Incoming>, Arc<Seen>) {
    let (s, rx, seen) = sink();
    let link = ClusterLink::start(config(cluster.url(0)), seeds, s).unwrap();
    (link, rx, seen)
}

fn wait_up(link: &ClusterLink) {
    wait_for("cluster link up", 15, || link.status() == LinkStatus::Up);
}

/// `per_node` names starting with `prefix` landing on each node, grouped by node.
fn names_per_node(cluster: &RedisCluster, prefix: &str, per_node: usize) -> Vec<Vec<String>> {
    let n = cluster.ports.len();
    let mut out = vec![Vec::new(); n];
    let mut k = 0;
    while out.iter().any(|v| v.len() < per_node) {
        let name = format!("{prefix}{k}");
        let node = cluster.node_of_slot(key_slot(name.as_bytes()));
        if out[node].len() < per_node {
            out[node].push(name);
        }
        k += 1;
    }
    out
}

fn shard_numsub(c: &mut redis::Connection, channel: &str) -> i64 {
    let v: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query(c)
        .unwrap();
    v.first().map(|(_, n)| *n).unwrap_or(0)
}

fn text(msg: &Incoming) -> (String, String) {
    match msg {
        Incoming::Message { channel, payload } => (
            channel.clone(),
            String::from_utf8_lossy(payload).into_owned(),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// Receives until `want` has been seen (other messages are ignored).
fn receive_all(rx: &flume::Receiver<Incoming>, want: &HashSet<(String, String)>, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut left = want.clone();
    while !left.is_empty() {
        let now = Instant::now();
        assert!(now < deadline, "missing messages: {left:?}");
        if let Ok(m) = rx.recv_timeout(deadline - now) {
            left.remove(&text(&m));
        }
    }
}

#[test]
fn key_slots_agree_with_the_server() {
    let cluster = RedisCluster::start();
    let mut c = cluster.client(0);
    for key in [
        "",
        "a",
        "foo",
        "123456789",
        "ringcast:app:1",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{",
        "}{",
        "\u{e9}t\u{e9}",
    ] {
        let theirs: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap();
        assert_eq!(key_slot(key.as_bytes()), theirs, "{key:?}");
    }
}

#[test]
fn publish_and_subscribe_across_all_primaries() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let (sub, rx, seen) = start(&cluster, &seeds);
    // The publisher knows one seed only: the rest comes from the slot map.
    let (publisher, _prx, _) = start(&cluster, &seeds[2..]);
    let per_node = names_per_node(&cluster, "t:ch:", 4);
    let all: Vec<String> = per_node.iter().flatten().cloned().collect();
    // Subscribing before the map is known is fine.
    for ch in &all {
        sub.subscribe(ch);
    }
    sub.subscribe(&all[0]); // idempotent
    wait_up(&sub);
    wait_up(&publisher);
    assert_eq!(sub.primaries().len(), 3);
    assert_eq!(publisher.primaries().len(), 3);
    wait_for("every channel confirmed", 10, || seen.confirmed(&all));
    for (node, names) in per_node.iter().enumerate() {
        let mut c = cluster.client(node);
        for ch in names {
            assert_eq!(shard_numsub(&mut c, ch), 1, "{ch} at node {node}");
        }
    }
    // `subscribed` once per channel (one connection per primary, nothing lost).
    for ch in &all {
        assert_eq!(seen.subscribed.lock().unwrap().get(ch), Some(&1), "{ch}");
    }
    // SSUBSCRIBE is one command per slot: never one per channel batch of all slots.
    let m = sub.metrics();
    let slots: HashSet<u16> = all.iter().map(|c| key_slot(c.as_bytes())).collect();
    assert_eq!(m.subscription_commands, slots.len() as u64);

    // Publishes from another ClusterLink reach every channel.
    let want: HashSet<(String, String)> = all
        .iter()
        .map(|ch| (ch.clone(), format!("m-{ch}")))
        .collect();
    for (ch, payload) in &want {
        publisher.publish(ch, Bytes::from(payload.clone())).unwrap();
    }
    receive_all(&rx, &want, 10);

    // And so does a plain SPUBLISH at the owner.
    let owner = cluster.node_of_slot(key_slot(all[5].as_bytes()));
    let n: i64 = redis::cmd("SPUBLISH")
        .arg(&all[5])
        .arg("raw")
        .query(&mut cluster.client(owner))
        .unwrap();
    assert_eq!(n, 1);
    receive_all(
        &rx,
        &HashSet::from([(all[5].clone(), "raw".to_string())]),
        5,
    );

    // Unsubscribe: the owner forgets the channel; the others still deliver.
    let gone = &per_node[1][0];
    sub.unsubscribe(gone);
    wait_for("unsubscribed at the owner", 5, || {
        shard_numsub(&mut cluster.client(1), gone) == 0
    });
    publisher
        .publish(gone, Bytes::from_static(b"late"))
        .unwrap();
    publisher
        .publish(&per_node[2][0], Bytes::from_static(b"after"))
        .unwrap();
    let mut got = Vec::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_millis(500)) {
        got.push(text(&m));
    }
    assert!(
        got.contains(&(per_node[2][0].clone(), "after".into())),
        "{got:?}"
    );
    assert!(!got.iter().any(|(ch, _)| ch == gone), "{got:?}");

    let pm = publisher.metrics();
    assert!(pm.publishes_sent >= all.len() as u64 + 2, "{pm:?}");
    assert_eq!(pm.publish_drops, 0);
    assert!(sub.metrics().messages_received >= all.len() as u64 + 2);
    assert_eq!(seen.lost.load(Ordering::SeqCst), 0);
    sub.shutdown();
    publisher.shutdown();
    assert_eq!(
        publisher.publish(&all[0], Bytes::new()),
        Err(LinkError::Closed)
    );
    assert_eq!(
        block_on(publisher.command(redis::cmd("PING"))),
        Err(LinkError::Closed)
    );
}

#[test]
fn commands_are_routed_by_key_and_replies_keep_their_order() {
    let cluster = RedisCluster::start();
    let (link, _rx, _) = start(&cluster, &cluster.seeds());
    wait_up(&link);
    let keys = names_per_node(&cluster, "k:", 5);
    // Interleave the nodes: k(node0), k(node1), k(node2), k(node0)...
    let order: Vec<String> = (0..5)
        .flat_map(|i| keys.iter().map(move |v| v[i].clone()))
        .collect();
    let sets: Vec<redis::Cmd> = order
        .iter()
        .map(|k| redis::cmd("SET").arg(k).arg(format!("v-{k}")).clone())
        .collect();
    let replies = block_on(link.commands(sets)).unwrap();
    assert_eq!(replies, vec![Value::Okay; order.len()]);
    // Each key really lives on its node.
    for (node, names) in keys.iter().enumerate() {
        let mut c = cluster.client(node);
        for k in names {
            let v: String = redis::cmd("GET").arg(k).query(&mut c).unwrap();
            assert_eq!(v, format!("v-{k}"));
        }
    }

    // Mixed unit: GETs across nodes, a keyless command, a transaction on one slot.
    let mut unit: Vec<redis::Cmd> = order
        .iter()
        .map(|k| redis::cmd("GET").arg(k).clone())
        .collect();
    unit.insert(3, redis::cmd("PING"));
    unit.push(redis::cmd("MULTI"));
    unit.push(redis::cmd("SET").arg("{tx}a").arg(1).clone());
    unit.push(redis::cmd("INCR").arg("{tx}b").clone());
    unit.push(redis::cmd("EXEC"));
    unit.push(redis::cmd("GET").arg(&order[0]).clone());
    let replies = block_on(link.commands(unit)).unwrap();
    let mut want: Vec<Value> = order
        .iter()
        .map(|k| Value::BulkString(format!("v-{k}").into_bytes()))
        .collect();
    want.insert(3, Value::SimpleString("PONG".into()));
    want.push(Value::Okay);
    want.push(Value::SimpleString("QUEUED".into()));
    want.push(Value::SimpleString("QUEUED".into()));
    want.push(Value::Array(vec![Value::Okay, Value::Int(1)]));
    want.push(Value::BulkString(format!("v-{}", order[0]).into_bytes()));
    assert_eq!(replies, want);

    // The first error reply is reported with its index in the original unit.
    let bad = vec![
        redis::cmd("GET").arg(&keys[0][0]).clone(),
        redis::cmd("GET").arg(&keys[1][0]).clone(),
        redis::cmd("INCR").arg(&keys[2][0]).clone(), // not an integer
        redis::cmd("GET").arg(&keys[0][1]).clone(),
    ];
    match block_on(link.commands(bad)) {
        Err(LinkError::Redis(e)) => assert!(e.starts_with("command 2:"), "{e}"),
        other => panic!("{other:?}"),
    }
    // A multi-key command across slots is the server's CROSSSLOT error.
    match block_on(link.command(redis::cmd("MGET").arg(&keys[0][0]).arg(&keys[1][0]).clone())) {
        Err(LinkError::Redis(e)) => assert!(e.contains("CrossSlot"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        block_on(
            link.command(
                redis::cmd("EVAL")
                    .arg("return KEYS[1]")
                    .arg(1)
                    .arg(&keys[2][3])
                    .clone()
            )
        ),
        Ok(Value::BulkString(keys[2][3].clone().into_bytes()))
    );
    assert_eq!(block_on(link.commands(Vec::new())), Ok(Vec::new()));
    assert!(link.metrics().command_failures >= 2);
    link.shutdown();
}

/// Moves `slot` to node `to` (the slot holds no keys).
fn move_slot(cluster: &RedisCluster, slot: u16, to: usize) {
    let id = cluster.node_id(to);
    // The new owner first, then everyone else (as redis-cli does).
    let mut order = vec![to];
    order.extend((0..cluster.ports.len()).filter(|&i| i != to));
    for i in order {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&id)
            .query::<()>(&mut cluster.client(i))
            .unwrap();
    }
}

#[test]
fn slot_moves_are_followed_by_subscriptions_and_commands() {
    let cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let (sub, rx, seen) = start(&cluster, &seeds);
    let (other, _orx, _) = start(&cluster, &seeds);
    let other_started = Instant::now();
    wait_up(&sub);
    wait_up(&other);

    let channel = "{mv}chan".to_string();
    let slot = key_slot(b"mv");
    let from = cluster.node_of_slot(slot);
    let to = (from + 1) % 3;
    let stay = cluster.node_of_slot(key_slot(b"st"));
    sub.subscribe(&channel);
    sub.subscribe("{st}chan");
    wait_for("confirmed", 10, || {
        seen.confirmed(&[channel.clone(), "{st}chan".to_string()])
    });

    // The slot moves: the old owner drops the subscription, the link follows it.
    move_slot(&cluster, slot, to);
    wait_for("resubscribed at the new owner", 10, || {
        shard_numsub(&mut cluster.client(to), &channel) == 1
    });
    wait_for("confirmed again", 10, || {
        seen.confirmed(&[channel.clone(), "{st}chan".to_string()])
    });
    assert!(
        seen.lost.load(Ordering::SeqCst) >= 1,
        "the move revoked a confirmation"
    );
    assert_eq!(seen.subscribed.lock().unwrap()[&channel], 2);
    assert_eq!(shard_numsub(&mut cluster.client(from), &channel), 0);
    assert_eq!(shard_numsub(&mut cluster.client(stay), "{st}chan"), 1);

    // `other` has the old map (nothing told it yet): its command is answered MOVED
    // and followed.
    let before = other.metrics().commands_sent;
    assert_eq!(
        block_on(other.command(redis::cmd("SET").arg("{mv}key").arg("x").clone())),
        Ok(Value::Okay)
    );
    // Sent twice (old owner, then new), unless a periodic refresh came first.
    if other_started.elapsed()
        < ringcast::broker::redis::cluster::REFRESH_EVERY - Duration::from_secs(1)
    {
        assert_eq!(other.metrics().commands_sent - before, 2);
    }
    let v: String = redis::cmd("GET")
        .arg("{mv}key")
        .query(&mut cluster.client(to))
        .unwrap();
    assert_eq!(v, "x");
    // Its publishes reach the new owner once its map is refreshed (MOVED asks for
    // that; the publish that met MOVED itself is dropped and counted).
    let deadline = Instant::now() + Duration::from_secs(10);
    'delivered: loop {
        assert!(Instant::now() < deadline, "no delivery after the move");
        other
            .publish(&channel, Bytes::from_static(b"moved"))
            .unwrap();
        while let Ok(m) = rx.recv_timeout(Duration::from_millis(200)) {
            if text(&m) == (channel.clone(), "moved".into()) {
                break 'delivered;
            }
        }
    }

    // ASK: slot of `{ask}` migrating from its owner to another node; a key absent
    // at the source is redirected with ASK, and the link follows it with ASKING.
    let aslot = key_slot(b"ask");
    let src = cluster.node_of_slot(aslot);
    let dst = (src + 1) % 3;
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(aslot)
        .arg("IMPORTING")
        .arg(cluster.node_id(src))
        .query::<()>(&mut cluster.client(dst))
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(aslot)
        .arg("MIGRATING")
        .arg(cluster.node_id(dst))
        .query::<()>(&mut cluster.client(src))
        .unwrap();
    let before = other.metrics().commands_sent;
    assert_eq!(
        block_on(other.command(redis::cmd("SET").arg("{ask}k").arg("y").clone())),
        Ok(Value::Okay)
    );
    // SET at the source (ASK), then ASKING + SET at the destination.
    assert_eq!(other.metrics().commands_sent - before, 3);
    move_slot(&cluster, aslot, dst);
    let v: String = redis::cmd("GET")
        .arg("{ask}k")
        .query(&mut cluster.client(dst))
        .unwrap();
    assert_eq!(v, "y");
    sub.shutdown();
    other.shutdown();
}

#[test]
fn a_primary_killed_and_restarted_is_survived() {
    let mut cluster = RedisCluster::start();
    let seeds = cluster.seeds();
    let (sub, rx, seen) = start(&cluster, &seeds);
    let (publisher, _prx, _) = start(&cluster, &seeds);
    let reconnects = Arc::new(AtomicUsize::new(0));
    let r = reconnects.clone();
    publisher.on_reconnect(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let per_node = names_per_node(&cluster, "r:", 3);
    let all: Vec<String> = per_node.iter().flatten().cloned().collect();
    for ch in &all {
        sub.subscribe(ch);
    }
    wait_up(&sub);
    wait_up(&publisher);
    wait_for("confirmed", 10, || seen.confirmed(&all));
    // (First connections are reported only to hooks registered in time.)
    let connected = reconnects.load(Ordering::SeqCst);
    assert!(connected <= 3);

    let victim = 1;
    cluster.kill(victim);
    wait_for("link down", 10, || {
        matches!(sub.status(), LinkStatus::Down { .. })
    });
    wait_for("publisher sees it", 10, || !publisher.is_command_up());
    // The pub/sub connection may notice a moment after the command connection.
    wait_for("lost reported", 10, || {
        seen.lost.load(Ordering::SeqCst) >= 1
    });
    assert!(sub.last_error().is_some());
    // The other primaries keep delivering.
    let alive = &per_node[(victim + 1) % 3][0];
    publisher
        .publish(alive, Bytes::from_static(b"during"))
        .unwrap();
    receive_all(&rx, &HashSet::from([(alive.clone(), "during".into())]), 5);
    // The dead one's publishes fail fast.
    assert!(publisher
        .publish(&per_node[victim][0], Bytes::from_static(b"x"))
        .is_err());

    cluster.restart(victim);
    cluster.wait_ok(30);
    wait_up(&sub);
    wait_up(&publisher);
    wait_for("resubscribed and confirmed", 15, || seen.confirmed(&all));
    assert_eq!(
        shard_numsub(&mut cluster.client(victim), &per_node[victim][0]),
        1
    );
    let want: HashSet<(String, String)> = all
        .iter()
        .map(|ch| (ch.clone(), format!("after-{ch}")))
        .collect();
    for (ch, payload) in &want {
        publisher.publish(ch, Bytes::from(payload.clone())).unwrap();
    }
    receive_all(&rx, &want, 10);
    // Commands reach the restarted primary too.
    let key = format!("{{{}}}k", per_node[victim][0]);
    assert_eq!(
        block_on(publisher.command(redis::cmd("SET").arg(&key).arg(1).clone())),
        Ok(Value::Okay)
    );
    assert!(reconnects.load(Ordering::SeqCst) > connected);
    assert!(sub.metrics().reconnects >= 2, "{:?}", sub.metrics());
    sub.shutdown();
    publisher.shutdown();
}

#[test]
fn sharded_link_on_a_standalone_server() {
    let server = RedisServer::start();
    let mut client = server.client();
    let (s, rx, seen) = sink();
    let mut cfg = config(server.url());
    cfg.sharded = true;
    let link = RedisLink::start(cfg, s).unwrap();
    let channels: Vec<String> = (0..50).map(|i| format!("sh:{i}")).collect();
    for ch in &channels {
        link.subscribe(ch);
    }
    link.psubscribe("sh:*"); // no patterns in sharded pub/sub: ignored
    wait_for("link up", 10, || link.status() == LinkStatus::Up);
    wait_for("all confirmed", 10, || seen.confirmed(&channels));
    let n: Vec<String> = redis::cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .arg("sh:*")
        .query(&mut client)
        .unwrap();
    assert_eq!(n.len(), 50);
    assert_eq!(common::numpat(&mut client), 0);
    let slots: HashSet<u16> = channels.iter().map(|c| key_slot(c.as_bytes())).collect();
    assert_eq!(link.metrics().subscription_commands, slots.len() as u64);

    link.publish("sh:7", Bytes::from_static(b"spub")).unwrap();
    receive_all(&rx, &HashSet::from([("sh:7".into(), "spub".into())]), 5);
    // A plain PUBLISH is another namespace: not delivered to shard subscribers.
    let n: i64 = redis::cmd("PUBLISH")
        .arg("sh:7")
        .arg("plain")
        .query(&mut client)
        .unwrap();
    assert_eq!(n, 0);

    link.unsubscribe("sh:7");
    wait_for("unsubscribed", 5, || shard_numsub(&mut client, "sh:7") == 0);
    assert_eq!(shard_numsub(&mut client, "sh:8"), 1);
    link.shutdown();
}

#[test]
fn bad_settings_and_an_unreachable_cluster() {
    let (s, _, _) = sink();
    assert!(ClusterLink::start(config("redis://127.0.0.1:1/2".into()), &[], s).is_err());
    let (s, _, _) = sink();
    assert!(ClusterLink::start(config("redis://127.0.0.1:1".into()), &["nope".into()], s).is_err());

    // Nothing listens there: the link starts, stays down, and refuses work at once.
    let port = common::free_port();
    let (s, _, _) = sink();
    let link = ClusterLink::start(
        config(format!("redis://127.0.0.1:{port}")),
        &[format!("redis://127.0.0.1:{port}")],
        s,
    )
    .unwrap();
    link.subscribe("x");
    wait_for("an error is reported", 10, || link.last_error().is_some());
    assert!(matches!(link.status(), LinkStatus::Down { .. }));
    assert!(!link.is_command_up());
    assert_eq!(link.publish("x", Bytes::new()), Err(LinkError::Down));
    assert_eq!(
        block_on(link.command(redis::cmd("GET").arg("x").clone())),
        Err(LinkError::Down)
    );
    let m = link.metrics();
    assert_eq!((m.publish_drops, m.command_failures), (1, 1));
    drop(link); // the last handle: shuts down
}
