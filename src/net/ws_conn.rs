//! The task of one open WebSocket connection.
//!
//! One task per connection does both directions. It waits for whichever comes first:
//! the socket is readable, frames are pending in its outbound queue, or a close was
//! requested. Reading happens only once the socket is readable, into the shard's shared
//! buffer, so an idle connection holds no read buffer; only a partial frame left at the
//! end of a read is copied into a buffer of the connection's own. Writing takes every
//! pending frame and sends them in one vectored write.
//!
//! Close handling (RFC 6455 §5.5.1, §7): a client's Close is answered with a Close carrying
//! the same code, then the server closes TCP. When the server closes (protocol error, slow
//! consumer, ping or auth timeout, API), it sends its Close and waits up to
//! [`CLOSE_LINGER`] for the client's before dropping the connection.
use bytes::BytesMut;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use super::io::ConnIo;
use crate::hub::conn::close_code;
use crate::hub::{CloseReason, ConnHandle, Identity};
use crate::metrics::ShardCounters;
use crate::protocol::code;
use crate::runtime::shard::Shard;
use crate::ws::{self, Decoder, Message, OpCode};
use monoio::net::TcpStream;

/// How long the server waits for the client's Close after sending its own.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes read from one connection per wake, so one fast sender cannot starve the rest.
const READ_BUDGET: usize = 1 << 20;

/// Which WebSocket endpoint a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// An app's endpoint speaking the ringcast protocol (indexes into the app table).
    Protocol { app: u16, endpoint: u16 },
    /// `/echo` (dev mode only): echoes every data message; used by conformance tests.
    Echo,
}

/// What the upgrade established about a new connection.
pub struct Accepted {
    pub endpoint: Endpoint,
    /// Set when the upgrade request carried credentials: who, or why they were refused.
    pub identity: Option<Result<Identity, &'static str>>,
    /// Path template parameters (`/ws/posts/{post_id}/` → `post_id`).
    pub params: Vec<(String, String)>,
    pub remote: std::net::SocketAddr,
}

/// What reading produced.
enum Flow {
    Continue,
    /// The peer closed TCP or the socket failed.
    Eof,
    /// Close the connection with this code (our Close is sent first).
    Close(u16, &'static str),
}

pub(super) struct Conn {
    pub(super) shard: Rc<Shard>,
    pub(super) h: Rc<ConnHandle>,
    pub(super) endpoint: Endpoint,
    /// Client message rate limit.
    pub(super) bucket: super::session::TokenBucket,
    /// Present only while a read is being decoded or a message is incomplete, so an idle
    /// connection does not carry decoder state.
    dec: Option<Box<Decoder>>,
    /// Bytes of an incomplete frame carried between reads (None when idle).
    partial: Option<BytesMut>,
    /// We sent our Close frame.
    pub(super) close_sent: bool,
    /// The close handshake is complete from our side: flush and finish.
    pub(super) done: bool,
}

/// Set up a freshly upgraded connection and spawn its task. The setup is synchronous so
/// the task's future holds only the connection and its socket, not the arguments.
pub fn start(shard: Rc<Shard>, stream: TcpStream, early: BytesMut, accepted: Accepted) {
    let Accepted {
        endpoint,
        identity,
        params,
        remote,
    } = accepted;
    let (app, max_out) = match endpoint {
        Endpoint::Protocol { app, .. } => (
            app,
            shard.global.apps[app as usize].limits().outbound_queue as usize,
        ),
        // An echo connection queues what it receives: room for a maximal message and its echo.
        Endpoint::Echo => (0, 4 * shard.config().echo_max_message),
    };
    let h = Rc::new(ConnHandle::new(
        shard.next_conn_id(),
        app,
        max_out,
        shard.now(),
    ));
    ShardCounters::add(&shard.counters().connections, 1);
    let bucket = super::session::TokenBucket::new(&shard, endpoint);
    let mut conn = Conn {
        shard,
        h,
        endpoint,
        bucket,
        dec: None,
        partial: None,
        close_sent: false,
        done: false,
    };
    if matches!(endpoint, Endpoint::Protocol { .. }) {
        conn.shard.hub.borrow_mut().add_conn(conn.h.clone());
        conn.open(identity, &params, remote);
    }
    if !early.is_empty() {
        // Copy: the HTTP read buffer is larger than what is left in it.
        conn.partial = Some(BytesMut::from(&early[..]));
        drop(early);
        if let Flow::Close(code, reason) = conn.decode_buffered() {
            conn.start_close(code, reason);
            conn.done = true;
        }
    }
    let task = conn.run(ConnIo::new(stream));
    tracing::trace!(bytes = std::mem::size_of_val(&task), "connection task size");
    monoio::spawn(task);
}

/// How a connection's event loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Drop the socket now (peer gone, socket error, stuck slow consumer, deadline).
    Drop,
    /// Our Close is written: half-close and let the peer finish before dropping.
    Linger,
}

enum Ev {
    Readable(std::io::Result<()>),
    Write,
    CloseRequested(CloseReason),
    Deadline,
    Finished,
}

impl Conn {
    async fn run(mut self, io: ConnIo) {
        if self.event_loop(&io).await == End::Linger {
            // Boxed: closing is rare, and an inline future would enlarge every idle task.
            Box::pin(io.linger(CLOSE_LINGER)).await;
        }
        if matches!(self.endpoint, Endpoint::Protocol { .. }) {
            self.closed();
        }
        ShardCounters::sub(&self.shard.counters().connections, 1);
    }

    fn limits(&self) -> ws::Limits {
        let max = match self.endpoint {
            Endpoint::Protocol { app, .. } => {
                self.shard.global.apps[app as usize]
                    .limits()
                    .max_message_size as usize
            }
            Endpoint::Echo => self.shard.config().echo_max_message,
        };
        ws::Limits {
            max_frame: max,
            max_message: max,
        }
    }

    async fn event_loop(&mut self, io: &ConnIo) -> End {
        let mut readable = pin!(io.readable());
        let mut armed = true;
        let mut linger: Option<Pin<Box<monoio::time::Sleep>>> = None;
        loop {
            let h = self.h.clone();
            let closing = self.close_sent;
            let done = self.done;
            let ev = poll_fn(|cx| {
                if let Some(t) = linger.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ev::Deadline);
                    }
                }
                if !closing {
                    if let Some(r) = h.close_requested() {
                        return Poll::Ready(Ev::CloseRequested(r));
                    }
                }
                if h.has_pending() {
                    return Poll::Ready(Ev::Write);
                }
                if done {
                    return Poll::Ready(Ev::Finished);
                }
                if armed {
                    if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                        armed = false;
                        return Poll::Ready(Ev::Readable(r));
                    }
                }
                h.set_waker(cx.waker());
                Poll::Pending
            })
            .await;
            match ev {
                Ev::Readable(Err(_)) | Ev::Deadline => return End::Drop,
                Ev::Finished => return End::Linger,
                Ev::Readable(Ok(())) => {
                    match self.on_readable(io) {
                        Flow::Continue => {}
                        Flow::Eof => return End::Drop,
                        Flow::Close(code, reason) => {
                            // RFC 6455 §7.1.7 "Fail the WebSocket Connection": send our
                            // Close, then close TCP without waiting for the peer's Close.
                            self.start_close(code, reason);
                            self.done = true;
                        }
                    }
                    if self.close_sent && linger.is_none() && !self.done {
                        linger = Some(Box::pin(monoio::time::sleep(CLOSE_LINGER)));
                    }
                    readable.set(io.readable());
                    armed = true;
                }
                Ev::CloseRequested(r) => {
                    self.start_close(r.code, r.reason);
                    linger = Some(Box::pin(monoio::time::sleep(CLOSE_LINGER)));
                }
                Ev::Write => {
                    let Some(out) = h.take_pending() else {
                        continue;
                    };
                    let slow = |h: &ConnHandle| {
                        h.close_requested()
                            .is_some_and(|r| r.code == close_code::SLOW_CONSUMER)
                    };
                    let res = {
                        // Boxed so the write's state is not part of every idle connection's task.
                        let mut write = Box::pin(io.write_out(out));
                        poll_fn(|cx| {
                            if let Poll::Ready(r) = write.as_mut().poll(cx) {
                                return Poll::Ready(Some(r));
                            }
                            // A slow consumer's stuck write is abandoned: the stream is cut
                            // mid-frame, so the connection is dropped without a Close.
                            if !closing && slow(&h) {
                                return Poll::Ready(None);
                            }
                            if let Some(t) = linger.as_mut() {
                                if t.as_mut().poll(cx).is_ready() {
                                    return Poll::Ready(None);
                                }
                            }
                            h.set_waker(cx.waker());
                            Poll::Pending
                        })
                        .await
                    };
                    match res {
                        Some(Ok(n)) => {
                            ShardCounters::add(&self.shard.counters().bytes_out, n as u64)
                        }
                        Some(Err(_)) | None => return End::Drop,
                    }
                }
            }
        }
    }

    /// Send our Close (once) and stop accepting new frames for this connection.
    pub(super) fn start_close(&mut self, code: u16, reason: &'static str) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        self.h.request_close(CloseReason { code, reason });
        self.h.push_control(ws::encode_close(code, reason));
    }

    fn on_readable(&mut self, io: &ConnIo) -> Flow {
        let shard = self.shard.clone();
        let mut budget = READ_BUDGET;
        let mut own = self.partial.take();
        let mut shared = shard.read_buf.borrow_mut();
        let flow = loop {
            let buf: &mut BytesMut = match own.as_mut() {
                Some(b) => b,
                None => &mut shared,
            };
            match io.recv(buf) {
                Ok(0) => break Flow::Eof,
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Flow::Continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break Flow::Eof,
            }
            match self.decode_all(buf) {
                Flow::Continue => {}
                other => break other,
            }
            if budget == 0 {
                break Flow::Continue;
            }
        };
        // Keep an incomplete frame with the connection; the shared buffer is for everyone.
        match own {
            Some(b) if !b.is_empty() => self.partial = Some(b),
            Some(_) => {}
            None if !shared.is_empty() => {
                self.partial = Some(BytesMut::from(&shared[..]));
                shared.clear();
            }
            None => {}
        }
        flow
    }

    /// Decode what `partial` holds (bytes that came with the upgrade request).
    fn decode_buffered(&mut self) -> Flow {
        let Some(mut b) = self.partial.take() else {
            return Flow::Continue;
        };
        let flow = self.decode_all(&mut b);
        if !b.is_empty() {
            self.partial = Some(b);
        }
        flow
    }

    fn decode_all(&mut self, buf: &mut BytesMut) -> Flow {
        let mut dec = self
            .dec
            .take()
            .unwrap_or_else(|| Box::new(Decoder::new(self.limits())));
        let flow = loop {
            match dec.decode(buf) {
                Ok(Some(m)) => match self.on_message(m) {
                    Flow::Continue => {}
                    other => break other,
                },
                Ok(None) => break Flow::Continue,
                Err(e) => {
                    buf.clear();
                    break Flow::Close(e.close_code(), "protocol error");
                }
            }
        };
        // Keep the decoder only while it holds a message in progress or bytes remain.
        if !(dec.is_idle() && buf.is_empty()) {
            self.dec = Some(dec);
        }
        flow
    }

    fn on_message(&mut self, m: Message) -> Flow {
        let h = &self.h;
        h.last_rx.set(self.shard.now());
        h.ping_sent.set(false);
        match m {
            Message::Ping(p) => {
                if !self.close_sent {
                    h.push_control(ws::encode_frame(OpCode::Pong, &p));
                }
                Flow::Continue
            }
            Message::Pong(_) => Flow::Continue,
            Message::Close(c) => {
                if !self.close_sent {
                    // RFC 6455 §5.5.1: reply with a Close, echoing the status code.
                    let code = c.map_or(ws::close::NORMAL, |(code, _)| code);
                    self.close_sent = true;
                    self.h.request_close(CloseReason { code, reason: "" });
                    self.h.push_control(ws::encode_close(code, ""));
                }
                self.done = true;
                Flow::Continue
            }
            _ if self.close_sent => Flow::Continue,
            Message::Text(p) if self.endpoint == Endpoint::Echo => {
                self.reply(ws::encode_frame(OpCode::Text, &p));
                Flow::Continue
            }
            Message::Binary(p) if self.endpoint == Endpoint::Echo => {
                self.reply(ws::encode_frame(OpCode::Binary, &p));
                Flow::Continue
            }
            Message::Text(p) => {
                ShardCounters::add(&self.shard.counters().messages_in, 1);
                if let Some((code, reason)) = self.bucket.take(&self.shard) {
                    return Flow::Close(code, reason);
                }
                if self.bucket.limited() {
                    self.error(code::RATE_LIMITED, "too many messages; slow down", None);
                    return Flow::Continue;
                }
                self.on_text(&p);
                Flow::Continue
            }
            Message::Binary(_) => {
                Flow::Close(ws::close::UNSUPPORTED, "binary messages are not supported")
            }
        }
    }
}
