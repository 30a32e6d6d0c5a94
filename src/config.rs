//! The server's resolved configuration, as a library user builds it.
//!
//! The command line (`cli`) produces one of these; an embedding app builds
//! it directly, for instance with its own [`Authenticator`].

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AnonymousAuthenticator, SharedAuthenticator};
use crate::backplane::{Backplane, MemoryBackplane};
use crate::clock::{Clock, MonotonicClock};
use crate::rules::Policy;
use crate::session::SessionConfig;
use crate::store::{MemoryRevocationStore, RevocationStore};
use crate::store::{MemoryStore, Store};

#[cfg(doc)]
use crate::auth::Authenticator;

/// Everything `run` needs besides the listener and the shutdown token: what
/// the node is configured with. What changes while it runs (the policy in
/// force, revocations, metrics, draining) lives on the
/// [`Node`](crate::node::Node).
#[derive(Clone)]
pub struct ServerConfig {
    /// Verifies tokens (mode none, static token, JWT, or an embedder's own).
    pub authenticator: SharedAuthenticator,
    /// Session timing: auth timeout, expiry notice, pings, idle timeout.
    pub session: SessionConfig,
    /// Sizes and counts that bound every connection.
    pub limits: Limits,
    /// Transport timeouts.
    pub timeouts: Timeouts,
    /// TLS settings; `None` serves plain `ws://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The authorization policy the node starts with (`Node::set_policy` and
    /// `Node::reload_rules` replace it while it runs).
    pub policy: Policy,
    /// What connects this node to the others (alone: a standalone memory backplane).
    /// Its inbound stream is taken by the server that runs with it: one server per backplane node.
    pub backplane: Arc<dyn Backplane>,
    /// Where collections are kept.
    pub store: Arc<dyn Store>,
    /// How far ahead of the server's clock a write's `hlc` may be (else `clock_skew`).
    pub max_clock_drift: Duration,
    /// This server's node id in the hybrid logical clock.
    pub node_id: String,
    /// Where revocations are kept across restarts (the SQLite store for `syncgate serve`).
    pub revocation_store: Arc<dyn RevocationStore>,
    /// Bearer token of the admin API; `None` leaves `/admin/*` absent (404).
    pub admin_token: Option<String>,
    /// Origins allowed to open WebSockets; when set, other Origins get HTTP 403.
    pub allowed_origins: Vec<String>,
    /// Cookie carrying the token for same-origin browsers (only from an allowed Origin).
    pub auth_cookie: Option<String>,
    /// Failed authentications per client IP per minute before 4029 / HTTP 429 (0: no limit).
    pub auth_failures_per_minute: u32,
    /// Tombstones older than this (by their `hlc`) are collected.
    pub tombstone_retention: Duration,
    /// Where connections read "now": deadlines, expiry and token checks.
    pub clock: Arc<dyn Clock>,
    /// The rules file that `policy` came from, read again on `SIGHUP` and
    /// when another node says the rules changed.
    pub rules_file: Option<std::path::PathBuf>,
    /// How often each followed collection's delivered position is compared
    /// with the store's, so a lost last change is noticed.
    pub position_check: Duration,
    /// Whether `/readyz` answers 503 while the backplane is down (by default
    /// a backplane outage leaves nodes ready: they serve their own clients).
    pub ready_requires_backplane: bool,
    /// Peers whose `X-Forwarded-For` header names the client (load
    /// balancers); every other peer is the client itself.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            authenticator: Arc::new(AnonymousAuthenticator { roles: Vec::new() }),
            session: SessionConfig::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            tls: None,
            policy: Policy::allow_all(),
            backplane: Arc::new(MemoryBackplane::standalone()),
            store: Arc::new(MemoryStore::new()),
            max_clock_drift: Duration::from_secs(60),
            node_id: format!("syncgate-{:08x}", fastrand::u32(..)),
            revocation_store: Arc::new(MemoryRevocationStore::default()),
            admin_token: None,
            allowed_origins: Vec::new(),
            auth_cookie: None,
            auth_failures_per_minute: 30,
            tombstone_retention: Duration::from_secs(30 * 24 * 3600),
            rules_file: None,
            position_check: Duration::from_secs(5),
            ready_requires_backplane: false,
            trusted_proxies: Vec::new(),
            clock: Arc::new(MonotonicClock::new()),
        }
    }
}

/// The default largest message before `AUTH_ACK`: an `AUTH` carrying the
/// longest token any mode accepts, plus room for the map around it. Nothing
/// larger can be a valid first message, so nothing larger is buffered for a
/// peer that has not authenticated.
pub const MAX_PREAUTH_FRAME_BYTES: usize = crate::auth::MAX_TOKEN_BYTES + 1024;

/// Bounds on sizes and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open TCP connections at most; further ones are closed at accept.
    pub max_connections: usize,
    /// Largest accepted message (fragments included); larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest message accepted before `AUTH_ACK`: unauthenticated sockets stay cheap.
    pub max_preauth_frame_bytes: usize,
    /// Deepest MessagePack nesting accepted.
    pub max_nesting_depth: usize,
    /// Messages queued for one connection before it is closed with 4200.
    pub outbound_queue: usize,
    /// Record bytes in one `SYNC_DATA`; a larger snapshot continues in
    /// `CHANGE` pages, so no collection becomes one unbounded message.
    pub sync_page_bytes: usize,
    /// Largest HTTP request head before the upgrade.
    pub max_header_bytes: usize,
    /// Connections per client IP, and unauthenticated ones among them.
    pub per_ip: crate::ip_slots::PerIpLimits,
    /// Change feeds (SSE) one identity may hold open (0: no bound).
    pub feeds_per_identity: usize,
    /// Change feeds one client address may hold open (0: no bound).
    pub feeds_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_frame_bytes: 1024 * 1024,
            max_preauth_frame_bytes: MAX_PREAUTH_FRAME_BYTES,
            max_nesting_depth: 32,
            outbound_queue: 1024,
            max_header_bytes: 16 * 1024,
            sync_page_bytes: crate::collections::SYNC_PAGE_BYTES,
            per_ip: crate::ip_slots::PerIpLimits::default(),
            feeds_per_identity: 16,
            feeds_per_ip: 64,
        }
    }
}

/// Transport timeouts (protocol timeouts live in [`SessionConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A write that takes longer ends the connection (a client that never reads).
    pub write: Duration,
    /// Time allowed to send the HTTP request head (slowloris).
    pub header_read: Duration,
    /// Time allowed to send a whole HTTP API request body.
    pub body_read: Duration,
    /// Time allowed for the TLS handshake.
    pub tls_handshake: Duration,
    /// Longest a token verification may take before it fails closed.
    pub verify: Duration,
    /// Time to wait for the peer's close after ours before dropping the socket.
    pub close_linger: Duration,
    /// Time connections get to close on shutdown before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            write: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            verify: Duration::from_secs(10),
            close_linger: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
