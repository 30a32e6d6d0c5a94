//! The client's byte stream on its way to fastwebsockets.
//!
//! Two things fastwebsockets does not say are learnt here by walking the
//! frame headers in the byte stream (the sans-IO [`FrameScanner`]):
//!
//! - **Unmasked frames** (RFC 6455 §5.1: a server must close the connection on
//!   an unmasked client frame). When a header without the mask bit appears,
//!   the read is cut just before it and the next read fails, so fastwebsockets
//!   never sees the frame; the connection then closes with 1002.
//! - **When its read buffer is empty.** fastwebsockets keeps an 8 KiB buffer
//!   per reader. Once every byte read has been handed out as whole frames, the
//!   reader drops it and waits with [`ClientStream::wait_for_bytes`], whose
//!   bytes fastwebsockets reads first; an idle connection then holds no buffer.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read ahead while idle: enough for a whole small message, so the read
/// that ends the wait usually brings the frame too.
const READ_AHEAD: usize = 256;

/// Walks client frame headers across arbitrary chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct FrameScanner {
    /// Header bytes seen of the current frame (at most 14).
    header: Vec<u8>,
    /// Payload bytes still to skip.
    payload_left: u64,
    /// Frames whose last byte has been seen.
    complete: u64,
}

impl FrameScanner {
    /// Feeds the next bytes of the stream; returns the offset (within `bytes`)
    /// of the first byte that completes an unmasked header's second byte.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len() - i);
                self.payload_left -= skip as u64;
                i += skip;
                if self.payload_left == 0 {
                    self.complete += 1;
                }
                continue;
            }
            self.header.push(bytes[i]);
            if self.header.len() == 2 && self.header[1] & 0x80 == 0 {
                return Some(i);
            }
            if let Some(payload) = self.complete_header() {
                self.header.clear();
                self.payload_left = payload;
                if payload == 0 {
                    self.complete += 1;
                }
            }
            i += 1;
        }
        None
    }

    /// How many frames the bytes seen hold, if they end with a whole frame
    /// (`None` while a frame is cut).
    pub(crate) fn whole_frames(&self) -> Option<u64> {
        (self.header.is_empty() && self.payload_left == 0).then_some(self.complete)
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

/// What a [`ClientStream`] tells while fastwebsockets holds it.
#[derive(Debug, Default)]
pub(crate) struct StreamWatch {
    /// Set once an unmasked frame was seen; the reader reads it to choose 1002.
    unmasked: AtomicBool,
    /// How many frames the bytes read so far hold when they end with a whole
    /// frame; `u64::MAX` while a frame is cut.
    whole_frames: AtomicU64,
}

impl StreamWatch {
    /// Whether an unmasked frame was found.
    pub(crate) fn unmasked(&self) -> bool {
        self.unmasked.load(Ordering::Relaxed)
    }

    /// Whether the bytes read so far are exactly the first `frames` frames:
    /// a reader that has parsed that many holds nothing more.
    pub(crate) fn ends_after(&self, frames: u64) -> bool {
        self.whole_frames.load(Ordering::Relaxed) == frames
    }
}

/// An `AsyncRead` that stops at the first unmasked client frame and can wait
/// for bytes with a small buffer of its own.
#[derive(Debug)]
pub(crate) struct ClientStream<R> {
    inner: R,
    scanner: FrameScanner,
    watch: Arc<StreamWatch>,
    ahead: [u8; READ_AHEAD],
    /// `ahead[start..end]` is read but not yet handed out.
    start: usize,
    end: usize,
}

impl<R> ClientStream<R> {
    /// Wraps the client's read half.
    pub(crate) fn new(inner: R) -> Self {
        let watch = Arc::default();
        Self { inner, scanner: FrameScanner::default(), watch, ahead: [0; READ_AHEAD], start: 0, end: 0 }
    }

    /// What the stream has seen, readable while fastwebsockets holds the stream.
    pub(crate) fn watch(&self) -> Arc<StreamWatch> {
        self.watch.clone()
    }
}

impl<R: AsyncRead + Unpin> ClientStream<R> {
    /// Waits until the client sends something; `Ok(0)` at end of stream.
    /// Cancel-safe: bytes are kept here until read.
    pub(crate) async fn wait_for_bytes(&mut self) -> io::Result<usize> {
        if self.start < self.end {
            return Ok(self.end - self.start);
        }
        if self.watch.unmasked() {
            return Err(unmasked_error());
        }
        let Self { inner, scanner, watch, ahead, .. } = self;
        let mut buf = ReadBuf::new(ahead);
        poll_fn(|cx| Pin::new(&mut *inner).poll_read(cx, &mut buf)).await?;
        let kept = admit(scanner, watch, buf.filled())?;
        (self.start, self.end) = (0, kept);
        Ok(kept)
    }
}

/// Passes freshly read bytes through the scanner: how many of them may be
/// handed out, or an error if the first of them starts an unmasked frame.
fn admit(scanner: &mut FrameScanner, watch: &StreamWatch, fresh: &[u8]) -> io::Result<usize> {
    let found = scanner.feed(fresh);
    watch.whole_frames.store(scanner.whole_frames().unwrap_or(u64::MAX), Ordering::Relaxed);
    match found {
        None => Ok(fresh.len()),
        Some(offset) => {
            watch.unmasked.store(true, Ordering::Relaxed);
            if offset == 0 {
                return Err(unmasked_error());
            }
            Ok(offset)
        }
    }
}

fn unmasked_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "unmasked client frame")
}

impl<R: AsyncRead + Unpin> AsyncRead for ClientStream<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            let n = (this.end - this.start).min(buf.remaining());
            buf.put_slice(&this.ahead[this.start..this.start + n]);
            this.start += n;
            return Poll::Ready(Ok(()));
        }
        if this.watch.unmasked() {
            return Poll::Ready(Err(unmasked_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                // Hand over only the bytes before an offending header byte.
                let kept = admit(&mut this.scanner, &this.watch, &buf.filled()[before..])?;
                buf.set_filled(before + kept);
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
            let mut scanner = FrameScanner::default();
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

    #[test]
    fn the_scanner_knows_when_the_bytes_end_with_a_whole_frame() {
        let frames = [masked(b"hello"), masked(b""), vec![0x82, 0x80 | 126, 0x00, 0x80, 1, 2, 3, 4]];
        let mut third = frames[2].clone();
        third.extend(vec![7u8; 128]);
        let frames = [frames[0].clone(), frames[1].clone(), third];
        let stream: Vec<u8> = frames.concat();
        let ends: Vec<usize> = frames
            .iter()
            .scan(0, |at, f| {
                *at += f.len();
                Some(*at)
            })
            .collect();
        for chunk in [1, 2, 5, 64, 4096] {
            let mut scanner = FrameScanner::default();
            let mut seen = 0;
            for piece in stream.chunks(chunk) {
                assert_eq!(scanner.feed(piece), None);
                seen += piece.len();
                let whole = ends.iter().filter(|&&end| end <= seen).count() as u64;
                let at_boundary = ends.contains(&seen);
                assert_eq!(scanner.whole_frames(), at_boundary.then_some(whole), "chunk {chunk}, {seen} bytes");
            }
        }
    }

    #[tokio::test]
    async fn bytes_read_while_waiting_come_first_and_are_scanned() {
        use tokio::io::AsyncReadExt;
        let mut stream = masked(b"abc");
        stream.extend([0x82, 0x01, b'x']);
        let mut client = ClientStream::new(&stream[..]);
        let watch = client.watch();
        assert!(watch.ends_after(0));
        let first = masked(b"abc").len();
        assert_eq!(client.wait_for_bytes().await.unwrap(), first + 1, "cut at the unmasked header's second byte");
        assert!(watch.unmasked() && !watch.ends_after(1), "a frame is cut");
        let mut read = vec![0u8; 64];
        let n = client.read(&mut read).await.unwrap();
        assert_eq!(&read[..n], &stream[..first + 1]);
        assert!(client.read(&mut read).await.is_err(), "the unmasked frame is never handed out");
    }
}
