//! `syncgate connect URL …`: talk to a server from a shell.
//!
//! Authenticates (sending `--token` when the server asks with
//! `AUTH_REQUIRED`), sends the command line's `SUB`s and `SYNC`s once
//! `AUTH_ACK` arrives and its `PUB`s and writes once those are in place (so
//! it sees its own publications and writes come back), prints every server
//! message as one JSON line on stdout, and exits with a status derived from
//! the close code ([`exit_status`]), so a deploy script can tell "token
//! refused" (1) from "token expired" (100). It runs on
//! the Rust client crate's [`Session`], so it also proves that crate from a
//! shell.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rmpv::Value;
use syncgate::protocol::ClientMessage;
use syncgate::protocol::codes::close;
use syncgate_client::ClientError;
use syncgate_client::replica::Replica;
use syncgate_client::session::{Session, SessionEvent};

use super::Seconds;

/// The largest server message `connect` accepts (a `SYNC_DATA` page is 8 MiB by default).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long to wait for the server's close frame after closing ourselves.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The exit statuses, as `syncgate connect --help` shows them ([`exit_status`] decides).
const EXIT_STATUSES: &str = "\
Exit status (close codes do not fit in 0-255):
  0        closed with 1000 (also after --once, --duration, Ctrl-C)
  1-254    closed with 4001-4254: the code - 4000 (1 token refused, 3 forbidden, 8 auth timeout,
           29 rate limited, 100 token expired, 200 slow consumer)
  2        bad command line or URL (the protocol has no close code 4002)
  250      closed with 4000 (malformed)
  251      closed with 1001 (going away)
  252      closed with 1002 (WebSocket protocol error)
  253      closed with 1009 (message too big)
  254      any other close code
  255      no close frame: nothing listening, or the connection broke";

/// Flags of `syncgate connect`.
#[derive(Debug, Args)]
#[command(after_help = EXIT_STATUSES)]
pub struct ConnectArgs {
    /// The server's WebSocket URL: ws://host:port/ws or wss://host/ws.
    pub url: String,
    /// The token sent in AUTH when the server asks for one (AUTH_REQUIRED); without it the
    /// AUTH carries none (a server in auth mode none never asks).
    #[arg(long, env = "SYNCGATE_CONNECT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Subscribe to TOPIC (repeatable); MESSAGEs are printed as they arrive.
    #[arg(long = "sub", value_name = "TOPIC")]
    pub subs: Vec<String>,
    /// Sync COLLECTION (repeatable): its SYNC_DATA, then every CHANGE.
    #[arg(long = "sync", value_name = "COLLECTION")]
    pub syncs: Vec<String>,
    /// Publish DATA to TOPIC (repeatable), once every --sub and --sync is in place; DATA is JSON, or
    /// a string when it does not parse as JSON.
    #[arg(long = "pub", num_args = 2, value_names = ["TOPIC", "DATA"])]
    pub pubs: Vec<String>,
    /// Write the JSON value to COLLECTION/KEY (repeatable; `null` deletes), stamped now by this
    /// client's hybrid logical clock; all writes go in one OP_BATCH, once every --sub and --sync is
    /// in place.
    #[arg(long = "write", num_args = 3, value_names = ["COLLECTION", "KEY", "JSON"])]
    pub writes: Vec<String>,
    /// Close (1000) and exit once every request above is answered (a SYNC once its whole snapshot
    /// has arrived); with no request, right after AUTH_ACK: a check that authentication works.
    #[arg(long)]
    pub once: bool,
    /// Close (1000) after this long (`30`, `2m`) [default: stay until the server closes or Ctrl-C].
    #[arg(long)]
    pub duration: Option<Seconds>,
    /// PEM file of CA certificates trusted for wss://, besides the bundled Mozilla roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// The process exit status for how the connection ended (exit statuses are
/// 0–255, close codes are not):
///
/// | how it ended | status |
/// | --- | --- |
/// | close 1000 (normal; also after `--once`, `--duration`, Ctrl-C) | 0 |
/// | close 4001–4254 | code − 4000: 4001 → 1, 4003 → 3, 4008 → 8, 4029 → 29, 4100 → 100, 4200 → 200 |
/// | a bad command line or URL (never a close: the protocol has no 4002) | 2 |
/// | close 4000 | 250 |
/// | close 1001 | 251 |
/// | close 1002 | 252 |
/// | close 1009 | 253 |
/// | any other close code | 254 |
/// | no close frame: could not connect, or the connection broke | 255 |
pub fn exit_status(code: Option<u16>) -> u8 {
    match code {
        Some(close::NORMAL) => 0,
        Some(code @ 4001..=4254) => (code - 4000) as u8,
        Some(close::MALFORMED) => 250,
        Some(close::GOING_AWAY) => 251,
        Some(close::PROTOCOL_ERROR) => 252,
        Some(close::MESSAGE_TOO_BIG) => 253,
        Some(_) => 254,
        None => 255,
    }
}

/// What the command line asks for, checked before connecting.
struct Plan {
    token: Option<String>,
    /// `SUB`s and `SYNC`s: sent first, after `AUTH_ACK`.
    listen: Vec<ClientMessage>,
    /// `PUB`s and the `OP_BATCH`: sent once every `SUB` and `SYNC` is in place,
    /// so the session sees its own publications and writes come back.
    act: Vec<ClientMessage>,
    once: bool,
    duration: Option<Duration>,
}

impl ConnectArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let (mut listen, mut act) = (Vec::new(), Vec::new());
        let mut id = 0u64;
        let mut next_id = || {
            id += 1;
            id
        };
        for topic in &self.subs {
            listen.push(ClientMessage::Sub { id: next_id(), topic: topic.clone() });
        }
        for collection in &self.syncs {
            listen.push(ClientMessage::Sync { id: next_id(), collection: collection.clone(), since: None });
        }
        for pair in self.pubs.chunks_exact(2) {
            // Anything that is not JSON is taken as the string it is: `--pub room hello`.
            let json = serde_json::from_str(&pair[1]).unwrap_or_else(|_| serde_json::Value::String(pair[1].clone()));
            act.push(ClientMessage::Pub { id: next_id(), topic: pair[0].clone(), data: to_msgpack(&json)? });
        }
        if !self.writes.is_empty() {
            let mut replica = Replica::new(&format!("connect-{:08x}", fastrand::u32(..)));
            let mut ops = Vec::new();
            for triple in self.writes.chunks_exact(3) {
                let json: serde_json::Value = serde_json::from_str(&triple[2])
                    .with_context(|| format!("--write {} {}: the value is not JSON", triple[0], triple[1]))?;
                let op = replica.write(&triple[0], &triple[1], to_msgpack(&json)?, syncgate_proto::time::unix_ms());
                ops.push(op.to_wire());
            }
            act.push(ClientMessage::OpBatch { id: next_id(), ops });
        }
        let duration = self.duration.map(|Seconds(d)| d);
        Ok(Plan { token: self.token.clone(), listen, act, once: self.once, duration })
    }

    fn tls(&self) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
        if !self.url.starts_with("wss://") {
            return Ok(None);
        }
        let config = syncgate::tls::client_config(self.ca_file.as_deref(), "--ca-file").map_err(anyhow::Error::msg)?;
        Ok(Some(Arc::new(config)))
    }
}

/// A JSON value as the MessagePack value the protocol carries.
fn to_msgpack(json: &serde_json::Value) -> anyhow::Result<Value> {
    rmpv::ext::to_value(json).map_err(|e| anyhow::anyhow!("cannot encode {json}: {e}"))
}

/// Runs `syncgate connect` to its end.
pub fn run(args: ConnectArgs) -> ExitCode {
    let setup = args.plan().and_then(|plan| Ok((plan, args.tls()?)));
    let (plan, tls) = match setup {
        Ok(setup) => setup,
        Err(e) => return super::run::fail(&format!("{e:#}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return super::run::fail(&format!("cannot start the runtime: {e}")),
    };
    let (code, reason) = match runtime.block_on(Session::open(&args.url, tls.as_ref(), MAX_MESSAGE_BYTES)) {
        Ok(session) => runtime.block_on(converse(session, plan)),
        // A URL that cannot work is a bad command line, not a failed connection.
        Err(ClientError::Config(e)) => return super::run::fail(&e),
        Err(e) => (None, e.to_string()),
    };
    if code != Some(close::NORMAL) {
        let shown = code.map_or_else(|| "no close code".to_string(), |c| format!("close {c}"));
        let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        eprintln!("syncgate: connection ended: {shown}{reason}");
    }
    ExitCode::from(exit_status(code))
}

/// Which of the command line's requests are still unanswered.
#[derive(Default)]
struct Outstanding {
    ids: HashSet<u64>,
    /// Syncs whose snapshot continues in `CHANGE` pages, by collection.
    paging: HashMap<String, u64>,
}

impl Outstanding {
    /// Whether every request has its whole answer.
    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.paging.is_empty()
    }

    /// Takes note of one server message.
    fn answered_by(&mut self, message: &Value) {
        let field = |name: &str| message.as_map()?.iter().find(|(k, _)| k.as_str() == Some(name)).map(|(_, v)| v);
        let more = field("more").and_then(Value::as_bool).unwrap_or(false);
        let collection = field("collection").and_then(Value::as_str).map(str::to_string);
        if let Some(id) = field("id").and_then(Value::as_u64)
            && self.ids.remove(&id)
            && more
            && let Some(collection) = &collection
        {
            self.paging.insert(collection.clone(), id);
        }
        let is_change = field("type").and_then(Value::as_str) == Some("CHANGE");
        if is_change
            && !more
            && let Some(collection) = &collection
        {
            self.paging.remove(collection);
        }
    }
}

/// One connection: returns its close code (`None`: it broke) and reason.
async fn converse(mut session: Session, plan: Plan) -> (Option<u16>, String) {
    let Plan { token, listen, act, once, duration } = plan;
    let listen_ids: HashSet<u64> = listen.iter().filter_map(request_id).collect();
    let mut outstanding =
        Outstanding { ids: listen.iter().chain(&act).filter_map(request_id).collect(), ..Outstanding::default() };
    // What is still to send: `listen` after AUTH_ACK, then `act` once `listen` is answered.
    let mut listen = Some(listen);
    let mut act = Some(act);
    let far = Duration::from_secs(100 * 365 * 24 * 3600);
    let until = tokio::time::sleep(duration.unwrap_or(far));
    tokio::pin!(until);
    let mut closing: Option<tokio::time::Instant> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let close_deadline = tokio::time::sleep_until(closing.unwrap_or_else(|| tokio::time::Instant::now() + far));
        let close_now = tokio::select! {
            event = session.next() => match event {
                SessionEvent::Closed { code, reason } => return (code, reason),
                SessionEvent::Message(message) => {
                    print_json(&message);
                    let mut send = Vec::new();
                    match message_type(&message) {
                        Some("AUTH_REQUIRED") => send.push(ClientMessage::Auth { token: token.clone() }),
                        // A later AUTH_ACK answers a refresh: the requests went out after the first.
                        Some("AUTH_ACK") => send.extend(listen.take().unwrap_or_default()),
                        _ => {
                            outstanding.answered_by(&message);
                        }
                    }
                    if listen.is_none() && listen_ids.is_disjoint(&outstanding.ids) {
                        send.extend(act.take().unwrap_or_default());
                    }
                    for request in &send {
                        if let Err(e) = session.send(request).await {
                            return (None, e.to_string());
                        }
                    }
                    once && act.is_none() && outstanding.is_empty()
                }
            },
            _ = &mut until, if closing.is_none() => true,
            _ = &mut interrupted, if closing.is_none() => true,
            _ = close_deadline, if closing.is_some() => return (Some(close::NORMAL), "the server did not answer the close".into()),
        };
        if close_now && closing.is_none() {
            if let Err(e) = session.close(close::NORMAL).await {
                return (None, e.to_string());
            }
            closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
        }
    }
}

fn request_id(request: &ClientMessage) -> Option<u64> {
    match request {
        ClientMessage::Sub { id, .. }
        | ClientMessage::Sync { id, .. }
        | ClientMessage::Pub { id, .. }
        | ClientMessage::OpBatch { id, .. } => Some(*id),
        _ => None,
    }
}

fn message_type(message: &Value) -> Option<&str> {
    message.as_map()?.iter().find(|(k, _)| k.as_str() == Some("type")).and_then(|(_, v)| v.as_str())
}

/// One server message as one JSON line (binary as an array of bytes).
fn print_json(message: &Value) {
    match serde_json::to_string(message) {
        Ok(line) => println!("{line}"),
        // Only a map with non-string keys cannot be JSON; say what it was rather than drop it.
        Err(e) => println!("{}", serde_json::json!({"unprintable": format!("{message}"), "error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_to_distinct_documented_statuses() {
        let table = [
            (Some(1000), 0),
            (Some(4001), 1),
            (Some(4003), 3),
            (Some(4008), 8),
            (Some(4029), 29),
            (Some(4100), 100),
            (Some(4200), 200),
            (Some(4000), 250),
            (Some(1001), 251),
            (Some(1002), 252),
            (Some(1009), 253),
            (Some(1011), 254),
            (Some(4999), 254),
            (None, 255),
        ];
        for (code, status) in table {
            assert_eq!(exit_status(code), status, "{code:?}");
        }
        // Every close code of the catalogue gets its own status, none of them clap's usage error 2.
        let statuses: HashSet<u8> = close::ALL.iter().map(|&c| exit_status(Some(c))).collect();
        assert_eq!(statuses.len(), close::ALL.len());
        assert!(!statuses.contains(&2));
        // The help states the same table.
        for (code, status) in [(1000, 0), (4000, 250), (1001, 251), (1002, 252), (1009, 253)] {
            let row = EXIT_STATUSES.lines().find(|l| l.contains(&format!("closed with {code}"))).unwrap();
            assert!(row.trim_start().starts_with(&status.to_string()), "{row}");
            assert_eq!(exit_status(Some(code)), status);
        }
    }

    #[test]
    fn bad_write_values_are_refused_before_connecting() {
        let args = |writes: &[&str]| ConnectArgs {
            url: "ws://127.0.0.1:1/ws".into(),
            token: None,
            subs: vec![],
            syncs: vec![],
            pubs: vec!["room".into(), "hello there".into()],
            writes: writes.iter().map(|s| s.to_string()).collect(),
            once: true,
            duration: None,
            ca_file: None,
        };
        let err = args(&["todos", "t1", "{not json"]).plan().err().expect("refused").to_string();
        assert!(err.contains("--write todos t1"), "{err}");
        let plan = args(&["todos", "t1", "{\"title\": \"x\"}"]).plan().expect("a plan");
        assert!(plan.listen.is_empty());
        assert_eq!(plan.act.len(), 2, "one PUB, one OP_BATCH");
        assert!(matches!(&plan.act[0], ClientMessage::Pub { data, .. } if data.as_str() == Some("hello there")));
    }
}
