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
//! | `connection` | the per-connection actor: reader task, writer, timers, outbox; verifications, commits and scans as tasks whose completions come back as events; drives a [`session::Session`] |
//! | [`session`] | sans-IO state machine: handshake rules, expiry, refresh, revalidation, rate limit; `session::route` checks and routes requests (RBAC, limits) |
//! | [`assembler`], [`mask`] | WebSocket reassembly with a total cap; refusal of unmasked client frames (sans-IO) |
//! | [`protocol`] | message types, wire codes ([`protocol::codes`]), MessagePack codec |
//! | [`auth`] | the [`auth::Authenticator`] trait: none, static token, JWT key ring (PEM, JWKS), introspection |
//! | [`rules`] | RBAC rule files, per-identity [`rules::Access`], the live [`rules::PolicyHandle`] |
//! | [`hub`], [`outbox`] | this node's fan-out to its connections (topics, collection feeds put back in commit order, gap recovery); bounded per-connection queues (4200) |
//! | [`backplane`] | the `Backplane` trait that connects nodes (interest, publish, control), the memory backplane, its conformance suite |
//! | `node` | one node's shared state, the backplane pump, control messages, tombstone collection |
//! | [`collections`], [`hlc`], [`cursor`] | last-writer-wins ops, clock skew, `CHANGE` ordering; hybrid logical clocks; `<epoch>:<position>` sync cursors |
//! | [`store`] | the `Store` trait, memory and SQLite (group commit) stores, backup/restore (`store::backup`), conformance suite |
//! | [`limits`], [`ratelimit`] | connections per IP; failed authentications per IP |
//! | [`registry`], [`revocation`], `admin` | live connections by subject; revoked tokens and the `RevocationStore` trait that keeps them; the admin HTTP API |
//! | [`http_client`] | outbound HTTPS to identity providers (bounded, loopback-only plain HTTP) |
//! | [`config`], [`cli`] | [`ServerConfig`]; `syncgate` subcommands, flag/env/TOML precedence, authenticator assembly |
//! | [`client`] | the Rust client: token provider, reconnect, persisted offline replica and outbox |
//! | [`tls`], [`devtoken`], [`loadgen`], [`clock`] | TLS config; dev tokens; `syncgate bench ops`; the injectable [`clock::Clock`] (monotonic by default) |
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
pub mod assembler;
pub mod auth;
pub mod backplane;
pub mod cli;
pub mod client;
pub mod clock;
pub mod collections;
pub mod config;
mod connection;
pub mod cursor;
pub mod devtoken;
pub mod hlc;
pub mod http_client;
pub mod hub;
pub mod limits;
pub mod loadgen;
pub mod mask;
mod node;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod revocation;
pub mod rules;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;

pub use config::ServerConfig;
pub use server::run;
