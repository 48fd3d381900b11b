//! Command line: `ringcast` (no arguments = dev server on 127.0.0.1:8080) and
//! `ringcast serve [--dev] [--listen ADDR] [--shards N] ...`.
use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "ringcast", version, about = "Realtime WebSocket edge server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Dev mode: anonymous connections, client publish, demo page at `/`, `/echo`.
    #[arg(long, env = "RINGCAST_DEV")]
    pub dev: bool,
    /// Address to listen on (every shard binds it with SO_REUSEPORT).
    #[arg(long, env = "RINGCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Number of shards (default: available cores).
    #[arg(long, env = "RINGCAST_SHARDS")]
    pub shards: Option<usize>,
    /// API key required by /api/v1/ as `Authorization: apikey KEY`.
    #[arg(long, env = "RINGCAST_API_KEY")]
    pub api_key: Option<String>,
    /// Seconds between server pings.
    #[arg(long, env = "RINGCAST_PING_INTERVAL", default_value_t = 25)]
    pub ping_interval: u64,
    /// Seconds an unauthenticated connection may stay open.
    #[arg(long, env = "RINGCAST_AUTH_TIMEOUT", default_value_t = 10)]
    pub auth_timeout: u64,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    #[arg(long, env = "RINGCAST_MAX_OUTBOUND", default_value_t = 4 << 20)]
    pub max_outbound: usize,
    /// Largest client message in bytes.
    #[arg(long, env = "RINGCAST_MAX_MESSAGE", default_value_t = 1 << 20)]
    pub max_message: usize,
    /// Most topics one connection may join.
    #[arg(long, env = "RINGCAST_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    pub max_subscriptions: usize,
    /// Seconds a client has to send a complete HTTP request.
    #[arg(long, env = "RINGCAST_REQUEST_TIMEOUT", default_value_t = 10)]
    pub request_timeout: u64,
    /// Allowed Origin for WebSocket upgrades (repeatable; none = any origin).
    #[arg(
        long = "allowed-origin",
        env = "RINGCAST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Most simultaneous connections of one user (close 4008 beyond).
    #[arg(long, env = "RINGCAST_MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,
    /// Client messages per second per connection (token bucket rate).
    #[arg(long, env = "RINGCAST_MESSAGES_PER_SECOND", default_value_t = 50.0)]
    pub messages_per_second: f64,
    /// Client message burst per connection (token bucket size).
    #[arg(long, env = "RINGCAST_MESSAGE_BURST", default_value_t = 100.0)]
    pub message_burst: f64,
    /// WebSocket upgrade attempts per minute from one IP (HTTP 429 beyond).
    #[arg(long, env = "RINGCAST_CONNECT_RATE_PER_IP", default_value_t = 6000)]
    pub connect_attempts_per_ip_per_minute: u32,
    /// Do not pin shard threads to cores.
    #[arg(long, env = "RINGCAST_NO_PIN")]
    pub no_pin: bool,
}

impl ServeArgs {
    fn dev_default() -> Self {
        ServeArgs::parse_from_env_free(true)
    }

    fn parse_from_env_free(dev: bool) -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut args = Wrapper::parse_from(["ringcast"]).args;
        args.dev |= dev;
        args
    }

    pub fn into_config(self) -> Config {
        let d = Config::default();
        Config {
            listen: self.listen,
            shards: self.shards.unwrap_or(d.shards).max(1),
            dev: self.dev,
            api_key: self.api_key,
            ping_interval: Duration::from_secs(self.ping_interval.max(1)),
            auth_timeout: Duration::from_secs(self.auth_timeout.max(1)),
            max_outbound: self.max_outbound.max(64 * 1024),
            max_message: self.max_message.max(1024),
            max_frame: self.max_message.max(1024),
            max_subscriptions: self.max_subscriptions.max(1),
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            pin_cores: !self.no_pin,
            allowed_origins: self.allowed_origins,
            max_connections_per_user: self.max_connections_per_user.max(1),
            messages_per_second: self.messages_per_second.max(0.1),
            message_burst: self.message_burst.max(1.0),
            connect_attempts_per_ip_per_minute: self.connect_attempts_per_ip_per_minute.max(1),
            ..d
        }
    }
}

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RINGCAST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => crate::runtime::serve(ServeArgs::dev_default().into_config()),
        Some(Command::Serve(args)) => crate::runtime::serve(args.into_config()),
    }
}
