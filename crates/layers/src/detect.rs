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
