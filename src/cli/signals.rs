//! The process signals `syncgate serve` reacts to: SIGINT or SIGTERM drain
//! and then shut down, and a second one exits at once; SIGHUP reloads the
//! rules on every node.

use std::sync::Arc;
use std::time::Duration;

use syncgate::node::Node;
use tokio_util::sync::CancellationToken;

/// Installed signal handlers (installed before serving, so no signal can hit the default action).
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// SIGINT or SIGTERM starts a graceful shutdown: `/readyz` turns 503 for
    /// the drain grace, then connections close with 1001 (`shutdown`). SIGHUP
    /// reloads the rules file on this node and every other, keeping the rules
    /// in force when the new file is bad.
    pub async fn drive(mut self, node: Arc<Node>, shutdown: CancellationToken, grace: Duration) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = self.terminate.recv() => break,
                _ = self.interrupt.recv() => break,
                _ = self.hangup.recv() => match node.reload_rules().await {
                    Ok(rules) => tracing::info!(rules, "rules reloaded"),
                    Err(syncgate::node::ReloadError::NoRulesFile) => tracing::info!("SIGHUP: no --rules file to reload"),
                    Err(e) => tracing::error!("rules not reloaded, keeping the previous ones: {e}"),
                },
            }
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!(
            drain_secs = grace.as_secs_f64(),
            "shutdown requested; draining (a second signal exits at once)"
        );
        node.drain();
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = self.terminate.recv() => self.exit_now(),
            _ = self.interrupt.recv() => self.exit_now(),
        }
        #[cfg(not(unix))]
        tokio::time::sleep(grace).await;
        shutdown.cancel();
        // Connections now close with 1001 within the shutdown grace; a signal meanwhile ends that wait.
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => self.exit_now(),
            _ = self.interrupt.recv() => self.exit_now(),
        }
    }

    /// A second SIGINT or SIGTERM: the operator wants out now, not after the drain.
    fn exit_now(&self) -> ! {
        tracing::warn!("second signal: exiting without waiting for connections");
        std::process::exit(130)
    }
}
