//! What does the client speak? Plain functions over the first bytes of a connection.

/// The protocol a connection's first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    /// A TLS handshake record (ClientHello).
    Tls,
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface.
    Http2,
    /// Anything else: raw TCP.
    Other,
    /// Not enough bytes to tell yet.
    NeedMore,
}

/// The HTTP/2 client connection preface.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Classifies the first bytes a client sent.
pub(crate) fn detect(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    // TLS: handshake record (0x16), major version 3.
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => Detected::NeedMore,
            Some(3) => Detected::Tls,
            Some(_) => Detected::Other,
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Detected::Http2
        } else {
            Detected::NeedMore
        };
    }
    // HTTP/1: a method token (uppercase letters) followed by a space.
    let mut i = 0;
    while i < buf.len() && i < 24 {
        match buf[i] {
            b'A'..=b'Z' | b'-' | b'_' => i += 1,
            b' ' if i > 0 => return Detected::Http1,
            _ => return Detected::Other,
        }
    }
    if i == buf.len() {
        Detected::NeedMore
    } else {
        Detected::Other
    }
}

/// Length of the first TLS record if `buf` holds all of it (`None` while incomplete).
pub(crate) fn tls_record_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 5 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]])) + 5;
    (buf.len() >= len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_lines_are_http1() {
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::Http1);
        assert_eq!(detect(b"CONNECT example.com:443 HTTP/1.1"), Detected::Http1);
        assert_eq!(detect(b"M-SEARCH * HTTP/1.1"), Detected::Http1);
    }

    #[test]
    fn the_h2_preface_is_http2_once_complete() {
        assert_eq!(detect(H2_PREFACE), Detected::Http2);
        assert_eq!(detect(&H2_PREFACE[..10]), Detected::NeedMore);
    }

    #[test]
    fn a_handshake_record_is_tls() {
        assert_eq!(detect(&[0x16, 0x03, 0x01, 0x00, 0x05]), Detected::Tls);
        assert_eq!(detect(&[0x16]), Detected::NeedMore);
        assert_eq!(detect(&[0x16, 0x02]), Detected::Other);
    }

    #[test]
    fn other_bytes_are_other() {
        assert_eq!(detect(b"SSH-2.0-OpenSSH_9.6\r\n"), Detected::Other);
        assert_eq!(detect(b"\x00\x01"), Detected::Other);
        assert_eq!(detect(b" GET"), Detected::Other);
        assert_eq!(detect(b"get / HTTP/1.1"), Detected::Other);
    }

    #[test]
    fn too_few_bytes_need_more() {
        assert_eq!(detect(b""), Detected::NeedMore);
        assert_eq!(detect(b"GE"), Detected::NeedMore);
        assert_eq!(detect(b"PRI * HT"), Detected::NeedMore);
    }

    #[test]
    fn the_first_record_length_needs_the_whole_record() {
        assert_eq!(tls_record_len(&[0x16, 3, 1, 0]), None);
        assert_eq!(tls_record_len(&[0x16, 3, 1, 0, 2, 9]), None);
        assert_eq!(tls_record_len(&[0x16, 3, 1, 0, 2, 9, 9]), Some(7));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = detect(&b);
            let _ = tls_record_len(&b);
        }

        #[test]
        fn more_bytes_never_undo_a_decision(b in proptest::collection::vec(any::<u8>(), 1..48), cut in 0usize..48) {
            let cut = cut.min(b.len());
            let early = detect(&b[..cut]);
            if early != Detected::NeedMore {
                prop_assert_eq!(detect(&b), early);
            }
        }
    }
}
