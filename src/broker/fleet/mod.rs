//! The Redis broker: many nodes behave as one server.
//!
//! Built on the batched, reconnecting [`RedisLink`](super::redis::RedisLink) (its own
//! I/O thread; shards never touch a Redis socket). What it adds:
//!
//! - **Interest** ([`Broker::interest`]): a node subscribes to a topic's channel only
//!   while one of its shards has a local subscriber. Shards report their first/last
//!   subscriber; the broker keeps one bitmask of shards per channel, so the channel is
//!   subscribed once per node however many shards and connections want it. A shard's
//!   first subscription waits for Redis to confirm the SUBSCRIBE (see the hub's pending
//!   joins), so once a client has seen `subscribed`, a publish on any node reaches it.
//!   Unsubscribing lingers ([`UNSUBSCRIBE_LINGER`]), so a user who reloads a page does
//!   not cost an UNSUBSCRIBE and a SUBSCRIBE.
//! - **Fan-out**: what a node publishes goes to Redis once, as the complete WebSocket
//!   frame in a small envelope ([`wire`]) with the origin node's id. A receiving node
//!   hands the same `Bytes` to each interested shard (one batch per shard per socket
//!   read), exactly like a local publish from another shard; its own echo is dropped.
//! - **Presence** ([`presence`]): the node's registry is mirrored into Redis keys that
//!   expire unless the node refreshes them, so a killed node's users vanish within the
//!   TTL, and every node answers presence queries from Redis alike.
//! - **Commands**: `PUBLISH ringcast:api:{app} <json>` from any backend is run by every
//!   node on its own connections (so each client gets it once).
//!
//! Channels (`{app}` is the app's name):
//!
//! | channel | carries |
//! |---|---|
//! | `ringcast:t:{app}:{topic}` | frames for a topic (personal topics `user:{type}:{id}` too), disconnect-user |
//! | `ringcast:b:{app}` / `ringcast:b` | broadcast to one app / to every app |
//! | `ringcast:n:{node}` | send-to-connection and disconnect-connection for that node |
//! | `ringcast:api:{app}` | backend commands (JSON, as in the HTTP API) |
pub mod presence;
pub mod wire;

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::redis::{
    ClusterLink, Incoming, LinkError, LinkMetrics, LinkStatus, RedisConfig, RedisLink, Sink,
};
use super::{Broker, Health, Outbound};
use crate::hub::conn::shard_of;
use crate::presence::Presence;
use crate::runtime::mesh::{shards_in, Batch, ShardMsg, Target};
use wire::Body;

/// How long a channel stays subscribed after its last local subscriber left.
pub const UNSUBSCRIBE_LINGER: Duration = Duration::from_secs(2);
/// Batches waiting in a shard's queue beyond which frames from Redis are dropped for it
/// (each batch is at most one socket read from Redis).
pub const MAX_SHARD_BACKLOG: usize = 1024;
/// A subscription still unconfirmed by Redis after this is let through anyway (and
/// counted): a client must never hang in "subscribing".
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the Redis broker.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Link settings; with `cluster`, its URL is the first seed.
    pub redis: RedisConfig,
    /// Redis Cluster seed URLs (sharded pub/sub), or `None` for one Redis.
    pub cluster: Option<Vec<String>>,
    /// This node's id (letters, digits, `_`); part of every connection id.
    pub node_id: String,
    /// Presence keys expire this long after the node last refreshed them.
    pub presence_ttl: Duration,
    /// How often queued presence changes are written (one pipeline per flush).
    pub presence_flush: Duration,
}

/// Counters of the broker itself (the link has its own).
#[derive(Debug, Default)]
pub struct FleetStats {
    pub remote_messages: AtomicU64,
    pub own_echoes: AtomicU64,
    pub malformed: AtomicU64,
    pub forward_failures: AtomicU64,
    pub confirm_timeouts: AtomicU64,
    /// Frames from Redis dropped because their shard was [`MAX_SHARD_BACKLOG`] behind.
    pub backlog_drops: AtomicU64,
    pub api_commands: AtomicU64,
    pub presence_flushes: AtomicU64,
    pub presence_writes: AtomicU64,
    pub presence_failures: AtomicU64,
}

/// A channel this node has interest in.
struct Interest {
    /// The hub key (scoped topic) its messages go to.
    key: Arc<str>,
    /// Shards with local subscribers.
    mask: u64,
    /// Redis confirmed the subscription.
    live: bool,
    /// Shards waiting for that confirmation: (shard, generation, since).
    waiters: Vec<(usize, u64, Instant)>,
    /// When the mask became empty (the channel is unsubscribed after the linger).
    idle_since: Option<Instant>,
}

pub(crate) struct Inner {
    pub node: Box<str>,
    link: OnceLock<Link>,
    /// App names by index.
    pub apps: Vec<Arc<str>>,
    /// Endpoint paths by app and endpoint index (for connection info).
    pub endpoints: Vec<Vec<Box<str>>>,
    senders: OnceLock<Vec<flume::Sender<Batch>>>,
    interest: Mutex<HashMap<Box<str>, Interest>>,
    /// Messages from Redis gathered per shard until the end of the socket read.
    outgoing: Mutex<Vec<Batch>>,
    pub presence: Arc<Presence>,
    pub stats: FleetStats,
    next_api_shard: AtomicUsize,
    /// Set when the node is stopping: the presence writer writes nothing more.
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    pub cfg: FleetConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Redis broker of one node. Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    pub(crate) inner: Arc<Inner>,
}

impl RedisBroker {
    /// Start the link and the presence writer; returns at once (Redis may come up
    /// later: until then the node serves its own clients and says `degraded`).
    /// `attach` must be called with the shards' queues before they serve.
    pub fn start(
        cfg: FleetConfig,
        apps: &[crate::app::App],
        presence: Arc<Presence>,
    ) -> std::io::Result<RedisBroker> {
        if !crate::hub::conn::valid_node_id(&cfg.node_id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "node id: 1-32 letters, digits or `_`",
            ));
        }
        let inner = Arc::new(Inner {
            node: cfg.node_id.as_str().into(),
            link: OnceLock::new(),
            apps: apps.iter().map(|a| a.name.clone()).collect(),
            endpoints: apps
                .iter()
                .map(|a| {
                    a.endpoints()
                        .iter()
                        .map(|e| e.path.as_str().into())
                        .collect()
                })
                .collect(),
            senders: OnceLock::new(),
            interest: Mutex::new(HashMap::new()),
            outgoing: Mutex::new(Vec::new()),
            presence,
            stats: FleetStats::default(),
            next_api_shard: AtomicUsize::new(0),
            leaving: std::sync::atomic::AtomicBool::new(false),
            cfg,
        });
        let sink = LinkSink(inner.clone());
        let link = match &inner.cfg.cluster {
            None => Link::One(RedisLink::start(inner.cfg.redis.clone(), sink)?),
            Some(seeds) => Link::Cluster(ClusterLink::start(inner.cfg.redis.clone(), seeds, sink)?),
        };
        let _ = inner.link.set(link.clone());
        // Channels every node always listens to.
        link.subscribe(&node_channel(&inner.node));
        link.subscribe(BROADCAST_ALL);
        for app in &inner.apps {
            link.subscribe(&format!("ringcast:b:{app}"));
            link.subscribe(&format!("ringcast:api:{app}"));
        }
        let writer = presence::Writer::new(inner.clone());
        let w = writer.clone();
        link.on_reconnect(move || w.rewrite_soon());
        inner.presence.set_mirror(Arc::new(writer.clone()));
        std::thread::Builder::new()
            .name("ringcast-fleet".into())
            .spawn(move || writer.run())?;
        Ok(RedisBroker { inner })
    }

    /// Give the broker the shards' queues (once, before the shards serve).
    pub fn attach(&self, senders: Vec<flume::Sender<Batch>>) {
        let n = senders.len();
        let _ = self.inner.senders.set(senders);
        *lock(&self.inner.outgoing) = (0..n).map(|_| Vec::new()).collect();
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub(crate) fn link(&self) -> &Link {
        self.inner.link()
    }

    pub fn link_metrics(&self) -> LinkMetrics {
        self.link().metrics()
    }

    /// The node is stopping: take its presence out of Redis now (its users vanish at
    /// once, not after the TTL) and stop writing. Waits at most `wait`.
    pub fn leave(&self, wait: Duration) {
        let i = &self.inner;
        i.leaving.store(true, Relaxed);
        let mut cmds = vec![redis::cmd("ZREM")
            .arg(presence::NODES)
            .arg(&*i.node)
            .clone()];
        for app in &i.apps {
            cmds.push(
                redis::cmd("DEL")
                    .arg(&presence::node_keys(app, &i.node)[..])
                    .clone(),
            );
        }
        let done = self.link().commands(cmds);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        match rt.map(|rt| rt.block_on(async { tokio::time::timeout(wait, done).await })) {
            Ok(Ok(Ok(_))) => tracing::info!(node = &*i.node, "presence removed from redis"),
            Ok(Ok(Err(e))) => tracing::warn!("removing presence from redis: {e}"),
            _ => tracing::warn!("removing presence from redis: no answer in {wait:?}"),
        }
    }

    pub fn stats(&self) -> &FleetStats {
        &self.inner.stats
    }

    /// The broker's state for `/health` and stats.
    pub fn status_json(&self) -> serde_json::Value {
        let link = self.link();
        let m = link.metrics();
        let s = &self.inner.stats;
        let g = |c: &AtomicU64| c.load(Relaxed);
        serde_json::json!({
            "node": &*self.inner.node,
            "mode": match link { Link::One(_) => "redis", Link::Cluster(_) => "cluster" },
            "pipeline_hist_log2": &m.pipeline_hist[..],
            "rtt_hist_us_log2": &m.rtt_hist_us[..],
            "status": match link.status() { LinkStatus::Up => "up", LinkStatus::Down { .. } => "down" },
            "last_error": link.last_error(),
            "channels": lock(&self.inner.interest).len(),
            "pipelines": m.pipelines,
            "commands_sent": m.commands_sent,
            "avg_pipeline": m.avg_pipeline,
            "max_pipeline": m.max_pipeline,
            "rtt_avg_us": m.rtt_avg_us,
            "rtt_max_us": m.rtt_max_us,
            "publishes_sent": m.publishes_sent,
            "publish_drops": m.publish_drops,
            "command_failures": m.command_failures,
            "reconnects": m.reconnects,
            "queued": m.queued,
            "messages_received": m.messages_received,
            "remote_messages": g(&s.remote_messages),
            "own_echoes": g(&s.own_echoes),
            "malformed": g(&s.malformed),
            "forward_failures": g(&s.forward_failures),
            "confirm_timeouts": g(&s.confirm_timeouts),
            "backlog_drops": g(&s.backlog_drops),
            "api_commands": g(&s.api_commands),
            "presence_flushes": g(&s.presence_flushes),
            "presence_writes": g(&s.presence_writes),
            "presence_failures": g(&s.presence_failures),
        })
    }

    /// Presence queries answered from Redis (the same on every node).
    pub fn queries(&self) -> presence::Queries<'_> {
        presence::Queries::new(&self.inner)
    }
}

const BROADCAST_ALL: &str = "ringcast:b";

/// The broker's connection to Redis: one server, or a cluster (sharded pub/sub, every
/// command routed by its key's slot). The same operations either way.
#[derive(Clone)]
pub(crate) enum Link {
    One(RedisLink),
    Cluster(ClusterLink),
}

macro_rules! both {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            Link::One($l) => $e,
            Link::Cluster($l) => $e,
        }
    };
}

impl Link {
    pub fn publish(&self, channel: &str, payload: Bytes) -> Result<(), LinkError> {
        both!(self, l => l.publish(channel, payload))
    }
    pub fn subscribe(&self, channel: &str) {
        both!(self, l => l.subscribe(channel))
    }
    pub fn unsubscribe(&self, channel: &str) {
        both!(self, l => l.unsubscribe(channel))
    }
    pub fn commands(
        &self,
        cmds: Vec<redis::Cmd>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<redis::Value>, LinkError>> + Send>,
    > {
        both!(self, l => Box::pin(l.commands(cmds)))
    }
    pub fn status(&self) -> LinkStatus {
        both!(self, l => l.status())
    }
    pub fn is_command_up(&self) -> bool {
        both!(self, l => l.is_command_up())
    }
    pub fn last_error(&self) -> Option<String> {
        both!(self, l => l.last_error())
    }
    pub fn metrics(&self) -> LinkMetrics {
        both!(self, l => l.metrics())
    }
    pub fn on_reconnect(&self, f: impl Fn() + Send + Sync + 'static) {
        both!(self, l => l.on_reconnect(f))
    }
}

fn node_channel(node: &str) -> String {
    format!("ringcast:n:{node}")
}

impl Inner {
    pub(crate) fn link(&self) -> &Link {
        self.link.get().expect("the link is set in start")
    }

    /// `ringcast:t:{app}:{topic}` for a hub key `"{index}|{topic}"`.
    fn topic_channel(&self, key: &str) -> Option<String> {
        let (index, topic) = crate::app::unscope(key)?;
        let app = self.apps.get(usize::from(index))?;
        Some(format!("ringcast:t:{app}:{topic}"))
    }

    fn app_index(&self, name: &str) -> Option<u16> {
        self.apps
            .iter()
            .position(|a| &**a == name)
            .and_then(|i| u16::try_from(i).ok())
    }

    fn publish(&self, channel: &str, body: &Body) -> Result<(), LinkError> {
        let link = self.link();
        // Degraded (either connection down) means remote operations fail, as /health
        // says, even in the moment before the command connection notices.
        let r = match link.status() {
            LinkStatus::Up => link.publish(channel, wire::encode(&self.node, body)),
            LinkStatus::Down { .. } => Err(LinkError::Down),
        };
        if r.is_err() {
            self.stats.forward_failures.fetch_add(1, Relaxed);
        }
        r
    }

    /// Queue one message for each of `shards`, under one lock.
    fn queue_all(&self, shards: impl Iterator<Item = usize>, msg: impl Fn(usize) -> ShardMsg) {
        let mut out = lock(&self.outgoing);
        for shard in shards {
            if let Some(b) = out.get_mut(shard) {
                b.push(msg(shard));
            }
        }
    }

    fn queue(&self, shard: usize, msg: ShardMsg) {
        if let Some(b) = lock(&self.outgoing).get_mut(shard) {
            b.push(msg);
        }
    }

    fn send_now(&self, shard: usize, msg: ShardMsg) {
        if let Some(s) = self.senders.get().and_then(|s| s.get(shard)) {
            let _ = s.send(vec![msg]);
        }
    }

    fn shards(&self) -> usize {
        self.senders.get().map_or(0, Vec::len)
    }

    /// A message from Redis.
    fn on_message(&self, channel: &str, payload: Bytes) {
        if let Some(app) = channel.strip_prefix("ringcast:api:") {
            match self.app_index(app) {
                Some(app) => {
                    self.stats.api_commands.fetch_add(1, Relaxed);
                    let n = self.shards().max(1);
                    let shard = self.next_api_shard.fetch_add(1, Relaxed) % n;
                    self.queue(shard, ShardMsg::Api { app, body: payload });
                }
                None => {
                    self.stats.malformed.fetch_add(1, Relaxed);
                }
            }
            return;
        }
        let Some(env) = wire::decode(&payload) else {
            self.stats.malformed.fetch_add(1, Relaxed);
            return;
        };
        if env.origin == self.node.as_bytes() {
            self.stats.own_echoes.fetch_add(1, Relaxed);
            return;
        }
        self.stats.remote_messages.fetch_add(1, Relaxed);
        if channel.starts_with("ringcast:t:") {
            let (key, mask) = match lock(&self.interest).get(channel) {
                Some(i) => (i.key.clone(), i.mask),
                None => return,
            };
            match env.body {
                Body::Frame(frame) => self.queue_all(shards_in(mask), |_| ShardMsg::Deliver {
                    target: Target::Topic(key.clone()),
                    frame: frame.clone(),
                }),
                Body::DisconnectUser { code } => self.disconnect_local_user(&key, code),
                _ => {
                    self.stats.malformed.fetch_add(1, Relaxed);
                }
            }
        } else if channel == BROADCAST_ALL || channel.starts_with("ringcast:b:") {
            let app = match channel.strip_prefix("ringcast:b:") {
                Some(name) => match self.app_index(name) {
                    Some(i) => Some(i),
                    None => return,
                },
                None => None,
            };
            if let Body::Frame(frame) = env.body {
                self.queue_all(0..self.shards(), |_| ShardMsg::Deliver {
                    target: Target::Broadcast(app),
                    frame: frame.clone(),
                });
            }
        } else if channel.strip_prefix("ringcast:n:") == Some(&*self.node) {
            let (id, msg) = match env.body {
                Body::ToConn { id, frame } => (
                    id,
                    ShardMsg::Deliver {
                        target: Target::Conn(id),
                        frame,
                    },
                ),
                Body::DisconnectConn { id, code } => (id, ShardMsg::Disconnect { conn: id, code }),
                _ => {
                    self.stats.malformed.fetch_add(1, Relaxed);
                    return;
                }
            };
            self.queue(shard_of(id), msg);
        }
    }

    /// Close this node's connections of the user whose personal topic is `key`.
    fn disconnect_local_user(&self, key: &str, code: u16) {
        let Some((app, topic)) = crate::app::unscope(key) else {
            return;
        };
        let Some(user) = topic.strip_prefix("user:").and_then(|r| r.split_once(':')) else {
            return;
        };
        let user = crate::presence::UserKey {
            app,
            user_type: user.0.into(),
            user_id: user.1.into(),
        };
        for id in self.presence.user_connections(&user) {
            self.queue(shard_of(id), ShardMsg::Disconnect { conn: id, code });
        }
    }

    fn flush(&self) {
        let Some(senders) = self.senders.get() else {
            return;
        };
        let mut out = lock(&self.outgoing);
        for (shard, batch) in out.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            // A shard this far behind (CPU-bound) gets no more frames from Redis until it
            // catches up: dropped and counted, so memory stays bounded (delivery is
            // at-most-once). Commands and disconnects still go through.
            let dropped = trim_for_backlog(batch, senders[shard].len());
            self.stats.backlog_drops.fetch_add(dropped, Relaxed);
            if !batch.is_empty() {
                let _ = senders[shard].send(std::mem::take(batch));
            }
        }
    }

    fn on_subscribed(&self, channel: &str) {
        let (key, waiters) = match lock(&self.interest).get_mut(channel) {
            Some(i) => {
                i.live = true;
                (i.key.clone(), std::mem::take(&mut i.waiters))
            }
            None => return,
        };
        self.release(&key, waiters);
    }

    fn on_lost(&self) {
        let mut released = Vec::new();
        for i in lock(&self.interest).values_mut() {
            i.live = false;
            if !i.waiters.is_empty() {
                released.push((i.key.clone(), std::mem::take(&mut i.waiters)));
            }
        }
        for (key, w) in released {
            self.release(&key, w);
        }
    }

    /// Tell waiting shards their subscription of `key` is as live as it gets.
    fn release(&self, key: &Arc<str>, waiters: Vec<(usize, u64, Instant)>) {
        for (shard, gen, _) in waiters {
            self.send_now(
                shard,
                ShardMsg::InterestAck {
                    topic: key.clone(),
                    gen,
                },
            );
        }
    }

    /// Periodic upkeep: unsubscribe channels idle past the linger, release waiters
    /// past the confirmation timeout.
    pub(crate) fn sweep_interest(&self, now: Instant) {
        let mut late = Vec::new();
        {
            let mut map = lock(&self.interest);
            map.retain(|ch, i| {
                if i.mask == 0 && i.idle_since.is_some_and(|t| now - t >= UNSUBSCRIBE_LINGER) {
                    self.link().unsubscribe(ch);
                    return false;
                }
                if i.waiters.iter().any(|w| now - w.2 >= CONFIRM_TIMEOUT) {
                    let (old, keep) = std::mem::take(&mut i.waiters)
                        .into_iter()
                        .partition(|w| now - w.2 >= CONFIRM_TIMEOUT);
                    i.waiters = keep;
                    late.push((i.key.clone(), old));
                }
                true
            });
        }
        for (key, w) in late {
            self.stats
                .confirm_timeouts
                .fetch_add(w.len() as u64, Relaxed);
            self.release(&key, w);
        }
    }
}

/// Drop the frames of `batch` when its shard already has `queued` batches waiting, at
/// least [`MAX_SHARD_BACKLOG`]; returns how many were dropped.
fn trim_for_backlog(batch: &mut Batch, queued: usize) -> u64 {
    if queued < MAX_SHARD_BACKLOG {
        return 0;
    }
    let before = batch.len();
    batch.retain(|m| !matches!(m, ShardMsg::Deliver { .. }));
    (before - batch.len()) as u64
}

struct LinkSink(Arc<Inner>);

impl Sink for LinkSink {
    fn message(&self, msg: Incoming) {
        match msg {
            Incoming::Message { channel, payload } => self.0.on_message(&channel, payload),
            Incoming::PMessage {
                channel, payload, ..
            } => self.0.on_message(&channel, payload),
        }
    }
    fn flush(&self) {
        self.0.flush();
    }
    fn subscribed(&self, channel: &str) {
        self.0.on_subscribed(channel);
    }
    fn lost(&self) {
        self.0.on_lost();
    }
}

impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn forward(&self, msg: Outbound<'_>) -> Result<(), LinkError> {
        let i = &self.inner;
        match msg {
            Outbound::Topic { topic, frame } => match i.topic_channel(topic) {
                Some(ch) => i.publish(&ch, &Body::Frame(frame.clone())),
                None => Ok(()),
            },
            Outbound::Broadcast { app, frame } => {
                let ch = match app.and_then(|a| i.apps.get(usize::from(a))) {
                    Some(name) => format!("ringcast:b:{name}"),
                    None => BROADCAST_ALL.to_owned(),
                };
                i.publish(&ch, &Body::Frame(frame.clone()))
            }
            Outbound::Conn { node, id, frame } => i.publish(
                &node_channel(node),
                &Body::ToConn {
                    id,
                    frame: frame.clone(),
                },
            ),
            Outbound::DisconnectUser { topic, code } => match i.topic_channel(topic) {
                Some(ch) => i.publish(&ch, &Body::DisconnectUser { code }),
                None => Ok(()),
            },
            Outbound::DisconnectConn { node, id, code } => {
                i.publish(&node_channel(node), &Body::DisconnectConn { id, code })
            }
        }
    }

    fn interest(&self, shard: usize, topic: &Arc<str>, add: bool, gen: u64) -> bool {
        let i = &self.inner;
        let Some(ch) = i.topic_channel(topic) else {
            return false;
        };
        let bit = 1u64 << shard;
        let link = i.link();
        let mut map = lock(&i.interest);
        if add {
            let e = map.entry(ch.as_str().into()).or_insert_with(|| Interest {
                key: topic.clone(),
                mask: 0,
                live: false,
                waiters: Vec::new(),
                idle_since: None,
            });
            let fresh = e.mask == 0 && e.idle_since.is_none();
            e.mask |= bit;
            e.idle_since = None;
            if fresh {
                link.subscribe(&ch);
            }
            // Nothing to wait for when Redis already confirmed it, or cannot now (the
            // node is degraded: local delivery only, which needs no confirmation).
            if e.live || link.status() != LinkStatus::Up {
                return false;
            }
            e.waiters.push((shard, gen, Instant::now()));
            true
        } else {
            if let Some(e) = map.get_mut(ch.as_str()) {
                e.mask &= !bit;
                if e.mask == 0 {
                    e.idle_since = Some(Instant::now());
                }
            }
            false
        }
    }

    fn health(&self) -> Health {
        match self.link().status() {
            LinkStatus::Up => Health::Ok,
            LinkStatus::Down { .. } => Health::Degraded,
        }
    }

    fn fleet(&self) -> Option<&RedisBroker> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_far_behind_gets_commands_but_no_frames() {
        let frame = || ShardMsg::Deliver {
            target: Target::Broadcast(None),
            frame: Bytes::from_static(b"f"),
        };
        let mut batch = vec![
            frame(),
            ShardMsg::Disconnect {
                conn: 1,
                code: 4000,
            },
            frame(),
        ];
        assert_eq!(trim_for_backlog(&mut batch, MAX_SHARD_BACKLOG - 1), 0);
        assert_eq!(batch.len(), 3);
        assert_eq!(trim_for_backlog(&mut batch, MAX_SHARD_BACKLOG), 2);
        assert!(matches!(batch[..], [ShardMsg::Disconnect { .. }]));
    }
}
