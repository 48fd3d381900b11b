//! `fleet`: the fan-out workload through two ringcast nodes joined by Redis
//! (publisher on node A, every subscriber on node B) and, in the same
//! invocation, on one node with the memory broker (publisher and subscribers
//! on it). Starts its own `redis-server` on a free port and fresh ringcast
//! nodes for every run, and stops all of them by PID (their process groups),
//! on errors and on SIGINT/SIGTERM too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::adapter::Target;
use crate::compare::{free_port, ringcast_binary, Server};
use crate::http::HttpClient;
use crate::report::{self, fmt_num, fmt_us, Summary};
use crate::scenarios::{self, Outcome, Scenario};
use crate::stats::machine_busy_secs;
use crate::RunArgs;

#[derive(Args, Clone, Debug)]
pub struct FleetArgs {
    /// ringcast binary (nodes run as `serve --dev --listen 127.0.0.1:PORT --no-pin`,
    /// fleet nodes also with `--redis URL --node-id a|b`).
    #[arg(long, default_value = "target/release/ringcast")]
    ringcast_bin: String,
    /// Extra arguments for every ringcast node, e.g. "--shards 1".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    ringcast_args: String,
    /// redis-server binary, started on a free port with `--save "" --appendonly no`.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Rounds; each measures one node and two nodes (the order alternates).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// How long to wait for a server's port and a node's `/health` "ok".
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    start_timeout: Duration,
    /// Directory for server logs.
    #[arg(long, default_value = "/tmp")]
    log_dir: PathBuf,
    /// Before each run, wait up to this long for the machine to be quiet
    /// (other processes under 10% of the cores for 2 s in a row); 0 = don't.
    #[arg(long, default_value = "0s", value_parser = crate::parse_duration)]
    quiet_wait: Duration,
    /// The workload (fanout flags; --url, --publish-url and --server-pid are
    /// set by the fleet itself).
    #[command(flatten)]
    run: RunArgs,
}

/// One measured run and what the servers reported.
struct RunOut {
    outcome: Outcome,
    /// Server CPU seconds during the run by role (`node A`, `node B`, `redis`).
    cpu: Vec<(&'static str, f64)>,
    /// Node A's and B's `redis` stats objects at the end (two-node runs).
    redis_end: Option<(Value, Value)>,
    /// Redis link figures of node A over the run (deltas).
    redis_run: Option<Value>,
    /// `/health` of A and B at the end.
    health: Option<(Value, Value)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    OneNode,
    TwoNodes,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::OneNode => "1 node (memory)",
            Mode::TwoNodes => "2 nodes (redis)",
        }
    }
}

struct Round {
    one: Result<RunOut>,
    two: Result<RunOut>,
}

pub async fn run(a: FleetArgs) -> Result<i32> {
    if a.run.target != Target::Ringcast {
        bail!("fleet runs ringcast nodes: --target must be ringcast");
    }
    if a.run.publish_url.is_some() || a.run.server_pid.is_some() {
        bail!("fleet sets --publish-url and --server-pid itself");
    }
    if a.rounds == 0 || a.rounds > 20 {
        bail!("--rounds must be within 1..=20");
    }
    let bin = ringcast_binary(&a.ringcast_bin)?;
    // On SIGINT/SIGTERM the run's future is dropped, and with it every
    // `Server`, whose drop stops its process group.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let rounds = tokio::select! {
        r = run_rounds(&a, &bin) => r?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted: servers stopped"),
        _ = term.recv() => bail!("terminated: servers stopped"),
    };
    report_rounds(&a, &rounds)
}

async fn run_rounds(a: &FleetArgs, bin: &Path) -> Result<Vec<Round>> {
    let redis_port = free_port()?;
    let mut cmd = Command::new(&a.redis_server);
    cmd.args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let log = a.log_dir.join(format!("loadtest-redis-{redis_port}.log"));
    let mut redis = Server::spawn("redis-server", cmd, log)
        .with_context(|| format!("{} (is redis-server installed?)", a.redis_server))?;
    redis.wait_port(redis_port, a.start_timeout).await?;
    eprintln!(
        "[fleet] redis-server pid {} on 127.0.0.1:{redis_port}",
        redis.pid
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let mut rounds = Vec::new();
    for r in 0..a.rounds {
        let order = if r % 2 == 0 {
            [Mode::OneNode, Mode::TwoNodes]
        } else {
            [Mode::TwoNodes, Mode::OneNode]
        };
        let mut one = Err(anyhow!("not run"));
        let mut two = Err(anyhow!("not run"));
        for mode in order {
            eprintln!("=== round {}: {} ===", r + 1, mode.label());
            wait_quiet(a.quiet_wait).await;
            let out = match mode {
                Mode::OneNode => one_node(a, bin).await,
                Mode::TwoNodes => two_nodes(a, bin, &redis_url, redis.pid).await,
            };
            if let Err(e) = &out {
                eprintln!("{}: {e:#}", mode.label());
            }
            match mode {
                Mode::OneNode => one = out,
                Mode::TwoNodes => two = out,
            }
        }
        rounds.push(Round { one, two });
    }
    redis.stop();
    Ok(rounds)
}

/// Waits (at most `max`) until the machine's busy time stayed under 10% of
/// its cores for two consecutive seconds; says how long it waited.
async fn wait_quiet(max: Duration) {
    if max.is_zero() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let t = Instant::now();
    let mut calm = 0;
    let mut last = 0.0;
    while t.elapsed() < max {
        let b0 = machine_busy_secs();
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = machine_busy_secs() - b0;
        calm = if last < 0.1 * cores { calm + 1 } else { 0 };
        if calm >= 2 {
            if t.elapsed() > Duration::from_secs(3) {
                eprintln!(
                    "[fleet] machine quiet after {:.0}s",
                    t.elapsed().as_secs_f64()
                );
            }
            return;
        }
    }
    eprintln!(
        "[fleet] machine still busy after {max:?} ({:.0}% of {cores} cores in the last second): running anyway",
        last * 100.0 / cores
    );
}

fn node_cmd(bin: &Path, port: u16, redis: Option<(&str, &str)>, extra: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--no-pin");
    if let Some((url, node)) = redis {
        c.args(["--redis", url, "--node-id", node]);
    }
    c.args(extra.split_whitespace());
    c
}

/// Starts a node and waits until it listens and its `/health` says "ok".
async fn start_node(
    a: &FleetArgs,
    bin: &Path,
    redis: Option<(&str, &str)>,
) -> Result<(Server, u16)> {
    let port = free_port()?;
    let name = match redis {
        Some((_, n)) => format!("ringcast-{n}"),
        None => "ringcast-single".to_string(),
    };
    let log = a.log_dir.join(format!("loadtest-{name}-{port}.log"));
    let mut s = Server::spawn(&name, node_cmd(bin, port, redis, &a.ringcast_args), log)?;
    s.wait_port(port, a.start_timeout).await?;
    let t = Instant::now();
    loop {
        match get_json(port, "/health").await {
            Ok(h) if h["status"] == "ok" => break,
            r if t.elapsed() > a.start_timeout => {
                bail!("{name}: /health not ok after {:?}: {r:?}", a.start_timeout)
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok((s, port))
}

async fn get_json(port: u16, path: &str) -> Result<Value> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = HttpClient::new(addr, &format!("127.0.0.1:{port}"), None);
    let (st, body) = c.request("GET", path, "").await?;
    if !(200..300).contains(&st) {
        bail!("GET {path}: HTTP {st}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Node's `redis` stats object (`GET /api/v1/stats`).
async fn redis_stats(port: u16) -> Result<Value> {
    let v = get_json(port, "/api/v1/stats").await?;
    Ok(v.get("redis").cloned().unwrap_or(Value::Null))
}

async fn one_node(a: &FleetArgs, bin: &Path) -> Result<RunOut> {
    let (mut node, port) = start_node(a, bin, None).await?;
    let mut args = a.run.clone();
    args.url = format!("127.0.0.1:{port}");
    let mut cfg = args.to_cfg(Scenario::Fanout)?;
    cfg.server_pid = Some(node.pid);
    let outcome = scenarios::run(&cfg).await;
    node.stop();
    let outcome = outcome?;
    let cpu = vec![("node", outcome.server.as_ref().map_or(0.0, |s| s.cpu_secs))];
    Ok(RunOut {
        outcome,
        cpu,
        redis_end: None,
        redis_run: None,
        health: None,
    })
}

async fn two_nodes(a: &FleetArgs, bin: &Path, redis_url: &str, redis_pid: u32) -> Result<RunOut> {
    let (mut na, pa) = start_node(a, bin, Some((redis_url, "a"))).await?;
    let (mut nb, pb) = start_node(a, bin, Some((redis_url, "b"))).await?;
    let a0 = redis_stats(pa).await?;
    let b0 = redis_stats(pb).await?;
    let mut args = a.run.clone();
    args.url = format!("127.0.0.1:{pb}");
    args.publish_url = Some(format!("127.0.0.1:{pa}"));
    let mut cfg = args.to_cfg(Scenario::Fanout)?;
    cfg.server_pid = Some(nb.pid);
    cfg.extra_server_pids = vec![na.pid, redis_pid];
    let outcome = scenarios::run(&cfg).await;
    let end = async {
        let a1 = redis_stats(pa).await?;
        let b1 = redis_stats(pb).await?;
        let ha = get_json(pa, "/health").await?;
        let hb = get_json(pb, "/health").await?;
        anyhow::Ok((a1, b1, ha, hb))
    }
    .await;
    na.stop();
    nb.stop();
    let outcome = outcome?;
    let (a1, b1, ha, hb) = end.context("reading the nodes' stats after the run")?;
    let d = |v1: &Value, v0: &Value, k: &str| {
        v1[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(v0[k].as_u64().unwrap_or(0))
    };
    let (pipes, cmds) = (d(&a1, &a0, "pipelines"), d(&a1, &a0, "commands_sent"));
    let redis_run = json!({
        "node_a_pipelines": pipes,
        "node_a_commands_sent": cmds,
        "node_a_avg_pipeline": if pipes > 0 { cmds as f64 / pipes as f64 } else { 0.0 },
        "node_a_publishes_sent": d(&a1, &a0, "publishes_sent"),
        "node_a_own_echoes": d(&a1, &a0, "own_echoes"),
        "node_b_messages_received": d(&b1, &b0, "messages_received"),
        "node_b_remote_messages": d(&b1, &b0, "remote_messages"),
    });
    let by_pid = outcome
        .server
        .as_ref()
        .map(|s| s.cpu_by_pid.clone())
        .unwrap_or_default();
    let cpu_of = |pid: u32| {
        by_pid
            .iter()
            .find(|(p, _)| *p == pid)
            .map_or(0.0, |(_, c)| *c)
    };
    let cpu = vec![
        ("node A", cpu_of(na.pid)),
        ("node B", cpu_of(nb.pid)),
        ("redis", cpu_of(redis_pid)),
    ];
    Ok(RunOut {
        outcome,
        cpu,
        redis_end: Some((a1, b1)),
        redis_run: Some(redis_run),
        health: Some((ha, hb)),
    })
}

/// two-node / one-node for the figures the table compares.
fn ratios(one: &Summary, two: &Summary) -> Value {
    let r = |t: f64, o: f64| if o > 0.0 { Some(t / o) } else { None };
    json!({
        "deliveries_per_s": r(two.deliveries_per_s, one.deliveries_per_s),
        "publish_per_s": r(two.publish_per_s, one.publish_per_s),
        "p50": r(two.latency.p50_us as f64, one.latency.p50_us as f64),
        "p99": r(two.latency.p99_us as f64, one.latency.p99_us as f64),
        "p999": r(two.latency.p999_us as f64, one.latency.p999_us as f64),
        "max": r(two.latency.max_us as f64, one.latency.max_us as f64),
        "server_cpu": match (two.server_cpu_secs, one.server_cpu_secs) {
            (Some(t), Some(o)) => r(t, o),
            _ => None,
        },
    })
}

fn run_json(r: &Result<RunOut>) -> Value {
    match r {
        Err(e) => json!({ "error": format!("{e:#}") }),
        Ok(o) => {
            let mut v = serde_json::to_value(report::summarize(&o.outcome)).unwrap_or_default();
            v["publish_ack_latency"] =
                serde_json::to_value(o.outcome.driver.ack_lat.summary()).unwrap_or_default();
            v["server_cpu_by_process"] = Value::Object(
                o.cpu
                    .iter()
                    .map(|(k, c)| (k.to_string(), json!(c)))
                    .collect(),
            );
            if let Some((a, b)) = &o.redis_end {
                v["redis_node_a"] = a.clone();
                v["redis_node_b"] = b.clone();
            }
            if let Some(r) = &o.redis_run {
                v["redis_during_run"] = r.clone();
            }
            if let Some((a, b)) = &o.health {
                v["health_node_a"] = a.clone();
                v["health_node_b"] = b.clone();
            }
            v
        }
    }
}

fn ratio_cell(v: &Value, k: &str) -> String {
    v[k].as_f64()
        .map_or_else(|| "-".to_string(), |x| format!("{x:.2}x"))
}

fn report_rounds(a: &FleetArgs, rounds: &[Round]) -> Result<i32> {
    let w = &a.run;
    let failed = rounds.iter().any(|r| r.one.is_err() || r.two.is_err());
    if w.json {
        let v: Vec<Value> = rounds
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let ratio = match (&r.one, &r.two) {
                    (Ok(o), Ok(t)) => ratios(
                        &report::summarize(&o.outcome),
                        &report::summarize(&t.outcome),
                    ),
                    _ => Value::Null,
                };
                json!({
                    "round": i + 1,
                    "one_node": run_json(&r.one),
                    "two_nodes": run_json(&r.two),
                    "ratio_two_over_one": ratio,
                })
            })
            .collect();
        let out = json!({
            "scenario": "fanout",
            "conns": w.conns,
            "rate": w.rate,
            "duration_secs": w.duration.as_secs_f64(),
            "publish_via": w.publish_via,
            "rounds": v,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in rounds {
            for o in [&r.one, &r.two].into_iter().flatten() {
                println!("{}", report::human(&o.outcome));
            }
        }
        println!("{}", table(a, rounds));
    }
    if let Some(path) = &w.chart {
        let mut runs: Vec<(String, &Outcome)> = Vec::new();
        for (i, r) in rounds.iter().enumerate() {
            for (m, o) in [(Mode::OneNode, &r.one), (Mode::TwoNodes, &r.two)] {
                if let Ok(o) = o {
                    let n = if rounds.len() > 1 {
                        format!("{} #{}", m.label(), i + 1)
                    } else {
                        m.label().to_string()
                    };
                    runs.push((n, &o.outcome));
                }
            }
        }
        report::chart(path, &runs)?;
        eprintln!("chart written to {path}");
    }
    if failed {
        return Ok(1);
    }
    if w.check {
        let problems: Vec<String> = rounds
            .iter()
            .flat_map(|r| [&r.one, &r.two])
            .flatten()
            .flat_map(|o| report::check(&o.outcome))
            .collect();
        return Ok(report::report_check(&problems));
    }
    Ok(0)
}

/// The human comparison: one row per run, a ratio row per round, then the
/// Redis link figures and the server CPU by process.
fn table(a: &FleetArgs, rounds: &[Round]) -> String {
    let w = &a.run;
    let mut cells: Vec<Vec<String>> = vec![[
        "run",
        "pub/s",
        "deliv/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "lost",
        "dup",
        "ack p50",
        "srv cpu",
        "client cpu",
        "other cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    let mut notes = String::new();
    for (i, r) in rounds.iter().enumerate() {
        let suffix = if rounds.len() > 1 {
            format!(" #{}", i + 1)
        } else {
            String::new()
        };
        for (m, o) in [(Mode::OneNode, &r.one), (Mode::TwoNodes, &r.two)] {
            let name = format!("{}{suffix}", m.label());
            match o {
                Err(e) => cells.push(vec![
                    name,
                    format!(
                        "FAILED: {}",
                        format!("{e:#}").lines().next().unwrap_or_default()
                    ),
                ]),
                Ok(o) => {
                    let s = report::summarize(&o.outcome);
                    let l = &s.latency;
                    cells.push(vec![
                        name,
                        fmt_num(s.publish_per_s),
                        fmt_num(s.deliveries_per_s),
                        fmt_us(l.p50_us),
                        fmt_us(l.p99_us),
                        fmt_us(l.p999_us),
                        fmt_us(l.max_us),
                        s.lost.to_string(),
                        s.dups.to_string(),
                        fmt_us(o.outcome.driver.ack_lat.summary().p50_us),
                        s.server_cpu_secs
                            .map_or_else(|| "-".into(), |c| format!("{c:.2}s")),
                        format!("{:.2}s", s.client_cpu_secs),
                        s.other_cpu_secs
                            .map_or_else(|| "-".into(), |c| format!("{c:.2}s")),
                    ]);
                    if m == Mode::TwoNodes {
                        let cpu: Vec<String> =
                            o.cpu.iter().map(|(k, c)| format!("{k} {c:.2}s")).collect();
                        notes.push_str(&format!(
                            "{}{suffix}: server cpu {}\n",
                            m.label(),
                            cpu.join(", ")
                        ));
                        if let (Some((ra, rb)), Some(run)) = (&o.redis_end, &o.redis_run) {
                            notes.push_str(&format!(
                                "  node A redis link at the end: avg_pipeline {:.2}, rtt_avg_us {}, rtt_max_us {}, pipelines {}, publishes_sent {}, publish_drops {}\n",
                                ra["avg_pipeline"].as_f64().unwrap_or(0.0),
                                ra["rtt_avg_us"],
                                ra["rtt_max_us"],
                                ra["pipelines"],
                                ra["publishes_sent"],
                                ra["publish_drops"],
                            ));
                            notes.push_str(&format!(
                                "  during the run: node A {} pipelines, {} commands (avg {:.2}), {} publishes, {} own echoes; node B {} pub/sub messages, {} relayed\n",
                                run["node_a_pipelines"],
                                run["node_a_commands_sent"],
                                run["node_a_avg_pipeline"].as_f64().unwrap_or(0.0),
                                run["node_a_publishes_sent"],
                                run["node_a_own_echoes"],
                                run["node_b_messages_received"],
                                run["node_b_remote_messages"],
                            ));
                            notes.push_str(&format!(
                                "  node B redis link: avg_pipeline {:.2}, rtt_avg_us {}, reconnects {}, forward_failures {}, confirm_timeouts {}\n",
                                rb["avg_pipeline"].as_f64().unwrap_or(0.0),
                                rb["rtt_avg_us"],
                                rb["reconnects"],
                                rb["forward_failures"],
                                rb["confirm_timeouts"],
                            ));
                        }
                        if let Some((ha, hb)) = &o.health {
                            if ha["status"] != "ok" || hb["status"] != "ok" {
                                notes.push_str(&format!(
                                    "  /health at the end: A {}, B {}\n",
                                    ha["status"], hb["status"]
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let (Ok(o), Ok(t)) = (&r.one, &r.two) {
            let v = ratios(
                &report::summarize(&o.outcome),
                &report::summarize(&t.outcome),
            );
            cells.push(vec![
                format!("2 nodes / 1 node{suffix}"),
                ratio_cell(&v, "publish_per_s"),
                ratio_cell(&v, "deliveries_per_s"),
                ratio_cell(&v, "p50"),
                ratio_cell(&v, "p99"),
                ratio_cell(&v, "p999"),
                ratio_cell(&v, "max"),
                String::new(),
                String::new(),
                String::new(),
                ratio_cell(&v, "server_cpu"),
            ]);
        }
    }
    let mut out = format!(
        "fleet: fanout, {} subscribers, {} msg/s{}, {:.0}s, publish via {} (two nodes: publisher on A, subscribers on B)\n",
        w.conns,
        if w.rate > 0.0 { fmt_num(w.rate) } else { "max".into() },
        if w.rate > 0.0 { "" } else { " (acks)" },
        w.duration.as_secs_f64(),
        format!("{:?}", w.publish_via).to_lowercase(),
    );
    report::render_rows(&mut out, &cells, |r| r.len() > 2);
    out.push_str(&notes);
    out
}
