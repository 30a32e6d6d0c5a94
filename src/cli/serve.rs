//! `syncgate serve`: its flags, the `--config` file, and their resolution.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use syncgate::auth::{AuthMode, IntrospectShape};

use super::production::UnsafeSetting;
use super::{DurabilityArg, IssuerTable, Seconds, StoreKind};
use syncgate::config::ServerConfig;
use syncgate::rules::{Policy, RuleSet};
use syncgate::store::{Durability, MemoryStore, PostgresOptions, SqliteStore};

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
    #[arg(long, env = "SYNCGATE_AUTH", value_parser = PossibleValuesParser::new(["none", "token", "jwt", "introspect"]).try_map(|s| s.parse::<AuthMode>()))]
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
    /// Shape of the introspection answers: rfc7662 (only `active: true` admits) or user (`{userId, orgId, role}`) [default: rfc7662].
    #[arg(long, env = "SYNCGATE_INTROSPECT_SHAPE", value_parser = PossibleValuesParser::new(["rfc7662", "user"]).try_map(|s| s.parse::<IntrospectShape>()))]
    pub introspect_shape: Option<IntrospectShape>,
    /// Key sources bound to their issuers (`[[issuers]]` tables; --config file only).
    #[arg(skip)]
    pub issuers: Option<Vec<IssuerTable>>,
    /// Send the token form-encoded (RFC 7662) instead of as JSON.
    #[arg(long, env = "SYNCGATE_INTROSPECT_FORM", num_args = 0..=1, default_missing_value = "true")]
    pub introspect_form: Option<bool>,
    /// Deployment environment; `production` refuses development-only settings.
    #[arg(long, env = "SYNCGATE_ENV")]
    pub env: Option<String>,
    /// With --env production, start despite these refused settings (auth-none, store-memory,
    /// durability-none; comma-separated), each logged at start-up.
    #[arg(long, env = "SYNCGATE_ALLOW_UNSAFE_PRODUCTION", value_enum, value_delimiter = ',')]
    pub allow_unsafe_production: Option<Vec<UnsafeSetting>>,
    /// Read the token from this cookie at the upgrade (only from an --allowed-origins Origin).
    #[arg(long, env = "SYNCGATE_AUTH_COOKIE")]
    pub auth_cookie: Option<String>,
    /// Origins allowed to open WebSockets (comma-separated); others get HTTP 403.
    #[arg(long, env = "SYNCGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Serve the admin API (/admin/*) on this address only (e.g. 127.0.0.1:9090) instead of the public listener.
    #[arg(long, env = "SYNCGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token of the admin API (/admin/*), at least 32 bytes; without it the API is absent.
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
    /// Largest message accepted before authentication [default: 17408: an AUTH with a 16 KiB token].
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
    /// Where collections are kept: disk (SQLite in --data-dir), memory, or a
    /// postgres:// URL that several nodes may share [default: disk].
    #[arg(long, env = "SYNCGATE_STORE", hide_env_values = true)]
    pub store: Option<StoreKind>,
    /// The Postgres schema holding syncgate's tables (created and migrated) [default: syncgate].
    #[arg(long, env = "SYNCGATE_POSTGRES_SCHEMA")]
    pub postgres_schema: Option<String>,
    /// PEM CA certificates to trust for TLS to Postgres (`sslmode` in the URL), besides the bundled roots.
    #[arg(long, env = "SYNCGATE_POSTGRES_CA_FILE")]
    pub postgres_ca_file: Option<PathBuf>,
    /// nats:// URL connecting the nodes of a cluster (needs --store postgres://…).
    #[arg(long, env = "SYNCGATE_BACKPLANE", hide_env_values = true)]
    pub backplane: Option<String>,
    /// Subject prefix of this cluster on NATS [default: syncgate].
    #[arg(long, env = "SYNCGATE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// HMAC key signing every backplane message (required with --env production and a backplane).
    #[arg(long, env = "SYNCGATE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// NATS credentials file (NKey seed and user JWT).
    #[arg(long, env = "SYNCGATE_BACKPLANE_CREDS")]
    pub backplane_creds: Option<PathBuf>,
    /// This node's id in the cluster and in hybrid logical clocks [default: random].
    #[arg(long, env = "SYNCGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// Load balancers (CIDR, comma-separated) whose X-Forwarded-For names the client.
    #[arg(long, env = "SYNCGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// /readyz answers 503 while the backplane is down [default: false].
    #[arg(long, env = "SYNCGATE_READY_REQUIRES_BACKPLANE", num_args = 0..=1, default_missing_value = "true")]
    pub ready_requires_backplane: Option<bool>,
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
    /// Log line format: `text`, or `json` (one object per line, for log shippers) [default: text].
    #[arg(long, env = "SYNCGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// On SIGTERM/SIGINT, how long `/readyz` answers 503 (so load balancers stop
    /// sending clients) before connections are closed with 1001 [default: 0s].
    #[arg(long, env = "SYNCGATE_DRAIN_GRACE")]
    pub drain_grace: Option<Seconds>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A fully resolved `serve` invocation.
pub struct Serve {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the admin API listens, when not on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// The server configuration.
    pub config: ServerConfig,
    /// The log filter.
    pub log: String,
    /// The log line format.
    pub log_format: LogFormat,
    /// How long to drain before closing connections on a signal.
    pub drain_grace: std::time::Duration,
    /// Warnings to log once logging is up.
    pub warnings: Vec<String>,
    /// A Postgres store to open (asynchronously) before the node starts;
    /// `config.store` holds it from then on.
    pub postgres: Option<PostgresOptions>,
    /// A NATS backplane to connect to before the node starts.
    pub nats: Option<syncgate::backplane::NatsOptions>,
}

macro_rules! fill_from {
    ($target:ident, $source:ident; $($field:ident),* $(,)?) => {
        $( if $target.$field.is_none() { $target.$field = $source.$field.take(); } )*
    };
}

/// `jwt_secret` → `jwt-secret` in the file's keys, including those of array-of-table entries.
fn kebab_keys(table: toml::Table) -> toml::Table {
    table
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                toml::Value::Array(items) => toml::Value::Array(
                    items
                        .into_iter()
                        .map(|item| match item {
                            toml::Value::Table(t) => toml::Value::Table(kebab_keys(t)),
                            other => other,
                        })
                        .collect(),
                ),
                other => other,
            };
            (k.replace('_', "-"), v)
        })
        .collect()
}

impl ServeArgs {
    /// Fills every flag not given on the command line or in the environment from the file.
    fn fill_from_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).with_context(|| format!("--config {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("--config {}", path.display()))?;
        // Accept `jwt_secret` as well as `jwt-secret`, in the [[issuers]] tables too.
        let table = kebab_keys(table);
        let mut file = ServeArgs::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("--config {}: {}", path.display(), e.to_string().trim()))?;
        fill_from!(self, file;
            listen, auth, token, token_sub, token_roles, anonymous_roles, jwt_secret, jwt_public_key,
            jwt_audience, jwt_issuer, jwt_leeway, jwt_roles_claim, jwt_role_claim, auth_timeout,
            expiry_notice, ping_interval, idle_timeout, max_frame_bytes, max_preauth_frame_bytes, sync_page_bytes,
            max_connections, tls_cert, tls_key, rules, max_clock_drift, max_subscriptions, outbound_queue, log,
            jwks_url, jwks_cooldown, jwt_previous_secret, jwt_previous_secret_until, introspect_url,
            introspect_token, introspect_cache_ms, introspect_timeout, introspect_fail_open, introspect_form, idp_ca_file,
            env, allow_unsafe_production, auth_cookie, allowed_origins, admin_token, auth_failures_per_minute, store, postgres_schema, data_dir,
            durability, tombstone_retention, max_connections_per_ip, max_unauthenticated_per_ip, messages_per_second,
            message_burst, max_value_bytes, introspect_shape, issuers, admin_listen, log_format, drain_grace,
            postgres_ca_file, backplane, cluster_name, cluster_secret, backplane_creds, node_id, trusted_proxies,
            ready_requires_backplane);
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
        config.authenticator = self.auth_spec().build(&mut warnings)?;
        self.check_production(&mut warnings)?;
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
                config.policy = Policy::with_rules(rules);
                config.rules_file = Some(path.clone());
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
        if config.admin_token.as_ref().is_some_and(|t| t.len() < 32) {
            bail!("--admin-token must be at least 32 bytes (e.g. `openssl rand -hex 32`)");
        }
        if self.admin_listen.is_some() && config.admin_token.is_none() {
            bail!("--admin-listen needs --admin-token");
        }
        if let Some(n) = self.auth_failures_per_minute {
            config.auth_failures_per_minute = n;
        }
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(syncgate::tls::server_config(cert, key)?),
            (None, None) => None,
            (Some(_), None) => bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
        };
        // Opened last: every other flag is checked before the data directory is locked.
        let store = self.store.clone().unwrap_or(StoreKind::Disk);
        if self.postgres_schema.is_some() && !matches!(store, StoreKind::Postgres(_)) {
            bail!("--postgres-schema needs --store postgres://…");
        }
        // Full: fsync (SQLite) or synchronous_commit (Postgres) before OP_RESULT.
        let durability = match self.durability.unwrap_or(DurabilityArg::Full) {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::None => {
                if store != StoreKind::Memory {
                    warnings.push(
                        "--durability none: acknowledged writes can be lost in a crash (ephemeral use only)".into(),
                    );
                }
                Durability::None
            }
        };
        let production = self.auth_spec().production();
        let nats = super::cluster::resolve(&self, &store, production, &mut config, &mut warnings)?;
        let mut postgres = None;
        match store {
            StoreKind::Postgres(url) => {
                let schema = self.postgres_schema.clone().unwrap_or_else(|| "syncgate".into());
                postgres = Some(PostgresOptions { url, schema, durability, ca_file: self.postgres_ca_file.clone() });
            }
            StoreKind::Memory => {
                warnings.push("--store memory: collections are lost when the server stops".into());
                config.store = Arc::new(MemoryStore::new());
            }
            StoreKind::Disk => {
                let dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from("./syncgate-data"));
                let store = Arc::new(
                    SqliteStore::open(&dir, durability)
                        .map_err(|e| anyhow::anyhow!("--data-dir {}: {}", dir.display(), e.0))?,
                );
                // The same database keeps the collections and the revocations.
                config.revocation_store = store.clone();
                config.store = store;
            }
        }
        Ok(Serve {
            listen: self.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            admin_listen: self.admin_listen,
            config,
            log: self.log.unwrap_or_else(|| "info".into()),
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            drain_grace: self.drain_grace.map_or(std::time::Duration::ZERO, |Seconds(d)| d),
            warnings,
            postgres,
            nats,
        })
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
