//! Fan-out of one message to 10,000 subscribers on one shard: the hub pushes a clone of
//! the same frame onto every subscriber's queue (what a shard does per delivered message),
//! and the queues are then drained as the connection tasks would before their writev.
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringcast::hub::{ConnHandle, Hub};
use ringcast::metrics::ShardCounters;
use ringcast::protocol::server;
use ringcast::runtime::mesh::Mesh;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;

const RECEIVERS: usize = 10_000;

fn fanout(c: &mut Criterion) {
    let counters = ShardCounters::default();
    let (tx, _rx) = flume::unbounded();
    let mesh = Mesh::new(0, vec![tx]);
    let mut hub = Hub::new(
        0,
        Arc::new(ringcast::presence::Presence::default()),
        Arc::new(ringcast::broker::memory::MemoryBroker),
    );
    let topic: Arc<str> = "chat:big".into();
    let conns: Vec<Rc<ConnHandle>> = (0..RECEIVERS as u64)
        .map(|i| {
            let h = Rc::new(ConnHandle::new(i, 0, 1 << 30, 0));
            hub.add_conn(h.clone());
            hub.subscribe(&h, topic.clone(), None, false, &mesh, &counters);
            h
        })
        .collect();
    let mut data = br#"{"text":"hello everyone","n":1}"#.to_vec();
    let frame: Bytes = server::message(
        server::Via::Topic(&topic),
        &simd_json::to_borrowed_value(&mut data).unwrap(),
    );

    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(RECEIVERS as u64));
    g.bench_function(
        "one message to 10k subscribers on one shard (push + drain)",
        |b| {
            b.iter(|| {
                let n = hub.publish(&topic, black_box(&frame), &mesh, &counters);
                for h in &conns {
                    black_box(h.take_pending());
                }
                black_box(n)
            })
        },
    );
    g.bench_function("encode once + fan out to 10k", |b| {
        b.iter(|| {
            let mut d = br#"{"text":"hello everyone","n":1}"#.to_vec();
            let v = simd_json::to_borrowed_value(&mut d).unwrap();
            let f = server::message(server::Via::Topic(&topic), &v);
            let n = hub.publish(&topic, &f, &mesh, &counters);
            for h in &conns {
                black_box(h.take_pending());
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
