//! Peer server "tokio": what a Rust developer writes in an afternoon —
//! tokio-tungstenite, a topic map of `tokio::sync::broadcast` channels, and a
//! hand-rolled HTTP/1.1 parser for the publish API. Speaks the ringcast JSON
//! subset: subscribe / unsubscribe / publish / ping, deliveries as
//! `{"type":"message",...}`, `POST /api/v1/publish|broadcast`,
//! `POST /api/v1/users/{type}/{id}/send`, `GET /api/v1/stats`.
//!
//! Usage: peer_tokio [ADDR]   (default 127.0.0.1:9001)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Payload = Arc<str>;
/// "user_type/user_id" → that user's connections (conn id, outbound queue).
type UserMap = HashMap<String, Vec<(u64, mpsc::Sender<Payload>)>>;

#[derive(Default)]
struct State {
    topics: Mutex<HashMap<String, broadcast::Sender<Payload>>>,
    users: Mutex<UserMap>,
    all: Mutex<Option<broadcast::Sender<Payload>>>,
    conns: AtomicU64,
    next_conn: AtomicU64,
    published: AtomicU64,
}

const CHAN: usize = 4096;

impl State {
    fn topic(&self, t: &str) -> broadcast::Sender<Payload> {
        let mut m = self.topics.lock().unwrap();
        m.entry(t.to_string())
            .or_insert_with(|| broadcast::channel(CHAN).0)
            .clone()
    }
    fn publish(&self, topic: &str, data: &Value) {
        let msg: Payload = json!({"type": "message", "topic": topic, "data": data})
            .to_string()
            .into();
        self.published.fetch_add(1, Relaxed);
        let tx = self.topics.lock().unwrap().get(topic).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }
    fn broadcast(&self, data: &Value) {
        let msg: Payload = json!({"type": "message", "topic": "broadcast", "data": data})
            .to_string()
            .into();
        if let Some(tx) = self.all.lock().unwrap().as_ref() {
            let _ = tx.send(msg);
        }
    }
    fn send_user(&self, key: &str, data: &Value) -> usize {
        let msg: Payload = json!({"type": "message", "topic": "user", "data": data})
            .to_string()
            .into();
        let users = self.users.lock().unwrap();
        let mut n = 0;
        for (_, tx) in users.get(key).into_iter().flatten() {
            if tx.try_send(msg.clone()).is_ok() {
                n += 1;
            }
        }
        n
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let addr = if addr.contains(':') {
        addr
    } else {
        format!("127.0.0.1:{addr}")
    };
    let listener = TcpListener::bind(&addr).await?;
    let state = Arc::new(State::default());
    *state.all.lock().unwrap() = Some(broadcast::channel(CHAN).0);
    eprintln!("peer_tokio listening on {addr}");
    loop {
        let (s, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        let st = state.clone();
        tokio::spawn(async move {
            let mut head = [0u8; 8];
            let n = match s.peek(&mut head).await {
                Ok(n) => n,
                Err(_) => return,
            };
            if head[..n].starts_with(b"GET /ws") {
                ws_conn(s, st).await;
            } else {
                http_conn(s, st).await;
            }
        });
    }
}

fn query_param(q: &str, k: &str) -> Option<String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(a, _)| *a == k)
        .map(|(_, v)| v.to_string())
}

// The handshake callback's error type is fixed by tungstenite.
#[allow(clippy::result_large_err)]
async fn ws_conn(s: TcpStream, st: Arc<State>) {
    let mut query = String::new();
    let cb = |req: &Request, resp: Response| {
        query = req.uri().query().unwrap_or("").to_string();
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(s, cb).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    let user_id = query_param(&query, "user_id");
    let user_type = query_param(&query, "user_type").unwrap_or_else(|| "user".into());
    let conn_id = st.next_conn.fetch_add(1, Relaxed);
    st.conns.fetch_add(1, Relaxed);
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Payload>(CHAN);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(Message::Text(m.as_ref().into())).await.is_err() {
                break;
            }
        }
    });
    let auth = match &user_id {
        Some(u) => {
            json!({"type":"auth_success","user_type":user_type,"user_id":u,"conn_id":conn_id.to_string()})
        }
        None => {
            json!({"type":"auth_success","user_type":"anonymous","user_id":null,"conn_id":conn_id.to_string()})
        }
    };
    let _ = out_tx.send(auth.to_string().into()).await;
    let user_key = user_id.as_ref().map(|u| format!("{user_type}/{u}"));
    if let Some(k) = &user_key {
        st.users
            .lock()
            .unwrap()
            .entry(k.clone())
            .or_default()
            .push((conn_id, out_tx.clone()));
    }
    let mut subs: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let all_rx = st.all.lock().unwrap().as_ref().map(|t| t.subscribe());
    if let Some(rx) = all_rx {
        subs.insert(String::new(), forward(rx, out_tx.clone()));
    }
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            let _ = out_tx
                .send(
                    json!({"type":"error","message":"bad json"})
                        .to_string()
                        .into(),
                )
                .await;
            continue;
        };
        let id = v.get("id").cloned().unwrap_or(Value::Null);
        let topic = v
            .get("topic")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        let reply = match v.get("type").and_then(|t| t.as_str()).unwrap_or("") {
            "subscribe" => {
                if !subs.contains_key(&topic) {
                    let rx = st.topic(&topic).subscribe();
                    subs.insert(topic.clone(), forward(rx, out_tx.clone()));
                }
                json!({"type":"subscribed","topic":topic,"id":id,"recovered":false})
            }
            "unsubscribe" => {
                if let Some(h) = subs.remove(&topic) {
                    h.abort();
                }
                json!({"type":"unsubscribed","topic":topic,"id":id})
            }
            "publish" => {
                st.publish(&topic, v.get("data").unwrap_or(&Value::Null));
                json!({"type":"ack","id":id})
            }
            "ping" => json!({"type":"pong","id":id}),
            _ => json!({"type":"error","message":"unknown type","id":id}),
        };
        if out_tx.send(reply.to_string().into()).await.is_err() {
            break;
        }
    }
    for (_, h) in subs {
        h.abort();
    }
    if let Some(k) = &user_key {
        let mut users = st.users.lock().unwrap();
        if let Some(v) = users.get_mut(k) {
            v.retain(|(c, _)| *c != conn_id);
            if v.is_empty() {
                users.remove(k);
            }
        }
    }
    drop(out_tx);
    writer.abort();
    st.conns.fetch_sub(1, Relaxed);
}

/// Copies a topic's broadcast into the connection's outbound queue; a
/// lagging subscriber loses what it missed.
fn forward(
    mut rx: broadcast::Receiver<Payload>,
    tx: mpsc::Sender<Payload>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(m) => {
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

async fn http_conn(mut s: TcpStream, st: Arc<State>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if buf.len() > 65536 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("");
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut len = 0usize;
        let mut close = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        while buf.len() < head_end + len {
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body: Value =
            serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
        buf.drain(..head_end + len);
        let (status, resp) = route(&st, &method, &path, &body);
        let out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{resp}",
            resp.len()
        );
        if s.write_all(out.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

fn route(st: &State, method: &str, path: &str, body: &Value) -> (&'static str, String) {
    let data = body.get("data").unwrap_or(&Value::Null);
    let ok = || ("200 OK", r#"{"ok":true}"#.to_string());
    match (method, path) {
        ("POST", "/api/v1/publish") => match body.get("topic").and_then(|t| t.as_str()) {
            Some(t) => {
                st.publish(t, data);
                ok()
            }
            None => ("400 Bad Request", r#"{"ok":false,"error":"topic"}"#.into()),
        },
        ("POST", "/api/v1/broadcast") => {
            st.broadcast(data);
            ok()
        }
        ("GET", "/api/v1/stats") => (
            "200 OK",
            json!({"connections": st.conns.load(Relaxed), "published": st.published.load(Relaxed),
                   "topics": st.topics.lock().unwrap().len()})
            .to_string(),
        ),
        ("POST", p) if p.starts_with("/api/v1/users/") && p.ends_with("/send") => {
            let mid = &p["/api/v1/users/".len()..p.len() - "/send".len()];
            let n = st.send_user(mid, data);
            ("200 OK", json!({"ok": true, "delivered": n}).to_string())
        }
        _ => (
            "404 Not Found",
            r#"{"ok":false,"error":"not found"}"#.into(),
        ),
    }
}
