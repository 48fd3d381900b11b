//! Protocol adapters: maps connect / subscribe / publish / deliveries onto
//! each target server's protocol (ringcast JSON, the JSON subset spoken by
//! the peers, or NATS over WebSocket).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::net;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Ringcast,
    Tokio,
    NodeWs,
    Nats,
    Django,
    Uws,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Ringcast => "ringcast",
            Target::Tokio => "tokio",
            Target::NodeWs => "node-ws",
            Target::Nats => "nats",
            Target::Django => "django",
            Target::Uws => "uws",
        }
    }
    pub fn parse(s: &str) -> Result<Target> {
        <Target as ValueEnum>::from_str(s, true).map_err(|e| anyhow!("unknown peer {s}: {e}"))
    }
    pub fn is_nats(self) -> bool {
        self == Target::Nats
    }
    /// Whether the server offers the HTTP publish API.
    pub fn has_http(self) -> bool {
        !self.is_nats()
    }
}

/// Where and how to reach the server under test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub target: Target,
    /// `host:port`
    pub authority: String,
    pub addr: SocketAddr,
    pub api_key: Option<String>,
    pub user_type: String,
}

impl Endpoint {
    pub fn ws_url(&self, user_id: Option<&str>) -> String {
        if self.target.is_nats() {
            return format!("ws://{}/", self.authority);
        }
        match user_id {
            Some(u) => format!(
                "ws://{}/ws?user_id={}&user_type={}",
                self.authority, u, self.user_type
            ),
            None => format!("ws://{}/ws", self.authority),
        }
    }
    /// Topic name for a user's direct messages on targets without a user API.
    pub fn user_topic(user_id: &str) -> String {
        format!("user.{user_id}")
    }
}

/// A delivery or control event received from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Delivery {
        ts: Option<u64>,
        seq: Option<u64>,
        from: Option<u64>,
    },
    Ack(u64),
    Subscribed(u64),
    Pong(u64),
    Error(String),
    Other,
}

#[derive(Deserialize)]
struct DataIn {
    ts: Option<u64>,
    seq: Option<u64>,
    from: Option<u64>,
}

#[derive(Deserialize)]
struct MsgIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    id: Option<u64>,
    data: Option<DataIn>,
    #[serde(default)]
    message: Option<String>,
}

/// Parses one JSON-protocol server frame.
pub fn parse_json(text: &str) -> Event {
    let Ok(m) = serde_json::from_str::<MsgIn>(text) else {
        return Event::Other;
    };
    match m.kind {
        "message" => {
            let (ts, seq, from) = m.data.map(|d| (d.ts, d.seq, d.from)).unwrap_or_default();
            Event::Delivery { ts, seq, from }
        }
        "ack" => Event::Ack(m.id.unwrap_or(0)),
        "subscribed" => Event::Subscribed(m.id.unwrap_or(0)),
        "pong" => Event::Pong(m.id.unwrap_or(0)),
        "error" => Event::Error(m.message.unwrap_or_else(|| text.to_string())),
        _ => Event::Other,
    }
}

fn parse_data(payload: &[u8]) -> Event {
    match serde_json::from_slice::<DataIn>(payload) {
        Ok(d) => Event::Delivery {
            ts: d.ts,
            seq: d.seq,
            from: d.from,
        },
        Err(_) => Event::Delivery {
            ts: None,
            seq: None,
            from: None,
        },
    }
}

/// Incremental parser of NATS server protocol lines (MSG / PING / PONG /
/// -ERR; INFO and +OK are skipped). Frames may split or batch lines.
#[derive(Default)]
pub struct NatsParser {
    buf: Vec<u8>,
    pongs: u64,
}

impl NatsParser {
    /// Appends bytes, pushes complete events; returns whether the server
    /// sent a PING that needs a PONG.
    pub fn feed(&mut self, bytes: &[u8], out: &mut VecDeque<Event>) -> Result<bool> {
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        let mut need_pong = false;
        let buf = std::mem::take(&mut self.buf);
        loop {
            let rest = &buf[pos..];
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let line = &rest[..eol];
            if line.starts_with(b"MSG ") {
                let len: usize = line
                    .rsplit(|&c| c == b' ')
                    .next()
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("bad MSG line"))?;
                let start = eol + 2;
                if rest.len() < start + len + 2 {
                    break; // incomplete payload
                }
                out.push_back(parse_data(&rest[start..start + len]));
                pos += start + len + 2;
                continue;
            }
            if line == b"PING" {
                need_pong = true;
            } else if line == b"PONG" {
                self.pongs += 1;
                out.push_back(Event::Pong(self.pongs));
            } else if line.starts_with(b"-ERR") {
                out.push_back(Event::Error(String::from_utf8_lossy(line).into_owned()));
            }
            pos += eol + 2;
        }
        self.buf = buf[pos..].to_vec();
        Ok(need_pong)
    }
}

/// One WebSocket client connection to the target.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    target: Target,
    queue: VecDeque<Event>,
    nats: NatsParser,
    nats_sid: u64,
    next_id: u64,
    /// NATS PONGs are acks in order: `Pong(n)` answers the n-th PING sent.
    nats_pings: u64,
    need_pong: bool,
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

impl Client {
    /// TCP connect (from `src`), WebSocket handshake and the target's
    /// authentication / greeting exchange.
    pub async fn connect(
        ep: &Endpoint,
        src: Option<IpAddr>,
        user_id: Option<&str>,
    ) -> Result<Client> {
        Self::connect_opts(ep, src, user_id, None).await
    }

    /// Like `connect`, optionally with a small socket receive buffer.
    pub async fn connect_opts(
        ep: &Endpoint,
        src: Option<IpAddr>,
        user_id: Option<&str>,
        rcvbuf: Option<usize>,
    ) -> Result<Client> {
        tokio::time::timeout(SETUP_TIMEOUT, Self::connect_inner(ep, src, user_id, rcvbuf))
            .await
            .map_err(|_| anyhow!("connect timeout"))?
    }

    async fn connect_inner(
        ep: &Endpoint,
        src: Option<IpAddr>,
        user_id: Option<&str>,
        rcvbuf: Option<usize>,
    ) -> Result<Client> {
        let tcp = net::connect(ep.addr, src, rcvbuf)
            .await
            .context("tcp connect")?;
        let url = ep.ws_url(user_id);
        let (ws, _resp) = tokio_tungstenite::client_async(url, tcp)
            .await
            .context("ws handshake")?;
        let mut c = Client {
            ws,
            target: ep.target,
            queue: VecDeque::new(),
            nats: NatsParser::default(),
            nats_sid: 0,
            next_id: 0,
            nats_pings: 0,
            need_pong: false,
        };
        if ep.target.is_nats() {
            c.send_raw(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"headers\":false}\r\nPING\r\n"
                    .to_vec(),
            )
            .await?;
            c.nats_pings += 1;
            c.wait_for(|e| matches!(e, Event::Pong(_))).await?;
        } else {
            // Greeting: the first text frame must be auth_success.
            loop {
                match c.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if t.contains("auth_success") {
                            break;
                        }
                        bail!("unexpected greeting: {}", &t[..t.len().min(200)]);
                    }
                    Some(Ok(Message::Close(f))) => bail!("closed during auth: {f:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e).context("auth"),
                    None => bail!("eof during auth"),
                }
            }
        }
        Ok(c)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    async fn send_text(&mut self, s: String) -> Result<()> {
        self.ws.send(Message::Text(s.into())).await?;
        Ok(())
    }

    /// Subscribes and waits for the server's confirmation.
    pub async fn subscribe(&mut self, topic: &str) -> Result<()> {
        if self.target.is_nats() {
            self.nats_sid += 1;
            let sid = self.nats_sid;
            self.send_raw(format!("SUB {topic} {sid}\r\nPING\r\n").into_bytes())
                .await?;
            self.nats_pings += 1;
            let want = self.nats_pings;
            tokio::time::timeout(SETUP_TIMEOUT, async {
                loop {
                    if let Event::Pong(n) = self.next_event().await? {
                        if n >= want {
                            return Ok::<(), anyhow::Error>(());
                        }
                    }
                }
            })
            .await
            .map_err(|_| anyhow!("subscribe timeout"))??;
            return Ok(());
        }
        let id = self.next_id();
        let msg = serde_json::json!({"type": "subscribe", "topic": topic, "id": id});
        self.send_text(msg.to_string()).await?;
        tokio::time::timeout(
            SETUP_TIMEOUT,
            self.wait_for(|e| matches!(e, Event::Subscribed(i) if *i == id)),
        )
        .await
        .map_err(|_| anyhow!("subscribe timeout"))?
    }

    async fn wait_for(&mut self, f: impl Fn(&Event) -> bool) -> Result<()> {
        loop {
            let e = self.next_event().await?;
            if f(&e) {
                return Ok(());
            }
            if let Event::Error(m) = e {
                bail!("server error: {m}");
            }
        }
    }

    /// Sends a publish; returns the id whose `Ack` confirms it (for NATS the
    /// acks are PONGs counted in order: `Pong(n)` confirms ids <= n).
    pub async fn publish(&mut self, topic: &str, data: &str) -> Result<u64> {
        if self.target.is_nats() {
            let mut b = Vec::with_capacity(data.len() + topic.len() + 32);
            b.extend_from_slice(format!("PUB {topic} {}\r\n", data.len()).as_bytes());
            b.extend_from_slice(data.as_bytes());
            b.extend_from_slice(b"\r\nPING\r\n");
            self.send_raw(b).await?;
            self.nats_pings += 1;
            return Ok(self.nats_pings);
        }
        let id = self.next_id();
        let s = format!(r#"{{"type":"publish","topic":"{topic}","data":{data},"id":{id}}}"#);
        self.send_text(s).await?;
        Ok(id)
    }

    /// Next event from the server. Cancel-safe with respect to the
    /// underlying stream: parsed events are queued before any further await.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            if self.need_pong {
                self.need_pong = false;
                self.send_raw(b"PONG\r\n".to_vec()).await?;
            }
            if let Some(e) = self.queue.pop_front() {
                return Ok(e);
            }
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if self.target.is_nats() {
                        self.feed_nats(t.as_bytes())?;
                    } else {
                        return Ok(parse_json(t.as_str()));
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if self.target.is_nats() {
                        self.feed_nats(&b)?;
                    } else {
                        return Ok(parse_json(std::str::from_utf8(&b).unwrap_or("")));
                    }
                }
                Some(Ok(Message::Close(f))) => bail!("closed by server: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("eof"),
            }
        }
    }

    fn feed_nats(&mut self, bytes: &[u8]) -> Result<()> {
        if self.nats.feed(bytes, &mut self.queue)? {
            self.need_pong = true;
        }
        Ok(())
    }

    /// Sends a close frame (best effort) and drops the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// The JSON `data` object carrying the latency timestamp and sequence.
pub fn payload(ts: u64, seq: u64, from: Option<u64>, pad: &str) -> String {
    let mut s = format!(r#"{{"ts":{ts},"seq":{seq}"#);
    if let Some(f) = from {
        s.push_str(&format!(r#","from":{f}"#));
    }
    if !pad.is_empty() {
        s.push_str(&format!(r#","pad":"{pad}""#));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_parse() {
        assert_eq!(
            parse_json(r#"{"type":"message","topic":"t","data":{"ts":5,"seq":7}}"#),
            Event::Delivery {
                ts: Some(5),
                seq: Some(7),
                from: None
            }
        );
        assert_eq!(parse_json(r#"{"type":"ack","id":2}"#), Event::Ack(2));
        assert_eq!(
            parse_json(r#"{"type":"subscribed","topic":"T","id":1,"recovered":false}"#),
            Event::Subscribed(1)
        );
        let p = payload(1, 2, Some(3), "xx");
        assert_eq!(p, r#"{"ts":1,"seq":2,"from":3,"pad":"xx"}"#);
    }

    #[test]
    fn nats_split_frames() {
        let mut p = NatsParser::default();
        let mut q = VecDeque::new();
        let all = b"INFO {}\r\nPONG\r\nMSG fanout 1 16\r\n{\"ts\":1,\"seq\":2}\r\nPING\r\nMSG a 1 r 2\r\n{}\r\n";
        let mut pong = false;
        for chunk in all.chunks(7) {
            pong |= p.feed(chunk, &mut q).unwrap();
        }
        assert!(pong);
        assert_eq!(q.len(), 3);
        assert_eq!(q[0], Event::Pong(1));
        assert_eq!(
            q[1],
            Event::Delivery {
                ts: Some(1),
                seq: Some(2),
                from: None
            }
        );
    }
}
