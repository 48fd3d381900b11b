//! End-to-end: start the tokio peer, run short fanout / chat / users /
//! storm scenarios against it with `--check` (zero loss, no errors).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_peer() -> (Peer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_peer_tokio"))
        .arg(&addr)
        .stderr(Stdio::null())
        .spawn()
        .expect("start peer_tokio");
    let t = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "peer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Peer(child), addr)
}

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .args(["--json", "--check"])
        .output()
        .expect("run loadtest");
    assert!(
        out.status.success(),
        "loadtest {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[test]
fn scenarios_against_tokio_peer() {
    let (_peer, addr) = start_peer();
    let common = [
        "--target",
        "tokio",
        "--url",
        addr.as_str(),
        "--duration",
        "1s",
    ];
    let v = run(&[
        &["fanout"],
        &common[..],
        &["--conns", "50", "--rate", "200"],
    ]
    .concat());
    assert_eq!(v["connected"], 50);
    assert!(v["received"].as_u64().unwrap() >= 50 * 150, "{v}");
    assert_eq!(v["lost"], 0);

    let v = run(&[
        &["fanout"],
        &common[..],
        &["--conns", "20", "--publish-via", "ws"],
    ]
    .concat());
    assert!(v["received"].as_u64().unwrap() > 0);

    let v = run(&[
        &["chat"],
        &common[..],
        &["--conns", "40", "--room-size", "5", "--rate", "200"],
    ]
    .concat());
    assert!(v["received"].as_u64().unwrap() > 0);

    let v = run(&[&["users"], &common[..], &["--conns", "30", "--rate", "200"]].concat());
    assert!(v["received"].as_u64().unwrap() > 100);

    let v = run(&[&["storm"], &common[..], &["--conns", "4"]].concat());
    assert!(v["connected"].as_u64().unwrap() > 10);

    let v = run(&[
        &["fanout"],
        &common[..],
        &["--conns", "40", "--procs", "2", "--rate", "100"],
    ]
    .concat());
    assert_eq!(v["connected"], 40);
    assert_eq!(v["lost"], 0);

    // --publish-url: the publisher goes to its own server. The same one: all delivered.
    let v = run(&[
        &["fanout"],
        &common[..],
        &[
            "--conns",
            "20",
            "--rate",
            "100",
            "--publish-url",
            addr.as_str(),
        ],
    ]
    .concat());
    assert_eq!(v["lost"], 0);
    assert!(v["received"].as_u64().unwrap() >= 20 * 50, "{v}");
    // Another, unconnected peer: the publishes are acked there, nothing arrives here.
    let (_other, other) = start_peer();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["fanout", "--conns", "5", "--rate", "100", "--json"])
        .args(&common[..])
        .args(["--publish-url", other.as_str(), "--drain", "200ms"])
        .output()
        .expect("run loadtest");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert!(v["published"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["received"], 0, "{v}");
}
