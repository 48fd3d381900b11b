//! The per-shard hub: this shard's connections, the topics they joined, and which other
//! shards have subscribers for which topic. Owned by one shard (no locks); other shards
//! learn of it only through mesh messages.
//!
//! # Routing only to interested shards
//! Each shard keeps a replica of the other shards' interest: `remote[topic]` is a bitmask
//! of the shards that have at least one subscriber. When a shard's first subscriber of a
//! topic arrives it announces `Interest{add}` to every other shard and holds the
//! subscription as *pending*; the `subscribed` answer (or `auth_success`, for the personal
//! topic) is sent only when every shard has acknowledged. So once a client has seen
//! `subscribed`, every later publish on any shard reaches it. Per-pair queues are FIFO, so
//! an add and a later remove are always applied in order.
//!
//! # Fan-out
//! A frame is encoded once by the publisher; [`Hub::publish`] pushes a clone of the same
//! `Bytes` to each local subscriber and gives one clone to each interested shard, which
//! does the same for its own subscribers ([`Hub::deliver`]).
pub mod conn;

use bytes::Bytes;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

pub use conn::{CloseReason, ConnHandle, Identity};

use crate::broker::Broker;
use crate::metrics::ShardCounters;
use crate::presence::Presence;
use crate::runtime::mesh::{shards_in, Mesh, ShardMsg, Target};

/// One topic on this shard.
#[derive(Default)]
struct Topic {
    /// Connections that receive the topic's messages.
    subs: Members,
    /// Set while the other shards have not all acknowledged our interest (boxed: rare).
    pending: Option<Box<Pending>>,
}

/// Members above this count get an id → position index for O(1) removal.
const INDEX_ABOVE: usize = 16;

/// A topic's local subscribers: a dense list (fan-out walks it front to back), plus an
/// index from connection id to position once the list is long. Most topics (personal
/// topics, small rooms) have a handful of members and need no index.
#[derive(Default)]
pub struct Members {
    list: Vec<Rc<ConnHandle>>,
    /// Boxed: most topics never need it, and every topic carries the field inline.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<u64, u32>>>,
}

impl Members {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rc<ConnHandle>> {
        self.list.iter()
    }

    fn position(&self, id: u64) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.get(&id).map(|&p| p as usize),
            None => self.list.iter().position(|h| h.id == id),
        }
    }

    /// Add a connection (no-op when present).
    pub fn insert(&mut self, h: Rc<ConnHandle>) {
        if self.position(h.id).is_some() {
            return;
        }
        if let Some(ix) = self.index.as_mut() {
            ix.insert(h.id, self.list.len() as u32);
        }
        // Most topics (personal ones, small rooms) hold one or two members: grow by
        // one at first instead of Vec's default of four.
        if self.list.len() < 4 {
            self.list.reserve_exact(1);
        }
        self.list.push(h);
        if self.index.is_none() && self.list.len() > INDEX_ABOVE {
            let index: HashMap<u64, u32> = self
                .list
                .iter()
                .enumerate()
                .map(|(i, h)| (h.id, i as u32))
                .collect();
            self.index = Some(Box::new(index));
        }
    }

    /// Remove a connection; returns whether it was present.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(pos) = self.position(id) else {
            return false;
        };
        self.list.swap_remove(pos);
        if let Some(ix) = self.index.as_mut() {
            ix.remove(&id);
            if let Some(moved) = self.list.get(pos) {
                ix.insert(moved.id, pos as u32);
            }
            if self.list.len() <= INDEX_ABOVE / 2 {
                self.index = None;
            }
        }
        if self.list.capacity() > 2 * self.list.len() + 4 {
            self.list.shrink_to_fit();
        }
        true
    }
}

struct Pending {
    gen: u64,
    acks_left: usize,
    /// Connections waiting to join, with the frame to send each when they do.
    waiters: Vec<(Rc<ConnHandle>, Option<Bytes>)>,
}

/// Outcome of a subscribe request.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// Joined now; the ready frame was queued.
    Now,
    /// Joining; the ready frame will be queued when the other shards have acknowledged.
    Pending,
    /// Was already a member; the ready frame was queued.
    Already,
}

pub struct Hub {
    shard: usize,
    /// Node-wide registry told of every membership change (not of messages).
    presence: Arc<Presence>,
    /// Told of this shard's first and last subscriber of each topic.
    broker: Arc<dyn Broker>,
    conns: HashMap<u64, Rc<ConnHandle>>,
    topics: HashMap<Arc<str>, Topic>,
    remote: HashMap<Arc<str>, u64>,
    next_gen: u64,
}

impl Hub {
    pub fn new(shard: usize, presence: Arc<Presence>, broker: Arc<dyn Broker>) -> Self {
        Hub {
            shard,
            presence,
            broker,
            conns: HashMap::new(),
            topics: HashMap::new(),
            remote: HashMap::new(),
            next_gen: 0,
        }
    }

    pub fn add_conn(&mut self, h: Rc<ConnHandle>) {
        self.conns.insert(h.id, h);
    }

    pub fn conn(&self, id: u64) -> Option<&Rc<ConnHandle>> {
        self.conns.get(&id)
    }

    pub fn conns(&self) -> impl Iterator<Item = &Rc<ConnHandle>> {
        self.conns.values()
    }

    /// Forget a connection and leave all its topics.
    pub fn remove_conn(&mut self, h: &Rc<ConnHandle>, mesh: &Rc<Mesh>, c: &ShardCounters) {
        self.conns.remove(&h.id);
        let subs = std::mem::take(&mut *h.subs.borrow_mut());
        ShardCounters::sub(&c.subscriptions, subs.len() as u64);
        for t in subs {
            self.leave(h, &t, mesh);
        }
    }

    /// Join `topic`; `ready` is queued to the connection once it is a member.
    /// `track`: also record the membership in the presence registry (namespaces with
    /// `presence` on), so the API can list the topic's subscribers.
    pub fn subscribe(
        &mut self,
        h: &Rc<ConnHandle>,
        topic: Arc<str>,
        ready: Option<Bytes>,
        track: bool,
        mesh: &Rc<Mesh>,
        c: &ShardCounters,
    ) -> Joined {
        if h.subs.borrow().iter().any(|t| **t == *topic) {
            if let Some(f) = ready {
                // Still pending? Then the frame goes with the pending join.
                if let Some(p) = self.topics.get_mut(&topic).and_then(|t| t.pending.as_mut()) {
                    p.waiters.push((h.clone(), Some(f)));
                    return Joined::Pending;
                }
                send(h, &f, c);
            }
            return Joined::Already;
        }
        {
            // A connection usually joins a few topics: grow the list one by one.
            let mut subs = h.subs.borrow_mut();
            if subs.len() < 4 {
                subs.reserve_exact(1);
            }
            subs.push(topic.clone());
        }
        if track {
            self.presence.subscribed(&topic, h.id);
        }
        ShardCounters::add(&c.subscriptions, 1);
        match self.topics.get_mut(&topic) {
            Some(t) => {
                if let Some(p) = t.pending.as_mut() {
                    p.waiters.push((h.clone(), ready));
                    return Joined::Pending;
                }
                t.subs.insert(h.clone());
            }
            None => {
                // The first local subscriber: the other shards, and the broker (other
                // nodes), must route the topic here before the join is confirmed.
                self.next_gen += 1;
                let gen = self.next_gen;
                let mut acks = 0;
                for dst in (0..mesh.shards()).filter(|&d| d != self.shard) {
                    mesh.send(
                        dst,
                        ShardMsg::Interest {
                            topic: topic.clone(),
                            from: self.shard,
                            add: true,
                            gen,
                        },
                    );
                    acks += 1;
                }
                if self.broker.interest(self.shard, &topic, true, gen) {
                    acks += 1;
                }
                let mut t = Topic::default();
                if acks == 0 {
                    t.subs.insert(h.clone());
                    self.topics.insert(topic, t);
                } else {
                    t.pending = Some(Box::new(Pending {
                        gen,
                        acks_left: acks,
                        waiters: vec![(h.clone(), ready)],
                    }));
                    self.topics.insert(topic, t);
                    return Joined::Pending;
                }
            }
        }
        if let Some(f) = ready {
            send(h, &f, c);
        }
        Joined::Now
    }

    /// Leave `topic`. Returns false when the connection was not subscribed.
    pub fn unsubscribe(
        &mut self,
        h: &Rc<ConnHandle>,
        topic: &str,
        mesh: &Rc<Mesh>,
        c: &ShardCounters,
    ) -> bool {
        let mut subs = h.subs.borrow_mut();
        let Some(pos) = subs.iter().position(|t| **t == *topic) else {
            return false;
        };
        let t = subs.swap_remove(pos);
        drop(subs);
        ShardCounters::sub(&c.subscriptions, 1);
        self.leave(h, &t, mesh);
        true
    }

    fn leave(&mut self, h: &Rc<ConnHandle>, topic: &Arc<str>, mesh: &Rc<Mesh>) {
        self.presence.unsubscribed(topic, h.id);
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        t.subs.remove(h.id);
        if let Some(p) = t.pending.as_mut() {
            p.waiters.retain(|(w, _)| w.id != h.id);
            // The topic stays until the acknowledgements arrive; then it is dropped if empty.
            return;
        }
        if t.subs.is_empty() {
            self.topics.remove(topic);
            self.announce_gone(topic, mesh);
        }
    }

    fn announce_gone(&self, topic: &Arc<str>, mesh: &Rc<Mesh>) {
        self.broker.interest(self.shard, topic, false, 0);
        for dst in (0..mesh.shards()).filter(|&d| d != self.shard) {
            mesh.send(
                dst,
                ShardMsg::Interest {
                    topic: topic.clone(),
                    from: self.shard,
                    add: false,
                    gen: 0,
                },
            );
        }
    }

    /// Publish a frame to a topic from this shard: local subscribers and interested shards.
    /// Returns the number of local receivers.
    pub fn publish(
        &self,
        topic: &Arc<str>,
        frame: &Bytes,
        mesh: &Rc<Mesh>,
        c: &ShardCounters,
    ) -> usize {
        if let Some(&mask) = self.remote.get(topic) {
            for dst in shards_in(mask) {
                mesh.send(
                    dst,
                    ShardMsg::Deliver {
                        target: Target::Topic(topic.clone()),
                        frame: frame.clone(),
                    },
                );
            }
        }
        self.deliver_topic(topic, frame, c)
    }

    /// Broadcast a frame from this shard to every protocol connection of `app` (all apps
    /// when `None`) on every shard.
    pub fn broadcast(
        &self,
        app: Option<u16>,
        frame: &Bytes,
        mesh: &Rc<Mesh>,
        c: &ShardCounters,
    ) -> usize {
        for dst in (0..mesh.shards()).filter(|&d| d != self.shard) {
            mesh.send(
                dst,
                ShardMsg::Deliver {
                    target: Target::Broadcast(app),
                    frame: frame.clone(),
                },
            );
        }
        self.deliver_all(app, frame, c)
    }

    fn deliver_topic(&self, topic: &str, frame: &Bytes, c: &ShardCounters) -> usize {
        match self.topics.get(topic) {
            Some(t) => deliver(t.subs.iter(), frame, c),
            None => 0,
        }
    }

    fn deliver_all(&self, app: Option<u16>, frame: &Bytes, c: &ShardCounters) -> usize {
        deliver(
            self.conns
                .values()
                .filter(|h| app.is_none_or(|a| h.app == a)),
            frame,
            c,
        )
    }

    /// Apply a message from another shard.
    pub fn on_mesh(&mut self, msg: ShardMsg, mesh: &Rc<Mesh>, c: &ShardCounters) {
        match msg {
            ShardMsg::Deliver {
                target: Target::Topic(t),
                frame,
            } => {
                self.deliver_topic(&t, &frame, c);
            }
            ShardMsg::Deliver {
                target: Target::Broadcast(app),
                frame,
            } => {
                self.deliver_all(app, &frame, c);
            }
            ShardMsg::Deliver {
                target: Target::Conn(id),
                frame,
            } => {
                if let Some(h) = self.conns.get(&id) {
                    send(h, &frame, c);
                }
            }
            ShardMsg::Disconnect { conn, code } => {
                if let Some(h) = self.conns.get(&conn) {
                    h.request_close(CloseReason {
                        code,
                        reason: "disconnected by server",
                    });
                }
            }
            ShardMsg::Interest {
                topic,
                from,
                add,
                gen,
            } => {
                let bit = 1u64 << from;
                if add {
                    *self.remote.entry(topic.clone()).or_insert(0) |= bit;
                    mesh.send(from, ShardMsg::InterestAck { topic, gen });
                } else if let Some(m) = self.remote.get_mut(&topic) {
                    *m &= !bit;
                    if *m == 0 {
                        self.remote.remove(&topic);
                    }
                }
            }
            ShardMsg::InterestAck { topic, gen } => self.on_ack(topic, gen, mesh, c),
            // Run by the shard, not the hub (see runtime::shard).
            ShardMsg::Api { .. } | ShardMsg::Drain => {}
        }
    }

    fn on_ack(&mut self, topic: Arc<str>, gen: u64, mesh: &Rc<Mesh>, c: &ShardCounters) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        let Some(p) = t.pending.as_mut() else { return };
        if p.gen != gen {
            return;
        }
        p.acks_left -= 1;
        if p.acks_left > 0 {
            return;
        }
        let p = t.pending.take().expect("checked above");
        for (h, ready) in p.waiters {
            // Still subscribed (it may have left or closed while pending)?
            if h.subs.borrow().iter().any(|s| **s == *topic) && h.close_requested().is_none() {
                t.subs.insert(h.clone());
            }
            if let Some(f) = ready {
                send(&h, &f, c);
            }
        }
        if t.subs.is_empty() {
            self.topics.remove(&topic);
            self.announce_gone(&topic, mesh);
        }
    }
}

/// Push one frame to one connection (a reply, a direct message), counted like fan-out.
#[inline]
pub fn send(h: &Rc<ConnHandle>, frame: &Bytes, c: &ShardCounters) -> bool {
    deliver(std::iter::once(h), frame, c) == 1
}

/// Push one frame to each receiver; the delivered count is added to the counters once.
#[inline]
pub fn deliver<'a>(
    receivers: impl Iterator<Item = &'a Rc<ConnHandle>>,
    frame: &Bytes,
    c: &ShardCounters,
) -> usize {
    let mut n = 0;
    for h in receivers {
        n += h.push(frame.clone(), c) as usize;
    }
    ShardCounters::add(&c.messages_out, n as u64);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_index_stays_consistent() {
        let mut m = Members::default();
        let hs: Vec<_> = (0..100u64)
            .map(|i| Rc::new(ConnHandle::new(i, 0, 1024, 0)))
            .collect();
        for h in &hs {
            m.insert(h.clone());
            m.insert(h.clone());
        }
        assert_eq!(m.len(), 100);
        assert!(m.index.is_some());
        for i in (0..100u64).step_by(3) {
            assert!(m.remove(i));
            assert!(!m.remove(i));
        }
        let mut left: Vec<u64> = m.iter().map(|h| h.id).collect();
        left.sort();
        assert_eq!(left, (0..100u64).filter(|i| i % 3 != 0).collect::<Vec<_>>());
        for i in 0..100u64 {
            m.remove(i);
        }
        assert!(m.is_empty());
        assert!(m.index.is_none());
    }
}
