//! The `syncgate` binary: parse the command line, then call the library.

use std::process::ExitCode;

use clap::Parser;
use syncgate::cli::{Cli, Command};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => {
            match syncgate::devtoken::mint(args.secret.as_bytes(), &args.spec(), syncgate::clock::unix_secs()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot sign the token: {e}")),
            }
        }
        Command::Serve(args) => {
            let serve = match args.resolve() {
                Ok(serve) => serve,
                Err(e) => return fail(&format!("{e:#}")),
            };
            let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| serve.log.clone());
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .init();
            for warning in &serve.warnings {
                tracing::warn!("{warning}");
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            runtime.block_on(serve_until_signalled(serve))
        }
    }
}

async fn serve_until_signalled(serve: syncgate::cli::Serve) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(serve.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", serve.listen)),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    if let Some(path) = serve.rules.clone() {
        tokio::spawn(reload_rules_on_hangup(path, serve.config.policy.clone()));
    }
    match syncgate::run(listener, serve.config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server failed: {e}")),
    }
}

/// SIGINT or SIGTERM starts a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

/// SIGHUP reloads the rules file; a bad file keeps the rules in force.
async fn reload_rules_on_hangup(path: std::path::PathBuf, policy: syncgate::rules::PolicyHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; rules will not reload");
            return;
        };
        while hangup.recv().await.is_some() {
            match syncgate::rules::RuleSet::load(&path) {
                Ok(rules) => {
                    tracing::info!(rules = rules.len(), "rules reloaded");
                    policy.replace(syncgate::rules::Policy::with_rules(rules));
                }
                Err(e) => tracing::error!("rules not reloaded, keeping the previous ones: {e}"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, policy);
}

fn fail(message: &str) -> ExitCode {
    // One line, whatever the underlying error printed.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("syncgate: error: {message}");
    ExitCode::from(2)
}
