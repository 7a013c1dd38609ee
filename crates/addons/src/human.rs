//! Human-readable sizes, durations and addresses, as mitmproxy's `utils/human.py` prints
//! them, and escaping of control characters so traffic cannot drive the terminal.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// A byte count in at most five characters: `512b`, `1.2k`, `340k`, `12.0m`.
pub(crate) fn pretty_size(size: u64) -> String {
    if size < 1024 {
        return format!("{size}b");
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a display value; a 53-bit mantissa is plenty"
    )]
    let mut s = size as f64;
    for suffix in ["k", "m", "g"] {
        s /= 1024.0;
        if s < 99.95 {
            return format!("{s:.1}{suffix}");
        }
        if s < 1024.0 {
            return format!("{s:.0}{suffix}");
        }
    }
    s /= 1024.0;
    if s < 99.95 {
        format!("{s:.1}t")
    } else {
        format!("{s:.0}t")
    }
}

/// A duration: `12ms` below a second, then `1.25s`, `12.5s`, `125s`.
pub(crate) fn pretty_duration(secs: f64) -> String {
    if secs >= 100.0 {
        format!("{secs:.0}s")
    } else if secs >= 10.0 {
        format!("{secs:.1}s")
    } else if secs >= 1.0 {
        format!("{secs:.2}s")
    } else {
        format!("{:.0}ms", secs * 1000.0)
    }
}

/// `ip:port`, `[v6]:port`; an IPv4-mapped IPv6 address is shown as the IPv4 address.
pub(crate) fn format_address(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", v6.port()),
            None => addr.to_string(),
        },
        SocketAddr::V4(_) => addr.to_string(),
    }
}

/// Replaces control characters with `\xNN` (or `\u{..}`) escapes; tabs are kept when
/// `keep_tab` is set. Bytes that came from the network must never reach a terminal raw.
pub(crate) fn escape_control(s: &str, keep_tab: bool) -> String {
    if !s
        .chars()
        .any(|c| c.is_control() && !(keep_tab && c == '\t'))
    {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && !(keep_tab && c == '\t') {
            let n = u32::from(c);
            if n < 0x100 {
                let _ = write!(out, "\\x{n:02x}");
            } else {
                let _ = write!(out, "\\u{{{n:x}}}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes raw header bytes: UTF-8 is kept (control characters escaped), other bytes are
/// shown as `\xNN`.
pub(crate) fn escape_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => escape_control(s, false),
        Err(_) => {
            let mut out = String::with_capacity(b.len() + 8);
            for chunk in b.utf8_chunks() {
                out.push_str(&escape_control(chunk.valid(), false));
                for byte in chunk.invalid() {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_five_characters() {
        assert_eq!(pretty_size(0), "0b");
        assert_eq!(pretty_size(1023), "1023b");
        assert_eq!(pretty_size(1024), "1.0k");
        assert_eq!(pretty_size(1229), "1.2k");
        assert_eq!(pretty_size(100 * 1024), "100k");
        assert_eq!(pretty_size(3 << 20), "3.0m");
        assert_eq!(pretty_size(5 << 40), "5.0t");
        assert_eq!(pretty_size(u64::MAX), "16777216t");
    }

    #[test]
    fn durations() {
        assert_eq!(pretty_duration(0.0123), "12ms");
        assert_eq!(pretty_duration(1.234), "1.23s");
        assert_eq!(pretty_duration(12.34), "12.3s");
        assert_eq!(pretty_duration(123.4), "123s");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            format_address(&"127.0.0.1:80".parse().unwrap()),
            "127.0.0.1:80"
        );
        assert_eq!(format_address(&"[::1]:80".parse().unwrap()), "[::1]:80");
        assert_eq!(
            format_address(&"[::ffff:10.0.0.1]:80".parse().unwrap()),
            "10.0.0.1:80"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("a\x1b[2Jb", false), "a\\x1b[2Jb");
        assert_eq!(escape_control("a\tb", true), "a\tb");
        assert_eq!(escape_control("a\tb", false), "a\\x09b");
        assert_eq!(escape_control("\u{9b}", false), "\\x9b");
        assert_eq!(escape_bytes(b"ok\xff"), "ok\\xff");
    }
}
