//! The bare-transport reference: a minimal fastwebsockets server that
//! answers syncgate's handshake with fixed frames (`AUTH_REQUIRED`, then
//! `AUTH_ACK` for whatever `AUTH` comes) and does nothing else. Its handshake
//! rate is the ceiling the transport allows on this machine;
//! `syncgate bench handshake --reference` starts it as a child process and
//! measures both in one run.

use std::net::SocketAddr;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use syncgate_proto::protocol::{PROTOCOL_VERSION, ServerMessage, encode_server};
use tokio::net::TcpListener;

/// Flags of `syncgate bench reference`.
#[derive(Debug, clap::Args)]
pub struct ReferenceArgs {
    /// Address to listen on; the chosen address is printed on the first line of stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Serves the reference handshake until the process ends.
pub async fn serve_reference(args: ReferenceArgs) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    println!("{}", listener.local_addr()?);
    let required = encode_server(&ServerMessage::AuthRequired { protocol_version: PROTOCOL_VERSION });
    let ack = encode_server(&ServerMessage::AuthAck {
        sub: "reference".into(),
        roles: Vec::new(),
        expires_at: None,
        limits: None,
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (required, ack) = (required.clone(), ack.clone());
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                let (required, ack) = (required.clone(), ack.clone());
                async move {
                    let (response, socket) = upgrade::upgrade(&mut request)?;
                    tokio::spawn(async move {
                        let _ = answer(socket, required, ack).await;
                    });
                    Ok::<Response<Empty<Bytes>>, fastwebsockets::WebSocketError>(response)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
        });
    }
}

async fn answer(
    socket: upgrade::UpgradeFut,
    required: Bytes,
    ack: Bytes,
) -> Result<(), fastwebsockets::WebSocketError> {
    let mut ws = socket.await?;
    ws.set_auto_close(true);
    ws.write_frame(Frame::binary(Payload::Borrowed(&required))).await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Binary | OpCode::Text => ws.write_frame(Frame::binary(Payload::Borrowed(&ack))).await?,
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}
