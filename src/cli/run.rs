//! Carrying out a parsed command line: each subcommand calls the library
//! (or the tools crate) and turns its outcome into an exit code and, on
//! failure, one line on stderr.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::signals::Signals;
use super::{
    BackupArgs, BenchCommand, Cli, Command, DocsCommand, LogFormat, NewEpochArgs, RestoreArgs, Serve, StoreKind,
};

/// What `backup` and `restore` say of a Postgres store.
const POSTGRES_BACKUP: &str = "a Postgres store is backed up with pg_dump and restored with pg_restore; after a restore, run `syncgate new-epoch --store postgres://…` and restart the nodes";

/// `syncgate new-epoch`: after `pg_restore`, every cursor issued before must reset.
fn new_epoch(args: NewEpochArgs) -> ExitCode {
    let StoreKind::Postgres(url) = args.store else {
        return fail(
            "new-epoch is for a Postgres store (--store postgres://…); `syncgate restore` draws the epoch of a disk store",
        );
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = syncgate::store::PostgresOptions {
        url,
        schema: args.postgres_schema,
        durability: syncgate::store::Durability::Full,
        ca_file: args.postgres_ca_file,
    };
    match runtime.block_on(syncgate::store::postgres_new_epoch(options)) {
        Ok(epoch) => {
            println!("new epoch {epoch:x}: restart every node on this store; clients resync from scratch");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("--store: {}", e.0)),
    }
}

/// Runs one subcommand to its end.
pub fn run(cli: Cli) -> ExitCode {
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
        Command::Backup(BackupArgs { store: Some(StoreKind::Postgres(_)), .. }) => fail(POSTGRES_BACKUP),
        Command::Restore(RestoreArgs { store: Some(StoreKind::Postgres(_)), .. }) => fail(POSTGRES_BACKUP),
        Command::NewEpoch(args) => new_epoch(args),
        Command::Connect(args) => super::connect::run(*args),
        Command::Docs(DocsCommand::Flags) => {
            print!("{}", super::docs::serve_flag_table());
            ExitCode::SUCCESS
        }
        Command::Backup(args) => match syncgate::store::sqlite_backup(&args.data_dir, &args.out) {
            Ok(report) => {
                let (out, records, cursor) = (args.out.display(), report.records, report.cursor);
                println!("backup {out} written: {records} records, consistent at cursor {cursor}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.0),
        },
        Command::Restore(args) => match syncgate::store::sqlite_restore(&args.data_dir, &args.from) {
            Ok(report) => {
                let (records, dir, cursor) = (report.records, args.data_dir.display(), report.cursor);
                println!("restored {records} records into {dir} (cursor {cursor})");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.0),
        },
        Command::Bench(bench) => match runtime() {
            Err(code) => code,
            Ok(runtime) => match runtime.block_on(run_bench(bench)) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            },
        },
        Command::Serve(args) => {
            let serve = match args.resolve() {
                Ok(serve) => serve,
                Err(e) => return fail(&format!("{e:#}")),
            };
            init_logs(&serve);
            match serve_runtime() {
                Err(code) => code,
                Ok(runtime) => {
                    runtime.spawn(super::allocator::wake_workers());
                    runtime.block_on(serve_until_signalled(serve))
                }
            }
        }
    }
}

async fn run_bench(bench: BenchCommand) -> Result<String, String> {
    use syncgate_tools::loadgen;
    match bench {
        BenchCommand::Ops(args) => loadgen::run_ops(args).await.map(|r| r.to_string()),
        BenchCommand::Fanout(args) => loadgen::fanout::run_fanout(args).await.map(|r| r.to_string()),
        BenchCommand::Handshake(args) => loadgen::handshake::run_handshake(args).await.map(|r| r.to_string()),
        BenchCommand::Idle(args) => loadgen::idle::run_idle(args).await.map(|r| r.to_string()),
        BenchCommand::ApiPublish(args) => loadgen::api::run_api_publish(args).await.map(|r| r.to_string()),
        BenchCommand::Feed(args) => loadgen::api::run_feed(args).await.map(|r| r.to_string()),
        BenchCommand::Reference(args) => {
            loadgen::reference::serve_reference(args).await.map(|()| String::new()).map_err(|e| e.to_string())
        }
    }
}

fn init_logs(serve: &Serve) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| serve.log.clone());
    let logs = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter));
    match serve.log_format {
        LogFormat::Text => {
            logs.with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).init()
        }
        // One JSON object per line; fields (never a token) stay fields.
        LogFormat::Json => logs.json().init(),
    }
    for warning in &serve.warnings {
        tracing::warn!("{warning}");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    build_runtime(&mut tokio::runtime::Builder::new_multi_thread())
}

/// The server's runtime: its workers give freed memory back to the OS when
/// they go idle (see [`super::allocator::collect_when_parking`]).
fn serve_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    build_runtime(tokio::runtime::Builder::new_multi_thread().on_thread_park(super::allocator::collect_when_parking))
}

fn build_runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| fail(&format!("cannot start the runtime: {e}")))
}

async fn serve_until_signalled(serve: Serve) -> ExitCode {
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
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    let mut config = serve.config;
    if let Some(options) = serve.postgres {
        match syncgate::store::PostgresStore::open(options).await {
            Ok(store) => {
                // The same database keeps the collections and the revocations.
                let store = std::sync::Arc::new(store);
                config.revocation_store = store.clone();
                config.store = store;
            }
            Err(e) => return fail(&format!("--store: {}", e.0)),
        }
    }
    if let Some(options) = serve.nats {
        match syncgate::backplane::NatsBackplane::connect(options).await {
            Ok(backplane) => config.backplane = std::sync::Arc::new(backplane),
            Err(e) => return fail(&format!("--backplane: {}", e.0)),
        }
    }
    let shutdown = CancellationToken::new();
    let node = match syncgate::node::Node::open(config, shutdown.clone()).await {
        Ok(node) => node,
        Err(e) => return fail(&format!("cannot open the node: {e}")),
    };
    tokio::spawn(signals.drive(node.clone(), shutdown, serve.drain_grace));
    match syncgate::server::serve(listener, admin, node).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server failed: {e}")),
    }
}

/// One line on stderr, whatever the underlying error printed; exit code 2.
pub(super) fn fail(message: &str) -> ExitCode {
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("syncgate: error: {message}");
    ExitCode::from(2)
}
