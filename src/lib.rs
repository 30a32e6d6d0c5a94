//! syncgate: a WebSocket message broker and local-first sync server whose
//! authentication lives inside the protocol.
//!
//! A connection opens unauthenticated, receives `AUTH_REQUIRED`, and must
//! present a token in an `AUTH` frame (or the `token` query parameter)
//! before anything else is processed. The wire protocol is specified in
//! `proto/PROTOCOL.md`.
//!
//! # Layout
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`server`] | accept loop, connection caps, HTTP (`/ws` upgrade, `/healthz`, Origin, cookies), TLS, shutdown, the admin listener; [`run`] |
//! | `connection` | the per-connection actor: reader task, writer, timers, send queue; verifications, commits and scans as tasks whose completions come back as events; drives a [`session::Session`] |
//! | [`session`] | sans-IO state machine: handshake rules, expiry, refresh, revalidation, rate limit; `session::route` checks and routes requests (RBAC, limits) |
//! | `client_stream` | the client's bytes on their way to fastwebsockets: unmasked frames refused, its read buffer dropped between messages |
//! | `requests` | what a request may do (names, rights, sizes) and why it was refused: one set of checks and one mapping to wire codes for the session and the HTTP API |
//! | [`protocol`], [`hlc`], [`cursor`], [`names`], [`assembler`] | re-exported from `syncgate-proto` (`crates/syncgate-proto`), shared with the clients: messages, codes, codec; hybrid logical clocks and the last-writer-wins rule; `<epoch>:<position>` cursors; the naming rule; WebSocket reassembly |
//! | [`auth`] | the [`auth::Authenticator`] trait: none, static token, JWT key ring (PEM, JWKS), introspection; [`auth::AuthSpec`] assembles one from settings (what `syncgate serve` flags describe) |
//! | [`rules`] | RBAC rule files, per-identity [`rules::Access`], the live [`rules::PolicyHandle`] |
//! | [`sync_streams`] | sans-IO sync streams of one connection: what each followed collection was sent, what waits behind a scan, catch-ups and stale answers (the actor only carries it out) |
//! | [`hub`], [`send_queue`] | this node's fan-out to its connections (topics, collection feeds put back in commit order, gap recovery); each connection's bounded send queue (4200) |
//! | [`backplane`] | the `Backplane` trait that connects nodes (interest, publish, control with acknowledgements, announcements), the memory and NATS backplanes (signed envelopes, subjects no name can steer), its conformance suite |
//! | [`node`] | the [`node::Node`] every surface calls: authentication, requests, control (disconnect, revoke, rules reload, drain); its background work (backplane pumps, tombstone collection, position checks); the live nodes of the cluster |
//! | [`collections`] | validating and committing last-writer-wins ops, clock skew, snapshots for `SYNC` |
//! | [`store`] | the `Store` trait, memory, SQLite (group commit; WAL checkpoints on a thread of their own) and Postgres (shared by several nodes; positions by one locked row) stores, the `RevocationStore` trait, backup/restore (`store::backup`), conformance suite (with the shared-database check) |
//! | [`ip_slots`], [`auth_failures`], `client_address` | connections per IP; failed authentications per IP; the client's address behind trusted proxies (`X-Forwarded-For`) |
//! | `api`, `request_budgets`, `feed_slots` | the server API for backends (`/api/…`: publish, write and read collections, the SSE change feed) and the end-to-end encryption key vault (`/vault/…`, in `api::vault`); its request budgets per identity and per address; open change feeds per identity and per address |
//! | `registry`, `revocation`, `admin` | live connections by subject; the in-memory list of revoked tokens; the admin HTTP API |
//! | [`http_client`] | outbound HTTPS to identity providers (bounded, loopback-only plain HTTP) |
//! | [`config`] | [`ServerConfig`] |
//! | [`metrics`], [`process_metrics`] | Prometheus metrics (`GET /metrics` on the admin surface): every family present from the start, `syncgate_build_info`; the `process_*` series from `/proc/self` |
//! | [`tls`], [`clock`] | TLS config; the injectable [`clock::Clock`] (monotonic by default) |
//!
//! Beside this crate: `syncgate-client` (the Rust client: token provider,
//! reconnect, persisted offline replica and outbox), `syncgate-tools` (the
//! load generator and development tokens), and the binary's own `src/cli`
//! (subcommands, flag/env/TOML precedence, authenticator assembly).
//!
//! # Embedding
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! syncgate::run(listener, syncgate::ServerConfig::default(), shutdown).await
//! # }
//! ```
#![warn(missing_docs, unreachable_pub)]

mod admin;
mod api;
pub mod auth;
pub mod auth_failures;
pub mod backplane;
mod client_address;
mod client_stream;
pub mod clock;
pub mod collections;
pub mod config;
mod connection;
mod feed_slots;
pub mod http_client;
pub mod hub;
pub mod ip_slots;
pub mod metrics;
pub mod node;
pub mod process_metrics;
mod registry;
mod request_budgets;
mod requests;
mod revocation;
pub mod rules;
pub mod send_queue;
pub mod server;
pub mod session;
pub mod store;
pub mod sync_streams;
pub mod tls;

pub use config::ServerConfig;
pub use server::run;
pub use syncgate_proto::{assembler, cursor, hlc, names, protocol, values};
