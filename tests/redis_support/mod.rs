//! Test support: real redis-server processes on free ports, stopped by PID, and a
//! tiny executor-free `block_on` (the link's futures must not need tokio).
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_with(port, None)
    }

    /// Starts a server on `port`, requiring `password` when given.
    pub fn start_with(port: u16, password: Option<&str>) -> RedisServer {
        let port_s = port.to_string();
        let mut args = vec![
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        if let Some(pw) = password {
            args.extend(["--requirepass", pw]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = RedisServer {
            port,
            password: password.map(String::from),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = server.try_client() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn try_client(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    pub fn client(&self) -> redis::Connection {
        self.try_client().expect("test client connects")
    }

    /// SIGKILL by PID, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (STOP, CONT) to this server's PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls a future to completion on this thread, without any runtime; panics after 20 s.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "block_on timed out");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Waits until `cond` holds, panicking with `what` after `secs`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Subscriber count of `channel` as the server sees it.
pub fn numsub(c: &mut redis::Connection, channel: &str) -> i64 {
    let v: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(c)
        .unwrap();
    v.first().map(|(_, n)| *n).unwrap_or(0)
}

pub fn numpat(c: &mut redis::Connection) -> i64 {
    redis::cmd("PUBSUB").arg("NUMPAT").query(c).unwrap()
}

/// A local Redis Cluster of `n` primaries (no replicas) on free ports, each
/// `redis-server` started here and stopped by PID; its files live in a temporary
/// directory removed on drop. Node `i` serves the `i`-th equal share of the slots.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
    children: Vec<Option<Child>>,
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let p = free_port();
        if p <= 55_535
            && !taken.contains(&p)
            && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

impl RedisCluster {
    /// Three primaries.
    pub fn start() -> RedisCluster {
        RedisCluster::start_n(3)
    }

    pub fn start_n(n: usize) -> RedisCluster {
        assert!(n >= 1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("ringcast-cluster-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cluster temp dir");
        let mut ports = Vec::new();
        for _ in 0..n {
            let p = free_cluster_port(&ports);
            ports.push(p);
        }
        let mut cluster = RedisCluster {
            ports,
            dir,
            children: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            // A port found free may be taken before the server binds it (tests run
            // in parallel): then pick another.
            for attempt in 0.. {
                cluster.spawn(i);
                if cluster.wait_own(i) {
                    break;
                }
                assert!(attempt < 20, "no free port for a cluster node");
                cluster.kill(i);
                cluster.ports[i] = free_cluster_port(&cluster.ports);
            }
        }
        for i in 0..n {
            let (start, end) = cluster.range(i);
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .query::<()>(&mut cluster.client(i))
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        let mut c0 = cluster.client(0);
        for &p in &cluster.ports[1..] {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(p)
                .query::<()>(&mut c0)
                .expect("CLUSTER MEET");
        }
        cluster.wait_ok(30);
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let port = self.ports[i].to_string();
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(&conf)
            .args(["--cluster-node-timeout", "1000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.children[i] = Some(child);
    }

    /// Waits until node `i` answers and is the process started here (not some other
    /// test's server on the same port); false if it is not.
    fn wait_own(&mut self, i: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pid = self.children[i].as_ref().map(Child::id);
            let info = self
                .try_client(i)
                .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
            if let (Ok(info), Some(pid)) = (info, pid) {
                return info.contains(&format!("process_id:{pid}\r\n"));
            }
            let exited = self.children[i]
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The slots node `i` was given at creation, inclusive.
    pub fn range(&self, i: usize) -> (u16, u16) {
        let n = self.ports.len();
        ((i * 16384 / n) as u16, ((i + 1) * 16384 / n - 1) as u16)
    }

    /// Index of the node that was given `slot` at creation.
    pub fn node_of_slot(&self, slot: u16) -> usize {
        (0..self.ports.len())
            .find(|&i| {
                let (a, b) = self.range(i);
                a <= slot && slot <= b
            })
            .expect("slot in range")
    }

    /// `127.0.0.1:port` of every node.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// URL of node `i` (what `RedisConfig::url` takes for credentials/seed).
    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    fn try_client(&self, i: usize) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url(i))?.get_connection()
    }

    /// A plain (not cluster-aware) connection to node `i`.
    pub fn client(&self, i: usize) -> redis::Connection {
        self.try_client(i).expect("test client connects")
    }

    pub fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.client(i))
            .expect("CLUSTER MYID")
    }

    /// Waits until every running node reports `cluster_state:ok` and knows every
    /// node.
    pub fn wait_ok(&self, secs: u64) {
        let n = self.ports.len();
        wait_for("cluster_state:ok on every node", secs, || {
            (0..n).all(|i| {
                self.children[i].is_none()
                    || self
                        .try_client(i)
                        .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                        .map(|info| {
                            info.contains("cluster_state:ok")
                                && info.contains(&format!("cluster_known_nodes:{n}"))
                        })
                        .unwrap_or(false)
            })
        });
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("running").id()
    }

    /// SIGKILL node `i` by PID, and reap.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its port with its cluster config file (same node
    /// id, same slots) and waits until it answers PING.
    pub fn restart(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} is running");
        self.spawn(i);
        assert!(self.wait_own(i), "node {i} did not come back on its port");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
