//! `syncgate bench fanout`: one topic, many subscribers, a few publishers.
//!
//! Every publication carries its publisher, its sequence number and when it
//! was sent, so each subscriber checks that it received every publisher's
//! messages in order with none missing, and the report gives the delivery
//! rate (subscriber deliveries per second) and the publish → receive latency.
//! Run it against a server started with `--messages-per-second 0` (the
//! publishers go as fast as the server answers).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use hdrhistogram::Histogram;
use rmpv::Value;
use serde::Deserialize;

use super::Credentials;
use super::compare::{Figures, ReferenceChild, SideBySide};
use super::reference::Workload;
use super::server_stats::{Sample, Usage};
use super::{Seconds, Socket, micros, open_authenticated};
use syncgate_proto::protocol::{ClientMessage, ServerMessage, encode_client};

/// Flags of `syncgate bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// Server URL; several (comma-separated, the nodes of a cluster) spread the subscribers over them in turn.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Where the publishers connect [default: the first --url].
    #[arg(long)]
    pub publisher_url: Option<String>,
    /// Publications per second per publisher (0: as fast as the window allows).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How each connection authenticates.
    #[command(flatten)]
    pub credentials: Credentials,
    /// Subscribers of the topic.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publishers.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publications a publisher may have unanswered (its pipeline depth).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// How long to publish (`10s`, `1m`).
    #[arg(long, default_value = "10s")]
    pub duration: Seconds,
    /// Bytes of each publication's data (at least 20: publisher, sequence, time).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Stop after this many publications per publisher (the duration still bounds the run).
    #[arg(long)]
    pub messages: Option<u64>,
    /// The server's process id: its CPU time per delivery is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Then run the same load against the bare-transport reference (forwarding each PUB
    /// to the topic's subscribers as a MESSAGE) and print the two side by side.
    #[arg(long)]
    pub reference: bool,
}

/// The topic every connection of the run uses.
const TOPIC: &str = "bench/fanout";
/// After publishing stops, how long subscribers wait for the last messages.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What a fan-out run measured.
#[derive(Debug)]
pub struct FanoutReport {
    subscribers: usize,
    publishers: usize,
    published: u64,
    deliveries: u64,
    missing: u64,
    out_of_order: u64,
    failed_subscribers: usize,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    server: Option<Usage>,
    /// The same load against the reference, with `--reference`.
    reference: Option<Box<FanoutReport>>,
}

impl FanoutReport {
    /// Messages subscribers received.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Messages a subscriber never received, or received out of its publisher's order.
    pub fn faults(&self) -> u64 {
        self.missing + self.out_of_order
    }

    /// Deliveries per second and the publish → receive latency.
    pub fn figures(&self) -> Figures {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let rate = self.deliveries as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON);
        Figures { rate, p50_ms: ms(0.5), p99_ms: ms(0.99) }
    }
}

impl fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        writeln!(f, "subscribers {} · publishers {} · {:.1} s", self.subscribers, self.publishers, secs)?;
        writeln!(f, "published     {} ({:.0} msgs/s)", self.published, self.published as f64 / secs)?;
        writeln!(f, "deliveries    {} ({:.0} deliveries/s)", self.deliveries, self.deliveries as f64 / secs)?;
        writeln!(
            f,
            "missing {} · out of order {} · failed subscribers {}",
            self.missing, self.out_of_order, self.failed_subscribers
        )?;
        write!(
            f,
            "publish → receive p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
            ms(0.5),
            ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        )?;
        if let Some(server) = &self.server {
            write!(f, "\n{server} · {:.2} µs of server CPU per delivery", server.micros_per(self.deliveries))?;
        }
        if let Some(reference) = &self.reference {
            write!(f, "\n\nreference (bare fastwebsockets forwarding each PUB), same load:\n{reference}")?;
            let (syncgate, reference) = (self.figures(), reference.figures());
            let table = SideBySide { unit: "deliveries/s", latency: "publish → receive", syncgate, reference };
            write!(f, "\n\n{table}")?;
        }
        Ok(())
    }
}

/// A `MESSAGE` as the subscribers read it: only the data, borrowed from the frame.
#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default, borrow)]
    data: Option<&'a [u8]>,
}

struct SubscriberResult {
    deliveries: u64,
    missing: u64,
    out_of_order: u64,
    last_at: Instant,
    latency_us: Histogram<u64>,
}

/// Runs the `fanout` scenario (and, with `--reference`, the same against the reference).
pub async fn run_fanout(args: FanoutArgs) -> Result<FanoutReport, String> {
    let target = Target { url: &args.url, publisher_url: args.publisher_url.as_deref(), pid: args.server_pid };
    let mut report = measure_fanout(&args, target).await?;
    if args.reference {
        let child = ReferenceChild::start(Workload::Messages, None)?;
        let target = Target { url: child.url(), publisher_url: None, pid: Some(child.pid()) };
        report.reference = Some(Box::new(measure_fanout(&args, target).await?));
    }
    Ok(report)
}

/// Where one run's subscribers and publishers connect, and the server's process.
#[derive(Clone, Copy)]
struct Target<'a> {
    url: &'a str,
    publisher_url: Option<&'a str>,
    pid: Option<u32>,
}

/// One run of the fan-out load against `target`.
async fn measure_fanout(args: &FanoutArgs, target: Target<'_>) -> Result<FanoutReport, String> {
    if args.subscribers == 0 || args.publishers == 0 || args.window == 0 {
        return Err("--subscribers, --publishers and --window must be at least 1".into());
    }
    let epoch = Instant::now();
    // Each publisher's final sequence number, once it has stopped.
    let (finals_tx, finals) = tokio::sync::watch::channel(None::<Arc<Vec<u64>>>);
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(args.subscribers);
    for n in 0..args.subscribers {
        let token = args.credentials.token(&format!("fanout-sub-{n}"))?;
        let url = super::nth_url(target.url, n);
        let (finals, ready_tx, publishers) = (finals.clone(), ready_tx.clone(), args.publishers);
        subscribers.push(tokio::spawn(async move {
            subscribe_and_count(url, token, publishers, epoch, ready_tx, finals).await
        }));
    }
    drop(ready_tx);
    let mut failed_subscribers = 0;
    for _ in 0..args.subscribers {
        match ready.recv().await {
            Some(Ok(())) => {}
            Some(Err(_)) => failed_subscribers += 1,
            None => break,
        }
    }
    let before = target.pid.and_then(Sample::read);
    let started = Instant::now();
    let deadline = started + args.duration.0;
    let limit = args.messages.unwrap_or(u64::MAX);
    let mut publishers = Vec::with_capacity(args.publishers);
    for n in 0..args.publishers {
        let token = args.credentials.token(&format!("fanout-pub-{n}"))?;
        let url = target.publisher_url.map_or_else(|| super::nth_url(target.url, 0), str::to_string);
        let (window, bytes, rate) = (args.window, args.payload_bytes.max(20), args.rate);
        publishers.push(tokio::spawn(async move {
            publish_until(url, token, n, (window, rate), bytes, epoch, (deadline, limit)).await
        }));
    }
    let mut sent = Vec::with_capacity(args.publishers);
    for publisher in publishers {
        sent.push(publisher.await.map_err(|e| e.to_string())??);
    }
    let published = sent.iter().sum();
    let _ = finals_tx.send(Some(Arc::new(sent)));
    let mut report = FanoutReport {
        subscribers: args.subscribers,
        publishers: args.publishers,
        published,
        deliveries: 0,
        missing: 0,
        out_of_order: 0,
        failed_subscribers,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new(3).map_err(|e| e.to_string())?,
        server: None,
        reference: None,
    };
    let mut last_at = started;
    for subscriber in subscribers {
        match subscriber.await {
            Ok(Ok(result)) => {
                report.deliveries += result.deliveries;
                report.missing += result.missing;
                report.out_of_order += result.out_of_order;
                last_at = last_at.max(result.last_at);
                let _ = report.latency_us.add(&result.latency_us);
            }
            _ => report.failed_subscribers += 1,
        }
    }
    report.failed_subscribers = report.failed_subscribers.min(args.subscribers);
    report.elapsed = last_at.saturating_duration_since(started);
    if let (Some(before), Some(after)) = (before, target.pid.and_then(Sample::read)) {
        report.server = Some(Usage::between(before, after, started.elapsed().as_secs_f64()));
    }
    if report.failed_subscribers == args.subscribers {
        return Err("every subscriber failed".into());
    }
    Ok(report)
}

async fn subscribe_and_count(
    url: String,
    token: Option<String>,
    publishers: usize,
    epoch: Instant,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    mut finals: tokio::sync::watch::Receiver<Option<Arc<Vec<u64>>>>,
) -> Result<SubscriberResult, String> {
    let subscribed = async {
        let mut ws = open_authenticated(&url, token).await?;
        send(&mut ws, &ClientMessage::Sub { id: 1, topic: TOPIC.into() }).await?;
        loop {
            let frame = ws.read_frame().await.map_err(|e| e.to_string())?;
            if frame.opcode != OpCode::Binary {
                continue;
            }
            match rmp_serde::from_slice::<ServerMessage>(&frame.payload).map_err(|e| e.to_string())? {
                ServerMessage::Ok { id: 1 } => break,
                ServerMessage::Error { code, message, .. } => return Err(format!("SUB refused: {code}: {message}")),
                _ => continue,
            }
        }
        Ok::<_, String>(ws)
    }
    .await;
    let mut ws = match subscribed {
        Ok(ws) => {
            let _ = ready.send(Ok(())).await;
            ws
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone())).await;
            return Err(e);
        }
    };
    let mut result = SubscriberResult {
        deliveries: 0,
        missing: 0,
        out_of_order: 0,
        last_at: Instant::now(),
        latency_us: Histogram::new(3).map_err(|e| e.to_string())?,
    };
    let mut next = vec![1u64; publishers];
    let mut drain_until = None;
    loop {
        let target = finals.borrow().clone();
        if let Some(target) = &target {
            if next.iter().zip(target.iter()).all(|(n, last)| *n > *last) {
                break;
            }
            drain_until.get_or_insert(Instant::now() + DRAIN_LIMIT);
        }
        let frame = tokio::select! {
            frame = ws.read_frame() => frame.map_err(|e| e.to_string())?,
            _ = finals.changed(), if target.is_none() => continue,
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(|| Instant::now() + DRAIN_LIMIT).into()), if drain_until.is_some() => break,
        };
        if frame.opcode == OpCode::Close {
            return Err("the server closed the subscriber".into());
        }
        if frame.opcode != OpCode::Binary {
            continue;
        }
        let delivery: Delivery<'_> = rmp_serde::from_slice(&frame.payload).map_err(|e| e.to_string())?;
        let Some(data) = delivery.data.filter(|_| delivery.kind == "MESSAGE") else { continue };
        let Some((publisher, seq, sent_us)) = stamp(data) else { continue };
        let Some(expected) = next.get_mut(publisher) else { continue };
        result.deliveries += 1;
        result.last_at = Instant::now();
        if seq < *expected {
            result.out_of_order += 1;
            continue;
        }
        result.missing += seq - *expected;
        *expected = seq + 1;
        let now_us = micros(epoch.elapsed());
        let _ = result.latency_us.record(now_us.saturating_sub(sent_us));
    }
    if let Some(target) = finals.borrow().clone() {
        result.missing += next.iter().zip(target.iter()).map(|(n, last)| (last + 1).saturating_sub(*n)).sum::<u64>();
    }
    let _ = ws.write_frame(Frame::close(1000, b"")).await;
    Ok(result)
}

/// Publishes with up to `window` `PUB`s unanswered (and at most `rate` a
/// second, when not 0) until `deadline`; returns how many were acknowledged.
async fn publish_until(
    url: String,
    token: Option<String>,
    publisher: usize,
    (window, rate): (usize, u64),
    payload_bytes: usize,
    epoch: Instant,
    (deadline, limit): (Instant, u64),
) -> Result<u64, String> {
    let mut ws = open_authenticated(&url, token).await?;
    let (mut sent, mut answered) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        while sent - answered < window as u64 && sent < limit && Instant::now() < deadline {
            if let Some(offset) = (sent * 1_000_000).checked_div(rate) {
                let due = started + Duration::from_micros(offset);
                if due > Instant::now() {
                    if sent > answered {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            sent += 1;
            let mut data = vec![0u8; payload_bytes];
            data[..4].copy_from_slice(&(publisher as u32).to_be_bytes());
            data[4..12].copy_from_slice(&sent.to_be_bytes());
            data[12..20].copy_from_slice(&micros(epoch.elapsed()).to_be_bytes());
            let message = ClientMessage::Pub { id: sent, topic: TOPIC.into(), data: Value::Binary(data) };
            send(&mut ws, &message).await?;
        }
        if answered == sent && (sent >= limit || Instant::now() >= deadline) {
            break;
        }
        if answered == sent {
            continue;
        }
        let frame = ws.read_frame().await.map_err(|e| e.to_string())?;
        match frame.opcode {
            OpCode::Binary => {}
            OpCode::Close => return Err("the server closed the publisher".into()),
            _ => continue,
        }
        let kind: Delivery<'_> = rmp_serde::from_slice(&frame.payload).map_err(|e| e.to_string())?;
        match kind.kind {
            "OK" => answered += 1,
            "ERROR" => {
                let message: ServerMessage = rmp_serde::from_slice(&frame.payload).map_err(|e| e.to_string())?;
                return Err(format!("PUB refused: {message:?} (start the server with --messages-per-second 0)"));
            }
            _ => {}
        }
    }
    let _ = ws.write_frame(Frame::close(1000, b"")).await;
    Ok(sent)
}

fn stamp(data: &[u8]) -> Option<(usize, u64, u64)> {
    let publisher = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let seq = u64::from_be_bytes(data.get(4..12)?.try_into().ok()?);
    let sent_us = u64::from_be_bytes(data.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, sent_us))
}

async fn send(ws: &mut FragmentCollector<Socket>, message: &ClientMessage) -> Result<(), String> {
    let bytes = encode_client(message);
    ws.write_frame(Frame::binary(Payload::Borrowed(&bytes))).await.map_err(|e| e.to_string())
}
