//! One node's shared state ([`Shared`]) and its background work: the
//! backplane pump that feeds other nodes' messages to the hub and carries out
//! their control messages, and tombstone collection.
//!
//! The accept loop (`server`), the connections and the admin API all hold an
//! `Arc<Shared>`; it lives here so none of them depends on another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backplane::{Control, Inbound, Subject};
use crate::collections::Collections;
use crate::config::ServerConfig;
use crate::hlc::HlcClock;
use crate::hub::{ChangeNotice, Hub};
use crate::limits::IpSlots;
use crate::outbox::ConnId;
use crate::protocol::codes::close;
use crate::ratelimit::AuthFailures;
use crate::registry::Registry;
use crate::revocation::Revoked;

/// State shared by every connection of one node.
pub(crate) struct Shared {
    /// The configuration the server was started with.
    pub(crate) config: ServerConfig,
    /// Cancelled when the server shuts down; connections close with 1001.
    pub(crate) shutdown: CancellationToken,
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
    /// Whether the admin API has its own listener (and is absent from the public one).
    pub(crate) admin_separate: bool,
    /// Connections per client IP.
    pub(crate) ip_slots: Arc<IpSlots>,
    /// Held while a connection checks revocations and registers, and while a
    /// revocation is applied and its connections closed: so a revocation can
    /// never fall between a connection's check and its registration. A std
    /// mutex: nothing awaits under it.
    pub(crate) admission: std::sync::Mutex<()>,
    next_connection: AtomicU64,
    /// The last store probe of `/readyz` and when it ran (probes are at most one a second).
    probe: std::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

impl Shared {
    /// Opens the node: reads the store's clock and epoch, loads saved
    /// revocations, and starts the backplane pump and tombstone collection.
    pub(crate) async fn open(
        config: ServerConfig,
        shutdown: CancellationToken,
        admin_separate: bool,
    ) -> std::io::Result<Arc<Self>> {
        let unavailable = |e: crate::store::StoreError| std::io::Error::other(e.to_string());
        // The clock resumes after every timestamp the store ever accepted: it never goes back.
        let clock = HlcClock::new(config.node_id.clone(), config.store.clock().await.map_err(unavailable)?);
        match config.revocation_store.load().await {
            Ok(saved) => saved.iter().for_each(|r| config.revocations.apply(r)),
            Err(e) => warn!(error = %e, "could not load saved revocations"),
        }
        let drift = u64::try_from(config.max_clock_drift.as_millis()).unwrap_or(u64::MAX);
        let hub = Hub::new(config.backplane.clone(), config.store.clone());
        let collections =
            Collections::open(config.store.clone(), hub.clone(), clock, drift).await.map_err(unavailable)?;
        let collections = collections.observed_by(config.metrics.clone());
        let inbound = config.backplane.inbound();
        let shared = Arc::new(Self {
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            ip_slots: IpSlots::new(config.limits.per_ip),
            config,
            shutdown,
            tracker: TaskTracker::new(),
            collections,
            hub,
            registry: Registry::new(),
            admin_separate,
            admission: std::sync::Mutex::new(()),
            next_connection: AtomicU64::new(1),
            probe: std::sync::Mutex::new(None),
        });
        match inbound {
            Some(inbound) => {
                shared.tracker.spawn(pump(shared.clone(), inbound));
            }
            None => {
                warn!("the backplane's inbound stream was taken by another server: other nodes cannot reach this one")
            }
        }
        shared.tracker.spawn(collect_tombstones(shared.clone()));
        Ok(shared)
    }

    /// Whether this node should be sent clients (`/readyz`): not while it
    /// drains or shuts down, nor while its backplane is disconnected, nor while
    /// its store cannot commit (probed with an empty commit, at most once a second).
    pub(crate) async fn readiness(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() || self.config.draining.is_cancelled() {
            return Err("draining".into());
        }
        if !self.config.backplane.is_connected() {
            return Err("the backplane is disconnected".into());
        }
        if let Some((at, result)) = &*self.probe.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return result.clone();
        }
        let probe = tokio::time::timeout(std::time::Duration::from_secs(2), self.config.store.apply(&[])).await;
        let result = match probe {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("the store cannot commit: {e}")),
            Err(_) => Err("the store did not commit within 2 s".into()),
        };
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// A fresh connection id.
    pub(crate) fn connection_id(&self) -> ConnId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Carries out a control message on this node; returns how many connections it closed.
    pub(crate) fn apply_control(&self, control: &Control) -> usize {
        let revocations = &self.config.revocations;
        let revoked = match control {
            Control::RulesChanged => {
                self.reload_rules();
                return 0;
            }
            Control::Disconnect { sub } => {
                let _admission = self.admission.lock().unwrap_or_else(|e| e.into_inner());
                return self.registry.close_matching(
                    close::FORBIDDEN,
                    "disconnected by an administrator",
                    |s, _, _| s == sub,
                );
            }
            Control::RevokeJti { jti } => Revoked::Jti(jti.clone()),
            Control::RevokeSubject { sub, issued_before } => {
                Revoked::Subject { sub: sub.clone(), issued_before: *issued_before }
            }
        };
        let _admission = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        revocations.apply(&revoked);
        let now = crate::clock::unix_secs();
        self.registry
            .close_matching(close::FORBIDDEN, "token revoked", |sub, jti, iat| revocations.matches(sub, jti, iat, now))
    }

    fn reload_rules(&self) {
        let Some(path) = &self.config.rules_file else {
            info!("another node changed the rules, but this one has no rules file");
            return;
        };
        match crate::rules::RuleSet::load(path) {
            Ok(set) => {
                info!(rules = set.len(), "rules reloaded (another node said they changed)");
                self.config.policy.replace(crate::rules::Policy::with_rules(set));
            }
            Err(e) => tracing::error!("rules not reloaded, keeping the previous ones: {e}"),
        }
    }
}

impl Control {
    /// The control message that spreads a revocation to the other nodes.
    pub(crate) fn revoke(revoked: &Revoked) -> Self {
        match revoked {
            Revoked::Jti(jti) => Control::RevokeJti { jti: jti.clone() },
            Revoked::Subject { sub, issued_before } => {
                Control::RevokeSubject { sub: sub.clone(), issued_before: *issued_before }
            }
        }
    }
}

/// Feeds other nodes' messages to the hub and carries out their control messages, until shutdown.
async fn pump(shared: Arc<Shared>, mut inbound: mpsc::Receiver<Inbound>) {
    loop {
        let message = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            message = inbound.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        match message {
            Inbound::Message { subject: Subject::Topic(topic), payload } => {
                shared.hub.deliver(&topic, payload);
            }
            Inbound::Message { subject: Subject::Changes(collection), payload } => {
                match ChangeNotice::from_payload(payload) {
                    Some(notice) => shared.hub.receive_change(&collection, notice),
                    None => warn!(collection, "a malformed change notice from the backplane was dropped"),
                }
            }
            Inbound::Control(control) => {
                let closed = shared.apply_control(&control);
                info!(?control, closed, "control message from another node");
            }
            Inbound::Lost => shared.hub.lost(),
        }
    }
}

/// Collects expired tombstones hourly (and once at start), until shutdown.
async fn collect_tombstones(shared: Arc<Shared>) {
    let retention = u64::try_from(shared.config.tombstone_retention.as_millis()).unwrap_or(u64::MAX);
    loop {
        let cutoff = crate::clock::unix_ms().saturating_sub(retention);
        match shared.collections.collect_tombstones(cutoff).await {
            Ok(0) => {}
            Ok(n) => info!(collected = n, "expired tombstones collected"),
            Err(e) => warn!(error = %e, "tombstone collection failed"),
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
