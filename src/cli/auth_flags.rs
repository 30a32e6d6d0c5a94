//! The `serve` flags that describe authentication, handed to the library's
//! [`AuthSpec`] (which assembles and checks the authenticator).

use syncgate::auth::AuthSpec;

use super::Seconds;
use super::serve::ServeArgs;

impl ServeArgs {
    /// The authentication settings among the flags.
    pub(super) fn auth_spec(&self) -> AuthSpec {
        AuthSpec {
            auth: self.auth,
            token: self.token.clone(),
            token_sub: self.token_sub.clone(),
            token_roles: self.token_roles.clone(),
            anonymous_roles: self.anonymous_roles.clone(),
            jwt_secret: self.jwt_secret.clone(),
            jwt_previous_secret: self.jwt_previous_secret.clone(),
            jwt_previous_secret_until: self.jwt_previous_secret_until,
            jwt_public_key: self.jwt_public_key.clone(),
            jwks_url: self.jwks_url.clone(),
            jwks_cooldown: self.jwks_cooldown.map(|Seconds(d)| d),
            issuers: self.issuers.clone(),
            jwt_audience: self.jwt_audience.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_leeway: self.jwt_leeway,
            jwt_roles_claim: self.jwt_roles_claim.clone(),
            jwt_role_claim: self.jwt_role_claim.clone(),
            introspect_url: self.introspect_url.clone(),
            introspect_token: self.introspect_token.clone(),
            introspect_cache_ms: self.introspect_cache_ms,
            introspect_timeout: self.introspect_timeout.map(|Seconds(d)| d),
            introspect_fail_open: self.introspect_fail_open,
            introspect_shape: self.introspect_shape,
            introspect_form: self.introspect_form,
            idp_ca_file: self.idp_ca_file.clone(),
            env: self.env.clone(),
        }
    }
}
