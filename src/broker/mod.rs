//! The [`Broker`]: what a node tells the rest of the fleet, and how it hears back.
//!
//! Inside one node, shards reach each other through the mesh (`runtime::mesh`); the broker
//! is the node's edge. Every publish, broadcast or direct send made on this node is also
//! handed to the broker, and the node tells the broker when it gains its first (or loses
//! its last) subscriber of a topic so the broker follows interest. The embedded
//! [`memory::MemoryBroker`] serves a single node: there is no one else to tell, so it
//! forwards nothing. [`redis`] holds the batched, reconnecting Redis link that the Redis
//! broker (implementing the same trait for a fleet) is being built on.
pub mod memory;
pub mod redis;

use bytes::Bytes;

/// What was published on this node, for the broker to carry to other nodes.
#[derive(Debug, Clone, Copy)]
pub enum Outbound<'a> {
    Topic { topic: &'a str, frame: &'a Bytes },
    Broadcast { frame: &'a Bytes },
    Conn { conn_id: &'a str, frame: &'a Bytes },
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
    /// Carry a message published on this node to the other nodes.
    fn forward(&self, msg: Outbound<'_>);
    /// This node now has (or no longer has) subscribers of `topic`.
    fn interest(&self, topic: &str, present: bool);
    fn health(&self) -> Health;
}
