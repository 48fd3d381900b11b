//! ringcast load-test harness. See loadtest/README.md.

mod adapter;
mod compare;
mod fleet;
mod http;
mod net;
mod report;
mod scenarios;
mod stats;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use adapter::{Endpoint, Target};
use scenarios::{Outcome, PublishVia, RunCfg, Scenario};

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load tests for ringcast and peer WebSocket servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N subscribers on one topic, one publisher (HTTP API or WS).
    Fanout(RunArgs),
    /// Open N subscribed connections and hold them; memory per connection.
    Capacity(RunArgs),
    /// New connections per second (connect, handshake, auth, subscribe).
    Storm(RunArgs),
    /// Rooms of --room-size members, each publishing over its WebSocket.
    Chat(RunArgs),
    /// Send-to-user via the HTTP API to random online users.
    Users(RunArgs),
    /// Fan-out where --slow-share of subscribers stop reading, vs. a baseline.
    Slow(RunArgs),
    /// Start each peer server in turn, run a scenario, compare.
    Compare(compare::CompareArgs),
    /// Fan-out through two ringcast nodes joined by Redis (publisher on A,
    /// subscribers on B) vs. the same on one node; starts everything itself.
    Fleet(fleet::FleetArgs),
    /// (internal) worker process of a --procs run.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        cfg_json: String,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        count: usize,
    },
}

/// Parses `3s`, `500ms`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    if !(0.0..=86_400.0).contains(&(v * mul)) {
        return Err(format!("duration out of range: {s}"));
    }
    Ok(Duration::from_secs_f64(v * mul))
}

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Server protocol adapter.
    #[arg(long, value_enum, default_value = "ringcast")]
    target: Target,
    /// Server address host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    url: String,
    /// The publisher's server host:port when it is not --url (fanout, users:
    /// e.g. another node of a ringcast fleet; subscribers stay on --url).
    #[arg(long)]
    publish_url: Option<String>,
    /// Sets `Authorization: apikey K` on HTTP API calls.
    #[arg(long)]
    api_key: Option<String>,
    /// user_type used in ws URLs and the send-to-user API.
    #[arg(long, default_value = "user")]
    user_type: String,
    /// Connections (storm: attempts in flight).
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Messages/s (fanout, users: publisher; chat: total over members;
    /// storm: connections/s). 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured phase length.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// capacity: how long to hold the connections.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    hold: Duration,
    /// Wait after publishing stops before counting losses.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    drain: Duration,
    #[arg(long, value_enum, default_value = "http")]
    publish_via: PublishVia,
    /// Publisher requests in flight (HTTP connections / WS window).
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// capacity: number of distinct topics.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// chat: members per room.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// slow: share of subscribers that stop reading (0..1).
    #[arg(long, default_value_t = 0.1)]
    slow_share: f64,
    /// Source addresses, e.g. 127.0.0.2-127.0.0.9 (default: several when
    /// conns > 10000).
    #[arg(long)]
    src_ips: Option<String>,
    /// Connection attempts in flight during setup (per worker).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Setup connections/s (0 = unpaced).
    #[arg(long, default_value_t = 0.0)]
    connect_rate: f64,
    /// Approximate size of each published `data` object.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Worker processes (needed beyond ~19k connections: fd limit).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Server PID for RSS / CPU figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print JSON instead of the human table.
    #[arg(long)]
    json: bool,
    /// Write an SVG chart (latency percentiles, throughput).
    #[arg(long)]
    chart: Option<String>,
    /// Exit with status 2 unless the run was clean: no connect errors or
    /// drops, and (for message scenarios) deliveries > 0 with no loss or
    /// duplicates (storm: at least one connection).
    #[arg(long)]
    check: bool,
}

impl RunArgs {
    pub fn to_cfg(&self, scenario: Scenario) -> Result<RunCfg> {
        let addr = net::resolve(&self.url).with_context(|| format!("--url {}", self.url))?;
        let src_ips = match &self.src_ips {
            Some(s) => net::parse_src_ips(s)?,
            None if scenario == Scenario::Storm => net::default_src_ips(80_000),
            None => net::default_src_ips(self.conns),
        };
        let per_proc = self.conns / self.procs.max(1);
        if scenario != Scenario::Storm && per_proc > 19_000 {
            bail!(
                "{} conns per process exceeds the open-file limit; use --procs {}",
                per_proc,
                self.conns.div_ceil(18_000)
            );
        }
        if !(0.0..=1.0).contains(&self.slow_share) {
            bail!("--slow-share must be within 0..1");
        }
        let endpoint = |authority: &str, addr| Endpoint {
            target: self.target,
            authority: authority.to_string(),
            addr,
            api_key: self.api_key.clone(),
            user_type: self.user_type.clone(),
        };
        let pub_ep = match &self.publish_url {
            Some(u) => {
                if !matches!(
                    scenario,
                    Scenario::Fanout | Scenario::Slow | Scenario::Users
                ) {
                    bail!("--publish-url applies to fanout, slow and users only");
                }
                let a = net::resolve(u).with_context(|| format!("--publish-url {u}"))?;
                Some(endpoint(u, a))
            }
            None => None,
        };
        Ok(RunCfg {
            scenario,
            ep: endpoint(&self.url, addr),
            pub_ep,
            conns: self.conns,
            rate: self.rate,
            duration: self.duration,
            hold: self.hold,
            drain: self.drain,
            publish_via: self.publish_via,
            inflight: self.inflight,
            topics: self.topics,
            room_size: self.room_size,
            slow_share: if scenario == Scenario::Slow {
                self.slow_share
            } else {
                0.0
            },
            src_ips,
            connect_concurrency: self.connect_concurrency,
            connect_rate: self.connect_rate,
            payload_bytes: self.payload_bytes,
            procs: self.procs.max(1),
            server_pid: self.server_pid,
            extra_server_pids: Vec::new(),
        })
    }
}

/// Runs one scenario (for `slow`: a baseline without slow subscribers, then
/// the run with them) and returns labelled outcomes.
pub async fn run_scenario(scenario: Scenario, cfg: &RunCfg) -> Result<Vec<(String, Outcome)>> {
    if scenario == Scenario::Slow {
        let mut base = cfg.clone();
        base.slow_share = 0.0;
        base.scenario = Scenario::Fanout;
        let b = scenarios::run(&base).await?;
        let s = scenarios::run(cfg).await?;
        return Ok(vec![
            ("baseline".to_string(), b),
            (format!("{:.0}% slow", cfg.slow_share * 100.0), s),
        ]);
    }
    Ok(vec![(
        cfg.ep.target.name().to_string(),
        scenarios::run(cfg).await?,
    )])
}

async fn run_cmd(scenario: Scenario, args: RunArgs) -> Result<i32> {
    let cfg = args.to_cfg(scenario)?;
    let outs = run_scenario(scenario, &cfg).await?;
    print_outcomes(scenario, &outs, args.json)?;
    if let Some(path) = &args.chart {
        let runs: Vec<(String, &Outcome)> = outs.iter().map(|(n, o)| (n.clone(), o)).collect();
        report::chart(path, &runs)?;
        eprintln!("chart written to {path}");
    }
    if args.check {
        let problems: Vec<String> = outs.iter().flat_map(|(_, o)| report::check(o)).collect();
        return Ok(report::report_check(&problems));
    }
    Ok(0)
}

fn print_outcomes(scenario: Scenario, outs: &[(String, Outcome)], json: bool) -> Result<()> {
    if json {
        let v: Vec<serde_json::Value> = outs
            .iter()
            .map(|(n, o)| {
                let mut v = serde_json::to_value(report::summarize(o)).unwrap_or_default();
                v["label"] = serde_json::Value::String(n.clone());
                v
            })
            .collect();
        let v = if v.len() == 1 {
            v.into_iter().next().unwrap_or_default()
        } else {
            serde_json::Value::Array(v)
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (_, o) in outs {
        println!("{}", report::human(o));
    }
    if outs.len() > 1 {
        let rows: Vec<(String, Option<report::Summary>, Option<String>)> = outs
            .iter()
            .map(|(n, o)| (n.clone(), Some(report::summarize(o)), None))
            .collect();
        println!("{}", report::compare_table(scenario, &rows));
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    net::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(async {
        match cli.cmd {
            Cmd::Fanout(a) => run_cmd(Scenario::Fanout, a).await,
            Cmd::Capacity(a) => run_cmd(Scenario::Capacity, a).await,
            Cmd::Storm(a) => run_cmd(Scenario::Storm, a).await,
            Cmd::Chat(a) => run_cmd(Scenario::Chat, a).await,
            Cmd::Users(a) => run_cmd(Scenario::Users, a).await,
            Cmd::Slow(a) => run_cmd(Scenario::Slow, a).await,
            Cmd::Compare(a) => compare::run(a).await,
            Cmd::Fleet(a) => fleet::run(a).await,
            Cmd::Worker {
                cfg_json,
                index,
                count,
            } => {
                scenarios::worker_process(&cfg_json, index, count).await?;
                Ok(0)
            }
        }
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}
