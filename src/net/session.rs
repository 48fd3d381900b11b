//! The ringcast protocol on an open connection: greeting, authentication, subscriptions,
//! client publishing, pings, custom messages, and the app's rules and limits for each.
//!
//! Everything here runs synchronously inside the connection's task, except calls to the
//! app's backend hooks, which run in a task of their own and push their answer onto the
//! connection's queue — a slow backend never holds up the connection or the shard.
use bytes::Bytes;
use simd_json::prelude::*;
use std::rc::Rc;
use std::sync::Arc;

use super::ws_conn::{Conn, Endpoint};
use crate::app::{Access, App};
use crate::broker::Outbound;
use crate::hub::conn::close_code;
use crate::hub::{ConnHandle, Identity, Joined};
use crate::presence::{ConnInfo, UserKey};
use crate::protocol::client::{self, ClientMsg, RequestId};
use crate::protocol::{code, server, user_topic, valid_topic};
use crate::runtime::shard::Shard;

/// Token bucket for client messages. Running dry gets `rate_limited` errors; a client that
/// keeps sending into an empty bucket for a whole burst's worth is closed with 4029.
pub struct TokenBucket {
    tokens: f32,
    /// Tokens per second (infinite = unlimited).
    rate: f32,
    burst: f32,
    /// Shard clock (ms) of the last refill.
    last_ms: u32,
    /// Messages refused in a row.
    strikes: u16,
}

impl TokenBucket {
    pub fn new(shard: &Shard, endpoint: Endpoint) -> Self {
        let (rate, burst) = match endpoint {
            Endpoint::Protocol { app, .. } => {
                let l = shard.global.apps[app as usize].limits();
                (l.messages_per_second as f32, l.message_burst as f32)
            }
            Endpoint::Echo => (f32::INFINITY, f32::INFINITY),
        };
        TokenBucket {
            tokens: burst,
            rate,
            burst,
            last_ms: shard.now_ms(),
            strikes: 0,
        }
    }

    /// Take a token for one message. `Some` = close the connection (abuse).
    pub fn take(&mut self, shard: &Shard) -> Option<(u16, &'static str)> {
        if self.rate.is_infinite() {
            return None;
        }
        let now = shard.now_ms();
        let elapsed = now.wrapping_sub(self.last_ms) as f32 / 1000.0;
        self.last_ms = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return None;
        }
        self.strikes = self.strikes.saturating_add(1);
        (f32::from(self.strikes) > self.burst.max(1.0))
            .then_some((close_code::RATE_LIMITED, "rate limited"))
    }

    /// Whether the last message was refused.
    pub fn limited(&self) -> bool {
        self.strikes > 0
    }
}

impl Conn {
    pub(super) fn app(&self) -> &App {
        &self.shard.global.apps[self.h.app as usize]
    }

    pub(super) fn reply(&self, frame: Bytes) {
        crate::hub::send(&self.h, &frame, self.shard.counters());
    }

    pub(super) fn error(&self, code: &str, message: &str, id: Option<&RequestId>) {
        self.reply(server::error(code, message, id));
    }

    /// A protocol connection opens: register it, then greet or authenticate it and join the
    /// endpoint's automatic topics.
    pub(super) fn open(
        &mut self,
        identity: Option<Result<Identity, &'static str>>,
        params: &[(String, String)],
        remote: std::net::SocketAddr,
    ) {
        let Endpoint::Protocol { endpoint, .. } = self.endpoint else {
            return;
        };
        let app = self.app();
        let ep = &app.endpoints()[endpoint as usize];
        self.shard.global.presence.connection_opened(
            self.h.id,
            ConnInfo {
                app: app.index,
                endpoint,
                user: None,
                connected_at: crate::hooks::unix_secs() as u32,
                remote,
            },
        );
        self.h.ping_every.set(
            u16::try_from(ep.ping_interval.as_secs())
                .unwrap_or(u16::MAX)
                .max(1),
        );
        let auto: Vec<String> = ep
            .subscribe
            .iter()
            .filter_map(|t| crate::app::expand(t, params))
            .collect();
        let policy = ep.auth;
        match identity {
            Some(Ok(id)) => self.become_user(id),
            Some(Err(message)) => {
                self.error(code::AUTH_FAILED, message, None);
                self.start_close(close_code::AUTH_FAILED, "authentication failed");
                return;
            }
            None if policy == crate::app::AuthPolicy::Required => {
                self.h.needs_auth.set(true);
                self.reply(server::auth_required(
                    self.shard.config().auth_timeout.as_secs(),
                ));
            }
            None => {
                *self.h.identity.borrow_mut() = Some(Identity::anonymous());
                self.reply(server::auth_success("anonymous", None, &self.h.conn_id()));
            }
        }
        for topic in auto {
            if valid_topic(&topic) {
                let ready = server::subscribed(&topic, None);
                self.join(&topic, Some(ready));
            }
        }
    }

    /// The connection is gone: leave the hub and the presence registry.
    pub(super) fn closed(&mut self) {
        let shard = self.shard.clone();
        let topics: Vec<Arc<str>> = self.h.subs.borrow().clone();
        shard
            .hub
            .borrow_mut()
            .remove_conn(&self.h, &shard.mesh, shard.counters());
        for key in topics {
            if let Some((_, topic)) = crate::app::unscope(&key) {
                announce(&shard, &self.h, topic, "leave");
            }
        }
        shard.global.presence.connection_closed(self.h.id);
        let user = self.user_json();
        if let (Some(url), Some(user)) = (self.app().hooks.disconnect.clone(), user) {
            let body = serde_json::json!({ "event": "disconnect", "app": &*self.app().name, "conn_id": self.h.conn_id(), "user": user });
            let (hooks, secret, timeout) = (
                shard.global.hooks.clone(),
                self.app().secret.clone(),
                self.app().hooks.timeout,
            );
            monoio::spawn(async move {
                if let Err(e) = hooks
                    .call(url, secret, Bytes::from(body.to_string()), timeout)
                    .await
                {
                    tracing::debug!("disconnect hook: {e}");
                }
            });
        }
    }

    fn user_json(&self) -> Option<serde_json::Value> {
        let ident = self.h.identity.borrow();
        let i = ident.as_ref()?;
        Some(serde_json::json!({ "user_type": &*i.user_type, "user_id": i.user_id.as_deref() }))
    }

    /// Become `identity`: enforce the per-user connection limit, join the personal topic;
    /// `auth_success` is sent once joined so that a send-to-user made after the client saw
    /// it always arrives.
    fn become_user(&mut self, identity: Identity) {
        let user_id = identity.user_id.as_deref().unwrap_or_default().to_owned();
        let key = UserKey {
            app: self.app().index,
            user_type: identity.user_type.clone(),
            user_id: user_id.as_str().into(),
        };
        let count = self.shard.global.presence.user_joined(self.h.id, key);
        let ready = server::auth_success(&identity.user_type, Some(&user_id), &self.h.conn_id());
        let topic = user_topic(&identity.user_type, &user_id);
        *self.h.identity.borrow_mut() = Some(identity);
        self.h.needs_auth.set(false);
        if count > self.app().limits().max_connections_per_user as usize {
            self.shard.global.presence.user_refused(self.h.id);
            self.start_close(
                close_code::TOO_MANY_CONNECTIONS,
                "too many connections for this user",
            );
            return;
        }
        self.join(&topic, Some(ready));
    }

    /// Join `topic` of this connection's app; `ready` is queued once membership is live.
    fn join(&self, topic: &str, ready: Option<Bytes>) -> Joined {
        join_topic(&self.shard, &self.h, topic, ready)
    }

    fn personal_topic(&self) -> Option<String> {
        let ident = self.h.identity.borrow();
        let i = ident.as_ref()?;
        Some(user_topic(&i.user_type, i.user_id.as_deref()?))
    }

    /// Decide `access` for this connection on `topic`: Some(true) allow, Some(false) deny,
    /// None ask the backend.
    fn decide(&self, access: &Access, topic: &str) -> Option<bool> {
        let ident = self.h.identity.borrow();
        let user = ident.as_ref().filter(|i| i.is_user());
        Some(
            match access {
                Access::Anyone => true,
                Access::Authenticated => user.is_some(),
                Access::Role(r) => user.is_some_and(|i| i.has_role(r)),
                Access::Token => user.is_some_and(|i| i.token_allows(topic)),
                Access::Owner => {
                    user.is_some_and(|i| topic.rsplit(':').next() == i.user_id.as_deref())
                }
                Access::Hook => return None,
                Access::Nobody => false,
            } || user.is_some_and(|i| i.token_allows(topic)),
        )
    }

    pub(super) fn on_text(&mut self, payload: &Bytes) {
        let shard = self.shard.clone();
        let mut scratch = shard.scratch.borrow_mut();
        scratch.clear();
        scratch.extend_from_slice(payload);
        let req = match client::parse(&mut scratch) {
            Ok(r) => r,
            Err(e) => return self.error(e.code, &e.message, e.id.as_ref()),
        };
        let id = req.id.as_ref();
        let c = shard.counters();
        let (is_user, known) = {
            let i = self.h.identity.borrow();
            (i.as_ref().is_some_and(|i| i.is_user()), i.is_some())
        };
        match req.msg {
            ClientMsg::Authenticate { token, .. } => {
                if is_user {
                    return self.error(code::ALREADY_AUTHENTICATED, "already authenticated", id);
                }
                match self.verify_token(&token) {
                    Ok(identity) => self.become_user(identity),
                    Err(message) => {
                        self.error(code::AUTH_FAILED, message, id);
                        self.start_close(close_code::AUTH_FAILED, "authentication failed");
                    }
                }
            }
            ClientMsg::Subscribe { topic, .. } => {
                if !known {
                    return self.error(code::NOT_AUTHENTICATED, "authenticate first", id);
                }
                if !valid_topic(&topic) {
                    return self.error(code::INVALID_TOPIC, "invalid topic name", id);
                }
                if topic.starts_with("user:")
                    && self.personal_topic().as_deref() != Some(topic.as_ref())
                {
                    return self.error(code::FORBIDDEN, "a user topic is only for its user", id);
                }
                if self.h.subs.borrow().len() >= self.app().limits().max_subscriptions as usize {
                    return self.error(
                        code::TOO_MANY_SUBSCRIPTIONS,
                        "subscription limit reached",
                        id,
                    );
                }
                let own = self.personal_topic().as_deref() == Some(topic.as_ref());
                let decision = if own {
                    Some(true)
                } else {
                    match self.app().namespace(&topic) {
                        Some(ns) => self.decide(&ns.subscribe, &topic),
                        None => Some(false),
                    }
                };
                match decision {
                    Some(true) => {
                        let joined = self.join(&topic, Some(server::subscribed(&topic, id)));
                        announce_join(&shard, &self.h, &topic, joined);
                    }
                    Some(false) => self.error(
                        code::FORBIDDEN,
                        "not allowed to subscribe to this topic",
                        id,
                    ),
                    None => {
                        let (shard2, t, idc) = (shard.clone(), topic.to_string(), id.cloned());
                        let url = self.app().hooks.subscribe.clone();
                        self.ask(url, "subscribe", &topic, None, id.cloned(), move |h, _| {
                            let ready = Some(server::subscribed(&t, idc.as_ref()));
                            let joined = join_topic(&shard2, h, &t, ready);
                            announce_join(&shard2, h, &t, joined);
                        });
                    }
                }
            }
            ClientMsg::Unsubscribe { topic } => {
                if self.personal_topic().as_deref() == Some(topic.as_ref()) {
                    return self.error(code::FORBIDDEN, "the personal topic cannot be left", id);
                }
                let key = self.app().scope(&topic);
                if shard
                    .hub
                    .borrow_mut()
                    .unsubscribe(&self.h, &key, &shard.mesh, c)
                {
                    self.reply(server::unsubscribed(&topic, id));
                    announce(&shard, &self.h, &topic, "leave");
                } else {
                    self.error(code::NOT_SUBSCRIBED, "not subscribed to this topic", id);
                }
            }
            ClientMsg::Publish { topic, data, .. } => {
                if !known {
                    return self.error(code::NOT_AUTHENTICATED, "authenticate first", id);
                }
                if !valid_topic(&topic) {
                    return self.error(code::INVALID_TOPIC, "invalid topic name", id);
                }
                if topic.starts_with("user:") {
                    return self.error(
                        code::FORBIDDEN,
                        "clients cannot publish to user topics",
                        id,
                    );
                }
                let decision = match self.app().namespace(&topic) {
                    Some(ns) => self.decide(&ns.publish, &topic),
                    None => Some(false),
                };
                let frame = server::message(server::Via::Topic(&topic), &data);
                let key = self.app().scope(&topic);
                match decision {
                    Some(true) => {
                        publish_from(&shard, &key, &frame);
                        if let Some(id) = id {
                            self.reply(server::ack(id));
                        }
                    }
                    Some(false) => self.error(
                        code::FORBIDDEN,
                        "client publishing is not allowed on this topic",
                        id,
                    ),
                    None => {
                        let (shard2, idc) = (shard.clone(), id.cloned());
                        let url = self.app().hooks.publish.clone();
                        self.ask(
                            url,
                            "publish",
                            &topic,
                            Some(data.encode()),
                            id.cloned(),
                            move |h, c| {
                                publish_from(&shard2, &key, &frame);
                                if let Some(id) = &idc {
                                    crate::hub::send(h, &server::ack(id), c);
                                }
                            },
                        );
                    }
                }
            }
            ClientMsg::Ping => {
                let ident = self.h.identity.borrow();
                let (t, u) = match ident.as_ref() {
                    Some(i) => (Some(&*i.user_type), i.user_id.as_deref()),
                    None => (None, None),
                };
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let f = server::pong(t, u, ts, id);
                drop(ident);
                self.reply(f);
            }
            ClientMsg::Custom {
                message_type,
                payload,
            } => {
                let Some(url) = self.app().hooks.custom.clone() else {
                    return self.error(
                        code::UNSUPPORTED,
                        "no backend hook is configured for custom messages",
                        id,
                    );
                };
                let body = format!(
                    r#"{{"event":"custom","app":{},"conn_id":"{}","user":{},"message_type":{},"payload":{}}}"#,
                    serde_json::to_string(&*self.app().name).unwrap_or_default(),
                    self.h.conn_id(),
                    self.user_json().unwrap_or(serde_json::Value::Null),
                    serde_json::to_string(message_type.as_ref()).unwrap_or_default(),
                    payload.encode(),
                );
                let id = id.cloned();
                self.call_hook(url, body, move |h, c, answer| match answer {
                    Ok(data) => {
                        crate::hub::send(h, &server::reply(id.as_ref(), &data), c);
                    }
                    Err(message) => {
                        crate::hub::send(
                            h,
                            &server::error(code::HOOK_FAILED, &message, id.as_ref()),
                            c,
                        );
                    }
                });
            }
        }
    }

    /// Check a token from an `authenticate` message.
    fn verify_token(&self, token: &str) -> Result<Identity, &'static str> {
        super::identify::from_token(&self.shard.global, self.app(), token)
    }

    /// Ask a hook (`subscribe` or `publish`) whether this connection may act on `topic`;
    /// `allowed` runs on this shard when the backend answers `{"allow": true}`.
    fn ask<F>(
        &self,
        url: Option<Arc<str>>,
        event: &'static str,
        topic: &str,
        data: Option<String>,
        id: Option<RequestId>,
        allowed: F,
    ) where
        F: FnOnce(&Rc<ConnHandle>, &crate::metrics::ShardCounters) + 'static,
    {
        let Some(url) = url else {
            return self.error(
                code::FORBIDDEN,
                "this namespace needs a backend decision, and no hook is configured",
                id.as_ref(),
            );
        };
        let body = format!(
            r#"{{"event":"{event}","app":{},"conn_id":"{}","user":{},"topic":"{topic}","data":{}}}"#,
            serde_json::to_string(&*self.app().name).unwrap_or_default(),
            self.h.conn_id(),
            self.user_json().unwrap_or(serde_json::Value::Null),
            data.as_deref().unwrap_or("null"),
        );
        self.call_hook(url, body, move |h, c, answer| {
            let yes =
                matches!(&answer, Ok(v) if v.get("allow").and_then(|a| a.as_bool()) == Some(true));
            let refusal = match answer {
                Ok(_) if yes => {
                    if h.close_requested().is_none() {
                        allowed(h, c);
                    }
                    return;
                }
                Ok(_) => server::error(code::FORBIDDEN, "the backend refused this", id.as_ref()),
                Err(message) => server::error(code::HOOK_FAILED, &message, id.as_ref()),
            };
            crate::hub::send(h, &refusal, c);
        });
    }

    /// Call a hook in a task of its own; `done` runs on this shard with the backend's JSON
    /// answer (`Ok`) or a client-facing error message (`Err`).
    fn call_hook<F>(&self, url: Arc<str>, body: String, done: F)
    where
        F: FnOnce(
                &Rc<ConnHandle>,
                &crate::metrics::ShardCounters,
                Result<simd_json::OwnedValue, String>,
            ) + 'static,
    {
        let shard = self.shard.clone();
        let h = self.h.clone();
        let (hooks, secret, timeout) = (
            shard.global.hooks.clone(),
            self.app().secret.clone(),
            self.app().hooks.timeout,
        );
        monoio::spawn(async move {
            let answer = match hooks.call(url, secret, Bytes::from(body), timeout).await {
                Ok(a) if (200..300).contains(&a.status) => {
                    let mut b = a.body.to_vec();
                    simd_json::to_owned_value(&mut b)
                        .map_err(|_| "the backend answered invalid JSON".to_owned())
                }
                Ok(a) => Err(format!("the backend answered HTTP {}", a.status)),
                Err(e) => Err(e.to_string()),
            };
            done(&h, shard.counters(), answer);
        });
    }
}

/// Publish a client's (or hook-approved) frame on this node and to the broker.
fn publish_from(shard: &Rc<Shard>, key: &Arc<str>, frame: &Bytes) {
    shard
        .hub
        .borrow()
        .publish(key, frame, &shard.mesh, shard.counters());
    // A client's publish is fire-and-forget: when the other nodes cannot be reached it
    // is delivered on this node only, and the broker counts the failure.
    let _ = shard
        .global
        .broker
        .forward(Outbound::Topic { topic: key, frame });
}

/// Tell a topic's subscribers that this connection's user joined or left it, when the
/// topic's namespace has `join_leave` on (typing/"who is here" lists in chat rooms).
fn announce(shard: &Rc<Shard>, h: &ConnHandle, topic: &str, kind: &'static str) {
    let app = &shard.global.apps[h.app as usize];
    if !app.namespace(topic).is_some_and(|n| n.join_leave) || topic.starts_with("user:") {
        return;
    }
    let ident = h.identity.borrow();
    let (t, u) = ident.as_ref().map_or(("anonymous", None), |i| {
        (&*i.user_type, i.user_id.as_deref())
    });
    let frame = server::presence_event(kind, topic, t, u);
    drop(ident);
    publish_from(shard, &app.scope(topic), &frame);
}

/// Join `topic` of the connection's app; the registry tracks it when the topic's
/// namespace has `presence` on (never the personal topic: the user map covers it).
/// A client's subscribe is a join for the topic's other members, unless it was a
/// member already (subscribing twice must not announce twice).
fn announce_join(shard: &Rc<Shard>, h: &ConnHandle, topic: &str, joined: Joined) {
    if joined != Joined::Already {
        announce(shard, h, topic, "join");
    }
}

fn join_topic(shard: &Rc<Shard>, h: &Rc<ConnHandle>, topic: &str, ready: Option<Bytes>) -> Joined {
    let app = &shard.global.apps[h.app as usize];
    let track = !topic.starts_with("user:") && app.namespace(topic).is_some_and(|n| n.presence);
    let key = app.scope(topic);
    shard
        .hub
        .borrow_mut()
        .subscribe(h, key, ready, track, &shard.mesh, shard.counters())
}
