//! Scenario framework. A run has client-side work split over workers (tasks
//! in this process, or re-executed worker processes with `--procs N`) and an
//! optional driver in the parent (the publisher). Phases:
//! setup (connect, subscribe) → READY → GO (measure) → STOP → RESULT.

pub mod capacity;
pub mod chat;
pub mod fanout;
pub mod storm;
pub mod users;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use crate::adapter::Endpoint;
use crate::stats::{machine_busy_secs, now_micros, tree_cpu_excluding, tree_usage, Hist, Timeline};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Fanout,
    Capacity,
    Storm,
    Chat,
    Users,
    Slow,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Capacity => "capacity",
            Scenario::Storm => "storm",
            Scenario::Chat => "chat",
            Scenario::Users => "users",
            Scenario::Slow => "slow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PublishVia {
    Http,
    Ws,
}

/// Everything a worker needs; serialized to worker processes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunCfg {
    pub scenario: Scenario,
    pub ep: Endpoint,
    pub conns: usize,
    pub rate: f64,
    pub duration: Duration,
    pub hold: Duration,
    pub drain: Duration,
    pub publish_via: PublishVia,
    pub inflight: usize,
    pub topics: usize,
    pub room_size: usize,
    pub slow_share: f64,
    pub src_ips: Vec<IpAddr>,
    pub connect_concurrency: usize,
    pub connect_rate: f64,
    pub payload_bytes: usize,
    pub procs: usize,
    pub server_pid: Option<u32>,
    /// The publisher's server when it differs from `ep` (`--publish-url`: a
    /// fleet with the publisher on one node and the subscribers on another).
    #[serde(default)]
    pub pub_ep: Option<Endpoint>,
    /// More server processes whose RSS and CPU count as the server's (and
    /// not the client's): the other nodes of a fleet and its Redis.
    #[serde(default)]
    pub extra_server_pids: Vec<u32>,
}

impl RunCfg {
    /// Where the publisher sends: `pub_ep`, else `ep`.
    pub fn publish_ep(&self) -> &Endpoint {
        self.pub_ep.as_ref().unwrap_or(&self.ep)
    }
    /// Every server process measured (`server_pid` first).
    pub fn server_pids(&self) -> Vec<u32> {
        self.server_pid
            .iter()
            .chain(&self.extra_server_pids)
            .copied()
            .collect()
    }
    pub fn src_for(&self, conn: usize) -> Option<IpAddr> {
        if self.src_ips.is_empty() {
            None
        } else {
            Some(self.src_ips[conn % self.src_ips.len()])
        }
    }
    pub fn pad(&self) -> String {
        "x".repeat(self.payload_bytes.saturating_sub(40))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub connected: u64,
    pub connect_errors: u64,
    pub setup_secs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GoMsg {
    pub start_us: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StopMsg {
    /// Messages acknowledged by the server (what each subscriber should get).
    pub published: u64,
}

/// A worker's (or the merged) measurements.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub connected: u64,
    pub connect_errors: u64,
    pub error_samples: Vec<String>,
    /// connect + handshake + auth + subscribe time
    pub connect_lat: Hist,
    /// publish → receive latency
    pub lat: Hist,
    pub received: u64,
    pub distinct: u64,
    pub dups: u64,
    pub late: u64,
    pub lost: u64,
    /// Subscribers whose latency/loss counted (excludes slow ones).
    pub measured_subs: u64,
    pub slow_subs: u64,
    /// Slow subscribers whose connection the server had closed by the end.
    #[serde(default)]
    pub slow_closed: u64,
    pub disconnects: u64,
    pub published: u64,
    pub publish_errors: u64,
    pub timeline: Timeline,
    pub setup_secs: f64,
    /// Seconds from the start of the measured phase to the last delivery.
    #[serde(default)]
    pub rx_span_secs: f64,
}

impl WorkerResult {
    pub fn merge(&mut self, o: &WorkerResult) {
        self.connected += o.connected;
        self.connect_errors += o.connect_errors;
        for e in &o.error_samples {
            if self.error_samples.len() < 10 && !self.error_samples.contains(e) {
                self.error_samples.push(e.clone());
            }
        }
        self.connect_lat.add(&o.connect_lat);
        self.lat.add(&o.lat);
        self.received += o.received;
        self.distinct += o.distinct;
        self.dups += o.dups;
        self.late += o.late;
        self.lost += o.lost;
        self.measured_subs += o.measured_subs;
        self.slow_subs += o.slow_subs;
        self.slow_closed += o.slow_closed;
        self.disconnects += o.disconnects;
        self.published += o.published;
        self.publish_errors += o.publish_errors;
        self.timeline.add(&o.timeline);
        self.setup_secs = self.setup_secs.max(o.setup_secs);
        self.rx_span_secs = self.rx_span_secs.max(o.rx_span_secs);
    }
}

/// Longest wait for a server's delivery backlog after publishing stopped.
pub const QUIESCE_MAX: Duration = Duration::from_secs(15);

/// Shared, lock-light accumulator used by the connection tasks of a worker.
pub struct Shared {
    pub lat: Mutex<Hist>,
    pub connect_lat: Mutex<Hist>,
    pub errors: Mutex<Vec<String>>,
    pub connected: AtomicU64,
    pub connect_errors: AtomicU64,
    pub received: AtomicU64,
    pub distinct: AtomicU64,
    pub dups: AtomicU64,
    pub late: AtomicU64,
    pub disconnects: AtomicU64,
    pub published: AtomicU64,
    pub publish_errors: AtomicU64,
    pub per_sec: Vec<AtomicU64>,
    pub start_us: AtomicU64,
    /// Time of the latest delivery (for waiting until deliveries stop).
    pub last_rx_us: AtomicU64,
}

impl Shared {
    pub fn new(secs: usize) -> Self {
        Shared {
            lat: Mutex::new(Hist::default()),
            connect_lat: Mutex::new(Hist::default()),
            errors: Mutex::new(Vec::new()),
            connected: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            late: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            per_sec: (0..secs + 120).map(|_| AtomicU64::new(0)).collect(),
            start_us: AtomicU64::new(u64::MAX),
            last_rx_us: AtomicU64::new(0),
        }
    }
    pub fn error(&self, e: impl std::fmt::Display) {
        let mut v = self.errors.lock().unwrap();
        let s = format!("{e:#}");
        if v.len() < 10 && !v.contains(&s) {
            v.push(s);
        }
    }
    pub fn connect_error(&self, e: impl std::fmt::Display) {
        self.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.error(e);
    }
    /// After the publisher stopped: waits until no delivery arrived for
    /// 500 ms (at most `QUIESCE_MAX`), so slow servers' backlogs still count.
    pub async fn quiesce(&self) {
        let t = Instant::now();
        while t.elapsed() < QUIESCE_MAX {
            let last = self.last_rx_us.load(Ordering::Relaxed);
            if now_micros().saturating_sub(last) >= 500_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    pub fn tick(&self, now_us: u64, n: u64) {
        let start = self.start_us.load(Ordering::Relaxed);
        if now_us < start {
            return;
        }
        let s = ((now_us - start) / 1_000_000) as usize;
        if let Some(c) = self.per_sec.get(s) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn snapshot(&self) -> WorkerResult {
        let mut per_sec: Vec<u64> = self
            .per_sec
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        while per_sec.last() == Some(&0) {
            per_sec.pop();
        }
        WorkerResult {
            connected: self.connected.load(Ordering::Relaxed),
            connect_errors: self.connect_errors.load(Ordering::Relaxed),
            error_samples: self.errors.lock().unwrap().clone(),
            connect_lat: self.connect_lat.lock().unwrap().clone(),
            lat: self.lat.lock().unwrap().clone(),
            received: self.received.load(Ordering::Relaxed),
            distinct: self.distinct.load(Ordering::Relaxed),
            dups: self.dups.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            timeline: Timeline { per_sec },
            rx_span_secs: {
                let (start, last) = (
                    self.start_us.load(Ordering::Relaxed),
                    self.last_rx_us.load(Ordering::Relaxed),
                );
                if last > start && start != u64::MAX {
                    (last - start) as f64 / 1e6
                } else {
                    0.0
                }
            },
            ..Default::default()
        }
    }
}

/// Batches latency samples locally and flushes them into the shared
/// histogram, so that thousands of tasks don't contend on one lock.
pub struct LatBatch {
    buf: Vec<u64>,
}

impl Default for LatBatch {
    fn default() -> Self {
        LatBatch {
            buf: Vec::with_capacity(64),
        }
    }
}

impl LatBatch {
    pub fn push(&mut self, sh: &Shared, v: u64) {
        self.buf.push(v);
        if self.buf.len() >= 64 {
            self.flush(sh);
        }
    }
    pub fn flush(&mut self, sh: &Shared) {
        if self.buf.is_empty() {
            return;
        }
        let mut h = sh.lat.lock().unwrap();
        for v in self.buf.drain(..) {
            h.record(v);
        }
    }
}

/// Control channels handed to a worker.
pub struct Ctl {
    pub ready: oneshot::Sender<ReadyInfo>,
    pub go: oneshot::Receiver<GoMsg>,
    pub stop: oneshot::Receiver<StopMsg>,
}

/// Runs the client side of a scenario for worker `idx` of `n`.
pub async fn run_worker(cfg: RunCfg, idx: usize, n: usize, ctl: Ctl) -> Result<WorkerResult> {
    match cfg.scenario {
        Scenario::Fanout | Scenario::Slow => fanout::worker(cfg, idx, n, ctl).await,
        Scenario::Capacity => capacity::worker(cfg, idx, n, ctl).await,
        Scenario::Storm => storm::worker(cfg, idx, n, ctl).await,
        Scenario::Chat => chat::worker(cfg, idx, n, ctl).await,
        Scenario::Users => users::worker(cfg, idx, n, ctl).await,
    }
}

/// Figures taken around the measured phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    pub rss_before_kb: u64,
    pub rss_ready_kb: u64,
    pub rss_after_kb: u64,
    pub cpu_secs: f64,
    /// CPU seconds of each server process (tree) in the order of
    /// `RunCfg::server_pids`, when there is more than one.
    #[serde(default)]
    pub cpu_by_pid: Vec<(u32, f64)>,
}

/// RSS (kB) and CPU seconds summed over several process trees, and the CPU
/// of each tree.
struct Usage {
    rss_kb: u64,
    cpu: f64,
    each: Vec<(u32, f64)>,
}

fn usage_of(pids: &[u32]) -> Option<Usage> {
    if pids.is_empty() {
        return None;
    }
    let mut u = Usage {
        rss_kb: 0,
        cpu: 0.0,
        each: Vec::new(),
    };
    for &p in pids {
        let (r, c) = tree_usage(p);
        u.rss_kb += r;
        u.cpu += c;
        u.each.push((p, c));
    }
    Some(u)
}

/// Result of the parent's driver (publisher) during the measured phase.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct DriverResult {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// publish request → ack latency
    pub ack_lat: Hist,
}

/// Everything a run produced.
#[derive(Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub target: String,
    pub conns: usize,
    pub duration_secs: f64,
    pub workers: WorkerResult,
    pub driver: DriverResult,
    pub server: Option<ServerUsage>,
    /// CPU seconds of the load client (this process and its workers) during
    /// the measured phase: near `cores × duration` means the client, not the
    /// server, was the bottleneck.
    #[serde(default)]
    pub client_cpu_secs: f64,
    /// CPU seconds the whole machine was busy during the measured phase:
    /// minus server and client, what other processes took (noise).
    #[serde(default)]
    pub machine_cpu_secs: f64,
    /// connections/s during setup
    pub connect_rate: f64,
    pub slow_share: f64,
}

#[allow(clippy::large_enum_variant)]
enum WorkerHandle {
    Task {
        ready: oneshot::Receiver<ReadyInfo>,
        go: oneshot::Sender<GoMsg>,
        stop: oneshot::Sender<StopMsg>,
        join: tokio::task::JoinHandle<Result<WorkerResult>>,
    },
    Proc {
        child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    },
}

impl WorkerHandle {
    async fn ready(&mut self) -> Result<ReadyInfo> {
        match self {
            WorkerHandle::Task { ready, .. } => ready
                .await
                .map_err(|_| anyhow!("worker failed during setup")),
            WorkerHandle::Proc { lines, .. } => expect_line(lines, "READY").await,
        }
    }
    async fn go(&mut self, m: GoMsg) -> Result<()> {
        match self {
            WorkerHandle::Task { go, .. } => {
                let (tx, _) = oneshot::channel();
                let go = std::mem::replace(go, tx);
                let _ = go.send(m);
            }
            WorkerHandle::Proc { stdin, .. } => {
                stdin
                    .write_all(format!("GO {}\n", serde_json::to_string(&m)?).as_bytes())
                    .await?;
                stdin.flush().await?;
            }
        }
        Ok(())
    }
    async fn finish(self, m: StopMsg) -> Result<WorkerResult> {
        match self {
            WorkerHandle::Task { stop, join, .. } => {
                let _ = stop.send(m);
                join.await?
            }
            WorkerHandle::Proc {
                mut child,
                mut stdin,
                mut lines,
            } => {
                stdin
                    .write_all(format!("STOP {}\n", serde_json::to_string(&m)?).as_bytes())
                    .await?;
                stdin.flush().await?;
                let r: WorkerResult = expect_line(&mut lines, "RESULT").await?;
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                Ok(r)
            }
        }
    }
}

async fn expect_line<T: for<'de> Deserialize<'de>>(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    tag: &str,
) -> Result<T> {
    while let Some(l) = lines.next_line().await? {
        if let Some(rest) = l.strip_prefix(tag) {
            return serde_json::from_str(rest.trim()).with_context(|| format!("parse {tag}"));
        }
        if let Some(rest) = l.strip_prefix("FAILED") {
            bail!("worker failed: {}", rest.trim());
        }
    }
    bail!("worker exited before {tag}")
}

/// Entry point of a re-executed worker process: reads the config from the
/// command line and speaks the READY/GO/STOP/RESULT line protocol.
pub async fn worker_process(cfg_json: &str, idx: usize, n: usize) -> Result<()> {
    let cfg: RunCfg = serde_json::from_str(cfg_json)?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let job = tokio::spawn(run_worker(
        cfg,
        idx,
        n,
        Ctl {
            ready: ready_tx,
            go: go_rx,
            stop: stop_rx,
        },
    ));
    let mut out = tokio::io::stdout();
    match ready_rx.await {
        Ok(r) => {
            out.write_all(format!("READY {}\n", serde_json::to_string(&r)?).as_bytes())
                .await?;
            out.flush().await?;
        }
        Err(_) => {
            let e = match job.await {
                Ok(Err(e)) => format!("{e:#}"),
                Ok(Ok(_)) => "no ready".into(),
                Err(e) => e.to_string(),
            };
            out.write_all(format!("FAILED {e}\n").as_bytes()).await?;
            return Ok(());
        }
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut go_tx = Some(go_tx);
    let mut stop_tx = Some(stop_tx);
    while let Some(l) = lines.next_line().await? {
        if let Some(rest) = l.strip_prefix("GO ") {
            if let Some(tx) = go_tx.take() {
                let _ = tx.send(serde_json::from_str(rest)?);
            }
        } else if let Some(rest) = l.strip_prefix("STOP ") {
            if let Some(tx) = stop_tx.take() {
                let _ = tx.send(serde_json::from_str(rest)?);
            }
            break;
        }
    }
    // stdin closed without STOP: stop anyway (bounded run).
    if let Some(tx) = stop_tx.take() {
        let _ = tx.send(StopMsg::default());
    }
    let r = job.await??;
    out.write_all(format!("RESULT {}\n", serde_json::to_string(&r)?).as_bytes())
        .await?;
    out.flush().await?;
    Ok(())
}

async fn spawn_workers(cfg: &RunCfg) -> Result<Vec<WorkerHandle>> {
    let n = cfg.procs.max(1);
    let mut hs = Vec::new();
    if n == 1 {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let join = tokio::spawn(run_worker(
            cfg.clone(),
            0,
            1,
            Ctl {
                ready: ready_tx,
                go: go_rx,
                stop: stop_rx,
            },
        ));
        hs.push(WorkerHandle::Task {
            ready: ready_rx,
            go: go_tx,
            stop: stop_tx,
            join,
        });
        return Ok(hs);
    }
    let exe = std::env::current_exe()?;
    let cfg_json = serde_json::to_string(cfg)?;
    for i in 0..n {
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .arg("--cfg-json")
            .arg(&cfg_json)
            .arg("--index")
            .arg(i.to_string())
            .arg("--count")
            .arg(n.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawn worker")?;
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        hs.push(WorkerHandle::Proc {
            child,
            stdin,
            lines,
        });
    }
    Ok(hs)
}

/// Runs a whole scenario: workers, driver, server usage sampling.
pub async fn run(cfg: &RunCfg) -> Result<Outcome> {
    let pids = cfg.server_pids();
    let usage0 = usage_of(&pids);
    let t0 = Instant::now();
    let mut hs = spawn_workers(cfg).await?;
    let setup_timeout = Duration::from_secs(60 + (cfg.conns / 200) as u64);
    let mut ready = ReadyInfo::default();
    for h in hs.iter_mut() {
        let r = tokio::time::timeout(setup_timeout, h.ready())
            .await
            .map_err(|_| anyhow!("setup timed out"))??;
        ready.connected += r.connected;
        ready.connect_errors += r.connect_errors;
    }
    let setup = t0.elapsed().as_secs_f64();
    eprintln!(
        "[{}] setup: {} connected, {} errors in {:.1}s",
        cfg.scenario.name(),
        ready.connected,
        ready.connect_errors,
        setup
    );
    let usage_ready = usage_of(&pids);
    let client0 = tree_cpu_excluding(std::process::id(), &pids);
    let machine0 = machine_busy_secs();
    let start_us = now_micros() + 50_000;
    for h in hs.iter_mut() {
        h.go(GoMsg { start_us }).await?;
    }
    tokio::time::sleep(Duration::from_micros(start_us.saturating_sub(now_micros()))).await;
    let driver = match cfg.scenario {
        Scenario::Fanout | Scenario::Slow => fanout::driver(cfg).await,
        Scenario::Users => users::driver(cfg).await,
        Scenario::Capacity => {
            tokio::time::sleep(cfg.hold).await;
            DriverResult::default()
        }
        Scenario::Storm | Scenario::Chat => {
            tokio::time::sleep(cfg.duration).await;
            DriverResult::default()
        }
    };
    tokio::time::sleep(cfg.drain).await;
    let usage_after = usage_of(&pids);
    let client_cpu_secs = tree_cpu_excluding(std::process::id(), &pids) - client0;
    let machine_cpu_secs = machine_busy_secs() - machine0;
    let mut merged = WorkerResult::default();
    for h in hs {
        let r = h
            .finish(StopMsg {
                published: driver.acked,
            })
            .await?;
        merged.merge(&r);
    }
    let server = match (usage0, usage_ready, usage_after) {
        (Some(a), Some(b), Some(c)) => Some(ServerUsage {
            rss_before_kb: a.rss_kb,
            rss_ready_kb: b.rss_kb,
            rss_after_kb: c.rss_kb,
            cpu_secs: c.cpu - a.cpu,
            cpu_by_pid: if pids.len() > 1 {
                c.each
                    .iter()
                    .zip(&a.each)
                    .map(|(&(p, after), &(_, before))| (p, after - before))
                    .collect()
            } else {
                Vec::new()
            },
        }),
        _ => None,
    };
    Ok(Outcome {
        scenario: cfg.scenario,
        target: cfg.ep.target.name().to_string(),
        conns: cfg.conns,
        duration_secs: match cfg.scenario {
            Scenario::Capacity => cfg.hold.as_secs_f64(),
            _ => cfg.duration.as_secs_f64(),
        },
        connect_rate: if setup > 0.0 {
            ready.connected as f64 / setup
        } else {
            0.0
        },
        workers: merged,
        driver,
        server,
        slow_share: cfg.slow_share,
        client_cpu_secs,
        machine_cpu_secs,
    })
}

/// Connection indices of worker `idx` of `n`.
pub fn my_conns(total: usize, idx: usize, n: usize) -> impl Iterator<Item = usize> {
    (idx..total).step_by(n.max(1))
}

/// Waits for GO, returning its start time (falls back to now on error).
pub async fn wait_go(go: oneshot::Receiver<GoMsg>) -> u64 {
    go.await
        .map(|g| g.start_us)
        .unwrap_or_else(|_| now_micros())
}

/// Paces connection attempts: `rate` per second overall (0 = unpaced).
pub struct Pacer {
    start: Instant,
    interval: Option<Duration>,
    n: u64,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Pacer {
            start: Instant::now(),
            interval: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            n: 0,
        }
    }
    pub async fn wait(&mut self) {
        if let Some(iv) = self.interval {
            let due = self.start + iv.mul_f64(self.n as f64);
            self.n += 1;
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// When a receiver last got a delivery. The shared `last_rx_us` is one cache line for
/// every task, so it is written at most every 20 ms while receiving, and once more with
/// the very last delivery when the receiver stops (`flush`).
#[derive(Default)]
pub struct RxStamp {
    seen: u64,
    stored: u64,
}

impl RxStamp {
    pub fn note(&mut self, sh: &Shared, now: u64) {
        self.seen = now;
        if now.saturating_sub(self.stored) >= 20_000 {
            sh.last_rx_us.fetch_max(now, Ordering::Relaxed);
            self.stored = now;
        }
    }

    pub fn flush(&self, sh: &Shared) {
        if self.seen > self.stored {
            sh.last_rx_us.fetch_max(self.seen, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_delivery_is_recorded_even_between_stores() {
        let sh = Shared::new(1);
        let mut s = RxStamp::default();
        s.note(&sh, 100_000);
        s.note(&sh, 105_000); // within 20 ms: not stored yet
        assert_eq!(sh.last_rx_us.load(Ordering::Relaxed), 100_000);
        s.flush(&sh);
        assert_eq!(sh.last_rx_us.load(Ordering::Relaxed), 105_000);
    }
}
