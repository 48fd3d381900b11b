//! The Redis link: how one ringcast node talks to Redis so that many nodes behave
//! as one server (cross-node publish, presence with TTLs, backend commands on
//! `ringcast:api:{app}`).
//!
//! Why this shape:
//! - **A dedicated I/O thread** (one per node, a tokio current-thread runtime) owns
//!   both Redis sockets. Shards are monoio/io_uring runtimes pinned to cores; they
//!   must never block on, or share a reactor with, a Redis socket. They talk to the
//!   thread only through a non-blocking `try_send` on a bounded flume queue and get
//!   replies through flume receivers, which any executor can await.
//! - **Batching**: everything queued is drained (up to `max_batch`), encoded into one
//!   buffer and written with one `write`; replies are matched in order. A flush
//!   starts as soon as there is work and no flush is in flight, so a lone publish
//!   pays one round trip and no timer, while under load batches grow by themselves
//!   (whatever arrives during a round trip rides the next pipeline).
//!   Subscriptions are not a queue at all but a *desired set*: the pub/sub task
//!   diffs it against what the server has and, after a short linger
//!   (`subscribe_linger`), sends one SUBSCRIBE/UNSUBSCRIBE (per kind) for the whole
//!   difference, so a burst becomes one command and subscribe/unsubscribe churn
//!   cancels out.
//! - **Bounded**: the queue holds at most `max_queued` submissions (beyond it
//!   `Overloaded`), at most one pipeline of `max_batch` is in flight, and while the
//!   command connection is down submissions are refused at once (`Down`) instead of
//!   piling up. Nothing here grows with time or with the length of an outage.
//! - **Failure**: a broken connection fails everything in flight with `Down`, the
//!   link reconnects with jittered exponential backoff, resubscribes the whole
//!   desired set, and calls the `on_reconnect` hooks so the owner can rewrite its
//!   presence keys. Local delivery on the shards is unaffected throughout.
//! - **Redis Cluster**: with [`RedisConfig::sharded`] a link speaks sharded pub/sub
//!   (SPUBLISH, SSUBSCRIBE grouped by hash slot); [`cluster::ClusterLink`] runs one
//!   such link per primary and routes by hash slot behind the same API (see there).

pub mod cluster;
mod commands;
mod conn;
mod pubsub;
mod stats;

pub use cluster::{key_slot, ClusterLink};
pub use stats::{LinkMetrics, HIST_BUCKETS};

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{Cmd, Value};
use tokio::sync::Notify;

use stats::Stats;

/// Link configuration. `Debug` hides the password.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]`. Only plain TCP; the link always
    /// speaks RESP2 (pub/sub on its own connection needs nothing newer).
    pub url: String,
    /// Most submissions drained into one pipeline (a publish or a `command` is one;
    /// a `commands` unit counts as one and is never split).
    pub max_batch: usize,
    /// Linger: when a flush could start with fewer than `max_batch` commands, wait up
    /// to this long for more. `Duration::ZERO` (the default) flushes at once, which is
    /// what you want: batches already grow under load while a flush is in flight.
    pub flush_interval: Duration,
    /// Bound of the submission queue; beyond it submissions fail with `Overloaded`.
    pub max_queued: usize,
    /// How long the pub/sub task lets subscription changes gather before sending
    /// them as one SUBSCRIBE/UNSUBSCRIBE batch (default 2 ms).
    pub subscribe_linger: Duration,
    /// Ceiling of the reconnect backoff (it starts at 50 ms and doubles).
    pub reconnect_backoff_max: Duration,
    /// Deadline for connecting and for a pipeline's replies; a connection that misses
    /// it is treated as dead (catches a hung or black-holed Redis). Also bounds the
    /// pub/sub liveness ping.
    pub io_timeout: Duration,
    /// Sharded pub/sub (Redis 7): publish with SPUBLISH and subscribe with
    /// SSUBSCRIBE/SUNSUBSCRIBE, one command per hash slot (Redis refuses a command
    /// whose channels hash to different slots). Pattern subscriptions do not exist in
    /// sharded pub/sub: `psubscribe` is ignored (logged). A subscription the server
    /// refuses (MOVED, CLUSTERDOWN...) or drops (its slot moved away) is retried after
    /// a short delay. Default false; [`cluster::ClusterLink`] sets it on its links.
    pub sharded: bool,
}

impl RedisConfig {
    /// Defaults: batches of up to 1024 submissions, no publish/command linger, 2 ms
    /// subscription linger, 65 536 queued submissions, backoff up to 2 s, 5 s I/O
    /// deadline.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            max_batch: 1024,
            flush_interval: Duration::ZERO,
            subscribe_linger: Duration::from_millis(2),
            max_queued: 65_536,
            reconnect_backoff_max: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            sharded: false,
        }
    }

    fn validate(&self) -> std::io::Result<()> {
        let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        if self.max_batch == 0 || self.max_queued == 0 {
            return Err(invalid("redis: max_batch and max_queued must be > 0"));
        }
        if self.io_timeout.is_zero() || self.reconnect_backoff_max.is_zero() {
            return Err(invalid(
                "redis: io_timeout and reconnect_backoff_max must be > 0",
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &conn::redact(&self.url))
            .field("max_batch", &self.max_batch)
            .field("flush_interval", &self.flush_interval)
            .field("subscribe_linger", &self.subscribe_linger)
            .field("max_queued", &self.max_queued)
            .field("reconnect_backoff_max", &self.reconnect_backoff_max)
            .field("io_timeout", &self.io_timeout)
            .field("sharded", &self.sharded)
            .finish()
    }
}

/// A pub/sub message from Redis, handed to `on_message` on the I/O thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// From a channel subscription.
    Message { channel: String, payload: Bytes },
    /// From a pattern subscription.
    PMessage {
        pattern: String,
        channel: String,
        payload: Bytes,
    },
}

/// Where the link hands what arrives on the pub/sub connection. Every method runs on
/// the I/O thread: it must be quick and must not block (hand work to the shards'
/// queues). A panic in one is caught and logged. Any `Fn(Incoming)` closure is a sink
/// that only takes messages. A [`cluster::ClusterLink`] calls its sink from the I/O
/// thread of each primary's link, concurrently (hence `Sync` there).
pub trait Sink: Send + 'static {
    /// A pub/sub message.
    fn message(&self, msg: Incoming);
    /// Everything read so far has been handed over: pass on what was gathered (one
    /// hand-over per read from the socket, however many messages it held).
    fn flush(&self) {}
    /// Redis confirmed a subscription to `channel`: from now on every publish to it
    /// reaches this node.
    fn subscribed(&self, _channel: &str) {}
    /// The pub/sub connection was lost; confirmations given so far no longer hold
    /// until the link resubscribes (each is confirmed again through `subscribed`).
    fn lost(&self) {}
}

impl<F: Fn(Incoming) + Send + 'static> Sink for F {
    fn message(&self, msg: Incoming) {
        self(msg)
    }
}

/// Why a remote operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The command connection is down (refused at once), or broke while the
    /// operation was in flight (it may or may not have run).
    #[error("redis link is down")]
    Down,
    /// The submission queue is full (`max_queued`).
    #[error("redis link is overloaded (queue full)")]
    Overloaded,
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Redis(String),
    /// The link was shut down.
    #[error("redis link is closed")]
    Closed,
}

/// Connection state of the link as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Both the command and the pub/sub connection are established.
    Up,
    /// At least one of them is not, since `since`. Publishes and commands fail with
    /// `Down` only while the *command* connection is down (see [`RedisLink::is_command_up`]).
    Down { since: Instant },
}

/// A submission to the command connection.
pub(crate) enum Op {
    Publish {
        channel: String,
        payload: Bytes,
    },
    Commands {
        cmds: Vec<Cmd>,
        reply: flume::Sender<Result<Vec<Value>, LinkError>>,
        /// Hand back every reply, error replies included, uncounted (the cluster
        /// layer inspects them for MOVED/ASK and reports the outcome itself).
        raw: bool,
    },
}

/// What a sharded link tells the cluster layer about the slot map going stale.
/// Called on the I/O thread; must not block.
trait ClusterEvents: Send + Sync {
    /// A MOVED/ASK reply named `slot` (to a SPUBLISH or an SSUBSCRIBE).
    fn moved(&self, slot: u16);
    /// The server dropped our subscription to `channel` on its own (its slot moved
    /// away). The link resubscribes after a delay unless the channel is moved.
    fn unsubscribed(&self, channel: &str);
}

/// The interest the server should have; the pub/sub task converges on it.
/// `dirty_*` name what changed since the last sync, so a sync costs the size of
/// the change, not of the whole set. They are cleared while the pub/sub connection
/// is down (a reconnect resubscribes the whole set anyway), so they stay bounded.
#[derive(Default)]
struct Desired {
    channels: HashSet<String>,
    patterns: HashSet<String>,
    dirty_channels: HashSet<String>,
    dirty_patterns: HashSet<String>,
}

type Hook = Arc<dyn Fn() + Send + Sync>;
type Reply = flume::Receiver<Result<Vec<Value>, LinkError>>;

const NOT_DOWN: u64 = u64::MAX;

/// State shared by every `RedisLink` clone and the I/O thread.
struct Shared {
    base: Instant,
    cmd_up: AtomicBool,
    sub_up: AtomicBool,
    /// Micros since `base` when the link last went down, `NOT_DOWN` while up.
    down_since_us: AtomicU64,
    closed: AtomicBool,
    stats: Stats,
    desired: Mutex<Desired>,
    /// Wakes the pub/sub task: the desired set changed, or shutdown.
    sub_notify: Notify,
    /// Wakes the command task on shutdown.
    close_notify: Notify,
    hooks: Mutex<Vec<Hook>>,
    last_error: Mutex<Option<String>>,
    /// `RedisConfig::sharded`.
    sharded: bool,
    /// Set for the links of a [`cluster::ClusterLink`].
    events: Option<Arc<dyn ClusterEvents>>,
}

/// Locks, shrugging off poisoning: every critical section here is a plain
/// insert/remove/clone that leaves the data consistent even if a panic unwound.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(sharded: bool, events: Option<Arc<dyn ClusterEvents>>, hooks: Vec<Hook>) -> Shared {
        Shared {
            base: Instant::now(),
            cmd_up: AtomicBool::new(false),
            sub_up: AtomicBool::new(false),
            down_since_us: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            desired: Mutex::new(Desired::default()),
            sub_notify: Notify::new(),
            close_notify: Notify::new(),
            hooks: Mutex::new(hooks),
            last_error: Mutex::new(None),
            sharded,
            events,
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_micros()).unwrap_or(NOT_DOWN - 1)
    }

    fn set_up(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        if self.cmd_up.load(Ordering::Acquire) && self.sub_up.load(Ordering::Acquire) {
            self.down_since_us.store(NOT_DOWN, Ordering::Release);
        }
    }

    fn set_down(&self, flag: &AtomicBool, why: String) {
        flag.store(false, Ordering::Release);
        let _ = self.down_since_us.compare_exchange(
            NOT_DOWN,
            self.now_us(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        *lock(&self.last_error) = Some(why);
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Handle to the node's Redis link. Cheap to clone, `Send + Sync`; every method is
/// non-blocking. The I/O thread exits when [`RedisLink::shutdown`] is called or the
/// last clone is dropped (hooks that capture a clone keep it alive: call `shutdown`).
#[derive(Clone)]
pub struct RedisLink {
    tx: flume::Sender<Op>,
    shared: Arc<Shared>,
}

impl RedisLink {
    /// Validates the config, spawns the `ringcast-redis` I/O thread and returns at
    /// once; the link starts `Down` and comes up in the background. `sink` (see
    /// [`Sink`]; a closure taking each [`Incoming`] will do) runs on the I/O thread.
    pub fn start(cfg: RedisConfig, sink: impl Sink) -> std::io::Result<RedisLink> {
        cfg.validate()?;
        let endpoint = conn::Endpoint::parse(&cfg.url)?;
        RedisLink::spawn(cfg, endpoint, Box::new(sink), None, Vec::new())
    }

    /// `start` with the endpoint given (the cluster layer connects to each primary
    /// with the credentials of `cfg.url`), cluster events and initial hooks.
    fn spawn(
        cfg: RedisConfig,
        endpoint: conn::Endpoint,
        sink: Box<dyn Sink>,
        events: Option<Arc<dyn ClusterEvents>>,
        hooks: Vec<Hook>,
    ) -> std::io::Result<RedisLink> {
        let (tx, rx) = flume::bounded(cfg.max_queued);
        let shared = Arc::new(Shared::new(cfg.sharded, events, hooks));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("ringcast-redis".into())
            .spawn(move || {
                let sh = thread_shared;
                runtime.block_on(async {
                    // Both loops only return on shutdown; either returning ends the thread.
                    tokio::select! {
                        _ = commands::run(&sh, &rx, &endpoint, &cfg) => {}
                        _ = pubsub::run(&sh, &endpoint, &cfg, &*sink) => {}
                    }
                });
                sh.set_down(&sh.cmd_up, "link closed".into());
                sh.set_down(&sh.sub_up, "link closed".into());
                // Fail whatever is still queued rather than leaving callers hanging.
                for op in rx.drain() {
                    commands::fail_op(&sh, op, LinkError::Closed);
                }
            })?;
        Ok(RedisLink { tx, shared })
    }

    /// Fire-and-forget publish, batched with everything else queued. Fails at once
    /// (and is counted in `publish_drops`) with `Down` while the command connection
    /// is down, `Overloaded` when the queue is full, `Closed` after shutdown.
    pub fn publish(&self, channel: &str, payload: Bytes) -> Result<(), LinkError> {
        self.check()
            .and_then(|()| {
                self.enqueue(Op::Publish {
                    channel: channel.to_owned(),
                    payload,
                })
            })
            .inspect_err(|_| Stats::inc(&self.shared.stats.publish_drops))
    }

    /// Adds interest in `channel`. Idempotent: reference counting is the caller's
    /// job; the link keeps the set, batches the SUBSCRIBEs, and resubscribes the whole
    /// set after a reconnect. Messages may still arrive briefly after an unsubscribe.
    pub fn subscribe(&self, channel: &str) {
        self.change(|d| {
            d.channels.insert(channel.to_owned()) && d.dirty_channels.insert(channel.to_owned())
        });
    }

    /// Removes interest in `channel` (see [`RedisLink::subscribe`]).
    pub fn unsubscribe(&self, channel: &str) {
        self.change(|d| d.channels.remove(channel) && d.dirty_channels.insert(channel.to_owned()));
    }

    /// Adds interest in a glob pattern (PSUBSCRIBE); messages arrive as `PMessage`.
    /// Ignored (logged) on a sharded link: sharded pub/sub has no patterns.
    pub fn psubscribe(&self, pattern: &str) {
        if self.shared.sharded {
            tracing::warn!(
                "redis link: psubscribe({pattern:?}) ignored: sharded pub/sub has no patterns"
            );
            return;
        }
        self.change(|d| {
            d.patterns.insert(pattern.to_owned()) && d.dirty_patterns.insert(pattern.to_owned())
        });
    }

    /// Removes interest in a pattern.
    pub fn punsubscribe(&self, pattern: &str) {
        self.change(|d| d.patterns.remove(pattern) && d.dirty_patterns.insert(pattern.to_owned()));
    }

    /// One command, pipelined with everything else queued. It is queued *now* (at the
    /// call, not at the first poll), so calls made in order run in order and dropping
    /// the future does not cancel it. Resolves with the reply, `Redis(msg)` for an
    /// error reply, or `Down`/`Overloaded`/`Closed`. The future is executor-agnostic
    /// (a flume receiver): await it from monoio. Blocking commands (BLPOP...) and
    /// SUBSCRIBE must not be sent here.
    pub fn command(
        &self,
        cmd: Cmd,
    ) -> impl Future<Output = Result<Value, LinkError>> + Send + 'static {
        let rx = self.submit(vec![cmd], false);
        async move {
            let mut replies = recv(rx?).await?;
            replies
                .pop()
                .ok_or_else(|| LinkError::Redis("no reply".into()))
        }
    }

    /// Several commands queued as one unit (same pipeline, adjacent, in order; not a
    /// transaction). Resolves with one reply per command, in order, or with the first
    /// error reply as `Redis("command N: msg")`.
    pub fn commands(
        &self,
        cmds: Vec<Cmd>,
    ) -> impl Future<Output = Result<Vec<Value>, LinkError>> + Send + 'static {
        let rx = self.submit(cmds, false);
        async move { recv(rx?).await }
    }

    /// `commands` for the cluster layer: queued now, resolves with every reply,
    /// error replies included (not turned into `Err`, not counted as failures).
    fn submit_raw(&self, cmds: Vec<Cmd>) -> Result<Reply, LinkError> {
        self.submit(cmds, true)
    }

    /// `Up` when both connections are established.
    pub fn status(&self) -> LinkStatus {
        let sh = &self.shared;
        if sh.cmd_up.load(Ordering::Acquire) && sh.sub_up.load(Ordering::Acquire) {
            return LinkStatus::Up;
        }
        let us = sh.down_since_us.load(Ordering::Acquire);
        let since = if us == NOT_DOWN {
            Instant::now()
        } else {
            sh.base + Duration::from_micros(us)
        };
        LinkStatus::Down { since }
    }

    /// Whether publishes and commands are currently accepted.
    pub fn is_command_up(&self) -> bool {
        self.shared.cmd_up.load(Ordering::Acquire)
    }

    /// The last connection error, for logs and health endpoints.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> LinkMetrics {
        self.shared.stats.snapshot(self.tx.len())
    }

    /// Registers a hook called on the I/O thread each time the command connection
    /// comes up (the first connection included, if registered in time). Use it to
    /// rewrite presence; it may call `commands` (non-blocking) but must not block.
    pub fn on_reconnect(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.shared.hooks).push(Arc::new(f));
    }

    /// Stops the I/O thread: queued and in-flight work fails with `Closed`/`Down`,
    /// later calls fail with `Closed`. Idempotent.
    pub fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.sub_notify.notify_one();
        self.shared.close_notify.notify_one();
    }

    fn check(&self) -> Result<(), LinkError> {
        if self.shared.closed() {
            Err(LinkError::Closed)
        } else if !self.shared.cmd_up.load(Ordering::Acquire) {
            Err(LinkError::Down)
        } else {
            Ok(())
        }
    }

    fn enqueue(&self, op: Op) -> Result<(), LinkError> {
        self.tx.try_send(op).map_err(|e| match e {
            flume::TrySendError::Full(_) => LinkError::Overloaded,
            flume::TrySendError::Disconnected(_) => LinkError::Closed,
        })
    }

    fn submit(&self, cmds: Vec<Cmd>, raw: bool) -> Result<Reply, LinkError> {
        let (reply, rx) = flume::bounded(1);
        let res = if cmds.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            Ok(())
        } else {
            self.check()
                .and_then(|()| self.enqueue(Op::Commands { cmds, reply, raw }))
        };
        match res {
            Ok(()) => Ok(rx),
            Err(e) => {
                Stats::inc(&self.shared.stats.command_failures);
                Err(e)
            }
        }
    }

    fn change(&self, f: impl FnOnce(&mut Desired) -> bool) {
        if f(&mut lock(&self.shared.desired)) {
            self.shared.sub_notify.notify_one();
        }
    }
}

async fn recv(rx: Reply) -> Result<Vec<Value>, LinkError> {
    rx.recv_async().await.unwrap_or(Err(LinkError::Closed))
}

/// Runs a user hook, containing a panic so it cannot take the I/O thread down.
fn guarded(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("redis link: {what} panicked");
    }
}
