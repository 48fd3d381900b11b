//! The [`Broker`]: what a node tells the rest of the fleet, and how it hears back.
//!
//! Inside one node, shards reach each other through the mesh (`runtime::mesh`); the broker
//! is the node's edge. Every publish, broadcast or direct send made on this node is also
//! handed to the broker, and each shard tells the broker when it gains its first (or loses
//! its last) subscriber of a topic so the broker follows interest. The embedded
//! [`memory::MemoryBroker`] serves a single node: there is no one else to tell, so it
//! forwards nothing. [`fleet::RedisBroker`] joins nodes through Redis, on the batched,
//! reconnecting link in [`redis`].
pub mod fleet;
pub mod memory;
pub mod redis;

use bytes::Bytes;
use std::sync::Arc;

pub use self::redis::LinkError;

/// What was published on this node, for the broker to carry to other nodes.
#[derive(Debug, Clone, Copy)]
pub enum Outbound<'a> {
    /// A frame for a topic's subscribers (`topic` is the scoped hub key).
    Topic { topic: &'a str, frame: &'a Bytes },
    /// A frame for every connection of one app (`Some(index)`) or of every app.
    Broadcast { app: Option<u16>, frame: &'a Bytes },
    /// A frame for one connection held by another node.
    Conn {
        node: &'a str,
        id: u64,
        frame: &'a Bytes,
    },
    /// Close a user's connections on the other nodes (`topic`: the user's personal
    /// topic key).
    DisconnectUser { topic: &'a str, code: u16 },
    /// Close one connection held by another node.
    DisconnectConn { node: &'a str, id: u64, code: u16 },
}

/// Broker health for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Degraded,
}

pub trait Broker: Send + Sync + 'static {
    /// Short name for logs and `/health` (`memory`, `redis`).
    fn name(&self) -> &'static str;
    /// Carry a message published on this node to the other nodes. Fails (at once,
    /// without blocking) when the other nodes cannot be reached now.
    fn forward(&self, msg: Outbound<'_>) -> Result<(), LinkError>;
    /// Shard `shard` now has (`add`) or no longer has subscribers of `topic` (scoped
    /// key). Returns true when the broker will confirm an `add` later with an
    /// `InterestAck { topic, gen }` to that shard's queue, once the other nodes route
    /// the topic here; false when the subscription is as live as it gets now.
    fn interest(&self, shard: usize, topic: &Arc<str>, add: bool, gen: u64) -> bool;
    fn health(&self) -> Health;
    /// The Redis broker, when this node is part of a fleet (presence queries).
    fn fleet(&self) -> Option<&fleet::RedisBroker> {
        None
    }
}
