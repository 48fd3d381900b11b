//! Client message parsing (simd-json into typed messages) and server message encoding
//! (JSON written straight into a frame), per message.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringcast::protocol::{client, server};
use std::hint::black_box;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol parse");
    g.throughput(Throughput::Elements(1));
    let cases: [(&str, &[u8]); 3] = [
        ("subscribe", br#"{"type":"subscribe","topic":"chat:room-42","id":17}"#),
        ("publish small", br#"{"type":"publish","topic":"chat:room-42","data":{"text":"hello there","from":"alice"},"id":18}"#),
        ("ping", br#"{"type":"ping"}"#),
    ];
    for (name, input) in cases {
        let mut buf = Vec::with_capacity(input.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                // simd-json parses in place: restore the input every iteration.
                buf.clear();
                buf.extend_from_slice(input);
                let r = client::parse(black_box(&mut buf)).unwrap();
                black_box(r.id.is_some());
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol encode");
    g.throughput(Throughput::Elements(1));
    let mut data = br#"{"text":"hello there","from":"alice","n":[1,2,3]}"#.to_vec();
    let value = simd_json::to_borrowed_value(&mut data).unwrap();
    g.bench_function("message frame from parsed data", |b| {
        b.iter(|| {
            black_box(server::message(
                server::Via::Topic("chat:room-42"),
                black_box(&value),
            ))
        })
    });
    g.bench_function("error frame", |b| {
        b.iter(|| black_box(server::error("bad_request", "missing `topic`", None)))
    });
    g.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
