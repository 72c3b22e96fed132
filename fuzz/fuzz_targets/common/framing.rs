//! The shared body of the framing targets.
//!
//! The first input byte chooses where the rest is cut in two, so the decoder
//! sees a frame arrive in pieces as it does from a socket. Checked properties:
//! no panic; every frame decoded re-encodes to exactly the bytes it came from;
//! the read buffer never grows far beyond the announced frame (the maximum is
//! enforced before allocating); a whole input that `split_frame` accepts is the
//! same single frame the stream decoder yields.

use bytes::{BufMut, BytesMut};
use iso8583::framing::{split_frame, Frame, FrameCodec, FramingConfig};
use tokio_util::codec::{Decoder, Encoder};

/// Decodes until the codec wants more bytes or fails; returns the frames and
/// whether it failed.
fn drain(codec: &mut FrameCodec, buf: &mut BytesMut, frames: &mut Vec<Frame>, eof: bool) -> bool {
    let limit = 4 * (4 + codec.config().max_frame_len);
    loop {
        let before = buf.clone();
        let result = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        assert!(
            buf.capacity() <= limit.max(2 * before.len()),
            "buffer grew to {} bytes for a maximum frame of {}",
            buf.capacity(),
            codec.config().max_frame_len
        );
        match result {
            Ok(Some(frame)) => {
                let consumed = before.len() - buf.len();
                let mut encoded = BytesMut::new();
                codec
                    .encode(frame.clone(), &mut encoded)
                    .unwrap_or_else(|e| panic!("decoded frame does not encode: {e}"));
                assert_eq!(
                    &encoded[..],
                    &before[..consumed],
                    "re-encoding changed the frame"
                );
                frames.push(frame);
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

pub fn run(name: &str, data: &[u8]) {
    let config: FramingConfig = name.parse().expect("a valid framing name");
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());

    let mut codec = FrameCodec::new(config.clone());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    buf.put_slice(&rest[..cut]);
    let mut failed = drain(&mut codec, &mut buf, &mut frames, false);
    if !failed {
        buf.put_slice(&rest[cut..]);
        failed = drain(&mut codec, &mut buf, &mut frames, false);
    }
    if !failed {
        failed = drain(&mut codec, &mut buf, &mut frames, true);
    }

    if let Ok(frame) = split_frame(&config, rest) {
        assert!(
            !failed,
            "split_frame accepts what the stream decoder rejects"
        );
        assert_eq!(frames, vec![frame], "split_frame and the decoder disagree");
    }
}
