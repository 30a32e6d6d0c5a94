//! The command line: `syncgate serve` and `syncgate token`.
//!
//! Every `serve` flag has an environment variable (`SYNCGATE_` + the flag in
//! upper snake case) and a key in the optional `--config` TOML file (the flag
//! name, with `-` or `_`). Precedence: flags, then the environment, then the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::auth::{
    AnonymousAuthenticator, Identity, IntrospectSettings, Introspector, JwksPolicy, JwksSource, JwtKey, JwtSettings,
    JwtVerifier, SharedAuthenticator, StaticTokenVerifier,
};
use crate::config::ServerConfig;
use crate::devtoken::TokenSpec;
use crate::http_client::{HttpClient, check_url};
use crate::rules::{Policy, PolicyHandle, RuleSet};
use crate::store::{Durability, MemoryStore, SqliteStore};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Flags of `syncgate backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
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
    Ops(crate::loadgen::OpsArgs),
}

/// Which store keeps collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in --data-dir: durable (the default).
    Disk,
    /// In memory: everything is lost at exit.
    Memory,
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

/// How connections authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token: the network is the boundary; everyone is `anonymous`.
    None,
    /// One static shared token (`--token`).
    Token,
    /// Short-lived JWTs (`--jwt-secret`, `--jwt-public-key` or `--jwks-url`).
    Jwt,
    /// Token introspection against the operator's API (`--introspect-url`).
    Introspect,
}

/// A duration given as seconds (`10`, `0.5`) or with a unit (`500ms`, `10m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(secs) = s.trim().parse::<f64>() {
            return Duration::try_from_secs_f64(secs).map(Seconds).map_err(|e| format!("{s:?}: {e}"));
        }
        humantime::parse_duration(s.trim()).map(Seconds).map_err(|e| format!("{s:?} is not a duration: {e}"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Duration::try_from_secs_f64(n).map(Seconds).map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Flags of `syncgate serve`; the same struct reads the `--config` file.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with defaults for any of these flags.
    #[arg(long, env = "SYNCGATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address and port to bind [default: 127.0.0.1:8080].
    #[arg(long, env = "SYNCGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Auth mode [default: jwt when a JWT key is given, token when --token is, else none].
    #[arg(long, env = "SYNCGATE_AUTH", value_enum)]
    pub auth: Option<AuthMode>,
    /// The static token (mode token).
    #[arg(long, env = "SYNCGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `sub` of static-token holders [default: token].
    #[arg(long, env = "SYNCGATE_TOKEN_SUB")]
    pub token_sub: Option<String>,
    /// Roles of static-token holders, comma-separated [default: user].
    #[arg(long, env = "SYNCGATE_TOKEN_ROLES", value_delimiter = ',')]
    pub token_roles: Option<Vec<String>>,
    /// Roles of anonymous connections in mode none, comma-separated [default: none].
    #[arg(long, env = "SYNCGATE_ANONYMOUS_ROLES", value_delimiter = ',')]
    pub anonymous_roles: Option<Vec<String>>,
    /// HMAC secret for HS256/384/512.
    #[arg(long, env = "SYNCGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file: RSA (RS*/PS*), EC P-256/P-384 (ES256/384) or Ed25519 (EdDSA).
    #[arg(long, env = "SYNCGATE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS endpoint (repeat or comma-separate for several); https://, or http:// to loopback.
    #[arg(long, env = "SYNCGATE_JWKS_URL", value_delimiter = ',')]
    pub jwks_url: Option<Vec<String>>,
    /// Least time between JWKS fetches caused by unknown `kid`s [default: 10].
    #[arg(long, env = "SYNCGATE_JWKS_COOLDOWN")]
    pub jwks_cooldown: Option<Seconds>,
    /// The previous HMAC secret, accepted until --jwt-previous-secret-until (rotation).
    #[arg(long, env = "SYNCGATE_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,
    /// Unix seconds until which --jwt-previous-secret is accepted.
    #[arg(long, env = "SYNCGATE_JWT_PREVIOUS_SECRET_UNTIL")]
    pub jwt_previous_secret_until: Option<u64>,
    /// Introspection endpoint (mode introspect); https://, or http:// to loopback.
    #[arg(long, env = "SYNCGATE_INTROSPECT_URL")]
    pub introspect_url: Option<String>,
    /// Bearer credential syncgate sends to the introspection endpoint.
    #[arg(long, env = "SYNCGATE_INTROSPECT_TOKEN", hide_env_values = true)]
    pub introspect_token: Option<String>,
    /// How long a successful introspection is reused, in milliseconds [default: 30000].
    #[arg(long, env = "SYNCGATE_INTROSPECT_CACHE_MS")]
    pub introspect_cache_ms: Option<u64>,
    /// Time allowed for one introspection or JWKS request [default: 5].
    #[arg(long, env = "SYNCGATE_INTROSPECT_TIMEOUT")]
    pub introspect_timeout: Option<Seconds>,
    /// PEM file of CA certificates trusted for JWKS and introspection over https://, besides the
    /// bundled Mozilla roots (an identity provider behind a private CA).
    #[arg(long, env = "SYNCGATE_IDP_CA_FILE")]
    pub idp_ca_file: Option<PathBuf>,
    /// Accept unverified claims when introspection is unavailable (development only; refused in production).
    #[arg(long, env = "SYNCGATE_INTROSPECT_FAIL_OPEN", num_args = 0..=1, default_missing_value = "true")]
    pub introspect_fail_open: Option<bool>,
    /// Send the token form-encoded (RFC 7662) instead of as JSON.
    #[arg(long, env = "SYNCGATE_INTROSPECT_FORM", num_args = 0..=1, default_missing_value = "true")]
    pub introspect_form: Option<bool>,
    /// Deployment environment; `production` refuses development-only settings.
    #[arg(long, env = "SYNCGATE_ENV")]
    pub env: Option<String>,
    /// Read the token from this cookie at the upgrade (only from an --allowed-origins Origin).
    #[arg(long, env = "SYNCGATE_AUTH_COOKIE")]
    pub auth_cookie: Option<String>,
    /// Origins allowed to open WebSockets (comma-separated); others get HTTP 403.
    #[arg(long, env = "SYNCGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Bearer token of the admin API (/admin/*); without it the API is absent.
    #[arg(long, env = "SYNCGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Failed authentications per client IP per minute before 4029 / HTTP 429 [default: 30; 0: off].
    #[arg(long, env = "SYNCGATE_AUTH_FAILURES_PER_MINUTE")]
    pub auth_failures_per_minute: Option<u32>,
    /// Required `aud` (repeat or comma-separate to accept several).
    #[arg(long, env = "SYNCGATE_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Option<Vec<String>>,
    /// Required `iss` (repeat or comma-separate to accept several).
    #[arg(long, env = "SYNCGATE_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Option<Vec<String>>,
    /// Clock-skew allowance for `exp`/`nbf`, in seconds [default: 30].
    #[arg(long, env = "SYNCGATE_JWT_LEEWAY")]
    pub jwt_leeway: Option<u64>,
    /// Claim holding the roles array; dotted paths reach nested claims [default: roles].
    #[arg(long, env = "SYNCGATE_JWT_ROLES_CLAIM")]
    pub jwt_roles_claim: Option<String>,
    /// Claim holding a single role, used when the roles claim is absent [default: role].
    #[arg(long, env = "SYNCGATE_JWT_ROLE_CLAIM")]
    pub jwt_role_claim: Option<String>,
    /// Time allowed between open and AUTH [default: 10].
    #[arg(long, env = "SYNCGATE_AUTH_TIMEOUT")]
    pub auth_timeout: Option<Seconds>,
    /// How long before expiry TOKEN_EXPIRING is sent [default: 30].
    #[arg(long, env = "SYNCGATE_EXPIRY_NOTICE")]
    pub expiry_notice: Option<Seconds>,
    /// Interval of server pings [default: 20].
    #[arg(long, env = "SYNCGATE_PING_INTERVAL")]
    pub ping_interval: Option<Seconds>,
    /// Silence after which a connection is closed with 1001 [default: 60].
    #[arg(long, env = "SYNCGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<Seconds>,
    /// Largest accepted message in bytes [default: 1048576].
    #[arg(long, env = "SYNCGATE_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Record bytes per SYNC_DATA; a larger snapshot continues in CHANGE pages [default: 8388608].
    #[arg(long, env = "SYNCGATE_SYNC_PAGE_BYTES")]
    pub sync_page_bytes: Option<usize>,
    /// Largest message accepted before authentication [default: 65536].
    #[arg(long, env = "SYNCGATE_MAX_PREAUTH_FRAME_BYTES")]
    pub max_preauth_frame_bytes: Option<usize>,
    /// Open connections per client IP (0: unlimited) [default: 2048].
    #[arg(long, env = "SYNCGATE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Unauthenticated WebSockets per client IP (0: unlimited) [default: 1024].
    #[arg(long, env = "SYNCGATE_MAX_UNAUTHENTICATED_PER_IP")]
    pub max_unauthenticated_per_ip: Option<usize>,
    /// Sustained messages per second per connection (0: unlimited) [default: 1000].
    #[arg(long, env = "SYNCGATE_MESSAGES_PER_SECOND")]
    pub messages_per_second: Option<u32>,
    /// Burst above the message rate before rate_limited [default: 2000].
    #[arg(long, env = "SYNCGATE_MESSAGE_BURST")]
    pub message_burst: Option<u32>,
    /// Largest encoded PUB data or op value, in bytes [default: 262144].
    #[arg(long, env = "SYNCGATE_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Open connections at most [default: 10000].
    #[arg(long, env = "SYNCGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// PEM certificate chain: serve wss://.
    #[arg(long, env = "SYNCGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SYNCGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Where collections are kept: disk (SQLite in --data-dir) or memory [default: disk].
    #[arg(long, env = "SYNCGATE_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Data directory of the disk store [default: ./syncgate-data].
    #[arg(long, env = "SYNCGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// full: fsync before acknowledging; none: explicitly ephemeral [default: full].
    #[arg(long, env = "SYNCGATE_DURABILITY", value_enum)]
    pub durability: Option<DurabilityArg>,
    /// Tombstones older than this are collected [default: 30d].
    #[arg(long, env = "SYNCGATE_TOMBSTONE_RETENTION")]
    pub tombstone_retention: Option<Seconds>,
    /// RBAC rules (TOML); without it every authenticated identity may read and write everything.
    #[arg(long, env = "SYNCGATE_RULES")]
    pub rules: Option<PathBuf>,
    /// How far ahead of the server's clock a write's hlc may be [default: 60].
    #[arg(long, env = "SYNCGATE_MAX_CLOCK_DRIFT")]
    pub max_clock_drift: Option<Seconds>,
    /// Subscriptions plus syncs per connection [default: 256].
    #[arg(long, env = "SYNCGATE_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Messages queued for a connection before it is closed with 4200 [default: 1024].
    #[arg(long, env = "SYNCGATE_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Log filter (tracing `EnvFilter` syntax) [default: info].
    #[arg(long, env = "SYNCGATE_LOG")]
    pub log: Option<String>,
}

/// A fully resolved `serve` invocation.
pub struct Serve {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The server configuration.
    pub config: ServerConfig,
    /// The log filter.
    pub log: String,
    /// Warnings to log once logging is up.
    pub warnings: Vec<String>,
    /// The rules file, reloaded on SIGHUP.
    pub rules: Option<PathBuf>,
}

macro_rules! fill_from {
    ($target:ident, $source:ident; $($field:ident),* $(,)?) => {
        $( if $target.$field.is_none() { $target.$field = $source.$field.take(); } )*
    };
}

impl ServeArgs {
    /// Fills every flag not given on the command line or in the environment from the file.
    fn fill_from_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("--config {}", path.display()))?;
        // Accept `jwt_secret` as well as `jwt-secret`.
        let table: toml::Table = table.into_iter().map(|(k, v)| (k.replace('_', "-"), v)).collect();
        let mut file = ServeArgs::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("--config {}: {}", path.display(), e.to_string().trim()))?;
        fill_from!(self, file;
            listen, auth, token, token_sub, token_roles, anonymous_roles, jwt_secret, jwt_public_key,
            jwt_audience, jwt_issuer, jwt_leeway, jwt_roles_claim, jwt_role_claim, auth_timeout,
            expiry_notice, ping_interval, idle_timeout, max_frame_bytes, max_preauth_frame_bytes, sync_page_bytes,
            max_connections, tls_cert, tls_key, rules, max_clock_drift, max_subscriptions, outbound_queue, log,
            jwks_url, jwks_cooldown, jwt_previous_secret, jwt_previous_secret_until, introspect_url,
            introspect_token, introspect_cache_ms, introspect_timeout, introspect_fail_open, introspect_form, idp_ca_file,
            env, auth_cookie, allowed_origins, admin_token, auth_failures_per_minute, store, data_dir,
            durability, tombstone_retention, max_connections_per_ip, max_unauthenticated_per_ip, messages_per_second,
            message_burst, max_value_bytes);
        Ok(())
    }

    /// Resolves flags, environment and file into a server configuration, or
    /// one error line naming the problem.
    pub fn resolve(mut self) -> anyhow::Result<Serve> {
        if let Some(path) = self.config.clone() {
            self.fill_from_file(&path)?;
        }
        let mut config = ServerConfig::default();
        let mut warnings = Vec::new();
        config.authenticator = self.authenticator(&mut warnings)?;
        let leeway = Duration::from_secs(self.jwt_leeway.unwrap_or(30));
        let session = &mut config.session;
        session.leeway = leeway;
        if let Some(Seconds(d)) = self.auth_timeout {
            session.auth_timeout = d;
        }
        if let Some(Seconds(d)) = self.expiry_notice {
            session.expiry_notice = d;
        }
        if let Some(Seconds(d)) = self.ping_interval {
            session.ping_interval = d;
        }
        if let Some(Seconds(d)) = self.idle_timeout {
            session.idle_timeout = d;
        }
        if session.ping_interval.is_zero() || session.idle_timeout <= session.ping_interval {
            bail!("--idle-timeout must be longer than --ping-interval (a healthy client would be dropped)");
        }
        let limits = &mut config.limits;
        if let Some(n) = self.max_frame_bytes {
            if n < 1024 {
                bail!("--max-frame-bytes {n} is too small (at least 1024)");
            }
            limits.max_frame_bytes = n;
        }
        if let Some(n) = self.max_preauth_frame_bytes {
            limits.max_preauth_frame_bytes = n.max(1024);
        }
        if let Some(n) = self.sync_page_bytes {
            if n < 64 * 1024 {
                bail!("--sync-page-bytes {n} is too small (at least 65536)");
            }
            limits.sync_page_bytes = n;
        }
        if let Some(n) = self.max_connections {
            if n == 0 {
                bail!("--max-connections must be at least 1");
            }
            limits.max_connections = n;
        }
        if let Some(Seconds(d)) = self.max_clock_drift {
            config.max_clock_drift = d;
        }
        if let Some(n) = self.max_subscriptions {
            config.session.max_subscriptions = n;
        }
        if let Some(n) = self.outbound_queue {
            config.limits.outbound_queue = n.max(1);
        }
        match &self.rules {
            Some(path) => {
                let rules = RuleSet::load(path)?;
                config.policy = PolicyHandle::new(Policy::with_rules(rules));
            }
            None => warnings.push("no --rules file: every authenticated identity may read and write everything".into()),
        }
        if let Some(n) = self.max_connections_per_ip {
            config.limits.per_ip.connections = n;
        }
        if let Some(n) = self.max_unauthenticated_per_ip {
            config.limits.per_ip.unauthenticated = n;
        }
        if let Some(n) = self.messages_per_second {
            config.session.messages_per_second = n;
        }
        if let Some(n) = self.message_burst {
            config.session.message_burst = n.max(1);
        }
        if let Some(n) = self.max_value_bytes {
            config.session.max_value_bytes = n;
        }
        if let Some(Seconds(d)) = self.tombstone_retention {
            config.tombstone_retention = d;
        }
        config.allowed_origins = self.allowed_origins.clone().unwrap_or_default();
        if let Some(name) = &self.auth_cookie {
            if config.allowed_origins.is_empty() {
                bail!("--auth-cookie needs --allowed-origins (cookies are only trusted from listed Origins)");
            }
            config.auth_cookie = Some(name.clone());
        }
        config.admin_token = self.admin_token.clone().filter(|t| !t.is_empty());
        if let Some(n) = self.auth_failures_per_minute {
            config.auth_failures_per_minute = n;
        }
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        };
        // Opened last: every other flag is checked before the data directory is locked.
        config.store = match self.store.unwrap_or(StoreKind::Disk) {
            StoreKind::Memory => {
                warnings.push("--store memory: collections are lost when the server stops".into());
                Arc::new(MemoryStore::new())
            }
            StoreKind::Disk => {
                let dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from("./syncgate-data"));
                let durability = match self.durability.unwrap_or(DurabilityArg::Full) {
                    DurabilityArg::Full => Durability::Full,
                    DurabilityArg::None => {
                        warnings.push(
                            "--durability none: acknowledged writes can be lost in a crash (ephemeral use only)".into(),
                        );
                        Durability::None
                    }
                };
                Arc::new(
                    SqliteStore::open(&dir, durability)
                        .map_err(|e| anyhow::anyhow!("--data-dir {}: {}", dir.display(), e.0))?,
                )
            }
        };
        Ok(Serve {
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            config,
            log: self.log.unwrap_or_else(|| "info".into()),
            warnings,
            rules: self.rules,
        })
    }

    fn authenticator(&self, warnings: &mut Vec<String>) -> anyhow::Result<SharedAuthenticator> {
        let has_jwt_key = self.jwt_secret.is_some() || self.jwt_public_key.is_some() || self.jwks_url.is_some();
        let mode = self.auth.unwrap_or(if has_jwt_key {
            AuthMode::Jwt
        } else if self.token.is_some() {
            AuthMode::Token
        } else {
            AuthMode::None
        });
        match mode {
            AuthMode::None => {
                if has_jwt_key || self.token.is_some() || self.introspect_url.is_some() {
                    bail!(
                        "--auth none conflicts with the --token/--jwt-*/--jwks-url/--introspect-url settings also given"
                    );
                }
                warnings.push("auth mode none: every connection is accepted as `anonymous`".into());
                Ok(Arc::new(AnonymousAuthenticator { roles: self.anonymous_roles.clone().unwrap_or_default() }))
            }
            AuthMode::Token => {
                let token =
                    self.token.as_deref().filter(|t| !t.is_empty()).context("--auth token needs --token SECRET")?;
                if has_jwt_key {
                    bail!("--auth token conflicts with --jwt-secret/--jwt-public-key");
                }
                let identity = Identity::new(
                    self.token_sub.clone().unwrap_or_else(|| "token".into()),
                    self.token_roles.clone().unwrap_or_else(|| vec!["user".into()]),
                );
                Ok(Arc::new(StaticTokenVerifier::new(token, identity)))
            }
            AuthMode::Jwt => {
                let mut keys = Vec::new();
                if let Some(secret) = &self.jwt_secret {
                    if secret.len() < 32 {
                        warnings.push(
                            "the JWT secret is shorter than 32 bytes; use a longer random secret in production".into(),
                        );
                    }
                    keys.push(JwtKey::Secret(secret.as_bytes().to_vec()));
                }
                match (&self.jwt_previous_secret, self.jwt_previous_secret_until) {
                    (Some(secret), Some(until)) => {
                        keys.push(JwtKey::PreviousSecret { secret: secret.as_bytes().to_vec(), until })
                    }
                    (Some(_), None) => bail!("--jwt-previous-secret needs --jwt-previous-secret-until (Unix seconds)"),
                    (None, Some(_)) => bail!("--jwt-previous-secret-until needs --jwt-previous-secret"),
                    (None, None) => {}
                }
                if let Some(path) = &self.jwt_public_key {
                    let pem = std::fs::read(path).with_context(|| format!("--jwt-public-key {}", path.display()))?;
                    keys.push(JwtKey::PublicKeyPem(pem));
                }
                if let Some(urls) = &self.jwks_url {
                    let http = self.http_client()?;
                    let mut policy = JwksPolicy::default();
                    if let Some(Seconds(d)) = self.jwks_cooldown {
                        policy.unknown_kid_cooldown = d;
                    }
                    for url in urls {
                        check_url(url).map_err(|e| anyhow::anyhow!("--jwks-url {e}"))?;
                        keys.push(JwtKey::Jwks(JwksSource::new(url.clone(), http.clone(), policy)));
                    }
                }
                if keys.is_empty() {
                    bail!("--auth jwt needs --jwt-secret, --jwt-public-key or --jwks-url");
                }
                if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
                    bail!("--jwt-secret and --jwt-public-key are mutually exclusive");
                }
                let mut settings = JwtSettings { keys, ..JwtSettings::new(JwtKey::Secret(Vec::new())) };
                settings.audience = self.jwt_audience.clone().unwrap_or_default();
                settings.issuer = self.jwt_issuer.clone().unwrap_or_default();
                settings.leeway_secs = self.jwt_leeway.unwrap_or(30);
                if let Some(claim) = &self.jwt_roles_claim {
                    settings.roles_claim = claim.clone();
                }
                if let Some(claim) = &self.jwt_role_claim {
                    settings.role_claim = claim.clone();
                }
                let verifier = JwtVerifier::new(settings).map_err(|e| match &self.jwt_public_key {
                    Some(path) => anyhow::anyhow!("--jwt-public-key {}: {e}", path.display()),
                    None => anyhow::anyhow!("--jwt-secret: {e}"),
                })?;
                Ok(Arc::new(verifier))
            }
            AuthMode::Introspect => {
                let url = self.introspect_url.clone().context("--auth introspect needs --introspect-url")?;
                check_url(&url).map_err(|e| anyhow::anyhow!("--introspect-url {e}"))?;
                let bearer = self
                    .introspect_token
                    .clone()
                    .filter(|t| !t.is_empty())
                    .context("--auth introspect needs --introspect-token")?;
                let fail_open = self.introspect_fail_open.unwrap_or(false);
                if fail_open && self.env.as_deref() == Some("production") {
                    bail!("--introspect-fail-open is refused with --env production (SYNCGATE_ENV=production)");
                }
                if fail_open {
                    warnings.push("--introspect-fail-open: when introspection is down, UNVERIFIED token claims are accepted (development only)".into());
                }
                let settings = IntrospectSettings {
                    url,
                    bearer,
                    cache_ttl: Duration::from_millis(self.introspect_cache_ms.unwrap_or(30_000).max(1)),
                    cache_max_entries: 100_000,
                    form: self.introspect_form.unwrap_or(false),
                    fail_open,
                    leeway_secs: self.jwt_leeway.unwrap_or(30),
                };
                Ok(Arc::new(Introspector::new(settings, self.http_client()?)))
            }
        }
    }

    fn http_client(&self) -> anyhow::Result<HttpClient> {
        let timeout = self.introspect_timeout.map_or(Duration::from_secs(5), |Seconds(d)| d);
        let Some(path) = &self.idp_ca_file else {
            return HttpClient::new(timeout).map_err(|e| anyhow::anyhow!("HTTP client: {e}"));
        };
        let roots = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("--idp-ca-file {}: {e}", path.display()))?;
        if roots.is_empty() {
            bail!("--idp-ca-file {}: no PEM certificate in the file", path.display());
        }
        HttpClient::with_extra_roots(timeout, roots)
            .map_err(|e| anyhow::anyhow!("--idp-ca-file {}: {e}", path.display()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["syncgate", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => *a,
            _ => unreachable!("a serve command line"),
        }
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!("10".parse::<Seconds>().unwrap().0, Duration::from_secs(10));
        assert_eq!("0.5".parse::<Seconds>().unwrap().0, Duration::from_millis(500));
        assert_eq!("10m".parse::<Seconds>().unwrap().0, Duration::from_secs(600));
        assert!("soon".parse::<Seconds>().is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_fills_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\njwt_secret = \"from-file-secret-that-is-long-enough\"\nauth-timeout = 3\n",
        )
        .unwrap();
        // Its own data directory: a server on the defaults may hold ./syncgate-data.
        let data = dir.path().join("data");
        let mut args = parse(&["--listen", "127.0.0.1:7000", "--data-dir", data.to_str().unwrap()]);
        args.config = Some(path);
        let serve = args.resolve().unwrap();
        assert_eq!(serve.listen.port(), 7000);
        assert_eq!(serve.config.session.auth_timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_refused_flag_leaves_the_data_directory_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data_arg = data.to_str().unwrap();
        assert!(parse(&["--tls-cert", "/x", "--data-dir", data_arg]).resolve().is_err());
        assert!(parse(&["--auth-cookie", "sid", "--data-dir", data_arg]).resolve().is_err());
        assert!(!data.exists(), "a refused start-up must not create or lock the data directory");
    }

    #[test]
    fn unknown_file_keys_and_conflicts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "jwt_sekret = \"x\"\n").unwrap();
        let mut args = parse(&[]);
        args.config = Some(path);
        assert!(args.resolve().err().unwrap().to_string().contains("jwt-sekret"));
        let err = parse(&["--auth", "token"]).resolve().err().unwrap().to_string();
        assert!(err.contains("--token"), "{err}");
        assert!(parse(&["--jwt-secret", "a", "--jwt-public-key", "/x"]).resolve().is_err());
        assert!(parse(&["--tls-cert", "/x"]).resolve().is_err());
    }
}
