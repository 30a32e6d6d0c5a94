//! HLC parsing, and last-writer-wins merge: commutative, associative, idempotent.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rmpv::Value;
use syncgate_client::Replica;
use syncgate::hlc::Hlc;
use syncgate::protocol::Record;

#[derive(Debug, Arbitrary, Clone)]
struct W {
    key: u8,
    millis: u16,
    counter: u8,
    node: u8,
    value: Option<u8>,
}

fn record(w: &W) -> Record {
    Record { key: format!("k{}", w.key % 4), value: w.value.map_or(Value::Nil, Value::from), hlc: format!("{}:{}:n{}", w.millis, w.counter, w.node % 3) }
}

fn merged(order: &[W]) -> std::collections::BTreeMap<String, Value> {
    let mut r = Replica::new("fuzz");
    for w in order {
        r.merge("c", &[record(w)], u64::from(u16::MAX));
    }
    r.records("c")
}

fuzz_target!(|input: (String, Vec<W>, u64)| {
    let (text, writes, seed) = input;
    if let Ok(h) = text.parse::<Hlc>() {
        assert_eq!(h.to_string().parse::<Hlc>().unwrap(), h, "parse/format round trip");
    }
    // A server never sends two values under one stamp (it refuses the second),
    // so every write with a stamp seen before carries that stamp's first value.
    let mut first = std::collections::HashMap::new();
    let writes: Vec<W> = writes
        .into_iter()
        .take(16)
        .map(|mut w| {
            w.value = *first.entry((w.key % 4, w.millis, w.counter, w.node % 3)).or_insert(w.value);
            w
        })
        .collect();
    let forward = merged(&writes);
    let mut reversed = writes.clone();
    reversed.reverse();
    assert_eq!(merged(&reversed), forward, "merge order must not matter");
    let mut shuffled = writes.clone();
    let mut s = seed;
    for i in (1..shuffled.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        shuffled.swap(i, (s >> 33) as usize % (i + 1));
    }
    assert_eq!(merged(&shuffled), forward, "any grouping/order gives the same state");
    let twice: Vec<W> = writes.iter().chain(writes.iter()).cloned().collect();
    assert_eq!(merged(&twice), forward, "merging twice changes nothing");
});
