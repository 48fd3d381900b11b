//! Server settings. Built once from the command line (and `RINGCAST_*` environment
//! variables through clap) and shared read-only by every shard behind an `Arc`.
pub mod file;

use std::net::SocketAddr;
use std::time::Duration;

/// Everything a shard needs to know to serve; immutable after start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every shard's `SO_REUSEPORT` listener binds to.
    pub listen: SocketAddr,
    /// Number of shards (threads, each pinned to a core).
    pub shards: usize,
    /// Dev mode: anonymous connections, client publish, the demo page and `/echo`.
    pub dev: bool,
    /// API key for `/api/v1/` (`Authorization: apikey KEY`); `None` in dev mode = open.
    pub api_key: Option<String>,
    /// Key that acts on every app through the API.
    pub admin_key: Option<String>,
    /// Interval between server pings to an idle connection.
    pub ping_interval: Duration,
    /// How long an unauthenticated connection may stay before close 4001.
    pub auth_timeout: Duration,
    /// Largest single frame a client may send.
    pub max_frame: usize,
    /// Largest (reassembled) message a client may send on the protocol endpoint.
    pub max_message: usize,
    /// Largest message on the dev `/echo` endpoint (Autobahn's 9.* cases send 16 MiB).
    pub echo_max_message: usize,
    /// Bytes queued for one connection beyond which it is a slow consumer and is closed.
    pub max_outbound: usize,
    /// Most topics one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Limit on request line + headers of an HTTP request.
    pub max_header_bytes: usize,
    /// Limit on the body of an API request.
    pub max_body_bytes: usize,
    /// Time a client has to send a complete HTTP request (slowloris guard).
    pub request_timeout: Duration,
    /// Pin each shard's thread to a core.
    pub pin_cores: bool,
    /// Allowed `Origin` values for the flag-configured app; empty = any.
    pub allowed_origins: Vec<String>,
    /// Most simultaneous connections of one user (close 4008 beyond).
    pub max_connections_per_user: usize,
    /// Client messages per second per connection (token bucket rate).
    pub messages_per_second: f64,
    /// Token bucket size.
    pub message_burst: f64,
    /// WebSocket upgrade attempts per minute from one IP address (429 beyond).
    pub connect_attempts_per_ip_per_minute: u32,
    /// JWT keys for the flag-configured app.
    pub jwt: file::JwtConfig,
    /// Redis URL: run as one node of a fleet sharing this Redis (`None`: one node,
    /// in-memory broker).
    pub redis: Option<String>,
    /// Redis Cluster seed URLs (sharded pub/sub); exclusive with `redis`.
    pub redis_cluster: Vec<String>,
    /// This node's id in the fleet (default: random).
    pub node_id: Option<String>,
    /// Presence entries in Redis expire this long after the node's last refresh.
    pub presence_ttl: Duration,
    /// On SIGTERM, how long connections get to go away before the process exits.
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            dev: true,
            api_key: None,
            admin_key: None,
            ping_interval: Duration::from_secs(25),
            auth_timeout: Duration::from_secs(10),
            max_frame: 1 << 20,
            max_message: 1 << 20,
            echo_max_message: 16 << 20,
            max_outbound: 4 << 20,
            max_subscriptions: 1024,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            pin_cores: true,
            allowed_origins: Vec::new(),
            max_connections_per_user: 100,
            messages_per_second: 50.0,
            message_burst: 100.0,
            connect_attempts_per_ip_per_minute: 0,
            redis: None,
            redis_cluster: Vec::new(),
            node_id: None,
            presence_ttl: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            jwt: Default::default(),
        }
    }
}
