//! Criterion benchmarks for the WebSocket frame codec (`ringcast::ws`).
//!
//! Encoding is measured for a typical small fan-out message (64 B) and a
//! larger one (4 KiB); decoding for a small masked text frame (header parse +
//! unmask + UTF-8 + zero-copy split) and for a 64 KiB text message split into
//! 16 fragments (exercises the accumulation path). Decoding unmasks in place,
//! so every decode iteration gets a fresh copy of the input from
//! `iter_batched`'s setup, which is not timed.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringcast::ws::{encode_header, encode_text, Decoder, Limits, Message, OpCode};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, built the way a client would send it.
fn client_frame(opcode: OpCode, fin: bool, payload: &[u8], out: &mut Vec<u8>) {
    let mut header = BytesMut::new();
    encode_header(opcode, fin, payload.len(), &mut header);
    header[1] |= 0x80;
    out.extend_from_slice(&header);
    out.extend_from_slice(&KEY);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
}

fn text_payload(len: usize) -> Vec<u8> {
    b"ringcast benchmark payload, plain ASCII text. "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode text frame");
    for (name, len) in [("64 B", 64usize), ("4 KiB", 4096)] {
        let payload = text_payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(encode_text(black_box(&payload))))
        });
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode masked text");

    let mut small = Vec::new();
    client_frame(OpCode::Text, true, &text_payload(64), &mut small);
    group.throughput(Throughput::Bytes(64));
    let mut decoder = Decoder::new(Limits::default());
    group.bench_function("64 B single frame", |b| {
        b.iter_batched(
            || BytesMut::from(&small[..]),
            |mut buf| {
                let msg = decoder.decode(&mut buf).expect("valid frame");
                debug_assert!(matches!(msg, Some(Message::Text(_))));
                black_box(msg)
            },
            BatchSize::SmallInput,
        )
    });

    const TOTAL: usize = 64 * 1024;
    const FRAGMENTS: usize = 16;
    let payload = text_payload(TOTAL);
    let mut fragmented = Vec::new();
    for (i, chunk) in payload.chunks(TOTAL / FRAGMENTS).enumerate() {
        let opcode = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        client_frame(opcode, i == FRAGMENTS - 1, chunk, &mut fragmented);
    }
    group.throughput(Throughput::Bytes(TOTAL as u64));
    let mut decoder = Decoder::new(Limits::default());
    group.bench_function("64 KiB in 16 fragments", |b| {
        b.iter_batched(
            || BytesMut::from(&fragmented[..]),
            |mut buf| {
                let msg = decoder.decode(&mut buf).expect("valid message");
                debug_assert!(matches!(&msg, Some(Message::Text(t)) if t.len() == TOTAL));
                black_box(msg)
            },
            BatchSize::SmallInput,
        )
    });

    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode);
criterion_main!(benches);
