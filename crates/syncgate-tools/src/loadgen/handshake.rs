//! `syncgate bench handshake`.
//!
//! `handshake`: N connections, C at a time, each doing TCP connect and
//! upgrade, `AUTH_REQUIRED`, `AUTH`, `AUTH_ACK`, close, with per-phase
//! percentiles; `--reference` also runs the bare-transport reference server
//! ([`super::reference`]) as a child process and measures it in the same run,
//! so the ratio to the transport's ceiling comes from one invocation.
//!
//! `idle` ([`super::idle`]) shares the flags and the connection helpers.
//! Both spread their sources over several loopback addresses (`127.0.0.x`)
//! so per-IP limits and ephemeral ports are not what is measured.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, Payload};
use hdrhistogram::Histogram;
use syncgate_proto::protocol::{ClientMessage, ServerMessage, encode_client};

use super::Credentials;
use super::compare::ReferenceChild;
use super::reference::Workload;
use super::server_stats::{Sample, Usage};
use super::{Socket, micros, read_message};

/// Flags shared by `handshake` and `idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Server URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// How each connection authenticates.
    #[command(flatten)]
    pub credentials: Credentials,
    /// Connections in all.
    #[arg(long, default_value_t = 20_000)]
    pub connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Loopback source addresses to spread over (127.0.0.1 to 127.0.0.N).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// The server's process id: its CPU time and memory are reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Flags of `syncgate bench handshake`.
#[derive(Debug, clap::Args)]
pub struct HandshakeArgs {
    /// Where to connect, how many and how.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Also measure the bare-transport reference server, in the same run.
    #[arg(long)]
    pub reference: bool,
    /// Make the reference verify each HS256 token with `--token-secret` (as syncgate does),
    /// so the ratio compares transport + token check with syncgate.
    #[arg(long, requires = "reference", requires = "token_secret")]
    pub verify: bool,
}

/// Per-phase times of one set of handshakes.
struct Phases {
    upgrade: Histogram<u64>,
    auth_required: Histogram<u64>,
    auth_ack: Histogram<u64>,
    total: Histogram<u64>,
}

impl Phases {
    fn new() -> Result<Self, String> {
        let h = || Histogram::new(3).map_err(|e| e.to_string());
        Ok(Self { upgrade: h()?, auth_required: h()?, auth_ack: h()?, total: h()? })
    }

    fn add(&mut self, other: &Phases) {
        let _ = self.upgrade.add(&other.upgrade);
        let _ = self.auth_required.add(&other.auth_required);
        let _ = self.auth_ack.add(&other.auth_ack);
        let _ = self.total.add(&other.total);
    }
}

/// What one target's handshakes measured.
pub struct HandshakeRun {
    target: String,
    done: usize,
    failed: usize,
    first_error: Option<String>,
    elapsed: Duration,
    phases: Phases,
    server: Option<Usage>,
}

impl HandshakeRun {
    /// Handshakes per second.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Handshakes that failed.
    pub fn failed(&self) -> usize {
        self.failed
    }
}

impl fmt::Display for HandshakeRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |h: &Histogram<u64>| {
            format!(
                "p50 {:.2} ms · p99 {:.2} ms",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3
            )
        };
        writeln!(
            f,
            "{}: {} handshakes in {:.1} s = {:.0}/s, {} failed",
            self.target,
            self.done,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.failed
        )?;
        writeln!(f, "  connect+upgrade {}", p(&self.phases.upgrade))?;
        writeln!(f, "  → AUTH_REQUIRED {}", p(&self.phases.auth_required))?;
        writeln!(f, "  AUTH → AUTH_ACK {}", p(&self.phases.auth_ack))?;
        write!(f, "  total           {}", p(&self.phases.total))?;
        if let Some(server) = &self.server {
            write!(f, "\n  {server} · {:.0} µs of server CPU per handshake", server.micros_per(self.done as u64))?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "\n  first error: {e}")?;
        }
        Ok(())
    }
}

/// The handshake runs: syncgate's, and the reference's when asked for.
pub struct HandshakeReport {
    syncgate: HandshakeRun,
    reference: Option<HandshakeRun>,
}

impl HandshakeReport {
    /// syncgate's run.
    pub fn syncgate(&self) -> &HandshakeRun {
        &self.syncgate
    }
}

impl fmt::Display for HandshakeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.syncgate)?;
        if let Some(reference) = &self.reference {
            write!(f, "\n{reference}")?;
            let ratio = self.syncgate.rate() / reference.rate().max(f64::EPSILON);
            write!(f, "\nsyncgate reaches {:.0} % of the transport's handshake rate (same run)", ratio * 100.0)?;
        }
        Ok(())
    }
}

/// Runs `handshake` (and the reference, with `--reference`).
pub async fn run_handshake(args: HandshakeArgs) -> Result<HandshakeReport, String> {
    let syncgate = handshakes("syncgate", &args.connect, args.connect.server_pid).await?;
    let reference = if args.reference {
        let secret = match args.verify {
            true => Some(args.connect.credentials.token_secret.as_deref().ok_or("--verify needs --token-secret")?),
            false => None,
        };
        let child = ReferenceChild::start(Workload::Handshake, secret)?;
        let connect = ConnectArgs { url: child.url().to_string(), ..args.connect.clone() };
        let target = if args.verify {
            "reference (bare fastwebsockets + HS256 check)"
        } else {
            "reference (bare fastwebsockets)"
        };
        Some(handshakes(target, &connect, Some(child.pid())).await?)
    } else {
        None
    };
    Ok(HandshakeReport { syncgate, reference })
}

async fn handshakes(target: &str, args: &ConnectArgs, pid: Option<u32>) -> Result<HandshakeRun, String> {
    if args.connections == 0 || args.concurrency == 0 {
        return Err("--connections and --concurrency must be at least 1".into());
    }
    let token = args.credentials.token("bench-handshake")?;
    let next = Arc::new(AtomicUsize::new(0));
    let before = pid.and_then(Sample::read);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (url, token, next, total, sources) =
            (args.url.clone(), token.clone(), next.clone(), args.connections, args.sources.max(1));
        workers.push(tokio::spawn(async move {
            let mut phases = Phases::new()?;
            let (mut done, mut failed, mut first_error) = (0, 0, None);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                match one_handshake(&url, token.clone(), source(n, sources), &mut phases).await {
                    Ok(()) => done += 1,
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            Ok::<_, String>((phases, done, failed, first_error))
        }));
    }
    let mut run = HandshakeRun {
        target: target.into(),
        done: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        phases: Phases::new()?,
        server: None,
    };
    for worker in workers {
        let (phases, done, failed, first_error) = worker.await.map_err(|e| e.to_string())??;
        run.phases.add(&phases);
        run.done += done;
        run.failed += failed;
        if run.first_error.is_none() {
            run.first_error = first_error;
        }
    }
    run.elapsed = started.elapsed();
    if let (Some(before), Some(after)) = (before, pid.and_then(Sample::read)) {
        run.server = Some(Usage::between(before, after, run.elapsed.as_secs_f64()));
    }
    Ok(run)
}

/// The loopback source address of connection `n`.
pub(super) fn source(n: usize, sources: u8) -> Option<IpAddr> {
    (sources > 1).then(|| IpAddr::from([127, 0, 0, 1 + (n % usize::from(sources)) as u8]))
}

async fn one_handshake(
    url: &str,
    token: Option<String>,
    bind: Option<IpAddr>,
    phases: &mut Phases,
) -> Result<(), String> {
    let start = Instant::now();
    let mut ws = open(url, bind).await?;
    let upgraded = Instant::now();
    let first = read_message(&mut ws).await?;
    let required = Instant::now();
    if let ServerMessage::AuthRequired { .. } = first {
        send(&mut ws, &ClientMessage::Auth { token }).await?;
        match read_message(&mut ws).await? {
            ServerMessage::AuthAck { .. } => {}
            other => return Err(format!("authentication failed: {other:?}")),
        }
    } else if !matches!(first, ServerMessage::AuthAck { .. }) {
        return Err(format!("unexpected first message {first:?}"));
    }
    let acked = Instant::now();
    let _ = ws.write_frame(Frame::close(1000, b"")).await;
    let _ = phases.upgrade.record(micros(upgraded - start));
    let _ = phases.auth_required.record(micros(required - upgraded));
    let _ = phases.auth_ack.record(micros(acked - required));
    let _ = phases.total.record(micros(acked - start));
    Ok(())
}

pub(super) async fn open(url: &str, bind: Option<IpAddr>) -> Result<FragmentCollector<Socket>, String> {
    let ws = syncgate_client::transport::open(url, None, bind).await.map_err(|e| e.to_string())?;
    Ok(FragmentCollector::new(ws))
}

pub(super) async fn send(ws: &mut FragmentCollector<Socket>, message: &ClientMessage) -> Result<(), String> {
    let bytes = encode_client(message);
    ws.write_frame(Frame::binary(Payload::Borrowed(&bytes))).await.map_err(|e| e.to_string())
}
