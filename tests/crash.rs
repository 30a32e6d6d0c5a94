//! The real binary under SIGKILL: nothing acknowledged is lost, nothing is
//! half-applied; start-up failures; a backup taken under write load.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rmpv::Value;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::store::{Durability, SqliteStore, Store};

const BATCH: usize = 4;

fn start(data_dir: &Path) -> (Child, SocketAddr) {
    use std::ffi::OsStr;
    let args = [OsStr::new("--jwt-secret"), OsStr::new(SECRET), OsStr::new("--data-dir"), data_dir.as_os_str()];
    spawn_serve(args, Stdio::null())
}

type Batches = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// Writes batches until the connection breaks; records what was sent and what was acknowledged.
async fn writer(addr: SocketAddr, writer: usize, round: usize, sent: Batches, acked: Batches) {
    let mut ws = RawWs::authed(addr, &token(&format!("w{writer}"), &[])).await;
    let collection = format!("crash/w{writer}");
    for b in 0.. {
        let keys: Vec<(String, String)> =
            (0..BATCH).map(|i| (format!("r{round}-b{b}-{i}"), format!("value-{round}-{b}-{i}"))).collect();
        let millis = now() * 1000;
        let ops = keys
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                OpInput::Op(RawOp {
                    op_id: Value::from(i as u64),
                    collection: collection.clone(),
                    key: k.clone(),
                    value: Value::from(v.as_str()),
                    hlc: format!("{millis}:{b}:w{writer}"),
                })
            })
            .collect();
        sent.lock().unwrap().push((collection.clone(), keys.clone()));
        if ws.try_send(&ClientMessage::OpBatch { id: b, ops }).await.is_err() {
            return;
        }
        match ws.recv_within(Duration::from_secs(5)).await {
            Recv::Msg(ServerMessage::OpResult { results, .. }) if results.iter().all(|r| r.ok) => {
                acked.lock().unwrap().push((collection.clone(), keys))
            }
            _ => return,
        }
    }
}

async fn contents(addr: SocketAddr, collections: &HashSet<String>) -> HashMap<(String, String), Value> {
    let mut ws = RawWs::authed(addr, &token("auditor", &[])).await;
    let mut all = HashMap::new();
    for (id, collection) in collections.iter().enumerate() {
        ws.send(&ClientMessage::Sync { id: id as u64, collection: collection.clone(), since: None }).await;
        match ws.msg().await {
            ServerMessage::SyncData { records, .. } => {
                for r in records {
                    all.insert((collection.clone(), r.key), r.value);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    all
}

fn check(stored: &HashMap<(String, String), Value>, sent: &Batches, acked: &Batches) -> usize {
    for (collection, keys) in acked.lock().unwrap().iter() {
        for (k, v) in keys {
            assert_eq!(
                stored.get(&(collection.clone(), k.clone())),
                Some(&Value::from(v.as_str())),
                "acknowledged {collection}/{k} was lost"
            );
        }
    }
    for (collection, keys) in sent.lock().unwrap().iter() {
        let present = keys.iter().filter(|(k, _)| stored.contains_key(&(collection.clone(), k.clone()))).count();
        assert!(
            present == 0 || present == keys.len(),
            "batch in {collection} half-applied: {present} of {}",
            keys.len()
        );
    }
    acked.lock().unwrap().len()
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let sent: Batches = Arc::default();
    let acked: Batches = Arc::default();
    let mut collections = HashSet::new();
    for round in 0..3 {
        let (mut child, addr) = start(dir.path());
        let mut tasks = Vec::new();
        for w in 0..6 {
            collections.insert(format!("crash/w{w}"));
            tasks.push(tokio::spawn(writer(addr, w, round, sent.clone(), acked.clone())));
        }
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..700))).await;
        child.kill().unwrap();
        let _ = child.wait();
        for task in tasks {
            let _ = task.await;
        }
    }
    let (mut child, addr) = start(dir.path());
    let stored = contents(addr, &collections).await;
    let acknowledged = check(&stored, &sent, &acked);
    assert!(acknowledged > 10, "the test wrote something ({acknowledged} acknowledged batches)");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn an_unusable_or_busy_data_dir_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out =
        syncgate().args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(file.join("data")).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--data-dir"), "{stderr}");

    let (mut first, _) = start(dir.path());
    let out = syncgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("in use by another syncgate server"), "{stderr}");
    first.kill().unwrap();
    let _ = first.wait();
}

#[tokio::test]
async fn a_backup_under_write_load_restores_to_a_consistent_state() {
    let dir = tempfile::tempdir().unwrap();
    let backup_file = dir.path().join("backup.sgdb");
    let data = dir.path().join("data");
    let (mut child, addr) = start(&data);
    let sent: Batches = Arc::default();
    let acked: Batches = Arc::default();
    let tasks: Vec<_> = (0..4).map(|w| tokio::spawn(writer(addr, w, 0, sent.clone(), acked.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let acked_before = acked.lock().unwrap().clone();
    let out = syncgate().arg("backup").arg("--data-dir").arg(&data).arg("--out").arg(&backup_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    let _ = child.wait();
    for task in tasks {
        let _ = task.await;
    }

    let restored = dir.path().join("restored");
    let out =
        syncgate().arg("restore").arg("--data-dir").arg(&restored).arg("--from").arg(&backup_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again =
        syncgate().arg("restore").arg("--data-dir").arg(&restored).arg("--from").arg(&backup_file).output().unwrap();
    assert!(!again.status.success(), "restore refuses a data dir that already holds a store");

    let store = SqliteStore::open(&restored, Durability::Full).unwrap();
    let mut stored = HashMap::new();
    for w in 0..4 {
        let collection = format!("crash/w{w}");
        for r in store.scan_since(&collection, 0).await.unwrap().records {
            stored.insert((collection.clone(), r.key), r.value);
        }
    }
    // Everything acknowledged before the backup started is in it, and no batch is torn.
    check(&stored, &sent, &Arc::new(Mutex::new(acked_before)));
    assert!(!stored.is_empty());
}
