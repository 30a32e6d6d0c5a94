//! What an operator watches: Prometheus metrics (prometheus-client, OpenMetrics
//! text at `GET /metrics` on the admin surface, behind the admin token).
//!
//! Hot paths hold pre-resolved counters (an atomic add each); labelled
//! families are looked up only where the label comes from the event (a close
//! code, an `AUTH_FAIL` code, a message type).
//!
//! Every label value the protocol defines (each close code, `AUTH_FAIL`,
//! `ERROR` and op code, connection state, refusal reason) is created at zero
//! when the server starts, so a fresh node's `/metrics` already holds every
//! series a dashboard or an alert (`rate(syncgate_closes_total{code="4200"}[5m])`)
//! queries, instead of "no data" until the first event. Beside them:
//! `syncgate_build_info{version, commit}` and the unprefixed `process_*`
//! series ([`crate::process_metrics`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Connection states, as `connections` names them.
const CONNECTION_KINDS: [&str; 2] = ["unauthenticated", "authenticated"];
/// Verification results, as `handshakes` names them.
const HANDSHAKE_KINDS: [&str; 2] = ["ok", "failed"];
/// Why a connection or request was refused before it got anywhere, as `refusals` names them.
const REFUSAL_KINDS: [&str; 8] = [
    "connections",
    "connections_per_ip",
    "unauthenticated_per_ip",
    "auth_failures",
    "origin",
    "admin_connections",
    "api_rate",
    "feeds",
];

/// The commit this library was built from (`build.rs`; `unknown` outside a git checkout).
const COMMIT: &str = env!("SYNCGATE_COMMIT");

/// The client message types, as `messages_in` names them.
const MESSAGE_KINDS: [&str; 9] = ["AUTH", "PING", "SUB", "UNSUB", "PUB", "OP_BATCH", "SYNC", "UNSYNC", "PRESENCE"];

/// A label whose value is one of the protocol's fixed names.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The name (a message type, a connection state, a refusal reason).
    pub kind: &'static str,
}

/// A label holding a wire code (`AUTH_FAIL.code`, an `ERROR` or op code).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    /// The code.
    pub code: String,
}

/// The labels of `syncgate_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    /// The crate version.
    pub version: &'static str,
    /// The git commit it was built from.
    pub commit: &'static str,
}

/// A label holding a WebSocket close code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseCode {
    /// The close code.
    pub code: u16,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections by state (`unauthenticated`, `authenticated`).
    pub connections: Family<Kind, Gauge>,
    /// Token verifications by result (`ok`, `failed`).
    pub handshakes: Family<Kind, Counter>,
    /// `AUTH_FAIL`s by code.
    pub auth_failures: Family<Code, Counter>,
    /// How long token verification took (seconds).
    pub verification_seconds: Histogram,
    /// Client messages received, by type.
    pub messages_in: Family<Kind, Counter>,
    /// `MESSAGE`s delivered to connections.
    pub deliveries: Counter,
    /// `CHANGE`s delivered to connections.
    pub changes: Counter,
    /// `SYNC_DATA` and `CHANGE` pages sent for snapshots.
    pub sync_pages: Counter,
    /// Ops answered, by result (`ok` or the refusal code).
    pub ops: Family<Code, Counter>,
    /// `ERROR` answers by code (`rate_limited`, `forbidden`, …).
    pub errors: Family<Code, Counter>,
    /// Store commits: how long each took (seconds).
    pub commit_seconds: Histogram,
    /// Ops per store commit from one connection's batch.
    pub commit_ops: Histogram,
    /// Failed store operations (commits, scans).
    pub store_errors: Counter,
    /// Failed backplane operations (interest, control).
    pub backplane_errors: Counter,
    /// Connections closed by the server, by close code (4200: slow consumers).
    pub closes: Family<CloseCode, Counter>,
    /// Connections refused before the upgrade, by reason.
    pub refusals: Family<Kind, Counter>,
    /// `ops{code="ok"}`, resolved once: accepted ops are the hot path.
    ops_ok: Counter,
    /// `messages_in` for each client message type, resolved once (see [`Metrics::message_in`]).
    messages_in_by_kind: Vec<(&'static str, Counter)>,
    /// The `connections` gauges of [`CONNECTION_KINDS`], looked up once: a
    /// handshake moves them three times, and `Family::get_or_create` hashes
    /// the label and takes a lock each time (≈ 300 instructions).
    connections_by_kind: Vec<(&'static str, Gauge)>,
    /// The `handshakes` counters of [`HANDSHAKE_KINDS`], for the same reason.
    handshakes_by_kind: Vec<(&'static str, Counter)>,
    /// Messages waiting in a connection's outbound queue when it was drained
    /// (each burst written at once): how far connections lag behind.
    pub outbound_burst: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, and the backplane's counters, registered under the `syncgate` prefix.
    pub fn with_backplane(backplane: crate::backplane::BackplaneStats) -> Self {
        let mut metrics = Self::new();
        // A second `syncgate_` sub-registry beside the one `new` fills: the
        // root holds the unprefixed process series.
        let r = metrics.registry.sub_registry_with_prefix("syncgate");
        r.register("backplane_connected", "1 while the backplane is reachable", backplane.connected);
        r.register(
            "backplane_rejected",
            "Backplane messages dropped because their envelope failed its check (forged, another --cluster-secret)",
            backplane.rejected,
        );
        r.register("backplane_dropped", "Publications the backplane could not take (an outage)", backplane.dropped);
        metrics
    }

    /// Every metric, registered under the `syncgate` prefix, each labelled
    /// family with every label value the protocol defines at zero; the
    /// `process_*` series without the prefix.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let registry = root.sub_registry_with_prefix("syncgate");
        let seconds = || Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let metrics = Self {
            registry: Registry::default(),
            connections: Family::default(),
            handshakes: Family::default(),
            auth_failures: Family::default(),
            verification_seconds: seconds(),
            messages_in: Family::default(),
            deliveries: Counter::default(),
            changes: Counter::default(),
            sync_pages: Counter::default(),
            ops: Family::default(),
            errors: Family::default(),
            commit_seconds: seconds(),
            commit_ops: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            store_errors: Counter::default(),
            backplane_errors: Counter::default(),
            closes: Family::default(),
            refusals: Family::default(),
            outbound_burst: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            ops_ok: Counter::default(),
            messages_in_by_kind: Vec::new(),
            connections_by_kind: Vec::new(),
            handshakes_by_kind: Vec::new(),
        };
        let ops_ok = metrics.ops.get_or_create(&Code { code: "ok".into() }).clone();
        let messages_in_by_kind = resolve(&metrics.messages_in, &MESSAGE_KINDS);
        let connections_by_kind = resolve(&metrics.connections, &CONNECTION_KINDS);
        let handshakes_by_kind = resolve(&metrics.handshakes, &HANDSHAKE_KINDS);
        let metrics = Self { ops_ok, messages_in_by_kind, connections_by_kind, handshakes_by_kind, ..metrics };
        metrics.create_every_series();
        let build_info = Family::<BuildInfo, Gauge>::default();
        build_info.get_or_create(&BuildInfo { version: env!("CARGO_PKG_VERSION"), commit: COMMIT }).set(1);
        let r = registry;
        r.register("build_info", "The running version and the commit it was built from (always 1)", build_info);
        r.register("connections", "Open WebSocket connections by state", metrics.connections.clone());
        r.register("handshakes", "Token verifications by result", metrics.handshakes.clone());
        r.register("auth_failures", "AUTH_FAIL answers by code", metrics.auth_failures.clone());
        r.register("verification_seconds", "Time to verify a token", metrics.verification_seconds.clone());
        r.register("messages_in", "Client messages received, by type", metrics.messages_in.clone());
        r.register("deliveries", "MESSAGEs delivered to connections", metrics.deliveries.clone());
        r.register("changes", "CHANGEs delivered to connections", metrics.changes.clone());
        r.register("sync_pages", "SYNC_DATA and CHANGE pages sent for snapshots", metrics.sync_pages.clone());
        r.register("ops", "Ops answered, by result (ok or the refusal code)", metrics.ops.clone());
        r.register("errors", "ERROR answers by code", metrics.errors.clone());
        r.register("commit_seconds", "Time of one store commit", metrics.commit_seconds.clone());
        r.register("commit_ops", "Ops in one committed batch", metrics.commit_ops.clone());
        r.register("store_errors", "Failed store commits and scans", metrics.store_errors.clone());
        r.register("backplane_errors", "Failed backplane calls", metrics.backplane_errors.clone());
        r.register("closes", "Connections closed by the server, by close code", metrics.closes.clone());
        r.register("refusals", "Connections refused before the upgrade, by reason", metrics.refusals.clone());
        r.register(
            "outbound_burst",
            "Messages queued for a connection when it was drained (its outbound queue depth)",
            metrics.outbound_burst.clone(),
        );
        Self { registry: root, ..metrics }
    }

    /// Creates every labelled series the protocol defines, at zero.
    fn create_every_series(&self) {
        use syncgate_proto::protocol::AuthFailCode;
        use syncgate_proto::protocol::codes::{close, error};
        for kind in CONNECTION_KINDS {
            let _ = self.connections.get_or_create(&Kind { kind });
        }
        for kind in HANDSHAKE_KINDS {
            let _ = self.handshakes.get_or_create(&Kind { kind });
        }
        for kind in REFUSAL_KINDS {
            let _ = self.refusals.get_or_create(&Kind { kind });
        }
        for code in AuthFailCode::ALL {
            let _ = self.auth_failures.get_or_create(&Code { code: code.as_str().into() });
        }
        for code in error::OP_CODES {
            let _ = self.ops.get_or_create(&Code { code: code.into() });
        }
        for code in error::ALL {
            let _ = self.errors.get_or_create(&Code { code: code.into() });
        }
        for code in close::ALL {
            let _ = self.closes.get_or_create(&CloseCode { code });
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one message of `kind` in.
    pub fn message_in(&self, kind: &'static str) {
        with_kind(&self.messages_in_by_kind, &self.messages_in, kind, |counter| {
            counter.inc();
        });
    }

    /// Counts one answered op: `None` accepted, else its refusal code.
    pub fn op(&self, code: Option<&str>) {
        match code {
            None => {
                self.ops_ok.inc();
            }
            Some(code) => {
                self.ops.get_or_create(&Code { code: code.to_string() }).inc();
            }
        }
    }

    /// Counts a connection entering (`+1`) or leaving (`-1`) a state.
    pub fn connection(&self, kind: &'static str, delta: i64) {
        with_kind(&self.connections_by_kind, &self.connections, kind, |gauge| {
            gauge.inc_by(delta);
        });
    }

    /// Counts one token verification: `ok` or `failed`.
    pub fn handshake(&self, kind: &'static str) {
        with_kind(&self.handshakes_by_kind, &self.handshakes, kind, |counter| {
            counter.inc();
        });
    }

    /// Counts a refusal before the upgrade.
    pub fn refused(&self, kind: &'static str) {
        self.refusals.get_or_create(&Kind { kind }).inc();
    }

    /// Records one commit of `ops` ops that took `took`.
    pub fn committed(&self, ops: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_ops.observe(ops as f64);
    }
}

/// `family`'s series for each of `kinds`, looked up once at start: a lookup
/// through the family hashes the label and takes a lock (≈ 300 instructions).
fn resolve<M: Clone>(family: &Family<Kind, M>, kinds: &[&'static str]) -> Vec<(&'static str, M)> {
    kinds.iter().map(|&kind| (kind, family.get_or_create(&Kind { kind }).clone())).collect()
}

/// Applies `count` to the series of `kind`: the one resolved at start, or the
/// family's for a kind not known then.
fn with_kind<M>(resolved: &[(&'static str, M)], family: &Family<Kind, M>, kind: &'static str, count: impl FnOnce(&M)) {
    match resolved.iter().find(|(k, _)| *k == kind) {
        Some((_, series)) => count(series),
        None => count(&family.get_or_create(&Kind { kind })),
    }
}
