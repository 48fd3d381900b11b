//! Sockets: what happens to an accepted connection. [`serve_connection`] reads HTTP/1.1
//! requests (keep-alive), answers `/health`, `/`, and the API, and on a WebSocket upgrade
//! hands the socket to a fresh task ([`ws_conn::start`]) whose future is only as large as an
//! open WebSocket needs, so an idle connection does not carry the HTTP parser's state.
pub mod handshake;
pub mod http;
pub mod io;
pub mod ws_conn;

use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::hub::Identity;
use crate::runtime::shard::Shard;
use http::{Request, Response};
use ws_conn::Endpoint;

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
        let endpoint = match req.path.as_str() {
            "/ws" => Some(Endpoint::Protocol),
            "/echo" if cfg.dev => Some(Endpoint::Echo),
            _ => None,
        };
        if let Some(endpoint) = endpoint {
            if !handshake::is_upgrade(&req) {
                let resp =
                    Response::error(426, "this is a WebSocket endpoint; send an Upgrade request")
                        .with_header("Upgrade", "websocket")
                        .with_header("Sec-WebSocket-Version", "13");
                let _ = http::write_response(&mut stream, &resp, false).await;
                return;
            }
            if let Err(resp) = upgrade_allowed(&shard, &req) {
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
            let identity = dev_identity(&shard, &req);
            let (res, _) = stream
                .write_all(handshake::switching_protocols(&accept))
                .await;
            if res.is_err() {
                return;
            }
            tracing::debug!(%peer, path = %req.path, "websocket open");
            drop(req);
            // Whatever followed the request (the client's first frames) goes with the socket.
            ws_conn::start(shard, stream, buf, endpoint, identity);
            return;
        }
        let resp = route(&shard, &req);
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
fn route(shard: &Rc<Shard>, req: &Request) -> Response {
    let get_only = |r: Response| {
        if req.method == "GET" {
            r
        } else {
            Response::error(405, "method not allowed").with_header("Allow", "GET")
        }
    };
    match req.path.as_str() {
        "/health" => get_only(health(shard)),
        "/" if shard.config().dev => get_only(Response::html(DEV_PAGE)),
        p if p.starts_with("/api/") => crate::api::handle(shard, req),
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
        serde_json::json!({ "status": status, "broker": b.name() }).to_string(),
    )
}

/// Policy checks before the upgrade. The Origin check is where per-endpoint allowed
/// origins plug in; dev mode and the current single-endpoint config allow any origin.
fn upgrade_allowed(shard: &Rc<Shard>, req: &Request) -> Result<(), Response> {
    let origin = req.header_str("origin");
    if !origin_allowed(shard, origin) {
        return Err(Response::error(403, "origin not allowed"));
    }
    Ok(())
}

fn origin_allowed(_shard: &Rc<Shard>, _origin: Option<&str>) -> bool {
    true
}

/// Dev mode takes the user from `?user_id=` (and `?user_type=`), or `?token=` as the id.
fn dev_identity(shard: &Rc<Shard>, req: &Request) -> Option<Identity> {
    if !shard.config().dev {
        return None;
    }
    let user_id = req
        .query_param("user_id")
        .or_else(|| req.query_param("token"))?;
    let user_type = req
        .query_param("user_type")
        .unwrap_or_else(|| "user".into());
    if !ws_conn::valid_user_part(&user_id) || !ws_conn::valid_user_part(&user_type) {
        return None;
    }
    Some(Identity {
        user_type: user_type.into(),
        user_id: Some(user_id.into()),
    })
}
