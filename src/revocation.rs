//! Revoked tokens: by token id (`jti`), or every token of a subject issued before a time.

use dashmap::DashMap;

use crate::auth::Identity;

/// One revocation, as the admin API records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One token id.
    Jti(String),
    /// Every token of `sub` issued before `issued_before` (Unix seconds).
    Subject {
        /// The subject.
        sub: String,
        /// Tokens issued before this are revoked.
        issued_before: u64,
    },
}

/// The revocation list consulted at authentication and refresh.
#[derive(Debug, Default)]
pub struct Revocations {
    /// Revoked `jti`s.
    jtis: DashMap<String, ()>,
    /// Subject → tokens issued before this Unix time are revoked.
    subjects: DashMap<String, u64>,
}

impl Revocations {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revokes one token id.
    pub fn revoke_jti(&self, jti: &str) {
        self.jtis.insert(jti.to_string(), ());
    }

    /// Revokes every token of `sub` issued before `issued_before` (a later call can only move it later).
    pub fn revoke_subject(&self, sub: &str, issued_before: u64) {
        let mut entry = self.subjects.entry(sub.to_string()).or_insert(issued_before);
        *entry = (*entry).max(issued_before);
    }

    /// Applies a revocation.
    pub fn apply(&self, revoked: &Revoked) {
        match revoked {
            Revoked::Jti(jti) => self.revoke_jti(jti),
            Revoked::Subject { sub, issued_before } => self.revoke_subject(sub, *issued_before),
        }
    }

    /// Whether a credential with these attributes is revoked. A token without
    /// `iat` cannot prove it is newer than a subject revocation, so it is revoked too.
    pub fn matches(&self, sub: &str, jti: Option<&str>, issued_at: Option<u64>) -> bool {
        if jti.is_some_and(|j| self.jtis.contains_key(j)) {
            return true;
        }
        self.subjects.get(sub).is_some_and(|before| issued_at.is_none_or(|iat| iat < *before))
    }

    /// Whether an identity is revoked.
    pub fn is_revoked(&self, identity: &Identity) -> bool {
        self.matches(&identity.sub, identity.jti.as_deref(), identity.issued_at)
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
        assert!(r.matches("alice", Some("t1"), Some(5000)));
        assert!(!r.matches("alice", Some("t2"), Some(5000)));
        assert!(r.matches("bob", None, Some(999)));
        assert!(!r.matches("bob", None, Some(1000)), "issued at or after the time is fine");
        assert!(r.matches("bob", None, None), "no iat: revoked");
        r.revoke_subject("bob", 10);
        assert!(r.matches("bob", None, Some(999)), "a revocation never moves earlier");
    }
}
