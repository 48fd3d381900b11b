//! `users`: N connections with distinct user ids; the parent sends to random
//! online users through the send-to-user HTTP API (NATS: a per-user subject).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio::sync::watch;

use super::fanout::{connect_all, finish, publish_loop};
use super::{wait_go, Ctl, DriverResult, ReadyInfo, RunCfg, WorkerResult};
use crate::adapter::Endpoint;

/// Deterministic pseudo-random user index for message `seq`.
pub fn target_of(seq: u64, users: usize) -> usize {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % users.max(1) as u64) as usize
}

pub fn user_id(i: usize) -> String {
    format!("u{i}")
}

pub async fn worker(cfg: RunCfg, idx: usize, n: usize, ctl: Ctl) -> Result<WorkerResult> {
    let sh = Arc::new(super::Shared::new(cfg.duration.as_secs() as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let nats = cfg.ep.target.is_nats();
    let tasks = connect_all(
        &cfg,
        idx,
        n,
        &sh,
        &stop_rx,
        |i| nats.then(|| Endpoint::user_topic(&user_id(i))),
        |i| Some(user_id(i)),
        0.0,
    )
    .await;
    let _ = ctl.ready.send(ReadyInfo {
        connected: sh.connected.load(Relaxed),
        connect_errors: sh.connect_errors.load(Relaxed),
        setup_secs: t0.elapsed().as_secs_f64(),
    });
    let start = wait_go(ctl.go).await;
    sh.start_us.store(start, Relaxed);
    let stop = ctl.stop.await.unwrap_or_default();
    sh.quiesce().await;
    let _ = stop_tx.send(true);
    let mine = sends_to_worker(stop.published, cfg.conns, idx, n);
    Ok(finish(&sh, tasks, mine, 0.0, false).await)
}

/// How many of the first `published` sends went to this worker's users (user `i`
/// belongs to worker `i % n`, see `my_conns`): what it should have received.
pub fn sends_to_worker(published: u64, users: usize, idx: usize, n: usize) -> u64 {
    if n <= 1 {
        return published;
    }
    (0..published)
        .filter(|&seq| target_of(seq, users) % n == idx)
        .count() as u64
}

pub async fn driver(cfg: &RunCfg) -> DriverResult {
    let users = cfg.conns;
    let ut = cfg.ep.user_type.clone();
    // Send-to-user exists only in the HTTP API (NATS: per-user subjects).
    let mut cfg = cfg.clone();
    cfg.publish_via = super::PublishVia::Http;
    publish_loop(
        &cfg,
        Arc::new(move |seq| Endpoint::user_topic(&user_id(target_of(seq, users)))),
        Arc::new(move |seq| format!("/api/v1/users/{ut}/{}/send", user_id(target_of(seq, users)))),
        Arc::new(|_, data| format!(r#"{{"data":{data}}}"#)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_send_is_expected_by_exactly_one_worker() {
        for n in 1..4 {
            let total: u64 = (0..n).map(|i| sends_to_worker(1000, 37, i, n)).sum();
            assert_eq!(total, 1000, "{n} workers");
        }
        // Each worker owns its share of users, so it expects only sends to them.
        let w0 = sends_to_worker(1000, 37, 0, 2);
        assert!(w0 > 300 && w0 < 700, "{w0}");
    }
}
