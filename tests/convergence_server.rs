//! Property, end to end: devices running the real Rust client against a real
//! server (memory, SQLite and, with `SYNCGATE_TEST_POSTGRES`, Postgres stores), going offline and online through TCP
//! proxies the test cuts, while rules change so some writes are refused and
//! rolled back, a raw writer reuses equal stamps (refused after the first),
//! values sit at the depth and size bounds (so snapshots run to many pages and
//! going offline cuts them mid-snapshot, after tombstone collections too), the
//! store fails commits for a while (retryable), tombstones are collected and
//! (SQLite) the store is restored from a backup. In the end every device's replica, a reader that
//! only follows `CHANGE`s, and a fresh snapshot show the same state, and every
//! write a device made was reported settled.
//!
//! `SYNCGATE_CONVERGENCE_CASES` sets the number of schedules (default 500).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::stores::Hooked;
use common::*;
use proptest::prelude::*;
use rmpv::Value;
use syncgate::ServerConfig;
use syncgate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage};
use syncgate::rules::{Policy, RuleSet};
use syncgate::store::{Durability, MemoryStore, SqliteStore, Store, StoreError};
use syncgate_client::{Backoff, Client, ClientConfig, ClientEvent};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

const DEVICES: usize = 3;
const COLLECTIONS: [&str; 2] = ["c/open", "c/guarded"];
const OPEN_RULES: &str = "[[rules]]\nroles=[\"*\"]\nresource=\"c/**\"\nactions=[\"read\",\"write\"]\n";
const GUARDED_RULES: &str = "[[rules]]\nroles=[\"*\"]\nresource=\"c/**\"\nactions=[\"read\"]\n\
                             [[rules]]\nroles=[\"*\"]\nresource=\"c/open\"\nactions=[\"write\"]\n";

/// The value of a device's write: small, a delete, or at the value bounds.
#[derive(Debug, Clone, Copy)]
enum Written {
    Small(u8),
    Delete,
    /// Arrays nested exactly `MAX_VALUE_DEPTH` deep around the number.
    Deepest(u8),
    /// A string whose encoding is exactly `VALUE_BYTES` (snapshots of such
    /// records run to many pages, so going offline cuts them mid-snapshot).
    Largest(u8),
}

/// The server's value bound in these schedules, small so that pages are many.
const VALUE_BYTES: usize = 2048;
/// The snapshot page bound: two of the largest values a page.
const PAGE_BYTES: usize = 2 * VALUE_BYTES;

impl Written {
    fn value(self) -> Value {
        match self {
            Self::Small(n) => Value::from(n),
            Self::Delete => Value::Nil,
            Self::Deepest(n) => {
                (0..syncgate::values::MAX_VALUE_DEPTH).fold(Value::from(n), |v, _| Value::Array(vec![v]))
            }
            Self::Largest(n) => {
                // str 16 header: 3 bytes.
                Value::from(char::from(b'a' + n % 26).to_string().repeat(VALUE_BYTES - 3))
            }
        }
    }
}

fn written() -> impl Strategy<Value = Written> {
    prop_oneof![
        6 => (0u8..20).prop_map(Written::Small),
        2 => Just(Written::Delete),
        1 => (0u8..20).prop_map(Written::Deepest),
        2 => (0u8..20).prop_map(Written::Largest),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Write {
        device: usize,
        collection: usize,
        key: u8,
        value: Written,
    },
    Offline {
        device: usize,
    },
    Online {
        device: usize,
    },
    /// Whether `c/guarded` may be written (a rules reload).
    Guarded {
        writable: bool,
    },
    /// Commits fail (`unavailable`) while on.
    Fault {
        on: bool,
    },
    /// Every tombstone so far is collected.
    Collect,
    /// A raw write reusing one of a few fixed stamps: equal stamps, different values.
    RawWrite {
        collection: usize,
        key: u8,
        stamp: u8,
        value: u8,
    },
    /// SQLite: take a backup (the next Restore goes back to it).
    Backup,
    /// SQLite: stop, restore the last backup, start again on the same address.
    Restore,
    Pause {
        ms: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..DEVICES, 0..2usize, 0u8..4, written())
            .prop_map(|(device, collection, key, value)| Step::Write { device, collection, key, value }),
        2 => (0..DEVICES).prop_map(|device| Step::Offline { device }),
        2 => (0..DEVICES).prop_map(|device| Step::Online { device }),
        1 => any::<bool>().prop_map(|writable| Step::Guarded { writable }),
        1 => any::<bool>().prop_map(|on| Step::Fault { on }),
        1 => Just(Step::Collect),
        2 => (0..2usize, 0u8..4, 0u8..3, 0u8..20)
            .prop_map(|(collection, key, stamp, value)| Step::RawWrite { collection, key, stamp, value }),
        1 => Just(Step::Backup),
        1 => Just(Step::Restore),
        1 => (0u8..30).prop_map(|ms| Step::Pause { ms }),
    ]
}

/// A TCP forwarder between one device and the server: cutting it is going offline.
struct Proxy {
    addr: SocketAddr,
    online: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let online = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (flag, open) = (online.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(server).await else { continue };
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                open.lock().unwrap().push(task);
            }
        });
        Self { addr, online, connections, accept }
    }

    fn offline(&self) {
        self.online.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn online(&self) {
        self.online.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.offline();
    }
}

struct Device {
    client: Client,
    events: UnboundedReceiver<ClientEvent>,
    proxy: Proxy,
    written: HashSet<String>,
    settled: HashSet<String>,
    /// Every event, printed when a schedule fails.
    log: Vec<String>,
}

impl Device {
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.log.push(format!("{event:?}"));
            if let ClientEvent::OpSettled { op_id, .. } = event {
                self.settled.insert(op_id);
            }
        }
    }
}

fn client(url: String, sub: &'static str) -> ClientConfig {
    ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(60) },
        ..ClientConfig::new(url).with_token_provider(move |_| async move { Ok(Some(token(sub, &["user"]))) })
    }
}

/// Where the schedule's store lives.
enum Backing {
    Memory,
    Sqlite {
        dir: tempfile::TempDir,
        live: PathBuf,
        backup: Option<PathBuf>,
        generation: u32,
    },
    /// A fresh schema in the test Postgres (no backup/restore steps: that is pg_dump's).
    Postgres(Arc<dyn Store>),
}

fn policy(writable: bool) -> Policy {
    Policy::with_rules(RuleSet::parse(if writable { OPEN_RULES } else { GUARDED_RULES }).unwrap())
}

async fn snapshot(addr: SocketAddr, collection: &str) -> BTreeMap<String, Value> {
    let mut ws = RawWs::authed(addr, &token("snapshot", &[])).await;
    ws.send(&ClientMessage::Sync { id: 1, collection: collection.into(), since: None }).await;
    let mut state = BTreeMap::new();
    let mut more = match ws.msg().await {
        ServerMessage::SyncData { records, more, .. } => {
            state.extend(records.into_iter().map(|r| (r.key, r.value)));
            more
        }
        other => panic!("{other:?}"),
    };
    while more {
        if let ServerMessage::Change { records, more: next, .. } = ws.msg().await {
            state.extend(records.into_iter().map(|r| (r.key, r.value)));
            more = next;
        }
    }
    state.into_iter().filter(|(_, v)| !v.is_nil()).collect()
}

/// Which store a schedule runs on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Sqlite,
    /// A fresh schema of `SYNCGATE_TEST_POSTGRES` (memory when it is not set).
    Postgres,
}

async fn run_schedule(steps: Vec<Step>, kind: Kind) -> Result<(), String> {
    let started = std::time::Instant::now();
    let result = schedule(steps, kind).await;
    if std::env::var_os("SYNCGATE_CONVERGENCE_TIMING").is_some() {
        eprintln!("schedule took {:?}", started.elapsed());
    }
    result
}

async fn schedule(steps: Vec<Step>, kind: Kind) -> Result<(), String> {
    let fail = Arc::new(AtomicBool::new(false));
    let postgres = std::env::var("SYNCGATE_TEST_POSTGRES").ok().filter(|url| !url.is_empty());
    let mut backing = match (kind, postgres) {
        (Kind::Sqlite, _) => {
            let dir = tempfile::tempdir().unwrap();
            let live = dir.path().join("live-0");
            Backing::Sqlite { dir, live, backup: None, generation: 0 }
        }
        (Kind::Postgres, Some(url)) => Backing::Postgres(common::postgres::fresh_store(&url, "conv").await),
        (Kind::Memory | Kind::Postgres, _) => Backing::Memory,
    };
    let open_store = |backing: &Backing| -> Arc<dyn Store> {
        let inner: Arc<dyn Store> = match backing {
            Backing::Memory => Arc::new(MemoryStore::new()),
            Backing::Sqlite { live, .. } => Arc::new(SqliteStore::open(live, Durability::None).unwrap()),
            Backing::Postgres(store) => store.clone(),
        };
        // Commits fail while `fail` is set (a full disk, an I/O error).
        let mut faulty = Hooked::around(inner);
        let fail = fail.clone();
        faulty.before_apply = Box::new(move |_| {
            let failing = fail.load(Ordering::SeqCst);
            Box::pin(async move { if failing { Err(StoreError("injected fault".into())) } else { Ok(()) } })
        });
        Arc::new(faulty)
    };
    let mut store = open_store(&backing);
    let config = |store: Arc<dyn Store>| {
        let mut config = ServerConfig { store, ..jwt_config() };
        config.session.max_value_bytes = VALUE_BYTES;
        config.limits.sync_page_bytes = PAGE_BYTES;
        config.timeouts.close_linger = Duration::from_millis(50);
        config.timeouts.shutdown_grace = Duration::from_millis(500);
        config
    };
    let mut first = config(store.clone());
    first.policy = policy(true);
    let mut server = TestServer::start(first).await;
    let addr = server.addr;
    let mut writable = true;
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let proxy = Proxy::start(addr).await;
        let sub: &'static str = ["d0", "d1", "d2"][i];
        let (client, events) = Client::connect(client(format!("ws://{}/ws", proxy.addr), sub)).unwrap();
        for collection in COLLECTIONS {
            client.sync(collection);
        }
        devices.push(Device {
            client,
            events,
            proxy,
            written: HashSet::new(),
            settled: HashSet::new(),
            log: Vec::new(),
        });
    }
    let (reader, _reader_events) = Client::connect(client(server.url(), "reader")).unwrap();
    for collection in COLLECTIONS {
        reader.sync(collection);
    }
    let base = now() * 1000;
    let mut raw: Option<RawWs> = None;
    let mut raw_id = 0;
    for step in steps {
        match step {
            Step::Write { device, collection, key, value } => {
                let d = &mut devices[device];
                let id = d.client.write(COLLECTIONS[collection], &format!("k{key}"), value.value()).await.unwrap();
                d.written.insert(id);
            }
            Step::Offline { device } => devices[device].proxy.offline(),
            Step::Online { device } => devices[device].proxy.online(),
            Step::Guarded { writable: w } => {
                writable = w;
                server.node.set_policy(policy(w));
            }
            Step::Fault { on } => fail.store(on, Ordering::SeqCst),
            Step::Collect => {
                store.collect_tombstones(now() * 1000 + 1_000).await.map_err(|e| e.to_string())?;
            }
            Step::RawWrite { collection, key, stamp, value } => {
                if raw.is_none() {
                    raw = Some(RawWs::authed(addr, &token("raw", &[])).await);
                }
                let ws = raw.as_mut().unwrap();
                raw_id += 1;
                let op = OpInput::Op(RawOp {
                    op_id: Value::from(raw_id),
                    collection: COLLECTIONS[collection].into(),
                    key: format!("k{key}"),
                    value: Value::from(value),
                    hlc: format!("{base}:{stamp}:raw"),
                });
                if ws.try_send(&ClientMessage::OpBatch { id: raw_id, ops: vec![op] }).await.is_err() {
                    raw = None;
                }
            }
            Step::Backup => {
                if let Backing::Sqlite { dir, live, backup, generation } = &mut backing {
                    *generation += 1;
                    let path = dir.path().join(format!("backup-{generation}.sgdb"));
                    syncgate::store::sqlite_backup(live, &path).map_err(|e| e.to_string())?;
                    *backup = Some(path);
                }
            }
            Step::Restore => {
                if let Backing::Sqlite { dir, live, backup: Some(backup), generation } = &mut backing {
                    server.stop().await;
                    raw = None;
                    *generation += 1;
                    *live = dir.path().join(format!("live-{generation}"));
                    syncgate::store::sqlite_restore(live, backup).map_err(|e| e.to_string())?;
                    store = open_store(&backing);
                    let mut config = config(store.clone());
                    config.policy = policy(writable);
                    server = TestServer::on(TcpListener::bind(addr).await.unwrap(), config).await;
                }
            }
            Step::Pause { ms } => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
        }
    }
    // Everyone comes back, the store heals; then everything must settle and agree.
    fail.store(false, Ordering::SeqCst);
    for d in &devices {
        d.proxy.online();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        for d in devices.iter_mut() {
            d.drain();
        }
        match agreement(&devices, &reader, addr).await {
            Ok(()) => break,
            Err(why) if tokio::time::Instant::now() > deadline => {
                for (i, d) in devices.iter().enumerate() {
                    eprintln!("device {i} saw: {:#?}", d.log);
                }
                server.stop().await;
                return Err(format!("{why} (previously: {last})"));
            }
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = std::time::Instant::now();
    drop(raw);
    for d in &devices {
        d.client.close().await;
    }
    reader.close().await;
    server.stop().await;
    if std::env::var_os("SYNCGATE_CONVERGENCE_TIMING").is_some() {
        eprintln!("teardown took {:?}", converged.elapsed());
    }
    Ok(())
}

/// Whether every write was reported and every view shows one state.
async fn agreement(devices: &[Device], reader: &Client, addr: SocketAddr) -> Result<(), String> {
    for (i, d) in devices.iter().enumerate() {
        if d.client.pending() > 0 {
            return Err(format!("device {i} has {} writes pending", d.client.pending()));
        }
        if let Some(missing) = d.written.difference(&d.settled).next() {
            return Err(format!("device {i}: write {missing} was never reported settled"));
        }
    }
    for collection in COLLECTIONS {
        let truth = snapshot(addr, collection).await;
        if reader.records(collection) != truth {
            return Err(format!("the CHANGE-following reader differs on {collection}"));
        }
        for (i, d) in devices.iter().enumerate() {
            let mine = d.client.records(collection);
            if mine != truth {
                return Err(format!("device {i} differs on {collection}: {mine:?} vs {truth:?}"));
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("SYNCGATE_CONVERGENCE_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 32, ..ProptestConfig::default() })]
    #[test]
    fn devices_a_reader_and_a_fresh_snapshot_converge(
        steps in proptest::collection::vec(step(), 1..40),
        kind in prop_oneof![Just(Kind::Memory), Just(Kind::Sqlite), Just(Kind::Postgres)],
    ) {
        let outcome = runtime().block_on(run_schedule(steps, kind));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
