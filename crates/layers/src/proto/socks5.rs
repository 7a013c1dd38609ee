//! SOCKS v5 (RFC 1928) with username/password authentication (RFC 1929), both sides, over
//! byte buffers: no socket here.
//!
//! The server side ([`ServerHandshake`]) is what `--mode socks5` runs on an accepted
//! connection; the client side ([`ClientHandshake`]) is what waylay runs towards a SOCKS5
//! upstream proxy. Both are fed the bytes read so far and say what to do next: read more,
//! write these bytes, check these credentials, dial this target, or give up with a typed
//! error. Only CONNECT is supported; BIND and UDP ASSOCIATE are answered "command not
//! supported".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use waylay_core::flow::Address;

pub use super::Parsed;

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

/// How the server side authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAuth {
    /// No authentication (method 0x00).
    None,
    /// Username/password (RFC 1929) required; the caller checks them.
    UserPass,
}

/// What the server side of the handshake needs done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Read more bytes, then call [`ServerHandshake::advance`] again with all unconsumed ones.
    NeedMore,
    /// Write `reply`, drop `consumed` bytes, and go on.
    Send {
        /// Input bytes used.
        consumed: usize,
        /// Bytes to write to the client.
        reply: Vec<u8>,
    },
    /// Check the credentials, write [`ServerHandshake::auth_result`], and go on (or close).
    Authenticate {
        /// Input bytes used.
        consumed: usize,
        /// What the client sent.
        credentials: UserPass,
    },
    /// Dial `target`, then write [`encode_reply`] with the outcome; the handshake is over
    /// and the connection carries the client's stream from here.
    Connect {
        /// Input bytes used.
        consumed: usize,
        /// Where the client wants to go.
        target: TargetAddr,
    },
    /// Write `reply` and close: the client asked for something waylay does not do.
    Refuse {
        /// Input bytes used.
        consumed: usize,
        /// Bytes to write before closing.
        reply: Vec<u8>,
        /// Why, for the log line.
        reason: String,
    },
}

/// The phases of the server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPhase {
    /// Waiting for the greeting.
    Greeting,
    /// Waiting for the RFC 1929 request.
    Auth,
    /// The credentials are being checked by the caller.
    Checking,
    /// Waiting for the request.
    Request,
    /// The handshake ended (connect, refuse or failure).
    Done,
}

/// The server side of a SOCKS5 handshake (`--mode socks5`), fed the bytes read so far.
#[derive(Debug)]
pub struct ServerHandshake {
    auth: ServerAuth,
    phase: ServerPhase,
}

impl ServerHandshake {
    /// A handshake with a freshly accepted client.
    pub const fn new(auth: ServerAuth) -> Self {
        Self {
            auth,
            phase: ServerPhase::Greeting,
        }
    }

    /// Advances over `input` (the unconsumed bytes read so far).
    pub fn advance(&mut self, input: &[u8]) -> Result<ServerStep, Socks5Error> {
        let result = self.step(input);
        if result.is_err() {
            self.phase = ServerPhase::Done;
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<ServerStep, Socks5Error> {
        match self.phase {
            ServerPhase::Greeting => {
                let Parsed::Done {
                    value: methods,
                    len,
                } = parse_greeting(input)?
                else {
                    return Ok(ServerStep::NeedMore);
                };
                let wanted = match self.auth {
                    ServerAuth::None => Method::NoAuth,
                    ServerAuth::UserPass => Method::UserPass,
                };
                if !methods.contains(&wanted) {
                    self.phase = ServerPhase::Done;
                    return Ok(ServerStep::Refuse {
                        consumed: len,
                        reply: vec![VERSION, Method::NoAcceptable.code()],
                        reason: format!(
                            "SOCKS5 client offers no acceptable authentication method (needs {wanted:?})"
                        ),
                    });
                }
                self.phase = match self.auth {
                    ServerAuth::None => ServerPhase::Request,
                    ServerAuth::UserPass => ServerPhase::Auth,
                };
                Ok(ServerStep::Send {
                    consumed: len,
                    reply: vec![VERSION, wanted.code()],
                })
            }
            ServerPhase::Auth => match parse_auth_request(input)? {
                Parsed::Incomplete => Ok(ServerStep::NeedMore),
                Parsed::Done { value, len } => {
                    self.phase = ServerPhase::Checking;
                    Ok(ServerStep::Authenticate {
                        consumed: len,
                        credentials: value,
                    })
                }
            },
            ServerPhase::Request => match parse_request(input) {
                Ok(Parsed::Incomplete) => Ok(ServerStep::NeedMore),
                Ok(Parsed::Done { value, len }) => {
                    self.phase = ServerPhase::Done;
                    match value.command {
                        Command::Connect => Ok(ServerStep::Connect {
                            consumed: len,
                            target: value.target,
                        }),
                        other => Ok(ServerStep::Refuse {
                            consumed: len,
                            reply: encode_reply(Reply::CommandNotSupported, None),
                            reason: format!("SOCKS5 command {other:?} is not supported"),
                        }),
                    }
                }
                Err(e @ Socks5Error::BadAddressType(_)) => {
                    self.phase = ServerPhase::Done;
                    Ok(ServerStep::Refuse {
                        consumed: input.len(),
                        reply: encode_reply(Reply::AddressTypeNotSupported, None),
                        reason: e.to_string(),
                    })
                }
                Err(e) => Err(e),
            },
            ServerPhase::Checking | ServerPhase::Done => Ok(ServerStep::NeedMore),
        }
    }

    /// The answer to [`ServerStep::Authenticate`]: write it; on failure close afterwards.
    pub fn auth_result(&mut self, ok: bool) -> [u8; 2] {
        self.phase = if ok && self.phase == ServerPhase::Checking {
            ServerPhase::Request
        } else {
            ServerPhase::Done
        };
        encode_auth_reply(ok)
    }
}

/// What the client side of the handshake needs done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Read more bytes, then call [`ClientHandshake::advance`] again with all unconsumed ones.
    NeedMore,
    /// Write `bytes`, drop `consumed` input bytes, and go on.
    Send {
        /// Input bytes used.
        consumed: usize,
        /// Bytes to write to the proxy.
        bytes: Vec<u8>,
    },
    /// The proxy connected: bytes after `consumed` belong to the tunnelled stream.
    Connected {
        /// Input bytes used.
        consumed: usize,
        /// The address the proxy bound for the connection.
        bound: TargetAddr,
    },
}

/// The phases of the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    /// Waiting for the method selection.
    Method,
    /// Waiting for the RFC 1929 answer.
    Auth,
    /// Waiting for the reply to the request.
    Reply,
    /// Connected or failed.
    Done,
}

/// The client side of a SOCKS5 handshake (towards a SOCKS5 upstream proxy).
#[derive(Debug)]
pub struct ClientHandshake {
    target: TargetAddr,
    credentials: Option<(String, String)>,
    phase: ClientPhase,
}

impl ClientHandshake {
    /// A handshake asking for a CONNECT to `target`; returns it and the greeting to write.
    /// With credentials, only username/password is offered (a proxy that does not ask for
    /// them fails the greeting instead of silently ignoring them).
    pub fn new(
        target: TargetAddr,
        credentials: Option<(String, String)>,
    ) -> Result<(Self, Vec<u8>), Socks5Error> {
        if let Some((u, p)) = &credentials {
            // Fail before any byte is sent.
            encode_auth_request(u, p)?;
        }
        encode_request(Command::Connect, &target)?;
        let method = if credentials.is_some() {
            Method::UserPass
        } else {
            Method::NoAuth
        };
        let greeting = vec![VERSION, 1, method.code()];
        Ok((
            Self {
                target,
                credentials,
                phase: ClientPhase::Method,
            },
            greeting,
        ))
    }

    /// Advances over `input` (the unconsumed bytes read from the proxy so far).
    pub fn advance(&mut self, input: &[u8]) -> Result<ClientStep, Socks5Error> {
        let result = self.step(input);
        if result.is_err() {
            self.phase = ClientPhase::Done;
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<ClientStep, Socks5Error> {
        match self.phase {
            ClientPhase::Method => {
                let Some(sel) = input.get(..2) else {
                    return Ok(ClientStep::NeedMore);
                };
                if sel[0] != VERSION {
                    return Err(Socks5Error::BadVersion {
                        found: sel[0],
                        what: "method selection",
                    });
                }
                let bytes = match (Method::from_code(sel[1]), &self.credentials) {
                    (Method::NoAcceptable, _) => return Err(Socks5Error::NoAcceptableMethod),
                    (Method::NoAuth, None) => {
                        self.phase = ClientPhase::Reply;
                        encode_request(Command::Connect, &self.target)?
                    }
                    (Method::UserPass, Some((u, p))) => {
                        self.phase = ClientPhase::Auth;
                        encode_auth_request(u, p)?
                    }
                    (m, _) => return Err(Socks5Error::UnexpectedMethod(m.code())),
                };
                Ok(ClientStep::Send { consumed: 2, bytes })
            }
            ClientPhase::Auth => {
                let Some(ans) = input.get(..2) else {
                    return Ok(ClientStep::NeedMore);
                };
                if ans[0] != AUTH_VERSION {
                    return Err(Socks5Error::BadAuthVersion(ans[0]));
                }
                if ans[1] != 0 {
                    return Err(Socks5Error::AuthRejected(ans[1]));
                }
                self.phase = ClientPhase::Reply;
                Ok(ClientStep::Send {
                    consumed: 2,
                    bytes: encode_request(Command::Connect, &self.target)?,
                })
            }
            ClientPhase::Reply => match parse_reply(input)? {
                Parsed::Incomplete => Ok(ClientStep::NeedMore),
                Parsed::Done { value, len } => {
                    self.phase = ClientPhase::Done;
                    match value.reply {
                        Reply::Succeeded => Ok(ClientStep::Connected {
                            consumed: len,
                            bound: value.bound,
                        }),
                        failure => Err(Socks5Error::Refused(failure)),
                    }
                }
            },
            ClientPhase::Done => Ok(ClientStep::NeedMore),
        }
    }
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

    /// Runs a server handshake over `input` fed one byte at a time, as a slow client would.
    fn serve_bytewise(auth: ServerAuth, input: &[u8], accept: bool) -> (Vec<u8>, ServerStep) {
        let mut hs = ServerHandshake::new(auth);
        let mut written = Vec::new();
        let (mut start, mut end) = (0, 0);
        loop {
            match hs.advance(&input[start..end]).unwrap() {
                ServerStep::NeedMore => {
                    assert!(end < input.len(), "ran out of input");
                    end += 1;
                }
                ServerStep::Send { consumed, reply } => {
                    written.extend(reply);
                    start += consumed;
                }
                ServerStep::Authenticate {
                    consumed,
                    credentials,
                } => {
                    start += consumed;
                    let ok = accept && credentials.username == "u" && credentials.password == "p";
                    written.extend(hs.auth_result(ok));
                    if !ok {
                        return (written, ServerStep::NeedMore);
                    }
                }
                last @ (ServerStep::Connect { .. } | ServerStep::Refuse { .. }) => {
                    return (written, last);
                }
            }
        }
    }

    #[test]
    fn server_handshake_without_auth() {
        let input = b"\x05\x01\x00\x05\x01\x00\x03\x09localhost\x00\x50";
        let (written, last) = serve_bytewise(ServerAuth::None, input, true);
        assert_eq!(written, b"\x05\x00");
        assert_eq!(
            last,
            ServerStep::Connect {
                consumed: 16,
                target: TargetAddr::Domain("localhost".into(), 80)
            }
        );
    }

    #[test]
    fn server_handshake_with_auth() {
        let input = b"\x05\x02\x00\x02\x01\x01u\x01p\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50";
        let (written, last) = serve_bytewise(ServerAuth::UserPass, input, true);
        assert_eq!(written, b"\x05\x02\x01\x00");
        assert!(matches!(last, ServerStep::Connect { .. }));

        let (written, _) = serve_bytewise(ServerAuth::UserPass, input, false);
        assert_eq!(written, b"\x05\x02\x01\x01");
    }

    #[test]
    fn server_refuses_what_it_does_not_do() {
        // Auth required, but the client offers only "no auth".
        let (_, last) = serve_bytewise(ServerAuth::UserPass, b"\x05\x01\x00", true);
        let ServerStep::Refuse { reply, reason, .. } = last else {
            panic!("{last:?}")
        };
        assert_eq!(reply, b"\x05\xff");
        assert!(reason.contains("no acceptable"), "{reason}");

        for (cmd, name) in [(2u8, "Bind"), (3, "UdpAssociate")] {
            let mut input = b"\x05\x01\x00\x05".to_vec();
            input.extend_from_slice(&[cmd, 0, 1, 127, 0, 0, 1, 0, 80]);
            let (_, last) = serve_bytewise(ServerAuth::None, &input, true);
            let ServerStep::Refuse { reply, reason, .. } = last else {
                panic!("{last:?}")
            };
            assert_eq!(reply[1], Reply::CommandNotSupported.code());
            assert!(reason.contains(name), "{reason}");
        }

        let (_, last) = serve_bytewise(ServerAuth::None, b"\x05\x01\x00\x05\x01\x00\x09", true);
        let ServerStep::Refuse { reply, .. } = last else {
            panic!("{last:?}")
        };
        assert_eq!(reply[1], Reply::AddressTypeNotSupported.code());
    }

    /// Runs the client side against canned proxy answers, fed in one piece.
    fn client_run(
        creds: Option<(&str, &str)>,
        answers: &[u8],
    ) -> (Vec<u8>, Result<TargetAddr, Socks5Error>) {
        let target = TargetAddr::Domain("example.com".into(), 443);
        let creds = creds.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let (mut hs, mut written) = ClientHandshake::new(target, creds).unwrap();
        let mut start = 0;
        loop {
            match hs.advance(&answers[start..]) {
                Ok(ClientStep::NeedMore) => return (written, Err(Socks5Error::NoMethods)),
                Ok(ClientStep::Send { consumed, bytes }) => {
                    start += consumed;
                    written.extend(bytes);
                }
                Ok(ClientStep::Connected { consumed, bound }) => {
                    assert_eq!(start + consumed, answers.len());
                    return (written, Ok(bound));
                }
                Err(e) => return (written, Err(e)),
            }
        }
    }

    #[test]
    fn client_handshake_fixtures() {
        let ok_reply = b"\x05\x00\x00\x01\x0a\x00\x00\x01\x04\x38";
        let mut answers = b"\x05\x00".to_vec();
        answers.extend_from_slice(ok_reply);
        let (written, r) = client_run(None, &answers);
        assert_eq!(
            written,
            b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb"
        );
        assert_eq!(r, Ok(TargetAddr::Ip("10.0.0.1:1080".parse().unwrap())));

        let mut answers = b"\x05\x02\x01\x00".to_vec();
        answers.extend_from_slice(ok_reply);
        let (written, r) = client_run(Some(("u", "pw")), &answers);
        assert!(written.starts_with(b"\x05\x01\x02\x01\x01u\x02pw\x05\x01\x00\x03"));
        assert!(r.is_ok());

        assert_eq!(
            client_run(Some(("u", "pw")), b"\x05\x02\x01\x01").1,
            Err(Socks5Error::AuthRejected(1))
        );
        assert_eq!(
            client_run(None, b"\x05\xff").1,
            Err(Socks5Error::NoAcceptableMethod)
        );
        assert_eq!(
            client_run(None, b"\x05\x02").1,
            Err(Socks5Error::UnexpectedMethod(2))
        );
        assert_eq!(
            client_run(None, b"\x05\x00\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00").1,
            Err(Socks5Error::Refused(Reply::ConnectionRefused))
        );
        assert_eq!(
            Socks5Error::Refused(Reply::ConnectionRefused).to_string(),
            "the SOCKS5 proxy answered: connection refused"
        );
        assert!(matches!(
            client_run(None, b"HTTP/1.1 400 Bad Request\r\n").1,
            Err(Socks5Error::BadVersion { found: b'H', .. })
        ));
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
        fn handshakes_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..300),
            auth in any::<bool>(),
        ) {
            let mut s = ServerHandshake::new(if auth { ServerAuth::UserPass } else { ServerAuth::None });
            let mut rest = &b[..];
            for _ in 0..8 {
                match s.advance(rest) {
                    Ok(ServerStep::Send { consumed, .. }) => rest = &rest[consumed..],
                    Ok(ServerStep::Authenticate { consumed, .. }) => {
                        rest = &rest[consumed..];
                        s.auth_result(true);
                    }
                    _ => break,
                }
            }
            let creds = auth.then(|| ("u".to_owned(), "p".to_owned()));
            let (mut c, _) = ClientHandshake::new(TargetAddr::Domain("h".into(), 1), creds).unwrap();
            let mut rest = &b[..];
            for _ in 0..8 {
                match c.advance(rest) {
                    Ok(ClientStep::Send { consumed, .. }) => rest = &rest[consumed..],
                    _ => break,
                }
            }
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
