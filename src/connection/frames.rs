//! The actor's side of the socket: frames are formatted into one buffer
//! (fastwebsockets formats each header) and written with one `write` per
//! batch, so a burst of deliveries costs one syscall, not one per message.
//! The buffer is allocated when there is something to write and given back
//! after a large burst, so an idle connection holds none.

use fastwebsockets::{Frame, OpCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Longest WebSocket frame header (unmasked server frames use at most 10 bytes).
const MAX_HEAD: usize = 14;
/// A buffer grown past this by a burst is released after it is written.
const KEEP_BYTES: usize = 64 * 1024;
/// Deliveries gathered into one write at most (bytes).
pub(super) const BATCH_BYTES: usize = 256 * 1024;

/// Frames queued for one socket.
pub(super) struct FrameWriter<W> {
    sink: W,
    buffer: Vec<u8>,
    /// A close frame was queued: nothing may follow it.
    closed: bool,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(super) fn new(sink: W) -> Self {
        Self { sink, buffer: Vec::new(), closed: false }
    }

    /// Appends `frame`; `false` if a close frame went before it.
    pub(super) fn queue(&mut self, mut frame: Frame<'_>) -> bool {
        if self.closed {
            return false;
        }
        self.closed = frame.opcode == OpCode::Close;
        let mut head = [0u8; MAX_HEAD];
        let size = frame.fmt_head(&mut head);
        self.buffer.reserve(size + frame.payload.len());
        self.buffer.extend_from_slice(&head[..size]);
        self.buffer.extend_from_slice(&frame.payload);
        true
    }

    /// Bytes queued and not yet written.
    pub(super) fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Writes everything queued.
    pub(super) async fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.sink.write_all(&self.buffer).await;
        self.buffer.clear();
        if self.buffer.capacity() > KEEP_BYTES {
            self.buffer = Vec::new();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastwebsockets::Payload;

    #[tokio::test]
    async fn frames_go_out_in_order_in_one_write_and_nothing_follows_a_close() {
        let mut writer = FrameWriter::new(Vec::new());
        assert!(writer.queue(Frame::binary(Payload::Borrowed(b"one"))));
        assert!(writer.queue(Frame::binary(Payload::Owned(vec![7; 300]))));
        assert!(writer.queue(Frame::close(1000, b"")));
        assert!(!writer.queue(Frame::binary(Payload::Borrowed(b"late"))), "nothing after a close");
        writer.flush().await.unwrap();
        let out = &writer.sink;
        assert_eq!(&out[..5], &[0x82, 3, b'o', b'n', b'e']);
        assert_eq!(&out[5..9], &[0x82, 126, 1, 44], "a 300-byte payload takes the 16-bit length");
        assert_eq!(&out[5 + 4 + 300..], &[0x88, 2, 0x03, 0xe8], "close 1000");
        assert_eq!(writer.pending(), 0);
    }
}
