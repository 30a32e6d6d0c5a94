//! Two `syncgate serve` processes on one Postgres schema (no backplane: a
//! reader learns of the other node's writes by `SYNC {since}`), and a node
//! killed with `kill -9` in the middle of a write run.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::postgres::{NodeProcess, fresh_schema, sql, url};
use common::{RawWs, now, token};
use rmpv::Value;
use syncgate::hlc::Hlc;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, Record, ServerMessage};

/// What a reader holds: each key's value and stamp.
type State = BTreeMap<String, (Value, String)>;

fn op(id: u64, key: &str, value: Value, hlc: String) -> OpInput {
    OpInput::Op(RawOp { op_id: Value::from(id), collection: "race".into(), key: key.into(), value, hlc })
}

/// Sends one batch and returns which ops were acknowledged.
async fn write(ws: &mut RawWs, id: u64, ops: Vec<OpInput>) -> Vec<bool> {
    ws.send(&ClientMessage::OpBatch { id, ops }).await;
    match ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await {
        ServerMessage::OpResult { results, .. } => results.iter().map(|r| r.ok).collect(),
        _ => unreachable!(),
    }
}

/// A reader polling `SYNC {since}` on one node: it checks every answer's
/// positions come once and in order, and keeps the state.
struct Poller {
    ws: RawWs,
    cursor: Option<String>,
    state: State,
    next_id: u64,
}

impl Poller {
    async fn new(addr: SocketAddr) -> Self {
        Self { ws: RawWs::authed(addr, &token("reader", &[])).await, cursor: None, state: State::new(), next_id: 1 }
    }

    async fn poll(&mut self) {
        let id = self.next_id;
        self.next_id += 2;
        let since = self.cursor.clone();
        self.ws.send(&ClientMessage::Sync { id, collection: "race".into(), since }).await;
        let mut records: Vec<Record> = Vec::new();
        let (mut cursor, mut more) = match self.ws.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await {
            ServerMessage::SyncData { records: page, cursor, more, reset, .. } => {
                assert!(!reset, "a cursor of this store never resets here");
                records.extend(page);
                (cursor, more)
            }
            _ => unreachable!(),
        };
        while more {
            if let ServerMessage::Change { records: page, cursor: next, more: rest, .. } =
                self.ws.msg_where(|m| matches!(m, ServerMessage::Change { .. })).await
            {
                records.extend(page);
                (cursor, more) = (next, rest);
            }
        }
        self.ws.send(&ClientMessage::Unsync { id: id + 1, collection: "race".into() }).await;
        self.ws.msg_where(|m| matches!(m, ServerMessage::Ok { id: answered } if *answered == id + 1)).await;
        let position = |c: &str| c.split(':').nth(1).and_then(|p| p.parse::<u64>().ok()).expect("a cursor");
        if let Some(old) = &self.cursor {
            assert!(position(&cursor) >= position(old), "the cursor went back: {old} then {cursor}");
        }
        for record in records {
            self.state.insert(record.key, (record.value, record.hlc));
        }
        self.cursor = Some(cursor);
    }
}

/// The last-writer-wins outcome of the acknowledged ops.
fn expected(acked: &[(String, Value, String)]) -> State {
    let mut state = State::new();
    for (key, value, hlc) in acked {
        let newer = state.get(key).is_none_or(|(_, held)| hlc.parse::<Hlc>().unwrap() > held.parse::<Hlc>().unwrap());
        if newer {
            state.insert(key.clone(), (value.clone(), hlc.clone()));
        }
    }
    state
}

#[tokio::test]
async fn two_nodes_on_one_schema_race_and_readers_on_both_end_equal() {
    let Some(url) = url("two_nodes_on_one_schema_race_and_readers_on_both_end_equal") else { return };
    let schema = fresh_schema("nodes");
    let (a, b) = (NodeProcess::start(&url, &schema, &[]), NodeProcess::start(&url, &schema, &[]));
    let mut writers =
        [RawWs::authed(a.addr, &token("writer-a", &[])).await, RawWs::authed(b.addr, &token("writer-b", &[])).await];
    let mut pollers = [Poller::new(a.addr).await, Poller::new(b.addr).await];
    let base = now() * 1000;
    let mut acked = Vec::new();
    for round in 0..60u64 {
        for (n, ws) in writers.iter_mut().enumerate() {
            // Shared keys race across the nodes; fresh keys show any change a reader skipped.
            let ops: Vec<(String, Value, String)> = (0..5u64)
                .map(|i| {
                    let key = if i < 2 { format!("shared-{}", (round + i) % 4) } else { format!("n{n}-{round}-{i}") };
                    (key, Value::from(format!("{n}:{round}:{i}")), format!("{}:{i}:node-{n}", base + round))
                })
                .collect();
            let batch = ops.iter().enumerate().map(|(i, (k, v, h))| op(i as u64, k, v.clone(), h.clone())).collect();
            let results = write(ws, round + 1, batch).await;
            assert!(results.iter().all(|ok| *ok), "every op on a healthy database is acknowledged");
            acked.extend(ops);
        }
        if round % 5 == 0 {
            for poller in pollers.iter_mut() {
                poller.poll().await;
            }
        }
    }
    let truth = expected(&acked);
    for poller in pollers.iter_mut() {
        poller.poll().await;
        assert_eq!(
            poller.state, truth,
            "a reader that followed with SYNC {{since}} holds the LWW of the acknowledged ops"
        );
    }
    sql(&url, &format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
}

#[tokio::test]
async fn a_node_killed_mid_run_lost_nothing_it_acknowledged() {
    let Some(url) = url("a_node_killed_mid_run_lost_nothing_it_acknowledged") else { return };
    let schema = fresh_schema("kill");
    let mut node = NodeProcess::start(&url, &schema, &[]);
    let addr = node.addr;
    let writer = tokio::spawn(async move {
        let mut ws = RawWs::authed(addr, &token("writer", &[])).await;
        let mut acked = Vec::new();
        let base = now() * 1000;
        for id in 1..u64::MAX {
            let ops: Vec<OpInput> = (0..10)
                .map(|i| op(i, &format!("k{id}-{i}"), Value::from(id), format!("{}:{i}:w", base + id)))
                .collect();
            if ws.try_send(&ClientMessage::OpBatch { id, ops }).await.is_err() {
                break;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(5), ws.recv()).await {
                Ok(common::Recv::Msg(ServerMessage::OpResult { results, .. })) => {
                    acked.extend(results.iter().filter(|r| r.ok).map(|r| format!("k{id}-{}", r.op_id)));
                }
                _ => break,
            }
        }
        acked
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    node.kill();
    let acked = writer.await.unwrap();
    assert!(acked.len() > 100, "the run got going before the kill ({} acknowledged)", acked.len());
    let rows = sql(&url, &format!("SELECT key FROM \"{schema}\".records WHERE collection = 'race'")).await;
    let stored: std::collections::HashSet<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let lost: Vec<_> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(lost.is_empty(), "{} acknowledged ops are not in Postgres: {:?}", lost.len(), &lost[..lost.len().min(5)]);
    sql(&url, &format!("DROP SCHEMA \"{schema}\" CASCADE")).await;
}

/// Postgres restarted during a write run: the client's ops are refused as
/// `unavailable` (kept and replayed), `/readyz` answers 503 meanwhile, the
/// pool reconnects by itself, and every op ends up in Postgres.
#[tokio::test]
async fn a_postgres_restart_mid_run_loses_nothing_and_readyz_says_so() {
    use syncgate_client::{Backoff, Client, ClientConfig, ClientEvent};
    let test = "a_postgres_restart_mid_run_loses_nothing_and_readyz_says_so";
    if url(test).is_none() {
        return;
    }
    let Some(pg) = common::postgres::PrivatePostgres::start(test) else { return };
    let node = NodeProcess::start(&pg.url(), "syncgate", &[]);
    let config = ClientConfig {
        backoff: Backoff { initial: std::time::Duration::from_millis(50), max: std::time::Duration::from_millis(300) },
        ..ClientConfig::new(format!("ws://{}/ws", node.addr))
            .with_token_provider(|_| async { Ok(Some(token("writer", &[]))) })
    };
    let (client, mut events) = Client::connect(config).unwrap();
    let readyz = |addr: SocketAddr| async move { common::idp::http(addr, "GET", "/readyz", None, None).await.0 };
    assert_eq!(readyz(node.addr).await, 200);
    let mut written = 0;
    for i in 0..40 {
        client.write("race", &format!("k{i}"), Value::from(i)).await.unwrap();
        written += 1;
        if i == 15 {
            pg.stop();
            common::eventually("readyz answers 503 while Postgres is down", || async {
                (readyz(node.addr).await == 503).then_some(())
            })
            .await;
        }
        if i == 30 {
            pg.start_again();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    common::eventually("every write settles after the restart", || async { (client.pending() == 0).then_some(()) })
        .await;
    common::eventually("readyz answers 200 again once Postgres is back (the probe is kept 1 s)", || async {
        (readyz(node.addr).await == 200).then_some(())
    })
    .await;
    let mut retried = false;
    while let Ok(event) = events.try_recv() {
        retried |= matches!(event, ClientEvent::OpRetrying { ref code, .. } if code == "unavailable");
        assert!(
            !matches!(event, ClientEvent::OpSettled { rejected: Some(_), .. }),
            "nothing refused for good: {event:?}"
        );
    }
    assert!(retried, "the outage was seen as unavailable and retried");
    let rows = sql(&pg.url(), "SELECT count(*) FROM syncgate.records WHERE collection = 'race'").await;
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some(written.to_string().as_str()), "every write is in Postgres");
    client.close().await;
}
