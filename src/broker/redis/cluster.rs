//! Redis Cluster behind the [`RedisLink`] API: [`ClusterLink`].
//!
//! Design:
//! - **One sharded [`RedisLink`] per primary.** Each keeps what a link always had (its
//!   own I/O thread, batched pipelines, a pub/sub connection converging on a desired
//!   set, reconnect with backoff), with `RedisConfig::sharded` on: publishes are
//!   SPUBLISH and subscriptions SSUBSCRIBE, one command per hash slot. All of them
//!   hand what arrives to the one [`Sink`] given to [`ClusterLink::start`], so that
//!   sink is called from several threads (hence `Sync`).
//! - **The slot map** (slot → primary, from `CLUSTER SLOTS` of any reachable node:
//!   the known primaries first, then the seeds) is an immutable snapshot swapped
//!   under a lock; a publish or a command reads it, hashes its channel / first key
//!   (CRC16/XMODEM mod 16384, `{hash tag}` honoured: [`key_slot`]) and hands the
//!   work to the owner's link. A small manager thread refreshes it every
//!   [`REFRESH_EVERY`], and at once (at most every [`REFRESH_GAP`]) when a link or a
//!   command reports MOVED/ASK or the server drops a shard subscription. A new
//!   primary gets a link; a primary that left the map has its subscriptions moved
//!   and its link shut down.
//! - **Subscriptions** are a set here too: channel → the primary it was given to and
//!   whether that primary confirmed it. When the map changes, every channel whose
//!   owner changed is unsubscribed at the old link and subscribed at the new one.
//!   Subscribing before the map is known is fine (it is placed once it is).
//! - **Confirmations.** [`Sink::subscribed`] is passed on only when it comes from the
//!   channel's current owner. [`Sink::lost`] of one primary's pub/sub connection, or a
//!   channel losing its owner's confirmation (moved, or dropped by the server), is
//!   reported as `lost()` followed by `subscribed(c)` for every channel still
//!   confirmed elsewhere, so "lost revokes every confirmation" keeps meaning exactly
//!   the right thing for a sink written for a single link. These calls are
//!   serialized among themselves.
//! - **Commands.** A `commands` unit is split into groups (one command, or a
//!   `WATCH`/`MULTI` … `EXEC`/`DISCARD` run kept together), each routed by the first
//!   key it names (keyless commands go to any primary); each primary gets one
//!   sub-unit, all are queued at the call, and replies are put back in the original
//!   order. A group answered MOVED is sent once more to the node named (after a map
//!   refresh if that node is new); ASK is followed once with `ASKING` (single
//!   commands only). Not atomic across primaries, as in any cluster client.
//! - **Bounded**: every queue is a link's bounded queue; the manager's wake-up channel
//!   is bounded (a full one means a refresh is already due); the bookkeeping is the
//!   interest itself.
//!
//! Not handled: replicas (reads always go to primaries; a failover is seen through
//! the map refresh, messages published meanwhile are lost as with any Redis pub/sub),
//! TLS, broadcasting keyless commands (`SCRIPT LOAD` goes to one primary: use EVAL),
//! publishes answered MOVED during a resharding (dropped and counted in
//! `publish_errors`, like any fire-and-forget publish).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{Cmd, Value};
use tokio::io::AsyncWriteExt;

use super::conn::{self, Backoff, Endpoint};
use super::{
    commands, guarded, lock, ClusterEvents, Hook, Incoming, LinkError, LinkMetrics, LinkStatus,
    RedisConfig, RedisLink, Reply, Sink, HIST_BUCKETS,
};

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;
/// How often the slot map is refreshed when nothing asks for it sooner.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Least time between two refreshes (a burst of MOVED replies is one refresh).
pub const REFRESH_GAP: Duration = Duration::from_millis(100);

const NO_OWNER: u16 = u16::MAX;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster
/// hashes keys with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key or shard channel: CRC16 of the key mod 16384, or of its
/// hash tag, the part between the first `{` and the next `}` when that is not empty.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS as u16
}

/// A MOVED or ASK error reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Redirect {
    pub ask: bool,
    pub slot: u16,
    pub host: String,
    pub port: u16,
}

/// `MOVED <slot> <host>:<port>` / `ASK ...`, or None for any other error.
pub(super) fn redirect(e: &redis::ServerError) -> Option<Redirect> {
    let ask = match e.code() {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let mut parts = e.details()?.split_whitespace();
    let slot: u16 = parts.next()?.parse().ok()?;
    if usize::from(slot) >= SLOTS {
        return None;
    }
    let (host, port) = split_host_port(parts.next()?)?;
    Some(Redirect {
        ask,
        slot,
        host,
        port,
    })
}

/// `host:port`, `[v6]:port` or `v6:port` (Redis writes IPv6 without brackets).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// A primary and its link.
struct Node {
    id: u64,
    host: String,
    port: u16,
    link: RedisLink,
}

impl Node {
    fn is(&self, host: &str, port: u16) -> bool {
        self.port == port && self.host == host
    }
}

/// One snapshot of the slot map; replaced whole, never edited.
struct SlotMap {
    /// Index into `nodes` per slot, `NO_OWNER` for an unserved slot.
    owner: Vec<u16>,
    nodes: Vec<Arc<Node>>,
    /// When this map was installed (the `since` of an incomplete map).
    at: Instant,
    /// Every slot has an owner: worked out once here, since `status()` runs on every
    /// publish and a scan is 16,384 entries.
    complete: bool,
}

impl SlotMap {
    fn new(owner: Vec<u16>, nodes: Vec<Arc<Node>>) -> SlotMap {
        let complete = !nodes.is_empty() && owner.iter().all(|&o| o != NO_OWNER);
        SlotMap {
            owner,
            nodes,
            at: Instant::now(),
            complete,
        }
    }

    fn empty() -> SlotMap {
        SlotMap::new(vec![NO_OWNER; SLOTS], Vec::new())
    }

    fn node_of(&self, slot: u16) -> Option<&Arc<Node>> {
        let i = *self.owner.get(usize::from(slot))?;
        self.nodes.get(usize::from(i))
    }

    fn by_addr(&self, host: &str, port: u16) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.is(host, port))
    }

    fn by_id(&self, id: u64) -> Option<&Arc<Node>> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// For keyless commands: a primary whose command connection is up, if any.
    fn any(&self) -> Option<&Arc<Node>> {
        self.nodes
            .iter()
            .find(|n| n.link.is_command_up())
            .or_else(|| self.nodes.first())
    }

    fn complete(&self) -> bool {
        self.complete
    }
}

/// A channel of the interest: which primary it was given to, and whether that
/// primary confirmed it.
struct Sub {
    node: Option<u64>,
    confirmed: bool,
}

/// Counters of the cluster layer itself, added to the links' in `metrics`.
#[derive(Default)]
struct Own {
    publish_drops: AtomicU64,
    command_failures: AtomicU64,
}

struct State {
    cfg: RedisConfig,
    /// Credentials (host/port replaced per node).
    template: Endpoint,
    seeds: Vec<(String, u16)>,
    sink: Arc<dyn Sink + Sync>,
    map: RwLock<Arc<SlotMap>>,
    subs: Mutex<HashMap<String, Sub>>,
    /// Serializes the confirmation calls (`subscribed`, `lost`) made to the sink.
    emit: Mutex<()>,
    /// Some confirmation was revoked: emit `lost` + re-confirmations (see `revoke`).
    revoked: AtomicBool,
    hooks: Mutex<Vec<Hook>>,
    wake: flume::Sender<()>,
    /// Bumped after every refresh attempt (and at exit): commands waiting for a new
    /// map watch it.
    generation: tokio::sync::watch::Sender<u64>,
    closed: AtomicBool,
    last_error: Mutex<Option<String>>,
    next_id: AtomicU64,
    /// Counters of links already shut down, so totals never go backwards.
    retired: Mutex<LinkMetrics>,
    own: Own,
}

impl State {
    fn map(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn request_refresh(&self) {
        // Full: a refresh is already due.
        let _ = self.wake.try_send(());
    }

    fn endpoint(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port,
            db: 0,
            username: self.template.username.clone(),
            password: self.template.password.clone(),
        }
    }

    /// Emits `lost` and re-confirms every channel still confirmed, if some
    /// confirmation was revoked since the last time (or `force`).
    fn emit_revocations(&self, force: bool) {
        if !force && !self.revoked.load(Ordering::Acquire) {
            return;
        }
        let _emit = lock(&self.emit);
        if !self.revoked.swap(false, Ordering::AcqRel) && !force {
            return;
        }
        let still: Vec<String> = lock(&self.subs)
            .iter()
            .filter(|(_, s)| s.confirmed)
            .map(|(c, _)| c.clone())
            .collect();
        guarded("sink.lost", || self.sink.lost());
        for c in still {
            guarded("sink.subscribed", || self.sink.subscribed(&c));
        }
    }
}

/// The sink and cluster-events receiver of one primary's link.
struct NodeSink {
    id: u64,
    sink: Arc<dyn Sink + Sync>,
    /// Weak: the state owns the links, which own this.
    state: Weak<State>,
}

impl Sink for NodeSink {
    fn message(&self, msg: Incoming) {
        self.sink.message(msg);
    }

    fn flush(&self) {
        if let Some(st) = self.state.upgrade() {
            st.emit_revocations(false);
        }
        self.sink.flush();
    }

    fn subscribed(&self, channel: &str) {
        let Some(st) = self.state.upgrade() else {
            return;
        };
        let _emit = lock(&st.emit);
        let ours = match lock(&st.subs).get_mut(channel) {
            Some(s) if s.node == Some(self.id) => {
                s.confirmed = true;
                true
            }
            // Moved meanwhile, or no longer wanted: not a confirmation of anything.
            _ => false,
        };
        if ours {
            self.sink.subscribed(channel);
        }
    }

    fn lost(&self) {
        let Some(st) = self.state.upgrade() else {
            self.sink.lost();
            return;
        };
        for s in lock(&st.subs).values_mut() {
            if s.node == Some(self.id) {
                s.confirmed = false;
            }
        }
        st.emit_revocations(true);
    }
}

impl ClusterEvents for NodeSink {
    fn moved(&self, _slot: u16) {
        if let Some(st) = self.state.upgrade() {
            st.request_refresh();
        }
    }

    fn unsubscribed(&self, channel: &str) {
        let Some(st) = self.state.upgrade() else {
            return;
        };
        if let Some(s) = lock(&st.subs).get_mut(channel) {
            if s.node == Some(self.id) && s.confirmed {
                s.confirmed = false;
                st.revoked.store(true, Ordering::Release);
            }
        }
        st.request_refresh();
    }
}

struct Handle {
    state: Arc<State>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        shutdown(&self.state);
    }
}

fn shutdown(st: &State) {
    st.closed.store(true, Ordering::Release);
    for n in &st.map().nodes {
        n.link.shutdown();
    }
    st.request_refresh();
}

/// A Redis Cluster link: the [`RedisLink`] API over one sharded link per primary,
/// routed by hash slot (see the module docs). Cheap to clone, `Send + Sync`, every
/// method non-blocking. Shuts down on [`ClusterLink::shutdown`] or when the last
/// clone is dropped.
#[derive(Clone)]
pub struct ClusterLink {
    handle: Arc<Handle>,
}

impl ClusterLink {
    /// Validates the config, starts the manager thread and returns at once; the map
    /// is fetched and one link per primary started in the background.
    ///
    /// `seeds` are `host:port` (or `redis://` URLs, of which only host and port are
    /// used) of any cluster nodes; empty means the host and port of `cfg.url`.
    /// Credentials come from `cfg.url`, which must name database 0; `cfg.sharded` is
    /// implied. `sink` receives what every primary's pub/sub connection delivers,
    /// from several I/O threads (quick, non-blocking, as for [`RedisLink`]).
    pub fn start(
        cfg: RedisConfig,
        seeds: &[String],
        sink: impl Sink + Sync,
    ) -> std::io::Result<ClusterLink> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let mut cfg = cfg;
        cfg.sharded = true;
        cfg.validate()?;
        let template = Endpoint::parse(&cfg.url)?;
        if template.db != 0 {
            return Err(invalid(format!(
                "redis cluster: only database 0 exists, url names {}",
                template.db
            )));
        }
        let mut parsed = Vec::new();
        for seed in seeds {
            let hp = if seed.contains("://") {
                Endpoint::parse(seed).map(|e| (e.host, e.port)).ok()
            } else {
                split_host_port(seed.trim())
            };
            parsed.push(hp.ok_or_else(|| {
                invalid(format!("redis cluster: bad seed {:?}", conn::redact(seed)))
            })?);
        }
        if parsed.is_empty() {
            parsed.push((template.host.clone(), template.port));
        }
        let (wake, wake_rx) = flume::bounded(16);
        let state = Arc::new(State {
            cfg,
            template,
            seeds: parsed,
            sink: Arc::new(sink),
            map: RwLock::new(Arc::new(SlotMap::empty())),
            subs: Mutex::new(HashMap::new()),
            emit: Mutex::new(()),
            revoked: AtomicBool::new(false),
            hooks: Mutex::new(Vec::new()),
            wake,
            generation: tokio::sync::watch::channel(0).0,
            closed: AtomicBool::new(false),
            last_error: Mutex::new(None),
            next_id: AtomicU64::new(1),
            retired: Mutex::new(LinkMetrics::default()),
            own: Own::default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let st = state.clone();
        std::thread::Builder::new()
            .name("ringcast-redis-cluster".into())
            .spawn(move || runtime.block_on(manage(st, wake_rx)))?;
        Ok(ClusterLink {
            handle: Arc::new(Handle { state }),
        })
    }

    fn st(&self) -> &Arc<State> {
        &self.handle.state
    }

    /// SPUBLISH to the primary serving the channel's slot (see
    /// [`RedisLink::publish`]); `Down` while that slot has no known owner.
    pub fn publish(&self, channel: &str, payload: Bytes) -> Result<(), LinkError> {
        let st = self.st();
        let res = if st.closed() {
            Err(LinkError::Closed)
        } else {
            let map = st.map.read().unwrap_or_else(|e| e.into_inner());
            match map.node_of(key_slot(channel.as_bytes())) {
                Some(node) => return node.link.publish(channel, payload),
                None => Err(LinkError::Down),
            }
        };
        st.own.publish_drops.fetch_add(1, Ordering::Relaxed);
        res
    }

    /// Adds interest in a shard channel, at the primary serving its slot (moved when
    /// that changes). Idempotent, like [`RedisLink::subscribe`].
    pub fn subscribe(&self, channel: &str) {
        let st = self.st();
        let mut subs = lock(&st.subs);
        if subs.contains_key(channel) {
            return;
        }
        let node = st.map().node_of(key_slot(channel.as_bytes())).cloned();
        if let Some(n) = &node {
            n.link.subscribe(channel);
        }
        subs.insert(
            channel.to_owned(),
            Sub {
                node: node.map(|n| n.id),
                confirmed: false,
            },
        );
    }

    /// Removes interest in a channel.
    pub fn unsubscribe(&self, channel: &str) {
        let st = self.st();
        let mut subs = lock(&st.subs);
        if let Some(Sub { node: Some(id), .. }) = subs.remove(channel) {
            if let Some(n) = st.map().by_id(id) {
                n.link.unsubscribe(channel);
            }
        }
    }

    /// One command, routed by its first key (see [`ClusterLink::commands`]).
    pub fn command(
        &self,
        cmd: Cmd,
    ) -> impl Future<Output = Result<Value, LinkError>> + Send + 'static {
        let fut = self.commands(vec![cmd]);
        async move {
            fut.await?
                .pop()
                .ok_or_else(|| LinkError::Redis("no reply".into()))
        }
    }

    /// Several commands as one unit: each (or each `MULTI`…`EXEC` run) goes to the
    /// primary of its first key, queued now; resolves with the replies in the
    /// original order, or the first error reply as `Redis("command N: msg")` (N in
    /// the original order), or the first link error (`Down`...; the other primaries'
    /// parts may have run). MOVED is followed once, ASK once. Executor-agnostic.
    pub fn commands(
        &self,
        cmds: Vec<Cmd>,
    ) -> impl Future<Output = Result<Vec<Value>, LinkError>> + Send + 'static {
        let st = self.st().clone();
        let started = if st.closed() {
            Err(LinkError::Closed)
        } else {
            Ok(Unit::submit(&st, cmds))
        };
        async move {
            match started {
                Ok(unit) => unit.finish(&st).await,
                Err(e) => {
                    st.own.command_failures.fetch_add(1, Ordering::Relaxed);
                    Err(e)
                }
            }
        }
    }

    /// `Up` when the map covers every slot and every primary's link is up; else
    /// `Down` since the earliest of those.
    pub fn status(&self) -> LinkStatus {
        let map = self.st().map();
        let mut since: Option<Instant> = (!map.complete()).then_some(map.at);
        for n in &map.nodes {
            if let LinkStatus::Down { since: s } = n.link.status() {
                since = Some(since.map_or(s, |t| t.min(s)));
            }
        }
        match since {
            _ if self.st().closed() => LinkStatus::Down {
                since: since.unwrap_or_else(Instant::now),
            },
            Some(since) => LinkStatus::Down { since },
            None => LinkStatus::Up,
        }
    }

    /// Whether every slot has an owner whose command connection is up.
    pub fn is_command_up(&self) -> bool {
        let map = self.st().map();
        !self.st().closed() && map.complete() && map.nodes.iter().all(|n| n.link.is_command_up())
    }

    /// A down primary's last error (prefixed with its address), else the last slot
    /// map error, else any primary's last error.
    pub fn last_error(&self) -> Option<String> {
        let map = self.st().map();
        let named = |n: &Node| {
            n.link
                .last_error()
                .map(|e| format!("{}:{}: {e}", n.host, n.port))
        };
        map.nodes
            .iter()
            .filter(|n| n.link.status() != LinkStatus::Up)
            .find_map(|n| named(n))
            .or_else(|| lock(&self.st().last_error).clone())
            .or_else(|| map.nodes.iter().find_map(|n| named(n)))
    }

    /// The primaries' counters summed (maxima for the `max` fields, means weighted
    /// by pipelines), including primaries that left, plus this layer's own drops and
    /// failures.
    pub fn metrics(&self) -> LinkMetrics {
        let st = self.st();
        let mut m = lock(&st.retired).clone();
        for n in &st.map().nodes {
            add(&mut m, &n.link.metrics());
        }
        m.publish_drops += st.own.publish_drops.load(Ordering::Relaxed);
        m.command_failures += st.own.command_failures.load(Ordering::Relaxed);
        m
    }

    /// The addresses (`host:port`) of the primaries in the current slot map.
    pub fn primaries(&self) -> Vec<String> {
        self.st()
            .map()
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect()
    }

    /// Registers a hook called on a link's I/O thread each time a primary's command
    /// connection comes up (each primary's first connection included): a restarted
    /// primary may have lost its keys, so rewrite what you own.
    pub fn on_reconnect(&self, f: impl Fn() + Send + Sync + 'static) {
        let st = self.st();
        let f: Hook = Arc::new(f);
        // Under the hooks lock: a link being started meanwhile gets it either way.
        let mut hooks = lock(&st.hooks);
        hooks.push(f.clone());
        for n in &st.map().nodes {
            let f = f.clone();
            n.link.on_reconnect(move || f());
        }
    }

    /// Stops the manager and every primary's link (see [`RedisLink::shutdown`]).
    /// Idempotent.
    pub fn shutdown(&self) {
        shutdown(self.st());
    }
}

/// Adds one link's counters into `acc`.
fn add(acc: &mut LinkMetrics, m: &LinkMetrics) {
    let pipelines = acc.pipelines + m.pipelines;
    if pipelines > 0 {
        acc.rtt_avg_us = ((u128::from(acc.rtt_avg_us) * u128::from(acc.pipelines)
            + u128::from(m.rtt_avg_us) * u128::from(m.pipelines))
            / u128::from(pipelines)) as u64;
    }
    acc.pipelines = pipelines;
    acc.commands_sent += m.commands_sent;
    acc.publishes_sent += m.publishes_sent;
    acc.publish_drops += m.publish_drops;
    acc.publish_errors += m.publish_errors;
    acc.command_failures += m.command_failures;
    acc.max_pipeline = acc.max_pipeline.max(m.max_pipeline);
    acc.avg_pipeline = if pipelines == 0 {
        0.0
    } else {
        acc.commands_sent as f64 / pipelines as f64
    };
    for i in 0..HIST_BUCKETS {
        acc.pipeline_hist[i] += m.pipeline_hist[i];
        acc.rtt_hist_us[i] += m.rtt_hist_us[i];
    }
    acc.rtt_last_us = acc.rtt_last_us.max(m.rtt_last_us);
    acc.rtt_max_us = acc.rtt_max_us.max(m.rtt_max_us);
    acc.rtt_sum_us += m.rtt_sum_us;
    acc.reconnects += m.reconnects;
    acc.connect_failures += m.connect_failures;
    acc.subscription_commands += m.subscription_commands;
    acc.messages_received += m.messages_received;
    acc.queued += m.queued;
}

// ---------------------------------------------------------------------------------
// Commands

/// The first key a command names, if it names one.
fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(a) => Some(a),
            _ => None,
        })
        .collect();
    let name = std::str::from_utf8(args.first()?)
        .ok()?
        .to_ascii_uppercase();
    let key = match name.as_str() {
        "PING" | "ECHO" | "INFO" | "TIME" | "DBSIZE" | "CLUSTER" | "CONFIG" | "CLIENT"
        | "COMMAND" | "SCRIPT" | "FUNCTION" | "SELECT" | "AUTH" | "HELLO" | "LASTSAVE" | "ROLE"
        | "SLOWLOG" | "LATENCY" | "MULTI" | "EXEC" | "DISCARD" | "UNWATCH" | "WAIT"
        | "READONLY" | "READWRITE" | "ASKING" | "PUBSUB" | "FLUSHALL" | "FLUSHDB" | "RANDOMKEY"
        | "KEYS" | "SCAN" | "ACL" | "MODULE" | "DEBUG" | "SAVE" | "BGSAVE" | "LOLWUT" | "RESET"
        | "QUIT" => None,
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if numkeys == 0 {
                None
            } else {
                args.get(3).copied()
            }
        }
        "XREAD" | "XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1).copied()
        }
        "OBJECT" | "MEMORY" | "XINFO" | "XGROUP" | "BITOP" => args.get(2).copied(),
        _ => args.get(1).copied(),
    };
    key.map(<[u8]>::to_vec)
}

fn name_is(cmd: &Cmd, names: &[&str]) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(n)) => names.iter().any(|x| n.eq_ignore_ascii_case(x.as_bytes())),
        _ => false,
    }
}

/// Splits a unit into routing groups: `(start, len)` and the slot of the group's
/// first key. A `WATCH`/`MULTI` run extends through `EXEC`/`DISCARD`.
fn groups(cmds: &[Cmd]) -> Vec<(usize, usize, Option<u16>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cmds.len() {
        let mut end = i + 1;
        if name_is(&cmds[i], &["MULTI", "WATCH"]) {
            while end < cmds.len() && !name_is(&cmds[end - 1], &["EXEC", "DISCARD"]) {
                end += 1;
            }
        }
        let slot = cmds[i..end]
            .iter()
            .find_map(first_key)
            .map(|k| key_slot(&k));
        out.push((i, end - i, slot));
        i = end;
    }
    out
}

/// What a group resolved to: its replies (errors inline) or a link error.
type Outcome = Result<Vec<Value>, LinkError>;

/// One group of a unit in flight.
struct Group {
    cmds: Vec<Cmd>,
    slot: Option<u16>,
    outcome: Option<Outcome>,
}

/// A sub-unit sent to one primary: the groups it carries (with `ASKING` in front
/// when `ask`), in order.
struct Sent {
    rx: Result<Reply, LinkError>,
    groups: Vec<usize>,
    ask: bool,
}

/// A `commands` unit in flight.
struct Unit {
    groups: Vec<Group>,
    sent: Vec<Sent>,
    total: usize,
    /// Some group found no primary to go to (a failure of this layer, not a link's).
    unowned: bool,
}

impl Unit {
    /// Routes and queues the whole unit now.
    fn submit(st: &State, cmds: Vec<Cmd>) -> Unit {
        let total = cmds.len();
        let bounds = groups(&cmds);
        let mut it = cmds.into_iter();
        let groups: Vec<Group> = bounds
            .into_iter()
            .map(|(_, len, slot)| Group {
                cmds: it.by_ref().take(len).collect(),
                slot,
                outcome: None,
            })
            .collect();
        let map = st.map();
        let targets: Vec<(usize, Option<Arc<Node>>)> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let node = match g.slot {
                    Some(slot) => map.node_of(slot),
                    None => map.any(),
                };
                (i, node.cloned())
            })
            .collect();
        let mut unit = Unit {
            groups,
            sent: Vec::new(),
            total,
            unowned: false,
        };
        unit.send(targets, false);
        unit
    }

    /// Queues groups at their nodes, one sub-unit per node; groups without a node
    /// resolve to `Down`.
    fn send(&mut self, targets: Vec<(usize, Option<Arc<Node>>)>, ask: bool) {
        let mut per_node: Vec<(Arc<Node>, Vec<usize>)> = Vec::new();
        for (g, node) in targets {
            match node {
                None => {
                    self.unowned = true;
                    self.groups[g].outcome = Some(Err(LinkError::Down));
                }
                Some(node) => match per_node.iter_mut().find(|(n, _)| n.id == node.id) {
                    Some((_, gs)) => gs.push(g),
                    None => per_node.push((node, vec![g])),
                },
            }
        }
        for (node, gs) in per_node {
            let mut cmds = Vec::new();
            for &g in &gs {
                if ask {
                    cmds.push(redis::cmd("ASKING"));
                }
                cmds.extend(self.groups[g].cmds.iter().cloned());
            }
            self.sent.push(Sent {
                rx: node.link.submit_raw(cmds),
                groups: gs,
                ask,
            });
        }
    }

    /// Awaits what was sent, spreading the replies over the groups.
    async fn collect(&mut self) {
        for sent in std::mem::take(&mut self.sent) {
            let res = match sent.rx {
                Ok(rx) => super::recv(rx).await,
                Err(e) => Err(e),
            };
            match res {
                Err(e) => {
                    for g in sent.groups {
                        self.groups[g].outcome = Some(Err(e.clone()));
                    }
                }
                Ok(replies) => {
                    let mut it = replies.into_iter();
                    for g in sent.groups {
                        if sent.ask {
                            it.next(); // ASKING's OK
                        }
                        let n = self.groups[g].cmds.len();
                        let got: Vec<Value> = it.by_ref().take(n).collect();
                        self.groups[g].outcome = Some(if got.len() == n {
                            Ok(got)
                        } else {
                            Err(LinkError::Redis("missing replies".into()))
                        });
                    }
                }
            }
        }
    }

    async fn finish(mut self, st: &State) -> Result<Vec<Value>, LinkError> {
        self.collect().await;

        // One more round for groups answered MOVED/ASK.
        let mut redirected: Vec<(usize, Redirect)> = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            if let Some(Ok(replies)) = &g.outcome {
                let r = replies.iter().find_map(|v| match v {
                    Value::ServerError(e) => redirect(e),
                    _ => None,
                });
                match r {
                    // ASK is one-shot per command: only single commands follow it.
                    Some(r) if r.ask && g.cmds.len() > 1 => {}
                    Some(r) => redirected.push((i, r)),
                    None => {}
                }
            }
        }
        if !redirected.is_empty() {
            let mut map = st.map();
            let moved = redirected.iter().any(|(_, r)| !r.ask);
            if moved {
                let mut gen = st.generation.subscribe();
                gen.borrow_and_update();
                st.request_refresh();
                // A node the map does not know yet: wait for the refresh.
                let unknown = redirected
                    .iter()
                    .any(|(_, r)| map.by_addr(&r.host, r.port).is_none());
                if unknown && !st.closed() {
                    let _ = gen.changed().await;
                    map = st.map();
                }
            }
            let (mut asks, mut moves) = (Vec::new(), Vec::new());
            for (g, r) in redirected {
                let node = map.by_addr(&r.host, r.port).cloned();
                if r.ask {
                    asks.push((g, node));
                } else {
                    let node =
                        node.or_else(|| self.groups[g].slot.and_then(|s| map.node_of(s).cloned()));
                    moves.push((g, node));
                }
            }
            self.send(moves, false);
            self.send(asks, true);
            self.collect().await;
        }

        let mut out = Ok(Vec::with_capacity(self.total));
        for g in &mut self.groups {
            match (g.outcome.take(), &mut out) {
                (Some(Ok(replies)), Ok(out)) => out.extend(replies),
                (_, Err(_)) => {}
                (Some(Err(e)), out) => *out = Err(e),
                (None, out) => *out = Err(LinkError::Redis("no reply".into())),
            }
        }
        let res = out.and_then(commands::finish);
        // Links count their own refusals and losses; raw error replies and groups
        // that found no primary are counted here.
        if matches!(res, Err(LinkError::Redis(_))) || (res.is_err() && self.unowned) {
            st.own.command_failures.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

// ---------------------------------------------------------------------------------
// The manager: slot map refreshes

/// One range of `CLUSTER SLOTS`: slots `start..=end` served by `host:port`.
type Range = (u16, u16, String, u16);

/// Refreshes the map until shutdown.
async fn manage(st: Arc<State>, wake: flume::Receiver<()>) {
    let mut backoff = Backoff::new(st.cfg.reconnect_backoff_max.min(REFRESH_EVERY));
    loop {
        if st.closed() {
            break;
        }
        let ok = match fetch(&st).await {
            Ok(ranges) => {
                apply(&st, ranges);
                st.map().complete()
            }
            Err(e) => {
                tracing::warn!("redis cluster: no slot map: {e}");
                *lock(&st.last_error) = Some(format!("slot map: {e}"));
                false
            }
        };
        st.generation.send_modify(|g| *g += 1);
        let wait = if ok {
            backoff.reset();
            REFRESH_EVERY
        } else {
            backoff.next_delay()
        };
        let last = tokio::time::Instant::now();
        match tokio::time::timeout(wait, wake.recv_async()).await {
            Ok(Err(_)) => break,
            Ok(Ok(())) => {
                // Asked for: gather the burst, keeping refreshes REFRESH_GAP apart.
                tokio::time::sleep_until(last + REFRESH_GAP).await;
                while wake.try_recv().is_ok() {}
            }
            Err(_) => {}
        }
    }
    for n in &st.map().nodes {
        n.link.shutdown();
    }
    st.generation.send_modify(|g| *g += 1);
}

/// `CLUSTER SLOTS` from the first node that answers: known primaries, then seeds.
async fn fetch(st: &State) -> Result<Vec<Range>, String> {
    let mut candidates: Vec<(String, u16)> = st
        .map()
        .nodes
        .iter()
        .map(|n| (n.host.clone(), n.port))
        .collect();
    // Start somewhere else each time so one slow node does not always go first.
    if !candidates.is_empty() {
        let k = (st.generation.borrow().to_owned() as usize) % candidates.len();
        candidates.rotate_left(k);
    }
    for s in &st.seeds {
        if !candidates.contains(s) {
            candidates.push(s.clone());
        }
    }
    let mut errors = Vec::new();
    for (host, port) in candidates {
        if st.closed() {
            return Err("closed".into());
        }
        match cluster_slots(st, &host, port).await {
            Ok(r) => return Ok(r),
            Err(e) => errors.push(format!("{host}:{port}: {e}")),
        }
    }
    Err(errors.join("; "))
}

async fn cluster_slots(st: &State, host: &str, port: u16) -> Result<Vec<Range>, String> {
    let ep = st.endpoint(host, port);
    let timeout = st.cfg.io_timeout;
    let ask = async {
        let (mut reader, mut writer) = conn::connect(&ep, false, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").get_packed_command();
        writer.write_all(&cmd).await.map_err(|e| e.to_string())?;
        reader.next().await.map_err(|e| e.to_string())
    };
    let reply = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| "timed out".to_string())??;
    parse_slots(reply, host)
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Nil => Some(String::new()),
        _ => None,
    }
}

/// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...]...]`.
/// An empty host means the node asked (`queried`); `?` (unknown) skips the range.
fn parse_slots(reply: Value, queried: &str) -> Result<Vec<Range>, String> {
    let entries = match reply {
        Value::Array(e) => e,
        Value::ServerError(e) => return Err(e.to_string()),
        other => return Err(format!("unexpected CLUSTER SLOTS reply {other:?}")),
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let bad = || "malformed CLUSTER SLOTS entry".to_string();
        let Value::Array(e) = e else {
            return Err(bad());
        };
        let (start, end) = match (e.first().and_then(int_of), e.get(1).and_then(int_of)) {
            (Some(s), Some(t)) if 0 <= s && s <= t && t < SLOTS as i64 => (s as u16, t as u16),
            _ => return Err(bad()),
        };
        let Some(Value::Array(primary)) = e.get(2) else {
            return Err(bad());
        };
        let host = primary.first().and_then(str_of).ok_or_else(bad)?;
        let port = primary
            .get(1)
            .and_then(int_of)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(bad)?;
        match host.as_str() {
            "?" => continue,
            "" => out.push((start, end, queried.to_owned(), port)),
            _ => out.push((start, end, host, port)),
        }
    }
    if out.is_empty() {
        return Err("no slots are served".into());
    }
    Ok(out)
}

/// Installs a fetched map: starts links for new primaries, moves the channels whose
/// owner changed, shuts down the links of primaries that left.
fn apply(st: &Arc<State>, ranges: Vec<Range>) {
    let old = st.map();
    let same = {
        let mut same = true;
        let mut covered = 0usize;
        for (s, e, host, port) in &ranges {
            covered += usize::from(e - s) + 1;
            let owner = old.by_addr(host, *port).map(|n| n.id);
            same &=
                (*s..=*e).all(|slot| old.node_of(slot).map(|n| n.id) == owner && owner.is_some());
        }
        same && covered == SLOTS - old.owner.iter().filter(|&&o| o == NO_OWNER).count()
    };
    if same {
        return;
    }

    let hooks = lock(&st.hooks);
    let mut nodes: Vec<Arc<Node>> = Vec::new();
    let mut owner = vec![NO_OWNER; SLOTS];
    for (s, e, host, port) in ranges {
        let idx = match nodes.iter().position(|n| n.is(&host, port)) {
            Some(i) => i,
            None => {
                let node = match old.by_addr(&host, port) {
                    Some(n) => n.clone(),
                    None => match start_node(st, &host, port, hooks.clone()) {
                        Ok(n) => Arc::new(n),
                        Err(e) => {
                            tracing::error!(
                                "redis cluster: cannot start link to {host}:{port}: {e}"
                            );
                            continue;
                        }
                    },
                };
                nodes.push(node);
                nodes.len() - 1
            }
        };
        for slot in s..=e {
            owner[usize::from(slot)] = idx as u16;
        }
    }
    let new = Arc::new(SlotMap::new(owner, nodes));
    *st.map.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
    drop(hooks);
    tracing::info!(
        "redis cluster: slot map with {} primaries{}",
        new.nodes.len(),
        if new.complete() {
            ""
        } else {
            " (some slots unserved)"
        }
    );

    // Move the channels whose owner changed.
    {
        let mut subs = lock(&st.subs);
        for (channel, sub) in subs.iter_mut() {
            let to = new.node_of(key_slot(channel.as_bytes()));
            if sub.node == to.map(|n| n.id) {
                continue;
            }
            if let Some(from) = sub
                .node
                .and_then(|id| old.by_id(id).or_else(|| new.by_id(id)))
            {
                from.link.unsubscribe(channel);
            }
            if let Some(to) = to {
                to.link.subscribe(channel);
            }
            sub.node = to.map(|n| n.id);
            if std::mem::replace(&mut sub.confirmed, false) {
                st.revoked.store(true, Ordering::Release);
            }
        }
    }

    // Retire the primaries that left.
    for n in &old.nodes {
        if new.by_id(n.id).is_none() {
            tracing::info!(
                "redis cluster: {}:{} is no longer a primary",
                n.host,
                n.port
            );
            add(&mut lock(&st.retired), &n.link.metrics());
            n.link.shutdown();
        }
    }
    st.emit_revocations(false);
}

fn start_node(st: &Arc<State>, host: &str, port: u16, hooks: Vec<Hook>) -> std::io::Result<Node> {
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let node_sink = NodeSink {
        id,
        sink: st.sink.clone(),
        state: Arc::downgrade(st),
    };
    let events = Arc::new(NodeSink {
        id,
        sink: st.sink.clone(),
        state: Arc::downgrade(st),
    });
    let link = RedisLink::spawn(
        st.cfg.clone(),
        st.endpoint(host, port),
        Box::new(node_sink),
        Some(events),
        hooks,
    )?;
    tracing::info!("redis cluster: link to primary {host}:{port}");
    Ok(Node {
        id,
        host: host.to_owned(),
        port,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_xmodem_known_values() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn key_slots_match_redis() {
        // Values from CLUSTER KEYSLOT on a real server and the cluster spec.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"b"), 3300);
        assert_eq!(key_slot(b"c"), 7365);
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        // Hash tags.
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"{"), crc16(b"{") % 16384);
        assert_eq!(key_slot(b"x}{"), crc16(b"x}{") % 16384);
    }

    fn err(s: &str) -> redis::ServerError {
        match redis::parse_redis_value(format!("-{s}\r\n").as_bytes()).unwrap() {
            Value::ServerError(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_redirects() {
        assert_eq!(
            redirect(&err("MOVED 3999 127.0.0.1:6381")),
            Some(Redirect {
                ask: false,
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        let r = redirect(&err("ASK 1 ::1:7000")).unwrap();
        assert!(r.ask);
        assert_eq!((r.host.as_str(), r.port), ("::1", 7000));
        assert_eq!(redirect(&err("MOVED 99999 h:1")), None);
        assert_eq!(redirect(&err("MOVED x h:1")), None);
        assert_eq!(redirect(&err("MOVED 1")), None);
        assert_eq!(redirect(&err("ERR wrong")), None);
        assert_eq!(redirect(&err("CLUSTERDOWN The cluster is down")), None);
    }

    #[test]
    fn first_keys() {
        let key = |c: &Cmd| first_key(c).map(|k| String::from_utf8(k).unwrap());
        assert_eq!(key(redis::cmd("GET").arg("k")), Some("k".into()));
        assert_eq!(key(redis::cmd("set").arg("k").arg("v")), Some("k".into()));
        assert_eq!(key(&redis::cmd("PING")), None);
        assert_eq!(key(redis::cmd("INFO").arg("server")), None);
        assert_eq!(
            key(redis::cmd("EVAL").arg("return 1").arg(2).arg("a").arg("b")),
            Some("a".into())
        );
        assert_eq!(key(redis::cmd("EVALSHA").arg("abc").arg(0)), None);
        assert_eq!(key(redis::cmd("EVAL").arg("s").arg("x")), None);
        assert_eq!(
            key(redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("streams")
                .arg("s1")
                .arg("0")),
            Some("s1".into())
        );
        assert_eq!(
            key(redis::cmd("OBJECT").arg("ENCODING").arg("o")),
            Some("o".into())
        );
        assert_eq!(key(&redis::Cmd::new()), None);
    }

    #[test]
    fn groups_keep_transactions_together() {
        let cmds = vec![
            redis::cmd("GET").arg("a").clone(),
            redis::cmd("MULTI"),
            redis::cmd("SET").arg("{t}1").arg(1).clone(),
            redis::cmd("SET").arg("{t}2").arg(2).clone(),
            redis::cmd("EXEC"),
            redis::cmd("PING"),
            redis::cmd("WATCH").arg("w").clone(),
            redis::cmd("MULTI"),
        ];
        let g = groups(&cmds);
        assert_eq!(
            g,
            vec![
                (0, 1, Some(key_slot(b"a"))),
                (1, 4, Some(key_slot(b"t"))),
                (5, 1, None),
                (6, 2, Some(key_slot(b"w"))),
            ]
        );
    }

    #[test]
    fn parses_cluster_slots() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
                Value::Array(vec![]),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("", 7001),
                node("10.0.0.3", 7003),
            ]),
            Value::Array(vec![Value::Int(3), Value::Int(3), node("?", 7002)]),
        ]);
        assert_eq!(
            parse_slots(reply, "seed").unwrap(),
            vec![
                (0, 5460, "10.0.0.1".into(), 7000),
                (5461, 16383, "seed".into(), 7001)
            ]
        );
        assert!(parse_slots(Value::Array(vec![]), "s").is_err());
        assert!(parse_slots(Value::Int(1), "s").is_err());
        assert!(parse_slots(
            Value::Array(vec![Value::Array(vec![
                Value::Int(9),
                Value::Int(2),
                node("h", 1)
            ])]),
            "s"
        )
        .is_err());
        assert!(parse_slots(
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(20000),
                node("h", 1)
            ])]),
            "s"
        )
        .is_err());
        assert!(parse_slots(
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                node("h", 70000)
            ])]),
            "s"
        )
        .is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("h:1"), Some(("h".into(), 1)));
        assert_eq!(split_host_port("[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(split_host_port(":1"), None);
        assert_eq!(split_host_port("h"), None);
        assert_eq!(split_host_port("h:x"), None);
    }

    #[test]
    fn metrics_add_up() {
        let mut a = LinkMetrics {
            pipelines: 1,
            commands_sent: 10,
            rtt_avg_us: 100,
            max_pipeline: 10,
            ..Default::default()
        };
        let b = LinkMetrics {
            pipelines: 3,
            commands_sent: 6,
            rtt_avg_us: 200,
            max_pipeline: 3,
            queued: 2,
            ..Default::default()
        };
        add(&mut a, &b);
        assert_eq!(a.pipelines, 4);
        assert_eq!(a.commands_sent, 16);
        assert_eq!(a.rtt_avg_us, 175);
        assert_eq!(a.max_pipeline, 10);
        assert!((a.avg_pipeline - 4.0).abs() < f64::EPSILON);
        assert_eq!(a.queued, 2);
    }
}
