//! [`ConnHandle`]: what the hub knows of one WebSocket connection, shared (`Rc`) between
//! the connection's task and the shard's hub.
//!
//! The hub never writes to a socket: it pushes ready frames (`Bytes`) onto the handle's
//! bounded outbound queue and wakes the connection task, which writes everything pending
//! in one vectored write. A connection whose queue would pass its bound is a slow
//! consumer: its queue is dropped at once and the task is told to close, so one stalled
//! reader never grows memory or delays the others.
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use crate::metrics::ShardCounters;

/// Who a connection is, once known.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_type: Box<str>,
    /// `None` for an anonymous connection.
    pub user_id: Option<Box<str>>,
    /// Roles granted by the token (e.g. `staff`).
    pub roles: Box<[Box<str>]>,
    /// Extra topics the token may join (exact names, or `prefix*`).
    pub topics: Box<[Box<str>]>,
}

impl Identity {
    pub fn user(user_type: &str, user_id: &str) -> Self {
        Identity {
            user_type: user_type.into(),
            user_id: Some(user_id.into()),
            roles: Box::default(),
            topics: Box::default(),
        }
    }

    pub fn anonymous() -> Self {
        Identity {
            user_type: "anonymous".into(),
            user_id: None,
            roles: Box::default(),
            topics: Box::default(),
        }
    }

    pub fn is_user(&self) -> bool {
        self.user_id.is_some()
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| &**r == role)
    }

    /// Whether the token lists `topic` (exactly, or by a `prefix*` pattern).
    pub fn token_allows(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => &**t == topic,
        })
    }
}

/// Why the server is closing a connection: the close code and reason sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

/// Close codes of our own (RFC 6455 leaves 4000–4999 to applications).
pub mod close_code {
    /// Disconnected by the server API.
    pub const DISCONNECTED: u16 = 4000;
    /// Authentication failed or did not happen in time.
    pub const AUTH_FAILED: u16 = 4001;
    /// Forbidden.
    pub const FORBIDDEN: u16 = 4003;
    /// Too many connections for this user.
    pub const TOO_MANY_CONNECTIONS: u16 = 4008;
    /// Slow consumer: the outbound queue passed its bound.
    pub const SLOW_CONSUMER: u16 = 4009;
    /// Rate limited.
    pub const RATE_LIMITED: u16 = 4029;

    /// The reason text sent with a server-initiated close.
    pub fn reason(code: u16) -> &'static str {
        match code {
            DISCONNECTED => "disconnected by server",
            AUTH_FAILED => "authentication failed",
            FORBIDDEN => "forbidden",
            TOO_MANY_CONNECTIONS => "too many connections for this user",
            SLOW_CONSUMER => "slow consumer",
            RATE_LIMITED => "rate limited",
            1001 => "going away",
            _ => "",
        }
    }
}

/// Frames waiting for the connection's task. Most bursts are one frame, so the first is
/// kept inline and the deque allocates only when a second frame queues behind it; an idle
/// connection holds no queue memory.
#[derive(Default)]
struct OutQueue {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
    /// Bytes queued (the bound is a `u32`: queues are capped far below 4 GiB).
    bytes: u32,
}

/// What the task takes from the queue to write.
#[derive(Debug)]
pub enum Outgoing {
    One(Bytes),
    Many(Vec<Bytes>),
}

/// The shared state of one connection.
pub struct ConnHandle {
    /// Shard-unique id (`shard << 48 | sequence`), also the wire `conn_id` once formatted.
    pub id: u64,
    /// The app this connection belongs to (index into the app table).
    pub app: u16,
    /// Must authenticate before the auth deadline (the sweeper closes it with 4001).
    pub needs_auth: Cell<bool>,
    /// The endpoint's ping interval in seconds (0 = the server's `--ping-interval`).
    pub ping_every: Cell<u16>,
    out: RefCell<OutQueue>,
    /// Bound on the queued bytes.
    max_out: u32,
    waker: Cell<Option<Waker>>,
    /// Close code requested (0 = none); the reason text follows from the code.
    close: Cell<u16>,
    /// Coarse shard clock (seconds) of the last frame received.
    pub last_rx: Cell<u32>,
    /// Whether a server ping is outstanding (sent since `last_rx`).
    pub ping_sent: Cell<bool>,
    /// Coarse shard clock (seconds) when the connection was accepted.
    pub created: u32,
    pub identity: RefCell<Option<Identity>>,
    /// Topics this connection joined (or is joining), including its personal topic.
    pub subs: RefCell<Vec<Arc<str>>>,
}

impl OutQueue {
    #[inline]
    fn push(&mut self, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }
}

impl ConnHandle {
    pub fn new(id: u64, app: u16, max_out: usize, now: u32) -> Self {
        let max_out = u32::try_from(max_out).unwrap_or(u32::MAX);
        ConnHandle {
            id,
            app,
            needs_auth: Cell::new(false),
            ping_every: Cell::new(0),
            out: RefCell::new(OutQueue::default()),
            max_out,
            waker: Cell::new(None),
            close: Cell::new(0),
            last_rx: Cell::new(now),
            ping_sent: Cell::new(false),
            created: now,
            identity: RefCell::new(None),
            subs: RefCell::new(Vec::new()),
        }
    }

    /// The connection id clients and the API see: `"{shard}-{sequence}"`.
    pub fn conn_id(&self) -> String {
        format_conn_id(self.id)
    }

    /// Queue a frame. Returns false when the frame was not queued (closing, or the
    /// connection just became a slow consumer and is being closed). Callers count
    /// delivered frames themselves (once per fan-out, not once per receiver).
    #[inline]
    pub fn push(&self, frame: Bytes, c: &ShardCounters) -> bool {
        if self.close.get() != 0 {
            ShardCounters::add(&c.queue_drops, 1);
            return false;
        }
        let mut q = self.out.borrow_mut();
        let n = (q.bytes as usize).saturating_add(frame.len());
        if n > self.max_out as usize {
            let dropped = q.first.take().is_some() as u64 + q.rest.len() as u64;
            *q = OutQueue::default();
            drop(q);
            ShardCounters::add(&c.slow_consumer_disconnects, 1);
            ShardCounters::add(&c.queue_drops, 1 + dropped);
            self.request_close(CloseReason {
                code: close_code::SLOW_CONSUMER,
                reason: "slow consumer",
            });
            return false;
        }
        q.bytes = n as u32;
        q.push(frame);
        drop(q);
        self.wake();
        true
    }

    /// Queue a frame even while closing (the close frame itself, replies before close).
    pub fn push_control(&self, frame: Bytes) {
        let mut q = self.out.borrow_mut();
        q.bytes = q
            .bytes
            .saturating_add(u32::try_from(frame.len()).unwrap_or(u32::MAX));
        q.push(frame);
        drop(q);
        self.wake();
    }

    /// Ask the connection task to close with this code (first request wins).
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get() == 0 {
            self.close.set(reason.code.max(1));
            self.wake();
        }
    }

    pub fn close_requested(&self) -> Option<CloseReason> {
        match self.close.get() {
            0 => None,
            code => Some(CloseReason {
                code,
                reason: close_code::reason(code),
            }),
        }
    }

    pub fn has_pending(&self) -> bool {
        self.out.borrow().first.is_some()
    }

    /// Take every pending frame, in order.
    pub fn take_pending(&self) -> Option<Outgoing> {
        let mut q = self.out.borrow_mut();
        let first = q.first.take()?;
        q.bytes = 0;
        if q.rest.is_empty() {
            return Some(Outgoing::One(first));
        }
        // The deque goes with the burst, so an idle connection keeps no capacity.
        let rest = std::mem::take(&mut q.rest);
        let mut all = Vec::with_capacity(rest.len() + 1);
        all.push(first);
        all.extend(rest);
        Some(Outgoing::Many(all))
    }

    pub fn set_waker(&self, w: &Waker) {
        let old = self.waker.take();
        match old {
            Some(o) if o.will_wake(w) => self.waker.set(Some(o)),
            _ => self.waker.set(Some(w.clone())),
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Shard index encoded in a connection id.
pub const SHARD_SHIFT: u32 = 48;

/// The shard that owns connection `id`.
pub fn shard_of(id: u64) -> usize {
    (id >> SHARD_SHIFT) as usize
}

/// This node's id in a fleet (Redis broker), set once at start; unset on a single node.
static NODE_ID: std::sync::OnceLock<Box<str>> = std::sync::OnceLock::new();

/// Set this node's fleet id (once, before serving). Connection ids then read
/// `"{node}-{shard}-{sequence}"`, so any node can tell which node holds a connection.
pub fn set_node_id(node: &str) -> bool {
    NODE_ID.set(node.into()).is_ok()
}

/// This node's fleet id, when it is part of one.
pub fn node_id() -> Option<&'static str> {
    NODE_ID.get().map(|n| &**n)
}

/// A valid node id: 1–32 letters, digits or `_` (no `-`, which separates id parts).
pub fn valid_node_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub fn format_conn_id(id: u64) -> String {
    let (shard, seq) = (id >> SHARD_SHIFT, id & ((1 << SHARD_SHIFT) - 1));
    match node_id() {
        Some(node) => format!("{node}-{shard}-{seq}"),
        None => format!("{shard}-{seq}"),
    }
}

/// Where a connection id points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRef<'a> {
    /// A connection of this node (numeric id).
    Local(u64),
    /// A connection held by another node of the fleet.
    Remote { node: &'a str, id: u64 },
}

/// Parse a wire connection id: `"{shard}-{sequence}"`, or `"{node}-{shard}-{sequence}"`
/// in a fleet. An id naming this node is `Local`; without a fleet only local ids exist.
pub fn parse_conn_ref(s: &str) -> Option<ConnRef<'_>> {
    parse_conn_ref_as(s, node_id())
}

fn parse_conn_ref_as<'a>(s: &'a str, me: Option<&str>) -> Option<ConnRef<'a>> {
    let (node, rest) = match s.split('-').count() {
        2 => (None, s),
        3 => {
            let (n, r) = s.split_once('-')?;
            (Some(n), r)
        }
        _ => return None,
    };
    let id = parse_conn_id(rest)?;
    match (node, me) {
        (None, _) => Some(ConnRef::Local(id)),
        (Some(n), Some(me)) if n == me => Some(ConnRef::Local(id)),
        (Some(n), Some(_)) if valid_node_id(n) => Some(ConnRef::Remote { node: n, id }),
        _ => None,
    }
}

/// Parse `"{shard}-{sequence}"` back into the numeric id.
pub fn parse_conn_id(s: &str) -> Option<u64> {
    let (a, b) = s.split_once('-')?;
    let shard: u64 = a.parse().ok()?;
    let seq: u64 = b.parse().ok()?;
    if shard >= 1 << (64 - SHARD_SHIFT) || seq >= 1 << SHARD_SHIFT {
        return None;
    }
    Some(shard << SHARD_SHIFT | seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keeps_order_and_forgets_capacity() {
        let c = ShardCounters::default();
        let h = ConnHandle::new(1, 0, 1 << 20, 0);
        assert!(h.take_pending().is_none());
        h.push(Bytes::from_static(b"a"), &c);
        assert!(matches!(h.take_pending(), Some(Outgoing::One(b)) if &b[..] == b"a"));
        for f in [&b"x"[..], b"y", b"z"] {
            h.push(Bytes::copy_from_slice(f), &c);
        }
        match h.take_pending() {
            Some(Outgoing::Many(v)) => {
                assert_eq!(v.iter().map(|b| b[0]).collect::<Vec<_>>(), b"xyz")
            }
            other => panic!("{other:?}"),
        }
        assert!(!h.has_pending());
        assert_eq!(h.out.borrow().rest.capacity(), 0);
    }

    #[test]
    fn conn_id_round_trip() {
        let id = 3u64 << SHARD_SHIFT | 77;
        assert_eq!(format_conn_id(id), "3-77");
        assert_eq!(parse_conn_id("3-77"), Some(id));
        assert_eq!(parse_conn_id("x-1"), None);
        assert_eq!(parse_conn_id("1"), None);
        assert_eq!(parse_conn_id("99999999-1"), None);
    }

    #[test]
    fn fleet_conn_ids_name_their_node() {
        let id = 1u64 << SHARD_SHIFT | 5;
        assert_eq!(parse_conn_ref_as("1-5", None), Some(ConnRef::Local(id)));
        assert_eq!(parse_conn_ref_as("a1-1-5", None), None);
        assert_eq!(
            parse_conn_ref_as("a1-1-5", Some("a1")),
            Some(ConnRef::Local(id))
        );
        assert_eq!(
            parse_conn_ref_as("b2-1-5", Some("a1")),
            Some(ConnRef::Remote { node: "b2", id })
        );
        assert_eq!(parse_conn_ref_as("b.2-1-5", Some("a1")), None);
        assert_eq!(parse_conn_ref_as("b2-1-5-6", Some("a1")), None);
        assert_eq!(parse_conn_ref_as("b2-x-5", Some("a1")), None);
        assert!(valid_node_id("node_7") && !valid_node_id("") && !valid_node_id("a-b"));
    }

    #[test]
    fn slow_consumer_drops_queue_and_requests_close() {
        let c = ShardCounters::default();
        let h = ConnHandle::new(1, 0, 100, 0);
        assert!(h.push(Bytes::from(vec![0; 60]), &c));
        assert!(h.has_pending());
        assert!(!h.push(Bytes::from(vec![0; 60]), &c));
        assert!(!h.has_pending(), "queue dropped at once");
        assert_eq!(h.close_requested().unwrap().code, close_code::SLOW_CONSUMER);
        assert!(
            !h.push(Bytes::from_static(b"x"), &c),
            "nothing queued after close"
        );
        assert_eq!(ShardCounters::get(&c.slow_consumer_disconnects), 1);
    }
}
