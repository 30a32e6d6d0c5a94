//! Pre-authentication attack traffic for `syncgate bench ops`: upgraded
//! sockets that never authenticate, half-sent HTTP requests (slowloris) and
//! tokens signed with the wrong key, sent while the writers run so the report
//! shows what such an attack costs honest users.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout, timeout_at};

use crate::devtoken::{TokenSpec, mint};
use syncgate_client::transport;
use syncgate_proto::protocol::{ClientMessage, ServerMessage, encode_client};

/// Flags of the flood that runs beside the writers.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FloodArgs {
    /// Upgraded sockets that never send AUTH, held open (reopened when the server closes them).
    #[arg(long, default_value_t = 0)]
    pub flood_idle: usize,
    /// Connections that send half an HTTP request head, a header line a second, and never finish it.
    #[arg(long, default_value_t = 0)]
    pub flood_slowloris: usize,
    /// AUTH attempts per second with a well-formed token signed by the wrong key.
    #[arg(long, default_value_t = 0)]
    pub flood_bad_tokens: u32,
    /// Local addresses the flood connects from, round robin (on Linux any 127.x.y.z acts as another
    /// client IP on loopback, so per-IP limits see the attacker apart from the writers).
    #[arg(long, value_delimiter = ',')]
    pub flood_from: Vec<IpAddr>,
}

impl FloodArgs {
    /// Whether any flood traffic was asked for.
    pub fn is_active(&self) -> bool {
        self.flood_idle > 0 || self.flood_slowloris > 0 || self.flood_bad_tokens > 0
    }

    fn source(&self, n: usize) -> Option<IpAddr> {
        (!self.flood_from.is_empty()).then(|| self.flood_from[n % self.flood_from.len()])
    }
}

/// Bad-token attempts in flight at most; beyond it a tick's attempts are
/// counted as skipped, so the report shows the rate really sent.
const MAX_BAD_TOKENS_IN_FLIGHT: usize = 512;
/// How long one bad-token attempt may take before it counts as timed out.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a refused idle or slowloris connection, so a refusing server
/// is not answered with a tight reconnect loop on the same cores.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// Counters the flood tasks share.
#[derive(Debug, Default)]
pub struct FloodStats {
    idle_opened: AtomicU64,
    idle_open_now: AtomicU64,
    idle_refused: AtomicU64,
    slowloris_opened: AtomicU64,
    slowloris_open_now: AtomicU64,
    slowloris_closed_by_server: AtomicU64,
    bad_sent: AtomicU64,
    bad_auth_fail: AtomicU64,
    bad_accepted: AtomicU64,
    bad_refused: AtomicU64,
    bad_timed_out: AtomicU64,
    bad_skipped: AtomicU64,
}

/// The flood's part of the report, read when the writers are done.
#[derive(Debug, Clone, Default)]
pub struct FloodReport {
    args: FloodArgs,
    elapsed: Duration,
    idle_opened: u64,
    idle_held: u64,
    idle_refused: u64,
    slowloris_opened: u64,
    slowloris_held: u64,
    slowloris_closed_by_server: u64,
    bad_sent: u64,
    bad_auth_fail: u64,
    bad_accepted: u64,
    bad_refused: u64,
    bad_timed_out: u64,
    bad_skipped: u64,
}

impl FloodReport {
    /// Idle unauthenticated sockets open when the report was taken.
    pub fn idle_held(&self) -> u64 {
        self.idle_held
    }

    /// Slowloris connections the server has cut (header timeout or size).
    pub fn slowloris_cut(&self) -> u64 {
        self.slowloris_closed_by_server
    }

    /// Bad-token attempts answered `AUTH_FAIL`.
    pub fn bad_tokens_failed(&self) -> u64 {
        self.bad_auth_fail
    }

    /// Bad-token attempts refused before `AUTH_FAIL` (HTTP 429, a close).
    pub fn bad_tokens_refused(&self) -> u64 {
        self.bad_refused
    }

    /// Bad-token attempts the server authenticated: must be zero.
    pub fn bad_tokens_accepted(&self) -> u64 {
        self.bad_accepted
    }
}

impl fmt::Display for FloodReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let from = if self.args.flood_from.is_empty() {
            "the writers' address".to_string()
        } else {
            self.args.flood_from.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        write!(f, "flood from {from}:")?;
        if self.args.flood_idle > 0 {
            write!(
                f,
                "\n  idle unauthenticated sockets: {} asked, {} held at the end, {} opened, {} refused",
                self.args.flood_idle, self.idle_held, self.idle_opened, self.idle_refused
            )?;
        }
        if self.args.flood_slowloris > 0 {
            write!(
                f,
                "\n  slowloris: {} asked, {} held at the end, {} opened, {} cut by the server",
                self.args.flood_slowloris, self.slowloris_held, self.slowloris_opened, self.slowloris_closed_by_server
            )?;
        }
        if self.args.flood_bad_tokens > 0 {
            write!(
                f,
                "\n  bad tokens: {}/s asked, {} sent ({:.0}/s): {} AUTH_FAIL, {} refused before AUTH, {} timed out, \
                 {} ACCEPTED, {} skipped (loader saturated)",
                self.args.flood_bad_tokens,
                self.bad_sent,
                self.bad_sent as f64 / secs,
                self.bad_auth_fail,
                self.bad_refused,
                self.bad_timed_out,
                self.bad_accepted,
                self.bad_skipped
            )?;
        }
        Ok(())
    }
}

/// A running flood; dropping it stops every task.
///
/// The flood runs on its own runtime and threads, as if from another machine:
/// on the writers' runtime its bursts of handshakes would queue the writers'
/// tasks behind them and the report would blame the server for the loader.
pub struct Flood {
    args: FloodArgs,
    stats: Arc<FloodStats>,
    started: Instant,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Flood {
    /// Starts the flood against `url` and waits until the idle and slowloris
    /// sockets are open (or `ramp_limit` has passed), so the writers meet
    /// the whole attack.
    pub async fn start(url: &str, args: FloodArgs, ramp_limit: Duration) -> Result<Flood, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        if args.flood_slowloris > 0 && uri.scheme_str() != Some("ws") {
            return Err("--flood-slowloris needs a ws:// URL".into());
        }
        let host = uri.host().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(80);
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
        let stats = Arc::new(FloodStats::default());
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("syncgate-flood")
            .enable_all()
            .build()
            .map_err(|e| format!("flood runtime: {e}"))?;
        for n in 0..args.flood_idle {
            runtime.spawn(hold_idle(url.to_string(), args.source(n), stats.clone()));
        }
        for n in 0..args.flood_slowloris {
            let target = SlowTarget { host: host.clone(), port, authority: authority.clone() };
            runtime.spawn(hold_slowloris(target, args.source(n), stats.clone()));
        }
        if args.flood_bad_tokens > 0 {
            let spec = TokenSpec::new("attacker", vec!["admin".into()]);
            let token =
                mint(b"not-the-server-secret", &spec, syncgate_proto::time::unix_secs()).map_err(|e| e.to_string())?;
            runtime.spawn(send_bad_tokens(url.to_string(), token, args.clone(), stats.clone()));
        }
        let ramp_deadline = Instant::now() + ramp_limit;
        let wanted = (args.flood_idle + args.flood_slowloris) as u64;
        while Instant::now() < ramp_deadline
            && stats.idle_open_now.load(Relaxed) + stats.slowloris_open_now.load(Relaxed) < wanted
        {
            sleep(Duration::from_millis(20)).await;
        }
        Ok(Flood { args, stats, started, runtime: Some(runtime) })
    }

    /// Reads the counters (the tasks keep running until the flood is dropped).
    pub fn report(&self) -> FloodReport {
        let s = &self.stats;
        FloodReport {
            args: self.args.clone(),
            elapsed: self.started.elapsed(),
            idle_opened: s.idle_opened.load(Relaxed),
            idle_held: s.idle_open_now.load(Relaxed),
            idle_refused: s.idle_refused.load(Relaxed),
            slowloris_opened: s.slowloris_opened.load(Relaxed),
            slowloris_held: s.slowloris_open_now.load(Relaxed),
            slowloris_closed_by_server: s.slowloris_closed_by_server.load(Relaxed),
            bad_sent: s.bad_sent.load(Relaxed),
            bad_auth_fail: s.bad_auth_fail.load(Relaxed),
            bad_accepted: s.bad_accepted.load(Relaxed),
            bad_refused: s.bad_refused.load(Relaxed),
            bad_timed_out: s.bad_timed_out.load(Relaxed),
            bad_skipped: s.bad_skipped.load(Relaxed),
        }
    }
}

/// Keeps one upgraded, never-authenticated socket open, reopening it when
/// the server closes it (the auth timeout, 4008).
async fn hold_idle(url: String, bind: Option<IpAddr>, stats: Arc<FloodStats>) {
    loop {
        let Ok(mut ws) = transport::open(&url, None, bind).await else {
            stats.idle_refused.fetch_add(1, Relaxed);
            sleep(REFUSED_PAUSE).await;
            continue;
        };
        stats.idle_opened.fetch_add(1, Relaxed);
        stats.idle_open_now.fetch_add(1, Relaxed);
        while let Ok(frame) = ws.read_frame().await {
            if frame.opcode == OpCode::Close {
                break;
            }
        }
        stats.idle_open_now.fetch_sub(1, Relaxed);
    }
}

struct SlowTarget {
    host: String,
    port: u16,
    authority: String,
}

/// Keeps one connection sending an HTTP request head that never ends, one
/// header line a second, until the server cuts it (header-read timeout or
/// head size limit); then opens another.
async fn hold_slowloris(target: SlowTarget, bind: Option<IpAddr>, stats: Arc<FloodStats>) {
    loop {
        let Ok(mut tcp) = transport::connect(&target.host, target.port, bind).await else {
            sleep(REFUSED_PAUSE).await;
            continue;
        };
        let start = format!("GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n", target.authority);
        if tcp.write_all(start.as_bytes()).await.is_err() {
            sleep(REFUSED_PAUSE).await;
            continue;
        }
        stats.slowloris_opened.fetch_add(1, Relaxed);
        stats.slowloris_open_now.fetch_add(1, Relaxed);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut sink = [0u8; 512];
        loop {
            tokio::select! {
                read = tcp.read(&mut sink) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        break;
                    }
                }
                _ = tick.tick() => {
                    if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        break;
                    }
                }
            }
        }
        stats.slowloris_open_now.fetch_sub(1, Relaxed);
        stats.slowloris_closed_by_server.fetch_add(1, Relaxed);
    }
}

/// Starts `flood_bad_tokens` attempts a second, paced every 10 ms, with at
/// most [`MAX_BAD_TOKENS_IN_FLIGHT`] at once.
async fn send_bad_tokens(url: String, token: String, args: FloodArgs, stats: Arc<FloodStats>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BAD_TOKENS_IN_FLIGHT));
    let mut attempts = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let per_tick = f64::from(args.flood_bad_tokens) / 100.0;
    let mut owed = 0.0;
    let mut n = 0usize;
    loop {
        tick.tick().await;
        while attempts.try_join_next().is_some() {}
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                stats.bad_skipped.fetch_add(1, Relaxed);
                continue;
            };
            let (url, token, stats, bind) = (url.clone(), token.clone(), stats.clone(), args.source(n));
            n = n.wrapping_add(1);
            attempts.spawn(async move {
                stats.bad_sent.fetch_add(1, Relaxed);
                let outcome = timeout(ATTEMPT_TIMEOUT, bad_token_attempt(&url, &token, bind)).await;
                let counter = match outcome {
                    Err(_) => &stats.bad_timed_out,
                    Ok(BadTokenOutcome::AuthFail) => &stats.bad_auth_fail,
                    Ok(BadTokenOutcome::Accepted) => &stats.bad_accepted,
                    Ok(BadTokenOutcome::Refused) => &stats.bad_refused,
                };
                counter.fetch_add(1, Relaxed);
                drop(permit);
            });
        }
    }
}

enum BadTokenOutcome {
    /// The server answered `AUTH_FAIL` (the expected outcome).
    AuthFail,
    /// The server authenticated a wrong-key token: a security bug.
    Accepted,
    /// Refused before `AUTH_FAIL`: HTTP 429, a reset, a close without it.
    Refused,
}

async fn bad_token_attempt(url: &str, token: &str, bind: Option<IpAddr>) -> BadTokenOutcome {
    let Ok(mut ws) = transport::open(url, None, bind).await else {
        return BadTokenOutcome::Refused;
    };
    let auth = encode_client(&ClientMessage::Auth { token: Some(token.to_string()) });
    if ws.write_frame(Frame::binary(Payload::Borrowed(&auth))).await.is_err() {
        return BadTokenOutcome::Refused;
    }
    let deadline = Instant::now() + ATTEMPT_TIMEOUT;
    loop {
        let frame = match timeout_at(deadline, ws.read_frame()).await {
            Ok(Ok(frame)) => frame,
            _ => return BadTokenOutcome::Refused,
        };
        match frame.opcode {
            OpCode::Binary => match rmp_serde::from_slice::<ServerMessage>(&frame.payload) {
                Ok(ServerMessage::AuthFail { .. }) => return BadTokenOutcome::AuthFail,
                Ok(ServerMessage::AuthAck { .. }) => return BadTokenOutcome::Accepted,
                _ => continue,
            },
            OpCode::Close => return BadTokenOutcome::Refused,
            _ => continue,
        }
    }
}
