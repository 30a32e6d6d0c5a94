//! Property: replicas that edit concurrently, go offline for random
//! periods and replay in random orders end with the server's exact state.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rmpv::Value;
use syncgate::backplane::MemoryBackplane;
use syncgate::collections::Collections;
use syncgate::hlc::HlcClock;
use syncgate::hub::Hub;
use syncgate::protocol::{ClientMessage, OpInput, RawOp};
use syncgate::store::{MemoryStore, Store};
use syncgate_client::Replica;

const REPLICAS: usize = 3;
const BASE_MS: u64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Step {
    /// Replica edits a key (None deletes).
    Write { replica: usize, key: u8, value: Option<u8> },
    /// Replica's clock moves on.
    Tick { replica: usize, ms: u16 },
    /// Replica comes online: replays up to `batch` ops, then pulls changes.
    Online { replica: usize, batch: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..REPLICAS, 0u8..4, proptest::option::of(0u8..50)).prop_map(|(replica, key, value)| Step::Write { replica, key, value }),
        2 => (0..REPLICAS, 0u16..500).prop_map(|(replica, ms)| Step::Tick { replica, ms }),
        2 => (0..REPLICAS, 1usize..6).prop_map(|(replica, batch)| Step::Online { replica, batch }),
    ]
}

struct Device {
    replica: Replica,
    /// Each device's clock runs with its own skew (within the server's drift limit).
    now: u64,
    cursor: u64,
}

async fn go_online(device: &mut Device, server: &Collections, store: &MemoryStore, batch: usize) {
    let ops: Vec<RawOp> = device
        .replica
        .outbox()
        .iter()
        .take(batch)
        .map(|op| match op.to_wire() {
            OpInput::Op(raw) => raw,
            OpInput::Invalid { .. } => unreachable!(),
        })
        .collect();
    let outcomes = server.apply(ops, BASE_MS + 10_000_000).await;
    assert!(outcomes.iter().all(|o| o.ok), "{outcomes:?}");
    device.replica.settle(&outcomes, BASE_MS + 10_000_000);
    let scan = store.scan_since("c", device.cursor).await.unwrap();
    let records: Vec<_> = scan
        .records
        .into_iter()
        .map(|r| syncgate::protocol::Record { key: r.key, value: r.value, hlc: r.hlc.to_string() })
        .collect();
    device.replica.merge("c", &records, BASE_MS + 10_000_000);
    device.cursor = scan.cursor;
}

async fn visible(store: &MemoryStore) -> BTreeMap<String, Value> {
    store
        .scan_since("c", 0)
        .await
        .unwrap()
        .records
        .into_iter()
        .filter(|r| !r.value.is_nil())
        .map(|r| (r.key, r.value))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn replicas_and_server_converge(steps in proptest::collection::vec(step(), 1..80), skews in proptest::collection::vec(0u64..5_000, REPLICAS)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let store = Arc::new(MemoryStore::new());
            let hub = Hub::new(Arc::new(MemoryBackplane::standalone()));
            let metrics = Arc::new(syncgate::metrics::Metrics::new());
            let server = Collections::open(store.clone() as Arc<dyn Store>, hub, HlcClock::new("server", (0, 0)), 60_000_000, metrics).await.unwrap();
            let mut devices: Vec<Device> = (0..REPLICAS)
                .map(|i| Device { replica: Replica::new(&format!("device-{i}")), now: BASE_MS + skews[i], cursor: 0 })
                .collect();
            for step in steps {
                match step {
                    Step::Write { replica, key, value } => {
                        let d = &mut devices[replica];
                        d.replica.write("c", &format!("k{key}"), value.map_or(Value::Nil, Value::from), d.now);
                    }
                    Step::Tick { replica, ms } => devices[replica].now += u64::from(ms),
                    Step::Online { replica, batch } => go_online(&mut devices[replica], &server, &store, batch).await,
                }
            }
            // Everyone eventually comes online and drains, then catches up once more.
            for d in devices.iter_mut() {
                while !d.replica.outbox().is_empty() {
                    go_online(d, &server, &store, 10).await;
                }
            }
            for d in devices.iter_mut() {
                go_online(d, &server, &store, 10).await;
            }
            let truth = visible(&store).await;
            for (i, d) in devices.iter().enumerate() {
                prop_assert_eq!(&d.replica.records("c"), &truth, "replica {} diverged", i);
            }
            Ok(())
        })?;
    }
}

#[test]
fn wire_ops_are_what_the_replica_queued() {
    let mut replica = Replica::new("dev");
    let op = replica.write("c", "k", Value::from(1), BASE_MS);
    let batch = ClientMessage::OpBatch { id: 1, ops: replica.outbox().iter().map(|o| o.to_wire()).collect() };
    let bytes = syncgate::protocol::encode_client(&batch);
    let decoded = syncgate::protocol::decode_client(&bytes, Default::default()).unwrap();
    let ClientMessage::OpBatch { ops, .. } = decoded else { panic!() };
    assert!(matches!(&ops[0], OpInput::Op(raw) if raw.op_id == Value::from(op.op_id.as_str()) && raw.hlc == op.hlc));
}
