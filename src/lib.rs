//! ringcast: a realtime WebSocket edge server — io_uring, thread-per-core, zero-copy fan-out.
//!
//! # Layout
//! - [`app`]: apps (tenants), their endpoints, namespaces and limits; topic scoping.
//! - [`auth`]: JWT verification (HS256/RS256/ES256), token extraction, minting.
//! - [`cli`]: command line (clap) and the commands it runs.
//! - [`config`]: the server's settings, built from flags and `RINGCAST_*` variables.
//! - [`runtime`]: shards (one pinned monoio runtime per core) and the mesh of queues between them.
//! - [`net`]: listeners, HTTP/1.1 parsing and routing, the WebSocket handshake and the connection task.
//! - [`ws`]: the RFC 6455 frame codec (no I/O).
//! - [`protocol`]: client messages (simd-json) and server messages encoded once into frames (no I/O).
//! - [`hub`]: per-shard state: connections, topics, interest of other shards, fan-out.
//! - [`broker`]: the `Broker` trait between a node and the rest of the fleet; the in-memory
//!   broker, the Redis link (one server or a cluster) and the Redis broker (`fleet`).
//! - [`api`]: the backend HTTP API under `/api/v1/`.
//! - [`hooks`]: signed HTTP calls to app backends, on their own thread.
//! - [`metrics`]: per-shard counters, written by their shard only.
//! - [`presence`]: node-wide registry of users, connections and topic subscribers.
pub mod api;
pub mod app;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod hooks;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod presence;
pub mod protocol;
pub mod runtime;
pub mod ws;
