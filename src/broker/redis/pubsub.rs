//! The pub/sub connection: converges the server's subscriptions on the desired
//! set and hands incoming messages to `on_message`.
//!
//! Subscriptions are state, not a queue: callers edit the desired set and poke the
//! task, which sends one SUBSCRIBE / UNSUBSCRIBE / PSUBSCRIBE / PUNSUBSCRIBE per kind
//! for the whole difference (chunked), in one write, after letting a burst gather
//! for `subscribe_linger`. Churn between two syncs coalesces, memory is bounded by
//! the interest itself, and after a reconnect the whole set is simply sent again.
//! A periodic PING detects a silent dead peer.
//!
//! Sharded mode (`RedisConfig::sharded`) sends SSUBSCRIBE/SUNSUBSCRIBE, one command
//! per hash slot (Redis answers CROSSSLOT otherwise), and, unlike plain pub/sub, the
//! server may refuse a subscription (MOVED: the slot lives elsewhere; CLUSTERDOWN...)
//! or drop one on its own (a `sunsubscribe` push when the slot moves away). So the
//! task keeps the written subscription commands in order ([`Track`]) to tell which
//! channels an error reply was about and to tell our own SUNSUBSCRIBE acks from the
//! server's, takes such channels out of the applied set, tells the cluster layer,
//! and resubscribes them after `RETRY` (by then the cluster layer has usually moved
//! them to their new owner, which makes the retry a no-op).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::{timeout_at, Instant};

use super::cluster::{key_slot, redirect};
use super::conn::{self, Backoff, ConnError, Endpoint, Reader};
use super::stats::Stats;
use super::{guarded, lock, Incoming, RedisConfig, Shared, Sink};

/// Channels per SUBSCRIBE-family command, to keep single commands reasonable.
const CHUNK: usize = 1024;

/// Sharded mode: delay before resubscribing a channel the server refused or dropped.
const RETRY: Duration = Duration::from_millis(250);

/// Sharded mode: an SSUBSCRIBE (`subscribe`) or SUNSUBSCRIBE written and not yet
/// fully answered; `left` are the channels whose ack has not arrived, in order.
struct PendingCmd {
    subscribe: bool,
    left: VecDeque<String>,
}

/// Sharded-mode bookkeeping of one pub/sub connection. Bounded: `pending` holds what
/// was written since the last replies (each channel of the interest at most a few
/// times), `retry` is a subset of the channels once applied.
#[derive(Default)]
struct Track {
    pending: VecDeque<PendingCmd>,
    retry: HashSet<String>,
    retry_at: Option<Instant>,
}

impl Track {
    fn retry(&mut self, channel: String) {
        self.retry.insert(channel);
        self.retry_at.get_or_insert_with(|| Instant::now() + RETRY);
    }
}

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

pub(super) async fn run(sh: &Shared, ep: &Endpoint, cfg: &RedisConfig, sink: &dyn Sink) {
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
    let mut track = Track::default();
    let mut wbuf = Vec::new();
    // Resubscribe everything, then report Up.
    if let Err(e) = sync(
        sh,
        cfg,
        &mut applied,
        &mut track,
        &mut writer,
        &mut wbuf,
        true,
    )
    .await
    {
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
                if let Err(e) = sync(sh, cfg, &mut applied, &mut track, &mut writer, &mut wbuf, false).await {
                    return End::Lost(e);
                }
            }
            _ = sleep_until_some(track.retry_at) => {
                // Channels the server refused or dropped: mark them changed, so the
                // sync resubscribes those still wanted (and not applied meanwhile).
                track.retry_at = None;
                let retry = std::mem::take(&mut track.retry);
                lock(&sh.desired).dirty_channels.extend(retry);
                if let Err(e) = sync(sh, cfg, &mut applied, &mut track, &mut writer, &mut wbuf, false).await {
                    return End::Lost(e);
                }
            }
            v = reader.next() => match v {
                Ok(v) => {
                    ping_sent = None;
                    deliver(sh, v, sink, &mut applied, &mut track);
                    // Hand over everything already read, then let the sink flush once.
                    loop {
                        match reader.decode_buffered() {
                            Ok(Some(v)) => deliver(sh, v, sink, &mut applied, &mut track),
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
/// `full`), in one write. The acknowledgements come back as pushes (see `deliver`).
async fn sync(
    sh: &Shared,
    cfg: &RedisConfig,
    applied: &mut Applied,
    track: &mut Track,
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
    if sh.sharded {
        // Patterns do not exist here (`psubscribe` refuses them).
        sent += encode_sharded(wbuf, track, "SSUBSCRIBE", &sub);
        sent += encode_sharded(wbuf, track, "SUNSUBSCRIBE", &unsub);
        psub.clear();
        punsub.clear();
    }
    let plain: &[(&str, &Vec<String>)] = if sh.sharded {
        &[]
    } else {
        &[
            ("SUBSCRIBE", &sub),
            ("UNSUBSCRIBE", &unsub),
            ("PSUBSCRIBE", &psub),
            ("PUNSUBSCRIBE", &punsub),
        ]
    };
    for &(verb, names) in plain {
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

/// Sharded mode: one `verb` command per hash slot (chunked), each remembered in
/// `track` to match its acks. Returns the number of commands.
fn encode_sharded(wbuf: &mut Vec<u8>, track: &mut Track, verb: &str, names: &[String]) -> u64 {
    let mut by_slot: HashMap<u16, Vec<&String>> = HashMap::new();
    for name in names {
        by_slot
            .entry(key_slot(name.as_bytes()))
            .or_default()
            .push(name);
    }
    let mut sent = 0;
    for names in by_slot.values() {
        for chunk in names.chunks(CHUNK) {
            let mut c = redis::cmd(verb);
            for name in chunk {
                c.arg(name.as_str());
            }
            c.write_packed_command(wbuf);
            track.pending.push_back(PendingCmd {
                subscribe: verb == "SSUBSCRIBE",
                left: chunk.iter().map(|n| (*n).clone()).collect(),
            });
            sent += 1;
        }
    }
    sent
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
    /// A `sunsubscribe` push: our SUNSUBSCRIBE's ack, or the server dropping the
    /// channel because its slot moved away.
    ShardUnsubscribed(String),
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
        (b"sunsubscribe", 2) => Some(Push::ShardUnsubscribed(string_of(it.next()?)?)),
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

fn deliver(sh: &Shared, v: Value, sink: &dyn Sink, applied: &mut Applied, track: &mut Track) {
    if let Value::ServerError(e) = &v {
        if sh.sharded {
            refused(sh, e, applied, track);
        } else {
            tracing::warn!("redis pub/sub error reply: {e}");
        }
        return;
    }
    // Anything else is a (p)(un)subscribe ack or a pong; only subscribe acks matter
    // (and, sharded, sunsubscribe pushes).
    match parse(v) {
        Some(Push::Subscribed(channel)) => {
            if sh.sharded {
                ack(track, true, &channel);
            }
            guarded("sink.subscribed", || sink.subscribed(&channel));
        }
        Some(Push::ShardUnsubscribed(channel)) => unsubscribed(sh, channel, applied, track),
        Some(Push::Message(msg)) => {
            Stats::inc(&sh.stats.messages_received);
            guarded("sink.message", || sink.message(msg));
        }
        None => {}
    }
}

/// Sharded mode: a `sunsubscribe` push that is not our SUNSUBSCRIBE's ack means the
/// server dropped the channel (its slot moved away): tell the cluster layer, retry.
fn unsubscribed(sh: &Shared, channel: String, applied: &mut Applied, track: &mut Track) {
    if ack(track, false, &channel) || !applied.channels.remove(&channel) {
        return;
    }
    tracing::debug!("redis: server dropped shard channel {channel:?}; retrying");
    if let Some(events) = &sh.events {
        events.unsubscribed(&channel);
    }
    track.retry(channel);
}

/// Sharded mode: counts off an ack of `channel` against the oldest pending
/// command of its kind; false when it was not one we were waiting for.
fn ack(track: &mut Track, subscribe: bool, channel: &str) -> bool {
    let Some(front) = track.pending.front_mut() else {
        return false;
    };
    if front.subscribe != subscribe {
        return false;
    }
    // Acks come in the order the channels were sent: the match is the first one.
    let Some(i) = front.left.iter().position(|c| c == channel) else {
        return false;
    };
    front.left.remove(i);
    if front.left.is_empty() {
        track.pending.pop_front();
    }
    true
}

/// Sharded mode: an error reply answers the oldest pending SSUBSCRIBE/SUNSUBSCRIBE
/// as a whole. Refused subscriptions leave the applied set and are retried.
fn refused(sh: &Shared, e: &redis::ServerError, applied: &mut Applied, track: &mut Track) {
    let moved = redirect(e);
    if let (Some(events), Some(r)) = (&sh.events, &moved) {
        events.moved(r.slot);
    }
    match track.pending.pop_front() {
        Some(PendingCmd {
            subscribe: true,
            left,
        }) => {
            if moved.is_some() {
                tracing::debug!("redis: SSUBSCRIBE refused ({e}); retrying");
            } else {
                tracing::warn!("redis: SSUBSCRIBE refused ({e}); retrying");
            }
            for channel in left {
                applied.channels.remove(&channel);
                track.retry(channel);
            }
        }
        // A SUNSUBSCRIBE refused (MOVED): the server has no such subscription.
        Some(_) => tracing::debug!("redis: SUNSUBSCRIBE refused: {e}"),
        None => tracing::warn!("redis pub/sub error reply: {e}"),
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
