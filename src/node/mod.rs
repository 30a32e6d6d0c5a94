//! One node: the state every surface of the server shares, and the meaning
//! of what they ask of it, written once.
//!
//! The WebSocket connections, the HTTP API, the SSE change feed, the admin
//! API and the process signals all hold an `Arc<Node>` and call its methods:
//! authentication (failure slots, verification, the timeout that fails
//! closed, revocations), requests (rights, sizes and refusal texts, through
//! `crate::requests`), and control (disconnect, revoke, rules reload), so
//! the same request means the same thing on every surface. It lives here so
//! none of those surfaces depends on another.
//!
//! | module | what |
//! | --- | --- |
//! | this one | the [`Node`], opening it, readiness, the live policy |
//! | `authenticate` | a token in, an identity (or the refusal) out; admission under the revocation lock; revalidation of a live token |
//! | `requests` | publish, write, read a page: what the HTTP API asks, checked as the session checks |
//! | `control` | disconnect, revoke, reload rules, drain: here and on every node |
//! | `catch_up` | catch-up scans after a lost change: one per feed, position and resync round, shared by its watchers |
//! | `background` | the backplane pumps (data, and control on its own queue), tombstone collection, the position check of followed collections |
//! | `peers` | announcing this node, the live nodes of the cluster (`/admin/nodes`), rules drift |

mod authenticate;
mod background;
mod catch_up;
mod control;
mod peers;
mod requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::auth::Identity;
use crate::auth_failures::AuthFailures;
use crate::collections::Collections;
use crate::config::ServerConfig;
use crate::feed_slots::FeedSlots;
use crate::hlc::HlcClock;
use crate::hub::Hub;
use crate::ip_slots::IpSlots;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::request_budgets::RequestBudgets;
use crate::revocation::Revocations;
use crate::rules::{Access, Policy, PolicyHandle};
use crate::send_queue::ConnId;

pub(crate) use authenticate::{AuthRefusal, Lapsed};
pub(crate) use catch_up::{CatchUpPages, Trigger};
pub use control::ReloadError;
pub use peers::{ANNOUNCE_EVERY, GONE_AFTER, NodeView};
pub(crate) use requests::ApiOp;

/// One syncgate node: its configuration and everything live that its
/// connections, APIs and background tasks share.
pub struct Node {
    /// The configuration the node was opened with (never changed afterwards).
    pub(crate) config: ServerConfig,
    /// Cancelled when the server shuts down; connections close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the node starts draining: `/readyz` answers 503 while
    /// connections are still served, so load balancers stop sending new ones
    /// before the shutdown token closes them with 1001.
    draining: CancellationToken,
    /// Every spawned task, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// The last-writer-wins collections.
    pub(crate) collections: Collections,
    /// This node's fan-out.
    pub(crate) hub: Arc<Hub>,
    /// Authenticated connections, for the admin API and control messages.
    pub(crate) registry: Registry,
    /// Failed authentications per client IP.
    pub(crate) auth_failures: AuthFailures,
    /// Failed admin-token attempts per client IP, apart from the public
    /// counter: bad user tokens must not lock the operator out.
    pub(crate) admin_failures: AuthFailures,
    /// Connections per client IP.
    pub(crate) ip_slots: Arc<IpSlots>,
    /// Open change feeds per identity and per client IP.
    pub(crate) feed_slots: Arc<FeedSlots>,
    /// HTTP API requests per identity and per client IP (the socket's message rate).
    pub(crate) api_budgets: RequestBudgets,
    /// Vault requests (`/vault/…`) per address and per identity: limited like
    /// authentications, since each hands out password-guessable wraps.
    pub(crate) vault_budgets: RequestBudgets,
    /// The authorization policy in force; connections watch it.
    policy: PolicyHandle,
    /// The digest of that policy, as announcements carry it: computed when
    /// the policy changes, not on every announcement sent or heard.
    rules_digest: std::sync::Mutex<Arc<str>>,
    /// Revoked tokens, consulted at authentication and refresh.
    revocations: Revocations,
    /// How many saved revocations (in the store's order) this node enforces.
    revocations_loaded: std::sync::atomic::AtomicUsize,
    /// One reload of saved revocations at a time.
    revocation_reload: tokio::sync::Mutex<()>,
    /// The node's Prometheus metrics (`GET /metrics` on the admin surface).
    pub(crate) metrics: Arc<Metrics>,
    /// Catch-up scans in flight, shared by the watchers that need them.
    catch_ups: catch_up::CatchUps,
    /// Held while a connection checks revocations and registers, and while a
    /// revocation is applied and its connections closed: so a revocation can
    /// never fall between a connection's check and its registration. A std
    /// mutex: nothing awaits under it.
    admission: std::sync::Mutex<()>,
    /// The next connection id: a random 20-bit tag of this process in bits
    /// 32–51 and a counter below, so ids are unique across the nodes of a
    /// cluster (with odds of a collision between two nodes of one in a
    /// million) and stay exact in JavaScript numbers (below 2^53).
    next_connection: AtomicU64,
    /// The other nodes, as their announcements show them.
    peers: peers::Peers,
    /// When this node started (Unix milliseconds).
    started_at: u64,
    /// The last store probe of `/readyz` and when it ran (probes are at most one a second).
    probe: std::sync::Mutex<Option<(std::time::Instant, Result<(), NotReady>)>>,
}

/// A ready node, and what it serves without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The backplane is unreachable: local clients are served, other nodes
    /// are not heard (and `/readyz` still answers 200 unless
    /// `--ready-requires-backplane`, so one NATS outage does not leave a
    /// balancer with no targets).
    pub(crate) backplane_down: bool,
}

/// Why a node is not ready: what anyone may be told (`/readyz`), and the
/// detail for operators (`/admin/readyz`), which may name paths, hosts or
/// errors an outsider should not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotReady {
    /// The public reason.
    pub(crate) public: &'static str,
    /// The operator's reason.
    pub(crate) detail: String,
}

impl Node {
    /// Opens the node: reads the store's clock and epoch, loads saved
    /// revocations, and starts the backplane pump, tombstone collection and
    /// the position check of followed collections. `shutdown` stops them all.
    pub async fn open(config: ServerConfig, shutdown: CancellationToken) -> std::io::Result<Arc<Self>> {
        let unavailable = |e: crate::store::StoreError| std::io::Error::other(e.to_string());
        // The clock resumes after every timestamp the store ever accepted: it never goes back.
        // It absorbs remote stamps as far ahead as writes may be (`max_clock_drift`): a
        // server-stamped write then never sorts before a write it accepted.
        let drift = u64::try_from(config.max_clock_drift.as_millis()).unwrap_or(u64::MAX);
        let start = config.store.clock().await.map_err(unavailable)?;
        let clock = HlcClock::with_max_ahead(config.node_id.clone(), start, drift);
        let revocations = Revocations::new();
        let revocations_loaded = match config.revocation_store.load().await {
            Ok(saved) => {
                saved.iter().for_each(|r| revocations.apply(r));
                saved.len()
            }
            Err(e) => {
                warn!(error = %e, "could not load saved revocations");
                0
            }
        };
        let metrics = Arc::new(Metrics::with_backplane(config.backplane.stats()));
        let hub = Hub::for_node(config.backplane.clone(), &config.node_id);
        let collections = Collections::open(config.store.clone(), hub.clone(), clock, drift, metrics.clone())
            .await
            .map_err(unavailable)?;
        let inbound = config.backplane.inbound();
        let node = Arc::new(Self {
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            admin_failures: AuthFailures::new(config.auth_failures_per_minute),
            ip_slots: IpSlots::new(config.limits.per_ip),
            feed_slots: FeedSlots::new(config.limits.feeds_per_identity, config.limits.feeds_per_ip),
            api_budgets: RequestBudgets::new(config.session.messages_per_second, config.session.message_burst),
            vault_budgets: RequestBudgets::per_minute(config.auth_failures_per_minute),
            policy: PolicyHandle::new(config.policy.clone()),
            rules_digest: std::sync::Mutex::new(config.policy.digest().into()),
            config,
            shutdown,
            draining: CancellationToken::new(),
            tracker: TaskTracker::new(),
            collections,
            hub,
            registry: Registry::new(),
            revocations,
            revocations_loaded: std::sync::atomic::AtomicUsize::new(revocations_loaded),
            revocation_reload: tokio::sync::Mutex::new(()),
            metrics,
            catch_ups: catch_up::CatchUps::default(),
            admission: std::sync::Mutex::new(()),
            next_connection: AtomicU64::new((fastrand::u64(1..1 << 20) << 32) | 1),
            peers: peers::Peers::default(),
            started_at: crate::clock::unix_ms(),
            probe: std::sync::Mutex::new(None),
        });
        background::start(&node, inbound);
        Ok(node)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The authorization policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// Puts `policy` in force on this node: every connection re-evaluates
    /// its subscriptions and syncs. (To change the rules on every node, use
    /// [`Node::reload_rules`].)
    pub fn set_policy(&self, policy: Policy) {
        *self.rules_digest.lock().unwrap_or_else(|e| e.into_inner()) = policy.digest().into();
        self.policy.replace(policy);
    }

    /// The digest of the rules in force (see [`Policy::digest`]).
    pub(crate) fn rules_digest(&self) -> Arc<str> {
        self.rules_digest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A receiver that sees every change of policy (what connections watch).
    pub(crate) fn watch_policy(&self) -> tokio::sync::watch::Receiver<Arc<Policy>> {
        self.policy.subscribe()
    }

    /// What `identity` may do under the policy in force.
    pub(crate) fn access_for(&self, identity: &Identity) -> Access {
        self.policy.current().access_for(identity)
    }

    /// Starts draining: `/readyz` answers 503 from now on, while every
    /// connection is still served until the shutdown token is cancelled.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Whether this node should be sent clients (`/readyz`): not while it
    /// drains or shuts down, nor while its store fails its readiness check
    /// (probed at most once a second), nor, with `ready_requires_backplane`,
    /// while its backplane is disconnected.
    pub(crate) async fn readiness(&self) -> Result<Ready, NotReady> {
        if self.shutdown.is_cancelled() || self.draining.is_cancelled() {
            return Err(NotReady { public: "draining", detail: "draining".into() });
        }
        let backplane_down = !self.config.backplane.is_connected();
        if backplane_down && self.config.ready_requires_backplane {
            let why = "the backplane is down";
            return Err(NotReady { public: why, detail: why.into() });
        }
        self.store_readiness().await.map(|()| Ready { backplane_down })
    }

    async fn store_readiness(&self) -> Result<(), NotReady> {
        if let Some((at, result)) = &*self.probe.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return result.clone();
        }
        let probe = tokio::time::timeout(std::time::Duration::from_secs(2), self.config.store.check()).await;
        let store_down = |detail: String| NotReady { public: "the store is unavailable", detail };
        let result = match probe {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(store_down(format!("the store cannot commit: {e}"))),
            Err(_) => Err(store_down("the store did not answer within 2 s".into())),
        };
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// Waits until `collection`'s feed on this node follows the store (see
    /// [`Hub::feed_ready`]); call after watching it, before reading it.
    pub(crate) async fn feed_ready(&self, collection: &str) -> Result<(), crate::backplane::BackplaneError> {
        self.hub.feed_ready(collection, || self.config.store.last_seq()).await
    }

    /// A fresh connection id.
    pub(crate) fn connection_id(&self) -> ConnId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}
