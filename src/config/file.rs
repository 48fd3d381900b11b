//! The configuration file (`ringcast.toml`): a typed serde model of the server
//! section, the apps (tenants) with their JWT keys, limits, backend hooks, WebSocket
//! endpoints and topic namespaces; [`parse`] / [`load`] to read it (TOML syntax errors
//! and unknown keys carry line and column), [`FileConfig::apply_env`] for
//! `RINGCAST_*` environment overrides, [`FileConfig::validate`] to explain mistakes
//! with the dotted path of the offending key, [`example`] to write a fully commented
//! starting point, and the helpers the server needs at run time: [`namespace_of`],
//! [`AppConfig::namespace`], [`EndpointConfig::match_path`], [`expand`] and
//! [`EndpointConfig::origin_allowed`].
//!
//! Durations are strings with units (`"500ms"`, `"25s"`, `"1h30m"`; units `ms`, `s`,
//! `m`, `h`, `d`); sizes are integers (bytes) or strings (`"64KiB"`, `"1MiB"`, `"10MB"`;
//! `KiB`/`MiB`/`GiB` are powers of 1024, `KB`/`MB`/`GB` powers of 1000).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;

// ---------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Process-wide settings (`[server]`).
    pub server: ServerSection,
    /// The apps (tenants), keyed by name (`[apps.NAME]`). Names use letters, digits,
    /// `-` and `_`; a message for one app never reaches a connection of another.
    pub apps: BTreeMap<String, AppConfig>,
}

/// `[server]`: settings of the process as a whole.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address (IP:port) the WebSocket and HTTP listener binds to. Default `0.0.0.0:8080`.
    pub listen: String,
    /// Number of shards (threads pinned to cores); 0 = one per core. Default 0.
    pub shards: usize,
    /// Separate address (IP:port) for the HTTP API and health routes; unset = served on
    /// `listen`. Default unset.
    pub admin_listen: Option<String>,
    /// Key that authorizes API calls for every app (`Authorization: apikey KEY`).
    /// Default unset (only the per-app keys work).
    pub admin_key: Option<String>,
    /// Redis URL (`redis://[:password@]host:port[/db]`): this node joins the fleet of
    /// every node using the same Redis. Default unset (one node, in-memory broker).
    pub redis: Option<String>,
    /// Redis Cluster seed URLs, instead of `redis` (topics use sharded pub/sub).
    /// Default empty.
    pub redis_cluster: Vec<String>,
    /// This node's id in the fleet (letters, digits, `_`). Default: random at start.
    pub node_id: Option<String>,
    /// How long a presence entry lives without being refreshed. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub presence_ttl: Duration,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or a
    /// `tracing` env-filter directive such as `ringcast=debug,info`. Default `info`.
    pub log_level: String,
    /// Development mode: relaxed checks, the demo page and `/echo`. Default false.
    pub dev: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "0.0.0.0:8080".into(),
            shards: 0,
            admin_listen: None,
            admin_key: None,
            redis: None,
            redis_cluster: Vec::new(),
            node_id: None,
            presence_ttl: Duration::from_secs(60),
            log_level: "info".into(),
            dev: false,
        }
    }
}

/// `[apps.NAME]`: one tenant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    /// Key the app's backend sends to the HTTP API (`Authorization: apikey KEY`).
    /// Required, here or through `RINGCAST_APP_<NAME>_API_KEY`; unique across apps.
    pub api_key: Option<String>,
    /// HMAC-SHA256 key that signs requests to the backend hooks. Required when any
    /// hook is set, here or through `RINGCAST_APP_<NAME>_SECRET`.
    pub secret: Option<String>,
    /// How client JWTs are verified (`[apps.NAME.jwt]`).
    pub jwt: JwtConfig,
    /// Per-app limits (`[apps.NAME.limits]`).
    pub limits: Limits,
    /// Backend HTTP hooks (`[apps.NAME.hooks]`).
    pub hooks: Hooks,
    /// WebSocket endpoints (`[[apps.NAME.endpoints]]`); at least one.
    pub endpoints: Vec<EndpointConfig>,
    /// Topic namespaces (`[[apps.NAME.namespaces]]`). A topic whose namespace is not
    /// listed (and with no default namespace) cannot be used by clients.
    pub namespaces: Vec<NamespaceConfig>,
}

/// `[apps.NAME.jwt]`: keys and expectations for client tokens. Any number of the key
/// kinds may be set; the token's `alg` header picks one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 secrets (at least 32 characters each); several allow rotation: a token
    /// signed with any of them is accepted. Default none.
    pub hs256_secrets: Vec<String>,
    /// PEM file with the RS256 public key (relative paths are relative to the config
    /// file when read with [`load`]). Default unset.
    pub rs256_public_key_file: Option<PathBuf>,
    /// PEM file with the ES256 (P-256) public key, resolved like the RS256 one.
    /// Default unset.
    pub es256_public_key_file: Option<PathBuf>,
    /// Required `aud` claim; unset = not checked. Default unset.
    pub audience: Option<String>,
    /// Required `iss` claim; unset = not checked. Default unset.
    pub issuer: Option<String>,
}

impl JwtConfig {
    /// True when at least one verification key is configured.
    pub fn has_keys(&self) -> bool {
        !self.hs256_secrets.is_empty()
            || self.rs256_public_key_file.is_some()
            || self.es256_public_key_file.is_some()
    }
}

/// `[apps.NAME.limits]`: every limit must be at least 1.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most simultaneous connections of one user (JWT `sub`). Default 10.
    pub max_connections_per_user: u32,
    /// Most topics one connection may subscribe to. Default 100.
    pub max_subscriptions: u32,
    /// Largest message (in bytes) a client may send. Default `64KiB`.
    #[serde(deserialize_with = "de_size")]
    pub max_message_size: u64,
    /// Sustained client message rate per connection (token-bucket refill). Default 20.
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst (token-bucket capacity). Default 40.
    pub message_burst: u32,
    /// Bytes queued to one connection beyond which it is closed as a slow consumer.
    /// Default `1MiB`.
    #[serde(deserialize_with = "de_size")]
    pub outbound_queue: u64,
    /// Connection attempts one IP address may make per minute; 0 = no limit (use 0 behind
    /// a proxy or load balancer, where every client shares its address). Default 600.
    pub connect_attempts_per_ip_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_user: 10,
            max_subscriptions: 100,
            max_message_size: 64 * 1024,
            messages_per_second: 20,
            message_burst: 40,
            outbound_queue: 1024 * 1024,
            connect_attempts_per_ip_per_minute: 600,
        }
    }
}

/// `[apps.NAME.hooks]`: HTTP(S) URLs of the backend, each optional. Requests are
/// signed with the app's `secret` (HMAC-SHA256).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Called when a client connects; may authenticate it and return initial topics.
    pub connect: Option<String>,
    /// Called (fire and forget) after a client disconnected.
    pub disconnect: Option<String>,
    /// Asked whether a client may subscribe to a topic of a namespace with
    /// `subscribe = "hook"`.
    pub subscribe: Option<String>,
    /// Asked whether a client may publish to a topic of a namespace with
    /// `publish = "hook"`.
    pub publish: Option<String>,
    /// Receives custom (RPC-style) messages from clients.
    pub custom: Option<String>,
    /// How long to wait for the backend before giving up. Default `2s`.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            connect: None,
            disconnect: None,
            subscribe: None,
            publish: None,
            custom: None,
            timeout: Duration::from_secs(2),
        }
    }
}

impl Hooks {
    /// The configured hooks as `(key name, url)` pairs.
    pub fn urls(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("connect", &self.connect),
            ("disconnect", &self.disconnect),
            ("subscribe", &self.subscribe),
            ("publish", &self.publish),
            ("custom", &self.custom),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// `[[apps.NAME.endpoints]]`: one WebSocket path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Path template: segments are literal or `{name}` (e.g. `/ws/posts/{post_id}/`); a
    /// trailing slash must match as written. Required.
    pub path: String,
    /// Who may connect. Default `required`.
    #[serde(default)]
    pub auth: AuthPolicy,
    /// Interval between server pings to an idle connection. Default `25s`.
    #[serde(default = "default_ping", deserialize_with = "de_duration")]
    pub ping_interval: Duration,
    /// Allowed `Origin` headers (`https://example.com`, `https://*.example.com`,
    /// `http://localhost:3000`); empty = any origin. Default empty.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Topics every connection is subscribed to on connect; `{name}` is replaced by the
    /// path parameter of that name (e.g. `post:{post_id}`). Default empty.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

fn default_ping() -> Duration {
    Duration::from_secs(25)
}

/// Authentication policy of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthPolicy {
    /// A valid token (or a connect hook's approval) is required.
    #[default]
    Required,
    /// Anonymous connections are allowed; a token, when given, must be valid.
    Optional,
    /// Public endpoint: no authentication at all (written `none`).
    #[serde(rename = "none", alias = "public")]
    Public,
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthPolicy::Required => "required",
            AuthPolicy::Optional => "optional",
            AuthPolicy::Public => "none",
        })
    }
}

/// `[[apps.NAME.namespaces]]`: rules for the topics `NAME:...`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Topic prefix before the first `:` (`chat` covers `chat:lobby`). `""` or
    /// `"default"` covers topics without a listed prefix. Required.
    pub name: String,
    /// Who may subscribe. Default `authenticated`.
    #[serde(default = "default_subscribe")]
    pub subscribe: Access,
    /// Who may publish from a client connection (the HTTP API always may). Default `none`.
    #[serde(default = "default_publish")]
    pub publish: Access,
    /// Track who is subscribed (presence queries). Default false.
    #[serde(default)]
    pub presence: bool,
    /// Send join/leave events to subscribers. Default false.
    #[serde(default)]
    pub join_leave: bool,
    /// Messages kept per topic for recovery and history; 0 = none. Default 0.
    #[serde(default)]
    pub history_size: u32,
    /// Age after which kept messages are dropped. Default `1h`.
    #[serde(default = "default_history_ttl", deserialize_with = "de_duration")]
    pub history_ttl: Duration,
}

fn default_subscribe() -> Access {
    Access::Authenticated
}
fn default_publish() -> Access {
    Access::Nobody
}
fn default_history_ttl() -> Duration {
    Duration::from_secs(3600)
}

impl NamespaceConfig {
    /// True for the namespace that covers topics without a listed prefix.
    pub fn is_default(&self) -> bool {
        self.name.is_empty() || self.name == "default"
    }
}

/// Who may do something with a topic. Written as a string: `anyone`, `authenticated`,
/// `role:NAME`, `token`, `owner`, `hook`, `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every connection, anonymous ones included (`anyone`).
    Anyone,
    /// Every connection with a valid token (`authenticated`).
    Authenticated,
    /// Connections whose JWT `roles` claim contains the role (`role:staff`).
    Role(String),
    /// Connections whose JWT `topics` claim lists the topic (`token`).
    Token,
    /// The topic's last `:`-separated segment equals the user id, as in
    /// `user:{id}` or `user:{type}:{id}` (`owner`).
    Owner,
    /// The backend decides through the `subscribe` / `publish` hook (`hook`).
    Hook,
    /// No client at all (`none`).
    Nobody,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Anyone => f.write_str("anyone"),
            Access::Authenticated => f.write_str("authenticated"),
            Access::Role(r) => write!(f, "role:{r}"),
            Access::Token => f.write_str("token"),
            Access::Owner => f.write_str("owner"),
            Access::Hook => f.write_str("hook"),
            Access::Nobody => f.write_str("none"),
        }
    }
}

impl std::str::FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "anyone" => Access::Anyone,
            "authenticated" => Access::Authenticated,
            "token" => Access::Token,
            "owner" => Access::Owner,
            "hook" => Access::Hook,
            "none" | "nobody" => Access::Nobody,
            _ => match s.strip_prefix("role:") {
                Some(role) => Access::Role(role.to_string()),
                None => {
                    return Err(format!(
                        "unknown access rule `{s}`, expected one of `anyone`, `authenticated`, \
                         `role:NAME`, `token`, `owner`, `hook`, `none`"
                    ))
                }
            },
        })
    }
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Access;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an access rule string such as \"authenticated\" or \"role:staff\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Access, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong value type; the message (from the
    /// `toml` crate) shows the line, column and the offending text.
    #[error("{}{source}", file.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when read with [`load`].
        file: Option<PathBuf>,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// The `toml` crate's error.
        source: Box<toml::de::Error>,
    },
    /// A `RINGCAST_*` environment variable has a bad name or value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// One mistake found by [`FileConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the offending key, e.g. `apps.main.endpoints[1].path`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

// ---------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------

/// Parses configuration text. Relative key-file paths are kept as written (relative
/// to the working directory); [`load`] resolves them against the file's directory.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError::Parse {
            file: None,
            line,
            column,
            source: Box::new(e),
        }
    })
}

/// Reads and parses a configuration file. Relative `*_public_key_file` paths are made
/// relative to the directory of `path`.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut cfg = parse(&text).map_err(|e| match e {
        ConfigError::Parse {
            line,
            column,
            source,
            ..
        } => ConfigError::Parse {
            file: Some(path.to_path_buf()),
            line,
            column,
            source,
        },
        other => other,
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    for app in cfg.apps.values_mut() {
        for f in [
            &mut app.jwt.rs256_public_key_file,
            &mut app.jwt.es256_public_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if f.is_relative() {
                *f = dir.join(&*f);
            }
        }
    }
    Ok(cfg)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

// ---------------------------------------------------------------------------------
// Durations and sizes
// ---------------------------------------------------------------------------------

/// Parses a duration such as `"500ms"`, `"25s"`, `"1h30m"` or `"1h 30m"` (units `ms`,
/// `s`, `m`, `h`, `d`; whole numbers only; every number needs a unit).
/// Whether `url` is a Redis URL this server can use. The message does not repeat the
/// URL (it may hold a password).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    if url.starts_with("rediss://") {
        Err("TLS to Redis (rediss://) is not supported yet; reach Redis over a private network or a TLS tunnel and use redis://".into())
    } else if !url.starts_with("redis://") || url.len() <= "redis://".len() {
        Err("not a redis:// URL, e.g. \"redis://127.0.0.1:6379/0\"".into())
    } else {
        Ok(())
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. \"25s\", \"500ms\" or \"1h\"".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration \"{s}\": expected a whole number followed by a unit \
                 (ms, s, m, h, d), e.g. \"25s\" or \"1500ms\""
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration \"{s}\" is too large"))?;
        rest = rest[digits..].trim_start();
        let ulen = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..ulen] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "invalid duration \"{s}\": {n} has no unit; write e.g. \"{n}s\" or \"{n}ms\""
                ))
            }
            u => {
                return Err(format!(
                    "invalid duration \"{s}\": unknown unit \"{u}\" (use ms, s, m, h or d)"
                ))
            }
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("duration \"{s}\" is too large"))?;
        rest = rest[ulen..].trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it (`"1h30m"`, `"500ms"`, `"0s"`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

/// Parses a size: a plain number of bytes (`"65536"`) or a number with a unit (`"64KiB"`,
/// `"1 MiB"`, `"10MB"`, `"512B"`); units are case-insensitive, `KiB`/`MiB`/`GiB` are
/// powers of 1024, `KB`/`MB`/`GB` powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid size \"{s}\": expected a whole number of bytes, optionally with a unit, \
             e.g. 65536, \"64KiB\" or \"1MiB\""
        ));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("size \"{s}\" is too large"))?;
    let unit = t[digits..].trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size \"{s}\": unknown unit \"{unit}\" (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size \"{s}\" is too large"))
}

/// Formats a size the way [`parse_size`] reads it (`"64KiB"`, `"1MiB"`, `"1000"`).
pub fn format_size(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"25s\", \"500ms\" or \"1h\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "durations are strings with a unit: write \"{n}s\" or \"{n}ms\", not {n}"
            )))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            self.visit_i64(n as i64)
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "durations are strings with a unit, e.g. \"1500ms\", not {n}"
            )))
        }
    }
    d.deserialize_any(V)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size: a number of bytes or a string such as \"64KiB\" or \"1MiB\"")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
            parse_size(s).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("a size cannot be negative ({n})")))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
    }
    d.deserialize_any(V)
}

// ---------------------------------------------------------------------------------
// Topics, path templates, origins
// ---------------------------------------------------------------------------------

/// The namespace of a topic: the part before the first `:`, or `""` when there is none
/// (`"chat:lobby"` → `"chat"`, `"lobby"` → `""`).
pub fn namespace_of(topic: &str) -> &str {
    topic.split_once(':').map_or("", |(ns, _)| ns)
}

impl AppConfig {
    /// The rules for a topic: the namespace named like its prefix, else the default
    /// namespace (named `""` or `"default"`), else `None` (the topic is not usable).
    pub fn namespace(&self, topic: &str) -> Option<&NamespaceConfig> {
        let ns = namespace_of(topic);
        if !ns.is_empty() {
            if let Some(n) = self.namespaces.iter().find(|n| n.name == ns) {
                return Some(n);
            }
        }
        self.namespaces.iter().find(|n| n.is_default())
    }
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A path parameter value: URL-unreserved characters only, so it cannot smuggle `:`
/// or `/` into a topic name.
fn is_param_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
}

impl EndpointConfig {
    /// Matches a request path (a query string, if any, is ignored) against this
    /// endpoint's template and returns the path parameters in template order.
    /// Literal segments must be equal; `{name}` matches one non-empty segment made of
    /// letters, digits, `-`, `.`, `_`, `~`; a trailing slash must match as written.
    pub fn match_path(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let mut t = self.path.split('/');
        let mut p = path.split('/');
        let mut params = Vec::new();
        loop {
            match (t.next(), p.next()) {
                (None, None) => return Some(params),
                (Some(ts), Some(ps)) => {
                    if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        if !is_param_value(ps) {
                            return None;
                        }
                        params.push((name.to_string(), ps.to_string()));
                    } else if ts != ps {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }

    /// True when a request with this `Origin` header (or none) may connect: any origin
    /// when `allowed_origins` is empty or holds `"*"`; otherwise the origin must equal
    /// an entry (case-insensitively), or be a subdomain of a `scheme://*.domain` entry.
    /// A missing `Origin` (non-browser client) is allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allowed_origins.is_empty() {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.allowed_origins.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            if a == "*" || a == origin {
                return true;
            }
            match a.split_once("://*.") {
                Some((scheme, domain)) => origin
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    .and_then(|host| host.strip_suffix(domain))
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => false,
            }
        })
    }
}

/// Fills a template such as `post:{post_id}` from `params`; `None` when a parameter is
/// missing or a brace is unbalanced.
pub fn expand(template: &str, params: &[(String, String)]) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return None;
        }
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let name = &after[..close];
        if name.contains('{') {
            return None;
        }
        let (_, v) = params.iter().find(|(k, _)| k == name)?;
        out.push_str(v);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The `{name}` placeholders of a template, or an error for unbalanced braces.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a `}` without a matching `{`".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a `{` without a matching `}`")?;
        let name = &after[..close];
        if !is_ident(name) {
            return Err(format!(
                "has an invalid parameter `{{{name}}}` (names use letters, digits and _)"
            ));
        }
        names.push(name);
        rest = &after[close + 1..];
    }
    Ok(names)
}

/// Longest topic name the protocol accepts, in bytes (as `protocol::MAX_TOPIC_LEN`).
const MAX_TOPIC_LEN: usize = 200;

/// The topic alphabet of the protocol (`protocol::valid_topic`), in words.
const TOPIC_ALPHABET: &str = "letters, digits and _ - : . @ / = + , ~";

/// A character allowed in topic names (and `{`/`}` of templates), as in
/// `protocol::valid_topic`.
fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '_' | '-' | ':' | '.' | '@' | '/' | '=' | '+' | ',' | '~' | '{' | '}'
        )
}

/// Checks an endpoint path template; returns its parameter names.
fn check_path(path: &str) -> Result<Vec<&str>, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "\"{path}\" must start with `/`, e.g. \"/{}\"",
            path.trim_start_matches('/')
        ));
    }
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "\"{path}\" may not contain `?`, `#`, spaces or control characters"
        ));
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    let mut names: Vec<&str> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        if seg.is_empty() && i + 1 != segs.len() {
            return Err(format!("\"{path}\" has an empty segment (`//`)"));
        }
        if seg.contains(['{', '}']) {
            let name = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|n| is_ident(n))
                .ok_or_else(|| {
                    format!(
                        "\"{path}\": segment \"{seg}\" is not valid; a parameter is a whole \
                         segment `{{name}}` with a name of letters, digits and _"
                    )
                })?;
            if names.contains(&name) {
                return Err(format!("\"{path}\" uses the parameter `{{{name}}}` twice"));
            }
            names.push(name);
        }
    }
    Ok(names)
}

/// Path with every parameter replaced by `{}`, so `/p/{a}` and `/p/{b}` compare equal.
fn path_shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn check_origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    let hint = "write it as the browser sends it: scheme://host[:port], e.g. \
                \"https://example.com\" or \"http://localhost:3000\"";
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(format!("\"{o}\" is not an origin; {hint}"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!(
            "\"{o}\" has an invalid scheme \"{scheme}\"; {hint}"
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "\"{o}\" has a path; an origin has none (no trailing `/` either); {hint}"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("\"{o}\": unclosed `[`; {hint}"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{o}\": invalid IPv6 address; {hint}"));
        }
        match after {
            "" => ("v6", None),
            p => (
                "v6",
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("\"{o}\": unexpected text after `]`"))?,
                ),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("\"{o}\" has an invalid port \"{p}\"; {hint}"));
        }
    }
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !host_ok {
        return Err(format!("\"{o}\" has an invalid host; {hint}"));
    }
    Ok(())
}

fn check_http_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("\"{u}\" is not an http:// or https:// URL, e.g. \"http://127.0.0.1:8000/realtime/connect\"")
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || u.chars().any(|c| c.is_whitespace()) {
        return Err(format!("\"{u}\" has no host or contains spaces"));
    }
    Ok(())
}

/// Checks a key or secret given in the file or the environment.
fn check_secret(s: &str) -> Option<String> {
    if s.is_empty() {
        Some("is empty".into())
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains spaces or control characters".into())
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------

/// Paths the server itself answers on the main listener.
const RESERVED_PATHS: &[&str] = &["/", "/health", "/echo"];

/// Shortest HS256 secret accepted (RFC 7518 §3.2: a key of at least 256 bits).
const MIN_HS256_LEN: usize = 32;

struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl FileConfig {
    /// Checks everything that the types alone cannot: returns every problem found
    /// (not just the first), each with the dotted path of the key and a sentence that
    /// says what is wrong. Reads the JWT public-key files to check they are PEM public
    /// keys. Call it after [`FileConfig::apply_env`].
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut p = Problems(Vec::new());
        self.validate_server(&mut p);
        if self.apps.is_empty() {
            p.add(
                "apps",
                "no app is configured; add at least one `[apps.NAME]` section",
            );
        }
        // Endpoint shape -> where it was first seen; API key -> app.
        let mut paths: HashMap<String, String> = HashMap::new();
        let mut keys: HashMap<&str, &str> = HashMap::new();
        let mut env_names: HashMap<String, &str> = HashMap::new();
        for (name, app) in &self.apps {
            let at = format!("apps.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                p.add(
                    &at,
                    format!("app name \"{name}\" may only use letters, digits, `-` and `_`"),
                );
            } else if let Some(other) = env_names.insert(env_name(name), name) {
                p.add(
                    &at,
                    format!(
                        "apps \"{other}\" and \"{name}\" have the same environment-variable \
                         name RINGCAST_APP_{}_*; rename one",
                        env_name(name)
                    ),
                );
            }
            if let Some(key) = &app.api_key {
                if let Some(other) = keys.insert(key, name) {
                    p.add(
                        format!("{at}.api_key"),
                        format!(
                            "the same API key is used by app \"{other}\"; each app needs its own"
                        ),
                    );
                }
                if self.server.admin_key.as_deref() == Some(key) {
                    p.add(
                        format!("{at}.api_key"),
                        "equals server.admin_key; the admin key must differ from every app key",
                    );
                }
            }
            self.validate_app(name, app, &at, &mut paths, &mut p);
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(p.0)
        }
    }

    fn validate_server(&self, p: &mut Problems) {
        let s = &self.server;
        if s.listen.parse::<SocketAddr>().is_err() {
            p.add(
                "server.listen",
                format!(
                    "\"{}\" is not an IP:port address, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"",
                    s.listen
                ),
            );
        }
        if let Some(a) = &s.admin_listen {
            if a.parse::<SocketAddr>().is_err() {
                p.add(
                    "server.admin_listen",
                    format!("\"{a}\" is not an IP:port address, e.g. \"127.0.0.1:9090\""),
                );
            } else if *a == s.listen {
                p.add(
                    "server.admin_listen",
                    "is the same address as server.listen; leave it unset to serve the API there",
                );
            }
        }
        if let Some(k) = &s.admin_key {
            if let Some(why) = check_secret(k) {
                p.add("server.admin_key", why);
            }
        }
        let redis_url = |path: &str, r: &str, p: &mut Problems| {
            if let Err(why) = check_redis_url(r) {
                p.add(path, why);
            }
        };
        if let Some(r) = &s.redis {
            redis_url("server.redis", r, p);
        }
        for r in &s.redis_cluster {
            redis_url("server.redis_cluster", r, p);
        }
        if s.redis.is_some() && !s.redis_cluster.is_empty() {
            p.add(
                "server.redis_cluster",
                "set either `redis` or `redis_cluster`, not both",
            );
        }
        if let Some(n) = &s.node_id {
            if !crate::hub::conn::valid_node_id(n) {
                p.add(
                    "server.node_id",
                    format!("\"{n}\": use 1-32 letters, digits or `_`"),
                );
            }
        }
        if s.presence_ttl.is_zero() {
            p.add(
                "server.presence_ttl",
                "must be longer than 0s, e.g. \"60s\"",
            );
        }
        if s.log_level.trim().is_empty() {
            p.add(
                "server.log_level",
                "is empty; use error, warn, info, debug or trace",
            );
        }
    }

    fn validate_app(
        &self,
        name: &str,
        app: &AppConfig,
        at: &str,
        paths: &mut HashMap<String, String>,
        p: &mut Problems,
    ) {
        let env = env_name(name);
        match &app.api_key {
            None => p.add(
                format!("{at}.api_key"),
                format!("is missing; set it here or with RINGCAST_APP_{env}_API_KEY"),
            ),
            Some(k) => {
                if let Some(why) = check_secret(k) {
                    p.add(format!("{at}.api_key"), why);
                }
            }
        }
        match &app.secret {
            Some(s) => {
                if let Some(why) = check_secret(s) {
                    p.add(format!("{at}.secret"), why);
                }
            }
            None => {
                if let Some((hook, _)) = app.hooks.urls().next() {
                    p.add(
                        format!("{at}.secret"),
                        format!(
                            "is missing but hooks.{hook} is set: hook requests are signed with \
                             it; set it here or with RINGCAST_APP_{env}_SECRET"
                        ),
                    );
                }
            }
        }

        // JWT
        let jwt_at = format!("{at}.jwt");
        for (i, s) in app.jwt.hs256_secrets.iter().enumerate() {
            if s.chars().count() < MIN_HS256_LEN {
                p.add(
                    format!("{jwt_at}.hs256_secrets[{i}]"),
                    format!(
                        "is {} characters long; an HS256 secret needs at least {MIN_HS256_LEN}",
                        s.chars().count()
                    ),
                );
            }
        }
        for (key, file) in [
            ("rs256_public_key_file", &app.jwt.rs256_public_key_file),
            ("es256_public_key_file", &app.jwt.es256_public_key_file),
        ] {
            if let Some(f) = file {
                if let Err(why) = check_pem(f) {
                    p.add(format!("{jwt_at}.{key}"), why);
                }
            }
        }
        for (key, v) in [("audience", &app.jwt.audience), ("issuer", &app.jwt.issuer)] {
            if v.as_deref() == Some("") {
                p.add(
                    format!("{jwt_at}.{key}"),
                    "is empty; remove the key to skip this check",
                );
            }
        }

        // Limits
        let l = &app.limits;
        for (key, v) in [
            (
                "max_connections_per_user",
                u64::from(l.max_connections_per_user),
            ),
            ("max_subscriptions", u64::from(l.max_subscriptions)),
            ("max_message_size", l.max_message_size),
            ("messages_per_second", u64::from(l.messages_per_second)),
            ("message_burst", u64::from(l.message_burst)),
            ("outbound_queue", l.outbound_queue),
        ] {
            if v == 0 {
                p.add(
                    format!("{at}.limits.{key}"),
                    "is 0, which would refuse everything; it must be at least 1 \
                     (remove the key for the default)",
                );
            }
        }
        if l.outbound_queue != 0 && l.outbound_queue < l.max_message_size {
            p.add(
                format!("{at}.limits.outbound_queue"),
                format!(
                    "({}) is smaller than max_message_size ({}): one relayed message could \
                     close a connection as a slow consumer",
                    format_size(l.outbound_queue),
                    format_size(l.max_message_size)
                ),
            );
        }

        // Hooks
        for (key, url) in app.hooks.urls() {
            if let Err(why) = check_http_url(url) {
                p.add(format!("{at}.hooks.{key}"), why);
            }
        }
        if app.hooks.timeout.is_zero() {
            p.add(
                format!("{at}.hooks.timeout"),
                "must be longer than 0s, e.g. \"2s\"",
            );
        }

        // Endpoints
        if app.endpoints.is_empty() {
            p.add(
                format!("{at}.endpoints"),
                "the app has no endpoint, so no client can connect; add an \
                 `[[apps.NAME.endpoints]]` section with a path such as \"/ws\"",
            );
        }
        let mut required_at = None;
        for (i, ep) in app.endpoints.iter().enumerate() {
            let ep_at = format!("{at}.endpoints[{i}]");
            if ep.auth == AuthPolicy::Required && required_at.is_none() {
                required_at = Some(ep_at.clone());
            }
            match check_path(&ep.path) {
                Err(why) => p.add(format!("{ep_at}.path"), why),
                Ok(params) => {
                    if RESERVED_PATHS.contains(&ep.path.as_str())
                        || ep.path == "/api"
                        || ep.path.starts_with("/api/")
                    {
                        p.add(
                            format!("{ep_at}.path"),
                            format!(
                                "\"{}\" is reserved by the server (/, /health, /echo, /api/...)",
                                ep.path
                            ),
                        );
                    } else if let Some(first) = paths.insert(path_shape(&ep.path), ep_at.clone()) {
                        p.add(
                            format!("{ep_at}.path"),
                            format!(
                                "\"{}\" is already used by {first}; a path can belong to only \
                                 one endpoint of one app",
                                ep.path
                            ),
                        );
                    }
                    for (j, t) in ep.subscribe.iter().enumerate() {
                        let t_at = format!("{ep_at}.subscribe[{j}]");
                        match placeholders(t) {
                            Err(why) => p.add(t_at, format!("\"{t}\" {why}")),
                            Ok(used) => {
                                if let Some(missing) = used.iter().find(|u| !params.contains(u)) {
                                    p.add(
                                        t_at,
                                        format!(
                                            "\"{t}\" uses `{{{missing}}}` but the path \"{}\" has no \
                                             such parameter",
                                            ep.path
                                        ),
                                    );
                                } else if t.is_empty() {
                                    p.add(t_at, "is an empty topic name");
                                } else if !t.chars().all(is_topic_char) || t.len() > MAX_TOPIC_LEN {
                                    p.add(
                                        t_at,
                                        format!(
                                            "\"{t}\" is not a valid topic name: at most \
                                             {MAX_TOPIC_LEN} bytes of {TOPIC_ALPHABET}"
                                        ),
                                    );
                                } else if !namespace_of(t).contains('{')
                                    && app.namespace(t).is_none()
                                {
                                    p.add(
                                        t_at,
                                        format!(
                                            "\"{t}\" is in namespace \"{}\", which the app does not \
                                             declare (and it has no default namespace)",
                                            namespace_of(t)
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            if ep.ping_interval.is_zero() {
                p.add(
                    format!("{ep_at}.ping_interval"),
                    "must be longer than 0s, e.g. \"25s\"",
                );
            }
            for (j, o) in ep.allowed_origins.iter().enumerate() {
                if let Err(why) = check_origin(o) {
                    p.add(format!("{ep_at}.allowed_origins[{j}]"), why);
                }
            }
        }
        if let Some(ep_at) = required_at {
            if !app.jwt.has_keys() && app.hooks.connect.is_none() {
                p.add(
                    format!("{ep_at}.auth"),
                    format!(
                        "is \"required\" but app \"{name}\" can authenticate nobody: add JWT keys \
                         ({at}.jwt.hs256_secrets or a public key file, or \
                         RINGCAST_APP_{env}_JWT_SECRET) or set {at}.hooks.connect"
                    ),
                );
            }
        }

        // Namespaces
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, ns) in app.namespaces.iter().enumerate() {
            let ns_at = format!("{at}.namespaces[{i}]");
            let key = if ns.is_default() {
                ""
            } else {
                ns.name.as_str()
            };
            if let Some(first) = seen.insert(key, i) {
                p.add(
                    format!("{ns_at}.name"),
                    format!(
                        "namespace \"{}\" is already declared at {at}.namespaces[{first}]{}",
                        ns.name,
                        if key.is_empty() {
                            " (\"\" and \"default\" are the same namespace)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            if !ns
                .name
                .chars()
                .all(|c| is_topic_char(c) && !matches!(c, ':' | '{' | '}'))
            {
                p.add(
                    format!("{ns_at}.name"),
                    format!(
                        "\"{}\" may only use {TOPIC_ALPHABET} without `:`; write \"chat\" for topics \"chat:...\"",
                        ns.name
                    ),
                );
            }
            for (key, access) in [("subscribe", &ns.subscribe), ("publish", &ns.publish)] {
                match access {
                    Access::Role(r) if r.trim().is_empty() => p.add(
                        format!("{ns_at}.{key}"),
                        "\"role:\" needs a role name, e.g. \"role:staff\"",
                    ),
                    Access::Hook => {
                        let hook = if key == "subscribe" {
                            &app.hooks.subscribe
                        } else {
                            &app.hooks.publish
                        };
                        if hook.is_none() {
                            p.add(
                                format!("{ns_at}.{key}"),
                                format!("is \"hook\" but {at}.hooks.{key} is not set"),
                            );
                        }
                    }
                    _ => {}
                }
            }
            if ns.history_size > 0 && ns.history_ttl.is_zero() {
                p.add(
                    format!("{ns_at}.history_ttl"),
                    "must be longer than 0s when history_size is set, e.g. \"1h\"",
                );
            }
        }
    }
}

/// Checks that a file holds a PEM public key.
fn check_pem(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    if text.contains("PRIVATE KEY-----") {
        return Err(format!(
            "\"{}\" holds a private key; give the public key (never copy the private key to \
             the server)",
            path.display()
        ));
    }
    let pem_public = [
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN RSA PUBLIC KEY-----",
    ]
    .iter()
    .any(|b| text.contains(b));
    if !pem_public {
        return Err(format!(
            "\"{}\" is not a PEM public key (expected a \"-----BEGIN PUBLIC KEY-----\" block)",
            path.display()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------

/// The form of an app name in environment variables: upper case, `-` → `_`.
pub fn env_name(app: &str) -> String {
    app.to_ascii_uppercase().replace('-', "_")
}

impl FileConfig {
    /// Applies `RINGCAST_*` environment overrides (pass `std::env::vars()`), so that
    /// secrets can stay out of the file:
    ///
    /// | variable | sets |
    /// | --- | --- |
    /// | `RINGCAST_LISTEN` | `server.listen` |
    /// | `RINGCAST_SHARDS` | `server.shards` (a whole number) |
    /// | `RINGCAST_ADMIN_KEY` | `server.admin_key` (empty = unset) |
    /// | `RINGCAST_REDIS` | `server.redis` (empty = unset) |
    /// | `RINGCAST_APP_<NAME>_API_KEY` | `apps.<name>.api_key` |
    /// | `RINGCAST_APP_<NAME>_SECRET` | `apps.<name>.secret` |
    /// | `RINGCAST_APP_<NAME>_JWT_SECRET` | `apps.<name>.jwt.hs256_secrets` (replaced by this one secret) |
    ///
    /// `<NAME>` is the app's name upper-cased with `-` turned into `_` (app `my-site` →
    /// `RINGCAST_APP_MY_SITE_API_KEY`); the app must exist in the file. A
    /// `RINGCAST_APP_*` variable that names no app or no setting is an error (a typo
    /// would otherwise silently leave a secret unset); other `RINGCAST_*` variables are
    /// ignored here (command-line flags use them). Run [`FileConfig::validate`] after.
    pub fn apply_env(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let env_err = |var: &str, message: String| ConfigError::Env {
            var: var.to_string(),
            message,
        };
        for (var, value) in vars {
            match var.as_str() {
                "RINGCAST_LISTEN" => {
                    if value.is_empty() {
                        return Err(env_err(&var, "is empty; give an IP:port address".into()));
                    }
                    self.server.listen = value;
                }
                "RINGCAST_SHARDS" => {
                    self.server.shards = value.trim().parse().map_err(|_| {
                        env_err(
                            &var,
                            format!("\"{value}\" is not a whole number (0 = one shard per core)"),
                        )
                    })?;
                }
                "RINGCAST_ADMIN_KEY" => {
                    self.server.admin_key = Some(value).filter(|v| !v.is_empty())
                }
                "RINGCAST_REDIS" => self.server.redis = Some(value).filter(|v| !v.is_empty()),
                _ => {
                    let Some(rest) = var.strip_prefix("RINGCAST_APP_") else {
                        continue;
                    };
                    let mut hits: Vec<(&String, &'static str)> = Vec::new();
                    for name in self.apps.keys() {
                        let Some(setting) = rest
                            .strip_prefix(env_name(name).as_str())
                            .and_then(|s| s.strip_prefix('_'))
                        else {
                            continue;
                        };
                        match setting {
                            "API_KEY" => hits.push((name, "api_key")),
                            "SECRET" => hits.push((name, "secret")),
                            "JWT_SECRET" => hits.push((name, "jwt")),
                            _ => {}
                        }
                    }
                    let (name, field) = match hits.as_slice() {
                        [one] => (one.0.clone(), one.1),
                        [] => {
                            let known: Vec<String> =
                                self.apps.keys().map(|n| env_name(n)).collect();
                            return Err(env_err(
                                &var,
                                format!(
                                    "does not name a known app and setting; expected RINGCAST_APP_<NAME>_API_KEY, \
                                     _SECRET or _JWT_SECRET with <NAME> one of: {}",
                                    if known.is_empty() { "(no apps configured)".into() } else { known.join(", ") }
                                ),
                            ));
                        }
                        _ => {
                            let names: Vec<&str> = hits.iter().map(|h| h.0.as_str()).collect();
                            return Err(env_err(
                                &var,
                                format!(
                                    "is ambiguous between apps {}; rename one app",
                                    names.join(", ")
                                ),
                            ));
                        }
                    };
                    let app = self.apps.get_mut(&name).expect("name came from the map");
                    match field {
                        "api_key" => app.api_key = Some(value),
                        "secret" => app.secret = Some(value),
                        _ => app.jwt.hs256_secrets = vec![value],
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Example
// ---------------------------------------------------------------------------------

/// A TOML basic string literal.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A fully commented example configuration: every key with what it does and its
/// default, and one app `main` for a Django backend on `127.0.0.1:8000`.
/// `secret_gen` is called three times, for the app's API key, its hook secret and its
/// HS256 JWT secret, in that order (each should be at least 32 random characters).
/// The result parses and validates.
pub fn example(secret_gen: &mut impl FnMut() -> String) -> String {
    let api_key = toml_str(&secret_gen());
    let secret = toml_str(&secret_gen());
    let jwt = toml_str(&secret_gen());
    EXAMPLE
        .replace("@API_KEY@", &api_key)
        .replace("@SECRET@", &secret)
        .replace("@JWT_SECRET@", &jwt)
}

const EXAMPLE: &str = r#"# ringcast configuration.
# Durations are strings with a unit: "500ms", "25s", "5m", "1h", "1h30m".
# Sizes are bytes or strings with a unit: 65536, "64KiB", "1MiB" (KB/MB = powers of 1000).
# Unknown keys are errors. Secrets can come from the environment instead of this file:
# RINGCAST_ADMIN_KEY, RINGCAST_APP_<NAME>_API_KEY, RINGCAST_APP_<NAME>_SECRET,
# RINGCAST_APP_<NAME>_JWT_SECRET (NAME upper-cased, "-" -> "_"); also RINGCAST_LISTEN,
# RINGCAST_SHARDS and RINGCAST_REDIS.

[server]
# Address (IP:port) of the WebSocket and HTTP listener. Default "0.0.0.0:8080".
listen = "0.0.0.0:8080"
# Shards (threads pinned to cores); 0 = one per core. Default 0.
shards = 0
# Separate IP:port for the HTTP API and /health; unset = served on `listen`. Default unset.
# admin_listen = "127.0.0.1:9090"
# Key for the HTTP API of every app ("Authorization: apikey KEY"). Default unset.
# admin_key = "a-long-random-string"
# Redis URL: every node using the same Redis behaves as one server. Default unset
# (a single node with the in-memory broker).
# redis = "redis://127.0.0.1:6379/0"
# Or Redis Cluster seed URLs (topics then use sharded pub/sub). Default unset.
# redis_cluster = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
# This node's id in the fleet (letters, digits, _). Default: random at start.
# node_id = "node_1"
# How long a presence entry lives without a refresh. Default "60s".
presence_ttl = "60s"
# Log filter: error, warn, info, debug, trace, or e.g. "ringcast=debug,info". Default "info".
log_level = "info"
# Development mode: relaxed checks, demo page, /echo. Never in production. Default false.
dev = false

# One app (tenant) per [apps.NAME] table; apps never see each other's messages.
[apps.main]
# Key your backend sends to the HTTP API ("Authorization: apikey KEY"). Required, unique.
api_key = @API_KEY@
# Signs requests to your hooks (HMAC-SHA256); required when a hook is set.
secret = @SECRET@

[apps.main.jwt]
# HS256 secrets (32+ characters); a token signed with any of them is valid. Default [].
# With Django: sign tokens with the same secret, e.g. jwt.encode(claims, KEY, "HS256").
hs256_secrets = [@JWT_SECRET@]
# PEM public key for RS256 tokens, relative to this file. Default unset.
# rs256_public_key_file = "jwt-rs256.pub.pem"
# PEM public key for ES256 tokens, relative to this file. Default unset.
# es256_public_key_file = "jwt-es256.pub.pem"
# Required "aud" claim; unset = not checked. Default unset.
# audience = "ringcast"
# Required "iss" claim; unset = not checked. Default unset.
# issuer = "https://example.com"

[apps.main.limits]
# Simultaneous connections of one user (JWT "sub"). Default 10.
max_connections_per_user = 10
# Topics one connection may subscribe to. Default 100.
max_subscriptions = 100
# Largest message a client may send. Default "64KiB".
max_message_size = "64KiB"
# Sustained client messages per second per connection. Default 20.
messages_per_second = 20
# Messages a connection may send in a burst. Default 40.
message_burst = 40
# Bytes queued to a connection before it is closed as too slow. Default "1MiB".
outbound_queue = "1MiB"
# Connection attempts per IP address per minute; 0 = no limit (set 0 behind a proxy or
# load balancer: every client then shares its address). Default 600.
connect_attempts_per_ip_per_minute = 600

[apps.main.hooks]
# Each hook is an http(s) URL of your backend and is optional (default unset).
# Called on connect; may authenticate the client and return topics.
connect = "http://127.0.0.1:8000/realtime/connect"
# Called after a client disconnected.
# disconnect = "http://127.0.0.1:8000/realtime/disconnect"
# Decides subscriptions to namespaces with subscribe = "hook".
# subscribe = "http://127.0.0.1:8000/realtime/subscribe"
# Decides client publishes to namespaces with publish = "hook".
# publish = "http://127.0.0.1:8000/realtime/publish"
# Receives custom messages from clients.
# custom = "http://127.0.0.1:8000/realtime/custom"
# How long to wait for your backend. Default "2s".
timeout = "2s"

# One [[apps.main.endpoints]] block per WebSocket path.
[[apps.main.endpoints]]
# Path; segments are literal or {name}; a trailing slash must match as written. Required.
path = "/ws"
# "required" (valid token), "optional" (anonymous allowed) or "none" (no auth). Default "required".
auth = "required"
# Interval between pings to an idle connection. Default "25s".
ping_interval = "25s"
# Origins browsers may connect from ("https://*.example.com" for subdomains); [] = any. Default [].
allowed_origins = []
# Topics subscribed on connect; {name} comes from the path. Default [].
subscribe = []

[[apps.main.endpoints]]
path = "/ws/notifications/"
auth = "required"
subscribe = []

[[apps.main.endpoints]]
path = "/ws/blog/posts/{post_id}/"
auth = "optional"
allowed_origins = ["https://example.com", "http://localhost:8000"]
subscribe = ["post:{post_id}"]

# One [[apps.main.namespaces]] block per topic prefix ("chat" covers "chat:lobby").
[[apps.main.namespaces]]
# Prefix before the first ":"; "" or "default" covers all other topics. Required.
name = "chat"
# Who may subscribe: anyone, authenticated, role:NAME (JWT "roles"), token (listed in the
# JWT "topics"), owner (last ":" segment = user id), hook, none. Default "authenticated".
subscribe = "authenticated"
# Who may publish from a client (same rules; the HTTP API always may). Default "none".
publish = "authenticated"
# Track who is subscribed. Default false.
presence = true
# Send join/leave events. Default false.
join_leave = true
# Messages kept per topic; 0 = none. Default 0.
history_size = 100
# Age after which kept messages are dropped. Default "1h".
history_ttl = "1h"

[[apps.main.namespaces]]
name = "post"
subscribe = "anyone"
publish = "none"
history_size = 20
history_ttl = "10m"

[[apps.main.namespaces]]
# Personal topics such as "user:42": only user 42 may subscribe.
name = "user"
subscribe = "owner"

[[apps.main.namespaces]]
name = "staff"
subscribe = "role:staff"
publish = "role:staff"

[[apps.main.namespaces]]
name = "public"
subscribe = "anyone"
"#;
