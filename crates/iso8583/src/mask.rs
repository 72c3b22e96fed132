//! Masking of card data for every human-readable output.
//!
//! A PAN keeps its first 6 and last 4 digits and its length; anything shorter
//! than 13 characters is masked entirely but for its last 4, because 6 + 4 of a
//! short value would reveal most of it.

/// How many characters a masked value of `len` characters keeps at its start
/// and at its end; every one between is masked.
pub fn kept_ends(len: usize) -> (usize, usize) {
    if len >= 13 {
        (6, 4)
    } else if len > 4 {
        (0, 4)
    } else {
        (0, 0)
    }
}

/// Masks a card number (or any sensitive text) for display. A PAN is ASCII
/// digits, masked byte by byte; any other text (a malformed field shown to
/// an operator) is masked by characters, so a multi-byte character is never
/// cut.
pub fn mask_pan(value: &str) -> String {
    if value.is_ascii() {
        let n = value.len();
        let (head, tail) = kept_ends(n);
        let mut masked = String::with_capacity(n);
        masked.push_str(&value[..head]);
        masked.extend(std::iter::repeat_n('*', n - head - tail));
        masked.push_str(&value[n - tail..]);
        masked
    } else {
        let n = value.chars().count();
        let (head, tail) = kept_ends(n);
        value
            .chars()
            .enumerate()
            .map(|(i, c)| if i < head || i >= n - tail { c } else { '*' })
            .collect()
    }
}

/// Room for a masked PAN in [`mask_pan_into`]: the longest PAN ISO 8583
/// allows (19 digits) and then some.
pub const MASKED_ROOM: usize = 32;

/// [`mask_pan`] into `buf`, without allocating: `None` when `value` is not
/// ASCII or longer than `buf` (then [`mask_pan`] does it). The same text
/// as [`mask_pan`] gives.
pub fn mask_pan_into<'b>(value: &str, buf: &'b mut [u8; MASKED_ROOM]) -> Option<&'b str> {
    let n = value.len();
    if !value.is_ascii() || n > MASKED_ROOM {
        return None;
    }
    let (head, tail) = kept_ends(n);
    let out = &mut buf[..n];
    out.copy_from_slice(value.as_bytes());
    out[head..n - tail].fill(b'*');
    // ASCII in, ASCII out.
    std::str::from_utf8(out).ok()
}

/// A display wrapper that masks its PAN, for use in log fields:
/// `tracing::info!(pan = %Masked(pan), ...)`.
pub struct Masked<'a>(pub &'a str);

impl std::fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_pan(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_first_six_last_four_and_length() {
        assert_eq!(mask_pan("6222020200112233441"), "622202*********3441");
        assert_eq!(mask_pan("4111111111111111"), "411111******1111");
        assert_eq!(mask_pan("123456789012"), "********9012");
        assert_eq!(mask_pan("1234"), "****");
        assert_eq!(mask_pan(""), "");
        assert_eq!(Masked("4111111111111111").to_string(), "411111******1111");
    }

    #[test]
    fn masks_other_text_by_characters() {
        // 14 characters, 28 bytes: masked as 14, never cut inside one.
        assert_eq!(mask_pan("éééééééééééééé"), "éééééé****éééé");
        assert_eq!(mask_pan("ééééé"), "*éééé");
        assert_eq!(mask_pan("éé"), "**");
    }

    #[test]
    fn masking_into_a_buffer_gives_the_same_text() {
        let mut buf = [0; MASKED_ROOM];
        let long = "1".repeat(MASKED_ROOM);
        for value in [
            "6222020200112233441",
            "4111111111111111",
            "123456789012",
            "1234",
            "",
            "12345",
            "1234567890123",
            long.as_str(),
        ] {
            assert_eq!(
                mask_pan_into(value, &mut buf),
                Some(mask_pan(value).as_str())
            );
        }
        // Not ASCII, or longer than the buffer: left to `mask_pan`.
        assert_eq!(mask_pan_into("éééééééééééééé", &mut buf), None);
        assert_eq!(mask_pan_into(&"1".repeat(MASKED_ROOM + 1), &mut buf), None);
    }
}
