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
//! | [`server`] | accept loop, connection cap, HTTP (`/ws` upgrade, `/healthz`), TLS, graceful shutdown; [`run`] |
//! | `connection` | the per-connection actor: reader task, writer, timers; drives a [`session::Session`] |
//! | [`session`] | sans-IO state machine: handshake rules, auth timeout, expiry, refresh, pings |
//! | [`assembler`] | WebSocket fragment reassembly with a total size cap (sans-IO) |
//! | [`protocol`] | message types, wire codes ([`protocol::codes`]), MessagePack codec |
//! | [`auth`] | the [`auth::Authenticator`] trait and its modes: none, static token, JWT |
//! | [`config`] | [`ServerConfig`]: what an embedder or the CLI hands to [`run`] |
//! | [`cli`] | `syncgate serve` / `syncgate token` flags, env and TOML file precedence |
//! | [`tls`] | rustls server configuration from PEM files |
//! | [`client`] | the Rust client: token provider, refresh, reconnect, events |
//! | [`devtoken`] | minting development HS256/384/512 tokens |
//! | [`clock`] | the one place that reads the wall clock |
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
pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod collections;
pub mod config;
mod connection;
pub mod devtoken;
pub mod hlc;
pub mod http_client;
pub mod limits;
pub mod loadgen;
pub mod mask;
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
