//! Frame encode/decode costs: `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmpv::Value;
use syncgate::protocol::{
    ClientMessage, DecodeLimits, OpInput, RawOp, ServerMessage, decode_client, encode_client, encode_server,
};

fn payload() -> Value {
    Value::Map(vec![
        (Value::from("title"), Value::from("x".repeat(200))),
        (Value::from("done"), Value::from(false)),
        (Value::from("n"), Value::from(42)),
    ])
}

fn codec(c: &mut Criterion) {
    let publish = encode_client(&ClientMessage::Pub { id: 7, topic: "rooms/lobby/chat".into(), data: payload() });
    let batch = encode_client(&ClientMessage::OpBatch {
        id: 9,
        ops: (0..10)
            .map(|i| {
                OpInput::Op(RawOp {
                    op_id: Value::from(format!("op-{i}")),
                    collection: "todos/alice".into(),
                    key: format!("item-{i}"),
                    value: payload(),
                    hlc: format!("1800000000000:{i}:node-a"),
                })
            })
            .collect(),
    });
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(publish.len() as u64));
    group.bench_function("PUB 256B", |b| b.iter(|| decode_client(black_box(&publish), DecodeLimits::default())));
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("OP_BATCH 10 ops", |b| b.iter(|| decode_client(black_box(&batch), DecodeLimits::default())));
    group.finish();

    let message = ServerMessage::Message { topic: "rooms/lobby/chat".into(), data: payload(), from: "alice".into() };
    let ack = ServerMessage::AuthAck {
        sub: "alice".into(),
        roles: vec!["user".into()],
        expires_at: Some(1_800_000_000),
        limits: None,
    };
    let mut group = c.benchmark_group("encode");
    group.bench_function("MESSAGE 256B", |b| b.iter(|| encode_server(black_box(&message))));
    group.bench_function("AUTH_ACK", |b| b.iter(|| encode_server(black_box(&ack))));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
