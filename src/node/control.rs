//! Control: disconnecting a subject, revoking tokens, reloading the rules.
//! Each acts on this node first, then tells the other nodes through the
//! backplane; a control message from another node is carried out here by
//! [`Node::apply_control`]. The admin API, `SIGHUP` and the backplane pump
//! all come through these methods.

use tracing::info;

use super::Node;
use crate::backplane::{BackplaneError, Control};
use crate::protocol::codes::close;
use crate::rules::{Policy, RuleSet, RulesError};
use crate::store::{Revoked, StoreError};

/// What a control action did here, and whether the other nodes were told.
#[derive(Debug)]
pub(crate) struct Acted {
    /// Connections this node closed.
    pub(crate) closed: usize,
    /// How many other nodes acknowledged carrying it out within a second
    /// (or why the backplane could not take it).
    pub(crate) propagated: Result<usize, BackplaneError>,
}

/// Why the rules were not reloaded (the rules in force stay).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The node was started without a rules file.
    #[error("no rules file to reload")]
    NoRulesFile,
    /// The file does not parse.
    #[error(transparent)]
    Rules(#[from] RulesError),
}

impl Node {
    /// Closes every connection of `sub` (4003), here and on every node.
    pub(crate) async fn disconnect(&self, sub: &str) -> Acted {
        let control = Control::Disconnect { sub: sub.to_string() };
        let closed = self.apply_control(&control);
        Acted { closed, propagated: self.tell_others(control).await }
    }

    /// Revokes tokens: recorded durably first (an answered revocation
    /// survives a restart), then enforced here and on every node.
    pub(crate) async fn revoke(&self, revoked: Revoked) -> Result<Acted, StoreError> {
        self.config.revocation_store.save(&revoked).await?;
        let control = Control::revoke(&revoked);
        let closed = self.apply_control(&control);
        Ok(Acted { closed, propagated: self.tell_others(control).await })
    }

    /// Loads the revocations saved so far (by any node sharing the store) and
    /// enforces the ones this node has not applied yet: at start, every few
    /// seconds, and when the backplane lost messages. Saved revocations only
    /// grow, in order, so the ones past `revocations_loaded` are the new ones.
    pub(crate) async fn reload_revocations(&self) -> Result<usize, StoreError> {
        let saved = self.config.revocation_store.load().await?;
        let _reloading = self.revocation_reload.lock().await;
        let applied = self.revocations_loaded.load(std::sync::atomic::Ordering::Acquire);
        let mut closed = 0;
        for revoked in saved.iter().skip(applied) {
            closed += self.apply_control(&Control::revoke(revoked));
        }
        self.revocations_loaded.store(saved.len().max(applied), std::sync::atomic::Ordering::Release);
        if saved.len() > applied {
            info!(new = saved.len() - applied, closed, "revocations saved by other nodes are enforced");
        }
        Ok(closed)
    }

    /// Reads the rules file again and puts it in force here, then tells the
    /// other nodes to read theirs (`SIGHUP`). A file that does not parse
    /// changes nothing. Returns the number of rules now in force.
    pub async fn reload_rules(&self) -> Result<usize, ReloadError> {
        let count = self.reload_rules_here()?;
        if let Err(e) = self.tell_others(Control::RulesChanged).await {
            tracing::warn!("the other nodes were not told to reload their rules: {e}");
        }
        Ok(count)
    }

    /// Carries out a control message on this node; returns how many connections it closed.
    pub(crate) fn apply_control(&self, control: &Control) -> usize {
        let revoked = match control {
            Control::RulesChanged => {
                match self.reload_rules_here() {
                    Ok(rules) => info!(rules, "rules reloaded (another node said they changed)"),
                    Err(ReloadError::NoRulesFile) => {
                        info!("another node changed the rules, but this one has no rules file")
                    }
                    Err(e) => tracing::error!("rules not reloaded, keeping the previous ones: {e}"),
                }
                return 0;
            }
            Control::Disconnect { sub } => {
                let _admission = self.admission.lock().unwrap_or_else(|e| e.into_inner());
                return self.registry.close_matching(
                    close::FORBIDDEN,
                    "disconnected by an administrator",
                    |s, _, _| s == sub,
                );
            }
            Control::RevokeJti { jti } => Revoked::Jti(jti.clone()),
            Control::RevokeSubject { sub, issued_before } => {
                Revoked::Subject { sub: sub.clone(), issued_before: *issued_before }
            }
        };
        // Applied and enforced under the admission lock: a connection between its
        // revocation check and its registration cannot slip through.
        let _admission = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        let revocations = &self.revocations;
        revocations.apply(&revoked);
        let now = crate::clock::unix_secs();
        self.registry
            .close_matching(close::FORBIDDEN, "token revoked", |sub, jti, iat| revocations.matches(sub, jti, iat, now))
    }

    fn reload_rules_here(&self) -> Result<usize, ReloadError> {
        let path = self.config.rules_file.as_ref().ok_or(ReloadError::NoRulesFile)?;
        let set = RuleSet::load(path)?;
        let count = set.len();
        self.set_policy(Policy::with_rules(set));
        Ok(count)
    }

    async fn tell_others(&self, control: Control) -> Result<usize, BackplaneError> {
        let told = self.hub.backplane().control(control).await;
        if told.is_err() {
            self.metrics.backplane_errors.inc();
        }
        told
    }
}

impl Control {
    /// The control message that spreads a revocation to the other nodes.
    pub(crate) fn revoke(revoked: &Revoked) -> Self {
        match revoked {
            Revoked::Jti(jti) => Control::RevokeJti { jti: jti.clone() },
            Revoked::Subject { sub, issued_before } => {
                Control::RevokeSubject { sub: sub.clone(), issued_before: *issued_before }
            }
        }
    }
}
