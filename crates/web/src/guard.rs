//! Refusing requests sent through the proxy to the web UI itself (CVE-2025-23217 in
//! mitmweb: the UI was bound to localhost, but a client of the proxy could reach it through
//! the proxy).

use std::net::{IpAddr, SocketAddr};

/// Whether a request for `host:port` through the proxy would reach the UI bound at `ui`.
///
/// Covers the bound address itself, and when the UI listens on a loopback or unspecified
/// address, every loopback spelling (`localhost`, `127.0.0.0/8`, `::1`) and the unspecified
/// addresses (`0.0.0.0`, `::`, which connect to this host).
pub(crate) fn targets_ui(host: &str, port: u16, ui: SocketAddr) -> bool {
    if port != ui.port() {
        return false;
    }
    let host = host.trim().trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let bound = ui.ip();
    let local = bound.is_loopback() || bound.is_unspecified();
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return local;
    }
    let Some(ip) = parse_ip(host) else {
        return false;
    };
    let ip = canonical(ip);
    if ip == canonical(bound) {
        return true;
    }
    if ip.is_unspecified() {
        return true;
    }
    local && ip.is_loopback() || bound.is_unspecified()
}

/// Parses an IP literal, also in the short or numeric IPv4 forms some clients accept
/// (`127.1`, `2130706433`).
fn parse_ip(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !host.is_empty() {
        let parts: Vec<&str> = host.split('.').collect();
        let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
        let nums = nums?;
        let v = match nums.as_slice() {
            [a] => *a,
            [a, b] if *a < 256 && *b < (1 << 24) => (a << 24) | b,
            [a, b, c] if *a < 256 && *b < 256 && *c < (1 << 16) => (a << 24) | (b << 16) | c,
            _ => return None,
        };
        return Some(IpAddr::from(v.to_be_bytes()));
    }
    None
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ui(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_spellings_are_the_ui() {
        let u = ui("127.0.0.1:8081");
        for h in [
            "127.0.0.1",
            "localhost",
            "LOCALHOST.",
            "127.0.0.2",
            "::1",
            "[::1]",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "127.1",
            "2130706433",
            "app.localhost",
        ] {
            assert!(targets_ui(h, 8081, u), "{h}");
        }
        assert!(!targets_ui("127.0.0.1", 8080, u));
        assert!(!targets_ui("example.com", 8081, u));
        assert!(!targets_ui("10.0.0.1", 8081, u));
    }

    #[test]
    fn a_ui_on_all_interfaces_is_any_literal_address() {
        let u = ui("0.0.0.0:8081");
        assert!(targets_ui("192.0.2.7", 8081, u));
        assert!(targets_ui("localhost", 8081, u));
        let u = ui("192.0.2.7:8081");
        assert!(targets_ui("192.0.2.7", 8081, u));
        assert!(!targets_ui("localhost", 8081, u));
    }
}
