//! Shared helpers for the integration tests: a real server on 127.0.0.1:0,
//! a raw WebSocket client that can send anything, and token minting.
#![allow(dead_code)]

pub mod cluster;
pub mod idp;
pub mod nats;
pub mod nodes;
pub mod postgres;
pub mod raw;
pub mod sse;
pub mod stores;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, handshake};
use http_body_util::Empty;
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rmpv::Value;
use serde_json::json;
use syncgate::ServerConfig;
use syncgate::auth::{JwtKey, JwtSettings, JwtVerifier};
use syncgate::node::Node;
use syncgate::protocol::{ClientMessage, ServerMessage, encode_client};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// A server running in this test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<std::io::Result<()>>,
    /// The node it serves: rules reloads, draining, metrics.
    pub node: Arc<Node>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, config).await
    }

    pub async fn on(listener: TcpListener, config: ServerConfig) -> Self {
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let node = Node::open(config, shutdown.clone()).await.unwrap();
        let handle = tokio::spawn(syncgate::server::serve(listener, None, node.clone()));
        Self { addr, shutdown, handle, node }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

pub fn now() -> u64 {
    syncgate::clock::unix_secs()
}

/// A server config verifying HS256/384/512 with [`SECRET`].
pub fn jwt_config() -> ServerConfig {
    config_with_key(JwtSettings::new(JwtKey::Secret(SECRET.as_bytes().to_vec())))
}

pub fn config_with_key(settings: JwtSettings) -> ServerConfig {
    ServerConfig { authenticator: Arc::new(JwtVerifier::new(settings).unwrap()), ..ServerConfig::default() }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Signs arbitrary claims.
pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

/// An HS256 token for `sub` with `roles`, valid for an hour.
pub fn token(sub: &str, roles: &[&str]) -> String {
    hs256(json!({"sub": sub, "roles": roles, "exp": now() + 3600}))
}

pub fn hs256(claims: serde_json::Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), &claims)
}

/// `(sub, roles, expiresAt)` of an `AUTH_ACK` (panics on anything else).
pub fn identity_of(message: ServerMessage) -> (String, Vec<String>, Option<u64>) {
    match message {
        ServerMessage::AuthAck { sub, roles, expires_at, .. } => (sub, roles, expires_at),
        other => panic!("expected AUTH_ACK, got {other:?}"),
    }
}

/// What a raw client received.
#[derive(Debug, Clone, PartialEq)]
pub enum Recv {
    Msg(ServerMessage),
    Close(u16, String),
    /// The connection ended without a close frame.
    Eof,
    Timeout,
}

/// A raw WebSocket client: sends any bytes, sees every close code.
pub struct RawWs {
    ws: WebSocket<TokioIo<Upgraded>>,
    /// Messages read past by [`RawWs::msg_where`], handed out first by `recv`.
    stash: std::collections::VecDeque<ServerMessage>,
}

impl RawWs {
    pub async fn connect(url_path: &str, addr: SocketAddr) -> Self {
        Self::try_connect(url_path, addr).await.unwrap()
    }

    pub async fn try_connect(url_path: &str, addr: SocketAddr) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        Self::handshake(url_path, addr, tcp).await
    }

    pub async fn handshake<S>(url_path: &str, addr: SocketAddr, stream: S) -> Result<Self, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        Self::handshake_with(url_path, addr, stream, &[]).await
    }

    /// Connects with extra request headers (Origin, Cookie).
    pub async fn connect_with(url_path: &str, addr: SocketAddr, headers: &[(&str, &str)]) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        Self::handshake_with(url_path, addr, tcp, headers).await
    }

    pub async fn handshake_with<S>(
        url_path: &str,
        addr: SocketAddr,
        stream: S,
        headers: &[(&str, &str)],
    ) -> Result<Self, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let mut builder = Request::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .method("GET")
            .uri(url_path)
            .header("Host", addr.to_string())
            .header("Upgrade", "websocket")
            .header("Connection", "upgrade")
            .header("Sec-WebSocket-Key", handshake::generate_key())
            .header("Sec-WebSocket-Version", "13")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (mut ws, _) = handshake::client(&Spawn, request, stream).await.map_err(|e| e.to_string())?;
        ws.set_auto_close(false);
        ws.set_max_message_size(64 << 20);
        Ok(Self { ws, stash: Default::default() })
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        self.send_bytes(&encode_client(message)).await;
    }

    /// Sends a message, reporting a broken connection instead of panicking.
    pub async fn try_send(&mut self, message: &ClientMessage) -> Result<(), String> {
        let bytes = encode_client(message);
        self.ws.write_frame(Frame::binary(Payload::Owned(bytes.to_vec()))).await.map_err(|e| e.to_string())
    }

    pub async fn send_value(&mut self, value: &Value) {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.ws.write_frame(Frame::binary(Payload::Owned(bytes.to_vec()))).await.unwrap();
    }

    pub async fn send_frame(&mut self, frame: Frame<'_>) {
        self.ws.write_frame(frame).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec()))).await.unwrap();
    }

    pub async fn recv(&mut self) -> Recv {
        self.recv_within(Duration::from_secs(10)).await
    }

    pub async fn recv_within(&mut self, limit: Duration) -> Recv {
        if let Some(message) = self.stash.pop_front() {
            return Recv::Msg(message);
        }
        loop {
            let frame = match tokio::time::timeout(limit, self.ws.read_frame()).await {
                Err(_) => return Recv::Timeout,
                Ok(Err(_)) => return Recv::Eof,
                Ok(Ok(frame)) => frame,
            };
            match frame.opcode {
                OpCode::Binary => {
                    return Recv::Msg(rmp_serde::from_slice(&frame.payload).expect("server sent undecodable message"));
                }
                OpCode::Close => {
                    let code = if frame.payload.len() >= 2 {
                        u16::from_be_bytes([frame.payload[0], frame.payload[1]])
                    } else {
                        1005
                    };
                    let reason = String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default()).into_owned();
                    let _ = self.ws.write_frame(Frame::close(1000, b"")).await;
                    return Recv::Close(code, reason);
                }
                _ => continue,
            }
        }
    }

    /// Receives, expecting a message.
    pub async fn msg(&mut self) -> ServerMessage {
        match self.recv().await {
            Recv::Msg(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The first message matching `pred`; the others read meanwhile are kept,
    /// in order, for later calls. (A `CHANGE` caused by a connection's own write
    /// may arrive before that write's `OP_RESULT`.)
    pub async fn msg_where(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        let mut skipped = Vec::new();
        let found = loop {
            let message = match self.stash.pop_front() {
                Some(message) => message,
                None => match self.recv().await {
                    Recv::Msg(m) => m,
                    other => panic!("expected a message, got {other:?} (after {skipped:?})"),
                },
            };
            if pred(&message) {
                break message;
            }
            skipped.push(message);
        };
        for message in skipped.into_iter().rev() {
            self.stash.push_front(message);
        }
        found
    }

    /// Receives until a close frame, returning its code (panics on a message-less end).
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.recv().await {
                Recv::Msg(_) => continue,
                Recv::Close(code, _) => return code,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Connects, expects AUTH_REQUIRED, authenticates with `token` and expects AUTH_ACK.
    pub async fn authed(addr: SocketAddr, token: &str) -> Self {
        let mut ws = Self::connect("/ws", addr).await;
        assert!(matches!(ws.msg().await, ServerMessage::AuthRequired { protocol_version: 1 }));
        ws.send(&ClientMessage::Auth { token: Some(token.to_string()) }).await;
        match ws.msg().await {
            ServerMessage::AuthAck { .. } => ws,
            other => panic!("expected AUTH_ACK, got {other:?}"),
        }
    }

    /// Sends AUTH with `token` on a fresh connection and returns (AUTH_FAIL code, close code).
    pub async fn refused(addr: SocketAddr, token: &str) -> (String, u16) {
        let mut ws = Self::connect("/ws", addr).await;
        assert!(matches!(ws.msg().await, ServerMessage::AuthRequired { .. }));
        ws.send(&ClientMessage::Auth { token: Some(token.to_string()) }).await;
        let code = match ws.msg().await {
            ServerMessage::AuthFail { code, .. } => code,
            other => panic!("expected AUTH_FAIL, got {other:?}"),
        };
        (code, ws.close_code().await)
    }
}

struct Spawn;

impl<F> hyper::rt::Executor<F> for Spawn
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// Starts `syncgate serve --listen 127.0.0.1:0 ARGS…`, waits until it logs
/// its address, and keeps draining its log so it never blocks on a full pipe;
/// `stderr` is where its error lines go. Returns the process (the caller
/// kills it) and the address it listens on.
pub fn spawn_serve<I, S>(args: I, stderr: std::process::Stdio) -> (std::process::Child, SocketAddr)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::io::{BufRead as _, BufReader};
    let mut child = syncgate()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next().expect("the server exited before listening").expect("a log line");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("an address").parse().expect("an address");
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (child, addr)
}

/// The `syncgate` binary with no `SYNCGATE_*` variables inherited from the environment.
pub fn syncgate() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SYNCGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Retries `attempt` every 50 ms, for 15 s at most, until it gives `Some`: for
/// state the server releases on its own schedule (a closed socket's slot).
pub async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (15 s at most) for the first client event matching `pred`; returns every event seen up to it.
pub async fn until(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<syncgate_client::ClientEvent>,
    pred: impl Fn(&syncgate_client::ClientEvent) -> bool,
) -> Vec<syncgate_client::ClientEvent> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = events.recv().await {
            let hit = pred(&event);
            seen.push(event);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "event not seen; got {:?}", &seen[seen.len().saturating_sub(5)..]);
    seen
}
