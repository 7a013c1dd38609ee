//! HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): the header a TCP load balancer
//! puts in front of a connection to say who the real client is. No socket here.
//!
//! [`parse`] reads the header from the start of the first bytes of a connection and says
//! how long it is; what follows belongs to the client. v2 TLVs are skipped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use super::Parsed;

/// The 12-byte signature that starts a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's limit).
pub const V1_MAX_LEN: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// Why a PROXY protocol header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The connection does not start with a v1 or v2 header.
    #[error("no PROXY protocol header (the connection starts with {0:?})")]
    Missing(String),
    /// A v1 header without its CRLF within 107 bytes.
    #[error("PROXY v1 header is not terminated by CRLF within 107 bytes")]
    V1TooLong,
    /// A v1 header whose fields do not parse.
    #[error("malformed PROXY v1 header: {0}")]
    V1Malformed(&'static str),
    /// A v2 header with another version nibble.
    #[error("PROXY v2 header has version {0}, expected 2")]
    V2Version(u8),
    /// A v2 command other than LOCAL and PROXY.
    #[error("PROXY v2 header has unknown command {0:#x}")]
    V2Command(u8),
    /// A v2 address family or transport this proxy cannot use.
    #[error("PROXY v2 header has unsupported address family/transport {0:#04x}")]
    V2Family(u8),
    /// The v2 length is too short for the addresses of its family.
    #[error("PROXY v2 header length {len} is too short for its addresses ({needed} bytes)")]
    V2Short {
        /// The length field.
        len: usize,
        /// What the family needs.
        needed: usize,
    },
}

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form.
    V1,
    /// The binary form.
    V2,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was proxied for `source`, which connected to `destination`.
    Proxied {
        /// The header's version.
        version: Version,
        /// The real client.
        source: SocketAddr,
        /// The address the client connected to (at the load balancer).
        destination: SocketAddr,
    },
    /// No client address: v1 `UNKNOWN`, v2 `LOCAL` (a health check by the balancer
    /// itself), or a v2 family without IP addresses (`UNSPEC`, `UNIX`). The connection's
    /// own addresses apply.
    Local {
        /// The header's version.
        version: Version,
    },
}

impl ProxyHeader {
    /// The real client's address, if the header names one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Self::Proxied { source, .. } => Some(*source),
            Self::Local { .. } => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// Parses a v1 or v2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed<ProxyHeader>, ProxyProtocolError> {
    let is_prefix = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if is_prefix(&V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    if is_prefix(V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    let shown = String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned();
    Err(ProxyProtocolError::Missing(shown))
}

fn parse_v1(buf: &[u8]) -> Result<Parsed<ProxyHeader>, ProxyProtocolError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyProtocolError::V1TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let len = cr + 2;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..cr])
        .map_err(|_| ProxyProtocolError::V1Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The rest of the line may be anything (the specification says to ignore it).
        return Ok(Parsed::Done {
            value: ProxyHeader::Local {
                version: Version::V1,
            },
            len,
        });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyProtocolError::V1Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut next = |what| fields.next().ok_or(ProxyProtocolError::V1Malformed(what));
    let (src, dst) = (
        next("source address missing")?,
        next("destination address missing")?,
    );
    let (sport, dport) = (
        next("source port missing")?,
        next("destination port missing")?,
    );
    if fields.next().is_some() {
        return Err(ProxyProtocolError::V1Malformed("extra fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyProtocolError> {
        let parsed = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        parsed.map_err(|_| ProxyProtocolError::V1Malformed("address does not match the protocol"))
    };
    let port = |s: &str| -> Result<u16, ProxyProtocolError> {
        let ok = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        ok.then(|| s.parse().ok())
            .flatten()
            .ok_or(ProxyProtocolError::V1Malformed("bad port"))
    };
    Ok(Parsed::Done {
        value: ProxyHeader::Proxied {
            version: Version::V1,
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
        len,
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed<ProxyHeader>, ProxyProtocolError> {
    let Some(fixed) = buf.get(12..16) else {
        return Ok(Parsed::Incomplete);
    };
    let (ver_cmd, fam, body_len) = (
        fixed[0],
        fixed[1],
        usize::from(u16::from_be_bytes([fixed[2], fixed[3]])),
    );
    if ver_cmd >> 4 != 2 {
        return Err(ProxyProtocolError::V2Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return Err(ProxyProtocolError::V2Command(c)),
    };
    let len = 16 + body_len;
    let Some(body) = buf.get(16..len) else {
        return Ok(Parsed::Incomplete);
    };
    let local_header = Parsed::Done {
        value: ProxyHeader::Local {
            version: Version::V2,
        },
        len,
    };
    if local {
        // LOCAL: the address block (if any) must be ignored.
        return Ok(local_header);
    }
    let needed = match fam {
        0x00 => return Ok(local_header),
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        other => return Err(ProxyProtocolError::V2Family(other)),
    };
    if body_len < needed {
        return Err(ProxyProtocolError::V2Short {
            len: body_len,
            needed,
        });
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (source, destination) = match fam {
        0x11 => {
            let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            (
                SocketAddr::new(ip(0).into(), port(8)),
                SocketAddr::new(ip(4).into(), port(10)),
            )
        }
        0x21 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[at..at + 16]);
                Ipv6Addr::from(o)
            };
            (
                SocketAddr::new(ip(0).into(), port(32)),
                SocketAddr::new(ip(16).into(), port(34)),
            )
        }
        // AF_UNIX stream: no IP to report.
        _ => return Ok(local_header),
    };
    Ok(Parsed::Done {
        value: ProxyHeader::Proxied {
            version: Version::V2,
            source,
            destination,
        },
        len,
    })
}

/// Encodes a v1 header (for tests and for a waylay that forwards to another one).
pub fn encode_v1(header: &ProxyHeader) -> Vec<u8> {
    match header {
        ProxyHeader::Proxied {
            source,
            destination,
            ..
        } => {
            let fam = if source.is_ipv4() && destination.is_ipv4() {
                "TCP4"
            } else {
                "TCP6"
            };
            let ip = |a: &SocketAddr| match (fam, a.ip()) {
                ("TCP6", IpAddr::V4(v4)) => v4.to_ipv6_mapped().to_string(),
                (_, ip) => ip.to_string(),
            };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                ip(source),
                ip(destination),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        ProxyHeader::Local { .. } => b"PROXY UNKNOWN\r\n".to_vec(),
    }
}

/// Encodes a v2 header followed by `tlvs` (raw TLV bytes, carried but never interpreted).
pub fn encode_v2(header: &ProxyHeader, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut body = Vec::new();
    match header {
        ProxyHeader::Proxied {
            source,
            destination,
            ..
        } => {
            out.push(0x21);
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    body.extend_from_slice(&s.octets());
                    body.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    let v6 = |ip: IpAddr| match ip {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    out.push(0x21);
                    body.extend_from_slice(&v6(s).octets());
                    body.extend_from_slice(&v6(d).octets());
                }
            }
            body.extend_from_slice(&source.port().to_be_bytes());
            body.extend_from_slice(&destination.port().to_be_bytes());
        }
        ProxyHeader::Local { .. } => {
            out.push(0x20);
            out.push(0x00);
        }
    }
    body.extend_from_slice(tlvs);
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn done(b: &[u8]) -> (ProxyHeader, usize) {
        match parse(b) {
            Ok(Parsed::Done { value, len }) => (value, len),
            other => panic!("not done: {other:?}"),
        }
    }

    fn proxied(version: Version, s: &str, d: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            version,
            source: s.parse().unwrap(),
            destination: d.parse().unwrap(),
        }
    }

    #[test]
    fn v1_fixtures() {
        let b = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, len) = done(b);
        assert_eq!(
            h,
            proxied(Version::V1, "192.0.2.10:56324", "198.51.100.1:443")
        );
        assert_eq!(&b[len..], b"GET / HTTP/1.1\r\n");

        let (h, _) = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(h, proxied(Version::V1, "[2001:db8::1]:1", "[::1]:65535"));

        let (h, len) = done(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nrest");
        assert_eq!(
            h,
            ProxyHeader::Local {
                version: Version::V1
            }
        );
        assert_eq!(len, 35);
        assert_eq!(h.source(), None);
    }

    #[test]
    fn v1_refusals() {
        let err = |b: &[u8]| parse(b).expect_err(&String::from_utf8_lossy(b));
        assert!(matches!(
            err(b"PROXY TCP4 ::1 ::1 1 2\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert!(matches!(
            err(b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert!(matches!(
            err(b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert!(matches!(
            err(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert!(matches!(
            err(b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert!(matches!(
            err(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert!(matches!(
            err(b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n"),
            ProxyProtocolError::V1Malformed(_)
        ));
        assert_eq!(
            err(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)),
            ProxyProtocolError::V1TooLong
        );
        let missing = err(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            missing.to_string(),
            "no PROXY protocol header (the connection starts with \"GET / HTTP/1.1\\r\\n\")"
        );
        assert!(matches!(
            err(b"\x16\x03\x01"),
            ProxyProtocolError::Missing(_)
        ));
        // Prefixes wait for more.
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n\r\n\0"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
    }

    #[test]
    fn v2_fixtures() {
        // PROXY, TCP over IPv4, 203.0.113.7:40000 -> 10.0.0.1:8080, then a TLV (0x04 NOOP, 3 bytes).
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x21, 0x11, 0x00, 0x12]);
        b.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1]);
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&8080u16.to_be_bytes());
        b.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3]);
        b.extend_from_slice(b"payload");
        let (h, len) = done(&b);
        assert_eq!(
            h,
            proxied(Version::V2, "203.0.113.7:40000", "10.0.0.1:8080")
        );
        assert_eq!(&b[len..], b"payload");

        // LOCAL with an address block that must be ignored.
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x20, 0x11, 0x00, 0x0c]);
        b.extend_from_slice(&[0; 12]);
        assert_eq!(
            done(&b).0,
            ProxyHeader::Local {
                version: Version::V2
            }
        );

        // PROXY with AF_UNSPEC.
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x21, 0x00, 0x00, 0x00]);
        assert_eq!(
            done(&b),
            (
                ProxyHeader::Local {
                    version: Version::V2
                },
                16
            )
        );

        let h = proxied(Version::V2, "[2001:db8::7]:1234", "[::1]:443");
        let (back, _) = done(&encode_v2(&h, &[]));
        assert_eq!(back, h);
    }

    #[test]
    fn v2_refusals() {
        let with = |ver_cmd: u8, fam: u8, body: &[u8]| {
            let mut b = V2_SIGNATURE.to_vec();
            b.extend_from_slice(&[ver_cmd, fam]);
            b.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
            b.extend_from_slice(body);
            parse(&b)
        };
        assert_eq!(
            with(0x11, 0x11, &[0; 12]),
            Err(ProxyProtocolError::V2Version(1))
        );
        assert_eq!(
            with(0x22, 0x11, &[0; 12]),
            Err(ProxyProtocolError::V2Command(2))
        );
        assert_eq!(
            with(0x21, 0x12, &[0; 12]),
            Err(ProxyProtocolError::V2Family(0x12))
        );
        assert_eq!(
            with(0x21, 0x21, &[0; 12]),
            Err(ProxyProtocolError::V2Short {
                len: 12,
                needed: 36
            })
        );
        let full = encode_v2(&proxied(Version::V2, "1.2.3.4:1", "5.6.7.8:2"), b"tlv");
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(Parsed::Incomplete), "cut {cut}");
        }
    }

    fn header() -> impl Strategy<Value = ProxyHeader> {
        let addr = prop_oneof![
            (any::<Ipv4Addr>(), any::<u16>()).prop_map(|(i, p)| SocketAddr::new(i.into(), p)),
            (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(i, p)| SocketAddr::new(i.into(), p)),
        ];
        prop_oneof![
            Just(ProxyHeader::Local {
                version: Version::V1
            }),
            (addr.clone(), addr).prop_map(|(source, destination)| ProxyHeader::Proxied {
                version: Version::V1,
                source,
                destination
            }),
        ]
    }

    /// What a header reads back as: mixed families are sent as IPv6 (IPv4-mapped).
    fn normalised(h: &ProxyHeader, version: Version) -> ProxyHeader {
        match h {
            ProxyHeader::Proxied {
                source,
                destination,
                ..
            } => {
                let both_v4 = source.is_ipv4() && destination.is_ipv4();
                let map = |a: &SocketAddr| match a.ip() {
                    IpAddr::V4(v4) if !both_v4 => {
                        SocketAddr::new(v4.to_ipv6_mapped().into(), a.port())
                    }
                    _ => *a,
                };
                ProxyHeader::Proxied {
                    version,
                    source: map(source),
                    destination: map(destination),
                }
            }
            ProxyHeader::Local { .. } => ProxyHeader::Local { version },
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&b);
            let mut v2 = V2_SIGNATURE.to_vec();
            v2.extend_from_slice(&b);
            let _ = parse(&v2);
            let mut v1 = b"PROXY ".to_vec();
            v1.extend_from_slice(&b);
            let _ = parse(&v1);
        }

        #[test]
        fn v1_round_trips(h in header(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut b = encode_v1(&h);
            let n = b.len();
            prop_assert!(n <= V1_MAX_LEN);
            b.extend_from_slice(&tail);
            prop_assert_eq!(parse(&b), Ok(Parsed::Done { value: normalised(&h, Version::V1), len: n }));
        }

        #[test]
        fn v2_round_trips(
            h in header(),
            tlvs in proptest::collection::vec(any::<u8>(), 0..64),
            tail in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut b = encode_v2(&h, &tlvs);
            let n = b.len();
            b.extend_from_slice(&tail);
            prop_assert_eq!(parse(&b), Ok(Parsed::Done { value: normalised(&h, Version::V2), len: n }));
        }
    }
}
