//! The tokio-util codec over the framing (cargo feature `tokio`, on by
//! default): a connection's bytes ⇄ [`Frame`]s, for `Framed` sockets.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{
    announced_len, encode_message, incomplete, split_header, Frame, FramingConfig, FramingError,
};

/// The tokio-util codec for one connection's framing: bytes ⇄ [`Frame`]s.
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    config: FramingConfig,
}

impl FrameCodec {
    pub fn new(config: FramingConfig) -> Self {
        FrameCodec { config }
    }

    pub fn config(&self) -> &FramingConfig {
        &self.config
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FramingError;

    /// Returns the next frame, or `Ok(None)` when more bytes are needed.
    ///
    /// A bad or oversized length prefix is an error that leaves the buffer as it
    /// is: the stream is out of step and the connection must be dropped. A bad
    /// CUPS header consumes its frame before returning the error, since the
    /// stream itself is still in step and a caller may choose to go on.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let Some(len) = announced_len(&self.config, src)? else {
            return Ok(None);
        };
        let width = self.config.prefix.width();
        // Cannot overflow: `len` is at most `max_frame_len`, and `src` holds it.
        let total = width.saturating_add(len);
        if src.len() < total {
            // Grow to the announced frame and no further; the length is bounded above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(width);
        let frame = src.split_to(len).freeze();
        split_header(&self.config, frame).map(Some)
    }

    /// At end of stream, leftover bytes are a frame cut short: say how short.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(incomplete(&self.config, src)),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FramingError;

    /// Writes prefix, header and body. For CUPS headers the total-length field
    /// is overwritten with the real length, so callers can reuse a request's
    /// header (see [`CupsHeader::reply`](super::CupsHeader::reply)) without recomputing it.
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FramingError> {
        match frame {
            Frame::KeepAlive => {
                dst.reserve(self.config.prefix.width());
                self.config.prefix.write(0, dst);
                Ok(())
            }
            Frame::Message { header, body } => encode_message(&self.config, &header, &body, dst),
        }
    }
}
