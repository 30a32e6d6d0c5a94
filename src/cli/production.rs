//! What `--env production` refuses, and the explicit way past a refusal.
//!
//! A setting that is right for a laptop and wrong for a service (anyone may
//! connect and do anything, collections that vanish at a restart, writes
//! acknowledged before they are on disk) used to start with a warning that
//! scrolls away. In production it stops start-up with one line naming the
//! flag to change, unless `--allow-unsafe-production` names it: then the
//! server starts and says so in its first log lines, so the exception is on
//! record. (Two more refusals live with the authenticator they concern:
//! `--introspect-fail-open`, and JWKS without `--jwt-audience`/`--jwt-issuer`;
//! `--auth-cookie` without `--allowed-origins` is refused in every environment.)

use anyhow::bail;
use clap::ValueEnum;
use serde::Deserialize;
use syncgate::auth::AuthMode;

use super::serve::ServeArgs;
use super::{DurabilityArg, StoreKind};

/// A setting `--env production` refuses unless `--allow-unsafe-production` names it
/// (by its name, or by the flag alone: `auth`, `store`, `durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnsafeSetting {
    /// `--auth none` without `--rules`: every connection may read and write everything.
    #[value(alias = "auth")]
    #[serde(alias = "auth")]
    AuthNone,
    /// `--store memory`: collections are lost at every restart.
    #[value(alias = "store")]
    #[serde(alias = "store")]
    StoreMemory,
    /// `--durability none`: acknowledged writes can be lost in a crash.
    #[value(alias = "durability")]
    #[serde(alias = "durability")]
    DurabilityNone,
}

impl UnsafeSetting {
    /// The name `--allow-unsafe-production` takes.
    fn name(self) -> &'static str {
        match self {
            Self::AuthNone => "auth-none",
            Self::StoreMemory => "store-memory",
            Self::DurabilityNone => "durability-none",
        }
    }

    /// What the refusal says: the setting, the harm, the flag to change.
    fn refusal(self) -> &'static str {
        match self {
            Self::AuthNone => {
                "--auth none without --rules lets every connection read and write everything: set --auth token|jwt|introspect or give --rules"
            }
            Self::StoreMemory => {
                "--store memory loses every collection at a restart: use --store disk or --store postgres://…"
            }
            Self::DurabilityNone => "--durability none acknowledges writes a crash can lose: use --durability full",
        }
    }
}

impl ServeArgs {
    /// The unsafe settings among the flags, in a fixed order.
    fn unsafe_settings(&self) -> Vec<UnsafeSetting> {
        let mut found = Vec::new();
        if self.auth_spec().mode() == AuthMode::None && self.rules.is_none() {
            found.push(UnsafeSetting::AuthNone);
        }
        if self.store == Some(StoreKind::Memory) {
            found.push(UnsafeSetting::StoreMemory);
        }
        if self.durability == Some(DurabilityArg::None) {
            found.push(UnsafeSetting::DurabilityNone);
        }
        found
    }

    /// Refuses unsafe settings with `--env production`, in one line naming
    /// every flag to change; those `--allow-unsafe-production` names pass,
    /// each with a warning for the start-up log.
    pub(super) fn check_production(&self, warnings: &mut Vec<String>) -> anyhow::Result<()> {
        let allowed = self.allow_unsafe_production.clone().unwrap_or_default();
        if !self.auth_spec().production() {
            if !allowed.is_empty() {
                warnings.push("--allow-unsafe-production has no effect without --env production".into());
            }
            return Ok(());
        }
        let mut refused = Vec::new();
        for setting in self.unsafe_settings() {
            if allowed.contains(&setting) {
                warnings.push(format!(
                    "--env production with {} allowed by --allow-unsafe-production: {}",
                    setting.name(),
                    setting.refusal()
                ));
            } else {
                refused.push(setting);
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        let reasons: Vec<&str> = refused.iter().map(|s| s.refusal()).collect();
        let names: Vec<&str> = refused.iter().map(|s| s.name()).collect();
        bail!(
            "--env production refuses: {} (or, for a known reason, --allow-unsafe-production {})",
            reasons.join("; "),
            names.join(",")
        )
    }
}
