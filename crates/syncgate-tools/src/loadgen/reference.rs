//! The bare-transport reference: a minimal fastwebsockets server that
//! answers syncgate's handshake with fixed frames (`AUTH_REQUIRED`, then
//! `AUTH_ACK` for whatever `AUTH` comes) and does nothing else. Its handshake
//! rate is the ceiling the transport allows on this machine;
//! `syncgate bench handshake --reference` starts it as a child process and
//! measures both in one run.
//!
//! With a verification secret (`--verify`) it also decodes the `AUTH` message
//! and checks its HS256 token with `jsonwebtoken`, as syncgate's verifier
//! does, so that syncgate is compared with "transport + token check" and
//! the difference is syncgate's own work (session, limits, registry, tasks).
//!
//! With `--workload messages` it also answers `SUB`, `PUB` and `OP_BATCH`
//! ([`super::reference_messages`]), for `bench fanout --reference` and
//! `bench ops --reference`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use syncgate_proto::protocol::{
    ClientMessage, DecodeLimits, PROTOCOL_VERSION, ServerMessage, decode_client, encode_server,
};
use tokio::net::TcpListener;

use super::reference_messages::{self, Topics};

/// Flags of `syncgate bench reference`.
#[derive(Debug, clap::Args)]
pub struct ReferenceArgs {
    /// Address to listen on; the chosen address is printed on the first line of stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Verify each `AUTH` token as HS256 with this secret (as syncgate's `--jwt-secret` does)
    /// instead of acknowledging whatever comes.
    #[arg(long, env = "SYNCGATE_REFERENCE_SECRET", hide_env_values = true)]
    pub verify_secret: Option<String>,
    /// What the reference answers after the handshake.
    #[arg(long, value_enum, default_value_t = Workload::Handshake)]
    pub workload: Workload,
}

/// What the reference does after `AUTH_ACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Nothing: it reads until the close (for `bench handshake`).
    Handshake,
    /// `SUB`, `PUB` (forwarded as `MESSAGE` to the topic's subscribers) and
    /// `OP_BATCH` (all accepted, nothing stored), for `bench fanout` and `bench ops`.
    Messages,
}

impl Workload {
    /// The value of `--workload`.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Messages => "messages",
        }
    }
}

/// The fixed frames and, in verifying mode, the key the reference checks tokens with.
pub(super) struct Answers {
    pub(super) required: Bytes,
    pub(super) ack: Bytes,
    pub(super) fail: Bytes,
    verifier: Option<(DecodingKey, Validation)>,
}

impl Answers {
    fn new(verify_secret: Option<&str>) -> Self {
        let verifier = verify_secret.map(|secret| {
            // The same validation syncgate builds for an HS256 secret without
            // audience or issuer: `exp` and `sub` required, times checked by us.
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_required_spec_claims(&["exp", "sub"]);
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.leeway = 0;
            validation.validate_aud = false;
            (DecodingKey::from_secret(secret.as_bytes()), validation)
        });
        Self {
            required: encode_server(&ServerMessage::AuthRequired { protocol_version: PROTOCOL_VERSION }),
            ack: encode_server(&ServerMessage::AuthAck {
                sub: super::reference_messages::SUBJECT.into(),
                roles: Vec::new(),
                expires_at: None,
                limits: None,
            }),
            fail: encode_server(&ServerMessage::AuthFail {
                code: "token_invalid".into(),
                message: "the token does not verify".into(),
            }),
            verifier,
        }
    }

    /// Whether `message` is an acceptable `AUTH`: anything, without a verifier.
    pub(super) fn accepts(&self, message: &[u8]) -> bool {
        let Some((key, validation)) = &self.verifier else {
            return true;
        };
        let Ok(ClientMessage::Auth { token: Some(token) }) = decode_client(message, DecodeLimits::default()) else {
            return false;
        };
        let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(&token, key, validation) else {
            return false;
        };
        let now = syncgate_proto::time::unix_secs();
        data.claims.get("exp").and_then(Value::as_u64).is_some_and(|exp| exp > now)
    }
}

/// Serves the reference handshake until the process ends.
pub async fn serve_reference(args: ReferenceArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    println!("{}", listener.local_addr()?);
    let answers = Arc::new(Answers::new(args.verify_secret.as_deref()));
    let topics = Arc::new(Topics::default());
    let workload = args.workload;
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (answers, topics) = (answers.clone(), topics.clone());
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                let (answers, topics) = (answers.clone(), topics.clone());
                async move {
                    let (response, socket) = upgrade::upgrade(&mut request)?;
                    tokio::spawn(async move {
                        let _ = match workload {
                            Workload::Handshake => answer(socket, &answers).await,
                            Workload::Messages => reference_messages::answer(socket, &answers, &topics).await,
                        };
                    });
                    Ok::<Response<Empty<Bytes>>, fastwebsockets::WebSocketError>(response)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
        });
    }
}

async fn answer(socket: upgrade::UpgradeFut, answers: &Answers) -> Result<(), fastwebsockets::WebSocketError> {
    let mut ws = socket.await?;
    ws.set_auto_close(true);
    ws.write_frame(Frame::binary(Payload::Borrowed(&answers.required))).await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Binary | OpCode::Text => {
                if answers.accepts(&frame.payload) {
                    ws.write_frame(Frame::binary(Payload::Borrowed(&answers.ack))).await?;
                } else {
                    ws.write_frame(Frame::binary(Payload::Borrowed(&answers.fail))).await?;
                    ws.write_frame(Frame::close(4001, b"token_invalid")).await?;
                    return Ok(());
                }
            }
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devtoken::{TokenSpec, mint};
    use syncgate_proto::protocol::encode_client;

    const SECRET: &str = "reference-secret-0123456789abcdef";

    fn auth(token: Option<String>) -> Vec<u8> {
        encode_client(&ClientMessage::Auth { token }).to_vec()
    }

    fn token(secret: &str, now: u64) -> String {
        mint(secret.as_bytes(), &TokenSpec::new("alice", vec!["bench".into()]), now).unwrap()
    }

    #[test]
    fn without_a_secret_anything_is_acknowledged() {
        let answers = Answers::new(None);
        assert!(answers.accepts(b"not even MessagePack"));
    }

    #[test]
    fn with_a_secret_only_a_valid_hs256_token_is_acknowledged() {
        let answers = Answers::new(Some(SECRET));
        let now = syncgate_proto::time::unix_secs();
        assert!(answers.accepts(&auth(Some(token(SECRET, now)))));
        assert!(!answers.accepts(&auth(Some(token("another-secret-0123456789abcdef", now)))));
        assert!(!answers.accepts(&auth(Some(token(SECRET, now - 100_000)))), "expired");
        assert!(!answers.accepts(&auth(None)));
        assert!(!answers.accepts(&auth(Some("not.a.jwt".into()))));
        assert!(!answers.accepts(b"\xc1"));
    }
}
