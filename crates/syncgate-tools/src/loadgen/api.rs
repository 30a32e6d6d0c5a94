//! `syncgate bench api-publish` and `syncgate bench feed`: the server API's
//! publish throughput, and how fast the change feed catches up from cursor 0.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::Credentials;
use super::micros;

/// Flags of `syncgate bench api-publish` and `syncgate bench feed`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// How each connection authenticates.
    #[command(flatten)]
    pub credentials: Credentials,
    /// Requests (api-publish) or records (feed).
    #[arg(long, default_value_t = 100_000)]
    pub count: usize,
    /// Concurrent HTTP connections (api-publish).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// What one API run measured.
pub struct ApiReport {
    what: &'static str,
    count: usize,
    elapsed: Duration,
    latency_us: Option<Histogram<u64>>,
    setup: Option<Duration>,
}

impl fmt::Display for ApiReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        write!(f, "{}: {} in {:.2} s = {:.0}/s", self.what, self.count, secs, self.count as f64 / secs)?;
        if let Some(h) = &self.latency_us {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            write!(
                f,
                "\nrequest latency p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
                ms(0.5),
                ms(0.99),
                h.max() as f64 / 1000.0
            )?;
        }
        if let Some(setup) = self.setup {
            write!(f, "\n(writing them through the API took {:.2} s, not counted)", setup.as_secs_f64())?;
        }
        Ok(())
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn post(sender: &mut SendRequest<Full<Bytes>>, token: &str, path: &str, body: String) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = hyper::Request::post(path)
        .header("host", "bench")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("{path}: {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(())
}

/// Runs `api-publish`: `count` publications over `concurrency` keep-alive connections.
pub async fn run_api_publish(args: ApiArgs) -> Result<ApiReport, String> {
    let token = args.credentials.token("bench-api")?.ok_or("a token is needed")?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (addr, token, next, count) = (args.addr.clone(), token.clone(), next.clone(), args.count);
        workers.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await?;
            let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let sent = Instant::now();
                let body = r#"{"topic":"bench/api","data":{"n":1}}"#.to_string();
                post(&mut sender, &token, "/api/publish", body).await?;
                let _ = latency.record(micros(sent.elapsed()));
            }
            Ok::<_, String>(latency)
        }));
    }
    let mut latency = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    for worker in workers {
        let _ = latency.add(&worker.await.map_err(|e| e.to_string())??);
    }
    Ok(ApiReport {
        what: "API publishes",
        count: args.count,
        elapsed: started.elapsed(),
        latency_us: Some(latency),
        setup: None,
    })
}

/// Runs `feed`: writes `count` records through the API, then reads the change
/// feed from cursor 0 until every record arrived.
pub async fn run_feed(args: ApiArgs) -> Result<ApiReport, String> {
    let token = args.credentials.token("bench-feed")?.ok_or("a token is needed")?;
    let collection = format!("bench/feed-{}", std::process::id());
    let writing = Instant::now();
    let mut sender = connect(&args.addr).await?;
    for start in (0..args.count).step_by(1000) {
        let ops: Vec<String> = (start..(start + 1000).min(args.count))
            .map(|n| format!(r#"{{"key":"k{n}","value":{{"n":{n},"text":"{}"}}}}"#, "x".repeat(64)))
            .collect();
        post(
            &mut sender,
            &token,
            &format!("/api/collections/{collection}/ops"),
            format!(r#"{{"ops":[{}]}}"#, ops.join(",")),
        )
        .await?;
    }
    let setup = writing.elapsed();
    let tcp = tokio::net::TcpStream::connect(&args.addr).await.map_err(|e| e.to_string())?;
    let (mut feed, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let started = Instant::now();
    let request = hyper::Request::get(format!("/api/collections/{collection}/changes"))
        .header("host", "bench")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let mut body = feed.send_request(request).await.map_err(|e| e.to_string())?.into_body();
    let (mut seen, mut pending) = (0usize, Vec::new());
    while seen < args.count {
        let frame = body.frame().await.ok_or("the feed ended early")?.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        pending.extend_from_slice(&data);
        // Count records in every complete event; a record is one `"hlc":` in its data line.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            seen += event.windows(6).filter(|w| w == b"\"hlc\":").count();
        }
    }
    Ok(ApiReport {
        what: "change feed records from cursor 0",
        count: seen,
        elapsed: started.elapsed(),
        latency_us: None,
        setup: Some(setup),
    })
}
