//! Proxy modes and routes as plain data: the `--mode` spec grammar ([`ModeSpec`]) and, in
//! `route`, where a server connection goes ([`Via`]).
//!
//! # The mode spec grammar
//!
//! mitmproxy's: `MODE[:DATA][@[LISTEN_HOST:]LISTEN_PORT]`, for example `regular`,
//! `socks5@1080`, `reverse:https://example.com@127.0.0.1:8443`,
//! `upstream:http://proxy.internal:3128`. The mode name is case-insensitive.
//!
//! | mode | data | default listen port |
//! |---|---|---|
//! | `regular` | none | 8080 |
//! | `transparent` | none | 8080 |
//! | `socks5` | none | 1080 |
//! | `reverse` | `[SCHEME://]HOST[:PORT][/]`, scheme `http`, `https` (default), `tls`, `tcp` | 8080 |
//! | `upstream` | `[SCHEME://][USER:PASS@]HOST[:PORT][/]`, scheme `http` (default), `https`, `socks5` | 8080 |
//!
//! Default target ports: `http` 80, `https` 443, `socks5` 1080; `tls://` and `tcp://` need one.
//! mitmproxy's UDP schemes (`dns`, `udp`, `quic`, `http3`, `dtls`) and its other modes (`dns`,
//! `wireguard`, `local`, `tun`) are refused with an error saying so: waylay proxies TCP.
//!
//! **Credentials in an upstream URL** (waylay only; mitmproxy takes them from `upstream_auth`)
//! are percent-encoded (`%40` for `@`, `%3A` for `:`). Both the credentials and the listen
//! address are introduced by `@`, so with a single `@` in the URL: a bare port after it
//! (`@8081`) is the listen port, anything else (`user:pass@proxy:1080`) is the credentials;
//! write `upstream:http://proxy:3128/@127.0.0.1:8081` (trailing `/`) to give a listen host
//! to an upstream without credentials. A reverse target never carries credentials, so there
//! the last `@` always starts the listen address, as in mitmproxy. [`split_listen`] is the
//! rule as a pure function; where mitmproxy accepts a spec, both read the same listen address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::flow::{Address, HttpVersion, Request};

mod route;

pub use route::{Credentials, ProxyScheme, UpstreamProxy, Via};
use route::{parse_proxy_url, write_proxy_url};

/// Why a mode spec or a route URL was refused. The message is one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeSpecError {
    /// The mode name is not one waylay or mitmproxy knows.
    #[error(
        "unknown proxy mode {0:?} (expected regular, reverse:URL, upstream:URL, socks5 or transparent)"
    )]
    UnknownMode(String),
    /// A mitmproxy mode or scheme waylay does not implement (UDP-based ones).
    #[error("{0} is not supported by waylay (it proxies TCP: use http, https, tls or tcp)")]
    Unsupported(String),
    /// A mode that takes no data was given some (`socks5:foo`).
    #[error("mode {mode} takes no arguments (got {data:?})")]
    UnexpectedData {
        /// The mode.
        mode: &'static str,
        /// What followed the `:`.
        data: String,
    },
    /// A mode that needs a URL got none (`reverse`).
    #[error("mode {0} needs a URL ({0}:SCHEME://HOST[:PORT])")]
    MissingData(&'static str),
    /// The URL's scheme is not one this mode accepts.
    #[error("invalid scheme {scheme:?} for {what} (expected {expected})")]
    BadScheme {
        /// The scheme given.
        scheme: String,
        /// What the URL was for (`reverse target`, `upstream proxy`).
        what: &'static str,
        /// The accepted schemes.
        expected: &'static str,
    },
    /// The host is not a DNS name or an IP address.
    #[error("invalid host {0:?}")]
    BadHost(String),
    /// A port that is not a number in 0..=65535.
    #[error("invalid port {0:?}")]
    BadPort(String),
    /// `tls://` and `tcp://` have no default port.
    #[error("{0}:// needs a port ({0}://HOST:PORT)")]
    MissingPort(String),
    /// Credentials that do not decode, or are not `user:pass`.
    #[error("invalid credentials in {0:?} (expected percent-encoded user:pass)")]
    BadCredentials(String),
    /// Something that is not `[SCHEME://]HOST[:PORT][/]`.
    #[error("invalid URL {0:?} (expected SCHEME://HOST[:PORT])")]
    BadUrl(String),
    /// Two modes would listen on the same address.
    #[error("modes {first} and {second} would both listen on {addr}: give one another @port")]
    SameListenAddress {
        /// The first mode's spec.
        first: String,
        /// The second mode's spec.
        second: String,
        /// The address both resolve to.
        addr: String,
    },
}

/// A parsed `--mode` spec: the mode and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModeSpec {
    /// The mode and its data.
    pub mode: Mode,
    /// `@HOST:PORT`'s host (`Some("")` for `@:PORT`, all interfaces, as mitmproxy).
    pub listen_host: Option<String>,
    /// `@PORT`.
    pub listen_port: Option<u16>,
}

/// A proxy mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mode {
    /// An explicit HTTP(S) proxy: CONNECT and absolute-form requests.
    Regular,
    /// Connections redirected to waylay by the OS; the destination read from the socket.
    Transparent,
    /// A SOCKS v5 proxy (RFC 1928).
    Socks5,
    /// Every connection goes to one fixed target.
    Reverse(ReverseTarget),
    /// A regular proxy whose server connections all go through another proxy.
    Upstream(UpstreamProxy),
}

/// Where a reverse proxy sends everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReverseTarget {
    /// How waylay talks to the target.
    pub scheme: ReverseScheme,
    /// The target.
    pub address: Address,
}

impl ReverseTarget {
    /// The `Host` a reverse proxy sends the target: its host, with the port unless it is
    /// the scheme's default (as mitmproxy), an IPv6 host in brackets.
    pub fn host_header(&self) -> String {
        let default = match self.scheme {
            ReverseScheme::Http => 80,
            ReverseScheme::Https => 443,
            ReverseScheme::Tls | ReverseScheme::Tcp => 0,
        };
        if self.address.port == default {
            if self.address.host.contains(':') {
                format!("[{}]", self.address.host)
            } else {
                self.address.host.clone()
            }
        } else {
            self.address.to_string()
        }
    }

    /// Points a request a reverse proxy received at its target: scheme, host and port, and,
    /// unless `keep_host_header`, the `Host` header (HTTP/1) or `:authority` (HTTP/2)
    /// rewritten to [`ReverseTarget::host_header`].
    pub fn apply(&self, request: &mut Request, keep_host_header: bool) {
        request.scheme = if self.scheme.tls() { "https" } else { "http" }.into();
        request.host = self.address.host.as_str().into();
        request.port = self.address.port;
        if keep_host_header {
            return;
        }
        let host = self.host_header();
        if !request.authority.is_empty() {
            request.authority = host.as_str().into();
        }
        if request.http_version != HttpVersion::Http2 || request.headers.contains("host") {
            request.headers.insert("Host", host);
        }
    }
}

/// The protocol a reverse proxy speaks to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReverseScheme {
    /// HTTP over plain TCP.
    Http,
    /// HTTP over TLS.
    Https,
    /// Any protocol over TLS (relayed through the TLS and TCP layers).
    Tls,
    /// Any protocol over plain TCP.
    Tcp,
}

impl ReverseScheme {
    /// The scheme as written in a spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Tls => "tls",
            Self::Tcp => "tcp",
        }
    }

    /// Whether waylay speaks TLS to the target.
    pub const fn tls(self) -> bool {
        matches!(self, Self::Https | Self::Tls)
    }
}

impl ModeSpec {
    /// Parses a spec (see the [module docs](self) for the grammar). Never panics.
    pub fn parse(spec: &str) -> Result<Self, ModeSpecError> {
        let (head, listen) = split_listen(spec);
        let (name, data) = match head.split_once(':') {
            Some((name, data)) => (name.to_ascii_lowercase(), Some(data.to_owned())),
            None => (head.to_ascii_lowercase(), None),
        };
        let (listen_host, listen_port) = match listen {
            Some(l) => {
                let (h, p) = parse_listen(l)?;
                (h, Some(p))
            }
            None => (None, None),
        };
        let mode = match name.as_str() {
            "regular" => no_data("regular", data, Mode::Regular)?,
            "transparent" => no_data("transparent", data, Mode::Transparent)?,
            "socks5" => no_data("socks5", data, Mode::Socks5)?,
            "reverse" => {
                let data = data
                    .filter(|d| !d.is_empty())
                    .ok_or(ModeSpecError::MissingData("reverse"))?;
                Mode::Reverse(parse_reverse(&data)?)
            }
            "upstream" => {
                let data = data
                    .filter(|d| !d.is_empty())
                    .ok_or(ModeSpecError::MissingData("upstream"))?;
                Mode::Upstream(parse_proxy_url(&data, false)?)
            }
            "dns" | "wireguard" | "local" | "tun" | "osproxy" => {
                return Err(ModeSpecError::Unsupported(format!("mode {name}")));
            }
            _ => return Err(ModeSpecError::UnknownMode(name)),
        };
        Ok(Self {
            mode,
            listen_host,
            listen_port,
        })
    }

    /// The mode's name (`regular`, `reverse`, ...).
    pub const fn name(&self) -> &'static str {
        match self.mode {
            Mode::Regular => "regular",
            Mode::Transparent => "transparent",
            Mode::Socks5 => "socks5",
            Mode::Reverse(_) => "reverse",
            Mode::Upstream(_) => "upstream",
        }
    }

    /// The port this mode listens on when neither the spec nor `listen_port` says.
    pub const fn default_port(&self) -> u16 {
        match self.mode {
            Mode::Socks5 => 1080,
            Mode::Regular | Mode::Transparent | Mode::Reverse(_) | Mode::Upstream(_) => 8080,
        }
    }

    /// The port to listen on: the spec's, else `option` (the `listen_port` option when set),
    /// else the mode's default.
    pub fn listen_port_or(&self, option: Option<u16>) -> u16 {
        self.listen_port
            .or(option)
            .unwrap_or_else(|| self.default_port())
    }

    /// The host to listen on: the spec's, else `option` (the `listen_host` option).
    pub fn listen_host_or<'a>(&'a self, option: &'a str) -> &'a str {
        self.listen_host.as_deref().unwrap_or(option)
    }
}

/// Parses every `--mode` given, in order, and checks that no two would listen on the same
/// address once the `listen_host` / `listen_port` options (`None`: not set) and the modes'
/// default ports apply (mitmproxy refuses that too). An empty host (all interfaces) clashes
/// with any host on the same port.
pub fn parse_modes<S: AsRef<str>>(
    specs: &[S],
    listen_host: &str,
    listen_port: Option<u16>,
) -> Result<Vec<ModeSpec>, ModeSpecError> {
    let modes = specs
        .iter()
        .map(|s| ModeSpec::parse(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in modes.iter().enumerate() {
        let (ha, pa) = (a.listen_host_or(listen_host), a.listen_port_or(listen_port));
        for b in &modes[..i] {
            let (hb, pb) = (b.listen_host_or(listen_host), b.listen_port_or(listen_port));
            // Port 0 asks the OS for a free port each time: never a clash.
            let same_host = ha == hb || ha.is_empty() || hb.is_empty();
            if pa == pb && pa != 0 && same_host {
                let host = if ha.is_empty() { hb } else { ha };
                return Err(ModeSpecError::SameListenAddress {
                    first: b.to_string(),
                    second: a.to_string(),
                    addr: Address::new(host, pa).to_string(),
                });
            }
        }
    }
    Ok(modes)
}

impl FromStr for ModeSpec {
    type Err = ModeSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModeSpec {
    /// The canonical spec, which [`ModeSpec::parse`] reads back to the same value (what a
    /// flow's `client.proxy_mode` says).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let mut needs_slash = false;
        match &self.mode {
            Mode::Regular | Mode::Transparent | Mode::Socks5 => {}
            Mode::Reverse(t) => write!(f, ":{}://{}", t.scheme.as_str(), t.address)?,
            Mode::Upstream(p) => {
                f.write_str(":")?;
                write_proxy_url(f, p)?;
                // A single `@` followed by `host:port` would read as credentials.
                needs_slash = p.credentials.is_none() && self.listen_host.is_some();
            }
        }
        if let Some(port) = self.listen_port {
            if needs_slash {
                f.write_str("/")?;
            }
            f.write_str("@")?;
            if let Some(h) = &self.listen_host {
                if h.contains(':') {
                    write!(f, "[{h}]:")?;
                } else {
                    write!(f, "{h}:")?;
                }
            }
            write!(f, "{port}")?;
        }
        Ok(())
    }
}

fn no_data(mode: &'static str, data: Option<String>, m: Mode) -> Result<Mode, ModeSpecError> {
    match data {
        Some(d) if !d.is_empty() => Err(ModeSpecError::UnexpectedData { mode, data: d }),
        _ => Ok(m),
    }
}

/// Splits a whole mode spec into `MODE[:DATA]` and its listen suffix (what follows the `@`
/// that starts it, `[HOST:]PORT` when well formed). Pure, never panics; the rule:
///
/// - The **last** `@` starts the listen suffix (mitmproxy 12's rule: it `rpartition`s the
///   spec on `@`), for every mode but `upstream`.
/// - In `upstream:URL`, whose URL may carry `user:pass@` (waylay only; mitmproxy has no
///   credentials in the URL and reads `upstream:http://u:p@proxy:3128` as listening on
///   `proxy:3128`), a lone `@` in the URL's authority is the credentials' unless what follows
///   it is a bare port (`upstream:http://proxy:3128@8081`) or the authority was closed by a
///   `/` before it (`upstream:http://proxy:3128/@127.0.0.1:8081`). With two or more `@`
///   there, the last starts the listen suffix (`upstream:socks5://u:p@proxy:1080@8081`).
///   An `@` inside the credentials is written `%40`.
///
/// ```
/// use waylay_core::mode::split_listen;
/// assert_eq!(split_listen("socks5@127.0.0.1:1080"), ("socks5", Some("127.0.0.1:1080")));
/// assert_eq!(split_listen("upstream:socks5://u:p@proxy:1080"), ("upstream:socks5://u:p@proxy:1080", None));
/// assert_eq!(split_listen("upstream:http://proxy:3128@8081"), ("upstream:http://proxy:3128", Some("8081")));
/// assert_eq!(split_listen("upstream:http://u:p@proxy:3128@[::1]:8081"), ("upstream:http://u:p@proxy:3128", Some("[::1]:8081")));
/// ```
pub fn split_listen(spec: &str) -> (&str, Option<&str>) {
    let Some(at) = spec.rfind('@') else {
        return (spec, None);
    };
    let (head, listen) = (&spec[..at], &spec[at + 1..]);
    let name_end = spec.find([':', '@']).unwrap_or(spec.len());
    let data = match spec[..name_end].eq_ignore_ascii_case("upstream") {
        true if spec[name_end..].starts_with(':') => &spec[name_end + 1..],
        // Not upstream, or upstream without data (`upstream@8080`, refused later).
        _ => return (head, Some(listen)),
    };
    let authority_start = data.find("://").map_or(0, |i| i + 3);
    let authority = &data[authority_start..];
    let ats = authority.matches('@').count();
    let bare_port = !listen.is_empty() && listen.bytes().all(|b| b.is_ascii_digit());
    let path_ended = authority
        .rfind('@')
        .is_some_and(|i| authority[..i].contains('/'));
    if ats >= 2 || bare_port || path_ended {
        (head, Some(listen))
    } else {
        (spec, None)
    }
}

/// `[HOST:]PORT`, the host possibly bracketed.
fn parse_listen(s: &str) -> Result<(Option<String>, u16), ModeSpecError> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let h = h
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(h);
            if !h.is_empty() && !valid_host(h) {
                return Err(ModeSpecError::BadHost(h.to_owned()));
            }
            (Some(h.to_owned()), p)
        }
        None => (None, s),
    };
    Ok((host, parse_port(port)?))
}

fn parse_port(s: &str) -> Result<u16, ModeSpecError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ModeSpecError::BadPort(s.to_owned()));
    }
    s.parse().map_err(|_| ModeSpecError::BadPort(s.to_owned()))
}

/// A DNS name (labels of letters, digits, `-`, `_`; an optional final dot) or an IP address.
fn valid_host(h: &str) -> bool {
    if h.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = h.strip_suffix('.').unwrap_or(h);
    h.len() <= 255
        && !name.is_empty()
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[SCHEME://]REST`, with the default scheme when none is given.
fn split_scheme<'a>(s: &'a str, default: &'a str) -> (String, &'a str) {
    match s.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (default.to_owned(), s),
    }
}

/// `HOST[:PORT][/]` (an IPv6 host in brackets).
fn parse_host_port(
    s: &str,
    default_port: Option<u16>,
    scheme: &str,
) -> Result<Address, ModeSpecError> {
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.contains('/') {
        return Err(ModeSpecError::BadUrl(s.to_owned()));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| ModeSpecError::BadHost(s.to_owned()))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(ModeSpecError::BadHost(h.to_owned()));
        }
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(p) => (h, Some(parse_port(p)?)),
                None => return Err(ModeSpecError::BadUrl(s.to_owned())),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s, None),
        }
    };
    if !valid_host(host) {
        return Err(ModeSpecError::BadHost(host.to_owned()));
    }
    let port = port
        .or(default_port)
        .ok_or_else(|| ModeSpecError::MissingPort(scheme.to_owned()))?;
    Ok(Address::new(host, port))
}

fn parse_reverse(data: &str) -> Result<ReverseTarget, ModeSpecError> {
    let (scheme, rest) = split_scheme(data, "https");
    let scheme = match scheme.as_str() {
        "http" => ReverseScheme::Http,
        "https" => ReverseScheme::Https,
        "tls" => ReverseScheme::Tls,
        "tcp" => ReverseScheme::Tcp,
        "dns" | "udp" | "quic" | "http3" | "dtls" => {
            return Err(ModeSpecError::Unsupported(format!("reverse:{scheme}://")));
        }
        _ => {
            return Err(ModeSpecError::BadScheme {
                scheme,
                what: "reverse target",
                expected: "http, https, tls or tcp",
            });
        }
    };
    let default_port = match scheme {
        ReverseScheme::Http => Some(80),
        ReverseScheme::Https => Some(443),
        ReverseScheme::Tls | ReverseScheme::Tcp => None,
    };
    Ok(ReverseTarget {
        scheme,
        address: parse_host_port(rest, default_port, scheme.as_str())?,
    })
}
