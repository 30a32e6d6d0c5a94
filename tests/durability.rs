//! The durable store behind a real server: restarts, injected failures,
//! tombstone retention, persisted revocations, and the store conformance suite.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, Record, ServerMessage};
use syncgate::store::{Durability, SqliteStore, Store};

fn op(id: &str, collection: &str, key: &str, value: Value, hlc: String) -> OpInput {
    OpInput::Op(RawOp { op_id: Value::from(id), collection: collection.into(), key: key.into(), value, hlc })
}

fn disk_config(store: Arc<SqliteStore>) -> ServerConfig {
    ServerConfig { store: store.clone(), revocation_store: store, ..jwt_config() }
}

async fn sync(ws: &mut RawWs, id: u64, collection: &str, since: Option<String>) -> (Vec<Record>, String, bool) {
    ws.send(&ClientMessage::Sync { id, collection: collection.into(), since }).await;
    loop {
        match ws.msg().await {
            ServerMessage::SyncData { records, cursor, reset, .. } => return (records, cursor, reset),
            ServerMessage::Change { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_sqlite_store_passes_the_public_conformance_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    syncgate::store::conformance::run(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { std::sync::Arc::new(store) as std::sync::Arc<dyn syncgate::store::Store> }
    })
    .await;
    // The shared-database check does not apply: a data directory admits one
    // process (its lock file refuses a second handle), so SQLite is never shared.
    let dir = tempfile::tempdir().unwrap();
    let _open = SqliteStore::open(dir.path(), Durability::Full).unwrap();
    assert!(SqliteStore::open(dir.path(), Durability::Full).is_err(), "a second handle is refused");
}

#[tokio::test]
async fn a_restart_is_invisible_to_clients() {
    let dir = tempfile::tempdir().unwrap();
    let t = now() * 1000;
    let (before, cursor, late_cursor) = {
        let server =
            TestServer::start(disk_config(Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap()))).await;
        let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
        let nested = Value::Map(vec![(
            Value::from("n"),
            Value::Array(vec![Value::from(1.5), Value::Binary(vec![0, 255]), Value::Nil]),
        )]);
        ws.send(&ClientMessage::OpBatch {
            id: 1,
            ops: vec![
                op("1", "notes", "a", Value::from("alpha"), format!("{t}:0:dev")),
                op("2", "notes", "b", nested, format!("{t}:1:dev")),
                op("3", "notes", "c", Value::from(3), format!("{t}:2:dev")),
            ],
        })
        .await;
        assert!(
            matches!(ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await, ServerMessage::OpResult { ref results, .. } if results.iter().all(|r| r.ok))
        );
        let (_, cursor, _) = sync(&mut ws, 2, "notes", None).await;
        ws.send(&ClientMessage::Unsync { id: 3, collection: "notes".into() }).await;
        ws.msg().await;
        ws.send(&ClientMessage::OpBatch {
            id: 4,
            ops: vec![
                op("4", "notes", "c", Value::Nil, format!("{t}:3:dev")),
                op("5", "notes", "d", Value::from("late"), format!("{}:0:offline", t - 60_000)),
            ],
        })
        .await;
        assert!(matches!(
            ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await,
            ServerMessage::OpResult { .. }
        ));
        let (all, late_cursor, _) = sync(&mut ws, 5, "notes", None).await;
        drop(ws);
        server.stop().await;
        (all, cursor, late_cursor)
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap());
    assert!(store.clock().await.unwrap().0 >= t, "the server's clock resumes after the stored timestamps");
    let server = TestServer::start(disk_config(store)).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    let (after, after_cursor, reset) = sync(&mut ws, 1, "notes", None).await;
    assert_eq!(after, before, "records and tombstones come back bit for bit");
    assert_eq!(after_cursor, late_cursor);
    assert!(!reset);
    let (delta, _, _) = sync(&mut ws, 2, "notes", Some(cursor)).await;
    let keys: Vec<_> = delta.iter().map(|r| (r.key.as_str(), r.value.clone())).collect();
    assert_eq!(keys, [("c", Value::Nil), ("d", Value::from("late"))], "since-deltas are exact across the restart");
    ws.send(&ClientMessage::OpBatch {
        id: 3,
        ops: vec![op("6", "notes", "e", Value::from(5), format!("{}:0:dev", now() * 1000))],
    })
    .await;
    assert!(
        matches!(ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await, ServerMessage::OpResult { ref results, .. } if results[0].ok)
    );
    let (delta, _, _) = sync(&mut ws, 4, "notes", Some(after_cursor.clone())).await;
    assert_eq!(delta.len(), 1, "sequence numbers continue after the restart");
    server.stop().await;
}

#[tokio::test]
async fn commit_failures_refuse_writes_while_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap());
    let server = TestServer::start(disk_config(store.clone())).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    let t = now() * 1000;
    ws.send(&ClientMessage::OpBatch { id: 1, ops: vec![op("1", "notes", "a", Value::from(1), format!("{t}:0:d"))] })
        .await;
    assert!(
        matches!(ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await, ServerMessage::OpResult { ref results, .. } if results[0].ok)
    );

    store.inject_commit_failure(true);
    ws.send(&ClientMessage::OpBatch {
        id: 2,
        ops: vec![
            op("2", "notes", "b", Value::from(2), format!("{t}:1:d")),
            op("3", "notes", "c", Value::from(3), format!("{t}:2:d")),
        ],
    })
    .await;
    match ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await {
        ServerMessage::OpResult { results, .. } => {
            assert!(results.iter().all(|r| !r.ok && r.code.as_deref() == Some("unavailable")), "{results:?}")
        }
        other => panic!("{other:?}"),
    }
    let (records, _, _) = sync(&mut ws, 3, "notes", None).await;
    assert_eq!(
        records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["a"],
        "reads still served, nothing half-applied"
    );

    store.inject_commit_failure(false);
    ws.send(&ClientMessage::OpBatch { id: 4, ops: vec![op("2", "notes", "b", Value::from(2), format!("{t}:1:d"))] })
        .await;
    assert!(
        matches!(ws.msg_where(|m| matches!(m, ServerMessage::OpResult { .. })).await, ServerMessage::OpResult { ref results, .. } if results[0].ok),
        "the server survived"
    );
    server.stop().await;
}

#[tokio::test]
async fn readers_older_than_the_tombstone_horizon_get_the_full_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap());
    let server = TestServer::start(disk_config(store.clone())).await;
    let mut ws = RawWs::authed(server.addr, &token("alice", &[])).await;
    let old = (now() - 40 * 24 * 3600) * 1000;
    ws.send(&ClientMessage::OpBatch {
        id: 1,
        ops: vec![
            op("1", "notes", "keep", Value::from(1), format!("{old}:0:d")),
            op("2", "notes", "doomed", Value::from(2), format!("{old}:1:d")),
        ],
    })
    .await;
    ws.msg().await;
    let (_, stale_cursor, _) = sync(&mut ws, 2, "notes", None).await;
    ws.send(&ClientMessage::Unsync { id: 3, collection: "notes".into() }).await;
    ws.msg().await;
    ws.send(&ClientMessage::OpBatch { id: 4, ops: vec![op("3", "notes", "doomed", Value::Nil, format!("{old}:2:d"))] })
        .await;
    ws.msg().await;
    let cutoff = now() * 1000 - 30 * 24 * 3600 * 1000;
    assert_eq!(store.collect_tombstones(cutoff).await.unwrap(), 1);
    let (records, _, reset) = sync(&mut ws, 5, "notes", Some(stale_cursor)).await;
    assert!(reset, "a cursor from before the collected delete must resync");
    assert_eq!(
        records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["keep"],
        "the full state, without the collected key"
    );
    server.stop().await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let revoked = hs256(serde_json::json!({"sub": "mallory", "jti": "stolen", "exp": now() + 600}));
    {
        let config = ServerConfig {
            admin_token: Some("admin".into()),
            ..disk_config(Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap()))
        };
        let server = TestServer::start(config).await;
        let (status, _) =
            common::idp::http(server.addr, "POST", "/admin/revoke", Some("admin"), Some(r#"{"jti":"stolen"}"#)).await;
        assert_eq!(status, 200);
        server.stop().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server =
        TestServer::start(disk_config(Arc::new(SqliteStore::open(dir.path(), Durability::Full).unwrap()))).await;
    assert_eq!(RawWs::refused(server.addr, &revoked).await, ("forbidden".into(), 4003));
    server.stop().await;
}

/// A collection's chain (`prev`) survives a restart even when its latest
/// write was a tombstone that has since been collected.
#[tokio::test]
async fn a_collections_chain_survives_collection_and_restart() {
    use syncgate::hlc::Hlc;
    use syncgate::store::{Applied, Write};
    let dir = tempfile::tempdir().unwrap();
    let write = |key: &str, value: Value, millis: u64| Write {
        collection: "c".into(),
        key: key.into(),
        value,
        hlc: Hlc { millis, counter: 0, node: "n".into() },
    };
    let head = {
        let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        store.apply(&[write("k", Value::from(1), 10)]).await.unwrap();
        let applied = store.apply(&[write("k", Value::Nil, 20)]).await.unwrap();
        let Applied::Stored { seq, .. } = applied[0] else { panic!("{applied:?}") };
        assert_eq!(store.collect_tombstones(1_000).await.unwrap(), 1, "the head tombstone is collected");
        seq
    };
    let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
    let applied = store.apply(&[write("x", Value::from(2), 5_000)]).await.unwrap();
    assert!(matches!(applied[0], Applied::Stored { prev, .. } if prev == head), "{applied:?} (head {head})");
}

/// Under a steady flow of commits the WAL starts over (the commit thread
/// restarts it once the checkpoint thread finds it long) and its file is cut
/// back, instead of growing with every write: 160 MB of values written by
/// eight writers back to back leave a WAL well under that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_sustained_writes() {
    use syncgate::hlc::Hlc;
    use syncgate::store::{Applied, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), Durability::None).unwrap());
    let wal = dir.path().join("syncgate.db-wal");
    let writers: Vec<_> = (0..8u64)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                for batch in 0..50u64 {
                    let writes: Vec<Write> = (0..100u64)
                        .map(|i| Write {
                            collection: "c".into(),
                            key: format!("k{writer}-{batch}-{i}"),
                            value: Value::Binary(vec![7; 4000]),
                            hlc: Hlc { millis: now() * 1000 + batch, counter: 0, node: "n".into() },
                        })
                        .collect();
                    let applied = store.apply(&writes).await.unwrap();
                    assert!(applied.iter().all(|a| matches!(a, Applied::Stored { .. })));
                }
            })
        })
        .collect();
    let watch = tokio::spawn(async move {
        let mut largest = 0;
        loop {
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            if Arc::strong_count(&store) == 1 {
                return largest;
            }
        }
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let largest = watch.await.unwrap();
    assert!(largest < 128 << 20, "the WAL grew to {largest} bytes while 160 MB were written");
}
