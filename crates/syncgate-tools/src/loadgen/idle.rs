//! `syncgate bench idle`: what holding authenticated connections costs the
//! server's memory, and how much of it the server gives back once they close.
//!
//! A round opens N authenticated connections (C at a time), lets the server
//! settle, reads its resident memory (`VmRSS` of `--server-pid`), holds the
//! connections, closes them all and reads the memory again right after the
//! close and, with `--after-close`, that long after it. The reading before
//! the first round is the idle figure every later one is compared with: a
//! server that keeps the peak of a spike shows it here, round after round,
//! as a ratio to that figure instead of a leak.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame};
use syncgate_proto::protocol::{ClientMessage, ServerMessage};

use super::handshake::{ConnectArgs, open, send, source};
use super::server_stats::{Sample, Usage};
use super::{Seconds, Socket, read_message};

/// Flags of `syncgate bench idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Where to connect, how many and how.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How long to hold the connections once all are open.
    #[arg(long, default_value = "5s")]
    pub hold: Seconds,
    /// Rounds of open, hold and close, one after the other.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// How long after closing a round's connections to read the server's memory again
    /// (and wait before the next round); 0: read it only right after the close.
    #[arg(long, default_value = "0s")]
    pub after_close: Seconds,
}

/// Time the server gets to finish the last handshakes, or to take in the
/// close frames, before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Intermediate readings while waiting `--after-close`, in seconds after the
/// close: the shape of the curve says whether memory comes back at once,
/// after the allocator's purge delay, or never.
const CHECKPOINTS: [u64; 3] = [5, 15, 30];

/// One round: the connections held, and the server's memory around them.
struct Round {
    held: usize,
    failed: usize,
    first_error: Option<String>,
    /// From before opening to all open.
    opened: Option<Usage>,
    /// Resident memory (KiB) after the close, by seconds after it.
    after_close: Vec<(u64, u64)>,
}

/// What holding idle connections cost the server, round by round.
pub struct IdleReport {
    /// Resident memory (KiB) before the first round.
    idle_kib: Option<u64>,
    rounds: Vec<Round>,
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.idle_kib {
            Some(idle) => writeln!(f, "server RSS before the first round {idle} KiB")?,
            None => writeln!(f, "(give --server-pid to measure the server's memory)")?,
        }
        for (n, round) in self.rounds.iter().enumerate() {
            let label = if self.rounds.len() > 1 { format!("round {}: ", n + 1) } else { String::new() };
            write!(f, "{label}{} authenticated connections held idle, {} failed", round.held, round.failed)?;
            if let Some(server) = &round.opened {
                write!(
                    f,
                    "\n  server RSS {} KiB, {:+} KiB while opening them = {:.1} KiB per connection",
                    server.rss_kib,
                    server.rss_delta_kib,
                    server.rss_delta_kib as f64 / round.held.max(1) as f64
                )?;
            }
            if !round.after_close.is_empty() {
                let readings: Vec<String> = round
                    .after_close
                    .iter()
                    .map(|(secs, kib)| match self.idle_kib {
                        Some(idle) => format!("{secs} s {kib} KiB ({:.2} × idle)", *kib as f64 / idle.max(1) as f64),
                        None => format!("{secs} s {kib} KiB"),
                    })
                    .collect();
                write!(f, "\n  server RSS after the close: {}", readings.join(" · "))?;
            }
            if let Some(e) = &round.first_error {
                write!(f, "\n  first error: {e}")?;
            }
            if n + 1 < self.rounds.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// Runs `idle`: `--rounds` times, opens every connection, lets the server
/// settle, measures, holds, closes and measures what is given back.
pub async fn run_idle(args: IdleArgs) -> Result<IdleReport, String> {
    let pid = args.connect.server_pid;
    let idle_kib = pid.and_then(Sample::read).map(|s| s.rss_kib);
    let mut rounds = Vec::with_capacity(args.rounds.max(1));
    for _ in 0..args.rounds.max(1) {
        rounds.push(one_round(&args, pid).await?);
    }
    Ok(IdleReport { idle_kib, rounds })
}

async fn one_round(args: &IdleArgs, pid: Option<u32>) -> Result<Round, String> {
    let before = pid.and_then(Sample::read);
    let started = Instant::now();
    let (held, failed, first_error) = open_all(&args.connect).await?;
    tokio::time::sleep(SETTLE).await;
    let opened = match (before, pid.and_then(Sample::read)) {
        (Some(before), Some(after)) => Some(Usage::between(before, after, started.elapsed().as_secs_f64())),
        _ => None,
    };
    tokio::time::sleep(args.hold.0).await;
    let mut round = Round { held: held.len(), failed, first_error, opened, after_close: Vec::new() };
    for mut ws in held {
        let _ = ws.write_frame(Frame::close(1000, b"")).await;
    }
    let closed = Instant::now();
    tokio::time::sleep(SETTLE).await;
    let wait = args.after_close.0;
    let mut points: Vec<Duration> = CHECKPOINTS.iter().map(|s| Duration::from_secs(*s)).filter(|d| *d < wait).collect();
    if !wait.is_zero() {
        points.push(wait.max(SETTLE));
    }
    let Some(pid) = pid else {
        tokio::time::sleep_until((closed + wait).into()).await;
        return Ok(round);
    };
    round.after_close.extend(Sample::read(pid).map(|s| (SETTLE.as_secs(), s.rss_kib)));
    for point in points {
        tokio::time::sleep_until((closed + point).into()).await;
        round.after_close.extend(Sample::read(pid).map(|s| (point.as_secs(), s.rss_kib)));
    }
    Ok(round)
}

/// Opens `--connections` authenticated connections, `--concurrency` at a time.
async fn open_all(connect: &ConnectArgs) -> Result<(Vec<FragmentCollector<Socket>>, usize, Option<String>), String> {
    let token = connect.credentials.token("bench-idle")?;
    let limit = Arc::new(tokio::sync::Semaphore::new(connect.concurrency.max(1)));
    let mut opening = Vec::with_capacity(connect.connections);
    for n in 0..connect.connections {
        let (url, token, limit, bind) =
            (connect.url.clone(), token.clone(), limit.clone(), source(n, connect.sources.max(1)));
        opening.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.map_err(|e| e.to_string())?;
            let mut ws = open(&url, bind).await?;
            if let ServerMessage::AuthRequired { .. } = read_message(&mut ws).await? {
                send(&mut ws, &ClientMessage::Auth { token }).await?;
                match read_message(&mut ws).await? {
                    ServerMessage::AuthAck { .. } => {}
                    other => return Err(format!("authentication failed: {other:?}")),
                }
            }
            Ok::<_, String>(ws)
        }));
    }
    let (mut held, mut failed, mut first_error) = (Vec::new(), 0, None);
    for task in opening {
        match task.await.map_err(|e| e.to_string())? {
            Ok(ws) => held.push(ws),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Ok((held, failed, first_error))
}
