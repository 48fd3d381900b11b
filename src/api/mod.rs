//! The backend API (SPEC §4): what application backends call to reach their users.
//!
//! Every operation is a [`Command`] executed by [`execute`] on the shard that received it,
//! whether it came as a REST call (`/api/v1/...`), inside a batch (`POST /api/v1/batch`, the
//! fast path for backends), or later through Redis. Bodies are JSON parsed with simd-json;
//! every mistake gets a JSON error whose status says whose fault it is: 400 malformed,
//! 401 missing or wrong key, 403 not allowed, 404 unknown route or object, 405 method,
//! 422 well-formed but invalid.
//!
//! Keys: an app's key (`Authorization: apikey KEY`) acts on that app only; the admin key
//! acts on any app (`?app=NAME` or `"app"` in a command, default the first app), and a
//! broadcast with the admin key and no app reaches every app. Dev mode without keys is open.
pub mod openapi;

use simd_json::prelude::*;
use simd_json::BorrowedValue;
use std::rc::Rc;

use crate::app::App;
use crate::broker::Outbound;
use crate::hub::conn::{close_code, parse_conn_ref, shard_of, ConnRef};
use crate::hub::CloseReason;
use crate::metrics::ShardCounters;
use crate::net::http::{Request, Response};
use crate::presence::UserKey;
use crate::protocol::{server, user_topic, valid_topic};
use crate::runtime::mesh::{ShardMsg, Target};
use crate::runtime::shard::Shard;

/// Most commands in one batch.
pub const MAX_BATCH: usize = 1000;

/// An API failure: HTTP status and a message for the backend's developer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(422, message)
    }
    fn into_response(self) -> Response {
        Response::error(self.status, &self.message)
    }
}

/// Whose authority a request carries.
#[derive(Clone, Copy)]
enum Caller<'a> {
    /// An app's own key (or dev mode naming an app): that app only.
    App(&'a App),
    /// The admin key (or dev mode without an app): any app.
    Admin,
}

pub async fn handle(shard: &Rc<Shard>, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    if path == "/api/v1/openapi.json" {
        // The description is public; it holds nothing secret.
        return match allow(req, "GET") {
            Ok(()) => Response::json(200, openapi::document()),
            Err(r) => r,
        };
    }
    let caller = match authorize(shard, req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let segs: Vec<&str> = path.split('/').skip(3).collect();
    let res = match route(req, &segs) {
        Ok(Route::Batch) => batch(shard, caller, req).await,
        Ok(Route::Run(command, extra)) => run(shard, caller, req, command, &extra).await,
        Err(Refusal::Method(r)) => return r,
        Err(Refusal::Api(e)) => Err(e),
    };
    res.unwrap_or_else(ApiError::into_response)
}

/// What a request asks for.
enum Route {
    Batch,
    /// A command with the parameters that came in the path.
    Run(&'static str, Vec<(&'static str, String)>),
}

enum Refusal {
    Method(Response),
    Api(ApiError),
}

fn allow(req: &Request, method: &'static str) -> Result<(), Response> {
    if req.method == method {
        Ok(())
    } else {
        Err(Response::error(405, "method not allowed").with_header("Allow", method))
    }
}

fn route(req: &Request, segs: &[&str]) -> Result<Route, Refusal> {
    let only =
        |method: &'static str, r: Route| allow(req, method).map(|()| r).map_err(Refusal::Method);
    let run =
        |command: &'static str, extra: Vec<(&'static str, String)>| Route::Run(command, extra);
    let invalid = |m: &str| Err(Refusal::Api(ApiError::invalid(m)));
    match segs {
        ["publish"] => only("POST", run("publish", vec![])),
        ["broadcast"] => only("POST", run("broadcast", vec![])),
        ["batch"] => only("POST", Route::Batch),
        ["stats"] => only("GET", run("stats", vec![])),
        ["users"] => {
            let extra = match req.query_param("user_type") {
                Some(t) => vec![("user_type", t)],
                None => vec![],
            };
            only("GET", run("online_users", extra))
        }
        ["users", t, u, action] => {
            let (method, command) = match *action {
                "send" => ("POST", "send_user"),
                "online" => ("GET", "is_online"),
                "connections" => ("GET", "user_connections"),
                "disconnect" => ("POST", "disconnect_user"),
                _ => return Err(Refusal::Api(ApiError::new(404, "no such API endpoint"))),
            };
            match decode2(t, u) {
                Ok((t, u)) => only(method, run(command, vec![("user_type", t), ("user_id", u)])),
                Err(()) => invalid("invalid user type or id"),
            }
        }
        ["connections", c] => only(
            "GET",
            run("connection_info", vec![("conn_id", c.to_string())]),
        ),
        ["connections", c, "send"] => only(
            "POST",
            run("send_connection", vec![("conn_id", c.to_string())]),
        ),
        ["connections", c, "disconnect"] => only(
            "POST",
            run("disconnect_connection", vec![("conn_id", c.to_string())]),
        ),
        ["topics", t, "subscribers"] => match percent(t) {
            Some(t) => only("GET", run("topic_subscribers", vec![("topic", t)])),
            None => invalid("invalid topic name"),
        },
        _ => Err(Refusal::Api(ApiError::new(404, "no such API endpoint"))),
    }
}

/// One REST command: the body's JSON object plus the path's parameters.
async fn run(
    shard: &Rc<Shard>,
    caller: Caller<'_>,
    req: &Request,
    command: &str,
    extra: &[(&str, String)],
) -> Result<Response, ApiError> {
    let mut body = req.body.to_vec();
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        BorrowedValue::Object(Box::default())
    } else {
        simd_json::to_borrowed_value(&mut body)
            .map_err(|e| ApiError::new(400, format!("invalid JSON body: {e}")))?
    };
    let BorrowedValue::Object(mut obj) = params else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    for (k, v) in extra {
        obj.insert(
            (*k).to_owned().into(),
            BorrowedValue::String(v.clone().into()),
        );
    }
    let params = BorrowedValue::Object(obj);
    let app = resolve_app(
        shard,
        caller,
        query_app(req).as_deref().or(params.get_str("app")),
    )?;
    let cmd = Command::parse(command, &params)?;
    let value = execute(shard, app, caller_is_admin(caller), Reach::Fleet, cmd).await?;
    Ok(Response::json(200, value.to_string()))
}

fn decode2(t: &str, u: &str) -> Result<(String, String), ()> {
    let t = percent(t)
        .filter(|s| crate::net::identify::valid_user_part(s))
        .ok_or(())?;
    let u = percent(u)
        .filter(|s| crate::net::identify::valid_user_part(s))
        .ok_or(())?;
    Ok((t, u))
}

fn percent(s: &str) -> Option<String> {
    crate::net::http::percent_decode(s)
}

fn query_app(req: &Request) -> Option<String> {
    req.query_param("app")
}

fn caller_is_admin(c: Caller<'_>) -> bool {
    matches!(c, Caller::Admin)
}

/// Routes for operators only (`/metrics`): the admin key, or dev mode without keys.
pub fn admin_only(shard: &Rc<Shard>, req: &Request) -> Result<(), Response> {
    match authorize(shard, req) {
        Ok(Caller::Admin) => Ok(()),
        Ok(Caller::App(_)) => Err(Response::error(403, "this route needs the admin key")),
        Err(e) if e.status == 401 && shard.global.config.admin_key.is_none() => Err(
            Response::error(403, "set an admin key (--admin-key) to read /metrics"),
        ),
        Err(e) => Err(e.into_response()),
    }
}

/// Which key the request carries.
fn authorize<'a>(shard: &'a Rc<Shard>, req: &Request) -> Result<Caller<'a>, ApiError> {
    let g = &shard.global;
    let given = req.header_str("authorization").and_then(|v| {
        let (scheme, k) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("apikey").then_some(k.trim())
    });
    let any_key = g.config.admin_key.is_some() || g.apps.iter().any(|a| a.api_key.is_some());
    match given {
        Some(k)
            if g.config
                .admin_key
                .as_deref()
                .is_some_and(|a| constant_time_eq(a.as_bytes(), k.as_bytes())) =>
        {
            Ok(Caller::Admin)
        }
        Some(k) => g
            .app_by_key(k)
            .map(Caller::App)
            .ok_or_else(|| ApiError::new(401, "invalid API key")),
        None if g.config.dev && !any_key => Ok(Caller::Admin),
        None if any_key => Err(ApiError::new(401, "missing `Authorization: apikey KEY`")),
        None => Err(ApiError::new(
            403,
            "the API is disabled: configure an API key (--api-key or the config file)",
        )),
    }
}

/// The app a command acts on: the caller's own, or for the admin the named one.
fn resolve_app<'a>(
    shard: &'a Rc<Shard>,
    caller: Caller<'a>,
    named: Option<&str>,
) -> Result<&'a App, ApiError> {
    match (caller, named) {
        (Caller::App(app), None) => Ok(app),
        (Caller::App(app), Some(n)) if *app.name == *n => Ok(app),
        (Caller::App(_), Some(_)) => Err(ApiError::new(403, "this API key belongs to another app")),
        (Caller::Admin, Some(n)) => shard
            .global
            .app_by_name(n)
            .ok_or_else(|| ApiError::new(404, format!("no app named `{n}`"))),
        (Caller::Admin, None) => Ok(&shard.global.apps[0]),
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One API operation with its validated parameters.
#[derive(Debug)]
pub enum Command<'v> {
    Publish {
        topic: &'v str,
        data: &'v BorrowedValue<'v>,
    },
    Broadcast {
        data: &'v BorrowedValue<'v>,
        all_apps: bool,
    },
    SendUser {
        user_type: &'v str,
        user_id: &'v str,
        data: &'v BorrowedValue<'v>,
    },
    SendConnection {
        conn_id: &'v str,
        data: &'v BorrowedValue<'v>,
    },
    IsOnline {
        user_type: &'v str,
        user_id: &'v str,
    },
    OnlineUsers {
        user_type: Option<&'v str>,
    },
    UserConnections {
        user_type: &'v str,
        user_id: &'v str,
    },
    ConnectionInfo {
        conn_id: &'v str,
    },
    TopicSubscribers {
        topic: &'v str,
    },
    Stats,
    DisconnectUser {
        user_type: &'v str,
        user_id: &'v str,
    },
    DisconnectConnection {
        conn_id: &'v str,
    },
}

/// Every command name, as used in batches and by the Redis command channel.
pub const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "send_user",
    "send_connection",
    "is_online",
    "online_users",
    "user_connections",
    "connection_info",
    "topic_subscribers",
    "stats",
    "disconnect_user",
    "disconnect_connection",
];

impl<'v> Command<'v> {
    /// Whether the command only reads (and so needs an answer).
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            Command::IsOnline { .. }
                | Command::OnlineUsers { .. }
                | Command::UserConnections { .. }
                | Command::ConnectionInfo { .. }
                | Command::TopicSubscribers { .. }
                | Command::Stats
        )
    }

    pub fn parse(method: &str, p: &'v BorrowedValue<'v>) -> Result<Command<'v>, ApiError> {
        let s = |name: &str| -> Result<&'v str, ApiError> {
            match p.get(name) {
                Some(BorrowedValue::String(v)) => Ok(v.as_ref()),
                Some(_) => Err(ApiError::invalid(format!("`{name}` must be a string"))),
                None => Err(ApiError::invalid(format!("missing `{name}`"))),
            }
        };
        let data = || {
            p.get("data")
                .ok_or_else(|| ApiError::invalid("missing `data`"))
        };
        let user = || -> Result<(&'v str, &'v str), ApiError> {
            let (t, u) = (s("user_type")?, s("user_id")?);
            if !crate::net::identify::valid_user_part(t)
                || !crate::net::identify::valid_user_part(u)
            {
                return Err(ApiError::invalid("invalid user type or id"));
            }
            Ok((t, u))
        };
        let topic = || -> Result<&'v str, ApiError> {
            let t = s("topic")?;
            if valid_topic(t) {
                Ok(t)
            } else {
                Err(ApiError::invalid("invalid topic name"))
            }
        };
        Ok(match method {
            "publish" => Command::Publish {
                topic: topic()?,
                data: data()?,
            },
            "broadcast" => Command::Broadcast {
                data: data()?,
                all_apps: p.get_bool("all_apps").unwrap_or(false),
            },
            "send_user" => {
                let (user_type, user_id) = user()?;
                Command::SendUser {
                    user_type,
                    user_id,
                    data: data()?,
                }
            }
            "send_connection" => Command::SendConnection {
                conn_id: s("conn_id")?,
                data: data()?,
            },
            "is_online" => {
                let (user_type, user_id) = user()?;
                Command::IsOnline { user_type, user_id }
            }
            "online_users" => Command::OnlineUsers {
                user_type: p.get_str("user_type"),
            },
            "user_connections" => {
                let (user_type, user_id) = user()?;
                Command::UserConnections { user_type, user_id }
            }
            "connection_info" => Command::ConnectionInfo {
                conn_id: s("conn_id")?,
            },
            "topic_subscribers" => Command::TopicSubscribers { topic: topic()? },
            "stats" => Command::Stats,
            "disconnect_user" => {
                let (user_type, user_id) = user()?;
                Command::DisconnectUser { user_type, user_id }
            }
            "disconnect_connection" => Command::DisconnectConnection {
                conn_id: s("conn_id")?,
            },
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(ApiError::new(
                    404,
                    format!("unknown method `{shown}`; known: {}", METHODS.join(", ")),
                ));
            }
        })
    }
}

/// How far a command's effects reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every node (a REST call or batch: this node delivers locally and tells the broker).
    Fleet,
    /// This node only: a command from the Redis command channel, which every node
    /// receives and runs on its own connections.
    Node,
}

/// A remote operation that could not reach the other nodes.
fn fleet_error(e: crate::broker::LinkError) -> ApiError {
    ApiError::new(
        503,
        format!("the other nodes cannot be reached ({e}); done on this node only"),
    )
}

fn query_error(e: crate::broker::LinkError) -> ApiError {
    ApiError::new(
        503,
        format!("presence is kept in Redis, which cannot be reached: {e}"),
    )
}

/// Run one command for `app` on this shard.
pub async fn execute(
    shard: &Rc<Shard>,
    app: &App,
    admin: bool,
    reach: Reach,
    cmd: Command<'_>,
) -> Result<serde_json::Value, ApiError> {
    let g = &shard.global;
    let c = shard.counters();
    let ok = || serde_json::json!({ "ok": true });
    let fleet = g.broker.fleet().filter(|_| reach == Reach::Fleet);
    let forward = |msg: Outbound<'_>| match reach {
        Reach::Fleet => g.broker.forward(msg).map_err(fleet_error),
        Reach::Node => Ok(()),
    };
    if reach == Reach::Node && cmd.is_query() {
        return Err(ApiError::invalid(
            "queries need an answer: use the HTTP API for them",
        ));
    }
    Ok(match cmd {
        Command::Publish { topic, data } => {
            let frame = server::message(server::Via::Topic(topic), data);
            let key = app.scope(topic);
            shard.hub.borrow().publish(&key, &frame, &shard.mesh, c);
            forward(Outbound::Topic {
                topic: &key,
                frame: &frame,
            })?;
            ok()
        }
        Command::Broadcast { data, all_apps } => {
            if all_apps && !admin {
                return Err(ApiError::new(
                    403,
                    "broadcasting to all apps needs the admin key",
                ));
            }
            let frame = server::message(server::Via::Broadcast, data);
            let target = if all_apps { None } else { Some(app.index) };
            shard.hub.borrow().broadcast(target, &frame, &shard.mesh, c);
            forward(Outbound::Broadcast {
                app: target,
                frame: &frame,
            })?;
            ok()
        }
        Command::SendUser {
            user_type,
            user_id,
            data,
        } => {
            let frame = server::message(server::Via::User, data);
            let key = app.scope(&user_topic(user_type, user_id));
            shard.hub.borrow().publish(&key, &frame, &shard.mesh, c);
            forward(Outbound::Topic {
                topic: &key,
                frame: &frame,
            })?;
            ok()
        }
        Command::SendConnection { conn_id, data } => {
            let frame = server::message(server::Via::Direct, data);
            match connection(shard, app, conn_id, reach).await? {
                Some(Held::Here(id)) => to_connection(
                    shard,
                    id,
                    ShardMsg::Deliver {
                        target: Target::Conn(id),
                        frame,
                    },
                ),
                Some(Held::Node(node, id)) => forward(Outbound::Conn {
                    node,
                    id,
                    frame: &frame,
                })?,
                None => {}
            }
            ok()
        }
        Command::IsOnline { user_type, user_id } => {
            let n = match fleet {
                Some(f) => f
                    .queries()
                    .user_conn_ids(&app.name, user_type, user_id)
                    .await
                    .map_err(query_error)?
                    .len(),
                None => g
                    .presence
                    .user_connections(&user_key(app, user_type, user_id))
                    .len(),
            };
            serde_json::json!({ "online": n > 0, "connections": n })
        }
        Command::OnlineUsers { user_type } => {
            let users: Vec<(String, String)> = match fleet {
                Some(f) => f
                    .queries()
                    .online_users(&app.name, user_type)
                    .await
                    .map_err(query_error)?,
                None => g
                    .presence
                    .online_users(app.index, user_type)
                    .into_iter()
                    .map(|u| (u.user_type.into(), u.user_id.into()))
                    .collect(),
            };
            let users: Vec<_> = users
                .iter()
                .map(|(t, u)| serde_json::json!({ "user_type": t, "user_id": u }))
                .collect();
            serde_json::json!({ "count": users.len(), "users": users })
        }
        Command::UserConnections { user_type, user_id } => {
            let infos: Vec<_> = match fleet {
                Some(f) => f
                    .queries()
                    .user_connections(&app.name, user_type, user_id)
                    .await
                    .map_err(query_error)?,
                None => local_infos(
                    g,
                    g.presence
                        .user_connections(&user_key(app, user_type, user_id)),
                ),
            };
            serde_json::json!({ "connections": infos })
        }
        Command::ConnectionInfo { conn_id } => {
            let not_found = || ApiError::new(404, "no such connection");
            match connection(shard, app, conn_id, reach).await? {
                Some(Held::Here(id)) => {
                    let info = g.presence.connection(id).ok_or_else(not_found)?;
                    let mut j = crate::presence::info_json(&g.apps, id, &info);
                    if let (Some(f), Some(o)) = (g.broker.fleet(), j.as_object_mut()) {
                        o.insert("node".into(), f.node().into());
                    }
                    j
                }
                Some(Held::Node(node, _)) => fleet
                    .ok_or_else(not_found)?
                    .queries()
                    .connection_info(&app.name, node, conn_id)
                    .await
                    .map_err(query_error)?
                    .ok_or_else(not_found)?,
                None => return Err(not_found()),
            }
        }
        Command::TopicSubscribers { topic } => {
            if !app.namespace(topic).is_some_and(|n| n.presence) {
                return Err(ApiError::invalid("presence is off for this topic's namespace (set `presence = true` to list subscribers)"));
            }
            let infos: Vec<serde_json::Value> = match fleet {
                Some(f) => f
                    .queries()
                    .topic_subscribers(&app.name, topic)
                    .await
                    .map_err(query_error)?,
                None => local_infos(g, g.presence.topic_subscribers(&app.scope(topic))),
            };
            let subs: Vec<_> = infos
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "conn_id": i.get("conn_id"),
                        "user_type": i.get("user_type"),
                        "user_id": i.get("user_id"),
                    })
                })
                .collect();
            serde_json::json!({ "topic": topic, "count": subs.len(), "subscribers": subs })
        }
        Command::Stats => stats(shard, app, admin).await?,
        Command::DisconnectUser { user_type, user_id } => {
            let code = close_code::DISCONNECTED;
            let ids = g
                .presence
                .user_connections(&user_key(app, user_type, user_id));
            for &id in &ids {
                to_connection(shard, id, ShardMsg::Disconnect { conn: id, code });
            }
            let mut n = ids.len();
            if let Some(f) = fleet {
                // Count them all before they go (the other nodes close theirs on the
                // message below).
                let everywhere = f
                    .queries()
                    .user_conn_ids(&app.name, user_type, user_id)
                    .await
                    .map_err(query_error)?;
                n = n.max(everywhere.len());
                let key = app.scope(&user_topic(user_type, user_id));
                forward(Outbound::DisconnectUser { topic: &key, code })?;
            }
            serde_json::json!({ "ok": true, "disconnected": n })
        }
        Command::DisconnectConnection { conn_id } => {
            let code = close_code::DISCONNECTED;
            match connection(shard, app, conn_id, reach).await? {
                Some(Held::Here(id)) => {
                    to_connection(shard, id, ShardMsg::Disconnect { conn: id, code })
                }
                Some(Held::Node(node, id)) => forward(Outbound::DisconnectConn { node, id, code })?,
                None => return Err(ApiError::new(404, "no such connection")),
            }
            ok()
        }
    })
}

/// The info of this node's connections `ids` (those still open).
fn local_infos(g: &crate::runtime::Global, ids: Vec<u64>) -> Vec<serde_json::Value> {
    ids.into_iter()
        .filter_map(|id| {
            g.presence
                .connection(id)
                .map(|i| crate::presence::info_json(&g.apps, id, &i))
        })
        .collect()
}

fn user_key(app: &App, user_type: &str, user_id: &str) -> UserKey {
    UserKey {
        app: app.index,
        user_type: user_type.into(),
        user_id: user_id.into(),
    }
}

/// Where a connection named by the API is.
enum Held<'a> {
    /// On this node (numeric id).
    Here(u64),
    /// On another node of the fleet.
    Node(&'a str, u64),
}

/// Find a connection of `app` by its wire id. `Ok(None)`: a command from the Redis
/// channel naming another node's connection (that node runs it).
async fn connection<'a>(
    shard: &Rc<Shard>,
    app: &App,
    conn_id: &'a str,
    reach: Reach,
) -> Result<Option<Held<'a>>, ApiError> {
    let not_found = || ApiError::new(404, "no such connection");
    let r = parse_conn_ref(conn_id).ok_or_else(|| ApiError::invalid("invalid `conn_id`"))?;
    match r {
        ConnRef::Local(id) => match shard.global.presence.connection(id) {
            Some(info) if info.app == app.index => Ok(Some(Held::Here(id))),
            _ if reach == Reach::Node => Ok(None),
            _ => Err(not_found()),
        },
        ConnRef::Remote { .. } if reach == Reach::Node => Ok(None),
        ConnRef::Remote { node, id } => {
            let Some(f) = shard.global.broker.fleet() else {
                return Err(not_found());
            };
            // Ask the holder's presence: it must exist and belong to this app.
            match f
                .queries()
                .connection_info(&app.name, node, conn_id)
                .await
                .map_err(query_error)?
            {
                Some(_) => Ok(Some(Held::Node(node, id))),
                None => Err(not_found()),
            }
        }
    }
}

/// Deliver to (or disconnect) a connection on whichever shard holds it.
fn to_connection(shard: &Rc<Shard>, id: u64, msg: ShardMsg) {
    let owner = shard_of(id);
    if owner != shard.id {
        shard.mesh.send(owner, msg);
        return;
    }
    let hub = shard.hub.borrow();
    let Some(h) = hub.conn(id) else { return };
    match msg {
        ShardMsg::Deliver { frame, .. } => {
            crate::hub::send(h, &frame, shard.counters());
        }
        ShardMsg::Disconnect { code, .. } => h.request_close(CloseReason {
            code,
            reason: "disconnected by server",
        }),
        _ => {}
    }
}

/// `POST /api/v1/batch {"commands": [{"method": "...", "params": {...}}, ...]}`: executed
/// in order; one result per command (`{"ok":..}`/values or `{"error":{...}}`).
async fn batch(shard: &Rc<Shard>, caller: Caller<'_>, req: &Request) -> Result<Response, ApiError> {
    let mut body = req.body.to_vec();
    let v = simd_json::to_borrowed_value(&mut body)
        .map_err(|e| ApiError::new(400, format!("invalid JSON body: {e}")))?;
    let Some(cmds) = v.get("commands").and_then(|c| c.as_array()) else {
        return Err(ApiError::invalid("the body must be {\"commands\": [...]}"));
    };
    let results = run_list(shard, caller, query_app(req).as_deref(), cmds, Reach::Fleet).await?;
    Ok(Response::json(
        200,
        serde_json::json!({ "results": results }).to_string(),
    ))
}

/// Run a list of `{"method": ..., "params": {...}}` in order; one result each.
async fn run_list(
    shard: &Rc<Shard>,
    caller: Caller<'_>,
    default_app: Option<&str>,
    cmds: &[BorrowedValue<'_>],
    reach: Reach,
) -> Result<Vec<serde_json::Value>, ApiError> {
    if cmds.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "at most {MAX_BATCH} commands per batch"
        )));
    }
    let mut results = Vec::with_capacity(cmds.len());
    for c in cmds {
        let r = run_item(shard, caller, default_app, c, reach).await;
        results.push(r.unwrap_or_else(
            |e| serde_json::json!({ "error": { "status": e.status, "message": e.message } }),
        ));
    }
    Ok(results)
}

async fn run_item(
    shard: &Rc<Shard>,
    caller: Caller<'_>,
    default_app: Option<&str>,
    c: &BorrowedValue<'_>,
    reach: Reach,
) -> Result<serde_json::Value, ApiError> {
    let method = c
        .get_str("method")
        .ok_or_else(|| ApiError::invalid("each command needs a `method` string"))?;
    let empty = BorrowedValue::Object(Box::default());
    let params = c.get("params").unwrap_or(&empty);
    if !params.is_object() {
        return Err(ApiError::invalid("`params` must be an object"));
    }
    let app = resolve_app(shard, caller, params.get_str("app").or(default_app))?;
    let cmd = Command::parse(method, params)?;
    execute(shard, app, caller_is_admin(caller), reach, cmd).await
}

/// A command from `PUBLISH ringcast:api:{app} <json>`: one `{"method", "params"}` or
/// `{"commands": [...]}`, run on this node's connections (every node receives it).
/// Nobody waits for an answer, so failures are logged and counted.
pub async fn run_channel_command(shard: Rc<Shard>, app: u16, body: bytes::Bytes) {
    let Some(app) = shard.global.apps.get(usize::from(app)) else {
        return;
    };
    let mut buf = body.to_vec();
    let outcome = match simd_json::to_borrowed_value(&mut buf) {
        Err(e) => Err(ApiError::new(400, format!("invalid JSON: {e}"))),
        Ok(v) => match v.get("commands").and_then(|c| c.as_array()) {
            Some(list) => run_list(&shard, Caller::App(app), None, list, Reach::Node)
                .await
                .map(|results| {
                    results
                        .into_iter()
                        .filter_map(|r| r.get("error").map(|e| e.to_string()))
                        .collect::<Vec<_>>()
                        .join("; ")
                }),
            None => run_item(&shard, Caller::App(app), None, &v, Reach::Node)
                .await
                .map(|_| String::new()),
        },
    };
    let failed = match outcome {
        Ok(errors) if errors.is_empty() => return,
        Ok(errors) => errors,
        Err(e) => format!("{} {}", e.status, e.message),
    };
    ShardCounters::add(&shard.counters().api_channel_errors, 1);
    tracing::warn!(
        app = &*app.name,
        "command from ringcast:api:{}: {failed}",
        app.name
    );
}

async fn stats(shard: &Rc<Shard>, app: &App, admin: bool) -> Result<serde_json::Value, ApiError> {
    let g = &shard.global;
    let get = ShardCounters::get;
    // Fleet-wide counts come from Redis; while it is away, stats (what an operator
    // looks at during an outage) still answer, with this node's counts and the scope.
    let (scope, (conns, authed)) = match g.broker.fleet() {
        Some(f) => match f.queries().counts(&app.name).await {
            Ok((c, a)) => ("fleet", (c as usize, a as usize)),
            Err(_) => ("node", g.presence.counts(Some(app.index))),
        },
        None => ("node", g.presence.counts(Some(app.index))),
    };
    let mut body = serde_json::json!({
        "app": &*app.name,
        "app_connections": conns,
        "app_authenticated": authed,
        "counts_scope": scope,
        "broker": g.broker.name(),
        "uptime_secs": g.started.elapsed().map_or(0, |d| d.as_secs()),
    });
    if admin || g.apps.len() == 1 {
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
        let o = body.as_object_mut().expect("object");
        type Field = fn(&ShardCounters) -> &std::sync::atomic::AtomicU64;
        let totals: [(&str, Field); 5] = [
            ("connections", |c| &c.connections),
            ("subscriptions", |c| &c.subscriptions),
            ("messages_in", |c| &c.messages_in),
            ("messages_out", |c| &c.messages_out),
            ("slow_consumer_disconnects", |c| {
                &c.slow_consumer_disconnects
            }),
        ];
        for (name, field) in totals {
            let total: u64 = g.counters.iter().map(|c| get(field(c))).sum();
            o.insert(name.into(), total.into());
        }
        o.insert("shards".into(), shards.into());
        if let Some(f) = g.broker.fleet() {
            o.insert("redis".into(), f.status_json());
        }
    }
    Ok(body)
}
