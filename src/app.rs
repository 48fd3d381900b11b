//! Apps: isolated tenants on one server. Every connection belongs to one app (through the
//! endpoint it connected to); topics, users, broadcasts and API keys are per app, so a
//! message published in app A can never reach a connection of app B, whatever the topic
//! names. Isolation is structural: the hub keys every topic by [`App::scope`], which
//! prefixes the app's index with a separator that no valid topic contains.
//!
//! An [`App`] is the compiled, read-only form of an app's configuration that the shards
//! consult on the connection and message paths.
use std::sync::Arc;
use std::time::Duration;

/// Separator between app index and topic in scoped keys; not in the topic alphabet.
pub const SCOPE_SEP: char = '|';

/// Who may connect to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPolicy {
    /// A token (or the connect hook) must authenticate the connection.
    Required,
    /// Anonymous connections are allowed; they may authenticate later.
    Optional,
    /// Public endpoint: no authentication at all.
    None,
}

/// A WebSocket endpoint of an app.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Path template, e.g. `/ws/blog/posts/{post_id}/`.
    pub path: String,
    pub auth: AuthPolicy,
    pub ping_interval: Duration,
    /// Allowed `Origin` values; empty = any.
    pub allowed_origins: Vec<String>,
    /// Topic templates joined on connect, e.g. `post:{post_id}`.
    pub subscribe: Vec<String>,
}

/// Who may do something with a topic of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Anyone,
    Authenticated,
    Role(String),
    /// Listed in the token's `topics` claim.
    Token,
    /// The topic's last `:` segment is the user's id.
    Owner,
    /// Ask the app's subscribe hook.
    Hook,
    Nobody,
}

/// Rules for topics whose name starts with `name:`.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// `""` is the default namespace (topics without a known prefix).
    pub name: String,
    pub subscribe: Access,
    pub publish: Access,
    pub presence: bool,
    pub join_leave: bool,
    pub history_size: usize,
    pub history_ttl: Duration,
}

/// Per-app limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections_per_user: usize,
    pub max_subscriptions: usize,
    pub max_message: usize,
    /// Client messages per second (token bucket refill rate).
    pub messages_per_second: f64,
    /// Token bucket size.
    pub message_burst: f64,
    pub max_outbound: usize,
    pub connect_attempts_per_ip_per_minute: u32,
}

/// The app's backend hooks (absolute http(s) URLs).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub connect: Option<Arc<str>>,
    pub disconnect: Option<Arc<str>>,
    pub subscribe: Option<Arc<str>>,
    pub custom: Option<Arc<str>>,
    pub timeout: Duration,
}

pub struct App {
    /// Position in the server's app table; used in scoped keys.
    pub index: u16,
    pub name: Arc<str>,
    pub api_key: Option<String>,
    /// HMAC key for hook signatures.
    pub secret: Arc<[u8]>,
    pub limits: Limits,
    pub hooks: Hooks,
    pub endpoints: Vec<Endpoint>,
    pub namespaces: Vec<Namespace>,
}

impl App {
    /// The one app of a server configured by flags: endpoint `/ws`; in dev mode anyone
    /// may connect, subscribe and publish; otherwise connections must authenticate and
    /// clients may subscribe (their personal topic only by them) but not publish.
    pub fn from_flags(cfg: &crate::config::Config) -> App {
        let (auth, subscribe, publish) = if cfg.dev {
            (AuthPolicy::Optional, Access::Anyone, Access::Anyone)
        } else {
            (AuthPolicy::Required, Access::Authenticated, Access::Nobody)
        };
        App {
            index: 0,
            name: "default".into(),
            api_key: cfg.api_key.clone(),
            secret: Arc::from(&b""[..]),
            limits: Limits {
                max_connections_per_user: cfg.max_connections_per_user,
                max_subscriptions: cfg.max_subscriptions,
                max_message: cfg.max_message,
                messages_per_second: cfg.messages_per_second,
                message_burst: cfg.message_burst,
                max_outbound: cfg.max_outbound,
                connect_attempts_per_ip_per_minute: cfg.connect_attempts_per_ip_per_minute,
            },
            hooks: Hooks {
                timeout: Duration::from_secs(5),
                ..Hooks::default()
            },
            endpoints: vec![Endpoint {
                path: "/ws".into(),
                auth,
                ping_interval: cfg.ping_interval,
                allowed_origins: cfg.allowed_origins.clone(),
                subscribe: Vec::new(),
            }],
            namespaces: vec![Namespace {
                name: String::new(),
                subscribe,
                publish,
                presence: false,
                join_leave: false,
                history_size: 0,
                history_ttl: Duration::ZERO,
            }],
        }
    }

    /// The hub key of `topic` in this app.
    pub fn scope(&self, topic: &str) -> Arc<str> {
        scope(self.index, topic)
    }

    /// The namespace governing `topic`: its prefix before the first `:`, else the default.
    pub fn namespace(&self, topic: &str) -> Option<&Namespace> {
        let prefix = topic.split_once(':').map_or("", |(p, _)| p);
        self.namespaces
            .iter()
            .find(|n| n.name == prefix)
            .or_else(|| self.namespaces.iter().find(|n| n.name.is_empty()))
    }
}

/// The hub key of `topic` in app `index`.
pub fn scope(index: u16, topic: &str) -> Arc<str> {
    let mut s = String::with_capacity(topic.len() + 6);
    s.push_str(itoa(index).as_str());
    s.push(SCOPE_SEP);
    s.push_str(topic);
    s.into()
}

/// The app index and topic of a scoped key.
pub fn unscope(key: &str) -> Option<(u16, &str)> {
    let (a, t) = key.split_once(SCOPE_SEP)?;
    Some((a.parse().ok()?, t))
}

fn itoa(n: u16) -> String {
    n.to_string()
}

/// Match a path against a template with `{name}` segments; returns the parameters.
pub fn match_path(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut t = template.split('/');
    let mut p = path.split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) => {
                if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if ps.is_empty() {
                        return None;
                    }
                    params.push((name.to_owned(), ps.to_owned()));
                } else if ts != ps {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Fill `{name}` placeholders of a topic template.
pub fn expand(template: &str, params: &[(String, String)]) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 1..end];
        out.push_str(&params.iter().find(|(k, _)| k == name)?.1);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoping_is_reversible_and_separates_apps() {
        let k = scope(3, "chat:1");
        assert_eq!(&*k, "3|chat:1");
        assert_eq!(unscope(&k), Some((3, "chat:1")));
        assert_ne!(scope(1, "x"), scope(2, "x"));
        assert!(
            !crate::protocol::valid_topic("1|x"),
            "no topic can contain the separator"
        );
    }

    #[test]
    fn path_templates() {
        let p = match_path("/ws/blog/posts/{post_id}/", "/ws/blog/posts/42/").unwrap();
        assert_eq!(p, vec![("post_id".to_owned(), "42".to_owned())]);
        assert!(match_path("/ws/blog/posts/{post_id}/", "/ws/blog/posts/42").is_none());
        assert!(match_path("/ws/blog/posts/{post_id}/", "/ws/blog/posts//").is_none());
        assert_eq!(match_path("/ws", "/ws"), Some(vec![]));
        assert!(match_path("/ws", "/wss").is_none());
        assert_eq!(expand("post:{post_id}", &p).as_deref(), Some("post:42"));
        assert_eq!(expand("post:{nope}", &p), None);
    }
}
