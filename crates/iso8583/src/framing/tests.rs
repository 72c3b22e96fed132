//! The framing's tests: every prefix and header, split and whole frames,
//! lying lengths, keep-alives.

use super::*;
use tokio_util::codec::{Decoder, Encoder};

fn named(name: &str) -> FramingConfig {
    name.parse().unwrap()
}

fn encode(config: &FramingConfig, frame: Frame) -> BytesMut {
    let mut out = BytesMut::new();
    FrameCodec::new(config.clone())
        .encode(frame, &mut out)
        .unwrap();
    out
}

fn cups_header() -> CupsHeader {
    CupsHeader::new("48020000", "00010000").unwrap()
}

#[test]
fn each_prefix_round_trips() {
    let body = Bytes::from_static(b"0800\x82\x20\0\0\0\0\0\0\x04\0\0\0\0\0\0\x00301");
    let cases: [(&str, &[u8]); 4] = [
        ("ascii4", b"0023"),
        ("binary2", &[0x00, 0x17]),
        ("bcd2", &[0x00, 0x23]),
        ("binary4", &[0, 0, 0, 0x17]),
    ];
    for (name, prefix) in cases {
        let config = named(name);
        let bytes = encode(&config, Frame::message(body.clone()));
        assert_eq!(&bytes[..prefix.len()], prefix, "{name}");
        assert_eq!(&bytes[prefix.len()..], &body[..], "{name}");
        let mut codec = FrameCodec::new(config.clone());
        let mut buf = bytes.clone();
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::message(body.clone())),
            "{name}"
        );
        assert!(buf.is_empty());
        assert_eq!(
            split_frame(&config, &bytes).unwrap(),
            Frame::message(body.clone())
        );
        assert_eq!(frame_bytes(&config, &[], &body).unwrap(), bytes.freeze());
    }
}

#[test]
fn large_lengths_use_every_digit_and_byte() {
    let body = vec![b'x'; 1234];
    let cases: [(&str, &[u8]); 4] = [
        ("ascii4", b"1234"),
        ("binary2", &[0x04, 0xd2]),
        ("bcd2", &[0x12, 0x34]),
        ("binary4", &[0, 0, 0x04, 0xd2]),
    ];
    for (name, prefix) in cases {
        let config = named(name);
        let bytes = frame_bytes(&config, &[], &body).unwrap();
        assert_eq!(&bytes[..prefix.len()], prefix, "{name}");
        assert_eq!(
            split_frame(&config, &bytes).unwrap(),
            Frame::message(body.clone())
        );
    }
}

#[test]
fn partial_input_returns_none_then_the_frame() {
    for prefix in LengthPrefix::ALL {
        let config = FramingConfig::new(prefix, HeaderKind::None);
        let bytes = encode(&config, Frame::message(&b"0800abc"[..]));
        let mut codec = FrameCodec::new(config);
        let mut buf = BytesMut::new();
        for (i, &b) in bytes.iter().enumerate() {
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "{prefix} at {i}");
            buf.put_u8(b);
        }
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::message(&b"0800abc"[..]))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
}

#[test]
fn several_frames_in_one_buffer() {
    let config = named("binary2");
    let mut codec = FrameCodec::new(config);
    let mut buf = BytesMut::new();
    codec.encode(Frame::message(&b"one"[..]), &mut buf).unwrap();
    codec.encode(Frame::KeepAlive, &mut buf).unwrap();
    codec
        .encode(Frame::message(&b"three"[..]), &mut buf)
        .unwrap();
    buf.put_slice(&[0x00]); // half of the next prefix
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::message(&b"one"[..]))
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::KeepAlive));
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::message(&b"three"[..]))
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], &[0x00]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(FramingError::TruncatedPrefix {
            received: 1,
            width: 2
        })
    ));
}

#[test]
fn keep_alive_is_a_zero_length() {
    let expected: [(&str, &[u8]); 4] = [
        ("ascii4", b"0000"),
        ("binary2", &[0, 0]),
        ("bcd2", &[0, 0]),
        ("binary4", &[0, 0, 0, 0]),
    ];
    for (name, bytes) in expected {
        // With a header too: a keep-alive carries none.
        for config in [named(name), named(&format!("{name}+cups"))] {
            assert_eq!(&encode(&config, Frame::KeepAlive)[..], bytes, "{config}");
            let mut buf = BytesMut::from(bytes);
            let mut codec = FrameCodec::new(config.clone());
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::KeepAlive));
            assert!(buf.is_empty());
            assert_eq!(split_frame(&config, bytes).unwrap(), Frame::KeepAlive);
        }
    }
    assert!(matches!(
        frame_bytes(&named("ascii4"), &[], &[]),
        Err(FramingError::EmptyMessage)
    ));
}

#[test]
fn oversize_is_rejected_before_allocating() {
    let mut codec = FrameCodec::new(named("binary4"));
    let mut buf = BytesMut::with_capacity(16);
    buf.put_slice(&70000u32.to_be_bytes());
    buf.put_slice(b"0200");
    let capacity = buf.capacity();
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.to_string(), "frame length 70000 exceeds maximum 8192");
    assert_eq!(buf.capacity(), capacity);
    assert_eq!(buf.len(), 8, "the buffer is left as it was");

    // u32::MAX must not overflow anything either.
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FramingError::FrameTooLong { len, max: 8192 }) if len == u32::MAX as usize
    ));

    // A configured maximum below the prefix capacity.
    let config = named("ascii4").with_max_frame_len(100);
    let mut codec = FrameCodec::new(config.clone());
    let mut buf = BytesMut::with_capacity(8);
    buf.put_slice(b"0101");
    let capacity = buf.capacity();
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().to_string(),
        "frame length 101 exceeds maximum 100"
    );
    assert_eq!(buf.capacity(), capacity);
    assert!(matches!(
        split_frame(&config, b"9999"),
        Err(FramingError::FrameTooLong {
            len: 9999,
            max: 100
        })
    ));
}

#[test]
fn reserves_only_up_to_the_announced_length() {
    let mut codec = FrameCodec::new(named("ascii4"));
    let mut buf = BytesMut::new();
    buf.put_slice(b"0010ab");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() >= 14);
    assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
}

#[test]
fn encoder_refuses_what_does_not_fit() {
    let body = vec![b'x'; 10_000];
    let config_bcd = named("bcd2").with_max_frame_len(100_000);
    assert_eq!(
        frame_bytes(&config_bcd, &[], &body)
            .unwrap_err()
            .to_string(),
        "frame length 10000 does not fit a bcd2 length prefix (at most 9999)"
    );
    let config_bin = named("binary2").with_max_frame_len(100_000);
    assert!(matches!(
        frame_bytes(&config_bin, &[], &vec![0; 65_536]),
        Err(FramingError::PrefixOverflow { len: 65_536, .. })
    ));
    let mut out = BytesMut::new();
    let err = FrameCodec::new(named("binary4"))
        .encode(Frame::message(vec![0u8; 8193]), &mut out)
        .unwrap_err();
    assert_eq!(err.to_string(), "frame length 8193 exceeds maximum 8192");
    assert!(out.is_empty(), "nothing written on error");
    // The maximum itself is fine.
    assert!(frame_bytes(&named("binary4"), &[], &[0; 8192]).is_ok());
}

#[test]
fn bad_ascii_prefix_names_the_bytes() {
    let mut codec = FrameCodec::new(named("ascii4"));
    let mut buf = BytesMut::from(&b"0A12rest"[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().to_string(),
        "ASCII length prefix 0x30 0x41 0x31 0x32 is not 4 decimal digits"
    );
    // Signs and spaces are not digits either.
    for raw in [b"+012", b" 012", b"-001"] {
        assert!(matches!(
            split_frame(&named("ascii4"), raw),
            Err(FramingError::BadAsciiPrefix { .. })
        ));
    }
}

#[test]
fn bad_bcd_prefix_names_the_bytes() {
    let mut codec = FrameCodec::new(named("bcd2"));
    let mut buf = BytesMut::from(&[0x12, 0x3a, 0, 0][..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().to_string(),
        "BCD length prefix 0x12 0x3a is not 4 packed decimal digits (a nibble is above 9)"
    );
    let mut buf = BytesMut::from(&[0xa0, 0x00][..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FramingError::BadBcdPrefix { raw: [0xa0, 0x00] })
    ));
}

#[test]
fn frame_shorter_than_its_header_is_an_error() {
    let mut codec = FrameCodec::new(named("ascii4+header:12"));
    let mut buf = BytesMut::from(&b"0005abcde"[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().to_string(),
        "frame length 5 is shorter than the 12-byte header this framing puts in front of every message"
    );
}

#[test]
fn fixed_header_is_split_off() {
    let config = named("binary2+header:3");
    let bytes = frame_bytes(&config, b"HDR", b"0800").unwrap();
    assert_eq!(&bytes[..], b"\x00\x07HDR0800");
    assert_eq!(
        split_frame(&config, &bytes).unwrap(),
        Frame::Message {
            header: Bytes::from_static(b"HDR"),
            body: Bytes::from_static(b"0800"),
        }
    );
    assert!(matches!(
        frame_bytes(&config, b"HD", b"0800"),
        Err(FramingError::HeaderMismatch {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        frame_bytes(&named("binary2"), b"HDR", b"0800"),
        Err(FramingError::HeaderMismatch {
            expected: 0,
            got: 3
        })
    ));
}

#[test]
fn cups_header_parse_build_and_reply() {
    let mut header = cups_header();
    header.set_body_len(100).unwrap();
    assert_eq!(header.total_len(), 146);
    let bytes = header.build();
    assert_eq!(bytes[0], 46);
    assert_eq!(&bytes[2..6], b"0146");
    assert_eq!(&bytes[6..17], b"48020000   ");
    assert_eq!(&bytes[17..28], b"00010000   ");
    assert_eq!(&bytes[41..46], b"00000");
    assert_eq!(CupsHeader::parse(&bytes).unwrap(), header);

    let reply = header.reply();
    assert_eq!(reply.source, header.destination);
    assert_eq!(reply.destination, header.source);
    assert_eq!(reply.reply(), header);

    let mut bad = bytes;
    bad[0] = 45;
    assert_eq!(
        CupsHeader::parse(&bad).unwrap_err().to_string(),
        "CUPS header length byte is 0x2d (45), expected 0x2e (46)"
    );
    let mut bad = bytes;
    bad[3] = b'x';
    assert_eq!(
        CupsHeader::parse(&bad).unwrap_err().to_string(),
        "CUPS total message length 0x30 0x78 0x34 0x36 is not 4 decimal digits"
    );
    assert!(matches!(
        CupsHeader::parse(&bytes[..45]),
        Err(FramingError::CupsHeaderSize { len: 45 })
    ));
    assert!(cups_header().set_body_len(9954).is_err());
    assert!(CupsHeader::new("123456789012", "1").is_err());
}

#[test]
fn cups_total_length_is_filled_when_encoding() {
    let config = named("ascii4+cups");
    // A header whose total length is stale, as when reusing a request's.
    let header = cups_header().reply().build();
    let bytes = frame_bytes(&config, &header, b"0810body").unwrap();
    assert_eq!(&bytes[..4], b"0054");
    assert_eq!(&bytes[4 + 2..4 + 6], b"0054");
    let Frame::Message { header: got, body } = split_frame(&config, &bytes).unwrap() else {
        panic!("not a message");
    };
    assert_eq!(body, &b"0810body"[..]);
    let parsed = CupsHeader::parse(&got).unwrap();
    assert_eq!(parsed.total_len(), 54);
    assert_eq!(parsed.source, cups_header().destination);

    let mut not_cups = header;
    not_cups[0] = 0;
    assert!(matches!(
        frame_bytes(&config, &not_cups, b"0810"),
        Err(FramingError::CupsHeaderLengthByte { found: 0 })
    ));
}

#[test]
fn cups_header_is_checked_when_decoding() {
    let config = named("binary2+cups");
    let good = frame_bytes(&config, &cups_header().build(), b"0800").unwrap();

    let mut wrong_total = BytesMut::from(&good[..]);
    wrong_total[2 + 2..2 + 6].copy_from_slice(b"0051");
    wrong_total.put_slice(&good); // the next frame is still readable
    let mut codec = FrameCodec::new(config.clone());
    assert_eq!(
        codec.decode(&mut wrong_total).unwrap_err().to_string(),
        "CUPS header says the message is 51 bytes but the frame is 50 bytes"
    );
    assert!(matches!(
        codec.decode(&mut wrong_total),
        Ok(Some(Frame::Message { .. }))
    ));

    let mut short = BytesMut::new();
    short.put_u16(45);
    assert!(matches!(
        codec.decode(&mut short),
        Err(FramingError::ShorterThanHeader {
            len: 45,
            header_len: 46
        })
    ));
}

#[test]
fn split_frame_wants_exactly_one_frame() {
    let config = named("ascii4");
    assert!(matches!(
        split_frame(&config, b"00"),
        Err(FramingError::TruncatedPrefix {
            received: 2,
            width: 4
        })
    ));
    assert_eq!(
        split_frame(&config, b"0010abc").unwrap_err().to_string(),
        "incomplete frame: 7 of 14 bytes (length prefix included)"
    );
    assert_eq!(
        split_frame(&config, b"0003abcde").unwrap_err().to_string(),
        "2 bytes after the end of the frame"
    );
}

#[test]
fn decode_eof_reports_a_cut_frame() {
    let mut codec = FrameCodec::new(named("ascii4"));
    let mut buf = BytesMut::from(&b"0010abc"[..]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(FramingError::TruncatedFrame {
            received: 7,
            expected: 14
        })
    ));
    assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
}

#[test]
fn framing_names_parse_and_display() {
    let cases = [
        ("ascii4", LengthPrefix::Ascii4, HeaderKind::None),
        ("binary2", LengthPrefix::Binary2, HeaderKind::None),
        ("bcd2", LengthPrefix::Bcd2, HeaderKind::None),
        ("binary4", LengthPrefix::Binary4, HeaderKind::None),
        ("binary2+cups", LengthPrefix::Binary2, HeaderKind::Cups),
        (
            "ascii4+header:12",
            LengthPrefix::Ascii4,
            HeaderKind::Fixed(12),
        ),
        ("bcd2+header:1", LengthPrefix::Bcd2, HeaderKind::Fixed(1)),
    ];
    for (name, prefix, header) in cases {
        let parsed: FramingConfig = name.parse().unwrap();
        assert_eq!(parsed, FramingConfig::new(prefix, header));
        assert_eq!(parsed.max_frame_len, DEFAULT_MAX_FRAME_LEN);
        assert_eq!(parsed.to_string(), name);
        assert_eq!(parsed.to_string().parse::<FramingConfig>().unwrap(), parsed);
    }
    assert_eq!(
        " Binary2+CUPS ".parse::<FramingConfig>().unwrap(),
        named("binary2+cups")
    );
    assert_eq!(FramingConfig::default(), named("ascii4"));

    let err = "ascii2".parse::<FramingConfig>().unwrap_err().to_string();
    assert!(
        err.starts_with("unknown framing \"ascii2\": expected ascii4"),
        "{err}"
    );
    for valid in ["binary2", "bcd2", "binary4", "+cups", "+header:N"] {
        assert!(err.contains(valid), "{err}");
    }
    assert!(matches!(
        "ascii4+tpdu".parse::<FramingConfig>(),
        Err(FramingError::UnknownFraming { .. })
    ));
    for bad in ["ascii4+header:0", "ascii4+header:", "ascii4+header:x"] {
        assert!(
            matches!(
                bad.parse::<FramingConfig>(),
                Err(FramingError::BadHeaderLength { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn arbitrary_input_never_panics() {
    // A cheap exhaustive sweep of short inputs; the fuzz targets go further.
    let configs = [
        named("ascii4"),
        named("binary2+cups").with_max_frame_len(60),
        named("bcd2+header:2").with_max_frame_len(3),
        named("binary4").with_max_frame_len(0),
    ];
    for config in configs {
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 3, 0x30, 0x39, 0x99, 0xff] {
                let input = [a, b, b, a, b'0', b'8'];
                for end in 0..=input.len() {
                    let _ = split_frame(&config, &input[..end]);
                    let mut buf = BytesMut::from(&input[..end]);
                    let mut codec = FrameCodec::new(config.clone());
                    while let Ok(Some(_)) = codec.decode(&mut buf) {}
                    let _ = codec.decode_eof(&mut buf);
                }
            }
        }
    }
}

#[test]
fn frame_len_counts_the_prefix_once_the_prefix_is_there() {
    let ascii4 = FramingConfig::default();
    assert_eq!(frame_len(&ascii4, b"00").unwrap(), None);
    assert_eq!(frame_len(&ascii4, b"0012").unwrap(), Some(16));
    assert_eq!(frame_len(&ascii4, b"0000").unwrap(), Some(4));
    let binary2 = FramingConfig::new(LengthPrefix::Binary2, HeaderKind::None);
    assert_eq!(frame_len(&binary2, &[0x01, 0x00, 0xaa]).unwrap(), Some(258));
    // Checked as the stream decoder checks it: too long, not digits.
    assert!(matches!(
        frame_len(&ascii4, b"9999"),
        Err(FramingError::FrameTooLong { len: 9999, .. })
    ));
    assert!(matches!(
        frame_len(&ascii4, b"00A1"),
        Err(FramingError::BadAsciiPrefix { .. })
    ));
}
