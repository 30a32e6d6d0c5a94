//! The policy in force: the rules file (or none) and the live handle that
//! connections watch, so a reload reaches every session.

use super::{Access, RuleSet};
use crate::auth::Identity;

/// The authorization policy in force: a rule set, or allow-all when no rules file is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Option<RuleSet>,
}

impl Policy {
    /// SHA-256 (hex) of the rules in force, as nodes announce it: two nodes
    /// enforcing the same rules file show the same digest, drift shows.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let bytes = Sha256::digest(format!("{self:?}").as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Everything is allowed to every authenticated identity.
    pub fn allow_all() -> Self {
        Self { rules: None }
    }

    /// Only what `rules` allow.
    pub fn with_rules(rules: RuleSet) -> Self {
        Self { rules: Some(rules) }
    }

    /// Whether a rules file is in force.
    pub fn has_rules(&self) -> bool {
        self.rules.is_some()
    }

    /// What `identity` may do under this policy.
    pub fn access_for(&self, identity: &Identity) -> Access {
        match &self.rules {
            None => Access::allow_all(),
            Some(rules) => rules.specialise(identity),
        }
    }
}

/// A live, replaceable policy: connections watch it and re-evaluate their
/// subscriptions when it changes (`SIGHUP` reload).
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    tx: std::sync::Arc<tokio::sync::watch::Sender<std::sync::Arc<Policy>>>,
}

impl PolicyHandle {
    /// A handle holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { tx: std::sync::Arc::new(tokio::sync::watch::Sender::new(std::sync::Arc::new(policy))) }
    }

    /// The policy in force.
    pub fn current(&self) -> std::sync::Arc<Policy> {
        self.tx.borrow().clone()
    }

    /// Puts `policy` in force for every connection.
    pub fn replace(&self, policy: Policy) {
        self.tx.send_replace(std::sync::Arc::new(policy));
    }

    /// A receiver that sees every replacement.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<std::sync::Arc<Policy>> {
        self.tx.subscribe()
    }
}

impl Default for PolicyHandle {
    fn default() -> Self {
        Self::new(Policy::allow_all())
    }
}
