//! The `syncgate` binary: parse the command line, then call the library.

mod cli;

/// The binary's allocator. Under load glibc's malloc spent about a third of
/// the server's CPU consolidating and unlinking chunks (`perf`, see
/// `BENCHMARKS.md`); mimalloc is built for many small, short-lived
/// allocations on several threads. The library leaves this choice to embedders.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc's option enum (the same index in its v2 and v3 headers).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay` in mimalloc's option enum (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Two departures from mimalloc's defaults, each measured (`BENCHMARKS.md`);
/// the `MIMALLOC_*` environment variable of each still wins.
///
/// - Freed memory goes back to the OS after a second of disuse instead of
///   10 ms: purging at every burst cost fan-out a quarter of its throughput
///   and its p99.
/// - Arenas are committed as they are used, not eagerly: eager commit made an
///   idle connection cost 12.5 KiB of RSS instead of 9.5, for no measurable
///   gain in throughput. mimalloc reserves its first arena at the first
///   allocation, before `main`, so this default is set by a constructor that
///   runs before any allocation ([`EARLY_ALLOCATOR_DEFAULTS`]).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a documented option of the allocator in use; takes a plain integer.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

/// Runs before the Rust runtime allocates anything (ELF `.init_array`).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static EARLY_ALLOCATOR_DEFAULTS: extern "C" fn() = early_allocator_defaults;

/// Only sets a default: `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still
/// wins, and nothing here allocates.
#[cfg(target_os = "linux")]
extern "C" fn early_allocator_defaults() {
    // SAFETY: sets the default of a documented option of the allocator in use; takes a plain integer.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => {
            match syncgate_tools::devtoken::mint(args.secret.as_bytes(), &args.spec(), syncgate::clock::unix_secs()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot sign the token: {e}")),
            }
        }
        Command::Backup(args) => match syncgate::store::sqlite_backup(&args.data_dir, &args.out) {
            Ok(report) => {
                println!(
                    "backup {} written: {} records, consistent at cursor {}",
                    args.out.display(),
                    report.records,
                    report.cursor
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.0),
        },
        Command::Restore(args) => match syncgate::store::sqlite_restore(&args.data_dir, &args.from) {
            Ok(report) => {
                println!(
                    "restored {} records into {} (cursor {})",
                    report.records,
                    args.data_dir.display(),
                    report.cursor
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.0),
        },
        Command::Bench(bench) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            let report = runtime.block_on(async {
                match bench {
                    cli::BenchCommand::Ops(args) => syncgate_tools::loadgen::run_ops(args).await.map(|r| r.to_string()),
                    cli::BenchCommand::Fanout(args) => {
                        syncgate_tools::loadgen::fanout::run_fanout(args).await.map(|r| r.to_string())
                    }
                    cli::BenchCommand::Handshake(args) => {
                        syncgate_tools::loadgen::handshake::run_handshake(args).await.map(|r| r.to_string())
                    }
                    cli::BenchCommand::Idle(args) => {
                        syncgate_tools::loadgen::handshake::run_idle(args).await.map(|r| r.to_string())
                    }
                    cli::BenchCommand::ApiPublish(args) => {
                        syncgate_tools::loadgen::api::run_api_publish(args).await.map(|r| r.to_string())
                    }
                    cli::BenchCommand::Feed(args) => {
                        syncgate_tools::loadgen::api::run_feed(args).await.map(|r| r.to_string())
                    }
                    cli::BenchCommand::Reference(args) => syncgate_tools::loadgen::reference::serve_reference(args)
                        .await
                        .map(|()| String::new())
                        .map_err(|e| e.to_string()),
                }
            });
            match report {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Serve(args) => {
            let serve = match args.resolve() {
                Ok(serve) => serve,
                Err(e) => return fail(&format!("{e:#}")),
            };
            let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| serve.log.clone());
            let logs = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter));
            match serve.log_format {
                cli::LogFormat::Text => {
                    logs.with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).init()
                }
                // One JSON object per line; fields (never a token) stay fields.
                cli::LogFormat::Json => logs.json().init(),
            }
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

async fn serve_until_signalled(serve: cli::Serve) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(serve.listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", serve.listen)),
    };
    let admin = match serve.admin_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => return fail(&format!("cannot listen on --admin-listen {addr}: {e}")),
        },
    };
    // Handlers are installed before serving, so no signal can hit the default action.
    let shutdown = CancellationToken::new();
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let reload = Reload {
        rules: serve.rules.clone(),
        policy: serve.config.policy.clone(),
        backplane: serve.config.backplane.clone(),
    };
    let drain = (serve.config.draining.clone(), serve.drain_grace);
    tokio::spawn(signals.drive(shutdown.clone(), drain, reload));
    match syncgate::server::run_with_admin(listener, admin, serve.config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server failed: {e}")),
    }
}

/// The process signals syncgate reacts to.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
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
    /// the drain grace, then connections close with 1001. SIGHUP reloads the
    /// rules file, keeping the rules in force when the new file is bad, and
    /// tells the other nodes to reload theirs.
    async fn drive(
        mut self,
        shutdown: CancellationToken,
        (draining, grace): (CancellationToken, std::time::Duration),
        Reload { rules, policy, backplane }: Reload,
    ) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = self.terminate.recv() => break,
                _ = self.interrupt.recv() => break,
                _ = self.hangup.recv() => match &rules {
                    None => tracing::info!("SIGHUP: no --rules file to reload"),
                    Some(path) => match syncgate::rules::RuleSet::load(path) {
                        Ok(set) => {
                            tracing::info!(rules = set.len(), "rules reloaded");
                            policy.replace(syncgate::rules::Policy::with_rules(set));
                            if let Err(e) = backplane.control(syncgate::backplane::Control::RulesChanged).await {
                                tracing::warn!("the other nodes were not told to reload their rules: {e}");
                            }
                        }
                        Err(e) => tracing::error!("rules not reloaded, keeping the previous ones: {e}"),
                    },
                },
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (&mut self, rules, policy, backplane);
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!(drain_secs = grace.as_secs_f64(), "shutdown requested; draining");
        draining.cancel();
        tokio::time::sleep(grace).await;
        shutdown.cancel();
    }
}

/// What SIGHUP needs: the rules file, the live policy, and the way to tell other nodes.
struct Reload {
    rules: Option<std::path::PathBuf>,
    policy: syncgate::rules::PolicyHandle,
    backplane: std::sync::Arc<dyn syncgate::backplane::Backplane>,
}

fn fail(message: &str) -> ExitCode {
    // One line, whatever the underlying error printed.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("syncgate: error: {message}");
    ExitCode::from(2)
}
