//! Last-writer-wins collections over real sockets: SYNC, CHANGE, UNSYNC,
//! cursors, late offline writes, replays and tombstones.

mod common;

use std::time::Duration;

use common::*;
use rmpv::Value;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, Record, ServerMessage};

fn op(id: &str, key: &str, value: impl Into<Value>, hlc: &str) -> OpInput {
    OpInput::Op(RawOp {
        op_id: Value::from(id),
        collection: "notes".into(),
        key: key.into(),
        value: value.into(),
        hlc: hlc.into(),
    })
}

/// The position of a cursor string (cursors are `<epoch>:<position>`).
fn position(cursor: &str) -> u64 {
    cursor.parse::<syncgate::cursor::Cursor>().unwrap().position
}

fn at(ms: u64, node: &str) -> String {
    format!("{ms}:0:{node}")
}

async fn write(ws: &mut RawWs, id: u64, ops: Vec<OpInput>) -> Vec<bool> {
    ws.send(&ClientMessage::OpBatch { id, ops }).await;
    match ws.msg_where(|m| matches!(m, ServerMessage::OpResult { id: got, .. } if *got == id)).await {
        ServerMessage::OpResult { results, .. } => results.iter().map(|r| r.ok).collect(),
        other => panic!("{other:?}"),
    }
}

async fn sync(ws: &mut RawWs, id: u64, since: Option<String>) -> (Vec<Record>, String) {
    ws.send(&ClientMessage::Sync { id, collection: "notes".into(), since }).await;
    match ws.msg().await {
        ServerMessage::SyncData { id: got, records, cursor, .. } if got == id => (records, cursor),
        other => panic!("{other:?}"),
    }
}

async fn change(ws: &mut RawWs) -> (Vec<Record>, String) {
    match ws.msg().await {
        ServerMessage::Change { records, cursor, .. } => (records, cursor),
        other => panic!("expected CHANGE, got {other:?}"),
    }
}

#[tokio::test]
async fn sync_streams_changes_until_unsync() {
    let server = TestServer::start(jwt_config()).await;
    let mut writer = RawWs::authed(server.addr, &token("w", &[])).await;
    let mut reader = RawWs::authed(server.addr, &token("r", &[])).await;
    let t = now() * 1000;
    assert_eq!(write(&mut writer, 1, vec![op("a", "k1", "v1", &at(t, "w"))]).await, [true]);
    let (records, cursor) = sync(&mut reader, 1, None).await;
    assert_eq!(records, [Record { key: "k1".into(), value: Value::from("v1"), hlc: at(t, "w") }]);

    write(&mut writer, 2, vec![op("b", "k2", "v2", &at(t + 1, "w")), op("c", "k1", Value::Nil, &at(t + 2, "w"))]).await;
    let (records, next) = change(&mut reader).await;
    assert_eq!(
        records.iter().map(|r| (r.key.as_str(), r.value.clone())).collect::<Vec<_>>(),
        [("k2", Value::from("v2")), ("k1", Value::Nil)]
    );
    assert!(position(&next) > position(&cursor));

    reader.send(&ClientMessage::Unsync { id: 3, collection: "notes".into() }).await;
    assert_eq!(reader.msg().await, ServerMessage::Ok { id: 3 });
    write(&mut writer, 3, vec![op("d", "k3", "v3", &at(t + 3, "w"))]).await;
    assert_eq!(reader.recv_within(Duration::from_millis(300)).await, Recv::Timeout, "no CHANGE after UNSYNC");
    server.stop().await;
}

#[tokio::test]
async fn since_returns_exactly_what_changed_including_late_offline_writes() {
    let server = TestServer::start(jwt_config()).await;
    let mut online = RawWs::authed(server.addr, &token("online", &[])).await;
    let t = now() * 1000;
    write(&mut online, 1, vec![op("1", "a", 1, &at(t, "online")), op("2", "b", 2, &at(t, "online"))]).await;
    let mut reader = RawWs::authed(server.addr, &token("reader", &[])).await;
    let (_, cursor) = sync(&mut reader, 1, None).await;
    drop(reader);

    // An offline device replays an edit made an hour ago, after the reader synced.
    let mut offline = RawWs::authed(server.addr, &token("offline", &[])).await;
    let hour_ago = t - 3_600_000;
    assert_eq!(write(&mut offline, 1, vec![op("x", "c", "from the plane", &at(hour_ago, "offline"))]).await, [true]);
    // And an old edit of a key that changed since loses, without error.
    assert_eq!(write(&mut offline, 2, vec![op("y", "a", "stale", &at(hour_ago, "offline"))]).await, [true]);

    let mut reader = RawWs::authed(server.addr, &token("reader", &[])).await;
    let (delta, _) = sync(&mut reader, 2, Some(cursor)).await;
    assert_eq!(delta, [Record { key: "c".into(), value: Value::from("from the plane"), hlc: at(hour_ago, "offline") }]);
    let (all, _) = sync(&mut reader, 3, None).await;
    assert_eq!(
        all.iter().find(|r| r.key == "a").unwrap().value,
        Value::from(1),
        "last writer wins by hlc, not arrival"
    );
    server.stop().await;
}

#[tokio::test]
async fn replays_are_harmless_and_ties_break_by_node() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("w", &[])).await;
    let t = now() * 1000;
    let batch = vec![op("1", "k", "first", &at(t, "node-a"))];
    assert_eq!(write(&mut ws, 1, batch.clone()).await, [true]);
    let (_, cursor) = sync(&mut ws, 2, None).await;
    assert_eq!(write(&mut ws, 3, batch).await, [true], "re-sending an op is accepted");
    assert_eq!(ws.recv_within(Duration::from_millis(200)).await, Recv::Timeout, "and changes nothing");
    assert_eq!(write(&mut ws, 4, vec![op("2", "k", "tie-b", &at(t, "node-b"))]).await, [true]);
    let (records, _) = change(&mut ws).await;
    assert_eq!(records[0].value, Value::from("tie-b"));
    let (delta, _) = sync(&mut ws, 5, Some(cursor)).await;
    assert_eq!(delta.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn bad_cursors_and_names_are_invalid() {
    let server = TestServer::start(jwt_config()).await;
    let mut ws = RawWs::authed(server.addr, &token("w", &[])).await;
    ws.send(&ClientMessage::Sync { id: 1, collection: "notes".into(), since: Some("yesterday".into()) }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(1), ref code, .. } if code == "invalid"));
    ws.send(&ClientMessage::Sync { id: 2, collection: "a/*".into(), since: None }).await;
    assert!(matches!(ws.msg().await, ServerMessage::Error { id: Some(2), ref code, .. } if code == "invalid"));
    server.stop().await;
}

#[tokio::test]
async fn the_memory_store_passes_the_public_conformance_suite() {
    use std::sync::Arc;
    use syncgate::store::{MemoryStore, Store};
    syncgate::store::conformance::run(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
    // One process: the shared-database check runs on one handle three times.
    syncgate::store::conformance::run_shared(|| async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        [store.clone(), store.clone(), store]
    })
    .await;
}

#[tokio::test]
async fn large_snapshots_arrive_in_pages_that_each_resume_without_a_gap() {
    let mut config = jwt_config();
    config.limits.sync_page_bytes = 256 * 1024;
    let server = TestServer::start(config).await;
    let mut writer = RawWs::authed(server.addr, &token("w", &[])).await;
    let t = now() * 1000;
    // Every record's value names it, so a page holding the wrong value fails too.
    let value = |key: &str, fill: u8| Value::Map(vec![(Value::from(key), Value::Binary(vec![fill; 20 * 1024]))]);
    let mut truth = std::collections::BTreeMap::new();
    for batch in 0..2u64 {
        let ops = (0..20u64)
            .map(|i| {
                let key = format!("k{batch}-{i:02}");
                truth.insert(key.clone(), value(&key, 1));
                op(&format!("o{batch}-{i}"), &key, value(&key, 1), &at(t + batch * 20 + i, "w"))
            })
            .collect();
        assert!(write(&mut writer, batch + 1, ops).await.iter().all(|ok| *ok));
    }

    // 40 records of 20 KiB: more than one 256 KiB page, so SYNC_DATA (more: true) is
    // followed by CHANGE pages, the last without `more`.
    let mut reader = RawWs::authed(server.addr, &token("r", &[])).await;
    reader.send(&ClientMessage::Sync { id: 1, collection: "notes".into(), since: None }).await;
    let (first, first_cursor) = match reader.msg().await {
        ServerMessage::SyncData { records, cursor, more: true, .. } => (records, cursor),
        other => panic!("expected a paged SYNC_DATA, got {other:?}"),
    };
    assert!(!first.is_empty() && first.len() < 40, "the first page holds part: {}", first.len());
    // Writes land while the pages are in flight: an overwrite and a new key.
    write(&mut writer, 3, vec![op("over", "k0-00", value("k0-00", 2), &at(t + 100, "w"))]).await;
    write(&mut writer, 4, vec![op("live", "live", value("live", 3), &at(t + 101, "w"))]).await;
    let mut paged: Vec<Record> = first.clone();
    let mut cursors = vec![position(&first_cursor)];
    loop {
        match reader.msg().await {
            ServerMessage::Change { records, cursor, more, .. } => {
                paged.extend(records);
                cursors.push(position(&cursor));
                if !more {
                    break;
                }
            }
            other => panic!("expected a CHANGE page, got {other:?}"),
        }
    }
    let mut page_keys: Vec<&str> = paged.iter().map(|r| r.key.as_str()).collect();
    page_keys.sort_unstable();
    let expected_keys: Vec<&str> = truth.keys().map(String::as_str).collect();
    assert_eq!(page_keys, expected_keys, "every record exactly once (no duplicate, no miss)");
    for record in &paged {
        assert_eq!(record.value, truth[&record.key], "{}: the page holds the snapshot's value", record.key);
    }
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "page cursors advance: {cursors:?}");

    // The writes made during the pages come after them, in order, exactly once.
    let (over, _) = change(&mut reader).await;
    let (live, _) = change(&mut reader).await;
    assert_eq!(over.iter().map(|r| (r.key.as_str(), &r.value)).collect::<Vec<_>>(), [("k0-00", &value("k0-00", 2))]);
    assert_eq!(live.iter().map(|r| (r.key.as_str(), &r.value)).collect::<Vec<_>>(), [("live", &value("live", 3))]);
    assert_eq!(reader.recv_within(Duration::from_millis(300)).await, Recv::Timeout, "nothing twice");

    // A client cut off after the first page resumes from its cursor and gets exactly the rest.
    truth.insert("k0-00".into(), value("k0-00", 2));
    truth.insert("live".into(), value("live", 3));
    let mut resumed = RawWs::authed(server.addr, &token("r2", &[])).await;
    let mut state: std::collections::BTreeMap<String, Value> = first.into_iter().map(|r| (r.key, r.value)).collect();
    resumed.send(&ClientMessage::Sync { id: 1, collection: "notes".into(), since: Some(first_cursor) }).await;
    let mut more = match resumed.msg().await {
        ServerMessage::SyncData { records, more, .. } => {
            state.extend(records.into_iter().map(|r| (r.key, r.value)));
            more
        }
        other => panic!("{other:?}"),
    };
    while more {
        match resumed.msg().await {
            ServerMessage::Change { records, more: next, .. } => {
                state.extend(records.into_iter().map(|r| (r.key, r.value)));
                more = next;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(state, truth, "the first page plus the resumed rest is exactly the collection");
    server.stop().await;
}
