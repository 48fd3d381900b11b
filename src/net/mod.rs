//! Sockets: what happens to an accepted connection. [`serve_connection`] reads HTTP/1.1
//! requests (keep-alive), answers `/health`, `/`, and the API, and on a WebSocket upgrade
//! hands the socket to a fresh task ([`ws_conn::start`]) whose future is only as large as an
//! open WebSocket needs, so an idle connection does not carry the HTTP parser's state.
pub mod handshake;
pub mod http;
pub mod identify;
pub mod io;
pub mod limiter;
mod session;
pub mod ws_conn;

use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::runtime::shard::Shard;
use http::{Request, Response};
use ws_conn::{Accepted, Endpoint};

/// The demo page served at `/` in dev mode.
const DEV_PAGE: &str = include_str!("dev_page.html");

pub async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream, peer: SocketAddr) {
    let cfg = shard.config();
    let limits = http::Limits {
        max_header_bytes: cfg.max_header_bytes,
        max_body_bytes: cfg.max_body_bytes,
        timeout: cfg.request_timeout,
    };
    let mut buf = BytesMut::new();
    loop {
        let req = match http::read_request(&mut stream, &mut buf, &limits).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if let Some(resp) = e.response() {
                    let _ = http::write_response(&mut stream, &resp, false).await;
                }
                return;
            }
        };
        if let Some((endpoint, params)) = find_endpoint(&shard, &req.path) {
            if let Err(resp) = upgrade_allowed(&shard, &req, endpoint, peer) {
                let _ = http::write_response(&mut stream, &resp, false).await;
                return;
            }
            let accept = match handshake::check(&req) {
                Ok(a) => a,
                Err(resp) => {
                    let _ = http::write_response(&mut stream, &resp, false).await;
                    return;
                }
            };
            let identity = match endpoint {
                Endpoint::Protocol { app, .. } => {
                    let app = &shard.global.apps[app as usize];
                    match identify::from_request(&shard.global, app, &req) {
                        Some(found) => Some(found),
                        // No credentials in the request: the app's backend may know the
                        // user from its own session cookie.
                        None => match identify::from_connect_hook(&shard.global, app, &req, peer)
                            .await
                        {
                            Ok(found) => found.map(Ok),
                            Err(resp) => {
                                let _ = http::write_response(&mut stream, &resp, false).await;
                                return;
                            }
                        },
                    }
                }
                Endpoint::Echo => None,
            };
            let (res, _) = stream
                .write_all(handshake::switching_protocols(&accept))
                .await;
            if res.is_err() {
                return;
            }
            tracing::debug!(%peer, path = %req.path, "websocket open");
            drop(req);
            // Whatever followed the request (the client's first frames) goes with the socket.
            ws_conn::start(
                shard,
                stream,
                buf,
                Accepted {
                    endpoint,
                    identity,
                    params,
                    remote: peer,
                },
            );
            return;
        }
        let resp = route(&shard, &req).await;
        let keep = req.keep_alive() && resp.status < 400;
        if http::write_response(&mut stream, &resp, keep)
            .await
            .is_err()
            || !keep
        {
            return;
        }
    }
}

/// Non-WebSocket routes.
async fn route(shard: &Rc<Shard>, req: &Request) -> Response {
    let get_only = |r: Response| {
        if req.method == "GET" {
            r
        } else {
            Response::error(405, "method not allowed").with_header("Allow", "GET")
        }
    };
    match req.path.as_str() {
        "/health" => get_only(health(shard)),
        "/metrics" => get_only(match crate::api::admin_only(shard, req) {
            Ok(()) => Response::prometheus(crate::metrics::prometheus(&shard.global)),
            Err(r) => r,
        }),
        "/" if shard.config().dev => get_only(Response::html(DEV_PAGE)),
        p if p.starts_with("/api/") => crate::api::handle(shard, req).await,
        _ => Response::error(404, "not found"),
    }
}

fn health(shard: &Rc<Shard>) -> Response {
    let b = &shard.global.broker;
    let status = match b.health() {
        crate::broker::Health::Ok => "ok",
        crate::broker::Health::Degraded => "degraded",
    };
    Response::json(
        200,
        match b.fleet() {
            Some(f) => serde_json::json!({ "status": status, "broker": b.name(), "redis": f.status_json() }),
            None => serde_json::json!({ "status": status, "broker": b.name() }),
        }
        .to_string(),
    )
}

/// The WebSocket endpoint serving `path`, with its template parameters.
fn find_endpoint(shard: &Rc<Shard>, path: &str) -> Option<(Endpoint, Vec<(String, String)>)> {
    if path == "/echo" && shard.config().dev {
        return Some((Endpoint::Echo, Vec::new()));
    }
    shard.global.apps.iter().find_map(|app| {
        app.endpoints().iter().enumerate().find_map(|(i, ep)| {
            let params = ep.match_path(path)?;
            Some((
                Endpoint::Protocol {
                    app: app.index,
                    endpoint: i as u16,
                },
                params,
            ))
        })
    })
}

/// Policy checks before the upgrade: a WebSocket request at all, the endpoint's allowed
/// origins (403), and the per-IP attempt rate (429).
fn upgrade_allowed(
    shard: &Rc<Shard>,
    req: &Request,
    endpoint: Endpoint,
    peer: SocketAddr,
) -> Result<(), Response> {
    if !handshake::is_upgrade(req) {
        return Err(
            Response::error(426, "this is a WebSocket endpoint; send an Upgrade request")
                .with_header("Upgrade", "websocket")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    }
    let Endpoint::Protocol { app, endpoint } = endpoint else {
        return Ok(());
    };
    let app = &shard.global.apps[app as usize];
    let ep = &app.endpoints()[endpoint as usize];
    // Browsers always send Origin; a request without one is not from a web page.
    if !ep.origin_allowed(req.header_str("origin")) {
        return Err(Response::error(403, "origin not allowed"));
    }
    if !shard.global.attempts.allow(
        app.index,
        peer.ip(),
        app.limits().connect_attempts_per_ip_per_minute,
    ) {
        return Err(
            Response::error(429, "too many connection attempts; retry later")
                .with_header("Retry-After", "60"),
        );
    }
    Ok(())
}
