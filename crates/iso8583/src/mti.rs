//! Message type indicators: which MTIs are responses, the response MTI of a
//! request, and the class of a repeat (0121 is a repeat of 0120).
//!
//! Every function is total: an MTI whose digits are not digits (the parser
//! refuses those, but a `Message` can be built by hand) is never a response
//! and is its own class.

use crate::codec::Mti;

/// Whether an MTI is a response: the third digit (function) is odd — x1x, x3x.
pub fn is_response(mti: &Mti) -> bool {
    mti[2].is_ascii_digit() && (mti[2] - b'0') % 2 == 1
}

/// Whether an MTI is a repeat: the fourth digit (origin) is 1 — 0121, 0421.
pub fn is_repeat(mti: &Mti) -> bool {
    mti[3] == b'1'
}

/// The MTI with the repeat digit cleared: 0121 → 0120, 0421 → 0420; a request
/// and its repeats share this class.
pub fn request_class(mti: &Mti) -> Mti {
    let mut class = *mti;
    if is_repeat(&class) {
        class[3] = b'0';
    }
    class
}

/// The response MTI of a request MTI: function digit plus one, origin digit
/// cleared (0100 → 0110, 0121 → 0130, 0420 → 0430).
pub fn response_mti(request: &Mti) -> Mti {
    let mut mti = *request;
    if mti[2].is_ascii_digit() && mti[2] < b'9' {
        mti[2] += 1;
    }
    mti[3] = b'0';
    mti
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_classes() {
        assert_eq!(&response_mti(b"0100"), b"0110");
        assert_eq!(&response_mti(b"0121"), b"0130");
        assert_eq!(&response_mti(b"0420"), b"0430");
        assert_eq!(&response_mti(b"0800"), b"0810");
        assert!(is_response(b"0110") && is_response(b"0430") && !is_response(b"0200"));
        assert_eq!(&request_class(b"0421"), b"0420");
        assert_eq!(&request_class(b"0200"), b"0200");
    }

    #[test]
    fn non_digits_never_panic() {
        let odd = *b"01\xff9";
        assert!(!is_response(&odd));
        assert_eq!(response_mti(&odd), *b"01\xff0");
        assert_eq!(response_mti(b"0190"), *b"0190");
    }
}
