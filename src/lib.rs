//! ringcast: a realtime WebSocket edge server — io_uring, thread-per-core, zero-copy fan-out.
//!
//! # Layout
//! - [`cli`]: command line (clap) and the commands it runs.
//! - [`config`]: the server's settings, built from flags and `RINGCAST_*` variables.
//! - [`runtime`]: shards (one pinned monoio runtime per core) and the mesh of queues between them.
//! - [`net`]: listeners, HTTP/1.1 parsing and routing, the WebSocket handshake and the connection task.
//! - [`ws`]: the RFC 6455 frame codec (no I/O).
//! - [`protocol`]: client messages (simd-json) and server messages encoded once into frames (no I/O).
//! - [`hub`]: per-shard state: connections, topics, interest of other shards, fan-out.
//! - [`broker`]: the `Broker` trait between a node and the rest of the fleet; the in-memory broker.
//! - [`api`]: the backend HTTP API under `/api/v1/`.
//! - [`metrics`]: per-shard counters, written by their shard only.
pub mod api;
pub mod broker;
pub mod cli;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod runtime;
pub mod ws;
