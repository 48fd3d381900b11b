//! Command line: `ringcast` (no arguments = dev server on 127.0.0.1:8080),
//! `ringcast serve [--dev] [--config FILE] [flags]`, `ringcast init`,
//! `ringcast check-config FILE`, `ringcast token --sub USER`.
use crate::app::App;
use crate::config::{file, Config};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    Serve(Box<ServeArgs>),
    /// Write a commented example config with fresh secrets (stdout, or --output FILE).
    Init {
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Validate a config file and explain every problem.
    CheckConfig { file: PathBuf },
    /// Mint an HS256 token for the configured secret (a dev helper).
    Token(TokenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Dev mode: anonymous connections, client publish, demo page at `/`, `/echo`.
    #[arg(long, env = "RINGCAST_DEV")]
    pub dev: bool,
    /// Config file (apps, endpoints, namespaces, limits, hooks). Flags below then
    /// override its server settings; the app flags apply only without a file.
    #[arg(long, short, env = "RINGCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (every shard binds it with SO_REUSEPORT). Default 127.0.0.1:8080.
    #[arg(long, env = "RINGCAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Number of shards (default: available cores).
    #[arg(long, env = "RINGCAST_SHARDS")]
    pub shards: Option<usize>,
    /// API key required by /api/v1/ as `Authorization: apikey KEY`.
    #[arg(long, env = "RINGCAST_API_KEY")]
    pub api_key: Option<String>,
    /// Key that acts on every app through the API.
    #[arg(long, env = "RINGCAST_ADMIN_KEY")]
    pub admin_key: Option<String>,
    /// HS256 secret for client tokens.
    #[arg(long, env = "RINGCAST_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// RS256 or ES256 public key (PEM file) for client tokens.
    #[arg(long, env = "RINGCAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Expected `aud` claim.
    #[arg(long, env = "RINGCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Expected `iss` claim.
    #[arg(long, env = "RINGCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
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
    /// Client messages per second per connection (token bucket rate). Default 50, and
    /// unlimited in dev mode (so load tests of a dev server measure the server).
    #[arg(long, env = "RINGCAST_MESSAGES_PER_SECOND")]
    pub messages_per_second: Option<f64>,
    /// Client message burst per connection (token bucket size).
    #[arg(long, env = "RINGCAST_MESSAGE_BURST", default_value_t = 100.0)]
    pub message_burst: f64,
    /// WebSocket upgrade attempts per minute from one IP (HTTP 429 beyond; 0 = no limit).
    /// Behind a proxy every client shares the proxy's address: leave it 0 there.
    #[arg(long, env = "RINGCAST_CONNECT_RATE_PER_IP", default_value_t = 0)]
    pub connect_attempts_per_ip_per_minute: u32,
    /// Do not pin shard threads to cores.
    #[arg(long, env = "RINGCAST_NO_PIN")]
    pub no_pin: bool,
    /// Join a fleet through this Redis (`redis://[:password@]host:port[/db]`): every
    /// node using it behaves as one server.
    #[arg(long, env = "RINGCAST_REDIS")]
    pub redis: Option<String>,
    /// Join a fleet through a Redis Cluster (comma-separated seed URLs); topics use
    /// sharded pub/sub.
    #[arg(
        long = "redis-cluster",
        env = "RINGCAST_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis"
    )]
    pub redis_cluster: Vec<String>,
    /// This node's id in the fleet (letters, digits, `_`; default random). It is
    /// part of every connection id.
    #[arg(long, env = "RINGCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a node's presence lives in Redis without a refresh (e.g. `5s`): a
    /// crashed node's users vanish within it.
    #[arg(long, env = "RINGCAST_PRESENCE_TTL", value_parser = crate::config::file::parse_duration)]
    pub presence_ttl: Option<Duration>,
    /// On SIGTERM (or SIGINT), how long connections get to close (they are sent Close
    /// 1001 "going away") before the process exits, e.g. `10s`.
    #[arg(long, env = "RINGCAST_DRAIN_TIMEOUT", value_parser = crate::config::file::parse_duration)]
    pub drain_timeout: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    #[arg(long, default_value = "user")]
    pub user_type: String,
    /// A role (repeatable).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// An extra topic the token may join (repeatable; `prefix*` allowed).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Lifetime, e.g. `1h`, `30m`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Bind the token to an app (`app` claim).
    #[arg(long)]
    pub app: Option<String>,
    /// HS256 secret (else the config file's app secret).
    #[arg(long, env = "RINGCAST_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// Config file to take the secret from (first HS256 secret of `--app`, or the first app).
    #[arg(long, short, env = "RINGCAST_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ServeArgs {
    fn dev_default() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        let mut args = Wrapper::parse_from(["ringcast"]).args;
        args.dev = true;
        args
    }

    /// The server settings from flags alone (no file).
    pub fn into_config(self) -> anyhow::Result<Config> {
        let d = Config::default();
        let jwt = file::JwtConfig {
            hs256_secrets: self.jwt_secret.iter().cloned().collect(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            ..Default::default()
        };
        let jwt = match &self.jwt_public_key {
            None => jwt,
            Some(p) => with_public_key(jwt, p)?,
        };
        Ok(Config {
            listen: self.listen.unwrap_or(d.listen),
            shards: self.shards.unwrap_or(d.shards).max(1),
            dev: self.dev,
            api_key: self.api_key,
            admin_key: self.admin_key,
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
            messages_per_second: self
                .messages_per_second
                .unwrap_or(if self.dev { f64::INFINITY } else { 50.0 })
                .max(0.1),
            message_burst: self.message_burst.max(1.0),
            connect_attempts_per_ip_per_minute: self.connect_attempts_per_ip_per_minute,
            jwt,
            redis: self.redis,
            redis_cluster: self.redis_cluster,
            node_id: self.node_id,
            presence_ttl: self.presence_ttl.unwrap_or(d.presence_ttl),
            drain_timeout: self.drain_timeout.unwrap_or(d.drain_timeout),
            ..d
        })
    }
}

/// Put a public key file into the JWT settings as RS256 or ES256, whichever it is.
fn with_public_key(
    mut jwt: file::JwtConfig,
    path: &std::path::Path,
) -> anyhow::Result<file::JwtConfig> {
    use crate::auth::{KeySource, Verifier};
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if Verifier::new(
        vec![KeySource::Rs256PublicPem(pem.clone())],
        Default::default(),
    )
    .is_ok()
    {
        jwt.rs256_public_key_file = Some(path.to_owned());
    } else if Verifier::new(vec![KeySource::Es256PublicPem(pem)], Default::default()).is_ok() {
        jwt.es256_public_key_file = Some(path.to_owned());
    } else {
        anyhow::bail!(
            "{}: not an RSA (2048+ bits) or P-256 public key in PEM",
            path.display()
        );
    }
    Ok(jwt)
}

/// Logging to stdout; `RINGCAST_LOG` wins over the config file's `server.log_level`.
pub fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let from_file = match &cli.command {
        Some(Command::Serve(args)) => args
            .config
            .as_ref()
            .and_then(|p| file::load(p).ok())
            .map(|f| f.server.log_level),
        _ => None,
    };
    let filter = EnvFilter::try_from_env("RINGCAST_LOG")
        .or_else(|_| EnvFilter::try_new(from_file.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => crate::runtime::serve(ServeArgs::dev_default().into_config()?),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Init { output }) => init(output),
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Token(args)) => token(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else {
        return crate::runtime::serve(args.into_config()?);
    };
    let fc = load_checked(&path)?;
    if let Some(a) = &fc.server.admin_listen {
        anyhow::bail!("server.admin_listen ({a}) is not supported yet; remove it to serve the API on `listen`");
    }
    let mut config = Config {
        listen: fc
            .server
            .listen
            .parse()
            .with_context(|| format!("server.listen `{}`", fc.server.listen))?,
        shards: if fc.server.shards == 0 {
            Config::default().shards
        } else {
            fc.server.shards
        },
        dev: fc.server.dev,
        admin_key: fc.server.admin_key.clone(),
        ..args.clone().into_config()?
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if config.redis.is_none() && config.redis_cluster.is_empty() {
        config.redis = fc.server.redis.clone();
        config.redis_cluster = fc.server.redis_cluster.clone();
    }
    if config.node_id.is_none() {
        config.node_id = fc.server.node_id.clone();
    }
    if args.presence_ttl.is_none() {
        config.presence_ttl = fc.server.presence_ttl;
    }
    if let Some(s) = args.shards {
        config.shards = s.max(1);
    }
    config.dev |= args.dev;
    if args.admin_key.is_some() {
        config.admin_key = args.admin_key;
    }
    let apps = fc
        .apps
        .iter()
        .enumerate()
        .map(|(i, (name, app))| App::from_config(i as u16, name, app.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    tracing::info!(config = %path.display(), apps = apps.len(), "config loaded");
    crate::runtime::serve_apps(config, apps)
}

/// Load a config file, apply `RINGCAST_*` overrides, and validate it.
fn load_checked(path: &std::path::Path) -> anyhow::Result<file::FileConfig> {
    let mut fc = file::load(path)?;
    fc.apply_env(std::env::vars())?;
    if let Err(problems) = fc.validate() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        anyhow::bail!(
            "{} has {} problem(s):\n{}",
            path.display(),
            problems.len(),
            list.join("\n")
        );
    }
    if fc.apps.len() > usize::from(u16::MAX) {
        anyhow::bail!("too many apps");
    }
    Ok(fc)
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let fc = load_checked(path)?;
    for (i, (name, app)) in fc.apps.iter().enumerate() {
        App::from_config(i as u16, name, app.clone()).map_err(anyhow::Error::msg)?;
    }
    println!("{}: OK ({} app(s))", path.display(), fc.apps.len());
    Ok(())
}

fn init(output: Option<PathBuf>) -> anyhow::Result<()> {
    let mut secret = || {
        use base64::Engine as _;
        let bytes: [u8; 32] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let text = file::example(&mut secret);
    match output {
        Some(p) => {
            if p.exists() {
                anyhow::bail!("{} exists; not overwriting it", p.display());
            }
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {}; run `ringcast serve --config {}`",
                p.display(),
                p.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = match (&args.jwt_secret, &args.config) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => {
            let fc = load_checked(path)?;
            let app = match &args.app {
                Some(a) => fc
                    .apps
                    .get(a)
                    .with_context(|| format!("no app `{a}` in {}", path.display()))?,
                None => fc.apps.values().next().context("the config has no apps")?,
            };
            app.jwt
                .hs256_secrets
                .first()
                .cloned()
                .context("that app has no HS256 secret")?
        }
        (None, None) => anyhow::bail!("give --jwt-secret (or RINGCAST_JWT_SECRET) or --config"),
    };
    let ttl = file::parse_duration(&args.ttl).map_err(anyhow::Error::msg)?;
    let t = crate::auth::mint_hs256(
        secret.as_bytes(),
        &args.sub,
        &args.user_type,
        &args.roles,
        &args.topics,
        args.app.as_deref(),
        ttl,
    )?;
    println!("{t}");
    Ok(())
}
