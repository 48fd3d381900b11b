//! Scenario: one subscriber stops reading. Its queue passes the bound, it is disconnected
//! (close code 4009 when the socket still takes it), and every other subscriber still
//! receives every message, in order.
mod common;
use common::*;
use serde_json::json;

// Readers on their own worker threads, and a bound with room for 32 messages, so a
// reader that is merely descheduled on a busy machine is not taken for a slow one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_others_get_everything() {
    let srv = Server::dev(&["--max-outbound", "524288"]);
    let mut fast = Vec::new();
    for i in 0..4 {
        let mut ws = srv.user(&format!("fast{i}")).await;
        subscribe(&mut ws, "firehose").await;
        fast.push(ws);
    }
    // The slow one subscribes, then is never read again.
    let mut slow = srv.user("slow").await;
    subscribe(&mut slow, "firehose").await;

    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let m = recv_json(&mut ws).await;
                    if m["data"]["end"] == true {
                        return (n, ws);
                    }
                    assert_eq!(m["data"]["seq"], n, "in order, nothing lost");
                    n += 1;
                }
            })
        })
        .collect();
    // Publish until the slow consumer is cut off (loopback socket buffers absorb several
    // MiB first), then a little more.
    let blob = "x".repeat(16 * 1024);
    let mut sent = 0u64;
    let mut extra = None;
    while sent < 5000 && extra != Some(0) {
        srv.publish("firehose", json!({"seq": sent, "blob": blob}))
            .await;
        sent += 1;
        if extra.is_none()
            && sent.is_multiple_of(25)
            && srv.stats().await["slow_consumer_disconnects"].as_u64() == Some(1)
        {
            extra = Some(50);
        }
        extra = extra.map(|e: u64| e.saturating_sub(1));
    }
    assert_eq!(extra, Some(0), "slow consumer was disconnected");
    srv.publish("firehose", json!({"end": true})).await;
    let mut still_open = Vec::new();
    for r in readers {
        let (n, ws) = r.await.unwrap();
        assert_eq!(n, sent, "every fast subscriber got every message");
        still_open.push(ws);
    }
    eventually("slow connection gone", || async {
        srv.stats().await["connections"].as_u64() == Some(4)
    })
    .await;
    drop(slow);
}
