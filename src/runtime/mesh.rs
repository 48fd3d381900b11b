//! The mesh: one queue into each shard, the only thing shards share.
//!
//! A wake-up of a parked shard costs tens of microseconds on small VMs, so nothing is sent
//! one message at a time. Messages for another shard are gathered in a per-destination
//! `Vec` during the current tick and handed over as one batch by a flush task that runs at
//! the end of the tick: at most one queue operation and one wake-up per destination per
//! tick, however many messages were published. The receiving shard drains its whole queue
//! per wake.
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// Who a delivered frame is for, on the receiving shard.
#[derive(Debug, Clone)]
pub enum Target {
    /// Every local subscriber of the topic.
    Topic(Arc<str>),
    /// Every local protocol connection of one app, or of all apps (`None`).
    Broadcast(Option<u16>),
    /// One connection (by numeric id).
    Conn(u64),
}

/// A message between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// Write `frame` (already a complete WebSocket frame) to the local receivers of `target`.
    Deliver { target: Target, frame: Bytes },
    /// Shard `from` gained (`add`) or lost its first/last subscriber of `topic`.
    Interest {
        topic: Arc<str>,
        from: usize,
        add: bool,
        gen: u64,
    },
    /// Answer to an `Interest { add: true }`: the receiver now routes `topic` to the sender.
    InterestAck { topic: Arc<str>, gen: u64 },
    /// Close a connection (by numeric id) with the given code.
    Disconnect { conn: u64, code: u16 },
    /// A backend command from the Redis command channel (`ringcast:api:{app}`), JSON
    /// as in the HTTP API, to run on this node's connections.
    Api { app: u16, body: Bytes },
    /// The process is stopping: stop accepting and ask every connection to go away
    /// (Close 1001, so clients reconnect to another node).
    Drain,
}

/// The shard indices set in an interest mask, lowest first.
pub fn shards_in(mask: u64) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let shard = m.trailing_zeros() as usize;
        m &= m - 1;
        Some(shard)
    })
}

/// A batch: what one shard sends another per tick.
pub type Batch = Vec<ShardMsg>;

/// This shard's ends of the mesh.
pub struct Mesh {
    me: usize,
    senders: Vec<flume::Sender<Batch>>,
    outgoing: RefCell<Vec<Batch>>,
    flush_scheduled: Cell<bool>,
}

impl Mesh {
    pub fn new(me: usize, senders: Vec<flume::Sender<Batch>>) -> Rc<Self> {
        let n = senders.len();
        Rc::new(Mesh {
            me,
            senders,
            outgoing: RefCell::new((0..n).map(|_| Vec::new()).collect()),
            flush_scheduled: Cell::new(false),
        })
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Queue `msg` for shard `dst`; it leaves at the end of this tick with the others.
    pub fn send(self: &Rc<Self>, dst: usize, msg: ShardMsg) {
        debug_assert_ne!(dst, self.me, "a shard never sends to itself");
        self.outgoing.borrow_mut()[dst].push(msg);
        if !self.flush_scheduled.replace(true) {
            let me = self.clone();
            monoio::spawn(async move { me.flush() });
        }
    }

    /// Hand every gathered batch to its shard.
    pub fn flush(&self) {
        self.flush_scheduled.set(false);
        let mut out = self.outgoing.borrow_mut();
        for (dst, batch) in out.iter_mut().enumerate() {
            if !batch.is_empty() {
                // A send fails only when the destination shard has exited (shutdown).
                let _ = self.senders[dst].send(std::mem::take(batch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_in_lists_set_bits_lowest_first() {
        assert_eq!(super::shards_in(0).count(), 0);
        assert_eq!(super::shards_in(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(super::shards_in(1 << 63).collect::<Vec<_>>(), [63]);
    }
}
