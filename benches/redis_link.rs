//! Why the Redis link is a batching I/O thread: 10,000 publishes to a real redis-server
//! (started here on a free port; skipped when `redis-server` is not on PATH).
//!
//! - `link`: `RedisLink::publish` from the calling thread (what a shard does), until
//!   the link has written them all. Submissions gather into pipelines by themselves.
//! - `link_caller_only`: the same calls, without waiting: the cost a shard pays.
//! - `round_trip_each`: one PUBLISH per round trip (a connection per event source, the
//!   obvious design), the baseline.
//! - `manual_pipeline`: all 10,000 in one hand-made pipeline, the upper bound.
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringcast::broker::redis::{LinkError, LinkStatus, RedisConfig, RedisLink};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const N: usize = 10_000;

struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let r = Redis { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(r)
}

fn publish(c: &mut Criterion) {
    let Some(redis) = start_redis() else {
        eprintln!("redis_link bench skipped: redis-server not found on PATH");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let link = RedisLink::start(RedisConfig::new(url.clone()), |_| {}).expect("link");
    let deadline = Instant::now() + Duration::from_secs(10);
    while link.status() != LinkStatus::Up {
        assert!(Instant::now() < deadline, "link did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    let payload = Bytes::from(vec![b'x'; 64]);
    let mut g = c.benchmark_group("redis_publish_10k");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);

    // Retry only while the queue is full; any other failure ends the bench.
    let submit = |link: &RedisLink| {
        for _ in 0..N {
            loop {
                match link.publish("bench", payload.clone()) {
                    Ok(()) => break,
                    Err(LinkError::Overloaded) => std::thread::yield_now(),
                    Err(e) => panic!("publish failed: {e}"),
                }
            }
        }
    };
    let drain = |link: &RedisLink, target: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while link.metrics().publishes_sent < target {
            assert!(Instant::now() < deadline, "the link stopped sending");
            std::thread::yield_now();
        }
    };
    g.bench_function("link", |b| {
        b.iter(|| {
            let target = link.metrics().publishes_sent + N as u64;
            submit(&link);
            drain(&link, target);
        })
    });
    // The calls alone (what a shard pays); the link drains outside the timed part,
    // so every iteration starts with an empty queue.
    g.bench_function("link_caller_only", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let target = link.metrics().publishes_sent + N as u64;
                let t = Instant::now();
                submit(&link);
                spent += t.elapsed();
                drain(&link, target);
            }
            spent
        })
    });

    let mut conn = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connect");
    g.bench_function("round_trip_each", |b| {
        b.iter(|| {
            for _ in 0..N {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg("bench")
                    .arg(&payload[..])
                    .query(&mut conn)
                    .expect("publish");
            }
        })
    });
    g.bench_function("manual_pipeline", |b| {
        b.iter(|| {
            let mut p = redis::pipe();
            for _ in 0..N {
                p.cmd("PUBLISH").arg("bench").arg(&payload[..]).ignore();
            }
            let _: () = p.query(&mut conn).expect("pipeline");
        })
    });
    g.finish();
    println!(
        "link metrics after the run: avg pipeline {:.1} commands, max {}, rtt avg {} us",
        link.metrics().avg_pipeline,
        link.metrics().max_pipeline,
        link.metrics().rtt_avg_us
    );
    link.shutdown();
}

criterion_group!(benches, publish);
criterion_main!(benches);
