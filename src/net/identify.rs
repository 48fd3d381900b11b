//! Who a connection is: from its upgrade request (a token in `?token=`, `Authorization:
//! Bearer`, or the `ringcast_token` cookie; or dev mode's `?user_id=`), from the app's
//! connect hook (e.g. a Django session cookie), or from an `authenticate` message.
//!
//! An app with JWT keys verifies tokens. Dev mode without keys takes the token (or
//! `?user_id=`) as the user id, so a laptop demo needs no token service.
use bytes::Bytes;

use super::http::{Request, Response};
use crate::app::App;
use crate::auth::Claims;
use crate::hub::Identity;
use crate::runtime::Global;

/// Cookie that may carry the token.
pub const TOKEN_COOKIE: &str = "ringcast_token";

/// Identity from a token; `Err` is the client-facing reason.
pub fn from_token(global: &Global, app: &App, token: &str) -> Result<Identity, &'static str> {
    if let Some(v) = &app.verifier {
        return v
            .verify(token, Some(&app.name))
            .map(identity)
            .map_err(|e| e.message());
    }
    if global.config.dev {
        return if valid_user_part(token) {
            Ok(Identity::user("user", token))
        } else {
            Err("dev mode: the token is the user id (1-128 characters)")
        };
    }
    Err("authentication is not configured on this server")
}

fn identity(c: Claims) -> Identity {
    Identity {
        user_type: c.user_type.into(),
        user_id: Some(c.sub.into()),
        roles: c.roles.into_iter().map(Into::into).collect(),
        topics: c.topics.into_iter().map(Into::into).collect(),
    }
}

/// Identity from the upgrade request, when it carries credentials.
pub fn from_request(
    global: &Global,
    app: &App,
    req: &Request,
) -> Option<Result<Identity, &'static str>> {
    if global.config.dev && app.verifier.is_none() {
        let user_id = req
            .query_param("user_id")
            .or_else(|| req.query_param("token"))?;
        let user_type = req
            .query_param("user_type")
            .unwrap_or_else(|| "user".into());
        if !valid_user_part(&user_id) || !valid_user_part(&user_type) {
            return Some(Err("invalid user id or type"));
        }
        return Some(Ok(Identity::user(&user_type, &user_id)));
    }
    let token = crate::auth::token_from_request(req.query.as_deref(), &req.headers, TOKEN_COOKIE)?;
    Some(from_token(global, app, &token))
}

/// Ask the app's connect hook who this request is (it may read cookies, e.g. a Django
/// session). `Ok(None)`: the hook does not know the user (anonymous). `Err`: the answer
/// to send instead of upgrading (403 refused, 503 backend failing).
pub async fn from_connect_hook(
    global: &Global,
    app: &App,
    req: &Request,
    remote: std::net::SocketAddr,
) -> Result<Option<Identity>, Response> {
    let Some(url) = app.hooks.connect.clone() else {
        return Ok(None);
    };
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .filter(|(n, _)| {
            matches!(
                n.as_str(),
                "cookie" | "authorization" | "origin" | "user-agent" | "x-forwarded-for"
            )
        })
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned().into()))
        .collect();
    let body = serde_json::json!({
        "event": "connect", "app": &*app.name, "path": req.path, "query": req.query,
        "headers": headers, "remote_addr": remote.to_string(),
    });
    let answer = global
        .hooks
        .call(
            url,
            app.secret.clone(),
            Bytes::from(body.to_string()),
            app.hooks.timeout,
        )
        .await;
    let answer = match answer {
        Ok(a) if (200..300).contains(&a.status) => a,
        Ok(a) if a.status == 401 || a.status == 403 => {
            return Err(Response::error(403, "the backend refused this connection"))
        }
        Ok(a) => {
            return Err(Response::error(
                503,
                &format!("the backend's connect hook answered HTTP {}", a.status),
            ))
        }
        Err(e) => return Err(Response::error(503, &format!("connect hook: {e}"))),
    };
    let v: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|_| Response::error(503, "connect hook: invalid JSON answer"))?;
    if v.get("allow").and_then(|a| a.as_bool()) == Some(false) {
        return Err(Response::error(403, "the backend refused this connection"));
    }
    let Some(user_id) = v.get("user_id").and_then(|u| match u {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) else {
        return Ok(None);
    };
    let user_type = v
        .get("user_type")
        .and_then(|t| t.as_str())
        .unwrap_or("user")
        .to_owned();
    if !valid_user_part(&user_id) || !valid_user_part(&user_type) {
        return Err(Response::error(
            503,
            "connect hook: invalid user_id or user_type",
        ));
    }
    let list = |k: &str| -> Box<[Box<str>]> {
        v.get(k)
            .and_then(|l| l.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .map(Into::into)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Some(Identity {
        user_type: user_type.into(),
        user_id: Some(user_id.into()),
        roles: list("roles"),
        topics: list("topics"),
    }))
}

/// User ids and types: 1–128 bytes, no control characters.
pub fn valid_user_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}
