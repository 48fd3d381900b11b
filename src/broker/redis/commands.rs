//! The command connection: drains the submission queue into pipelines.
//!
//! One pipeline is in flight at a time. As soon as the queue has work and nothing
//! is in flight, everything queued (up to `max_batch`) is encoded into one buffer,
//! written with one `write`, and its replies are read and matched in order. Work
//! that arrives meanwhile waits in the bounded queue and forms the next pipeline,
//! so batch size adapts to load with no timer on the light-load path. While the
//! connection is down this loop keeps draining the queue, failing each submission
//! with `Down` at once, so nothing accumulates during an outage.

use std::collections::VecDeque;
use std::time::Instant;

use redis::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::timeout_at;

use super::cluster::redirect;
use super::conn::{self, Backoff, ConnError, Endpoint, Reader, SHRINK_ABOVE};
use super::stats::Stats;
use super::{guarded, lock, LinkError, Op, RedisConfig, Shared};

/// Fails one submission: publishes are counted as dropped, command callers get `err`.
pub(super) fn fail_op(sh: &Shared, op: Op, err: LinkError) {
    match op {
        Op::Publish { .. } => Stats::inc(&sh.stats.publish_drops),
        Op::Commands { reply, .. } => {
            Stats::inc(&sh.stats.command_failures);
            let _ = reply.send(Err(err));
        }
    }
}

/// What a written command is waiting for.
enum Slot {
    Publish,
    Commands {
        n: usize,
        got: Vec<Value>,
        reply: flume::Sender<Result<Vec<Value>, LinkError>>,
        raw: bool,
    },
}

fn fail_slots(sh: &Shared, slots: &mut VecDeque<Slot>) {
    for slot in slots.drain(..) {
        match slot {
            Slot::Publish => Stats::inc(&sh.stats.publish_drops),
            Slot::Commands { reply, .. } => {
                Stats::inc(&sh.stats.command_failures);
                let _ = reply.send(Err(LinkError::Down));
            }
        }
    }
}

/// Why the connected phase ended.
enum End {
    /// Shutdown or every sender dropped: leave the thread.
    Exit,
    Lost(ConnError),
}

/// Connect / serve / reconnect until shutdown.
pub(super) async fn run(sh: &Shared, rx: &flume::Receiver<Op>, ep: &Endpoint, cfg: &RedisConfig) {
    let mut backoff = Backoff::new(cfg.reconnect_backoff_max);
    let mut connected_before = false;
    loop {
        if sh.closed() {
            return;
        }
        let (reader, writer) = match conn::connect(ep, true, cfg.io_timeout).await {
            Ok(c) => c,
            Err(e) => {
                Stats::inc(&sh.stats.connect_failures);
                tracing::debug!("redis command connection to {}:{}: {e}", ep.host, ep.port);
                sh.set_down(
                    &sh.cmd_up,
                    format!("connect to {}:{}: {e}", ep.host, ep.port),
                );
                // Keep refusing queued work while we wait to retry.
                let until = tokio::time::Instant::now() + backoff.next_delay();
                if drain_until(sh, rx, until).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        if connected_before {
            Stats::inc(&sh.stats.reconnects);
        }
        connected_before = true;
        sh.set_up(&sh.cmd_up);
        tracing::info!("redis command connection up ({}:{})", ep.host, ep.port);
        let hooks = lock(&sh.hooks).clone();
        for hook in hooks {
            guarded("on_reconnect hook", || hook());
        }
        match serve(sh, rx, cfg, reader, writer).await {
            End::Exit => return,
            End::Lost(e) => {
                tracing::warn!("redis command connection lost: {e}");
                sh.set_down(&sh.cmd_up, format!("command connection lost: {e}"));
            }
        }
    }
}

/// Fails every submission that arrives until `until`; true when the link is closing.
async fn drain_until(sh: &Shared, rx: &flume::Receiver<Op>, until: tokio::time::Instant) -> bool {
    loop {
        tokio::select! {
            biased;
            _ = sh.close_notify.notified() => return true,
            _ = tokio::time::sleep_until(until) => return sh.closed(),
            op = rx.recv_async() => match op {
                Ok(op) => fail_op(sh, op, LinkError::Down),
                Err(_) => return true,
            },
        }
    }
}

async fn serve(
    sh: &Shared,
    rx: &flume::Receiver<Op>,
    cfg: &RedisConfig,
    mut reader: Reader,
    mut writer: OwnedWriteHalf,
) -> End {
    let mut batch: Vec<Op> = Vec::with_capacity(cfg.max_batch.min(4096));
    let mut slots: VecDeque<Slot> = VecDeque::with_capacity(cfg.max_batch.min(4096));
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // Idle: wait for work, but notice the server closing the socket meanwhile.
        let first = tokio::select! {
            biased;
            _ = sh.close_notify.notified() => return End::Exit,
            op = rx.recv_async() => match op {
                Ok(op) => op,
                Err(_) => return End::Exit,
            },
            r = reader.next() => return End::Lost(match r {
                Ok(v) => ConnError::Protocol(format!("unsolicited reply {v:?}")),
                Err(e) => e,
            }),
        };
        if sh.closed() {
            fail_op(sh, first, LinkError::Closed);
            return End::Exit;
        }
        batch.push(first);
        if !cfg.flush_interval.is_zero() {
            let deadline = tokio::time::Instant::now() + cfg.flush_interval;
            while batch.len() < cfg.max_batch {
                match timeout_at(deadline, rx.recv_async()).await {
                    Ok(Ok(op)) => batch.push(op),
                    _ => break,
                }
            }
        }
        while batch.len() < cfg.max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }

        // Encode the whole batch into one buffer.
        wbuf.clear();
        let mut commands = 0usize;
        let mut publishes = 0usize;
        for op in batch.drain(..) {
            match op {
                Op::Publish { channel, payload } => {
                    conn::encode_publish(&mut wbuf, sh.sharded, channel.as_bytes(), &payload);
                    slots.push_back(Slot::Publish);
                    publishes += 1;
                    commands += 1;
                }
                Op::Commands { cmds, reply, raw } => {
                    for c in &cmds {
                        c.write_packed_command(&mut wbuf);
                    }
                    commands += cmds.len();
                    slots.push_back(Slot::Commands {
                        n: cmds.len(),
                        got: Vec::with_capacity(cmds.len()),
                        reply,
                        raw,
                    });
                }
            }
        }

        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + cfg.io_timeout;
        let result = match timeout_at(deadline, writer.write_all(&wbuf)).await {
            Err(_) => Err(ConnError::Timeout("writing a pipeline")),
            Ok(Err(e)) => Err(ConnError::Io(e)),
            Ok(Ok(())) => {
                sh.stats.pipeline(commands, publishes);
                read_replies(sh, &mut reader, &mut slots, deadline).await
            }
        };
        if let Err(e) = result {
            fail_slots(sh, &mut slots);
            return End::Lost(e);
        }
        sh.stats.rtt(started.elapsed());
        if wbuf.capacity() > SHRINK_ABOVE {
            wbuf = Vec::with_capacity(64 * 1024);
        }
    }
}

/// Reads one reply per written command and completes the slots in order.
async fn read_replies(
    sh: &Shared,
    reader: &mut Reader,
    slots: &mut VecDeque<Slot>,
    deadline: tokio::time::Instant,
) -> Result<(), ConnError> {
    while let Some(front) = slots.front_mut() {
        let v = timeout_at(deadline, reader.next())
            .await
            .map_err(|_| ConnError::Timeout("waiting for pipeline replies"))??;
        match front {
            Slot::Publish => {
                if let Value::ServerError(e) = &v {
                    Stats::inc(&sh.stats.publish_errors);
                    // A SPUBLISH sent to a node that no longer owns the slot: the
                    // message is dropped (publishes are fire-and-forget), the slot map
                    // gets refreshed.
                    if let (Some(events), Some(r)) = (&sh.events, redirect(e)) {
                        events.moved(r.slot);
                    }
                }
                slots.pop_front();
            }
            Slot::Commands { n, got, .. } => {
                got.push(v);
                if got.len() == *n {
                    if let Some(Slot::Commands {
                        got, reply, raw, ..
                    }) = slots.pop_front()
                    {
                        let res = if raw { Ok(got) } else { finish(got) };
                        if res.is_err() {
                            Stats::inc(&sh.stats.command_failures);
                        }
                        let _ = reply.send(res);
                    }
                }
            }
        }
    }
    Ok(())
}

/// A unit's replies, or its first error reply.
pub(super) fn finish(got: Vec<Value>) -> Result<Vec<Value>, LinkError> {
    let single = got.len() == 1;
    for (i, v) in got.iter().enumerate() {
        if let Value::ServerError(e) = v {
            return Err(LinkError::Redis(if single {
                e.to_string()
            } else {
                format!("command {i}: {e}")
            }));
        }
    }
    Ok(got)
}
