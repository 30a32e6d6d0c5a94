//! The load generator: `syncgate bench ops`, `fanout` ([`fanout`]), `handshake`
//! ([`handshake`]) and `idle` ([`idle`]), and the bare-transport `reference`
//! server ([`reference`]); [`server_stats`] reads the server's CPU and memory.
//!
//! Opens authenticated connections that each write `OP_BATCH`es and wait for
//! every `OP_RESULT`, then prints throughput and batch latency percentiles
//! (hdrhistogram). Timings belong here and in criterion, never in tests.
//! With `--flood-*` it also attacks the server before authentication while
//! the writers run ([`flood`]), to measure what the attack costs them.

pub mod api;
pub mod compare;
pub mod fanout;
pub mod flood;
pub mod handshake;
pub mod idle;
pub mod reference;
pub mod reference_messages;
pub mod server_stats;

use std::fmt;
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, WebSocket};
use hdrhistogram::Histogram;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rmpv::Value;

use self::compare::{Figures, ReferenceChild, SideBySide};
use self::flood::{Flood, FloodArgs, FloodReport};
use self::reference::Workload;
pub use crate::Seconds;
use crate::devtoken::{TokenSpec, mint};
use syncgate_proto::hlc::HlcClock;
use syncgate_proto::protocol::{ClientMessage, OpInput, RawOp, ServerMessage, encode_client};

/// The `n`th of a comma-separated list of URLs, in turn (the nodes of a
/// cluster share the connections).
pub(crate) fn nth_url(urls: &str, n: usize) -> String {
    let urls: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    urls.get(n % urls.len().max(1)).copied().unwrap_or(urls.first().copied().unwrap_or_default()).to_string()
}

/// Flags of `syncgate bench ops`.
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    /// Server URL; several (comma-separated, the nodes of a cluster) spread the writers over them in turn.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// How each connection authenticates.
    #[command(flatten)]
    pub credentials: Credentials,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    pub writers: usize,
    /// Ops per batch.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// How long to write (`20s`, `1m`).
    #[arg(long, default_value = "20s")]
    pub duration: Seconds,
    /// Stop each writer after this many answered batches (the duration still bounds the run):
    /// a fixed amount of work, for instruction counts.
    #[arg(long)]
    pub batches: Option<u64>,
    /// Bytes of each op's value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Pre-authentication attack traffic sent while the writers run.
    #[command(flatten)]
    pub flood: FloodArgs,
    /// Then run the same load against the bare-transport reference (answering every
    /// OP_BATCH with an all-ok OP_RESULT, storing nothing) and print the two side by side.
    #[arg(long)]
    pub reference: bool,
}

/// How long the flood may take to open its idle and slowloris sockets before
/// the writers start anyway.
const FLOOD_RAMP_LIMIT: Duration = Duration::from_secs(30);
/// Pause after a batch was refused as `rate_limited`.
const RATE_LIMITED_PAUSE: Duration = Duration::from_millis(10);
/// A batch unanswered for this long ends its writer with an error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run measured.
#[derive(Debug, Clone)]
pub struct OpsReport {
    writers: usize,
    batch: usize,
    elapsed: Duration,
    batches: u64,
    rate_limited: u64,
    accepted: u64,
    rejected: u64,
    failed_writers: usize,
    latency_us: Histogram<u64>,
    handshake_us: Histogram<u64>,
    flood: Option<FloodReport>,
    /// The same load against the reference, with `--reference`.
    reference: Option<Box<OpsReport>>,
}

impl OpsReport {
    /// Ops the server accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Ops the server rejected.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Writers that could not connect, authenticate or finish.
    pub fn failed_writers(&self) -> usize {
        self.failed_writers
    }

    /// What the flood saw, when one ran.
    pub fn flood(&self) -> Option<&FloodReport> {
        self.flood.as_ref()
    }

    /// Accepted ops per second and the batch latency.
    pub fn figures(&self) -> Figures {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let rate = self.accepted as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON);
        Figures { rate, p50_ms: ms(0.5), p99_ms: ms(0.99) }
    }
}

impl fmt::Display for OpsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        writeln!(f, "writers {} · batch {} · {:.1} s", self.writers, self.batch, secs)?;
        writeln!(
            f,
            "ops accepted  {} ({:.0} ops/s), rejected {}",
            self.accepted,
            self.accepted as f64 / secs,
            self.rejected
        )?;
        writeln!(
            f,
            "batches       {} ({:.0} batches/s), {} refused as rate_limited",
            self.batches,
            self.batches as f64 / secs,
            self.rate_limited
        )?;
        writeln!(
            f,
            "batch latency p50 {:.2} ms · p90 {:.2} ms · p99 {:.2} ms · p99.9 {:.2} ms · max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        )?;
        let hs = |q: f64| self.handshake_us.value_at_quantile(q) as f64 / 1000.0;
        writeln!(
            f,
            "writer handshakes (connect → AUTH_ACK) p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
            hs(0.5),
            hs(0.99),
            self.handshake_us.max() as f64 / 1000.0
        )?;
        write!(f, "writers that failed: {}", self.failed_writers)?;
        if let Some(flood) = &self.flood {
            write!(f, "\n{flood}")?;
        }
        if let Some(reference) = &self.reference {
            write!(
                f,
                "\n\nreference (bare fastwebsockets, all ops accepted, nothing stored), same load:\n{reference}"
            )?;
            let (syncgate, reference) = (self.figures(), reference.figures());
            let table = SideBySide { unit: "ops/s", latency: "batch", syncgate, reference };
            write!(f, "\n\n{table}")?;
        }
        Ok(())
    }
}

struct WriterResult {
    handshake: Duration,
    batches: u64,
    rate_limited: u64,
    accepted: u64,
    rejected: u64,
    latency_us: Histogram<u64>,
}

/// Runs the `ops` scenario (and, with `--reference`, the same against the reference).
pub async fn run_ops(args: OpsArgs) -> Result<OpsReport, String> {
    let mut report = measure_ops(&args, &args.url).await?;
    if args.reference {
        let child = ReferenceChild::start(Workload::Messages, None)?;
        report.reference = Some(Box::new(measure_ops(&args, child.url()).await?));
    }
    Ok(report)
}

/// One run of the `ops` load against `url`.
async fn measure_ops(args: &OpsArgs, url: &str) -> Result<OpsReport, String> {
    if args.writers == 0 || args.batch == 0 {
        return Err("--writers and --batch must be at least 1".into());
    }
    let flood = if args.flood.is_active() {
        Some(Flood::start(&nth_url(url, 0), args.flood.clone(), FLOOD_RAMP_LIMIT).await?)
    } else {
        None
    };
    let deadline = Instant::now() + args.duration.0;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let token = args.credentials.token(&format!("bench-{writer}"))?;
        let url = nth_url(url, writer);
        let work = Work { batch: args.batch, value_bytes: args.value_bytes, batches: args.batches, deadline };
        tasks.push(tokio::spawn(async move { write_until(url, token, writer, work).await }));
    }
    let mut report = OpsReport {
        writers: args.writers,
        batch: args.batch,
        elapsed: Duration::ZERO,
        batches: 0,
        rate_limited: 0,
        accepted: 0,
        rejected: 0,
        failed_writers: 0,
        latency_us: Histogram::new(3).map_err(|e| e.to_string())?,
        handshake_us: Histogram::new(3).map_err(|e| e.to_string())?,
        flood: None,
        reference: None,
    };
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(result)) => {
                report.batches += result.batches;
                report.rate_limited += result.rate_limited;
                report.accepted += result.accepted;
                report.rejected += result.rejected;
                let _ = report.latency_us.add(&result.latency_us);
                let _ = report.handshake_us.record(micros(result.handshake));
            }
            Ok(Err(e)) => {
                report.failed_writers += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                report.failed_writers += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    report.elapsed = started.elapsed();
    report.flood = flood.map(|flood| flood.report());
    if report.failed_writers == args.writers {
        return Err(format!("every writer failed; first error: {}", first_error.unwrap_or_default()));
    }
    Ok(report)
}

/// What one writer writes, and until when.
#[derive(Clone, Copy)]
struct Work {
    batch: usize,
    value_bytes: usize,
    /// Answered batches after which the writer stops, if bounded.
    batches: Option<u64>,
    deadline: Instant,
}

async fn write_until(url: String, token: Option<String>, writer: usize, work: Work) -> Result<WriterResult, String> {
    let Work { batch, value_bytes, batches, deadline } = work;
    let connecting = Instant::now();
    let mut ws = open_authenticated(&url, token).await?;
    let next = async |ws: &mut FragmentCollector<_>| -> Result<ServerMessage, String> { read_message(ws).await };
    let send = async |ws: &mut FragmentCollector<_>, message: &ClientMessage| -> Result<(), String> {
        let bytes = encode_client(message);
        ws.write_frame(Frame::binary(Payload::Borrowed(&bytes))).await.map_err(|e| e.to_string())
    };
    let handshake = connecting.elapsed();
    let clock = HlcClock::new(format!("bench-{writer}"), (0, 0));
    let value = Value::Binary(vec![b'x'; value_bytes]);
    let mut result = WriterResult {
        handshake,
        batches: 0,
        rate_limited: 0,
        accepted: 0,
        rejected: 0,
        latency_us: Histogram::new(3).map_err(|e| e.to_string())?,
    };
    let mut id = 0u64;
    while Instant::now() < deadline && batches.is_none_or(|limit| result.batches < limit) {
        id += 1;
        let ops = (0..batch)
            .map(|i| {
                OpInput::Op(RawOp {
                    op_id: Value::from(format!("{id}-{i}")),
                    collection: format!("bench/{writer}"),
                    key: format!("k{}", (id as usize * batch + i) % 10_000),
                    value: value.clone(),
                    hlc: clock.tick(syncgate_proto::time::unix_ms()).to_string(),
                })
            })
            .collect();
        let sent = Instant::now();
        send(&mut ws, &ClientMessage::OpBatch { id, ops }).await?;
        let answered = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match next(&mut ws).await? {
                    ServerMessage::OpResult { id: got, results } if got == id => return Ok(Some(results)),
                    ServerMessage::Error { id: Some(got), code, .. } if got == id && code == "rate_limited" => {
                        return Ok(None);
                    }
                    ServerMessage::Error { id: Some(got), code, message } if got == id => {
                        return Err(format!("batch {id}: ERROR {code}: {message}"));
                    }
                    _ => continue,
                }
            }
        })
        .await
        .map_err(|_| format!("batch {id}: no answer within {ANSWER_TIMEOUT:?}"))??;
        let Some(results) = answered else {
            // Over the server's per-connection message rate: counted, not timed; a short
            // pause keeps the writer from running into the 4029 close.
            result.rate_limited += 1;
            tokio::time::sleep(RATE_LIMITED_PAUSE).await;
            continue;
        };
        let ok = results.iter().filter(|r| r.ok).count() as u64;
        result.accepted += ok;
        result.rejected += results.len() as u64 - ok;
        let _ = result.latency_us.record(micros(sent.elapsed()));
        result.batches += 1;
    }
    let _ = ws.write_frame(Frame::close(1000, b"")).await;
    Ok(result)
}

/// A load-generator connection.
type Socket = TokioIo<Upgraded>;

/// How bench connections authenticate: a token minted per connection from
/// the server's HMAC secret, one fixed token, or none (auth mode none).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Credentials {
    /// HMAC secret to mint a token per connection (the server's --jwt-secret).
    #[arg(long, env = "SYNCGATE_JWT_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// A fixed token instead (static-token mode); none for auth mode none.
    #[arg(long)]
    pub token: Option<String>,
}

impl Credentials {
    /// The token for a connection acting as `sub` (roles `bench`).
    pub fn token(&self, sub: &str) -> Result<Option<String>, String> {
        Ok(match (&self.token, &self.token_secret) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(secret)) => {
                let spec = TokenSpec::new(sub.to_string(), vec!["bench".into()]);
                Some(mint(secret.as_bytes(), &spec, syncgate_proto::time::unix_secs()).map_err(|e| e.to_string())?)
            }
            (None, None) => None,
        })
    }
}

/// The next data message, decoded; a close is an error.
async fn read_message(ws: &mut FragmentCollector<Socket>) -> Result<ServerMessage, String> {
    loop {
        let frame = ws.read_frame().await.map_err(|e| e.to_string())?;
        match frame.opcode {
            OpCode::Binary => return rmp_serde::from_slice(&frame.payload).map_err(|e| e.to_string()),
            OpCode::Close => return Err(format!("closed: {:?}", frame.payload.get(..2))),
            _ => continue,
        }
    }
}

/// Connects and authenticates (`AUTH_REQUIRED` → `AUTH` → `AUTH_ACK`, or an `AUTH_ACK` at once).
async fn open_authenticated(url: &str, token: Option<String>) -> Result<FragmentCollector<Socket>, String> {
    let ws: WebSocket<Socket> = syncgate_client::open_socket(url).await.map_err(|e| e.to_string())?;
    let mut ws = FragmentCollector::new(ws);
    match read_message(&mut ws).await? {
        ServerMessage::AuthRequired { .. } => {
            let bytes = encode_client(&ClientMessage::Auth { token });
            ws.write_frame(Frame::binary(Payload::Borrowed(&bytes))).await.map_err(|e| e.to_string())?;
            match read_message(&mut ws).await? {
                ServerMessage::AuthAck { .. } => Ok(ws),
                other => Err(format!("authentication failed: {other:?}")),
            }
        }
        ServerMessage::AuthAck { .. } => Ok(ws),
        other => Err(format!("unexpected first message {other:?}")),
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
