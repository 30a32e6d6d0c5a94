//! Refusing unmasked client frames (RFC 6455 §5.1: a server must close the
//! connection on an unmasked frame from a client).
//!
//! fastwebsockets unmasks frames but does not say whether a frame was masked,
//! so [`MaskCheck`] watches frame headers in the byte stream on their way to it.
//! When a header without the mask bit appears, the read is cut just before it
//! and the next read fails, so fastwebsockets never sees the frame; the
//! connection then closes with 1002. The header walk itself is the sans-IO
//! [`MaskScanner`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Walks client frame headers across arbitrary chunk boundaries.
#[derive(Debug, Default)]
pub struct MaskScanner {
    /// Header bytes seen of the current frame (at most 14).
    header: Vec<u8>,
    /// Payload bytes still to skip.
    payload_left: u64,
}

impl MaskScanner {
    /// Feeds the next bytes of the stream; returns the offset (within `bytes`)
    /// of the first byte that completes an unmasked header's second byte.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len() - i);
                self.payload_left -= skip as u64;
                i += skip;
                continue;
            }
            self.header.push(bytes[i]);
            if self.header.len() == 2 && self.header[1] & 0x80 == 0 {
                return Some(i);
            }
            if let Some(payload) = self.complete_header() {
                self.header.clear();
                self.payload_left = payload;
            }
            i += 1;
        }
        None
    }

    /// The payload length once the (masked) header is complete.
    fn complete_header(&self) -> Option<u64> {
        let h = &self.header;
        if h.len() < 2 {
            return None;
        }
        let (extended, length) = match h[1] & 0x7f {
            126 => (2, h.get(2..4).map(|b| u64::from(u16::from_be_bytes([b[0], b[1]])))),
            127 => (8, h.get(2..10).map(|b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))),
            n => (0, Some(u64::from(n))),
        };
        (h.len() == 2 + extended + 4).then_some(length).flatten()
    }
}

/// An `AsyncRead` that stops at the first unmasked client frame.
#[derive(Debug)]
pub struct MaskCheck<R> {
    inner: R,
    scanner: MaskScanner,
    /// Set once an unmasked frame was seen; the connection reads it to choose 1002.
    unmasked: Arc<AtomicBool>,
}

impl<R> MaskCheck<R> {
    /// Wraps the client's read half; `unmasked` is raised on a violation.
    pub fn new(inner: R, unmasked: Arc<AtomicBool>) -> Self {
        Self { inner, scanner: MaskScanner::default(), unmasked }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MaskCheck<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.unmasked.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "unmasked client frame")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(offset) = this.scanner.feed(&buf.filled()[before..]) {
                    this.unmasked.store(true, Ordering::Relaxed);
                    // Hand over only the bytes before the offending header byte.
                    buf.set_filled(before + offset);
                    if offset == 0 {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "unmasked client frame")));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x82, 0x80 | payload.len() as u8, 1, 2, 3, 4];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn masked_frames_pass_in_any_chunking_and_unmasked_ones_are_found() {
        let mut stream = masked(b"hello");
        stream.extend(masked(&[0u8; 100]));
        let mut long = vec![0x82, 0x80 | 126, 0x01, 0x00, 9, 9, 9, 9];
        long.extend(vec![0u8; 256]);
        stream.extend(long);
        let bad_at = stream.len() + 1;
        stream.extend([0x82, 0x02, b'h', b'i']);
        for chunk in [1, 3, 7, 64, 4096] {
            let mut scanner = MaskScanner::default();
            let mut found = None;
            for (n, piece) in stream.chunks(chunk).enumerate() {
                if let Some(offset) = scanner.feed(piece) {
                    found = Some(n * chunk + offset);
                    break;
                }
            }
            assert_eq!(found, Some(bad_at), "chunk size {chunk}");
        }
    }
}
