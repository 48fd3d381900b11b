//! The pub/sub connection: converges the server's subscriptions on the desired
//! set and hands incoming messages to `on_message`.
//!
//! Subscriptions are state, not a queue: callers edit the desired set and poke the
//! task, which sends one SUBSCRIBE / UNSUBSCRIBE / PSUBSCRIBE / PUNSUBSCRIBE per kind
//! for the whole difference (chunked), in one write, after letting a burst gather
//! for `subscribe_linger`. Churn between two syncs coalesces, memory is bounded by
//! the interest itself, and after a reconnect the whole set is simply sent again.
//! A periodic PING detects a silent dead peer.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::{timeout_at, Instant};

use super::conn::{self, Backoff, ConnError, Endpoint, Reader};
use super::stats::Stats;
use super::{guarded, lock, Incoming, RedisConfig, Shared, Sink};

/// Channels per SUBSCRIBE-family command, to keep single commands reasonable.
const CHUNK: usize = 1024;

enum End {
    Exit,
    Lost(ConnError),
}

/// What the server currently has (as far as we have told it).
#[derive(Default)]
struct Applied {
    channels: HashSet<String>,
    patterns: HashSet<String>,
}

pub(super) async fn run(
    sh: &Shared,
    ep: &Endpoint,
    cfg: &RedisConfig,
    sink: &dyn Sink,
) {
    let mut backoff = Backoff::new(cfg.reconnect_backoff_max);
    let mut connected_before = false;
    loop {
        if sh.closed() {
            return;
        }
        let (reader, writer) = match conn::connect(ep, false, cfg.io_timeout).await {
            Ok(c) => c,
            Err(e) => {
                Stats::inc(&sh.stats.connect_failures);
                tracing::debug!("redis pub/sub connection to {}:{}: {e}", ep.host, ep.port);
                sh.set_down(
                    &sh.sub_up,
                    format!("pub/sub connect to {}:{}: {e}", ep.host, ep.port),
                );
                let until = Instant::now() + backoff.next_delay();
                loop {
                    forget_dirty(sh);
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = sh.sub_notify.notified() => if sh.closed() { return },
                    }
                }
                continue;
            }
        };
        backoff.reset();
        if connected_before {
            Stats::inc(&sh.stats.reconnects);
        }
        connected_before = true;
        match serve(sh, cfg, reader, writer, sink).await {
            End::Exit => return,
            End::Lost(e) => {
                tracing::warn!("redis pub/sub connection lost: {e}");
                sh.set_down(&sh.sub_up, format!("pub/sub connection lost: {e}"));
                forget_dirty(sh);
                guarded("sink.lost", || sink.lost());
            }
        }
    }
}

/// While disconnected the change log is useless (a reconnect resends everything);
/// dropping it keeps it bounded through an outage.
fn forget_dirty(sh: &Shared) {
    let mut d = lock(&sh.desired);
    d.dirty_channels.clear();
    d.dirty_patterns.clear();
}

async fn serve(
    sh: &Shared,
    cfg: &RedisConfig,
    mut reader: Reader,
    mut writer: OwnedWriteHalf,
    sink: &dyn Sink,
) -> End {
    let mut applied = Applied::default();
    let mut wbuf = Vec::new();
    // Resubscribe everything, then report Up.
    if let Err(e) = sync(sh, cfg, &mut applied, &mut writer, &mut wbuf, true).await {
        return End::Lost(e);
    }
    sh.set_up(&sh.sub_up);
    tracing::info!(
        "redis pub/sub connection up, {} channels, {} patterns",
        applied.channels.len(),
        applied.patterns.len()
    );

    let ping_every = (cfg.io_timeout / 2).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_sent: Option<Instant> = None;
    let mut sync_at: Option<Instant> = None;
    loop {
        tokio::select! {
            // Unbiased: a flood of messages must not starve syncs or pings.
            _ = sh.sub_notify.notified() => {
                if sh.closed() {
                    return End::Exit;
                }
                // Let a burst of interest changes gather, then send it as one batch.
                sync_at.get_or_insert_with(|| Instant::now() + cfg.subscribe_linger);
            }
            _ = sleep_until_some(sync_at) => {
                sync_at = None;
                if let Err(e) = sync(sh, cfg, &mut applied, &mut writer, &mut wbuf, false).await {
                    return End::Lost(e);
                }
            }
            v = reader.next() => match v {
                Ok(v) => {
                    ping_sent = None;
                    deliver(sh, v, sink);
                    // Hand over everything already read, then let the sink flush once.
                    loop {
                        match reader.decode_buffered() {
                            Ok(Some(v)) => deliver(sh, v, sink),
                            Ok(None) => break,
                            Err(e) => return End::Lost(e),
                        }
                    }
                    guarded("sink.flush", || sink.flush());
                }
                Err(e) => return End::Lost(e),
            },
            _ = ticker.tick() => match ping_sent {
                Some(at) if at.elapsed() >= cfg.io_timeout => {
                    return End::Lost(ConnError::Timeout("waiting for pub/sub PING reply"));
                }
                Some(_) => {}
                None => {
                    let deadline = Instant::now() + cfg.io_timeout;
                    let ping = redis::cmd("PING").get_packed_command();
                    match timeout_at(deadline, writer.write_all(&ping)).await {
                        Ok(Ok(())) => ping_sent = Some(Instant::now()),
                        Ok(Err(e)) => return End::Lost(ConnError::Io(e)),
                        Err(_) => return End::Lost(ConnError::Timeout("writing PING")),
                    }
                }
            },
        }
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends the difference between the desired set and `applied` (everything when
/// `full`), in one write. The acknowledgements come back as pushes and are ignored.
async fn sync(
    sh: &Shared,
    cfg: &RedisConfig,
    applied: &mut Applied,
    writer: &mut OwnedWriteHalf,
    wbuf: &mut Vec<u8>,
    full: bool,
) -> Result<(), ConnError> {
    let (mut sub, mut unsub, mut psub, mut punsub) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    {
        let mut d = lock(&sh.desired);
        let dirty_channels = std::mem::take(&mut d.dirty_channels);
        let dirty_patterns = std::mem::take(&mut d.dirty_patterns);
        if full {
            sub.extend(d.channels.iter().cloned());
            psub.extend(d.patterns.iter().cloned());
        } else {
            diff(
                dirty_channels,
                &d.channels,
                &applied.channels,
                &mut sub,
                &mut unsub,
            );
            diff(
                dirty_patterns,
                &d.patterns,
                &applied.patterns,
                &mut psub,
                &mut punsub,
            );
        }
    }
    wbuf.clear();
    let mut sent = 0u64;
    for (verb, names) in [
        ("SUBSCRIBE", &sub),
        ("UNSUBSCRIBE", &unsub),
        ("PSUBSCRIBE", &psub),
        ("PUNSUBSCRIBE", &punsub),
    ] {
        // Never an empty (P)UNSUBSCRIBE: that would drop *everything*.
        for chunk in names.chunks(CHUNK) {
            let mut c = redis::cmd(verb);
            for name in chunk {
                c.arg(name.as_str());
            }
            c.write_packed_command(wbuf);
            sent += 1;
        }
    }
    if sent == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + cfg.io_timeout;
    match timeout_at(deadline, writer.write_all(wbuf)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(ConnError::Io(e)),
        Err(_) => return Err(ConnError::Timeout("writing subscriptions")),
    }
    sh.stats
        .subscription_commands
        .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
    for name in sub {
        applied.channels.insert(name);
    }
    for name in &unsub {
        applied.channels.remove(name);
    }
    for name in psub {
        applied.patterns.insert(name);
    }
    for name in &punsub {
        applied.patterns.remove(name);
    }
    if wbuf.capacity() > conn::SHRINK_ABOVE {
        *wbuf = Vec::new();
    }
    Ok(())
}

fn diff(
    dirty: HashSet<String>,
    desired: &HashSet<String>,
    applied: &HashSet<String>,
    add: &mut Vec<String>,
    remove: &mut Vec<String>,
) {
    for name in dirty {
        match (desired.contains(&name), applied.contains(&name)) {
            (true, false) => add.push(name),
            (false, true) => remove.push(name),
            _ => {}
        }
    }
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn string_of(v: Value) -> Option<String> {
    bytes_of(v).map(|b| {
        String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    })
}

/// A pub/sub push that matters to the sink.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push {
    Message(Incoming),
    /// Redis confirmed a SUBSCRIBE/SSUBSCRIBE of this channel.
    Subscribed(String),
}

/// Turns a pub/sub push into a [`Push`], taking the payload without copying.
/// (`redis::Msg` only lends the payload out, which would force a copy per message.)
pub(super) fn parse(v: Value) -> Option<Push> {
    let items = match v {
        Value::Array(items) => items,
        Value::Push { kind, data } => {
            let mut items = Vec::with_capacity(data.len() + 1);
            items.push(Value::BulkString(kind.to_string().into_bytes()));
            items.extend(data);
            items
        }
        _ => return None,
    };
    let mut it = items.into_iter();
    let kind = bytes_of(it.next()?)?;
    match (kind.as_slice(), it.len()) {
        (b"subscribe" | b"ssubscribe", 2) => Some(Push::Subscribed(string_of(it.next()?)?)),
        (b"message" | b"smessage", 2) => Some(Push::Message(Incoming::Message {
            channel: string_of(it.next()?)?,
            payload: Bytes::from(bytes_of(it.next()?)?),
        })),
        (b"pmessage", 3) => Some(Push::Message(Incoming::PMessage {
            pattern: string_of(it.next()?)?,
            channel: string_of(it.next()?)?,
            payload: Bytes::from(bytes_of(it.next()?)?),
        })),
        _ => None,
    }
}

fn deliver(sh: &Shared, v: Value, sink: &dyn Sink) {
    if let Value::ServerError(e) = &v {
        tracing::warn!("redis pub/sub error reply: {e}");
        return;
    }
    // Anything else is a (p)(un)subscribe ack or a pong; only subscribe acks matter.
    match parse(v) {
        Some(Push::Subscribed(channel)) => {
            guarded("sink.subscribed", || sink.subscribed(&channel));
        }
        Some(Push::Message(msg)) => {
            Stats::inc(&sh.stats.messages_received);
            guarded("sink.message", || sink.message(msg));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn parses_messages_and_subscribe_acks() {
        let m = parse(Value::Array(vec![
            bulk(b"message"),
            bulk(b"ch"),
            bulk(b"\x00hi"),
        ]));
        assert_eq!(
            m,
            Some(Push::Message(Incoming::Message {
                channel: "ch".into(),
                payload: Bytes::from_static(b"\x00hi")
            }))
        );
        let p = parse(Value::Array(vec![
            bulk(b"pmessage"),
            bulk(b"c*"),
            bulk(b"ch"),
            bulk(b"x"),
        ]));
        assert_eq!(
            p,
            Some(Push::Message(Incoming::PMessage {
                pattern: "c*".into(),
                channel: "ch".into(),
                payload: Bytes::from_static(b"x")
            }))
        );
        assert_eq!(
            parse(Value::Array(vec![
                bulk(b"subscribe"),
                bulk(b"ch"),
                Value::Int(1)
            ])),
            Some(Push::Subscribed("ch".into()))
        );
        assert_eq!(
            parse(Value::Array(vec![
                bulk(b"unsubscribe"),
                bulk(b"ch"),
                Value::Int(0)
            ])),
            None
        );
        assert_eq!(parse(Value::Array(vec![bulk(b"pong"), bulk(b"")])), None);
        assert_eq!(parse(Value::Int(3)), None);
        assert_eq!(
            parse(Value::Array(vec![bulk(b"message"), bulk(b"ch")])),
            None
        );
    }

    #[test]
    fn diff_only_touches_dirty_names() {
        let desired: HashSet<String> = ["a", "b"].map(String::from).into();
        let applied: HashSet<String> = ["b", "c", "d"].map(String::from).into();
        let dirty: HashSet<String> = ["a", "c", "x"].map(String::from).into();
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        diff(dirty, &desired, &applied, &mut add, &mut remove);
        assert_eq!(add, vec!["a".to_string()]);
        assert_eq!(remove, vec!["c".to_string()]);
    }
}
