//! A WebSocket spoken by hand over a plain TCP socket: for tests that must
//! write faster than they read (floods) or see exactly what the server sends.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use syncgate::protocol::{ClientMessage, ServerMessage, encode_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Completes a WebSocket upgrade of `path` by hand and returns the raw socket.
pub async fn upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    upgrade_on(TcpStream::connect(addr).await.unwrap(), addr, path).await
}

/// Like [`upgrade`], with a receive buffer of `bytes` (a fixed size, which
/// turns the kernel's autotuning off): a slow reader whose socket cannot
/// hide megabytes of what the server sent.
pub async fn upgrade_with_small_buffer(addr: SocketAddr, path: &str, bytes: u32) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    upgrade_on(socket.connect(addr).await.unwrap(), addr, path).await
}

async fn upgrade_on(mut tcp: TcpStream, addr: SocketAddr, path: &str) -> TcpStream {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// One masked (all-zero mask) binary frame holding `payload`.
pub fn masked_binary(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x82];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// One protocol message as a masked frame.
pub fn frame(message: &ClientMessage) -> Vec<u8> {
    masked_binary(&encode_client(message))
}

/// What the server sent, frame by frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Msg(ServerMessage),
    Close(u16),
    Other,
}

/// Reads server frames from a socket.
pub struct FrameReader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(read: OwnedReadHalf) -> Self {
        Self { read, buf: Vec::new() }
    }

    /// The next frame, or `None` when the socket ended or `limit` passed.
    pub async fn next(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some((event, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(event);
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.read.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

fn parse(buf: &[u8]) -> Option<(Event, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize, 10),
        n if n < 126 => (n as usize, 2),
        _ => return None,
    };
    if buf.len() < header + len {
        return None;
    }
    let payload = &buf[header..header + len];
    let event = match opcode {
        2 => Event::Msg(rmp_serde::from_slice(payload).expect("server sent an undecodable message")),
        8 if payload.len() >= 2 => Event::Close(u16::from_be_bytes([payload[0], payload[1]])),
        8 => Event::Close(1005),
        _ => Event::Other,
    };
    Some((event, header + len))
}

/// Upgrades, authenticates with `token` and returns the halves, after AUTH_ACK.
pub async fn authed(addr: SocketAddr, token: &str) -> (FrameReader, OwnedWriteHalf) {
    let (read, mut write) = upgrade(addr, "/ws").await.into_split();
    let mut reader = FrameReader::new(read);
    assert!(matches!(reader.next(Duration::from_secs(10)).await, Some(Event::Msg(ServerMessage::AuthRequired { .. }))));
    write.write_all(&frame(&ClientMessage::Auth { token: Some(token.into()) })).await.unwrap();
    match reader.next(Duration::from_secs(10)).await {
        Some(Event::Msg(ServerMessage::AuthAck { .. })) => (reader, write),
        other => panic!("expected AUTH_ACK, got {other:?}"),
    }
}
