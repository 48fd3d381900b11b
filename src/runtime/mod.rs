//! Threads and runtimes: one shard per core, each a pinned thread running its own monoio
//! runtime (io_uring; epoll only where io_uring is unavailable, and then it says so),
//! accepting on its own `SO_REUSEPORT` listener and owning its connections. This module is
//! the only place that creates threads; shards share nothing but the mesh queues, the
//! read-only config and their own counters.
pub mod mesh;
pub mod shard;

use anyhow::Context as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crate::app::App;
use crate::broker::fleet::{FleetConfig, RedisBroker};
use crate::broker::{memory::MemoryBroker, Broker};
use crate::config::Config;
use crate::hooks::HookClient;
use crate::metrics::ShardCounters;
use crate::presence::Presence;

/// Most shards: interest masks are one `u64`.
pub const MAX_SHARDS: usize = 64;

/// What every shard can see: read-only config and apps, everyone's counters, the
/// broker, the presence registry and the hook client.
pub struct Global {
    pub config: Config,
    /// The app table; a connection's `app` indexes it.
    pub apps: Vec<App>,
    pub counters: Vec<ShardCounters>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<Presence>,
    pub hooks: HookClient,
    /// Per-IP upgrade attempts in the current minute (connect path only).
    pub attempts: crate::net::limiter::AttemptLimiter,
    pub started: std::time::SystemTime,
}

impl Global {
    /// The app whose API key is `key`.
    pub fn app_by_key(&self, key: &str) -> Option<&App> {
        self.apps.iter().find(|a| {
            a.api_key
                .as_deref()
                .is_some_and(|k| crate::api::constant_time_eq(k.as_bytes(), key.as_bytes()))
        })
    }

    pub fn app_by_name(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| &*a.name == name)
    }
}

/// Bind one listener per shard on the same address with `SO_REUSEPORT`, so the kernel
/// spreads incoming connections across shards. With port 0 the first picks the port.
pub fn bind_listeners(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut addr = addr;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())
            .with_context(|| format!("binding {addr}"))?;
        // The kernel caps this at net.core.somaxconn; tuning/ raises it.
        s.listen(65535)?;
        let l: TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Run the server with the one app the flags describe.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let apps = vec![App::from_flags(&config).map_err(anyhow::Error::msg)?];
    serve_apps(config, apps)
}

/// The Redis broker, when the config names a Redis (or a cluster).
fn start_fleet(
    config: &Config,
    apps: &[App],
    presence: &Arc<Presence>,
) -> anyhow::Result<Option<RedisBroker>> {
    let cluster = !config.redis_cluster.is_empty();
    let url = match (&config.redis, cluster) {
        (None, false) => return Ok(None),
        (Some(_), true) => anyhow::bail!("set either --redis or --redis-cluster, not both"),
        (Some(u), false) => u.clone(),
        (None, true) => config.redis_cluster[0].clone(),
    };
    for u in std::iter::once(&url).chain(&config.redis_cluster) {
        crate::config::file::check_redis_url(u).map_err(|why| anyhow::anyhow!("redis: {why}"))?;
    }
    let node_id = match &config.node_id {
        Some(n) if crate::hub::conn::valid_node_id(n) => n.clone(),
        Some(n) => anyhow::bail!("node id \"{n}\": use 1-32 letters, digits or `_`"),
        None => random_node_id(),
    };
    crate::hub::conn::set_node_id(&node_id);
    let fc = FleetConfig {
        redis: crate::broker::redis::RedisConfig::new(url),
        cluster: cluster.then(|| config.redis_cluster.clone()),
        node_id,
        presence_ttl: config
            .presence_ttl
            .max(std::time::Duration::from_millis(300)),
        presence_flush: std::time::Duration::from_millis(10),
    };
    let b = RedisBroker::start(fc, apps, presence.clone()).context("starting the Redis broker")?;
    tracing::info!(node = b.node(), cluster, "fleet mode: Redis broker");
    Ok(Some(b))
}

/// SIGTERM/SIGINT: drain, then exit. Every shard stops accepting and asks its
/// connections to go away (Close 1001: clients reconnect elsewhere); once they are gone,
/// or after `drain_timeout`, a fleet node removes its presence from Redis (its users
/// vanish at once instead of after the TTL) and the process exits 0. A second signal
/// exits at once.
fn start_signal_thread(
    global: Arc<Global>,
    senders: Vec<flume::Sender<mesh::Batch>>,
    fleet: Option<RedisBroker>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("ringcast-signals".into())
        .spawn(move || {
            let mut forever = signals.forever();
            let Some(sig) = forever.next() else { return };
            std::thread::spawn(move || drain(sig, &global, &senders, fleet.as_ref()));
            if forever.next().is_some() {
                tracing::warn!("second signal: exiting now");
                std::process::exit(1);
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

fn drain(
    sig: i32,
    global: &Global,
    senders: &[flume::Sender<mesh::Batch>],
    fleet: Option<&RedisBroker>,
) -> ! {
    let timeout = global.config.drain_timeout;
    let open = || -> u64 {
        global
            .counters
            .iter()
            .map(|c| ShardCounters::get(&c.connections))
            .sum()
    };
    tracing::info!(signal = sig, connections = open(), ?timeout, "draining");
    for s in senders {
        let _ = s.send(vec![mesh::ShardMsg::Drain]);
    }
    let deadline = std::time::Instant::now() + timeout;
    while open() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left = open();
    if let Some(f) = fleet {
        f.leave(std::time::Duration::from_secs(2));
    }
    tracing::info!(left, "drained; exiting");
    std::process::exit(0)
}

fn random_node_id() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Run the server until the process is stopped.
pub fn serve_apps(config: Config, apps: Vec<App>) -> anyhow::Result<()> {
    let n = config.shards.clamp(1, MAX_SHARDS);
    let listeners = bind_listeners(config.listen, n)?;
    let addr = listeners[0].local_addr()?;
    if config.dev {
        tracing::warn!(
            "DEV MODE: anonymous connections and client publishing are allowed, the API needs no key, \
             /echo is open. Do not expose this server; use `ringcast serve` with a config in production."
        );
    }
    let presence = Arc::new(Presence::default());
    let fleet = start_fleet(&config, &apps, &presence)?;
    let broker: Arc<dyn Broker> = match &fleet {
        Some(f) => Arc::new(f.clone()),
        None => Arc::new(MemoryBroker),
    };
    let global = Arc::new(Global {
        apps,
        counters: (0..n).map(|_| ShardCounters::default()).collect(),
        broker,
        presence,
        hooks: HookClient::start().context("starting the hook thread")?,
        attempts: Default::default(),
        started: std::time::SystemTime::now(),
        config: Config {
            shards: n,
            ..config
        },
    });
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| flume::unbounded()).unzip();
    if let Some(f) = &fleet {
        f.attach(senders.clone());
    }
    start_signal_thread(global.clone(), senders.clone(), fleet.clone())?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut threads = Vec::with_capacity(n);
    for (id, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
        let global = global.clone();
        let senders = senders.clone();
        let core = if global.config.pin_cores && !cores.is_empty() {
            Some(cores[id % cores.len()])
        } else {
            None
        };
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(id, global, listener, senders, inbox, core))
            .context("spawning shard thread")?;
        threads.push(t);
    }
    tracing::info!(
        shards = n,
        broker = global.broker.name(),
        "listening on {addr}"
    );
    for t in threads {
        if t.join().is_err() {
            anyhow::bail!("a shard thread panicked");
        }
    }
    Ok(())
}
