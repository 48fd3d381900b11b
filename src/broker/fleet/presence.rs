//! Presence in Redis: the node's registry mirrored into keys that die with the node.
//!
//! # Key layout
//! Every key a node writes is its own, and expires unless the node refreshes it:
//!
//! | key | type | content |
//! |---|---|---|
//! | `ringcast:nodes` | ZSET | node id → expiry (unix ms); shared, pruned by every node |
//! | `ringcast:{APP:NODE}:conns` | HASH | connection id → connection info (JSON, as the API shows it) |
//! | `ringcast:{APP:NODE}:users` | HASH | `["user_type","user_id"]` (JSON) → the user's connection ids on the node, space-separated |
//! | `ringcast:{APP:NODE}:topics` | HASH | topic → subscribed connection ids (namespaces with `presence = true`) |
//! | `ringcast:{APP:NODE}:counts` | HASH | `connections`, `authenticated` |
//!
//! Why per node rather than per user (seed 000's `realtime:online:{type}:{id}`): a
//! refresh then costs a handful of `PEXPIRE`s per app whatever the number of
//! connections, a killed node's whole state expires together, and a node is the only
//! writer of its keys, so each write is the current truth read back from the local
//! registry (no read-modify-write races between nodes). A query reads the live nodes
//! from `ringcast:nodes` and asks each one's keys in one pipeline. `{APP:NODE}` is a
//! Redis Cluster hash tag: a node's keys of one app share a slot.
//!
//! # Writes
//! The registry reports what changed ([`Mirror`]); the writer thread collects the
//! changes and, every `presence_flush`, writes the current state of each changed thing
//! as one pipeline (a connection that opened and closed in between costs one `HDEL`).
//! Every TTL/3 it refreshes the TTLs and its entry in `ringcast:nodes`. After the link
//! reconnects it rewrites everything from the registry.
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use redis::{Cmd, Value};

use super::{lock, Inner};
use crate::broker::redis::LinkError;
use crate::hub::conn::format_conn_id;
use crate::presence::{Change, Mirror, UserKey};

pub(super) const NODES: &str = "ringcast:nodes";
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Fields (or members) per write command, and commands per pipeline unit.
const CHUNK: usize = 512;

/// Every presence key one node writes for one app.
pub(super) fn node_keys(app: &str, node: &str) -> [String; 4] {
    ["conns", "users", "topics", "counts"].map(|w| key(app, node, w))
}

pub(super) fn key(app: &str, node: &str, what: &str) -> String {
    format!("ringcast:{{{app}:{node}}}:{what}")
}

fn user_field(user_type: &str, user_id: &str) -> String {
    serde_json::json!([user_type, user_id]).to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct Dirty {
    conns: HashSet<(u16, u64)>,
    users: HashSet<UserKey>,
    topics: HashSet<Arc<str>>,
    apps: HashSet<u16>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.users.is_empty() && self.topics.is_empty()
    }
}

struct State {
    dirty: Mutex<Dirty>,
    rewrite: AtomicBool,
}

/// Collects registry changes and writes them to Redis from its own thread.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
    state: Arc<State>,
}

impl Mirror for Writer {
    fn changed(&self, change: Change) {
        let mut d = lock(&self.state.dirty);
        match change {
            Change::Conn { app, id } => {
                d.conns.insert((app, id));
                d.apps.insert(app);
            }
            Change::User(u) => {
                d.users.insert(u);
            }
            Change::Topic(t) => {
                d.topics.insert(t);
            }
        }
    }
}

impl Writer {
    pub(super) fn new(inner: Arc<Inner>) -> Writer {
        Writer {
            inner,
            state: Arc::new(State {
                dirty: Mutex::new(Dirty::default()),
                rewrite: AtomicBool::new(true),
            }),
        }
    }

    /// Rewrite everything at the next flush (the link reconnected: Redis may have
    /// restarted empty, or our keys expired meanwhile).
    pub fn rewrite_soon(&self) {
        self.state.rewrite.store(true, Relaxed);
    }

    /// The writer thread: flush changes, refresh TTLs, sweep interest. Runs for the
    /// life of the process.
    pub(super) fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("fleet writer: no runtime: {e}");
                return;
            }
        };
        let cfg = &self.inner.cfg;
        let refresh_every = (cfg.presence_ttl / 3).max(Duration::from_millis(100));
        let mut next_refresh = Instant::now();
        let mut next_sweep = Instant::now();
        loop {
            std::thread::sleep(cfg.presence_flush);
            let now = Instant::now();
            if now >= next_sweep {
                // Lingering unsubscribes and late confirmations are timed in seconds:
                // a walk over every channel four times a second is plenty.
                self.inner.sweep_interest(now);
                next_sweep = now + SWEEP_EVERY;
            }
            let link = self.inner.link();
            if self.inner.leaving.load(Relaxed) {
                continue;
            }
            if !link.is_command_up() {
                // Nothing can be written; what changes meanwhile is rewritten on reconnect.
                *lock(&self.state.dirty) = Dirty::default();
                continue;
            }
            let mut units = Vec::new();
            if self.state.rewrite.swap(false, Relaxed) {
                *lock(&self.state.dirty) = Dirty::default();
                units = self.rewrite();
                next_refresh = now;
            } else {
                let d = std::mem::take(&mut *lock(&self.state.dirty));
                if !d.is_empty() {
                    units = self.changes(d);
                }
            }
            if now >= next_refresh {
                units.push(self.refresh());
                next_refresh = now + refresh_every;
            }
            if units.is_empty() {
                continue;
            }
            let s = &self.inner.stats;
            s.presence_flushes.fetch_add(1, Relaxed);
            let pending: Vec<_> = units
                .into_iter()
                .map(|u| {
                    s.presence_writes.fetch_add(u.len() as u64, Relaxed);
                    link.commands(u)
                })
                .collect();
            for p in pending {
                if let Err(e) = rt.block_on(p) {
                    s.presence_failures.fetch_add(1, Relaxed);
                    tracing::debug!("presence write failed: {e}");
                    if e == LinkError::Down || e == LinkError::Overloaded {
                        self.rewrite_soon();
                    }
                }
            }
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.inner.cfg.presence_ttl.as_millis() as u64
    }

    fn keys(&self, app: u16) -> Option<[String; 4]> {
        let name = self.inner.apps.get(usize::from(app))?;
        Some(node_keys(name, &self.inner.node))
    }

    /// Registry entry and TTLs of every app's keys.
    fn refresh(&self) -> Vec<Cmd> {
        let now = now_ms();
        let mut cmds = vec![
            redis::cmd("ZADD")
                .arg(NODES)
                .arg(now + self.ttl_ms())
                .arg(&*self.inner.node)
                .clone(),
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(NODES)
                .arg("-inf")
                .arg(now)
                .clone(),
        ];
        for app in 0..self.inner.apps.len() as u16 {
            for k in self.keys(app).into_iter().flatten() {
                cmds.push(redis::cmd("PEXPIRE").arg(k).arg(self.ttl_ms()).clone());
            }
        }
        cmds
    }

    /// The current state of everything that changed.
    fn changes(&self, d: Dirty) -> Vec<Vec<Cmd>> {
        let p = &self.inner.presence;
        let mut w = Batch::new(self.ttl_ms());
        for (app, id) in d.conns {
            let Some([conns, ..]) = self.keys(app) else {
                continue;
            };
            let field = format_conn_id(id);
            match p.connection(id) {
                Some(info) => w.set(&conns, field, self.info(id, &info)),
                None => w.del(&conns, field),
            }
        }
        for u in d.users {
            let Some([_, users, ..]) = self.keys(u.app) else {
                continue;
            };
            let ids = p.user_connections(&u);
            let field = user_field(&u.user_type, &u.user_id);
            if ids.is_empty() {
                w.del(&users, field);
            } else {
                w.set(&users, field, join(&ids));
            }
        }
        for t in d.topics {
            let Some((app, topic)) = crate::app::unscope(&t) else {
                continue;
            };
            let Some([_, _, topics, _]) = self.keys(app) else {
                continue;
            };
            let ids = p.topic_subscribers(&t);
            if ids.is_empty() {
                w.del(&topics, topic.to_owned());
            } else {
                w.set(&topics, topic.to_owned(), join(&ids));
            }
        }
        for app in d.apps {
            self.counts(&mut w, app);
        }
        w.finish()
    }

    fn counts(&self, w: &mut Batch, app: u16) {
        let Some([.., counts]) = self.keys(app) else {
            return;
        };
        let (c, a) = self.inner.presence.counts(Some(app));
        w.set(&counts, "connections".into(), c.to_string());
        w.set(&counts, "authenticated".into(), a.to_string());
    }

    fn info(&self, id: u64, info: &crate::presence::ConnInfo) -> String {
        let app = usize::from(info.app);
        let endpoint = self
            .inner
            .endpoints
            .get(app)
            .and_then(|e| e.get(usize::from(info.endpoint)))
            .map(|e| &**e);
        let name = self.inner.apps.get(app).map(|a| &**a);
        let mut j = crate::presence::info_json_with(name, endpoint, id, info);
        if let Some(o) = j.as_object_mut() {
            o.insert("node".into(), Json::from(&*self.inner.node));
        }
        j.to_string()
    }

    /// Everything, from scratch.
    fn rewrite(&self) -> Vec<Vec<Cmd>> {
        let p = &self.inner.presence;
        let mut w = Batch::new(self.ttl_ms());
        let topics = p.tracked_topics();
        for app in 0..self.inner.apps.len() as u16 {
            let Some(keys) = self.keys(app) else { continue };
            w.raw(redis::cmd("DEL").arg(&keys[..]).clone());
            for id in p.app_connections(app) {
                if let Some(info) = p.connection(id) {
                    w.set(&keys[0], format_conn_id(id), self.info(id, &info));
                }
            }
            for u in p.online_users(app, None) {
                let ids = p.user_connections(&u);
                if !ids.is_empty() {
                    w.set(&keys[1], user_field(&u.user_type, &u.user_id), join(&ids));
                }
            }
            for t in topics
                .iter()
                .filter(|t| crate::app::unscope(t).is_some_and(|(a, _)| a == app))
            {
                let ids = p.topic_subscribers(t);
                if let (false, Some((_, topic))) = (ids.is_empty(), crate::app::unscope(t)) {
                    w.set(&keys[2], topic.to_owned(), join(&ids));
                }
            }
            self.counts(&mut w, app);
        }
        tracing::info!("presence rewritten to redis ({} commands)", w.len());
        w.finish()
    }
}

fn join(ids: &[u64]) -> String {
    ids.iter()
        .map(|&i| format_conn_id(i))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds write commands: field sets per key are merged into one `HSET`/`HDEL`
/// (at most [`CHUNK`] fields each), every written key gets its TTL, and commands are
/// cut into pipeline units of at most [`CHUNK`].
struct Batch {
    ttl_ms: u64,
    cmds: Vec<Cmd>,
    sets: Vec<(String, Vec<(String, String)>)>,
    dels: Vec<(String, Vec<String>)>,
}

impl Batch {
    fn new(ttl_ms: u64) -> Batch {
        Batch {
            ttl_ms,
            cmds: Vec::new(),
            sets: Vec::new(),
            dels: Vec::new(),
        }
    }

    fn raw(&mut self, c: Cmd) {
        self.flush_fields();
        self.cmds.push(c);
    }

    fn set(&mut self, key: &str, field: String, value: String) {
        match self.sets.iter_mut().find(|(k, _)| k == key) {
            Some((_, f)) => f.push((field, value)),
            None => self.sets.push((key.to_owned(), vec![(field, value)])),
        }
    }

    fn del(&mut self, key: &str, field: String) {
        match self.dels.iter_mut().find(|(k, _)| k == key) {
            Some((_, f)) => f.push(field),
            None => self.dels.push((key.to_owned(), vec![field])),
        }
    }

    fn flush_fields(&mut self) {
        let mut written = BTreeSet::new();
        for (k, fields) in std::mem::take(&mut self.dels) {
            for chunk in fields.chunks(CHUNK) {
                self.cmds
                    .push(redis::cmd("HDEL").arg(&k).arg(chunk).clone());
            }
        }
        for (k, fields) in std::mem::take(&mut self.sets) {
            for chunk in fields.chunks(CHUNK) {
                let mut c = redis::cmd("HSET");
                c.arg(&k);
                for (f, v) in chunk {
                    c.arg(f).arg(v);
                }
                self.cmds.push(c);
            }
            written.insert(k);
        }
        for k in written {
            self.cmds
                .push(redis::cmd("PEXPIRE").arg(k).arg(self.ttl_ms).clone());
        }
    }

    fn len(&self) -> usize {
        self.cmds.len() + self.sets.len() + self.dels.len()
    }

    fn finish(mut self) -> Vec<Vec<Cmd>> {
        self.flush_fields();
        let mut units = Vec::new();
        let mut cmds = self.cmds.into_iter().peekable();
        while cmds.peek().is_some() {
            units.push(cmds.by_ref().take(CHUNK).collect());
        }
        units
    }
}

/// Presence queries answered from Redis.
pub struct Queries<'a> {
    inner: &'a Inner,
}

/// A connection id on a node, as stored.
type NodeIds = Vec<(String, Vec<String>)>;

impl<'a> Queries<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        Queries { inner }
    }

    async fn run(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, LinkError> {
        self.inner.link().commands(cmds).await
    }

    /// Nodes whose registry entry has not expired.
    pub async fn nodes(&self) -> Result<Vec<String>, LinkError> {
        let v = self
            .run(vec![redis::cmd("ZRANGEBYSCORE")
                .arg(NODES)
                .arg(now_ms())
                .arg("+inf")
                .clone()])
            .await?;
        Ok(strings(v.into_iter().next()))
    }

    /// Ask every live node's `what` key for `field`; (node, value) where present.
    async fn field_per_node(
        &self,
        app: &str,
        what: &str,
        field: &str,
    ) -> Result<Vec<(String, String)>, LinkError> {
        let nodes = self.nodes().await?;
        let cmds = nodes
            .iter()
            .map(|n| redis::cmd("HGET").arg(key(app, n, what)).arg(field).clone())
            .collect();
        let replies = self.run(cmds).await?;
        Ok(nodes
            .into_iter()
            .zip(replies)
            .filter_map(|(n, v)| string(v).map(|s| (n, s)))
            .collect())
    }

    async fn ids_per_node(&self, app: &str, what: &str, field: &str) -> Result<NodeIds, LinkError> {
        Ok(self
            .field_per_node(app, what, field)
            .await?
            .into_iter()
            .map(|(n, s)| {
                (
                    n,
                    s.split(' ')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect(),
                )
            })
            .collect())
    }

    /// Connection infos for ids grouped by node (missing ones are skipped).
    async fn infos(&self, app: &str, ids: NodeIds) -> Result<Vec<Json>, LinkError> {
        let ids: NodeIds = ids.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let cmds = ids
            .iter()
            .map(|(n, v)| {
                redis::cmd("HMGET")
                    .arg(key(app, n, "conns"))
                    .arg(&v[..])
                    .clone()
            })
            .collect();
        let replies = self.run(cmds).await?;
        Ok(replies
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(items) => items,
                _ => Vec::new(),
            })
            .filter_map(|v| string(v).and_then(|s| serde_json::from_str(&s).ok()))
            .collect())
    }

    /// Connection ids of a user across the fleet.
    pub async fn user_conn_ids(
        &self,
        app: &str,
        user_type: &str,
        user_id: &str,
    ) -> Result<Vec<String>, LinkError> {
        let per = self
            .ids_per_node(app, "users", &user_field(user_type, user_id))
            .await?;
        Ok(per.into_iter().flat_map(|(_, v)| v).collect())
    }

    pub async fn user_connections(
        &self,
        app: &str,
        user_type: &str,
        user_id: &str,
    ) -> Result<Vec<Json>, LinkError> {
        let per = self
            .ids_per_node(app, "users", &user_field(user_type, user_id))
            .await?;
        self.infos(app, per).await
    }

    /// Users with a connection on any live node, optionally of one type; sorted.
    pub async fn online_users(
        &self,
        app: &str,
        user_type: Option<&str>,
    ) -> Result<Vec<(String, String)>, LinkError> {
        let nodes = self.nodes().await?;
        let cmds = nodes
            .iter()
            .map(|n| redis::cmd("HKEYS").arg(key(app, n, "users")).clone())
            .collect();
        let mut users = BTreeSet::new();
        for v in self.run(cmds).await? {
            for f in strings(Some(v)) {
                if let Ok((t, u)) = serde_json::from_str::<(String, String)>(&f) {
                    if user_type.is_none_or(|x| x == t) {
                        users.insert((t, u));
                    }
                }
            }
        }
        Ok(users.into_iter().collect())
    }

    /// A connection's info, from the node that holds it.
    pub async fn connection_info(
        &self,
        app: &str,
        node: &str,
        conn_id: &str,
    ) -> Result<Option<Json>, LinkError> {
        let v = self
            .run(vec![redis::cmd("HGET")
                .arg(key(app, node, "conns"))
                .arg(conn_id)
                .clone()])
            .await?;
        Ok(v.into_iter()
            .next()
            .and_then(string)
            .and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Subscribers of a tracked topic across the fleet, with their connection info.
    pub async fn topic_subscribers(&self, app: &str, topic: &str) -> Result<Vec<Json>, LinkError> {
        let per = self.ids_per_node(app, "topics", topic).await?;
        self.infos(app, per).await
    }

    /// (connections, authenticated) of an app across the fleet.
    pub async fn counts(&self, app: &str) -> Result<(u64, u64), LinkError> {
        let nodes = self.nodes().await?;
        let cmds = nodes
            .iter()
            .map(|n| {
                redis::cmd("HMGET")
                    .arg(key(app, n, "counts"))
                    .arg("connections")
                    .arg("authenticated")
                    .clone()
            })
            .collect();
        let mut total = (0, 0);
        for v in self.run(cmds).await? {
            let vals = match v {
                Value::Array(items) => items,
                _ => continue,
            };
            let mut it = vals
                .into_iter()
                .map(|x| string(x).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0));
            total.0 += it.next().unwrap_or(0);
            total.1 += it.next().unwrap_or(0);
        }
        Ok(total)
    }
}

fn string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.into_iter().filter_map(string).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_per_app_and_node() {
        assert_eq!(key("chat", "n1", "conns"), "ringcast:{chat:n1}:conns");
        assert_eq!(user_field("user", "a b:c"), r#"["user","a b:c"]"#);
    }

    #[test]
    fn batch_merges_fields_and_sets_ttls() {
        let mut b = Batch::new(5000);
        b.set("k1", "a".into(), "1".into());
        b.set("k1", "b".into(), "2".into());
        b.del("k2", "c".into());
        let units = b.finish();
        assert_eq!(units.len(), 1);
        let packed: Vec<String> = units[0]
            .iter()
            .map(|c| String::from_utf8_lossy(&c.get_packed_command()).replace("\r\n", " "))
            .collect();
        assert_eq!(packed.len(), 3, "{packed:?}");
        assert!(packed[0].contains("HDEL") && packed[0].contains(" k2 "));
        assert!(
            packed[1].contains("HSET") && packed[1].contains(" a ") && packed[1].contains(" b ")
        );
        assert!(packed[2].contains("PEXPIRE") && packed[2].contains("5000"));
    }

    #[test]
    fn big_batches_are_cut_into_units() {
        let mut b = Batch::new(1);
        for i in 0..(CHUNK * 3) {
            b.set(&format!("k{i}"), "f".into(), "v".into());
        }
        let units = b.finish();
        assert!(units.iter().all(|u| u.len() <= CHUNK));
        assert_eq!(units.iter().map(Vec::len).sum::<usize>(), CHUNK * 3 * 2);
    }
}
