//! Scenario: subscribers spread over both shards of one node; messages published through
//! the HTTP API and by a client reach every subscriber exactly once, in order, and never
//! reach a connection that is not subscribed.
mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn publish_reaches_subscribers_on_every_shard_exactly_once() {
    let srv = Server::dev(&[]);
    let mut subs = users_on_both_shards(&srv, "sub", 2).await;
    for ws in subs.iter_mut() {
        subscribe(ws, "chat:room1").await;
    }
    let mut outsider = srv.user("outsider").await;
    subscribe(&mut outsider, "chat:other").await;

    for i in 0..50 {
        srv.publish("chat:room1", json!({"seq": i})).await;
    }
    for ws in subs.iter_mut() {
        for i in 0..50 {
            let m = recv_json(ws).await;
            assert_eq!(m["type"], "message");
            assert_eq!(m["topic"], "chat:room1");
            assert_eq!(m["data"]["seq"], i, "in order, none lost or repeated");
        }
        expect_silence(ws, Duration::from_millis(100)).await;
    }
    expect_silence(&mut outsider, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn client_publish_crosses_shards_and_is_acked() {
    let srv = Server::dev(&[]);
    let mut conns = users_on_both_shards(&srv, "c", 1).await;
    for ws in conns.iter_mut() {
        subscribe(ws, "room:x").await;
    }
    let mut publisher = conns.pop().unwrap();
    send_json(
        &mut publisher,
        json!({"type":"publish","topic":"room:x","data":{"text":"hi"},"id":"p1"}),
    )
    .await;
    // The publisher is subscribed too: it gets its ack and its own message.
    let mut got = [
        recv_json(&mut publisher).await,
        recv_json(&mut publisher).await,
    ];
    got.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["type"], "ack");
    assert_eq!(got[0]["id"], "p1");
    assert_eq!(got[1]["data"]["text"], "hi");
    for ws in conns.iter_mut() {
        let m = recv_json(ws).await;
        assert_eq!(m["data"]["text"], "hi");
        expect_silence(ws, Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_interest_is_withdrawn() {
    let srv = Server::dev(&[]);
    let mut conns = users_on_both_shards(&srv, "u", 1).await;
    for ws in conns.iter_mut() {
        subscribe(ws, "news").await;
    }
    for ws in conns.iter_mut() {
        send_json(ws, json!({"type":"unsubscribe","topic":"news","id":1})).await;
        let m = recv_json(ws).await;
        assert_eq!(m["type"], "unsubscribed");
        assert_eq!(m["id"], 1);
    }
    srv.publish("news", json!("late")).await;
    for ws in conns.iter_mut() {
        expect_silence(ws, Duration::from_millis(100)).await;
    }
    // Re-subscribing after the topic was dropped everywhere works again.
    let ws = &mut conns[0];
    subscribe(ws, "news").await;
    srv.publish("news", json!("again")).await;
    assert_eq!(recv_json(ws).await["data"], "again");
    let s = srv.stats().await;
    // Every connection has its personal topic; one has "news" as well.
    assert_eq!(
        s["subscriptions"].as_u64().unwrap(),
        s["connections"].as_u64().unwrap() + 1
    );
}

#[tokio::test]
async fn broadcast_reaches_everyone() {
    let srv = Server::dev(&[]);
    let mut conns = users_on_both_shards(&srv, "b", 1).await;
    let mut anon = srv.connect("/ws").await;
    let hello = recv_json(&mut anon).await;
    assert_eq!(hello["type"], "auth_success");
    assert_eq!(hello["user_type"], "anonymous");
    let (status, _) = srv
        .http(
            "POST",
            "/api/v1/broadcast",
            Some(r#"{"data":{"alert":"maintenance"}}"#),
        )
        .await;
    assert_eq!(status, 200);
    conns.push(anon);
    for ws in conns.iter_mut() {
        let m = recv_json(ws).await;
        assert_eq!(m["topic"], "broadcast");
        assert_eq!(m["data"]["alert"], "maintenance");
    }
}

/// A subscriber that stops reading while a burst is published: its backlog goes out in
/// large vectored writes that fill the socket buffer (partial writes, the rest after the
/// buffer drains); when it reads again everything arrives intact and in order.
#[tokio::test]
async fn a_backlog_arrives_whole_and_in_order_after_partial_writes() {
    // Room for the whole backlog in the queue: this is about writes, not slow consumers.
    let srv = Server::dev(&["--max-outbound", "67108864"]);
    let mut sub = srv.user("reader").await;
    subscribe(&mut sub, "big").await;
    let pad = "x".repeat(8000);
    let batch: Vec<_> = (0..2000)
        .map(|n| json!({"method": "publish", "params": {"topic": "big", "data": {"n": n, "pad": pad}}}))
        .collect();
    for chunk in batch.chunks(100) {
        let body = json!({ "commands": chunk }).to_string();
        let (status, resp) = srv.http("POST", "/api/v1/batch", Some(&body)).await;
        assert_eq!(status, 200, "{resp}");
    }
    // Not reading for a while lets the queue and the socket buffers fill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..2000 {
        let m = recv_json(&mut sub).await;
        assert_eq!(m["data"]["n"], n);
        assert_eq!(m["data"]["pad"].as_str().map(str::len), Some(8000));
    }
}
