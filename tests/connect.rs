//! `syncgate connect` against the real server binary, one test per auth mode:
//! it authenticates, prints every server message as one JSON line, and exits
//! with the status its close code maps to (0 for 1000, 1 for 4001, 100 for 4100).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};

use common::idp::Idp;
use common::{SECRET, hs256, now, syncgate, token};
use serde_json::{Value, json};

/// A `syncgate serve` process on an ephemeral port, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let (child, addr) = common::spawn_serve(["--store", "memory"].iter().chain(args), Stdio::null());
        Self { child, addr }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `syncgate connect URL args…` to its end.
fn connect(url: &str, args: &[&str]) -> Output {
    syncgate().arg("connect").arg(url).args(args).output().expect("connect runs")
}

/// Stdout as JSON lines: every line must be one JSON object with a `type`.
fn messages(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8(out.stdout.clone()).expect("UTF-8");
    stdout
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON line: {line:?}: {e}"));
            assert!(value["type"].is_string(), "{line}");
            value
        })
        .collect()
}

fn of_type<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == kind).collect()
}

fn status(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("connect was killed: {out:?}"))
}

#[test]
fn mode_none_runs_every_request_and_exits_0_once_answered() {
    let server = Server::start(&["--anonymous-roles", "user"]);
    let out = connect(
        &server.url(),
        &[
            "--sub",
            "rooms/lobby",
            "--sync",
            "todos",
            "--pub",
            "rooms/lobby",
            r#"{"text": "hi"}"#,
            "--write",
            "todos",
            "t1",
            r#"{"title": "milk"}"#,
            "--once",
        ],
    );
    assert_eq!(status(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let seen = messages(&out);
    assert_eq!(seen[0]["type"], "AUTH_ACK", "mode none acknowledges at once: {seen:?}");
    assert_eq!(seen[0]["sub"], "anonymous");
    assert_eq!(seen[0]["roles"], json!(["user"]));
    let delivered = of_type(&seen, "MESSAGE");
    assert_eq!(delivered.len(), 1, "{seen:?}");
    assert_eq!(delivered[0]["data"], json!({"text": "hi"}));
    assert_eq!(delivered[0]["from"], "anonymous");
    assert_eq!(of_type(&seen, "SYNC_DATA").len(), 1, "{seen:?}");
    let results = of_type(&seen, "OP_RESULT");
    assert_eq!(results.len(), 1, "{seen:?}");
    assert_eq!(results[0]["results"][0]["ok"], true, "{seen:?}");
    // The write is stored: a second connection's snapshot holds it.
    let again = messages(&connect(&server.url(), &["--sync", "todos", "--once"]));
    let snapshot = of_type(&again, "SYNC_DATA");
    assert_eq!(snapshot[0]["records"][0]["key"], "t1", "{again:?}");
    assert_eq!(snapshot[0]["records"][0]["value"], json!({"title": "milk"}));
}

#[test]
fn mode_token_sends_the_token_when_asked_and_exits_1_on_4001() {
    let secret = "a-static-token-for-the-connect-test";
    let server = Server::start(&["--auth", "token", "--token", secret, "--token-sub", "homelab"]);
    let out = connect(&server.url(), &["--token", secret, "--once"]);
    assert_eq!(status(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let seen = messages(&out);
    assert_eq!(seen[0]["type"], "AUTH_REQUIRED", "{seen:?}");
    assert_eq!(seen[0]["protocolVersion"], 1);
    assert_eq!(seen[1]["type"], "AUTH_ACK", "{seen:?}");
    assert_eq!(seen[1]["sub"], "homelab");

    let wrong = connect(&server.url(), &["--token", "not-the-token", "--once"]);
    assert_eq!(status(&wrong), 1, "4001 exits 1: {}", String::from_utf8_lossy(&wrong.stderr));
    let seen = messages(&wrong);
    assert_eq!(seen.last().unwrap()["type"], "AUTH_FAIL", "{seen:?}");
    assert_eq!(seen.last().unwrap()["code"], "token_invalid");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("close 4001"), "stderr says why");

    // No token at all: the AUTH carries none and the server refuses it.
    let missing = connect(&server.url(), &["--once"]);
    assert_eq!(status(&missing), 1);
    assert_eq!(messages(&missing).last().unwrap()["code"], "token_missing");
}

#[test]
fn mode_jwt_authenticates_and_exits_100_on_4100() {
    let server = Server::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0"]);
    let alice = token("alice", &["user"]);
    let out = connect(&server.url(), &["--token", &alice, "--write", "notes", "n1", "\"hello\"", "--once"]);
    assert_eq!(status(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let seen = messages(&out);
    assert_eq!(seen[1]["type"], "AUTH_ACK", "{seen:?}");
    assert_eq!(seen[1]["sub"], "alice");
    assert_eq!(of_type(&seen, "OP_RESULT")[0]["results"][0]["ok"], true, "{seen:?}");

    // A token that has expired: AUTH_FAIL token_expired, close 4100, exit 100.
    let expired = hs256(json!({"sub": "alice", "exp": now() - 600}));
    let out = connect(&server.url(), &["--token", &expired]);
    assert_eq!(status(&out), 100, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(messages(&out).last().unwrap()["code"], "token_expired");

    // A session that reaches its token's expiry: TOKEN_EXPIRING, then 4100.
    let short = hs256(json!({"sub": "alice", "exp": now() + 2}));
    let out = connect(&server.url(), &["--token", &short, "--duration", "30"]);
    assert_eq!(status(&out), 100, "{}", String::from_utf8_lossy(&out.stderr));
    let seen = messages(&out);
    assert_eq!(seen[1]["type"], "AUTH_ACK", "{seen:?}");
    assert_eq!(of_type(&seen, "TOKEN_EXPIRING").len(), 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_introspect_authenticates_through_the_endpoint() {
    let idp = Idp::start().await;
    idp.answer("opaque-carol", json!({"active": true, "sub": "carol"}));
    idp.answer("opaque-gone", json!({"active": false}));
    let url = idp.introspect_url();
    let out = tokio::task::spawn_blocking(move || {
        let server = Server::start(&["--auth", "introspect", "--introspect-url", &url, "--introspect-token", "t"]);
        let ok = connect(&server.url(), &["--token", "opaque-carol", "--once"]);
        let refused = connect(&server.url(), &["--token", "opaque-gone", "--once"]);
        (ok, refused)
    })
    .await
    .unwrap();
    let (ok, refused) = out;
    assert_eq!(status(&ok), 0, "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(messages(&ok)[1]["sub"], "carol");
    assert_eq!(status(&refused), 1, "an inactive token is 4001");
    assert_eq!(messages(&refused).last().unwrap()["code"], "token_invalid");
}

#[test]
fn a_server_that_is_not_there_is_255_and_bad_input_is_2() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = connect(&format!("ws://{addr}/ws"), &["--once"]);
    assert_eq!(status(&out), 255);
    assert!(out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "one line says why");

    let out = connect("ws://127.0.0.1:1/ws", &["--write", "todos", "t1", "{not json"]);
    assert_eq!(status(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--write todos t1"));
    let out = connect("http://127.0.0.1:1/ws", &["--once"]);
    assert_eq!(status(&out), 2, "a URL that is not ws:// or wss:// is a bad command line");
}

#[test]
fn wss_with_a_private_ca_and_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&[
        "--anonymous-roles",
        "user",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let out = connect(&url, &["--ca-file", cert.to_str().unwrap(), "--once"]);
    assert_eq!(status(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(messages(&out)[0]["type"], "AUTH_ACK");
    // The Mozilla roots alone do not trust a private certificate: no connection, 255.
    let untrusted = connect(&url, &["--once"]);
    assert_eq!(status(&untrusted), 255);
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("TLS"), "says why");
    let missing = connect(&url, &["--ca-file", "/nonexistent/ca.pem", "--once"]);
    assert_eq!(status(&missing), 2, "an unreadable --ca-file is a bad command line");
}
