//! Cutting one direction's byte stream into frames.
//!
//! A direction is *aligned* when the next byte is the start of a frame: from
//! the first byte after a SYN, and after every frame. Aligned, the framing's
//! length prefix is trusted and each frame is cut whether its message parses
//! or not (the caller reports the ones that do not). A length prefix that is
//! not a length loses the alignment.
//!
//! Unaligned (the capture joined the connection in its middle, bytes were
//! lost, a prefix was bad) the cutter *searches*: at each offset it tries the
//! framing — or, when none was given, every framing the project has — and
//! takes the first offset where a whole frame holds a message that parses.
//! When the framing was not given, the first frame found fixes it for the
//! direction. A candidate that needs more bytes than have arrived makes the
//! search wait, so memory stays bounded by one frame.

use bytes::{Buf, Bytes, BytesMut};
use iso8583::framing::{frame_len, split_frame, Frame, FramingConfig, HeaderKind, LengthPrefix};
use iso8583::Spec;

/// What the cutter found, with the stream offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// A whole frame; its body may or may not parse.
    Frame {
        offset: u64,
        header: Bytes,
        body: Bytes,
    },
    /// A zero-length frame.
    KeepAlive { offset: u64 },
    /// Bytes passed over while looking for a frame.
    Skipped { offset: u64, len: u64 },
    /// A length prefix that is not one: the cutter searches from here.
    BadPrefix { offset: u64, reason: String },
}

#[derive(Debug)]
pub struct FrameCutter {
    given: Option<FramingConfig>,
    detected: Option<FramingConfig>,
    buf: BytesMut,
    /// Stream offset of `buf[0]`.
    offset: u64,
    aligned: bool,
    /// Gaps not yet reported, and their length.
    lost: Option<(u64, u64)>,
}

enum Attempt {
    Found,
    KeepAlive,
    NeedMore,
    No,
}

impl FrameCutter {
    /// A cutter for a direction whose first byte starts a frame.
    pub fn new(framing: Option<FramingConfig>) -> Self {
        FrameCutter {
            given: framing,
            detected: None,
            buf: BytesMut::new(),
            offset: 0,
            aligned: true,
            lost: None,
        }
    }

    /// The framing in use: given, or detected from the first frame.
    pub fn framing(&self) -> Option<&FramingConfig> {
        self.given.as_ref().or(self.detected.as_ref())
    }

    /// Bytes waiting for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes lost (or, for 0, the stream joined mid-way): what is buffered
    /// cannot be completed, and the next byte need not start a frame. Take
    /// what the buffer holds first (`next` with `eof`): it is dropped here.
    pub fn gap(&mut self, len: u64) {
        let dropped = self.buf.len() as u64;
        if dropped + len > 0 {
            let start = self.lost.map_or(self.offset, |(start, _)| start);
            let total = self.lost.map_or(0, |(_, l)| l) + dropped + len;
            self.lost = Some((start, total));
        }
        self.offset += dropped + len;
        self.buf.clear();
        self.aligned = false;
    }

    /// The next thing found in the buffered bytes, `None` when more are
    /// needed. With `eof`, the stream has ended: nothing more will come, so a
    /// frame cut short is reported as skipped bytes.
    pub fn next(&mut self, spec: &Spec, eof: bool) -> Option<Cut> {
        if let Some((offset, len)) = self.lost.take() {
            return Some(Cut::Skipped { offset, len });
        }
        if let (true, Some(config)) = (self.aligned, self.framing()) {
            let config = config.clone();
            return match frame_len(&config, &self.buf) {
                Ok(Some(total)) if total <= self.buf.len() => {
                    let offset = self.offset;
                    let frame = split_frame(&config, &self.buf[..total]);
                    self.consume(total);
                    match frame {
                        Ok(Frame::KeepAlive) => Some(Cut::KeepAlive { offset }),
                        Ok(Frame::Message { header, body }) => Some(Cut::Frame {
                            offset,
                            header,
                            body,
                        }),
                        // The length was right but the header is not: the
                        // frame is consumed, the stream stays in step.
                        Err(e) => Some(Cut::BadPrefix {
                            offset,
                            reason: e.to_string(),
                        }),
                    }
                }
                Ok(_) if eof && !self.buf.is_empty() => {
                    let len = self.buf.len();
                    let offset = self.offset;
                    self.consume(len);
                    Some(Cut::Skipped {
                        offset,
                        len: len as u64,
                    })
                }
                Ok(_) => None,
                Err(e) => {
                    self.aligned = false;
                    Some(Cut::BadPrefix {
                        offset: self.offset,
                        reason: e.to_string(),
                    })
                }
            };
        }
        self.search(spec, eof)
    }

    fn consume(&mut self, len: usize) {
        self.buf.advance(len);
        self.offset += len as u64;
    }

    fn candidates(&self) -> Vec<FramingConfig> {
        if let Some(given) = &self.given {
            return vec![given.clone()];
        }
        let mut all = Vec::with_capacity(8);
        if let Some(detected) = &self.detected {
            all.push(detected.clone());
        }
        for header in [HeaderKind::None, HeaderKind::Cups] {
            for prefix in LengthPrefix::ALL {
                let config = FramingConfig::new(prefix, header);
                if !all.contains(&config) {
                    all.push(config);
                }
            }
        }
        all
    }

    /// A frame of `config` starts at `start`: align there.
    fn found(&mut self, config: &FramingConfig, start: usize, spec: &Spec, eof: bool) -> Cut {
        if self.given.is_none() {
            self.detected = Some(config.clone());
        }
        self.aligned = true;
        if start > 0 {
            let offset = self.offset;
            self.consume(start);
            return Cut::Skipped {
                offset,
                len: start as u64,
            };
        }
        self.next(spec, eof)
            .expect("a whole frame starts the buffer")
    }

    fn search(&mut self, spec: &Spec, eof: bool) -> Option<Cut> {
        let candidates = self.candidates();
        let mut start = 0;
        while start < self.buf.len() {
            let mut wait = false;
            // At the start of a stream a keep-alive is a frame too, though
            // the last choice: binary4's first bytes are binary2's keep-alive.
            let mut keepalive = None;
            for config in &candidates {
                match attempt(config, &self.buf[start..], spec) {
                    Attempt::Found => return Some(self.found(config, start, spec, eof)),
                    Attempt::KeepAlive if self.aligned && start == 0 => {
                        keepalive = keepalive.or(Some(config));
                    }
                    Attempt::NeedMore if !eof => wait = true,
                    Attempt::KeepAlive | Attempt::NeedMore | Attempt::No => {}
                }
            }
            if wait {
                break;
            }
            if let Some(config) = keepalive {
                let config = config.clone();
                return Some(self.found(&config, start, spec, eof));
            }
            start += 1;
        }
        if start == 0 {
            return None;
        }
        let offset = self.offset;
        self.consume(start);
        Some(Cut::Skipped {
            offset,
            len: start as u64,
        })
    }
}

/// Whether a whole frame holding a parsable message, or a keep-alive,
/// starts `bytes`.
fn attempt(config: &FramingConfig, bytes: &[u8], spec: &Spec) -> Attempt {
    match frame_len(config, bytes) {
        Ok(None) => Attempt::NeedMore,
        Ok(Some(total)) if total > bytes.len() => Attempt::NeedMore,
        Ok(Some(total)) => match split_frame(config, &bytes[..total]) {
            Ok(Frame::Message { body, .. }) if iso8583::parse(spec, body.clone()).is_ok() => {
                Attempt::Found
            }
            Ok(Frame::KeepAlive) => Attempt::KeepAlive,
            _ => Attempt::No,
        },
        Err(_) => Attempt::No,
    }
}
