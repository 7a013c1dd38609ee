//! SOCKS v5 (RFC 1928) with username/password authentication (RFC 1929), both sides, over
//! byte buffers: no socket here.
//!
//! The messages and their codes are here; the two handshakes, as state machines, are in
//! `handshake.rs`. The server side ([`ServerHandshake`]) is what `--mode socks5` runs on an
//! accepted connection; the client side ([`ClientHandshake`]) is what waylay runs towards a SOCKS5
//! upstream proxy. Both are fed the bytes read so far and say what to do next: read more,
//! write these bytes, check these credentials, dial this target, or give up with a typed
//! error. Only CONNECT is supported; BIND and UDP ASSOCIATE are answered "command not
//! supported".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use waylay_core::flow::Address;

mod handshake;

pub use super::Parsed;
pub use handshake::{ClientHandshake, ClientStep, ServerAuth, ServerHandshake, ServerStep};

/// The protocol version byte.
pub const VERSION: u8 = 5;
/// The RFC 1929 sub-negotiation version byte.
pub const AUTH_VERSION: u8 = 1;

/// Why a SOCKS5 exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    /// The peer does not speak SOCKS5 at all.
    #[error("not a SOCKS5 client: {0}")]
    NotSocks5(NotSocks5),
    /// A message carried another version byte.
    #[error("SOCKS version {found} in the {what}, expected 5")]
    BadVersion {
        /// The version byte found.
        found: u8,
        /// Which message.
        what: &'static str,
    },
    /// The greeting offered no authentication method.
    #[error("SOCKS5 greeting offers no authentication method")]
    NoMethods,
    /// The username/password message carried another version byte.
    #[error("username/password sub-negotiation version {0}, expected 1")]
    BadAuthVersion(u8),
    /// An address type other than IPv4, IPv6 or a domain name.
    #[error("SOCKS5 address type {0:#04x} is not supported")]
    BadAddressType(u8),
    /// A domain name that is empty or not printable ASCII.
    #[error("SOCKS5 domain name is empty or not printable ASCII")]
    BadDomain,
    /// The reserved byte was not zero.
    #[error("SOCKS5 reserved byte is {0:#04x}, not 0")]
    BadReserved(u8),
    /// A field that must fit in 255 bytes does not.
    #[error("{0} is longer than 255 bytes")]
    TooLong(&'static str),
    /// The server accepts none of the offered authentication methods.
    #[error("the SOCKS5 proxy accepts none of the offered authentication methods")]
    NoAcceptableMethod,
    /// The server picked a method the client did not offer.
    #[error("the SOCKS5 proxy chose method {0:#04x}, which was not offered")]
    UnexpectedMethod(u8),
    /// The server rejected the username and password.
    #[error("the SOCKS5 proxy rejected the username/password (status {0:#04x})")]
    AuthRejected(u8),
    /// The server answered the request with a failure.
    #[error("the SOCKS5 proxy answered: {0}")]
    Refused(Reply),
}

/// What a connection that is not SOCKS5 looks like instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSocks5 {
    /// An HTTP/1 request line (a client configured for an HTTP proxy).
    Http,
    /// A SOCKS4 or SOCKS4a request.
    Socks4,
    /// A TLS ClientHello.
    Tls,
    /// Anything else.
    Other,
}

impl fmt::Display for NotSocks5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "an HTTP request",
            Self::Socks4 => "a SOCKS4 request",
            Self::Tls => "a TLS handshake",
            Self::Other => "unrecognised bytes",
        })
    }
}

/// Classifies the first byte of a connection that should be SOCKS5 (`None`: it is).
pub fn not_socks5(first: u8) -> Option<NotSocks5> {
    match first {
        VERSION => None,
        4 => Some(NotSocks5::Socks4),
        0x16 => Some(NotSocks5::Tls),
        b'A'..=b'Z' => Some(NotSocks5::Http),
        _ => Some(NotSocks5::Other),
    }
}

/// An authentication method (RFC 1928 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `0x00`: no authentication.
    NoAuth,
    /// `0x02`: username/password (RFC 1929).
    UserPass,
    /// `0xff`: no acceptable method.
    NoAcceptable,
    /// Any other method (GSSAPI, private ones), never chosen by waylay.
    Other(u8),
}

impl Method {
    /// The method's byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::NoAuth => 0x00,
            Self::UserPass => 0x02,
            Self::NoAcceptable => 0xff,
            Self::Other(c) => c,
        }
    }

    /// The method with byte `c`.
    pub const fn from_code(c: u8) -> Self {
        match c {
            0x00 => Self::NoAuth,
            0x02 => Self::UserPass,
            0xff => Self::NoAcceptable,
            c => Self::Other(c),
        }
    }
}

/// A request's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `0x01`: open a TCP connection.
    Connect,
    /// `0x02`: accept one inbound connection.
    Bind,
    /// `0x03`: relay UDP.
    UdpAssociate,
    /// Anything else.
    Other(u8),
}

impl Command {
    /// The command's byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::Connect => 1,
            Self::Bind => 2,
            Self::UdpAssociate => 3,
            Self::Other(c) => c,
        }
    }

    /// The command with byte `c`.
    pub const fn from_code(c: u8) -> Self {
        match c {
            1 => Self::Connect,
            2 => Self::Bind,
            3 => Self::UdpAssociate,
            c => Self::Other(c),
        }
    }
}

/// A reply code (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `0x00`.
    Succeeded,
    /// `0x01`.
    GeneralFailure,
    /// `0x02`: connection not allowed by ruleset.
    NotAllowed,
    /// `0x03`.
    NetworkUnreachable,
    /// `0x04`.
    HostUnreachable,
    /// `0x05`.
    ConnectionRefused,
    /// `0x06`.
    TtlExpired,
    /// `0x07`.
    CommandNotSupported,
    /// `0x08`.
    AddressTypeNotSupported,
    /// An unassigned code.
    Other(u8),
}

impl Reply {
    /// The reply's byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::GeneralFailure => 1,
            Self::NotAllowed => 2,
            Self::NetworkUnreachable => 3,
            Self::HostUnreachable => 4,
            Self::ConnectionRefused => 5,
            Self::TtlExpired => 6,
            Self::CommandNotSupported => 7,
            Self::AddressTypeNotSupported => 8,
            Self::Other(c) => c,
        }
    }

    /// The reply with byte `c`.
    pub const fn from_code(c: u8) -> Self {
        match c {
            0 => Self::Succeeded,
            1 => Self::GeneralFailure,
            2 => Self::NotAllowed,
            3 => Self::NetworkUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::ConnectionRefused,
            6 => Self::TtlExpired,
            7 => Self::CommandNotSupported,
            8 => Self::AddressTypeNotSupported,
            c => Self::Other(c),
        }
    }

    /// The reply for a failed dial: refused, unreachable, timed out, else general failure.
    pub fn from_io_error(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Self::ConnectionRefused,
            K::HostUnreachable => Self::HostUnreachable,
            K::NetworkUnreachable => Self::NetworkUnreachable,
            K::TimedOut => Self::TtlExpired,
            _ => Self::GeneralFailure,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::GeneralFailure => f.write_str("general failure"),
            Self::NotAllowed => f.write_str("connection not allowed by ruleset"),
            Self::NetworkUnreachable => f.write_str("network unreachable"),
            Self::HostUnreachable => f.write_str("host unreachable"),
            Self::ConnectionRefused => f.write_str("connection refused"),
            Self::TtlExpired => f.write_str("TTL expired"),
            Self::CommandNotSupported => f.write_str("command not supported"),
            Self::AddressTypeNotSupported => f.write_str("address type not supported"),
            Self::Other(c) => write!(f, "unassigned reply {c:#04x}"),
        }
    }
}

/// A request's destination (or a reply's bound address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// An IPv4 or IPv6 address (`ATYP` 1 or 4).
    Ip(SocketAddr),
    /// A domain name (`ATYP` 3), resolved by the proxy.
    Domain(String, u16),
}

impl TargetAddr {
    /// As a flow [`Address`].
    pub fn to_address(&self) -> Address {
        match self {
            Self::Ip(a) => Address::new(a.ip().to_string(), a.port()),
            Self::Domain(h, p) => Address::new(h.clone(), *p),
        }
    }

    /// From a flow [`Address`]: an IP literal as an IP, anything else as a domain name.
    pub fn from_address(a: &Address) -> Self {
        match a.host.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(SocketAddr::new(ip, a.port)),
            Err(_) => Self::Domain(a.host.clone(), a.port),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Socks5Error> {
        match self {
            Self::Ip(SocketAddr::V4(a)) => {
                out.push(1);
                out.extend_from_slice(&a.ip().octets());
            }
            Self::Ip(SocketAddr::V6(a)) => {
                out.push(4);
                out.extend_from_slice(&a.ip().octets());
            }
            Self::Domain(h, _) => {
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Socks5Error::BadDomain);
                }
                let len = u8::try_from(h.len()).map_err(|_| Socks5Error::TooLong("domain name"))?;
                out.push(3);
                out.push(len);
                out.extend_from_slice(h.as_bytes());
            }
        }
        let port = match self {
            Self::Ip(a) => a.port(),
            Self::Domain(_, p) => *p,
        };
        out.extend_from_slice(&port.to_be_bytes());
        Ok(())
    }

    /// Parses `ATYP ADDR PORT` at the start of `b`.
    fn parse(b: &[u8]) -> Result<Parsed<Self>, Socks5Error> {
        let Some(&atyp) = b.first() else {
            return Ok(Parsed::Incomplete);
        };
        let (addr_len, start) = match atyp {
            1 => (4, 1),
            4 => (16, 1),
            3 => match b.get(1) {
                None => return Ok(Parsed::Incomplete),
                Some(&n) => (usize::from(n), 2),
            },
            t => return Err(Socks5Error::BadAddressType(t)),
        };
        let end = start + addr_len + 2;
        let Some(bytes) = b.get(start..end) else {
            return Ok(Parsed::Incomplete);
        };
        let (addr, port) = bytes.split_at(addr_len);
        let port = u16::from_be_bytes([port[0], port[1]]);
        let value = match atyp {
            1 => {
                let o: [u8; 4] = addr
                    .try_into()
                    .map_err(|_| Socks5Error::BadAddressType(1))?;
                Self::Ip(SocketAddr::new(Ipv4Addr::from(o).into(), port))
            }
            4 => {
                let o: [u8; 16] = addr
                    .try_into()
                    .map_err(|_| Socks5Error::BadAddressType(4))?;
                Self::Ip(SocketAddr::new(Ipv6Addr::from(o).into(), port))
            }
            _ => {
                if addr.is_empty() || !addr.iter().all(u8::is_ascii_graphic) {
                    return Err(Socks5Error::BadDomain);
                }
                Self::Domain(String::from_utf8_lossy(addr).into_owned(), port)
            }
        };
        Ok(Parsed::Done { value, len: end })
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// The client's greeting: its version and offered methods.
pub fn parse_greeting(b: &[u8]) -> Result<Parsed<Vec<Method>>, Socks5Error> {
    let Some(&ver) = b.first() else {
        return Ok(Parsed::Incomplete);
    };
    if let Some(other) = not_socks5(ver) {
        return Err(Socks5Error::NotSocks5(other));
    }
    let Some(&n) = b.get(1) else {
        return Ok(Parsed::Incomplete);
    };
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let end = 2 + usize::from(n);
    match b.get(2..end) {
        None => Ok(Parsed::Incomplete),
        Some(m) => Ok(Parsed::Done {
            value: m.iter().copied().map(Method::from_code).collect(),
            len: end,
        }),
    }
}

/// A username and password as sent in RFC 1929's sub-negotiation.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPass {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for UserPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// RFC 1929's request: `VER ULEN UNAME PLEN PASSWD`.
pub fn parse_auth_request(b: &[u8]) -> Result<Parsed<UserPass>, Socks5Error> {
    let Some(&ver) = b.first() else {
        return Ok(Parsed::Incomplete);
    };
    if ver != AUTH_VERSION {
        return Err(Socks5Error::BadAuthVersion(ver));
    }
    let Some(&ulen) = b.get(1) else {
        return Ok(Parsed::Incomplete);
    };
    let uend = 2 + usize::from(ulen);
    let Some(&plen) = b.get(uend) else {
        return Ok(Parsed::Incomplete);
    };
    let end = uend + 1 + usize::from(plen);
    if b.len() < end {
        return Ok(Parsed::Incomplete);
    }
    Ok(Parsed::Done {
        value: UserPass {
            username: String::from_utf8_lossy(&b[2..uend]).into_owned(),
            password: String::from_utf8_lossy(&b[uend + 1..end]).into_owned(),
        },
        len: end,
    })
}

/// Encodes RFC 1929's request.
pub fn encode_auth_request(username: &str, password: &str) -> Result<Vec<u8>, Socks5Error> {
    let ulen =
        u8::try_from(username.len()).map_err(|_| Socks5Error::TooLong("SOCKS5 user name"))?;
    let plen = u8::try_from(password.len()).map_err(|_| Socks5Error::TooLong("SOCKS5 password"))?;
    let mut out = Vec::with_capacity(3 + username.len() + password.len());
    out.extend_from_slice(&[AUTH_VERSION, ulen]);
    out.extend_from_slice(username.as_bytes());
    out.push(plen);
    out.extend_from_slice(password.as_bytes());
    Ok(out)
}

/// RFC 1929's answer: `VER STATUS`, 0 for success.
pub const fn encode_auth_reply(ok: bool) -> [u8; 2] {
    [AUTH_VERSION, if ok { 0 } else { 1 }]
}

/// A client's request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// Where to.
    pub target: TargetAddr,
}

/// Parses a request.
pub fn parse_request(b: &[u8]) -> Result<Parsed<Request>, Socks5Error> {
    parse_request_or_reply(b, "request").map(|p| match p {
        Parsed::Incomplete => Parsed::Incomplete,
        Parsed::Done {
            value: (cmd, target),
            len,
        } => Parsed::Done {
            value: Request {
                command: Command::from_code(cmd),
                target,
            },
            len,
        },
    })
}

/// Encodes a request.
pub fn encode_request(command: Command, target: &TargetAddr) -> Result<Vec<u8>, Socks5Error> {
    let mut out = vec![VERSION, command.code(), 0];
    target.encode(&mut out)?;
    Ok(out)
}

/// A server's reply: the code and the address it bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMessage {
    /// Success or why not.
    pub reply: Reply,
    /// `BND.ADDR BND.PORT`.
    pub bound: TargetAddr,
}

/// Parses a reply (the same layout as a request, the reply code in place of the command).
pub fn parse_reply(b: &[u8]) -> Result<Parsed<ReplyMessage>, Socks5Error> {
    parse_request_or_reply(b, "reply").map(|p| match p {
        Parsed::Incomplete => Parsed::Incomplete,
        Parsed::Done {
            value: (code, bound),
            len,
        } => Parsed::Done {
            value: ReplyMessage {
                reply: Reply::from_code(code),
                bound,
            },
            len,
        },
    })
}

/// Encodes a reply; `bound` defaults to `0.0.0.0:0` (clients of CONNECT ignore it).
pub fn encode_reply(reply: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let bound = bound.unwrap_or_else(|| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    let mut out = vec![VERSION, reply.code(), 0];
    // An IP address always encodes.
    let _ = TargetAddr::Ip(bound).encode(&mut out);
    out
}

fn parse_request_or_reply(
    b: &[u8],
    what: &'static str,
) -> Result<Parsed<(u8, TargetAddr)>, Socks5Error> {
    let Some(&ver) = b.first() else {
        return Ok(Parsed::Incomplete);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadVersion { found: ver, what });
    }
    let (Some(&code), Some(&rsv)) = (b.get(1), b.get(2)) else {
        return Ok(Parsed::Incomplete);
    };
    if rsv != 0 {
        return Err(Socks5Error::BadReserved(rsv));
    }
    Ok(match TargetAddr::parse(&b[3..])? {
        Parsed::Incomplete => Parsed::Incomplete,
        Parsed::Done { value, len } => Parsed::Done {
            value: (code, value),
            len: 3 + len,
        },
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn done<T>(p: Result<Parsed<T>, Socks5Error>) -> (T, usize) {
        match p {
            Ok(Parsed::Done { value, len }) => (value, len),
            other => panic!("not done: {:?}", other.err()),
        }
    }

    #[test]
    fn greeting_fixture() {
        let (methods, len) = done(parse_greeting(b"\x05\x02\x00\x02rest"));
        assert_eq!(methods, [Method::NoAuth, Method::UserPass]);
        assert_eq!(len, 4);
        assert_eq!(parse_greeting(b"\x05\x02\x00"), Ok(Parsed::Incomplete));
        assert_eq!(parse_greeting(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse_greeting(b"\x05\x00"), Err(Socks5Error::NoMethods));
    }

    #[test]
    fn not_socks5_is_recognised() {
        let kind = |b: &[u8]| match parse_greeting(b) {
            Err(Socks5Error::NotSocks5(k)) => k,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(b"GET / HTTP/1.1\r\n"), NotSocks5::Http);
        assert_eq!(
            kind(b"CONNECT example.com:443 HTTP/1.1\r\n"),
            NotSocks5::Http
        );
        // SOCKS4 CONNECT to 127.0.0.1:80, user "u".
        assert_eq!(
            kind(b"\x04\x01\x00\x50\x7f\x00\x00\x01u\x00"),
            NotSocks5::Socks4
        );
        assert_eq!(kind(b"\x16\x03\x01\x02\x00"), NotSocks5::Tls);
        assert_eq!(kind(b"\x00\xff garbage"), NotSocks5::Other);
        assert_eq!(
            Socks5Error::NotSocks5(NotSocks5::Socks4).to_string(),
            "not a SOCKS5 client: a SOCKS4 request"
        );
    }

    #[test]
    fn request_fixtures_for_each_address_type() {
        let (r, len) = done(parse_request(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90"));
        assert_eq!(r.command, Command::Connect);
        assert_eq!(r.target, TargetAddr::Ip("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(len, 10);

        let mut v6 = b"\x05\x01\x00\x04".to_vec();
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&443u16.to_be_bytes());
        let (r, _) = done(parse_request(&v6));
        assert_eq!(r.target, TargetAddr::Ip("[::1]:443".parse().unwrap()));
        assert_eq!(r.target.to_address().to_string(), "[::1]:443");

        let (r, len) = done(parse_request(
            b"\x05\x01\x00\x03\x0bexample.com\x01\xbbtail",
        ));
        assert_eq!(r.target, TargetAddr::Domain("example.com".into(), 443));
        assert_eq!(len, 4 + 1 + 11 + 2);

        let (r, _) = done(parse_request(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00"));
        assert_eq!(r.command, Command::Bind);
        let (r, _) = done(parse_request(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"));
        assert_eq!(r.command, Command::UdpAssociate);
    }

    #[test]
    fn bad_requests() {
        assert_eq!(
            parse_request(b"\x05\x01\x00\x05\x00"),
            Err(Socks5Error::BadAddressType(5))
        );
        assert_eq!(
            parse_request(b"\x05\x01\x07\x01"),
            Err(Socks5Error::BadReserved(7))
        );
        assert_eq!(
            parse_request(b"\x05\x01\x00\x03\x00\x00\x50"),
            Err(Socks5Error::BadDomain)
        );
        assert_eq!(
            parse_request(b"\x05\x01\x00\x03\x03a b\x00\x50"),
            Err(Socks5Error::BadDomain)
        );
        assert!(matches!(
            parse_request(b"\x04\x01\x00\x01"),
            Err(Socks5Error::BadVersion { found: 4, .. })
        ));
    }

    #[test]
    fn auth_request_fixture() {
        let (up, len) = done(parse_auth_request(b"\x01\x05alice\x06secret!"));
        assert_eq!(
            (up.username.as_str(), up.password.as_str()),
            ("alice", "secret")
        );
        assert_eq!(len, 14);
        assert!(!format!("{up:?}").contains("secret"));
        assert_eq!(parse_auth_request(b"\x01\x05ali"), Ok(Parsed::Incomplete));
        assert_eq!(
            parse_auth_request(b"\x05\x01"),
            Err(Socks5Error::BadAuthVersion(5))
        );
        assert_eq!(
            encode_auth_request("alice", "secret").unwrap(),
            b"\x01\x05alice\x06secret"
        );
        assert_eq!(
            encode_auth_request(&"u".repeat(256), "p"),
            Err(Socks5Error::TooLong("SOCKS5 user name"))
        );
    }

    #[test]
    fn reply_fixtures() {
        assert_eq!(
            encode_reply(Reply::ConnectionRefused, None),
            b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00"
        );
        let (m, _) = done(parse_reply(b"\x05\x04\x00\x01\x00\x00\x00\x00\x00\x00"));
        assert_eq!(m.reply, Reply::HostUnreachable);
        assert_eq!(Reply::from_code(0x42).to_string(), "unassigned reply 0x42");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Reply::from_io_error(&refused), Reply::ConnectionRefused);
        let other = std::io::Error::other("boom");
        assert_eq!(Reply::from_io_error(&other), Reply::GeneralFailure);
    }

    fn target() -> impl Strategy<Value = TargetAddr> {
        prop_oneof![
            (any::<IpAddr>(), any::<u16>())
                .prop_map(|(ip, p)| TargetAddr::Ip(SocketAddr::new(ip, p))),
            ("[!-~]{1,255}", any::<u16>()).prop_map(|(h, p)| TargetAddr::Domain(h, p)),
        ]
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_greeting(&b);
            let _ = parse_auth_request(&b);
            let _ = parse_request(&b);
            let _ = parse_reply(&b);
        }

        #[test]
        fn requests_round_trip_and_any_prefix_is_incomplete(
            t in target(),
            cmd in any::<u8>(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let bytes = encode_request(Command::from_code(cmd), &t).unwrap();
            for cut in 0..bytes.len() {
                prop_assert_eq!(parse_request(&bytes[..cut]), Ok(Parsed::Incomplete));
            }
            let mut with_tail = bytes.clone();
            with_tail.extend(tail);
            let (r, len) = done(parse_request(&with_tail));
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!(r.command.code(), cmd);
            prop_assert_eq!(r.target, t);
        }

        #[test]
        fn auth_round_trips(u in "[ -~]{0,255}", p in "[ -~]{0,255}") {
            let bytes = encode_auth_request(&u, &p).unwrap();
            for cut in 0..bytes.len() {
                prop_assert_eq!(parse_auth_request(&bytes[..cut]), Ok(Parsed::Incomplete));
            }
            let (up, len) = done(parse_auth_request(&bytes));
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!((up.username, up.password), (u, p));
        }

        #[test]
        fn replies_round_trip(code in any::<u8>(), ip in any::<IpAddr>(), port in any::<u16>()) {
            let bound = SocketAddr::new(ip, port);
            let bytes = encode_reply(Reply::from_code(code), Some(bound));
            let (m, len) = done(parse_reply(&bytes));
            prop_assert_eq!(len, bytes.len());
            prop_assert_eq!(m.reply.code(), code);
            prop_assert_eq!(m.bound, TargetAddr::Ip(bound));
        }
    }
}
