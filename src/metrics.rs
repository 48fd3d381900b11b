//! Per-shard counters. Each shard writes only its own [`ShardCounters`] (relaxed atomics,
//! one cache line apart so shards never share a line); readers (stats API, `/metrics`)
//! sum them. Nothing on the message path takes a lock or contends.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters owned by one shard.
#[derive(Default, Debug)]
#[repr(align(128))]
pub struct ShardCounters {
    /// WebSocket connections currently open (protocol and echo endpoints).
    pub connections: AtomicU64,
    /// Topic memberships currently held by this shard's connections.
    pub subscriptions: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Client messages received (data frames after reassembly).
    pub messages_in: AtomicU64,
    /// Frames queued to clients.
    pub messages_out: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_out: AtomicU64,
    /// Connections closed because their outbound queue exceeded its bound.
    pub slow_consumer_disconnects: AtomicU64,
    /// Frames dropped because their connection was closing.
    pub queue_drops: AtomicU64,
    /// Accept errors (EMFILE and others) that were backed off.
    pub accept_errors: AtomicU64,
    /// Batches received from other shards.
    pub mesh_batches_in: AtomicU64,
    /// Messages inside those batches.
    pub mesh_messages_in: AtomicU64,
    /// Commands from the Redis command channel that failed (bad JSON, invalid command).
    pub api_channel_errors: AtomicU64,
}

impl ShardCounters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    #[inline]
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
    #[inline]
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
