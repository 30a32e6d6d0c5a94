//! Reassembles WebSocket frames into messages with a cap on the total size.
//!
//! fastwebsockets' own `FragmentCollector` caps each frame but not the
//! reassembled message (see `docs/crate-notes.md`), so a stream of small
//! continuation frames could grow one message without bound. This assembler
//! enforces the limit across fragments and is sans-IO so it can be fuzzed.

use std::borrow::Cow;

use fastwebsockets::OpCode;

use crate::protocol::codes::close;

/// A complete unit handed to the connection after reassembly.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled<'a> {
    /// A whole binary message (borrowed when it came in one frame).
    Binary(Cow<'a, [u8]>),
    /// A whole text message (not part of the protocol: answered with 4000).
    Text,
    /// A ping to answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong (counts as activity).
    Pong,
    /// The peer started the closing handshake.
    Close {
        /// The peer's close code, if it sent one.
        code: Option<u16>,
    },
}

/// Why the frame stream cannot continue; carries the close code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FrameError {
    /// Close code for the reply.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
}

/// Incremental reassembly state of one connection.
#[derive(Debug)]
pub struct Assembler {
    max_message_bytes: usize,
    /// Opcode and bytes of a fragmented message in progress.
    partial: Option<(OpCode, Vec<u8>)>,
}

impl Assembler {
    /// An assembler accepting messages of at most `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes, partial: None }
    }

    /// Changes the limit (it rises once the connection is authenticated).
    pub fn set_max_message_bytes(&mut self, max: usize) {
        self.max_message_bytes = max;
    }

    /// Feeds one (already unmasked) frame; `Ok(None)` means "need more frames".
    pub fn push<'a>(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: &'a [u8],
    ) -> Result<Option<Assembled<'a>>, FrameError> {
        match opcode {
            OpCode::Ping => Ok(Some(Assembled::Ping(payload))),
            OpCode::Pong => Ok(Some(Assembled::Pong)),
            OpCode::Close => close_frame(payload).map(|code| Some(Assembled::Close { code })),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(protocol("a new message started inside a fragmented one"));
                }
                self.check_size(payload.len())?;
                if fin {
                    return Ok(Some(complete(opcode, Cow::Borrowed(payload))));
                }
                self.partial = Some((opcode, payload.to_vec()));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some((_, buffered)) = &self.partial else {
                    return Err(protocol("continuation frame without a message"));
                };
                self.check_size(buffered.len().saturating_add(payload.len()))?;
                let Some((first, mut buffered)) = self.partial.take() else {
                    return Err(protocol("continuation frame without a message"));
                };
                buffered.extend_from_slice(payload);
                if fin {
                    Ok(Some(complete(first, Cow::Owned(buffered))))
                } else {
                    self.partial = Some((first, buffered));
                    Ok(None)
                }
            }
        }
    }

    fn check_size(&self, len: usize) -> Result<(), FrameError> {
        if len > self.max_message_bytes {
            Err(FrameError { code: close::MESSAGE_TOO_BIG, reason: "message larger than the limit" })
        } else {
            Ok(())
        }
    }
}

fn complete(opcode: OpCode, payload: Cow<'_, [u8]>) -> Assembled<'_> {
    if opcode == OpCode::Text { Assembled::Text } else { Assembled::Binary(payload) }
}

fn close_frame(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(protocol("close reason is not UTF-8"));
            }
            Ok(Some(u16::from_be_bytes([*hi, *lo])))
        }
    }
}

fn protocol(reason: &'static str) -> FrameError {
    FrameError { code: close::PROTOCOL_ERROR, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_join_and_single_frames_borrow() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(true, OpCode::Binary, b"abc"), Ok(Some(Assembled::Binary(Cow::Borrowed(b"abc")))));
        assert_eq!(a.push(false, OpCode::Binary, b"ab"), Ok(None));
        assert_eq!(a.push(false, OpCode::Continuation, b"cd"), Ok(None));
        assert_eq!(a.push(true, OpCode::Ping, b"p"), Ok(Some(Assembled::Ping(b"p"))), "control frames may interleave");
        assert_eq!(
            a.push(true, OpCode::Continuation, b"e"),
            Ok(Some(Assembled::Binary(Cow::Owned(b"abcde".to_vec()))))
        );
    }

    #[test]
    fn the_total_of_fragments_is_capped() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(false, OpCode::Binary, &[0; 6]), Ok(None));
        assert_eq!(a.push(false, OpCode::Continuation, &[0; 6]).unwrap_err().code, 1009);
        assert_eq!(Assembler::new(3).push(true, OpCode::Binary, &[0; 4]).unwrap_err().code, 1009);
    }

    #[test]
    fn protocol_errors_and_close_frames() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(true, OpCode::Continuation, b"x").unwrap_err().code, 1002);
        a.push(false, OpCode::Binary, b"x").unwrap();
        assert_eq!(a.push(true, OpCode::Binary, b"y").unwrap_err().code, 1002);
        let mut a = Assembler::new(10);
        assert_eq!(
            a.push(true, OpCode::Close, &[0x03, 0xe8, b'o', b'k']),
            Ok(Some(Assembled::Close { code: Some(1000) }))
        );
        assert_eq!(a.push(true, OpCode::Close, &[]), Ok(Some(Assembled::Close { code: None })));
        assert_eq!(a.push(true, OpCode::Close, &[3]).unwrap_err().code, 1002);
        assert_eq!(a.push(true, OpCode::Text, b"hi"), Ok(Some(Assembled::Text)));
    }
}
