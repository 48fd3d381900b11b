//! `fanout` (and `slow`): N subscribers on one topic, one publisher in the
//! parent (HTTP API or a WebSocket client). A share of subscribers may stop
//! reading (`--slow-share`).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{
    my_conns, wait_go, Ctl, DriverResult, LatBatch, Pacer, PublishVia, ReadyInfo, RunCfg, RxStamp,
    Shared, WorkerResult,
};
use crate::adapter::{payload, Client, Event};
use crate::http::HttpClient;
use crate::stats::{now_micros, Hist, SeqTracker};

pub const TOPIC: &str = "fanout";

/// Receive buffer of slow subscribers, so that the server sees their
/// backpressure after a few messages rather than after megabytes.
pub const SLOW_RCVBUF: usize = 4096;

/// Whether subscriber `i` is one of the slow (non-reading) ones.
pub fn is_slow(i: usize, share: f64) -> bool {
    share > 0.0 && ((i * 7919) % 1000) < (share * 1000.0) as usize
}

/// Per-connection outcome returned when the task ends.
pub struct SubEnd {
    pub measured: bool,
    pub tracker: Option<SeqTracker>,
    /// Slow subscriber whose connection the server closed.
    pub slow_closed: bool,
}

/// Reads deliveries until stopped: latency, seq tracking, timeline.
pub async fn read_loop(
    client: &mut Client,
    sh: &Shared,
    stop: &watch::Receiver<bool>,
    tracker: &mut SeqTracker,
    own: Option<u64>,
) {
    let mut batch = LatBatch::default();
    let mut received = 0u64;
    let mut sec_start = 0u64;
    let mut sec_count = 0u64;
    let mut stamp = RxStamp::default();
    // One long-lived stop future: re-creating `changed()` per message would
    // register/unregister a waiter on a Notify shared by all tasks each time.
    let mut stop_rx = stop.clone();
    let stopped = stop_rx.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            ev = client.next_event() => match ev {
                Ok(Event::Delivery { ts, seq, from }) => {
                    if own.is_some() && from == own {
                        continue;
                    }
                    let now = now_micros();
                    if let Some(ts) = ts {
                        batch.push(sh, now.saturating_sub(ts));
                    }
                    if let Some(seq) = seq {
                        tracker.see(seq);
                    }
                    received += 1;
                    stamp.note(sh, now);
                    if now.saturating_sub(sec_start) >= 1_000_000 {
                        if sec_count > 0 {
                            sh.tick(sec_start, sec_count);
                        }
                        sec_start = now;
                        sec_count = 0;
                    }
                    sec_count += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    if !*stop.borrow() {
                        sh.disconnects.fetch_add(1, Relaxed);
                        sh.error(format!("read: {e:#}"));
                    }
                    break;
                }
            }
        }
    }
    if sec_count > 0 {
        sh.tick(sec_start, sec_count);
    }
    stamp.flush(sh);
    batch.flush(sh);
    sh.received.fetch_add(received, Relaxed);
}

/// Connects `conns` subscriber tasks (one topic per conn from `topic_of`),
/// reports setup through `ctl.ready`, and returns their join handles.
#[allow(clippy::too_many_arguments)]
pub async fn connect_all(
    cfg: &RunCfg,
    idx: usize,
    n: usize,
    sh: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    topic_of: impl Fn(usize) -> Option<String>,
    user_of: impl Fn(usize) -> Option<String>,
    slow_share: f64,
) -> Vec<tokio::task::JoinHandle<SubEnd>> {
    let sem = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let mut pacer = Pacer::new(cfg.connect_rate / n as f64);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for i in my_conns(cfg.conns, idx, n) {
        pacer.wait().await;
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (sh, mut stop, done) = (sh.clone(), stop.clone(), done_tx.clone());
        let (ep, src) = (cfg.ep.clone(), cfg.src_for(i));
        let topic = topic_of(i);
        let user = user_of(i);
        let slow = is_slow(i, slow_share);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = async {
                let rcvbuf = slow.then_some(SLOW_RCVBUF);
                let mut c = Client::connect_opts(&ep, src, user.as_deref(), rcvbuf).await?;
                if let Some(topic) = topic {
                    c.subscribe(&topic).await?;
                }
                anyhow::Ok(c)
            }
            .await;
            drop(permit);
            let mut client = match r {
                Ok(c) => {
                    sh.connected.fetch_add(1, Relaxed);
                    sh.connect_lat
                        .lock()
                        .unwrap()
                        .record(t.elapsed().as_micros() as u64);
                    c
                }
                Err(e) => {
                    sh.connect_error(e);
                    let _ = done.send(());
                    return SubEnd {
                        measured: false,
                        tracker: None,
                        slow_closed: false,
                    };
                }
            };
            let _ = done.send(());
            drop(done);
            if slow {
                // Hold the connection without reading from it; at the end,
                // read briefly to see whether the server closed it (a server
                // that drops slow consumers leaves little backlog behind).
                let _ = stop.changed().await;
                let closed = tokio::time::timeout(Duration::from_secs(1), async {
                    while client.next_event().await.is_ok() {}
                })
                .await
                .is_ok();
                return SubEnd {
                    measured: false,
                    tracker: None,
                    slow_closed: closed,
                };
            }
            let mut tracker = SeqTracker::default();
            read_loop(&mut client, &sh, &stop, &mut tracker, None).await;
            SubEnd {
                measured: true,
                tracker: Some(tracker),
                slow_closed: false,
            }
        }));
    }
    drop(done_tx);
    for _ in 0..tasks.len() {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
    tasks
}

/// Collects per-subscriber figures after stop.
pub async fn finish(
    sh: &Shared,
    tasks: Vec<tokio::task::JoinHandle<SubEnd>>,
    published: u64,
    slow_share: f64,
    per_sub: bool,
) -> WorkerResult {
    let mut lost = 0u64;
    let mut measured = 0u64;
    let mut slow = 0u64;
    let mut slow_closed = 0u64;
    for t in tasks {
        match t.await {
            Ok(SubEnd {
                measured: true,
                tracker: Some(tr),
                ..
            }) => {
                measured += 1;
                sh.distinct.fetch_add(tr.distinct, Relaxed);
                sh.dups.fetch_add(tr.dups, Relaxed);
                sh.late.fetch_add(tr.late, Relaxed);
                if per_sub {
                    lost += published.saturating_sub(tr.distinct);
                }
            }
            Ok(e) => {
                if slow_share > 0.0 {
                    slow += 1;
                }
                slow_closed += e.slow_closed as u64;
            }
            Err(e) => sh.error(e),
        }
    }
    let mut r = sh.snapshot();
    r.lost = if per_sub {
        lost
    } else {
        published.saturating_sub(r.distinct)
    };
    r.measured_subs = measured;
    // `slow` also counts failed connections; subtract those.
    r.slow_subs = slow.saturating_sub(r.connect_errors);
    r.slow_closed = slow_closed;
    r
}

pub async fn worker(cfg: RunCfg, idx: usize, n: usize, ctl: Ctl) -> Result<WorkerResult> {
    let sh = Arc::new(Shared::new(cfg.duration.as_secs() as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let tasks = connect_all(
        &cfg,
        idx,
        n,
        &sh,
        &stop_rx,
        |_| Some(TOPIC.to_string()),
        |_| None,
        cfg.slow_share,
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
    Ok(finish(&sh, tasks, stop.published, cfg.slow_share, true).await)
}

/// The parent's publisher.
pub async fn driver(cfg: &RunCfg) -> DriverResult {
    publish_loop(
        cfg,
        Arc::new(|_| TOPIC.to_string()),
        Arc::new(|_| "/api/v1/publish".to_string()),
        Arc::new(|_, data| format!(r#"{{"topic":"{TOPIC}","data":{data}}}"#)),
    )
    .await
}

pub type SeqFn = Arc<dyn Fn(u64) -> String + Send + Sync>;
pub type BodyFn = Arc<dyn Fn(u64, &str) -> String + Send + Sync>;

/// Publishes for `cfg.duration` at `cfg.rate` (0 = as fast as acks allow
/// with `cfg.inflight` outstanding) to `cfg.publish_ep()`, via HTTP (`path_of(seq)`,
/// `body_of(seq, data)`) or a WebSocket client (`topic_of(seq)`).
pub async fn publish_loop(
    cfg: &RunCfg,
    topic_of: SeqFn,
    path_of: SeqFn,
    body_of: BodyFn,
) -> DriverResult {
    let via = if cfg.publish_ep().target.has_http() {
        cfg.publish_via
    } else {
        PublishVia::Ws
    };
    match via {
        PublishVia::Http => http_publish(cfg, path_of, body_of).await,
        PublishVia::Ws => ws_publish(cfg, topic_of).await,
    }
}

async fn http_publish(cfg: &RunCfg, path_of: SeqFn, body_of: BodyFn) -> DriverResult {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + cfg.duration;
    let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.rate));
    let pad = Arc::new(cfg.pad());
    let mut tasks = Vec::new();
    for _ in 0..cfg.inflight.max(1) {
        let (next, pad, path_of, body_of) =
            (next.clone(), pad.clone(), path_of.clone(), body_of.clone());
        let ep = cfg.publish_ep();
        let mut http = HttpClient::new(ep.addr, &ep.authority, ep.api_key.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = DriverResult::default();
            loop {
                let seq = next.fetch_add(1, Relaxed);
                if let Some(iv) = interval {
                    let due = start + iv.mul_f64(seq as f64);
                    if due >= end {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                } else if Instant::now() >= end {
                    break;
                }
                let ts = now_micros();
                let body = body_of(seq, &payload(ts, seq, None, &pad));
                r.sent += 1;
                match http.post(&path_of(seq), &body).await {
                    Ok((200..=299, _)) => {
                        r.acked += 1;
                        r.ack_lat.record(now_micros().saturating_sub(ts));
                    }
                    Ok((st, b)) => {
                        r.errors += 1;
                        if r.error_samples.len() < 3 {
                            r.error_samples
                                .push(format!("HTTP {st}: {}", &b[..b.len().min(200)]));
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.error_samples.len() < 3 {
                            r.error_samples.push(format!("{e:#}"));
                        }
                    }
                }
            }
            r
        }));
    }
    let mut total = DriverResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            merge_driver(&mut total, r);
        }
    }
    total
}

pub fn merge_driver(total: &mut DriverResult, r: DriverResult) {
    total.sent += r.sent;
    total.acked += r.acked;
    total.errors += r.errors;
    total.ack_lat.add(&r.ack_lat);
    for e in r.error_samples {
        if total.error_samples.len() < 5 {
            total.error_samples.push(e);
        }
    }
}

/// WebSocket publisher; `topic_of(seq)` names each message's topic.
pub async fn ws_publish(cfg: &RunCfg, topic_of: SeqFn) -> DriverResult {
    let mut r = DriverResult::default();
    let mut client = match Client::connect(cfg.publish_ep(), None, None).await {
        Ok(c) => c,
        Err(e) => {
            r.errors += 1;
            r.error_samples.push(format!("publisher connect: {e:#}"));
            return r;
        }
    };
    let start = Instant::now();
    let end = start + cfg.duration;
    let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / cfg.rate));
    let window = cfg.inflight.max(1);
    let pad = cfg.pad();
    let nats = cfg.publish_ep().target.is_nats();
    let mut inflight: BTreeMap<u64, u64> = BTreeMap::new();
    let mut seq = 0u64;
    let mut next_due = start;
    let mut done = false;
    let mut ack_lat = Hist::default();
    let drain_deadline = end + Duration::from_secs(5);
    loop {
        if Instant::now() >= end {
            done = true;
        }
        if done && (inflight.is_empty() || Instant::now() >= drain_deadline) {
            break;
        }
        let can_send = !done && inflight.len() < window;
        tokio::select! {
            _ = tokio::time::sleep_until(next_due.into()), if can_send => {
                let ts = now_micros();
                let data = payload(ts, seq, None, &pad);
                match client.publish(&topic_of(seq), &data).await {
                    Ok(id) => {
                        inflight.insert(id, ts);
                        r.sent += 1;
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.error_samples.push(format!("publish: {e:#}"));
                        break;
                    }
                }
                seq += 1;
                next_due = match interval {
                    Some(iv) => start + iv.mul_f64(seq as f64),
                    None => Instant::now(),
                };
            }
            ev = client.next_event() => match ev {
                Ok(Event::Ack(id)) if !nats => {
                    if let Some(ts) = inflight.remove(&id) {
                        r.acked += 1;
                        ack_lat.record(now_micros().saturating_sub(ts));
                    }
                }
                Ok(Event::Pong(n)) if nats => {
                    let rest = inflight.split_off(&(n + 1));
                    let now = now_micros();
                    for ts in inflight.values() {
                        r.acked += 1;
                        ack_lat.record(now.saturating_sub(*ts));
                    }
                    inflight = rest;
                }
                Ok(Event::Error(m)) => {
                    r.errors += 1;
                    if r.error_samples.len() < 3 {
                        r.error_samples.push(m);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    r.errors += 1;
                    r.error_samples.push(format!("publisher read: {e:#}"));
                    break;
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(100)), if !can_send => {}
        }
    }
    r.ack_lat = ack_lat;
    client.close().await;
    r
}
