//! Assembling an authenticator from settings: what `syncgate serve`'s auth
//! flags and `[[issuers]]` tables describe, and what an embedding app can
//! fill in itself ([`AuthSpec`]). The checks are the server's: conflicting
//! settings, unpinned JWKS in production, fail-open refused in production.
//! Error messages name the `syncgate serve` flags the fields come from.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::{
    AnonymousAuthenticator, Identity, IntrospectSettings, IntrospectShape, Introspector, IssuerSettings, JwksPolicy,
    JwksSource, JwtKey, JwtSettings, JwtVerifier, SharedAuthenticator, StaticTokenVerifier,
};
use crate::http_client::{HttpClient, check_url};

/// How connections authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token: the network is the boundary; everyone is `anonymous`.
    None,
    /// One static shared token.
    Token,
    /// Short-lived JWTs (a secret, a PEM public key, JWKS, or `[[issuers]]`).
    Jwt,
    /// Token introspection against the operator's API.
    Introspect,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "token" => Ok(Self::Token),
            "jwt" => Ok(Self::Jwt),
            "introspect" => Ok(Self::Introspect),
            other => Err(format!("{other:?} is not an auth mode (none, token, jwt, introspect)")),
        }
    }
}

/// The settings an authenticator is assembled from; every field is optional,
/// as on the command line (each is named after its `syncgate serve` flag).
#[derive(Clone, Default)]
pub struct AuthSpec {
    /// The mode; inferred from the keys given when absent.
    pub auth: Option<AuthMode>,
    /// The static token (mode token).
    pub token: Option<String>,
    /// `sub` of static-token holders.
    pub token_sub: Option<String>,
    /// Roles of static-token holders.
    pub token_roles: Option<Vec<String>>,
    /// Roles of anonymous connections (mode none).
    pub anonymous_roles: Option<Vec<String>>,
    /// HMAC secret.
    pub jwt_secret: Option<String>,
    /// The previous HMAC secret, during a rotation.
    pub jwt_previous_secret: Option<String>,
    /// Until when (Unix seconds) the previous secret verifies.
    pub jwt_previous_secret_until: Option<u64>,
    /// PEM public key file.
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS endpoints.
    pub jwks_url: Option<Vec<String>>,
    /// Shortest pause between JWKS refreshes caused by unknown `kid`s.
    pub jwks_cooldown: Option<Duration>,
    /// Issuers bound to their keys (the `[[issuers]]` tables).
    pub issuers: Option<Vec<IssuerTable>>,
    /// Required `aud` values.
    pub jwt_audience: Option<Vec<String>>,
    /// Required `iss` values.
    pub jwt_issuer: Option<Vec<String>>,
    /// Clock leeway for `exp`/`nbf`, seconds.
    pub jwt_leeway: Option<u64>,
    /// Claim holding the roles array.
    pub jwt_roles_claim: Option<String>,
    /// Claim holding a single role.
    pub jwt_role_claim: Option<String>,
    /// Introspection endpoint.
    pub introspect_url: Option<String>,
    /// Bearer token for the introspection endpoint.
    pub introspect_token: Option<String>,
    /// Cache lifetime of introspection answers, ms.
    pub introspect_cache_ms: Option<u64>,
    /// Timeout of identity-provider requests.
    pub introspect_timeout: Option<Duration>,
    /// Accept unverified claims while introspection is down (development only).
    pub introspect_fail_open: Option<bool>,
    /// The answer shape of the introspection endpoint.
    pub introspect_shape: Option<IntrospectShape>,
    /// Send the token form-encoded instead of as JSON.
    pub introspect_form: Option<bool>,
    /// Extra CA certificates (PEM) for identity providers.
    pub idp_ca_file: Option<PathBuf>,
    /// The deployment environment; `production` (any case) refuses unsafe settings.
    pub env: Option<String>,
}

impl AuthSpec {
    /// The authenticator these settings describe; non-fatal concerns are pushed to `warnings`.
    pub fn build(&self, warnings: &mut Vec<String>) -> anyhow::Result<SharedAuthenticator> {
        let has_jwt_key = self.has_jwt_key();
        match self.mode() {
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
                let verifier =
                    if self.issuers.is_some() { self.bound_verifier(warnings)? } else { self.flat_verifier(warnings)? };
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
                if fail_open && self.production() {
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
                    shape: self.introspect_shape.unwrap_or(IntrospectShape::Rfc7662),
                    fail_open,
                    leeway_secs: self.jwt_leeway.unwrap_or(30),
                };
                Ok(Arc::new(Introspector::new(settings, self.http_client()?)))
            }
        }
    }

    /// One key source from the flat flags (an HMAC secret with its rotation, a PEM key, or one JWKS).
    fn flat_verifier(&self, warnings: &mut Vec<String>) -> anyhow::Result<JwtVerifier> {
        let mut keys = Vec::new();
        if let Some(secret) = &self.jwt_secret {
            keys.push(secret_key("--jwt-secret", secret, warnings));
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
            keys.push(pem_key("--jwt-public-key", path)?);
        }
        for url in self.jwks_url.iter().flatten() {
            keys.push(self.jwks_key("--jwks-url", url)?);
        }
        if keys.is_empty() {
            bail!("--auth jwt needs --jwt-secret, --jwt-public-key or --jwks-url");
        }
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            bail!("--jwt-secret and --jwt-public-key are mutually exclusive");
        }
        let audience = self.jwt_audience.clone().unwrap_or_default();
        let issuer = self.jwt_issuer.clone().unwrap_or_default();
        if self.jwks_url.is_some() && (audience.is_empty() || issuer.is_empty()) {
            self.jwks_unpinned("--jwks-url without --jwt-audience and --jwt-issuer", warnings)?;
        }
        let mut settings = JwtSettings { keys, audience, issuer, ..self.base_jwt_settings() };
        settings.issuers = Vec::new();
        JwtVerifier::new(settings).map_err(|e| match &self.jwt_public_key {
            Some(path) => anyhow::anyhow!("--jwt-public-key {}: {e}", path.display()),
            None if self.jwks_url.is_some() => anyhow::anyhow!("--jwks-url: {e}"),
            None => anyhow::anyhow!("--jwt-secret: {e}"),
        })
    }

    /// Key sources bound to their issuers by the `[[issuers]]` tables of the --config file.
    fn bound_verifier(&self, warnings: &mut Vec<String>) -> anyhow::Result<JwtVerifier> {
        if self.jwt_secret.is_some()
            || self.jwt_public_key.is_some()
            || self.jwks_url.is_some()
            || self.jwt_previous_secret.is_some()
            || self.jwt_audience.is_some()
            || self.jwt_issuer.is_some()
        {
            bail!(
                "[[issuers]] tables are given: put every key, audience and issuer in a table, not in the \
                 --jwt-secret, --jwt-public-key, --jwks-url, --jwt-previous-secret, --jwt-audience or --jwt-issuer flags"
            );
        }
        let mut bound = Vec::new();
        for table in self.issuers.iter().flatten() {
            let what = format!("[[issuers]] {:?}", table.issuer);
            let mut keys = Vec::new();
            if let Some(secret) = &table.jwt_secret {
                keys.push(secret_key(&what, secret, warnings));
            }
            if let Some(path) = &table.jwt_public_key {
                keys.push(pem_key(&what, path)?);
            }
            if let Some(url) = &table.jwks_url {
                keys.push(self.jwks_key(&what, url)?);
            }
            if keys.is_empty() {
                bail!("{what} needs jwks-url, jwt-public-key or jwt-secret");
            }
            let audience = table.audience.clone().map(OneOrMany::into_vec).unwrap_or_default();
            if table.jwks_url.is_some() && audience.is_empty() {
                self.jwks_unpinned(&format!("{what} uses a JWKS without an audience"), warnings)?;
            }
            if let Some(name) = &table.name
                && (syncgate_proto::names::valid_name(name).is_err() || name.contains('/'))
            {
                bail!("{what}: name {name:?} must be one path segment (it stands for {{iss}} in rules)");
            }
            bound.push(IssuerSettings {
                audience,
                roles_claim: table.roles_claim.clone(),
                role_claim: table.role_claim.clone(),
                name: table.name.clone(),
                default: table.default,
                roles: table.roles.clone(),
                ..IssuerSettings::new(table.issuer.clone(), keys)
            });
        }
        if bound.is_empty() {
            bail!("the --config file has an empty [[issuers]] list");
        }
        let settings = JwtSettings { issuers: bound, keys: Vec::new(), ..self.base_jwt_settings() };
        JwtVerifier::new(settings).map_err(|e| anyhow::anyhow!("--config: {e}"))
    }

    /// Leeway and role claims shared by every binding.
    fn base_jwt_settings(&self) -> JwtSettings {
        let mut settings = JwtSettings::new(JwtKey::Secret(Vec::new()));
        settings.leeway_secs = self.jwt_leeway.unwrap_or(30);
        if let Some(claim) = &self.jwt_roles_claim {
            settings.roles_claim = claim.clone();
        }
        if let Some(claim) = &self.jwt_role_claim {
            settings.role_claim = claim.clone();
        }
        settings
    }

    fn jwks_key(&self, what: &str, url: &str) -> anyhow::Result<JwtKey> {
        check_url(url).map_err(|e| anyhow::anyhow!("{what}: jwks-url {e}"))?;
        let mut policy = JwksPolicy::default();
        if let Some(d) = self.jwks_cooldown {
            policy.unknown_kid_cooldown = d;
        }
        Ok(JwtKey::Jwks(JwksSource::new(url.to_string(), self.http_client()?, policy)))
    }

    /// A JWKS accepts tokens any client of the provider can get: without an
    /// audience (and an issuer) they are not tokens for this server. Refused in production.
    fn jwks_unpinned(&self, what: &str, warnings: &mut Vec<String>) -> anyhow::Result<()> {
        if self.production() {
            bail!("{what} is refused with --env production (tokens meant for other services would be accepted)");
        }
        warnings.push(format!("{what}: tokens the provider issued for other services are accepted too"));
        Ok(())
    }

    /// The auth mode in effect: `--auth`, else `jwt` when a JWT key source is
    /// given, `token` when `--token` is, else `none`.
    pub fn mode(&self) -> AuthMode {
        self.auth.unwrap_or(if self.has_jwt_key() {
            AuthMode::Jwt
        } else if self.token.is_some() {
            AuthMode::Token
        } else {
            AuthMode::None
        })
    }

    fn has_jwt_key(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some() || self.jwks_url.is_some() || self.issuers.is_some()
    }

    /// Whether `--env` names production (in any case).
    pub fn production(&self) -> bool {
        self.env.as_deref().is_some_and(|env| env.trim().eq_ignore_ascii_case("production"))
    }

    fn http_client(&self) -> anyhow::Result<HttpClient> {
        let timeout = self.introspect_timeout.unwrap_or(Duration::from_secs(5));
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

fn secret_key(what: &str, secret: &str, warnings: &mut Vec<String>) -> JwtKey {
    if secret.len() < 32 {
        warnings
            .push(format!("{what}: the JWT secret is shorter than 32 bytes; use a longer random secret in production"));
    }
    JwtKey::Secret(secret.as_bytes().to_vec())
}

fn pem_key(what: &str, path: &std::path::Path) -> anyhow::Result<JwtKey> {
    let pem = std::fs::read(path).with_context(|| format!("{what}: {}", path.display()))?;
    Ok(JwtKey::PublicKeyPem(pem))
}

/// A string or a list of strings in the --config file.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// One `[[issuers]]` table of the --config file: an issuer and the only keys
/// (and audience, role claims) its tokens are checked with.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IssuerTable {
    /// The exact `iss` of the provider's tokens.
    pub issuer: String,
    /// Its JWKS endpoint.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Its PEM public key file.
    #[serde(default)]
    pub jwt_public_key: Option<PathBuf>,
    /// Its HMAC secret.
    #[serde(default)]
    pub jwt_secret: Option<String>,
    /// Required `aud` (a string or a list).
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// Claim holding the roles array.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Claim holding a single role.
    #[serde(default)]
    pub role_claim: Option<String>,
    /// What `{iss}` stands for in rules (one path segment); the issuer when
    /// absent. Also the prefix of this issuer's subjects (`<name>:<sub>`)
    /// unless the table is the default.
    #[serde(default)]
    pub name: Option<String>,
    /// This issuer's subjects keep their `sub` unprefixed (at most one table).
    #[serde(default)]
    pub default: bool,
    /// The roles this issuer may grant (others in its tokens are dropped); absent: any.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

impl std::fmt::Debug for IssuerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerTable")
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
