//! Apps: isolated tenants on one server. Every connection belongs to one app (through the
//! endpoint it connected to); topics, users, broadcasts and API keys are per app, so a
//! message published in app A can never reach a connection of app B, whatever the topic
//! names. Isolation is structural: the hub keys every topic by [`App::scope`], which
//! prefixes the app's index with a separator that no valid topic contains.
//!
//! An [`App`] is the compiled, read-only form of an app's configuration (from the config
//! file, or from flags for a one-app server) that the shards consult on the connection
//! and message paths: its settings, its JWT verifier, and its hook URLs.
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::file::{
    expand, Access, AppConfig, AuthPolicy, EndpointConfig, JwtConfig, Limits, NamespaceConfig,
};

use crate::auth::{KeySource, Verifier, VerifyOptions};

/// Separator between app index and topic in scoped keys; not in the topic alphabet.
pub const SCOPE_SEP: char = '|';

/// The app's backend hook URLs, shared so a call does not copy them.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub connect: Option<Arc<str>>,
    pub disconnect: Option<Arc<str>>,
    pub subscribe: Option<Arc<str>>,
    pub publish: Option<Arc<str>>,
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
    pub verifier: Option<Verifier>,
    pub hooks: Hooks,
    /// The app's settings as configured (endpoints, namespaces, limits).
    pub config: AppConfig,
}

impl App {
    /// Compile an app's configuration. Fails on keys that cannot be loaded.
    pub fn from_config(index: u16, name: &str, config: AppConfig) -> Result<App, String> {
        let verifier = verifier(&config.jwt).map_err(|e| format!("app `{name}`: {e}"))?;
        let arc = |s: &Option<String>| s.as_deref().map(Arc::from);
        let h = &config.hooks;
        Ok(App {
            index,
            name: name.into(),
            api_key: config.api_key.clone(),
            secret: Arc::from(config.secret.clone().unwrap_or_default().into_bytes()),
            verifier,
            hooks: Hooks {
                connect: arc(&h.connect),
                disconnect: arc(&h.disconnect),
                subscribe: arc(&h.subscribe),
                publish: arc(&h.publish),
                custom: arc(&h.custom),
                timeout: h.timeout,
            },
            config,
        })
    }

    /// The one app of a server configured by flags: endpoint `/ws`. In dev mode anyone may
    /// connect, subscribe and publish; otherwise connections must authenticate, may
    /// subscribe, and may not publish.
    pub fn from_flags(cfg: &crate::config::Config) -> Result<App, String> {
        let (auth, subscribe, publish) = if cfg.dev {
            (AuthPolicy::Optional, Access::Anyone, Access::Anyone)
        } else {
            (AuthPolicy::Required, Access::Authenticated, Access::Nobody)
        };
        let config = AppConfig {
            api_key: cfg.api_key.clone(),
            secret: None,
            jwt: cfg.jwt.clone(),
            limits: Limits {
                max_connections_per_user: cfg.max_connections_per_user as u32,
                max_subscriptions: cfg.max_subscriptions as u32,
                max_message_size: cfg.max_message as u64,
                // Saturates: an unlimited (infinite) rate becomes u32::MAX per second.
                messages_per_second: cfg.messages_per_second as u32,
                message_burst: cfg.message_burst as u32,
                outbound_queue: cfg.max_outbound as u64,
                connect_attempts_per_ip_per_minute: cfg.connect_attempts_per_ip_per_minute,
            },
            hooks: Default::default(),
            endpoints: vec![EndpointConfig {
                path: "/ws".into(),
                auth,
                ping_interval: cfg.ping_interval,
                allowed_origins: cfg.allowed_origins.clone(),
                subscribe: Vec::new(),
            }],
            namespaces: vec![NamespaceConfig {
                name: String::new(),
                subscribe,
                publish,
                presence: true,
                join_leave: false,
                history_size: 0,
                history_ttl: Duration::from_secs(3600),
            }],
        };
        App::from_config(0, "default", config)
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    pub fn endpoints(&self) -> &[EndpointConfig] {
        &self.config.endpoints
    }

    /// The hub key of `topic` in this app.
    pub fn scope(&self, topic: &str) -> Arc<str> {
        scope(self.index, topic)
    }

    /// The namespace governing `topic`: its prefix before the first `:`, else the default.
    pub fn namespace(&self, topic: &str) -> Option<&NamespaceConfig> {
        self.config.namespace(topic)
    }
}

/// The JWT verifier an app's settings describe (`None` without keys).
pub fn verifier(jwt: &JwtConfig) -> Result<Option<Verifier>, String> {
    if !jwt.has_keys() {
        return Ok(None);
    }
    let mut keys: Vec<KeySource> = jwt
        .hs256_secrets
        .iter()
        .map(|s| KeySource::Hs256Secret(s.clone().into_bytes()))
        .collect();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    if let Some(p) = &jwt.rs256_public_key_file {
        keys.push(KeySource::Rs256PublicPem(read(p)?));
    }
    if let Some(p) = &jwt.es256_public_key_file {
        keys.push(KeySource::Es256PublicPem(read(p)?));
    }
    let opts = VerifyOptions {
        audience: jwt.audience.clone(),
        issuer: jwt.issuer.clone(),
        leeway_secs: 30,
        require_exp: false,
    };
    Verifier::new(keys, opts)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The hub key of `topic` in app `index`.
pub fn scope(index: u16, topic: &str) -> Arc<str> {
    let mut s = String::with_capacity(topic.len() + 6);
    s.push_str(&index.to_string());
    s.push(SCOPE_SEP);
    s.push_str(topic);
    s.into()
}

/// The app index and topic of a scoped key.
pub fn unscope(key: &str) -> Option<(u16, &str)> {
    let (a, t) = key.split_once(SCOPE_SEP)?;
    Some((a.parse().ok()?, t))
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
}
