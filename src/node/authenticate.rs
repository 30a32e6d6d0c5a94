//! Authentication, once for every surface: a WebSocket `AUTH` (or query
//! token), a bearer token on the HTTP API or the change feed.
//!
//! The pipeline: take a failed-authentication slot for the client's address
//! (none left: nothing is verified), verify within the verification timeout
//! (a timeout fails closed, as `introspection_unavailable`), give the slot
//! back when the token passed or the identity provider was at fault. The
//! revocation check comes after, under the admission lock
//! ([`Node::admit`]), so that an administrator's revocation either sees a
//! connection registered or is seen by it.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use tracing::debug;

use super::Node;
use crate::auth::{AuthError, Identity};
use crate::protocol::AuthFailCode;

/// Why a token did not yield an identity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AuthRefusal {
    /// The client's address has used up its failed authentications: nothing was verified.
    Blocked,
    /// The token was verified and refused (or could not be verified).
    Failed(AuthError),
}

/// Why a live session's or feed's token no longer holds ([`Node::revalidate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lapsed {
    /// Past its `exp`.
    Expired,
    /// Refused, revoked, or now for another subject; the reason says which.
    Inactive(&'static str),
}

impl Node {
    /// Verifies `token` for a client at `ip` (see the module doc). The future
    /// owns what it needs, so a caller may poll it once inline and spawn it
    /// only if it must wait (a key fetch, introspection).
    pub(crate) fn authenticate(
        self: &Arc<Self>,
        token: String,
        ip: IpAddr,
    ) -> impl Future<Output = Result<Identity, AuthRefusal>> + Send + 'static {
        let node = self.clone();
        async move {
            if !node.auth_failures.try_reserve(ip) {
                return Err(AuthRefusal::Blocked);
            }
            let started = std::time::Instant::now();
            let verifier = node.config.authenticator.verify(&token, node.config.clock.now_secs());
            let result = match tokio::time::timeout(node.config.timeouts.verify, verifier).await {
                Ok(result) => result,
                Err(_) => {
                    debug!("token verification timed out");
                    Err(AuthError::new(AuthFailCode::IntrospectionUnavailable, "token verification timed out"))
                }
            };
            node.metrics.verification_seconds.observe(started.elapsed().as_secs_f64());
            // A success, or an identity provider outage, is not the client's failure.
            if result.is_ok() || result.as_ref().is_err_and(|e| e.code == AuthFailCode::IntrospectionUnavailable) {
                node.auth_failures.refund(ip);
            }
            result.map_err(AuthRefusal::Failed)
        }
    }

    /// Checks a verified identity against the revocations and hands the
    /// outcome to `admit`, all under the admission lock: a connection
    /// registers itself inside `admit`, so a revocation applied concurrently
    /// either closes it or is seen here.
    pub(crate) fn admit<T>(
        &self,
        result: Result<Identity, AuthError>,
        admit: impl FnOnce(Result<Identity, AuthError>) -> T,
    ) -> T {
        let now = self.config.clock.now_secs();
        let _admission = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        admit(result.and_then(|identity| {
            if self.revocations.is_revoked(&identity, now) {
                Err(AuthError::new(AuthFailCode::Forbidden, "the token has been revoked"))
            } else {
                Ok(identity)
            }
        }))
    }

    /// Checks a live token again (introspection mode), for a session or a
    /// feed of subject `sub`: `Ok` while it holds. An unreachable identity
    /// provider, or an address out of failure slots, ends nothing: a live
    /// session is not dropped on a provider's blip.
    pub(crate) async fn revalidate(self: &Arc<Self>, token: String, ip: IpAddr, sub: &str) -> Result<(), Lapsed> {
        let result = match self.authenticate(token, ip).await {
            Err(AuthRefusal::Blocked) => return Ok(()),
            Err(AuthRefusal::Failed(e)) if e.code == AuthFailCode::IntrospectionUnavailable => return Ok(()),
            Err(AuthRefusal::Failed(e)) => Err(e),
            Ok(identity) => Ok(identity),
        };
        match self.admit(result, |admitted| admitted) {
            Ok(identity) if identity.sub == sub => Ok(()),
            Ok(_) => Err(Lapsed::Inactive("the token is now for another subject")),
            Err(e) if e.code == AuthFailCode::TokenExpired => Err(Lapsed::Expired),
            Err(_) => Err(Lapsed::Inactive("the token is no longer active")),
        }
    }
}
