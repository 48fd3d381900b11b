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
    pub broker: Box<dyn Broker>,
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
    let global = Arc::new(Global {
        apps,
        counters: (0..n).map(|_| ShardCounters::default()).collect(),
        broker: Box::new(MemoryBroker),
        presence: Arc::new(Presence::default()),
        hooks: HookClient::start().context("starting the hook thread")?,
        attempts: Default::default(),
        started: std::time::SystemTime::now(),
        config: Config {
            shards: n,
            ..config
        },
    });
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| flume::unbounded()).unzip();
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
