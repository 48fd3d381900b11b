//! `compare`: starts each peer server in turn (its own process group), runs
//! a scenario against it, stops it, and prints a comparison table.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::adapter::Target;
use crate::report;
use crate::scenarios::{Outcome, Scenario};
use crate::RunArgs;

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Comma-separated: ringcast,tokio,node-ws,nats,django,uws
    #[arg(long, default_value = "ringcast,tokio,node-ws,nats")]
    peers: String,
    /// ringcast binary (run as `serve --dev --listen 127.0.0.1:PORT`).
    #[arg(long, default_value = "target/release/ringcast")]
    ringcast_bin: String,
    /// Extra arguments for ringcast, e.g. "--shards 2".
    #[arg(long, default_value = "")]
    ringcast_args: String,
    /// Directory holding peers/NAME/run.sh.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))]
    peers_dir: PathBuf,
    /// How long to wait for a server's port (first runs install packages).
    #[arg(long, default_value = "600s", value_parser = crate::parse_duration)]
    start_timeout: Duration,
    /// Directory for server logs.
    #[arg(long, default_value = "/tmp")]
    log_dir: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A started server; stopped (whole process group) on drop.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
    stopped: bool,
}

impl Server {
    pub fn start(peer: Target, port: u16, a: &CompareArgs) -> Result<Server> {
        let log = a
            .log_dir
            .join(format!("loadtest-{}-{port}.log", peer.name()));
        let cmd = if peer == Target::Ringcast {
            let bin = ringcast_binary(&a.ringcast_bin)?;
            let mut c = Command::new(bin);
            c.args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")]);
            c.args(a.ringcast_args.split_whitespace());
            c
        } else {
            let script = a.peers_dir.join(peer.name()).join("run.sh");
            if !script.exists() {
                bail!("{} not found", script.display());
            }
            let mut c = Command::new("bash");
            c.arg(script).arg(port.to_string());
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
            {
                let b = dir.join("peer_tokio");
                if b.exists() {
                    c.env("PEER_TOKIO_BIN", b);
                }
            }
            c
        };
        Server::spawn(peer.name(), cmd, log)
    }

    /// Starts `cmd` in its own process group (its PID is the group's id),
    /// output to `log`. The child also gets SIGTERM if the thread that
    /// started it dies (this process's main thread: the async code here runs
    /// in `block_on`), so a killed load client does not leave servers behind.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Server> {
        let out = std::fs::File::create(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {name}"))?;
        let pid = child.id();
        Ok(Server {
            child,
            pid,
            log,
            stopped: false,
        })
    }

    /// Waits until the port accepts connections.
    pub async fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "server exited ({st}); log {}:\n{}",
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if t.elapsed() > timeout {
                bail!(
                    "port {port} not open after {timeout:?}; log {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let pg = self.pid as i32;
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-pg, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Children of run.sh may outlive it: make sure the group is gone.
        // SAFETY: as above.
        unsafe {
            libc::kill(-pg, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub async fn run(a: CompareArgs) -> Result<i32> {
    if a.run.publish_url.is_some() {
        bail!("compare starts one server per peer: --publish-url does not apply (see `loadtest fleet`)");
    }
    let peers: Vec<Target> = a
        .peers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Target::parse)
        .collect::<Result<_>>()?;
    let mut rows: Vec<(String, Option<report::Summary>, Option<String>)> = Vec::new();
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for peer in peers {
        eprintln!("=== {} ===", peer.name());
        match run_one(peer, &a).await {
            Ok(outs) => {
                for (label, o) in outs {
                    let name = if label == peer.name() {
                        label
                    } else {
                        format!("{} {label}", peer.name())
                    };
                    if !a.run.json {
                        println!("{}", report::human(&o));
                    }
                    rows.push((name.clone(), Some(report::summarize(&o)), None));
                    outcomes.push((name, o));
                }
            }
            Err(e) => {
                eprintln!("{}: {e:#}", peer.name());
                rows.push((
                    peer.name().to_string(),
                    None,
                    Some(format!("{e:#}").lines().next().unwrap_or("").to_string()),
                ));
            }
        }
    }
    if a.run.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, s, e)| serde_json::json!({"peer": n, "summary": s, "error": e}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", report::compare_table(a.scenario, &rows));
    }
    if let Some(path) = &a.run.chart {
        let runs: Vec<(String, &Outcome)> = outcomes.iter().map(|(n, o)| (n.clone(), o)).collect();
        report::chart(path, &runs)?;
        eprintln!("chart written to {path}");
    }
    Ok(if rows.iter().any(|r| r.1.is_none()) {
        1
    } else {
        0
    })
}

async fn run_one(peer: Target, a: &CompareArgs) -> Result<Vec<(String, Outcome)>> {
    let port = free_port()?;
    let mut server = Server::start(peer, port, a)?;
    server.wait_port(port, a.start_timeout).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut args = a.run.clone();
    args.target = peer;
    args.url = format!("127.0.0.1:{port}");
    let mut cfg = args.to_cfg(a.scenario)?;
    cfg.server_pid = Some(server.pid);
    let r = crate::run_scenario(a.scenario, &cfg).await;
    server.stop();
    r
}

/// The ringcast binary to start: `path` when it exists; otherwise, for the default path,
/// build it from this workspace (`cargo build --release -p ringcast`) as a new user of
/// `cargo run -p loadtest -- compare` expects.
pub fn ringcast_binary(path: &str) -> Result<std::path::PathBuf> {
    let bin = Path::new(path);
    if bin.exists() {
        return Ok(bin.to_path_buf());
    }
    if path != "target/release/ringcast" {
        bail!(
            "ringcast binary {} not found (--ringcast-bin)",
            bin.display()
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    eprintln!(
        "[compare] building ringcast (cargo build --release -p ringcast) in {}",
        root.display()
    );
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "ringcast"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building ringcast failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let built = target.join("release").join("ringcast");
    if !built.exists() {
        bail!("built ringcast not found at {}", built.display());
    }
    Ok(built)
}
