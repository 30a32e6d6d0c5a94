//! The load generator: `syncgate bench ops`.
//!
//! Opens authenticated connections that each write `OP_BATCH`es and wait for
//! every `OP_RESULT`, then prints throughput and batch latency percentiles
//! (hdrhistogram). Timings belong here and in criterion, never in tests.

use std::fmt;
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use hdrhistogram::Histogram;
use rmpv::Value;

use crate::cli::Seconds;
use crate::devtoken::{TokenSpec, mint};
use crate::hlc::HlcClock;
use crate::protocol::{ClientMessage, OpInput, RawOp, ServerMessage, encode_client};

/// Flags of `syncgate bench ops`.
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    /// Server URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// HMAC secret to mint a token per writer (the server's --jwt-secret).
    #[arg(long, env = "SYNCGATE_JWT_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// A fixed token instead (static-token mode); none for auth mode none.
    #[arg(long)]
    pub token: Option<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    pub writers: usize,
    /// Ops per batch.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// How long to write (`20s`, `1m`).
    #[arg(long, default_value = "20s")]
    pub duration: Seconds,
    /// Bytes of each op's value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct OpsReport {
    writers: usize,
    batch: usize,
    elapsed: Duration,
    batches: u64,
    accepted: u64,
    rejected: u64,
    failed_writers: usize,
    latency_us: Histogram<u64>,
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
        writeln!(f, "batches       {} ({:.0} batches/s)", self.batches, self.batches as f64 / secs)?;
        writeln!(
            f,
            "batch latency p50 {:.2} ms · p90 {:.2} ms · p99 {:.2} ms · p99.9 {:.2} ms · max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0
        )?;
        write!(f, "writers that failed: {}", self.failed_writers)
    }
}

struct WriterResult {
    batches: u64,
    accepted: u64,
    rejected: u64,
    latency_us: Histogram<u64>,
}

/// Runs the `ops` scenario.
pub async fn run_ops(args: OpsArgs) -> Result<OpsReport, String> {
    if args.writers == 0 || args.batch == 0 {
        return Err("--writers and --batch must be at least 1".into());
    }
    let deadline = Instant::now() + args.duration.0;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.writers);
    for writer in 0..args.writers {
        let token = match (&args.token, &args.token_secret) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(secret)) => {
                let spec = TokenSpec::new(format!("bench-{writer}"), vec!["bench".into()]);
                Some(mint(secret.as_bytes(), &spec, crate::clock::unix_secs()).map_err(|e| e.to_string())?)
            }
            (None, None) => None,
        };
        let url = args.url.clone();
        let (batch, value_bytes) = (args.batch, args.value_bytes);
        tasks.push(tokio::spawn(async move { write_until(url, token, writer, batch, value_bytes, deadline).await }));
    }
    let mut report = OpsReport {
        writers: args.writers,
        batch: args.batch,
        elapsed: Duration::ZERO,
        batches: 0,
        accepted: 0,
        rejected: 0,
        failed_writers: 0,
        latency_us: Histogram::new(3).map_err(|e| e.to_string())?,
    };
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(result)) => {
                report.batches += result.batches;
                report.accepted += result.accepted;
                report.rejected += result.rejected;
                let _ = report.latency_us.add(&result.latency_us);
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
    if report.failed_writers == args.writers {
        return Err(format!("every writer failed; first error: {}", first_error.unwrap_or_default()));
    }
    Ok(report)
}

async fn write_until(
    url: String,
    token: Option<String>,
    writer: usize,
    batch: usize,
    value_bytes: usize,
    deadline: Instant,
) -> Result<WriterResult, String> {
    let ws = crate::client::open_socket(&url).await.map_err(|e| e.to_string())?;
    let mut ws = FragmentCollector::new(ws);
    let next = async |ws: &mut FragmentCollector<_>| -> Result<ServerMessage, String> {
        loop {
            let frame = ws.read_frame().await.map_err(|e| e.to_string())?;
            match frame.opcode {
                OpCode::Binary => return rmp_serde::from_slice(&frame.payload).map_err(|e| e.to_string()),
                OpCode::Close => return Err(format!("closed: {:?}", frame.payload.get(..2))),
                _ => continue,
            }
        }
    };
    let send = async |ws: &mut FragmentCollector<_>, message: &ClientMessage| -> Result<(), String> {
        let bytes = encode_client(message);
        ws.write_frame(Frame::binary(Payload::Borrowed(&bytes))).await.map_err(|e| e.to_string())
    };
    match next(&mut ws).await? {
        ServerMessage::AuthRequired { .. } => {
            send(&mut ws, &ClientMessage::Auth { token: token.clone() }).await?;
            match next(&mut ws).await? {
                ServerMessage::AuthAck { .. } => {}
                other => return Err(format!("authentication failed: {other:?}")),
            }
        }
        ServerMessage::AuthAck { .. } => {}
        other => return Err(format!("unexpected first message {other:?}")),
    }
    let clock = HlcClock::new(format!("bench-{writer}"), (0, 0));
    let value = Value::Binary(vec![b'x'; value_bytes]);
    let mut result = WriterResult {
        batches: 0,
        accepted: 0,
        rejected: 0,
        latency_us: Histogram::new(3).map_err(|e| e.to_string())?,
    };
    let mut id = 0u64;
    while Instant::now() < deadline {
        id += 1;
        let ops = (0..batch)
            .map(|i| {
                OpInput::Op(RawOp {
                    op_id: Value::from(format!("{id}-{i}")),
                    collection: format!("bench/{writer}"),
                    key: format!("k{}", (id as usize * batch + i) % 10_000),
                    value: value.clone(),
                    hlc: clock.tick(crate::clock::unix_ms()).to_string(),
                })
            })
            .collect();
        let sent = Instant::now();
        send(&mut ws, &ClientMessage::OpBatch { id, ops }).await?;
        loop {
            if let ServerMessage::OpResult { id: got, results } = next(&mut ws).await?
                && got == id
            {
                let ok = results.iter().filter(|r| r.ok).count() as u64;
                result.accepted += ok;
                result.rejected += results.len() as u64 - ok;
                break;
            }
        }
        let _ = result.latency_us.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        result.batches += 1;
    }
    let _ = ws.write_frame(Frame::close(1000, b"")).await;
    Ok(result)
}
