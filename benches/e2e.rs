//! End-to-end encryption costs on the device: sealing and opening one
//! record (AES-256-GCM + MessagePack), and unlocking a vault (Argon2id at
//! the default parameters, then the key wraps). `cargo bench --bench e2e`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rmpv::Value;
use syncgate_client::e2e::envelope::{self, Binding, Kind};
use syncgate_client::e2e::vault::{enrol, unlock_with_password};
use syncgate_client::e2e::{DataKey, KdfParams};

fn record(bytes: usize) -> Value {
    Value::Map(vec![
        (Value::from("title"), Value::from("x".repeat(bytes))),
        (Value::from("done"), Value::from(false)),
        (Value::from("n"), Value::from(42)),
    ])
}

fn per_record(c: &mut Criterion) {
    let key = DataKey::generate(1);
    let binding = Binding { kind: Kind::Record, space: "users/alice", place: "users/alice/todos", key: "item-42" };
    let mut group = c.benchmark_group("e2e record");
    for size in [200, 4096] {
        let value = record(size);
        let sealed = envelope::seal(&key, &binding, &value).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("seal {size}B"), |b| b.iter(|| envelope::seal(&key, &binding, black_box(&value))));
        group
            .bench_function(format!("open {size}B"), |b| b.iter(|| envelope::open(&key, &binding, black_box(&sealed))));
        group.bench_function(format!("seal+open {size}B"), |b| {
            b.iter(|| envelope::open(&key, &binding, &envelope::seal(&key, &binding, black_box(&value)).unwrap()))
        });
    }
    group.finish();
}

fn unlock(c: &mut Criterion) {
    let mut group = c.benchmark_group("e2e unlock");
    group.sample_size(10);
    let params = KdfParams::DEFAULT;
    let mut enrolment = enrol("alice", "correct horse battery staple", params).unwrap();
    let mut items: std::collections::BTreeMap<String, Vec<u8>> = enrolment.items.iter().cloned().collect();
    for space in ["users/alice", "orgs/acme", "orgs/beta"] {
        let key = enrolment.unlocked.keyring.create_space(space).unwrap().clone();
        let (name, bytes) = enrolment.unlocked.key_item(space, &key).unwrap();
        items.insert(name, bytes);
    }
    group.bench_function("argon2id m=65536 t=3 p=1 + 3 space keys", |b| {
        b.iter(|| unlock_with_password("alice", black_box("correct horse battery staple"), &items).unwrap())
    });
    group.finish();
}

criterion_group!(benches, per_record, unlock);
criterion_main!(benches);
