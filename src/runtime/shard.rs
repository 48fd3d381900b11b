//! One shard: a monoio runtime on a pinned thread, with its accept loop, its hub, the task
//! that drains its mesh inbox, and a once-a-second sweeper for pings and auth deadlines.
use bytes::{Bytes, BytesMut};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mesh::{Batch, Mesh, ShardMsg};
use super::Global;
use crate::hub::{conn::SHARD_SHIFT, CloseReason, Hub};
use crate::metrics::ShardCounters;
use crate::ws;
use std::future::Future as _;

/// io_uring submission queue entries per shard: room for a burst of writes to thousands
/// of connections in one `io_uring_enter`.
const RING_ENTRIES: u32 = 4096;

/// Pause after an accept error such as `EMFILE` before accepting again: long enough for
/// connections to close and free descriptors, short enough to be invisible to clients.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Everything one shard owns. Lives in an `Rc` on its thread; never crosses threads.
pub struct Shard {
    pub id: usize,
    pub global: Arc<Global>,
    pub hub: RefCell<Hub>,
    pub mesh: Rc<Mesh>,
    /// The shard's read buffer, shared by all its connections in turn.
    pub read_buf: RefCell<BytesMut>,
    /// Scratch space for simd-json, which parses in place.
    pub scratch: RefCell<Vec<u8>>,
    next_seq: Cell<u64>,
    start: Instant,
    /// The ping frame every connection is sent, encoded once.
    pub ping_frame: Bytes,
    /// Tells the accept loop to stop (the process is draining).
    stop_accepting: flume::Sender<()>,
}

impl Shard {
    pub fn config(&self) -> &crate::config::Config {
        &self.global.config
    }

    pub fn counters(&self) -> &ShardCounters {
        &self.global.counters[self.id]
    }

    /// Coarse clock: whole seconds since the shard started.
    pub fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }

    /// Milliseconds since the shard started (wraps after 49 days; used for differences).
    pub fn now_ms(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    pub fn next_conn_id(&self) -> u64 {
        let s = self.next_seq.get() + 1;
        self.next_seq.set(s);
        (self.id as u64) << SHARD_SHIFT | s
    }
}

pub fn run(
    id: usize,
    global: Arc<Global>,
    listener: std::net::TcpListener,
    senders: Vec<flume::Sender<Batch>>,
    inbox: flume::Receiver<Batch>,
    core: Option<core_affinity::CoreId>,
) {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(shard = id, "could not pin to core {}", core.id);
        }
    }
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(shard = id, "cannot build runtime: {e}");
            std::process::exit(1);
        }
    };
    let driver = match &rt {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll (legacy fallback: io_uring unavailable)",
    };
    if matches!(rt, monoio::FusionRuntime::Legacy(_)) {
        tracing::warn!(
            shard = id,
            "io_uring is unavailable; using the epoll fallback driver"
        );
    }
    tracing::info!(
        shard = id,
        core = core.map(|c| c.id),
        driver,
        "shard started"
    );
    let (stop_accepting, stop_rx) = flume::bounded(1);
    rt.block_on(async move {
        let shard = Rc::new(Shard {
            id,
            hub: RefCell::new(Hub::new(id, global.presence.clone(), global.broker.clone())),
            mesh: Mesh::new(id, senders),
            read_buf: RefCell::new(BytesMut::with_capacity(64 * 1024)),
            scratch: RefCell::new(Vec::with_capacity(4096)),
            next_seq: Cell::new(0),
            start: Instant::now(),
            ping_frame: ws::encode_frame(ws::OpCode::Ping, b""),
            stop_accepting,
            global,
        });
        monoio::spawn(drain_inbox(shard.clone(), inbox));
        monoio::spawn(sweep(shard.clone()));
        accept_loop(shard, listener, stop_rx).await;
        // Draining: keep serving the connections until the process exits.
        std::future::pending::<()>().await;
    });
}

async fn accept_loop(shard: Rc<Shard>, listener: std::net::TcpListener, stop: flume::Receiver<()>) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = shard.id, "cannot register listener: {e}");
            std::process::exit(1);
        }
    };
    let mut last_warn: Option<Instant> = None;
    // One stop future for the life of the loop, not one per accepted socket.
    let mut stopped = std::pin::pin!(stop.recv_async());
    loop {
        let next = {
            let mut accept = std::pin::pin!(listener.accept());
            std::future::poll_fn(|cx| {
                if stopped.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(None);
                }
                accept.as_mut().poll(cx).map(Some)
            })
            .await
        };
        let Some(next) = next else {
            // Dropping the listener closes this shard's socket: the kernel sends new
            // connections to the shards (or processes) still listening.
            tracing::info!(shard = shard.id, "draining: no longer accepting");
            return;
        };
        match next {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                ShardCounters::add(&shard.counters().accepted, 1);
                monoio::spawn(crate::net::serve_connection(shard.clone(), stream, peer));
            }
            Err(e) => {
                ShardCounters::add(&shard.counters().accept_errors, 1);
                // EMFILE/ENFILE/ENOBUFS/ENOMEM: out of descriptors or memory. Back off and
                // keep serving the connections we have; warn at most once a second.
                let resource = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(shard = shard.id, "accept failed: {e}; backing off");
                    last_warn = Some(Instant::now());
                }
                if resource {
                    monoio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// Apply every batch other shards sent; one wake drains the whole queue.
async fn drain_inbox(shard: Rc<Shard>, inbox: flume::Receiver<Batch>) {
    while let Ok(batch) = inbox.recv_async().await {
        let c = shard.counters();
        let mut hub = shard.hub.borrow_mut();
        let mut apply = |b: Batch| {
            ShardCounters::add(&c.mesh_batches_in, 1);
            ShardCounters::add(&c.mesh_messages_in, b.len() as u64);
            for m in b {
                match m {
                    ShardMsg::Api { app, body } => {
                        monoio::spawn(crate::api::run_channel_command(shard.clone(), app, body));
                    }
                    ShardMsg::Drain => {
                        let _ = shard.stop_accepting.try_send(());
                        for h in hub.conns() {
                            h.request_close(crate::hub::CloseReason {
                                code: 1001,
                                reason: "going away",
                            });
                        }
                    }
                    m => hub.on_mesh(m, &shard.mesh, c),
                }
            }
        };
        apply(batch);
        while let Ok(b) = inbox.try_recv() {
            apply(b);
        }
    }
}

/// Once a second: ping connections that have been quiet for a ping interval, close those
/// that stayed quiet for another interval after the ping, and close connections that did
/// not authenticate in time. One task per shard instead of a timer per connection.
async fn sweep(shard: Rc<Shard>) {
    let ping_every = shard.config().ping_interval.as_secs().max(1) as u32;
    let auth_timeout = shard.config().auth_timeout.as_secs().max(1) as u32;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let now = shard.now();
        if now.is_multiple_of(60) {
            shard.global.attempts.prune();
        }
        let hub = shard.hub.borrow();
        for h in hub.conns() {
            let quiet = now.saturating_sub(h.last_rx.get());
            let ping_every = match h.ping_every.get() {
                0 => ping_every,
                n => u32::from(n),
            };
            if h.ping_sent.get() && quiet >= 2 * ping_every {
                h.request_close(CloseReason {
                    code: ws::close::GOING_AWAY,
                    reason: "ping timeout",
                });
            } else if !h.ping_sent.get() && quiet >= ping_every {
                h.ping_sent.set(true);
                h.push_control(shard.ping_frame.clone());
            }
            if h.needs_auth.get() && now.saturating_sub(h.created) >= auth_timeout {
                h.request_close(CloseReason {
                    code: crate::hub::conn::close_code::AUTH_FAILED,
                    reason: "authentication timeout",
                });
            }
        }
    }
}
