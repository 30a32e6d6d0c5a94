//! Several `syncgate serve` processes on one Postgres schema and one NATS
//! cluster name (both fresh per test), as an operator runs them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rmpv::Value;
use syncgate::hlc::Hlc;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, Record, ServerMessage};

use super::postgres::{NodeProcess, fresh_schema};
use super::{RawWs, token};

pub const ADMIN: &str = "cluster-admin-token-of-32-bytes-or-more";
pub const CLUSTER_SECRET: &str = "cluster-secret-for-the-tests";

pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub schema: String,
    pub postgres: String,
}

impl Cluster {
    /// The Postgres and NATS URLs, or `None` after printing that `test` was skipped.
    pub fn services(test: &str) -> Option<(String, String)> {
        Some((super::postgres::url(test)?, super::nats::url(test)?))
    }

    /// `n` nodes (`node-0`, `node-1`, …) with `extra` flags each.
    pub fn start(postgres: &str, nats: &str, n: usize, extra: &[&str]) -> Self {
        let schema = fresh_schema("cluster");
        let cluster = super::nats::fresh_cluster("cl");
        let nodes = (0..n)
            .map(|i| {
                let node_id = format!("node-{i}");
                let mut args = vec![
                    "--backplane",
                    nats,
                    "--cluster-name",
                    &cluster,
                    "--cluster-secret",
                    CLUSTER_SECRET,
                    "--node-id",
                    &node_id,
                    "--admin-token",
                    ADMIN,
                ];
                args.extend_from_slice(extra);
                NodeProcess::start(postgres, &schema, &args)
            })
            .collect();
        Self { nodes, schema, postgres: postgres.to_string() }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// An admin request to node `i`: (status, body).
    pub async fn admin(&self, i: usize, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        super::idp::http(self.addr(i), method, path, Some(ADMIN), body).await
    }

    /// Waits until every node lists every other one in `/admin/nodes`.
    pub async fn wait_until_formed(&self) {
        for i in 0..self.nodes.len() {
            super::eventually("every node hears every other", || async {
                let (status, body) = self.admin(i, "GET", "/admin/nodes", None).await;
                let nodes: serde_json::Value = serde_json::from_str(&body).ok()?;
                let count = nodes["nodes"].as_array().map_or(0, Vec::len);
                (status == 200 && count == self.nodes.len()).then_some(())
            })
            .await;
        }
    }
}

/// Each key's value and stamp.
pub type State = BTreeMap<String, (Value, String)>;

fn position(cursor: &str) -> u64 {
    cursor.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a cursor")
}

/// A reader following a collection live: it checks that every `CHANGE`
/// comes once and in position order, and keeps the state.
pub struct Follower {
    pub ws: RawWs,
    pub state: State,
    pub position: u64,
    pub cursor: String,
}

impl Follower {
    /// SYNCs `collection` on `addr` (from `since`, or from the start) and reads the snapshot.
    pub async fn start(addr: SocketAddr, collection: &str, since: Option<String>, state: State) -> Self {
        let mut ws = RawWs::authed(addr, &token("reader", &[])).await;
        ws.send(&ClientMessage::Sync { id: 1, collection: collection.into(), since }).await;
        let mut follower = Self { ws, state, position: 0, cursor: String::new() };
        let (records, cursor, mut more) =
            match follower.ws.msg_where(|m| matches!(m, ServerMessage::SyncData { .. })).await {
                ServerMessage::SyncData { records, cursor, more, reset, .. } => {
                    assert!(!reset, "a cursor of this store never resets");
                    (records, cursor, more)
                }
                _ => unreachable!(),
            };
        follower.apply(records, &cursor, false);
        while more {
            more = follower.next_change().await;
        }
        follower
    }

    fn apply(&mut self, records: Vec<Record>, cursor: &str, live: bool) {
        let at = position(cursor);
        if live {
            assert!(at > self.position, "a change seen twice or out of order: {at} after {}", self.position);
        }
        self.position = self.position.max(at);
        self.cursor = cursor.to_string();
        for record in records {
            self.state.insert(record.key, (record.value, record.hlc));
        }
    }

    /// Reads the next `CHANGE`; returns its `more`.
    pub async fn next_change(&mut self) -> bool {
        match self.ws.msg_where(|m| matches!(m, ServerMessage::Change { .. })).await {
            ServerMessage::Change { records, cursor, more, .. } => {
                // Snapshot pages share their cursor; live changes each move it.
                let live = !more && !records.is_empty();
                self.apply(records, &cursor, live);
                more
            }
            _ => unreachable!(),
        }
    }

    /// Follows until the state is `expected` (15 s at most).
    pub async fn until(&mut self, expected: &State) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while &self.state != expected {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, self.next_change()).await.is_err() {
                panic!("never reached the store's state: {} keys of {}", self.state.len(), expected.len());
            }
        }
    }
}

/// The last-writer-wins state of acknowledged ops.
pub fn lww(acked: &[(String, Value, String)]) -> State {
    let mut state = State::new();
    for (key, value, hlc) in acked {
        let newer = state
            .get(key)
            .is_none_or(|(_, held)| hlc.parse::<Hlc>().expect("an hlc") > held.parse::<Hlc>().expect("an hlc"));
        if newer {
            state.insert(key.clone(), (value.clone(), hlc.clone()));
        }
    }
    state
}

/// Writes `batches` batches of 5 ops on keys `k0`–`k9` through `addr` as writer `node`; returns the acknowledged ops.
pub async fn write_run(addr: SocketAddr, node: &str, batches: u64) -> Vec<(String, Value, String)> {
    let mut ws = RawWs::authed(addr, &token(node, &[])).await;
    let mut acked = Vec::new();
    for batch in 0..batches {
        let millis = super::now() * 1000 + batch;
        let ops: Vec<(String, Value, String)> = (0..5u64)
            .map(|i| {
                let key = format!("k{}", fastrand::u64(0..10));
                (key, Value::from(format!("{node}-{batch}-{i}")), format!("{millis}:{i}:{node}"))
            })
            .collect();
        let inputs = ops
            .iter()
            .enumerate()
            .map(|(i, (key, value, hlc))| {
                OpInput::Op(RawOp {
                    op_id: Value::from(i),
                    collection: "race".into(),
                    key: key.clone(),
                    value: value.clone(),
                    hlc: hlc.clone(),
                })
            })
            .collect();
        ws.send(&ClientMessage::OpBatch { id: batch + 1, ops: inputs }).await;
        if let ServerMessage::OpResult { results, .. } =
            ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await
        {
            for (result, op) in results.iter().zip(ops) {
                if result.ok {
                    acked.push(op);
                }
            }
        }
    }
    acked
}
