//! The in-memory list of revoked tokens consulted at every authentication
//! ([`Revocations`]): by token id (`jti`), or every token of a subject issued
//! before a time. Where the list is kept across restarts is the store's
//! business ([`crate::store::RevocationStore`]).

use dashmap::DashMap;

use crate::auth::Identity;
use crate::store::Revoked;

/// How far in the future an `iat` may lie (clock skew) and still prove a
/// token newer than a subject revocation.
const FUTURE_IAT_SKEW_SECS: u64 = 60;

/// The revocation list consulted at authentication and refresh.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    /// Revoked `jti`s.
    jtis: DashMap<String, ()>,
    /// Subject → tokens issued before this Unix time are revoked.
    subjects: DashMap<String, u64>,
}

impl Revocations {
    /// An empty list.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Revokes one token id.
    pub(crate) fn revoke_jti(&self, jti: &str) {
        self.jtis.insert(jti.to_string(), ());
    }

    /// Revokes every token of `sub` issued before `issued_before` (a later call can only move it later).
    pub(crate) fn revoke_subject(&self, sub: &str, issued_before: u64) {
        let mut entry = self.subjects.entry(sub.to_string()).or_insert(issued_before);
        *entry = (*entry).max(issued_before);
    }

    /// Applies a revocation.
    pub(crate) fn apply(&self, revoked: &Revoked) {
        match revoked {
            Revoked::Jti(jti) => self.revoke_jti(jti),
            Revoked::Subject { sub, issued_before } => self.revoke_subject(sub, *issued_before),
        }
    }

    /// Whether a credential with these attributes is revoked as of `now` (Unix
    /// seconds). Under a subject revocation, a token must prove it was issued
    /// after it: one without `iat`, or whose `iat` lies in the future (beyond a
    /// minute of clock skew), cannot, so it is revoked too.
    pub(crate) fn matches(&self, sub: &str, jti: Option<&str>, issued_at: Option<u64>, now: u64) -> bool {
        if jti.is_some_and(|j| self.jtis.contains_key(j)) {
            return true;
        }
        self.subjects.get(sub).is_some_and(|before| {
            issued_at.is_none_or(|iat| iat < *before || iat > now.saturating_add(FUTURE_IAT_SKEW_SECS))
        })
    }

    /// Whether an identity is revoked as of `now` (Unix seconds).
    pub(crate) fn is_revoked(&self, identity: &Identity, now: u64) -> bool {
        self.matches(&identity.sub, identity.jti.as_deref(), identity.issued_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_jti_and_by_subject_and_time() {
        let r = Revocations::new();
        r.revoke_jti("t1");
        r.revoke_subject("bob", 1000);
        let now = 2000;
        assert!(r.matches("alice", Some("t1"), Some(5000), now));
        assert!(!r.matches("alice", Some("t2"), Some(1500), now));
        assert!(r.matches("bob", None, Some(999), now));
        assert!(!r.matches("bob", None, Some(1000), now), "issued at or after the time is fine");
        assert!(r.matches("bob", None, None, now), "no iat: revoked");
        assert!(!r.matches("bob", None, Some(now + 60), now), "a little clock skew is fine");
        assert!(r.matches("bob", None, Some(now + 61), now), "an iat in the future proves nothing");
        assert!(!r.matches("alice", None, Some(now + 3600), now), "only under a subject revocation");
        r.revoke_subject("bob", 10);
        assert!(r.matches("bob", None, Some(999), now), "a revocation never moves earlier");
    }
}
