//! The command line: `syncgate serve`, `token`, `backup`, `restore`, `new-epoch`, `connect`, `bench` and `docs`.
//!
//! Every `serve` flag has an environment variable (`SYNCGATE_` + the flag in
//! upper snake case) and a key in the optional `--config` TOML file (the flag
//! name, with `-` or `_`). Precedence: flags, then the environment, then the file.
//!
//! | module | what |
//! | --- | --- |
//! | this one | the subcommands and the small value types they share |
//! | `run` | carrying out a subcommand: exit codes, logs, the runtime, serving until a signal |
//! | `signals` | SIGINT/SIGTERM drain then stop; SIGHUP reloads the rules on every node |
//! | `allocator` | the binary's allocator (mimalloc) and the defaults it departs from |
//! | `connect` | `syncgate connect`: a shell's client on the Rust client crate's `Session`; close code → exit status |
//! | `docs` | `syncgate docs flags`: the README's flag table rendered from the `serve` definition |
//! | `auth_flags` | the authentication flags, mapped onto `syncgate::auth::AuthSpec` |
//! | `production` | what `--env production` refuses, and `--allow-unsafe-production` |
//! | `serve` | `ServeArgs`: every flag of `syncgate serve`, the file, and their resolution into a [`ServerConfig`] (the authenticator through `syncgate::auth::AuthSpec`) |

pub mod allocator;
mod auth_flags;
mod cluster;
mod connect;
mod docs;
mod production;
mod run;
mod serve;
mod signals;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

pub use syncgate_tools::Seconds;
use syncgate_tools::devtoken::TokenSpec;

pub use run::run;
pub use serve::{LogFormat, Serve, ServeArgs};
pub use syncgate::auth::IssuerTable;

#[cfg(doc)]
use syncgate::ServerConfig;

/// syncgate: a WebSocket broker and local-first sync server with authentication in the protocol.
#[derive(Debug, Parser)]
#[command(name = "syncgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print a development HS256/384/512 token.
    Token(TokenArgs),
    /// Copy a (possibly live) store to a backup file.
    Backup(BackupArgs),
    /// Load a backup into an empty data directory.
    Restore(RestoreArgs),
    /// Draw a new epoch for a Postgres store after `pg_restore`: every cursor
    /// issued before resets, and running nodes stop serving until restarted.
    NewEpoch(NewEpochArgs),
    /// Connect to a server, print every server message as one JSON line, exit with the close code
    /// (mapped to a status: see `syncgate connect --help`).
    Connect(Box<connect::ConnectArgs>),
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print reference documentation generated from the code.
    #[command(subcommand)]
    Docs(DocsCommand),
}

/// `syncgate docs …`
#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// The Markdown table of every `serve` flag (the README's configuration reference).
    Flags,
}

/// Flags of `syncgate new-epoch`.
#[derive(Debug, Args)]
pub struct NewEpochArgs {
    /// The Postgres store (`postgres://…`) a dump was just restored into.
    #[arg(long, env = "SYNCGATE_STORE", hide_env_values = true)]
    pub store: StoreKind,
    /// The schema holding syncgate's tables.
    #[arg(long, env = "SYNCGATE_POSTGRES_SCHEMA", default_value = "syncgate")]
    pub postgres_schema: String,
    /// PEM CA certificates to trust for TLS to Postgres (besides the bundled roots).
    #[arg(long, env = "SYNCGATE_POSTGRES_CA_FILE")]
    pub postgres_ca_file: Option<std::path::PathBuf>,
}

/// Flags of `syncgate backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The store to back up: only `disk` has a built-in backup (a Postgres
    /// store is dumped with `pg_dump`).
    #[arg(long, env = "SYNCGATE_STORE", hide_env_values = true)]
    pub store: Option<StoreKind>,
    /// The server's data directory (the server may be running).
    #[arg(long, env = "SYNCGATE_DATA_DIR", default_value = "./syncgate-data")]
    pub data_dir: PathBuf,
    /// The backup file to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `syncgate restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The store to restore into: only `disk` has a built-in restore.
    #[arg(long, env = "SYNCGATE_STORE", hide_env_values = true)]
    pub store: Option<StoreKind>,
    /// An empty (or missing) data directory to restore into.
    #[arg(long, env = "SYNCGATE_DATA_DIR", default_value = "./syncgate-data")]
    pub data_dir: PathBuf,
    /// The backup file.
    #[arg(long, alias = "in")]
    pub from: PathBuf,
}

/// `syncgate bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Authenticated writers sending OP_BATCHes and waiting for each OP_RESULT.
    Ops(syncgate_tools::loadgen::OpsArgs),
    /// Subscribers of one topic receiving what a few publishers send: deliveries/s, order, latency.
    Fanout(syncgate_tools::loadgen::fanout::FanoutArgs),
    /// Connections that connect, authenticate and close: rate and per-phase latency (`--reference`: the transport's ceiling too).
    Handshake(syncgate_tools::loadgen::handshake::HandshakeArgs),
    /// Authenticated connections held idle: the server's memory per connection.
    Idle(syncgate_tools::loadgen::idle::IdleArgs),
    /// POST /api/publish from concurrent keep-alive connections: requests/s and latency.
    ApiPublish(syncgate_tools::loadgen::api::ApiArgs),
    /// Writes N records through the API, then times the change feed's catch-up from cursor 0.
    Feed(syncgate_tools::loadgen::api::ApiArgs),
    /// The bare-transport reference server that `bench handshake --reference` starts.
    #[command(hide = true)]
    Reference(syncgate_tools::loadgen::reference::ReferenceArgs),
}

/// Which store keeps collections: `disk`, `memory` or a Postgres URL.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StoreKind {
    /// SQLite in --data-dir: durable (the default).
    Disk,
    /// In memory: everything is lost at exit.
    Memory,
    /// A Postgres database that several nodes may share (`postgres://…`).
    Postgres(String),
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Self::Disk),
            "memory" => Ok(Self::Memory),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(Self::Postgres(url.into())),
            _ => Err("expected disk, memory or a postgres:// URL".into()),
        }
    }
}

impl TryFrom<String> for StoreKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Never prints a Postgres URL: it may hold a password.
impl std::fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Disk => "Disk",
            Self::Memory => "Memory",
            Self::Postgres(_) => "Postgres(…)",
        })
    }
}

/// When an accepted write counts as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    /// fsync before OP_RESULT.
    Full,
    /// No fsync: a crash can lose acknowledged writes.
    None,
}

/// Flags of `syncgate token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// HMAC secret (the server's --jwt-secret).
    #[arg(long, env = "SYNCGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The `sub` claim.
    #[arg(long)]
    pub sub: String,
    /// A role (repeat or comma-separate).
    #[arg(long = "role", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Lifetime (`90`, `10m`, `1h`).
    #[arg(long, default_value = "1h")]
    pub ttl: Seconds,
    /// The `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
    /// The `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// An extra string claim, `name=value` (repeatable), e.g. `--claim orgId=acme`.
    #[arg(long = "claim", value_parser = parse_claim)]
    pub claims: Vec<(String, String)>,
    /// HS256, HS384 or HS512.
    #[arg(long, default_value = "HS256", value_parser = ["HS256", "HS384", "HS512"])]
    pub alg: String,
}

impl TokenArgs {
    /// The token specification these flags describe.
    pub fn spec(&self) -> TokenSpec {
        TokenSpec {
            sub: self.sub.clone(),
            roles: self.roles.clone(),
            ttl: self.ttl.0,
            audience: self.aud.clone(),
            issuer: self.iss.clone(),
            claims: self.claims.iter().cloned().collect::<BTreeMap<_, _>>(),
            algorithm: self.alg.parse().unwrap_or(jsonwebtoken::Algorithm::HS256),
        }
    }
}

fn parse_claim(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?}: expected name=value"))
}
