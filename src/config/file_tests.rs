//! Tests of the configuration-file model: parsing (unknown keys with line numbers,
//! durations, sizes, access rules), every validation rule (a config that passes and
//! one that fails), environment overrides, path templates, origins and the example.

use super::*;

/// A minimal valid config; tests change one thing and look at the problems.
const BASE: &str = r#"
[apps.main]
api_key = "main-api-key"
secret = "main-secret"
[apps.main.jwt]
hs256_secrets = ["0123456789abcdef0123456789abcdef"]
[[apps.main.endpoints]]
path = "/ws"
[[apps.main.namespaces]]
name = "chat"
"#;

fn base() -> FileConfig {
    parse(BASE).expect("base parses")
}

/// The problems of `cfg`, as `path: message` strings (empty when valid).
fn problems(cfg: &FileConfig) -> Vec<String> {
    match cfg.validate() {
        Ok(()) => Vec::new(),
        Err(ps) => ps.iter().map(|p| p.to_string()).collect(),
    }
}

/// Asserts exactly one problem, at `path`, whose message contains `needle`.
fn assert_one(cfg: &FileConfig, path: &str, needle: &str) {
    let ps = cfg.validate().expect_err("expected a problem");
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    assert_eq!(ps[0].path, path, "{ps:#?}");
    assert!(
        ps[0].message.contains(needle),
        "message {:?} lacks {needle:?}",
        ps[0].message
    );
}

fn assert_ok(cfg: &FileConfig) {
    assert_eq!(problems(cfg), Vec::<String>::new());
}

fn app(cfg: &mut FileConfig) -> &mut AppConfig {
    cfg.apps.get_mut("main").unwrap()
}

fn endpoint(path: &str) -> EndpointConfig {
    EndpointConfig {
        path: path.into(),
        auth: AuthPolicy::Required,
        ping_interval: Duration::from_secs(25),
        allowed_origins: vec![],
        subscribe: vec![],
    }
}

fn namespace(name: &str) -> NamespaceConfig {
    NamespaceConfig {
        name: name.into(),
        subscribe: Access::Authenticated,
        publish: Access::Nobody,
        presence: false,
        join_leave: false,
        history_size: 0,
        history_ttl: Duration::from_secs(3600),
    }
}

fn placeholder_gen() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("CHANGE-ME-{n}-0123456789abcdef0123456789abcdef")
    }
}

fn parse_err(text: &str) -> (Option<usize>, Option<usize>, String) {
    match parse(text).expect_err("expected a parse error") {
        e @ ConfigError::Parse { line, column, .. } => (line, column, e.to_string()),
        e => panic!("unexpected error {e}"),
    }
}

fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
        .into_iter()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringcast-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- parsing and defaults --------------------------------------------------------

#[test]
fn base_is_valid_and_defaults_apply() {
    let cfg = base();
    assert_ok(&cfg);
    assert_eq!(cfg.server, ServerSection::default());
    assert_eq!(cfg.server.listen, "0.0.0.0:8080");
    let a = &cfg.apps["main"];
    assert_eq!(a.limits, Limits::default());
    assert_eq!(a.limits.max_message_size, 64 * 1024);
    assert_eq!(a.hooks.timeout, Duration::from_secs(2));
    assert_eq!(a.endpoints[0].auth, AuthPolicy::Required);
    assert_eq!(a.endpoints[0].ping_interval, Duration::from_secs(25));
    assert_eq!(a.namespaces[0].subscribe, Access::Authenticated);
    assert_eq!(a.namespaces[0].publish, Access::Nobody);
    assert_eq!(a.namespaces[0].history_ttl, Duration::from_secs(3600));
}

#[test]
fn empty_file_parses_but_needs_an_app() {
    let cfg = parse("").unwrap();
    assert_one(&cfg, "apps", "no app");
}

#[test]
fn full_document_parses_into_types() {
    let cfg = parse(
        r#"
[server]
listen = "127.0.0.1:9000"
shards = 4
admin_listen = "127.0.0.1:9090"
admin_key = "admin-key"
redis = "redis://localhost:6379/0"
presence_ttl = "2m"
log_level = "debug"
dev = true
[apps.blog]
api_key = "k"
[apps.blog.limits]
max_message_size = 1000
outbound_queue = "2 MiB"
[[apps.blog.endpoints]]
path = "/p/{id}/"
auth = "none"
[[apps.blog.endpoints]]
path = "/q"
auth = "optional"
[[apps.blog.namespaces]]
name = "x"
subscribe = "role:staff"
publish = "hook"
presence = true
join_leave = true
history_size = 5
history_ttl = "90s"
"#,
    )
    .unwrap();
    assert_eq!(cfg.server.shards, 4);
    assert_eq!(cfg.server.presence_ttl, Duration::from_secs(120));
    assert!(cfg.server.dev);
    let a = &cfg.apps["blog"];
    assert_eq!(a.limits.max_message_size, 1000);
    assert_eq!(a.limits.outbound_queue, 2 << 20);
    assert_eq!(a.endpoints[0].auth, AuthPolicy::Public);
    assert_eq!(a.endpoints[1].auth, AuthPolicy::Optional);
    let ns = &a.namespaces[0];
    assert_eq!(ns.subscribe, Access::Role("staff".into()));
    assert_eq!(ns.publish, Access::Hook);
    assert_eq!(ns.history_ttl, Duration::from_secs(90));
    assert!(ns.presence && ns.join_leave);
}

#[test]
fn every_access_rule_parses_and_displays() {
    for (s, a) in [
        ("anyone", Access::Anyone),
        ("authenticated", Access::Authenticated),
        ("role:staff", Access::Role("staff".into())),
        ("token", Access::Token),
        ("owner", Access::Owner),
        ("hook", Access::Hook),
        ("none", Access::Nobody),
    ] {
        assert_eq!(s.parse::<Access>().unwrap(), a);
        assert_eq!(a.to_string(), s);
    }
    assert_eq!("nobody".parse::<Access>().unwrap(), Access::Nobody);
    assert!("everyone".parse::<Access>().is_err());
    assert_eq!(AuthPolicy::Public.to_string(), "none");
}

#[test]
fn unknown_key_has_line_and_column() {
    let text = "[server]\nlisten = \"0.0.0.0:1\"\nlistne = \"x\"\n";
    let (line, col, msg) = parse_err(text);
    assert_eq!((line, col), (Some(3), Some(1)));
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("unknown field `listne`"), "{msg}");
    assert!(msg.contains("listen"), "lists the expected keys: {msg}");
}

#[test]
fn unknown_key_deep_inside_app_has_line() {
    let text = format!("{BASE}[apps.main.limits]\nmax_conections = 5\n");
    let (line, _, msg) = parse_err(&text);
    assert_eq!(line, Some(text.lines().count()));
    assert!(msg.contains("max_conections"), "{msg}");
    let text = format!("{BASE}[[apps.main.endpoints]]\npath = \"/x\"\norigins = []\n");
    let (line, _, msg) = parse_err(&text);
    assert_eq!(line, Some(text.lines().count()));
    assert!(msg.contains("origins"), "{msg}");
}

#[test]
fn unknown_section_is_an_error() {
    let (line, _, msg) = parse_err("[servr]\nlisten = \"x\"\n");
    assert_eq!(line, Some(1));
    assert!(msg.contains("servr"), "{msg}");
}

#[test]
fn syntax_error_has_line_and_column() {
    let (line, col, msg) = parse_err("[server]\nshards = 4\nlisten = \"0.0.0.0:8080\n");
    assert_eq!(line, Some(3));
    assert!(col.is_some());
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn wrong_type_and_bad_values_have_lines() {
    let (line, _, msg) = parse_err("[server]\n\nshards = \"four\"\n");
    assert_eq!(line, Some(3), "{msg}");
    let (line, _, msg) = parse_err("[server]\npresence_ttl = \"10 parsecs\"\n");
    assert_eq!(line, Some(2));
    assert!(msg.contains("unknown unit \"parsecs\""), "{msg}");
    let text = format!("{BASE}subscribe = \"maybe\"\n");
    let (line, _, msg) = parse_err(&text);
    assert_eq!(line, Some(text.lines().count()));
    assert!(msg.contains("unknown access rule `maybe`"), "{msg}");
    let text = format!("{BASE}[apps.main.limits]\nmax_message_size = -1\n");
    let (_, _, msg) = parse_err(&text);
    assert!(msg.contains("cannot be negative"), "{msg}");
    let (_, _, msg) = parse_err("[[apps.a.endpoints]]\npath = \"/\"\nauth = \"sometimes\"\n");
    assert!(msg.contains("sometimes"), "{msg}");
}

#[test]
fn endpoint_and_namespace_need_their_name_keys() {
    let (_, _, msg) = parse_err("[[apps.a.endpoints]]\nauth = \"none\"\n");
    assert!(msg.contains("missing field `path`"), "{msg}");
    let (_, _, msg) = parse_err("[[apps.a.namespaces]]\npresence = true\n");
    assert!(msg.contains("missing field `name`"), "{msg}");
}

#[test]
fn duration_as_number_is_explained() {
    let (line, _, msg) = parse_err("[server]\npresence_ttl = 30\n");
    assert_eq!(line, Some(2));
    assert!(msg.contains("\"30s\""), "{msg}");
    let (_, _, msg) = parse_err("[server]\npresence_ttl = 1.5\n");
    assert!(msg.contains("1500ms"), "{msg}");
}

#[test]
fn load_reports_file_and_resolves_key_paths() {
    let dir = tempdir("load");
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n";
    std::fs::write(dir.join("es.pem"), pem).unwrap();
    let text = BASE.replace(
        "hs256_secrets",
        "es256_public_key_file = \"es.pem\"\nhs256_secrets",
    );
    let file = dir.join("ringcast.toml");
    std::fs::write(&file, text).unwrap();
    let cfg = load(&file).unwrap();
    assert_eq!(
        cfg.apps["main"].jwt.es256_public_key_file.as_deref(),
        Some(dir.join("es.pem").as_path())
    );
    assert_ok(&cfg);

    std::fs::write(&file, "[server]\nbogus = 1\n").unwrap();
    let e = load(&file).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with(&file.display().to_string()), "{msg}");
    assert!(
        matches!(e, ConfigError::Parse { line: Some(2), .. }),
        "{msg}"
    );

    let e = load(&dir.join("missing.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("missing.toml"));
    std::fs::remove_dir_all(dir).ok();
}

// ---- durations and sizes ---------------------------------------------------------

#[test]
fn durations() {
    let ok = [
        ("25s", 25_000),
        ("500ms", 500),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("1h 30m", 5_400_000),
        (" 2m ", 120_000),
        ("1d", 86_400_000),
        ("0s", 0),
        ("1s500ms", 1500),
        ("10 s", 10_000),
    ];
    for (s, ms) in ok {
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for s in [
        "",
        "  ",
        "25",
        "s",
        "1.5s",
        "-1s",
        "5 parsecs",
        "1h30",
        "1H",
        "ms5",
    ] {
        assert!(parse_duration(s).is_err(), "{s:?} should fail");
    }
    assert!(parse_duration("25").unwrap_err().contains("\"25s\""));
    assert!(parse_duration("99999999999999999999s")
        .unwrap_err()
        .contains("too large"));
    assert!(parse_duration("18446744073709551615d")
        .unwrap_err()
        .contains("too large"));
}

#[test]
fn duration_format_round_trips() {
    for ms in [
        0u64,
        1,
        500,
        1000,
        25_000,
        90_000,
        5_400_000,
        86_400_000 + 1,
    ] {
        let d = Duration::from_millis(ms);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
    }
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
}

#[test]
fn sizes() {
    let ok = [
        ("0", 0),
        ("512", 512),
        ("512B", 512),
        ("64KiB", 65_536),
        ("64kib", 65_536),
        ("64 KiB", 65_536),
        ("1MiB", 1 << 20),
        ("2GiB", 2 << 30),
        ("10KB", 10_000),
        ("1MB", 1_000_000),
        ("1GB", 1_000_000_000),
    ];
    for (s, n) in ok {
        assert_eq!(parse_size(s), Ok(n), "{s}");
    }
    for s in ["", "KiB", "1.5MiB", "64K", "64 kibibytes", "-5", "1 TiB"] {
        assert!(parse_size(s).is_err(), "{s:?} should fail");
    }
    assert!(parse_size("99999999999GiB")
        .unwrap_err()
        .contains("too large"));
    assert!(parse_size("99999999999999999999")
        .unwrap_err()
        .contains("too large"));
    for n in [0, 1000, 1024, 65_536, 3 << 20, 1 << 30] {
        assert_eq!(parse_size(&format_size(n)), Ok(n));
    }
    assert_eq!(format_size(65_536), "64KiB");
}

// ---- validation: server ----------------------------------------------------------

#[test]
fn listen_address() {
    let mut cfg = base();
    for good in ["0.0.0.0:8080", "[::]:80", "127.0.0.1:0"] {
        cfg.server.listen = good.into();
        assert_ok(&cfg);
    }
    for bad in ["localhost:8080", "8080", "0.0.0.0", "0.0.0.0:99999", ""] {
        cfg.server.listen = bad.into();
        assert_one(&cfg, "server.listen", "not an IP:port");
    }
}

#[test]
fn admin_listen() {
    let mut cfg = base();
    cfg.server.admin_listen = Some("127.0.0.1:9090".into());
    assert_ok(&cfg);
    cfg.server.admin_listen = Some("nope".into());
    assert_one(&cfg, "server.admin_listen", "not an IP:port");
    cfg.server.admin_listen = Some(cfg.server.listen.clone());
    assert_one(&cfg, "server.admin_listen", "same address");
}

#[test]
fn redis_url() {
    let mut cfg = base();
    cfg.server.redis = Some("redis://127.0.0.1:6379/0".into());
    assert_ok(&cfg);
    cfg.server.redis = Some("rediss://cache.internal".into());
    assert_one(&cfg, "server.redis", "not supported yet");
    cfg.server.redis = Some("127.0.0.1:6379".into());
    assert_one(&cfg, "server.redis", "redis://");
    cfg.server.redis = Some("redis://a:1".into());
    cfg.server.redis_cluster = vec!["redis://b:1".into()];
    assert_one(&cfg, "server.redis_cluster", "not both");
    cfg.server.redis = None;
    cfg.server.redis_cluster.push("b:2".into());
    assert_one(&cfg, "server.redis_cluster", "redis://");
    cfg.server.redis_cluster.clear();
    cfg.server.node_id = Some("node-1".into());
    assert_one(&cfg, "server.node_id", "letters");
    cfg.server.node_id = Some("node_1".into());
    assert_ok(&cfg);
}

#[test]
fn server_durations_and_log_level() {
    let mut cfg = base();
    cfg.server.presence_ttl = Duration::ZERO;
    assert_one(&cfg, "server.presence_ttl", "longer than 0s");
    let mut cfg = base();
    cfg.server.log_level = " ".into();
    assert_one(&cfg, "server.log_level", "empty");
    cfg.server.log_level = "ringcast=debug,info".into();
    assert_ok(&cfg);
}

#[test]
fn admin_key() {
    let mut cfg = base();
    cfg.server.admin_key = Some("admin-key".into());
    assert_ok(&cfg);
    cfg.server.admin_key = Some("has space".into());
    assert_one(&cfg, "server.admin_key", "spaces");
    cfg.server.admin_key = Some("main-api-key".into());
    assert_one(&cfg, "apps.main.api_key", "admin key must differ");
}

#[test]
fn no_apps() {
    let mut cfg = base();
    cfg.apps.clear();
    assert_one(&cfg, "apps", "at least one");
}

// ---- validation: apps ------------------------------------------------------------

#[test]
fn app_names() {
    for good in ["main", "my-site", "site_2"] {
        let mut cfg = base();
        let a = cfg.apps.remove("main").unwrap();
        cfg.apps.insert(good.into(), a);
        assert_ok(&cfg);
    }
    let mut cfg = base();
    let a = cfg.apps.remove("main").unwrap();
    cfg.apps.insert("my site".into(), a);
    assert_one(&cfg, "apps.my site", "letters, digits");
}

#[test]
fn app_names_with_same_env_name() {
    let mut cfg = base();
    let mut b = cfg.apps["main"].clone();
    b.api_key = Some("other-key".into());
    b.endpoints = vec![endpoint("/b")];
    let mut c = b.clone();
    c.api_key = Some("third-key".into());
    c.endpoints = vec![endpoint("/c")];
    cfg.apps.insert("my-app".into(), b);
    assert_ok(&cfg);
    cfg.apps.insert("my_app".into(), c);
    assert_one(&cfg, "apps.my_app", "RINGCAST_APP_MY_APP_");
}

#[test]
fn api_key_required_and_unique() {
    let mut cfg = base();
    app(&mut cfg).api_key = None;
    assert_one(&cfg, "apps.main.api_key", "RINGCAST_APP_MAIN_API_KEY");
    app(&mut cfg).api_key = Some(String::new());
    assert_one(&cfg, "apps.main.api_key", "empty");

    let mut cfg = base();
    let mut other = cfg.apps["main"].clone();
    other.endpoints = vec![endpoint("/other")];
    cfg.apps.insert("other".into(), other.clone());
    assert_one(&cfg, "apps.other.api_key", "used by app \"main\"");
    other.api_key = Some("other-key".into());
    cfg.apps.insert("other".into(), other);
    assert_ok(&cfg);
}

#[test]
fn secret_required_only_with_hooks() {
    let mut cfg = base();
    app(&mut cfg).secret = None;
    assert_ok(&cfg);
    app(&mut cfg).hooks.disconnect = Some("http://127.0.0.1:8000/d".into());
    assert_one(&cfg, "apps.main.secret", "hooks.disconnect");
    app(&mut cfg).secret = Some("s e c r e t".into());
    assert_one(&cfg, "apps.main.secret", "spaces");
}

#[test]
fn hs256_secret_length() {
    let mut cfg = base();
    app(&mut cfg).jwt.hs256_secrets.push("short".into());
    assert_one(&cfg, "apps.main.jwt.hs256_secrets[1]", "at least 32");
    app(&mut cfg).jwt.hs256_secrets[1] = "x".repeat(32);
    assert_ok(&cfg);
}

#[test]
fn audience_and_issuer_not_empty() {
    let mut cfg = base();
    app(&mut cfg).jwt.audience = Some("ringcast".into());
    app(&mut cfg).jwt.issuer = Some("https://example.com".into());
    assert_ok(&cfg);
    app(&mut cfg).jwt.issuer = Some(String::new());
    assert_one(&cfg, "apps.main.jwt.issuer", "empty");
}

#[test]
fn pem_files() {
    let dir = tempdir("pem");
    let public = dir.join("pub.pem");
    std::fs::write(
        &public,
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let rsa = dir.join("rsa.pem");
    std::fs::write(
        &rsa,
        "-----BEGIN RSA PUBLIC KEY-----\nMIIB\n-----END RSA PUBLIC KEY-----\n",
    )
    .unwrap();
    let private = dir.join("priv.pem");
    std::fs::write(
        &private,
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();

    let mut cfg = base();
    app(&mut cfg).jwt.rs256_public_key_file = Some(rsa);
    app(&mut cfg).jwt.es256_public_key_file = Some(public);
    assert_ok(&cfg);
    app(&mut cfg).jwt.es256_public_key_file = Some(private);
    assert_one(&cfg, "apps.main.jwt.es256_public_key_file", "private key");
    app(&mut cfg).jwt.es256_public_key_file = Some(junk);
    assert_one(
        &cfg,
        "apps.main.jwt.es256_public_key_file",
        "not a PEM public key",
    );
    app(&mut cfg).jwt.es256_public_key_file = Some(dir.join("absent.pem"));
    assert_one(&cfg, "apps.main.jwt.es256_public_key_file", "cannot read");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn required_auth_needs_keys_or_connect_hook() {
    let mut cfg = base();
    app(&mut cfg).jwt.hs256_secrets.clear();
    assert_one(
        &cfg,
        "apps.main.endpoints[0].auth",
        "can authenticate nobody",
    );
    app(&mut cfg).hooks.connect = Some("http://127.0.0.1:8000/c".into());
    assert_ok(&cfg);

    let mut cfg = base();
    app(&mut cfg).jwt.hs256_secrets.clear();
    app(&mut cfg).endpoints[0].auth = AuthPolicy::Optional;
    assert_ok(&cfg);
    app(&mut cfg).endpoints[0].auth = AuthPolicy::Public;
    assert_ok(&cfg);
}

#[test]
fn required_auth_with_public_key_only() {
    let dir = tempdir("rsonly");
    let public = dir.join("pub.pem");
    std::fs::write(
        &public,
        "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let mut cfg = base();
    app(&mut cfg).jwt.hs256_secrets.clear();
    app(&mut cfg).jwt.rs256_public_key_file = Some(public);
    assert_ok(&cfg);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn zero_limits() {
    type Zero = fn(&mut Limits);
    let fields: [(&str, Zero); 6] = [
        ("max_connections_per_user", |l| {
            l.max_connections_per_user = 0
        }),
        ("max_subscriptions", |l| l.max_subscriptions = 0),
        ("max_message_size", |l| l.max_message_size = 0),
        ("messages_per_second", |l| l.messages_per_second = 0),
        ("message_burst", |l| l.message_burst = 0),
        ("outbound_queue", |l| l.outbound_queue = 0),
    ];
    for (key, zero) in fields {
        let mut cfg = base();
        zero(&mut app(&mut cfg).limits);
        assert_one(&cfg, &format!("apps.main.limits.{key}"), "at least 1");
    }
    // 0 attempts per IP means "no limit" (behind a proxy), not "refuse everything".
    let mut cfg = base();
    app(&mut cfg).limits.connect_attempts_per_ip_per_minute = 0;
    assert!(cfg.validate().is_ok());
    let mut cfg = base();
    app(&mut cfg).limits = Limits {
        max_connections_per_user: 1,
        max_subscriptions: 1,
        max_message_size: 1,
        messages_per_second: 1,
        message_burst: 1,
        outbound_queue: 1,
        connect_attempts_per_ip_per_minute: 1,
    };
    assert_ok(&cfg);
}

#[test]
fn outbound_queue_must_hold_a_message() {
    let mut cfg = base();
    app(&mut cfg).limits.outbound_queue = 1024;
    app(&mut cfg).limits.max_message_size = 2048;
    assert_one(
        &cfg,
        "apps.main.limits.outbound_queue",
        "smaller than max_message_size",
    );
    app(&mut cfg).limits.outbound_queue = 2048;
    assert_ok(&cfg);
}

#[test]
fn hook_urls() {
    let mut cfg = base();
    app(&mut cfg).hooks.connect = Some("https://api.example.com/realtime/connect".into());
    app(&mut cfg).hooks.custom = Some("http://127.0.0.1:8000/rpc".into());
    assert_ok(&cfg);
    for bad in ["ftp://x/y", "127.0.0.1:8000/c", "http://", "http:// x/"] {
        app(&mut cfg).hooks.custom = Some(bad.into());
        assert_one(&cfg, "apps.main.hooks.custom", "");
    }
    let mut cfg = base();
    app(&mut cfg).hooks.timeout = Duration::ZERO;
    assert_one(&cfg, "apps.main.hooks.timeout", "longer than 0s");
}

// ---- validation: endpoints -------------------------------------------------------

#[test]
fn app_without_endpoints() {
    let mut cfg = base();
    app(&mut cfg).endpoints.clear();
    assert_one(&cfg, "apps.main.endpoints", "no endpoint");
}

#[test]
fn path_must_start_with_slash() {
    let mut cfg = base();
    app(&mut cfg).endpoints[0].path = "ws".into();
    assert_one(
        &cfg,
        "apps.main.endpoints[0].path",
        "must start with `/`, e.g. \"/ws\"",
    );
}

#[test]
fn path_syntax() {
    for bad in [
        "/ws//x",
        "/ws?x=1",
        "/a b",
        "/p/{id",
        "/p/x{id}",
        "/p/{1id}",
        "/p/{a}/{a}",
        "/p/{}",
    ] {
        let mut cfg = base();
        app(&mut cfg).endpoints[0].path = bad.into();
        assert_one(&cfg, "apps.main.endpoints[0].path", "");
    }
    for good in [
        "/ws",
        "/ws/",
        "/ws/notifications/",
        "/ws/blog/posts/{post_id}/",
        "/{a}/{b}",
    ] {
        let mut cfg = base();
        app(&mut cfg).endpoints[0].path = good.into();
        assert_ok(&cfg);
    }
}

#[test]
fn reserved_paths() {
    for bad in ["/", "/health", "/echo", "/api", "/api/v1/ws"] {
        let mut cfg = base();
        app(&mut cfg).endpoints[0].path = bad.into();
        assert_one(&cfg, "apps.main.endpoints[0].path", "reserved");
    }
    let mut cfg = base();
    app(&mut cfg).endpoints[0].path = "/apiary".into();
    assert_ok(&cfg);
}

#[test]
fn duplicate_paths_within_and_across_apps() {
    let mut cfg = base();
    app(&mut cfg).endpoints.push(endpoint("/ws"));
    assert_one(
        &cfg,
        "apps.main.endpoints[1].path",
        "already used by apps.main.endpoints[0]",
    );

    let mut cfg = base();
    let mut other = cfg.apps["main"].clone();
    other.api_key = Some("other-key".into());
    cfg.apps.insert("other".into(), other);
    assert_one(
        &cfg,
        "apps.other.endpoints[0].path",
        "already used by apps.main.endpoints[0]",
    );

    // Same shape with different parameter names is the same route.
    let mut cfg = base();
    app(&mut cfg).endpoints.push(endpoint("/p/{a}/"));
    app(&mut cfg).endpoints.push(endpoint("/p/{b}/"));
    assert_one(&cfg, "apps.main.endpoints[2].path", "already used");

    // Trailing slash makes a different path.
    let mut cfg = base();
    app(&mut cfg).endpoints.push(endpoint("/ws/"));
    assert_ok(&cfg);
}

#[test]
fn subscribe_template_parameters() {
    let mut cfg = base();
    app(&mut cfg).namespaces.push(namespace("post"));
    let mut ep = endpoint("/posts/{post_id}/");
    ep.subscribe = vec!["post:{post_id}".into(), "chat:lobby".into()];
    app(&mut cfg).endpoints.push(ep.clone());
    assert_ok(&cfg);

    ep.subscribe = vec!["chat:lobby".into(), "post:{id}".into()];
    app(&mut cfg).endpoints[1] = ep.clone();
    assert_one(
        &cfg,
        "apps.main.endpoints[1].subscribe[1]",
        "`{id}` but the path",
    );

    ep.subscribe = vec!["post:{post_id".into()];
    app(&mut cfg).endpoints[1] = ep.clone();
    assert_one(
        &cfg,
        "apps.main.endpoints[1].subscribe[0]",
        "without a matching",
    );

    ep.subscribe = vec!["post:{post_id} x".into()];
    app(&mut cfg).endpoints[1] = ep.clone();
    assert_one(
        &cfg,
        "apps.main.endpoints[1].subscribe[0]",
        "not a valid topic",
    );

    ep.subscribe = vec![format!("post:{{post_id}}{}", "x".repeat(200))];
    app(&mut cfg).endpoints[1] = ep.clone();
    assert_one(
        &cfg,
        "apps.main.endpoints[1].subscribe[0]",
        "at most 200 bytes",
    );

    ep.subscribe = vec!["post:a@b/c=d+e,f~g_h-i.j:{post_id}".into()];
    app(&mut cfg).endpoints[1] = ep.clone();
    assert_ok(&cfg);

    ep.subscribe = vec!["".into()];
    app(&mut cfg).endpoints[1] = ep;
    assert_one(&cfg, "apps.main.endpoints[1].subscribe[0]", "empty");
}

#[test]
fn subscribe_topic_needs_a_namespace() {
    let mut cfg = base();
    app(&mut cfg).endpoints[0].subscribe = vec!["news:all".into()];
    assert_one(
        &cfg,
        "apps.main.endpoints[0].subscribe[0]",
        "namespace \"news\"",
    );
    app(&mut cfg).namespaces.push(namespace("default"));
    assert_ok(&cfg);
}

#[test]
fn ping_interval_not_zero() {
    let mut cfg = base();
    app(&mut cfg).endpoints[0].ping_interval = Duration::ZERO;
    assert_one(
        &cfg,
        "apps.main.endpoints[0].ping_interval",
        "longer than 0s",
    );
}

#[test]
fn origins() {
    for good in [
        "https://example.com",
        "http://localhost:3000",
        "https://*.example.com",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "capacitor://localhost",
        "*",
    ] {
        let mut cfg = base();
        app(&mut cfg).endpoints[0].allowed_origins = vec![good.into()];
        assert_ok(&cfg);
    }
    for (bad, why) in [
        ("example.com", "not an origin"),
        ("https://example.com/", "has a path"),
        ("https://example.com/app", "has a path"),
        ("https://example.com:http", "invalid port"),
        ("https://", "invalid host"),
        ("https://exa mple.com", "invalid host"),
        ("1http://x.com", "invalid scheme"),
        ("http://[zz]:1", "IPv6"),
    ] {
        let mut cfg = base();
        app(&mut cfg).endpoints[0].allowed_origins = vec!["https://ok.com".into(), bad.into()];
        assert_one(&cfg, "apps.main.endpoints[0].allowed_origins[1]", why);
    }
}

// ---- validation: namespaces ------------------------------------------------------

#[test]
fn duplicate_namespaces() {
    let mut cfg = base();
    app(&mut cfg).namespaces.push(namespace("chat"));
    assert_one(
        &cfg,
        "apps.main.namespaces[1].name",
        "already declared at apps.main.namespaces[0]",
    );
    let mut cfg = base();
    app(&mut cfg).namespaces.push(namespace(""));
    app(&mut cfg).namespaces.push(namespace("default"));
    assert_one(&cfg, "apps.main.namespaces[2].name", "same namespace");
    let mut cfg = base();
    app(&mut cfg).namespaces.push(namespace("post"));
    assert_ok(&cfg);
}

#[test]
fn namespace_name_syntax() {
    let mut cfg = base();
    for bad in ["chat:", "my chat", "{x}", "chät"] {
        app(&mut cfg).namespaces[0].name = bad.into();
        assert_one(&cfg, "apps.main.namespaces[0].name", "without `:`");
    }
    app(&mut cfg).namespaces[0].name = "chat.v2-x_y".into();
    assert_ok(&cfg);
}

#[test]
fn empty_role() {
    let mut cfg = base();
    app(&mut cfg).namespaces[0].publish = Access::Role(String::new());
    assert_one(&cfg, "apps.main.namespaces[0].publish", "role name");
    app(&mut cfg).namespaces[0].publish = Access::Role("staff".into());
    assert_ok(&cfg);
    // From the file as well.
    let text = format!("{BASE}subscribe = \"role:\"\n");
    assert_one(
        &parse(&text).unwrap(),
        "apps.main.namespaces[0].subscribe",
        "role name",
    );
}

#[test]
fn hook_access_needs_the_hook() {
    let mut cfg = base();
    app(&mut cfg).namespaces[0].subscribe = Access::Hook;
    assert_one(
        &cfg,
        "apps.main.namespaces[0].subscribe",
        "hooks.subscribe is not set",
    );
    app(&mut cfg).hooks.subscribe = Some("http://127.0.0.1:8000/s".into());
    assert_ok(&cfg);
    app(&mut cfg).namespaces[0].publish = Access::Hook;
    assert_one(
        &cfg,
        "apps.main.namespaces[0].publish",
        "hooks.publish is not set",
    );
    app(&mut cfg).hooks.publish = Some("http://127.0.0.1:8000/p".into());
    assert_ok(&cfg);
}

#[test]
fn history_ttl_with_history() {
    let mut cfg = base();
    app(&mut cfg).namespaces[0].history_ttl = Duration::ZERO;
    assert_ok(&cfg);
    app(&mut cfg).namespaces[0].history_size = 10;
    assert_one(&cfg, "apps.main.namespaces[0].history_ttl", "history_size");
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut cfg = base();
    cfg.server.listen = "x".into();
    app(&mut cfg).endpoints[0].path = "ws".into();
    app(&mut cfg).limits.max_subscriptions = 0;
    let ps = cfg.validate().unwrap_err();
    let paths: Vec<&str> = ps.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "server.listen",
            "apps.main.limits.max_subscriptions",
            "apps.main.endpoints[0].path"
        ]
    );
}

// ---- environment -----------------------------------------------------------------

#[test]
fn env_server_overrides() {
    let mut cfg = base();
    cfg.apply_env(vars(&[
        ("RINGCAST_LISTEN", "127.0.0.1:9999"),
        ("RINGCAST_SHARDS", "3"),
        ("RINGCAST_ADMIN_KEY", "adm"),
        ("RINGCAST_REDIS", "redis://r:6379"),
        ("RINGCAST_DEV", "1"),
        ("RINGCAST_SOMETHING_ELSE", "ignored"),
        ("PATH", "/bin"),
    ]))
    .unwrap();
    assert_eq!(cfg.server.listen, "127.0.0.1:9999");
    assert_eq!(cfg.server.shards, 3);
    assert_eq!(cfg.server.admin_key.as_deref(), Some("adm"));
    assert_eq!(cfg.server.redis.as_deref(), Some("redis://r:6379"));
    assert_ok(&cfg);
    cfg.apply_env(vars(&[("RINGCAST_ADMIN_KEY", ""), ("RINGCAST_REDIS", "")]))
        .unwrap();
    assert_eq!(cfg.server.admin_key, None);
    assert_eq!(cfg.server.redis, None);
}

#[test]
fn env_bad_values() {
    let mut cfg = base();
    let e = cfg
        .apply_env(vars(&[("RINGCAST_SHARDS", "many")]))
        .unwrap_err();
    assert!(matches!(&e, ConfigError::Env { var, .. } if var == "RINGCAST_SHARDS"));
    assert!(e.to_string().contains("whole number"));
    assert!(cfg.apply_env(vars(&[("RINGCAST_LISTEN", "")])).is_err());
    // A bad listen value is caught by validate, with its path.
    cfg.apply_env(vars(&[("RINGCAST_LISTEN", "nowhere")]))
        .unwrap();
    assert_one(&cfg, "server.listen", "not an IP:port");
}

#[test]
fn env_app_overrides() {
    let mut cfg = base();
    let mut site = cfg.apps["main"].clone();
    site.api_key = None;
    site.endpoints = vec![endpoint("/site")];
    cfg.apps.insert("my-site".into(), site);
    assert_one(&cfg, "apps.my-site.api_key", "RINGCAST_APP_MY_SITE_API_KEY");
    cfg.apply_env(vars(&[
        ("RINGCAST_APP_MY_SITE_API_KEY", "site-key"),
        ("RINGCAST_APP_MY_SITE_SECRET", "site-secret"),
        (
            "RINGCAST_APP_MAIN_JWT_SECRET",
            "fedcba9876543210fedcba9876543210",
        ),
    ]))
    .unwrap();
    let s = &cfg.apps["my-site"];
    assert_eq!(s.api_key.as_deref(), Some("site-key"));
    assert_eq!(s.secret.as_deref(), Some("site-secret"));
    assert_eq!(
        cfg.apps["main"].jwt.hs256_secrets,
        ["fedcba9876543210fedcba9876543210"]
    );
    assert_ok(&cfg);
}

#[test]
fn env_unknown_app_or_setting_is_an_error() {
    let mut cfg = base();
    let e = cfg
        .apply_env(vars(&[("RINGCAST_APP_MIAN_API_KEY", "k")]))
        .unwrap_err();
    assert!(e.to_string().contains("MAIN"), "{e}");
    let e = cfg
        .apply_env(vars(&[("RINGCAST_APP_MAIN_APIKEY", "k")]))
        .unwrap_err();
    assert!(matches!(&e, ConfigError::Env { var, .. } if var == "RINGCAST_APP_MAIN_APIKEY"));
    assert!(cfg.apply_env(vars(&[("RINGCAST_APP_MAIN", "k")])).is_err());
    assert!(cfg.apply_env(vars(&[("RINGCAST_APP_", "k")])).is_err());
    // Lower-case app names in the variable are not matched.
    assert!(cfg
        .apply_env(vars(&[("RINGCAST_APP_main_SECRET", "k")]))
        .is_err());
}

#[test]
fn env_app_name_prefix_of_another() {
    // "a" and "a_jwt": RINGCAST_APP_A_JWT_SECRET could be either.
    let mut cfg = base();
    let a = cfg.apps["main"].clone();
    cfg.apps.insert("a".into(), a.clone());
    cfg.apps.insert("a_jwt".into(), a.clone());
    let e = cfg
        .apply_env(vars(&[("RINGCAST_APP_A_JWT_SECRET", "x")]))
        .unwrap_err();
    assert!(e.to_string().contains("ambiguous"), "{e}");
    // "a" and "a_b": RINGCAST_APP_A_B_SECRET only fits "a_b".
    let mut cfg = base();
    cfg.apps.insert("a".into(), a.clone());
    cfg.apps.insert("a_b".into(), a);
    cfg.apply_env(vars(&[("RINGCAST_APP_A_B_SECRET", "x")]))
        .unwrap();
    assert_eq!(cfg.apps["a_b"].secret.as_deref(), Some("x"));
    assert_eq!(cfg.apps["a"].secret.as_deref(), Some("main-secret"));
}

// ---- topics and namespaces -------------------------------------------------------

#[test]
fn namespace_lookup() {
    assert_eq!(namespace_of("chat:lobby"), "chat");
    assert_eq!(namespace_of("user:staff:42"), "user");
    assert_eq!(namespace_of("lobby"), "");
    assert_eq!(namespace_of(":x"), "");
    assert_eq!(namespace_of(""), "");

    let mut cfg = base();
    let a = app(&mut cfg);
    assert_eq!(a.namespace("chat:1").map(|n| n.name.as_str()), Some("chat"));
    assert!(a.namespace("post:1").is_none());
    assert!(a.namespace("lobby").is_none());
    a.namespaces.push(namespace("default"));
    assert_eq!(
        a.namespace("post:1").map(|n| n.name.as_str()),
        Some("default")
    );
    assert_eq!(
        a.namespace("lobby").map(|n| n.name.as_str()),
        Some("default")
    );
    assert_eq!(a.namespace("chat:1").map(|n| n.name.as_str()), Some("chat"));
    a.namespaces[1].name = String::new();
    assert_eq!(a.namespace("lobby").map(|n| n.name.as_str()), Some(""));
}

// ---- path templates and origins --------------------------------------------------

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn match_literal_paths() {
    let ep = endpoint("/ws");
    assert_eq!(ep.match_path("/ws"), Some(vec![]));
    assert_eq!(ep.match_path("/ws?token=x"), Some(vec![]));
    assert_eq!(ep.match_path("/ws/"), None);
    assert_eq!(ep.match_path("/wss"), None);
    assert_eq!(ep.match_path("/ws/x"), None);
    assert_eq!(ep.match_path(""), None);
    let ep = endpoint("/ws/notifications/");
    assert_eq!(ep.match_path("/ws/notifications/"), Some(vec![]));
    assert_eq!(ep.match_path("/ws/notifications"), None);
}

#[test]
fn match_parameters() {
    let ep = endpoint("/ws/blog/posts/{post_id}/");
    assert_eq!(
        ep.match_path("/ws/blog/posts/42/"),
        Some(params(&[("post_id", "42")]))
    );
    assert_eq!(ep.match_path("/ws/blog/posts/42"), None);
    assert_eq!(ep.match_path("/ws/blog/posts//"), None);
    assert_eq!(ep.match_path("/ws/blog/posts/4:2/"), None);
    assert_eq!(ep.match_path("/ws/blog/posts/a%2Fb/"), None);
    assert_eq!(ep.match_path("/ws/blog/posts/42/x/"), None);
    let ep = endpoint("/{org}/rooms/{room}");
    assert_eq!(
        ep.match_path("/acme/rooms/general-1.x_~"),
        Some(params(&[("org", "acme"), ("room", "general-1.x_~")]))
    );
    assert_eq!(ep.match_path("/acme/room/general"), None);
}

#[test]
fn expand_templates() {
    let p = params(&[("post_id", "42"), ("kind", "user")]);
    assert_eq!(expand("post:{post_id}", &p).as_deref(), Some("post:42"));
    assert_eq!(
        expand("{kind}:{post_id}:{post_id}", &p).as_deref(),
        Some("user:42:42")
    );
    assert_eq!(expand("plain", &p).as_deref(), Some("plain"));
    assert_eq!(expand("", &p).as_deref(), Some(""));
    assert_eq!(expand("post:{id}", &p), None);
    assert_eq!(expand("post:{post_id", &p), None);
    assert_eq!(expand("post:post_id}", &p), None);
    assert_eq!(expand("post:{{post_id}}", &p), None);
    // Round trip with match_path.
    let ep = endpoint("/ws/blog/posts/{post_id}/");
    let got = ep.match_path("/ws/blog/posts/7/").unwrap();
    assert_eq!(expand("post:{post_id}", &got).as_deref(), Some("post:7"));
}

#[test]
fn origin_checks() {
    let mut ep = endpoint("/ws");
    assert!(ep.origin_allowed(Some("https://evil.com")));
    ep.allowed_origins = vec!["https://example.com".into(), "https://*.example.org".into()];
    assert!(ep.origin_allowed(None));
    assert!(ep.origin_allowed(Some("https://example.com")));
    assert!(ep.origin_allowed(Some("HTTPS://Example.COM")));
    assert!(!ep.origin_allowed(Some("http://example.com")));
    assert!(!ep.origin_allowed(Some("https://example.com:8443")));
    assert!(!ep.origin_allowed(Some("https://notexample.com")));
    assert!(ep.origin_allowed(Some("https://app.example.org")));
    assert!(ep.origin_allowed(Some("https://a.b.example.org")));
    assert!(!ep.origin_allowed(Some("https://example.org")));
    assert!(!ep.origin_allowed(Some("https://evilexample.org")));
    assert!(!ep.origin_allowed(Some("http://app.example.org")));
    assert!(!ep.origin_allowed(Some("null")));
    ep.allowed_origins = vec!["*".into()];
    assert!(ep.origin_allowed(Some("https://anything.test")));
}

// ---- example ---------------------------------------------------------------------

#[test]
fn example_round_trips_with_fresh_secrets() {
    let mut n = 0;
    let mut gen = || {
        n += 1;
        format!("s{n}-\"quoted\\\"-0123456789abcdef0123456789abcdef")
    };
    let text = example(&mut gen);
    let cfg = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_ok(&cfg);
    let a = &cfg.apps["main"];
    assert_eq!(
        a.api_key.as_deref(),
        Some("s1-\"quoted\\\"-0123456789abcdef0123456789abcdef")
    );
    assert!(a.secret.as_deref().unwrap().starts_with("s2-"));
    assert!(a.jwt.hs256_secrets[0].starts_with("s3-"));
    assert_eq!(n, 3);
    // Every value written equals the default, except where the example shows a choice.
    assert_eq!(cfg.server, ServerSection::default());
    assert_eq!(a.limits, Limits::default());
    assert_eq!(a.hooks.timeout, Hooks::default().timeout);
}

#[test]
fn example_documents_every_key() {
    let text = example(&mut placeholder_gen());
    for key in [
        "listen",
        "shards",
        "admin_listen",
        "admin_key",
        "redis",
        "presence_ttl",
        "log_level",
        "dev",
        "api_key",
        "secret",
        "hs256_secrets",
        "rs256_public_key_file",
        "es256_public_key_file",
        "audience",
        "issuer",
        "max_connections_per_user",
        "max_subscriptions",
        "max_message_size",
        "messages_per_second",
        "message_burst",
        "outbound_queue",
        "connect_attempts_per_ip_per_minute",
        "connect",
        "disconnect",
        "subscribe",
        "publish",
        "custom",
        "timeout",
        "path",
        "auth",
        "ping_interval",
        "allowed_origins",
        "name",
        "presence",
        "join_leave",
        "history_size",
        "history_ttl",
    ] {
        let line = text
            .lines()
            .position(|l| {
                let l = l.trim_start_matches("# ");
                l.starts_with(&format!("{key} ="))
            })
            .unwrap_or_else(|| panic!("key {key} missing from the example"));
        let before = text.lines().nth(line - 1).unwrap();
        assert!(
            before.starts_with('#'),
            "key {key} has no comment line above"
        );
    }
}

#[test]
fn example_file_parses_validates_and_is_current() {
    let file = include_str!("example.toml");
    let cfg = parse(file).unwrap_or_else(|e| panic!("example.toml: {e}"));
    assert_ok(&cfg);
    assert!(
        file == example(&mut placeholder_gen()),
        "src/config/example.toml differs from file::example(); regenerate it with \
         `cargo test regenerate_example_toml -- --ignored`"
    );
}

/// Writes `example.toml` (beside this file) from [`example`] with placeholder secrets.
#[test]
#[ignore]
fn regenerate_example_toml() {
    let path = Path::new(file!()).with_file_name("example.toml");
    std::fs::write(&path, example(&mut placeholder_gen())).unwrap();
}
