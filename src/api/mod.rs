//! The backend HTTP API under `/api/v1/` (SPEC §4): what application backends call to
//! reach their users. Bodies are JSON, parsed with simd-json; every mistake gets a JSON
//! error with a status that says whose fault it is (400 malformed, 401/403 key,
//! 404/405 route, 422 well-formed but invalid).
use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::rc::Rc;
use std::sync::Arc;

use crate::broker::Outbound;
use crate::metrics::ShardCounters;
use crate::net::http::{Request, Response};
use crate::protocol::{server, user_topic, valid_topic};
use crate::runtime::shard::Shard;

pub fn handle(shard: &Rc<Shard>, req: &Request) -> Response {
    if let Err(resp) = authorize(shard, req) {
        return resp;
    }
    let segs: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    let m = req.method.as_str();
    match segs.as_slice() {
        ["api", "v1", "publish"] => post(m, || publish(shard, req)),
        ["api", "v1", "broadcast"] => post(m, || broadcast(shard, req)),
        ["api", "v1", "users", user_type, user_id, "send"] => {
            post(m, || send_user(shard, req, user_type, user_id))
        }
        ["api", "v1", "stats"] => {
            if m == "GET" {
                stats(shard)
            } else {
                Response::error(405, "method not allowed").with_header("Allow", "GET")
            }
        }
        _ => Response::error(404, "no such API endpoint"),
    }
}

fn post(method: &str, f: impl FnOnce() -> Response) -> Response {
    if method == "POST" {
        f()
    } else {
        Response::error(405, "method not allowed").with_header("Allow", "POST")
    }
}

/// `Authorization: apikey KEY` when a key is configured; dev mode without a key is open;
/// production without a key has no API.
fn authorize(shard: &Rc<Shard>, req: &Request) -> Result<(), Response> {
    let cfg = shard.config();
    match &cfg.api_key {
        Some(key) => {
            let given = req.header_str("authorization").and_then(|v| {
                let (scheme, k) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("apikey").then_some(k.trim())
            });
            match given {
                Some(k) if constant_time_eq(k.as_bytes(), key.as_bytes()) => Ok(()),
                Some(_) => Err(Response::error(401, "invalid API key")),
                None => Err(Response::error(401, "missing `Authorization: apikey KEY`")),
            }
        }
        None if cfg.dev => Ok(()),
        None => Err(Response::error(
            403,
            "the API is disabled: start the server with --api-key",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parse the body as a JSON object and hand it to `f`.
fn with_body(req: &Request, f: impl FnOnce(&BorrowedValue<'_>) -> Response) -> Response {
    let mut body = req.body.to_vec();
    let resp = match simd_json::to_borrowed_value(&mut body) {
        Ok(v) if v.is_object() => f(&v),
        Ok(_) => Response::error(422, "the body must be a JSON object"),
        Err(e) => Response::error(400, &format!("invalid JSON body: {e}")),
    };
    resp
}

fn data_of<'v>(v: &'v BorrowedValue<'_>) -> Result<&'v BorrowedValue<'v>, Response> {
    v.get("data")
        .ok_or_else(|| Response::error(422, "missing `data`"))
}

fn ok() -> Response {
    Response::json(200, r#"{"ok":true}"#)
}

fn publish(shard: &Rc<Shard>, req: &Request) -> Response {
    with_body(req, |v| {
        let Some(topic) = v.get_str("topic") else {
            return Response::error(422, "`topic` must be a string");
        };
        if !valid_topic(topic) {
            return Response::error(422, "invalid topic name");
        }
        let data = match data_of(v) {
            Ok(d) => d,
            Err(r) => return r,
        };
        let frame = server::message(server::Via::Topic(topic), data);
        let topic: Arc<str> = topic.into();
        shard
            .hub
            .borrow()
            .publish(&topic, &frame, &shard.mesh, shard.counters());
        shard.global.broker.forward(Outbound::Topic {
            topic: &topic,
            frame: &frame,
        });
        ok()
    })
}

fn broadcast(shard: &Rc<Shard>, req: &Request) -> Response {
    with_body(req, |v| {
        let data = match data_of(v) {
            Ok(d) => d,
            Err(r) => return r,
        };
        let frame = server::message(server::Via::Broadcast, data);
        shard
            .hub
            .borrow()
            .broadcast(&frame, &shard.mesh, shard.counters());
        shard
            .global
            .broker
            .forward(Outbound::Broadcast { frame: &frame });
        ok()
    })
}

fn send_user(shard: &Rc<Shard>, req: &Request, user_type: &str, user_id: &str) -> Response {
    let (Some(user_type), Some(user_id)) = (url_part(user_type), url_part(user_id)) else {
        return Response::error(422, "invalid user type or id");
    };
    with_body(req, |v| {
        let data = match data_of(v) {
            Ok(d) => d,
            Err(r) => return r,
        };
        let topic = user_topic(&user_type, &user_id);
        if !valid_topic(&topic) {
            return Response::error(422, "invalid user type or id");
        }
        let frame = server::message(server::Via::User, data);
        let topic: Arc<str> = topic.into();
        shard
            .hub
            .borrow()
            .publish(&topic, &frame, &shard.mesh, shard.counters());
        shard.global.broker.forward(Outbound::Topic {
            topic: &topic,
            frame: &frame,
        });
        ok()
    })
}

fn url_part(s: &str) -> Option<String> {
    let q = Request {
        method: String::new(),
        path: String::new(),
        query: Some(format!("v={s}")),
        headers: Vec::new(),
        version: 1,
        body: bytes::Bytes::new(),
    };
    q.query_param("v")
        .filter(|v| crate::net::ws_conn::valid_user_part(v))
}

fn stats(shard: &Rc<Shard>) -> Response {
    let g = &shard.global;
    let get = ShardCounters::get;
    let shards: Vec<_> = g
        .counters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "shard": i,
                "connections": get(&c.connections),
                "subscriptions": get(&c.subscriptions),
                "accepted": get(&c.accepted),
                "messages_in": get(&c.messages_in),
                "messages_out": get(&c.messages_out),
                "bytes_out": get(&c.bytes_out),
                "slow_consumer_disconnects": get(&c.slow_consumer_disconnects),
                "queue_drops": get(&c.queue_drops),
                "accept_errors": get(&c.accept_errors),
            })
        })
        .collect();
    let sum = |f: fn(&ShardCounters) -> u64| g.counters.iter().map(f).sum::<u64>();
    let body = serde_json::json!({
        "connections": sum(|c| ShardCounters::get(&c.connections)),
        "subscriptions": sum(|c| ShardCounters::get(&c.subscriptions)),
        "messages_in": sum(|c| ShardCounters::get(&c.messages_in)),
        "messages_out": sum(|c| ShardCounters::get(&c.messages_out)),
        "slow_consumer_disconnects": sum(|c| ShardCounters::get(&c.slow_consumer_disconnects)),
        "uptime_secs": g.started.elapsed().map_or(0, |d| d.as_secs()),
        "broker": g.broker.name(),
        "shards": shards,
    });
    Response::json(200, body.to_string())
}
