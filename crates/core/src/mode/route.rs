//! Routes: where a server connection goes ([`Via`]), and the upstream proxies it may name,
//! written as URLs (`socks5://user:pass@host:1080`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ModeSpecError, parse_host_port, split_scheme};
use crate::flow::Address;

/// A proxy that server connections go through.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UpstreamProxy {
    /// How waylay talks to the proxy.
    pub scheme: ProxyScheme,
    /// The proxy's address.
    pub address: Address,
    /// Credentials for the proxy (HTTP Basic `Proxy-Authorization`, or SOCKS5 RFC 1929).
    pub credentials: Option<Credentials>,
}

impl fmt::Debug for UpstreamProxy {
    /// The URL form, password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamProxy({}://", self.scheme.as_str())?;
        if let Some(c) = &self.credentials {
            write!(f, "{}:***@", encode_userinfo(&c.username))?;
        }
        write!(f, "{})", self.address)
    }
}

/// The protocol waylay speaks to an upstream proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// An HTTP proxy: absolute-form requests and CONNECT.
    Http,
    /// An HTTP proxy reached over TLS.
    Https,
    /// A SOCKS v5 proxy.
    Socks5,
}

impl ProxyScheme {
    /// The scheme as written in a URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Socks5 => "socks5",
        }
    }

    /// The port used when a URL gives none.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
            Self::Socks5 => 1080,
        }
    }
}

/// A user name and password (for an upstream proxy).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// `user:pass`, as the `upstream_auth` option takes them (split at the first `:`).
    pub fn parse(s: &str) -> Result<Self, ModeSpecError> {
        let (username, password) = s
            .split_once(':')
            .ok_or_else(|| ModeSpecError::BadCredentials("user:***".into()))?;
        Ok(Self {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where a server connection goes: set on a flow's server by the mode, or by an addon in
/// `request_headers`, `http_connect`, `next_layer` or `server_connect`.
///
/// Written as `direct` or a proxy URL: `http://HOST:PORT`, `https://HOST:PORT`,
/// `socks5://[USER:PASS@]HOST:PORT` (credentials percent-encoded; also allowed for
/// `http(s)://`, sent as Basic `Proxy-Authorization`). Serialised as that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Via {
    /// Straight to the server.
    Direct,
    /// Through a proxy.
    Proxy(UpstreamProxy),
}

impl Via {
    /// Parses `direct` or a proxy URL (see the type's docs).
    pub fn parse(s: &str) -> Result<Self, ModeSpecError> {
        if s.eq_ignore_ascii_case("direct") {
            return Ok(Self::Direct);
        }
        parse_proxy_url(s, true).map(Self::Proxy)
    }

    /// The proxy, unless direct.
    pub fn proxy(&self) -> Option<&UpstreamProxy> {
        match self {
            Self::Direct => None,
            Self::Proxy(p) => Some(p),
        }
    }
}

impl fmt::Display for Via {
    /// `direct` or the proxy URL, credentials included (percent-encoded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Proxy(p) => write_proxy_url(f, p),
        }
    }
}

impl FromStr for Via {
    type Err = ModeSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Via {
    type Error = ModeSpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Via> for String {
    fn from(v: Via) -> Self {
        v.to_string()
    }
}

/// A proxy URL; `require_scheme` for a route (`Via`), where a bare host would be ambiguous.
pub(super) fn parse_proxy_url(
    s: &str,
    require_scheme: bool,
) -> Result<UpstreamProxy, ModeSpecError> {
    if require_scheme && !s.contains("://") {
        return Err(ModeSpecError::BadUrl(s.to_owned()));
    }
    let (scheme, rest) = split_scheme(s, "http");
    let scheme = match scheme.as_str() {
        "http" => ProxyScheme::Http,
        "https" => ProxyScheme::Https,
        "socks5" => ProxyScheme::Socks5,
        _ => {
            return Err(ModeSpecError::BadScheme {
                scheme,
                what: "upstream proxy",
                expected: "http, https or socks5",
            });
        }
    };
    let (credentials, hostport) = match rest.split_once('@') {
        Some((userinfo, hostport)) => {
            let bad = || ModeSpecError::BadCredentials(mask_userinfo(userinfo));
            let (u, p) = userinfo.split_once(':').ok_or_else(bad)?;
            let username = decode_userinfo(u).ok_or_else(bad)?;
            let password = decode_userinfo(p).ok_or_else(bad)?;
            (Some(Credentials { username, password }), hostport)
        }
        None => (None, rest),
    };
    let address = parse_host_port(hostport, Some(scheme.default_port()), scheme.as_str())?;
    Ok(UpstreamProxy {
        scheme,
        address,
        credentials,
    })
}

pub(super) fn write_proxy_url(f: &mut fmt::Formatter<'_>, p: &UpstreamProxy) -> fmt::Result {
    write!(f, "{}://", p.scheme.as_str())?;
    if let Some(c) = &p.credentials {
        write!(
            f,
            "{}:{}@",
            encode_userinfo(&c.username),
            encode_userinfo(&c.password)
        )?;
    }
    write!(f, "{}", p.address)
}

/// Keeps the user name of `user:pass` for an error message, never the password.
fn mask_userinfo(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((u, _)) => format!("{u}:***"),
        None => userinfo.to_owned(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for a broken escape or bytes that are not UTF-8, or for a
/// raw `/`, `@` or `:` (which must be escaped).
fn decode_userinfo(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'/' | b'@' | b':' => return None,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_rejects_half_escapes() {
        assert_eq!(decode_userinfo("a%4"), None);
        assert_eq!(decode_userinfo("a%zz"), None);
        assert_eq!(decode_userinfo("a%40b").as_deref(), Some("a@b"));
        assert_eq!(decode_userinfo("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_userinfo("%FF"), None);
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["", "a b", "p@ss:word/%", "ünï"] {
            assert_eq!(decode_userinfo(&encode_userinfo(s)).as_deref(), Some(s));
        }
    }
}
