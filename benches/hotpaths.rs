//! The hot paths the performance goals name: `cargo bench --bench hotpaths`.
//!
//! - the RBAC check against 100 rules (goal: under 100 ns; that it allocates
//!   nothing is asserted in `tests/allocations.rs`),
//! - the last-writer-wins decision between two writes,
//! - encoding one `MESSAGE`,
//! - one fan-out step: a publication offered to 1,000 send queues (and drained).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rmpv::Value;
use syncgate::auth::Identity;
use syncgate::backplane::MemoryBackplane;
use syncgate::hlc::{Hlc, encode_value, merge};
use syncgate::hub::Hub;
use syncgate::protocol::{ServerMessage, encode_server};
use syncgate::rules::{Action, RuleSet};
use syncgate::send_queue::SendQueue;

/// 100 rules: 99 that do not match the checked resource, then the one that does.
pub fn hundred_rules() -> String {
    let mut text = String::new();
    for n in 0..99 {
        text.push_str(&format!(
            "[[rules]]\nroles = [\"user\"]\nresource = \"orgs/{{orgId}}/team-{n}/**\"\nactions = [\"read\", \"write\"]\n\n"
        ));
    }
    text.push_str("[[rules]]\nroles = [\"user\"]\nresource = \"users/{sub}/**\"\nactions = [\"read\", \"write\"]\n");
    text
}

fn rbac(c: &mut Criterion) {
    let rules = RuleSet::parse(&hundred_rules()).unwrap();
    let mut identity = Identity::new("alice".to_string(), vec!["user".to_string()]);
    identity.claims.insert("orgId".into(), "acme".into());
    let access = rules.specialise(&identity);
    assert!(access.allows(Action::Write, "users/alice/todos"));
    c.bench_function("rbac check, 100 rules", |b| {
        b.iter(|| access.allows(black_box(Action::Write), black_box("users/alice/todos")))
    });
}

fn lww(c: &mut Criterion) {
    let (a, b) = (
        Hlc { millis: 1_800_000_000_000, counter: 3, node: "device-a".into() },
        Hlc { millis: 1_800_000_000_000, counter: 3, node: "device-b".into() },
    );
    let (va, vb) = (encode_value(&Value::from("left")), encode_value(&Value::from("right")));
    c.bench_function("lww decision (tie on time, node decides)", |bench| {
        bench.iter(|| merge(black_box(&a), black_box(&va), black_box(&b), black_box(&vb)))
    });
}

fn message(c: &mut Criterion) {
    let data = Value::Binary(vec![7; 64]);
    c.bench_function("encode MESSAGE 64 B", |b| {
        b.iter(|| {
            encode_server(&ServerMessage::Message {
                topic: black_box("rooms/lobby").into(),
                data: data.clone(),
                from: "alice".into(),
            })
        })
    });
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _guard = runtime.enter();
    let hub = Hub::new(Arc::new(MemoryBackplane::standalone()));
    let mut receivers = Vec::new();
    for id in 0..1000 {
        let (queue, rx, _) = SendQueue::new(id, 16);
        hub.subscribe("t", queue);
        receivers.push(rx);
    }
    let message = encode_server(&ServerMessage::Message {
        topic: "t".into(),
        data: Value::Binary(vec![7; 64]),
        from: "alice".into(),
    });
    c.bench_function("fan-out step to 1000 queues (offer + drain)", |b| {
        b.iter(|| {
            assert_eq!(hub.deliver("t", message.clone()), 1000);
            for rx in &mut receivers {
                black_box(rx.try_recv());
            }
        })
    });
}

criterion_group!(benches, rbac, lww, message, fanout);
criterion_main!(benches);
