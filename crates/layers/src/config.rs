//! The options the layers read, parsed once per change into plain fields.

use std::path::PathBuf;
use std::time::Duration;

use regex::RegexSet;
use waylay_core::{Options, OptionsError};

/// A typed view of the options the proxy layers use.
#[derive(Debug, Clone)]
pub(crate) struct ProxyConfig {
    pub(crate) ssl_insecure: bool,
    pub(crate) trusted_ca: Option<PathBuf>,
    /// `ssl_verify_upstream_trusted_confdir`.
    pub(crate) trusted_dir: Option<PathBuf>,
    /// `tls_version_client_min` / `tls_version_server_min` = `TLS1_3`.
    pub(crate) client_tls13_only: bool,
    pub(crate) server_tls13_only: bool,
    pub(crate) upstream_cert: bool,
    pub(crate) http2: bool,
    pub(crate) rawtcp: bool,
    pub(crate) websocket: bool,
    pub(crate) stream_large_bodies: u64,
    pub(crate) body_size_limit: Option<u64>,
    pub(crate) ignore_hosts: Option<RegexSet>,
    pub(crate) allow_hosts: Option<RegexSet>,
    pub(crate) tcp_hosts: Option<RegexSet>,
    pub(crate) connect_timeout: Duration,
    pub(crate) header_timeout: Duration,
    /// `idle_timeout`: a connection with no byte moving either way for this long is closed
    /// (zero: never).
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_header_size: usize,
    /// `proxyauth`: what a client must send in `Proxy-Authorization`.
    pub(crate) proxyauth: Option<ProxyAuth>,
    /// `anticache`: drop the request headers that make a server answer 304.
    pub(crate) anticache: bool,
    /// `anticomp`: ask servers for uncompressed content.
    pub(crate) anticomp: bool,
    /// `block_global` / `block_private`: refuse clients from public / private addresses.
    pub(crate) block_global: bool,
    pub(crate) block_private: bool,
}

/// Proxy authentication (`proxyauth`), HTTP Basic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyAuth {
    /// `any`: some credentials must be sent, whatever they are.
    Any,
    /// `username:password`: exactly these.
    Single { user: String, pass: String },
}

impl ProxyAuth {
    fn parse(v: &str) -> Result<Self, OptionsError> {
        if v == "any" {
            return Ok(Self::Any);
        }
        let bad = |expected: &str| OptionsError::BadValue {
            name: "proxyauth".into(),
            value: v.into(),
            expected: expected.into(),
        };
        if v.starts_with('@') {
            return Err(bad(
                "\"username:password\" or \"any\" (htpasswd files are not supported yet)",
            ));
        }
        match v.split_once(':') {
            Some((user, pass)) if !user.is_empty() => Ok(Self::Single {
                user: user.into(),
                pass: pass.into(),
            }),
            _ => Err(bad("\"username:password\" or \"any\"")),
        }
    }

    /// Whether a `Proxy-Authorization` header value carries acceptable credentials.
    pub(crate) fn accepts(&self, header: Option<&[u8]>) -> bool {
        use base64::Engine as _;
        let Some(h) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Some((scheme, token)) = h.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        match self {
            Self::Any => true,
            Self::Single { user: u, pass: p } => {
                // Constant-time in the password's length, so a probe learns nothing from timing.
                let same = pass.len() == p.len()
                    && pass
                        .bytes()
                        .zip(p.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0;
                user == u && same
            }
        }
    }
}

/// Options waylay declares under mitmproxy's names (so option files and scripts written for
/// mitmproxy load) but does not implement yet: setting one to anything but its default is
/// refused with a clear error rather than silently ignored.
const NOT_YET: &[&str] = &[
    "add_upstream_certs_to_client_chain",
    "block_list",
    "certs",
    "client_certs",
    "connection_strategy",
    "map_local",
    "map_remote",
    "modify_body",
    "modify_headers",
    "server",
    "intercept",
    "intercept_active",
    "keep_host_header",
    "normalize_outbound_headers",
    "stickyauth",
    "store_streamed_bodies",
    "stickycookie",
    "upstream_auth",
    "validate_inbound_headers",
];

fn refuse_unimplemented(o: &Options) -> Result<(), OptionsError> {
    // Only regular mode exists yet (mitmproxy also has upstream, reverse, transparent, ...).
    if let Some(other) = o.seq("mode").iter().find(|m| m.as_str() != "regular") {
        return Err(OptionsError::BadValue {
            name: "mode".into(),
            value: other.clone(),
            expected: "regular (the only mode waylay supports yet)".into(),
        });
    }
    for spec in o.specs().filter(|s| NOT_YET.contains(&s.name.as_str())) {
        if o.get(&spec.name).is_some_and(|v| *v != spec.default) {
            return Err(OptionsError::rejected(
                spec.name.clone(),
                "not supported by waylay yet (only its default is)",
            ));
        }
    }
    Ok(())
}

/// Whether `ip` is a private, loopback or link-local address (mitmproxy's `block_private`;
/// everything else is global for `block_global`).
pub(crate) fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                // Shared address space (RFC 6598, carrier-grade NAT).
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                // Unique local (fc00::/7) and link-local (fe80::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

fn regexes(o: &Options, name: &str) -> Result<Option<RegexSet>, OptionsError> {
    let v = o.seq(name);
    if v.is_empty() {
        return Ok(None);
    }
    RegexSet::new(v.iter().map(|p| format!("(?i){p}")))
        .map(Some)
        .map_err(|e| OptionsError::BadValue {
            name: name.into(),
            value: v.join(","),
            expected: format!("valid regular expressions ({e})"),
        })
}

fn size(o: &Options, name: &str) -> Result<Option<u64>, OptionsError> {
    match o.str(name) {
        None => Ok(None),
        Some(s) => {
            waylay_core::options::parse_size(s)
                .map(Some)
                .map_err(|e| OptionsError::BadValue {
                    name: name.into(),
                    value: s.into(),
                    expected: e,
                })
        }
    }
}

fn secs(o: &Options, name: &str) -> Duration {
    Duration::from_secs(u64::try_from(o.int(name)).unwrap_or(0).max(1))
}

/// Expands a leading `~` to the home directory.
pub(crate) fn expand_home(p: &str) -> PathBuf {
    let rest = if p == "~" {
        Some("")
    } else {
        p.strip_prefix("~/")
    };
    if let Some(rest) = rest
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    PathBuf::from(p)
}

impl ProxyConfig {
    /// Reads and validates the layer options.
    pub(crate) fn from_options(o: &Options) -> Result<Self, OptionsError> {
        refuse_unimplemented(o)?;
        Ok(Self {
            ssl_insecure: o.bool("ssl_insecure"),
            trusted_ca: o.str("ssl_verify_upstream_trusted_ca").map(expand_home),
            trusted_dir: o
                .str("ssl_verify_upstream_trusted_confdir")
                .map(expand_home),
            client_tls13_only: o.str("tls_version_client_min") == Some("TLS1_3"),
            server_tls13_only: o.str("tls_version_server_min") == Some("TLS1_3"),
            upstream_cert: o.bool("upstream_cert"),
            http2: o.bool("http2"),
            rawtcp: o.bool("rawtcp"),
            websocket: o.bool("websocket"),
            stream_large_bodies: size(o, "stream_large_bodies")?.unwrap_or(u64::MAX),
            body_size_limit: size(o, "body_size_limit")?,
            ignore_hosts: regexes(o, "ignore_hosts")?,
            allow_hosts: regexes(o, "allow_hosts")?,
            tcp_hosts: regexes(o, "tcp_hosts")?,
            connect_timeout: secs(o, "connect_timeout"),
            header_timeout: secs(o, "header_timeout"),
            // Zero: never.
            idle_timeout: u64::try_from(o.int("idle_timeout"))
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_header_size: usize::try_from(o.int("max_header_size"))
                .unwrap_or(65536)
                .max(8192),
            proxyauth: o.str("proxyauth").map(ProxyAuth::parse).transpose()?,
            anticache: o.bool("anticache"),
            anticomp: o.bool("anticomp"),
            block_global: o.bool("block_global"),
            block_private: o.bool("block_private"),
        })
    }

    /// Whether a connection known by `names` (`host:port` strings: the CONNECT target, and
    /// the TLS SNI with the target's port when there is one) is relayed untouched, as
    /// mitmproxy decides it: with `allow_hosts`, a connection none of whose names is allowed
    /// is ignored; with `ignore_hosts`, one any of whose names matches is ignored.
    pub(crate) fn ignores<S: AsRef<str>>(&self, names: &[S]) -> bool {
        if let Some(allow) = &self.allow_hosts
            && !names.iter().any(|n| allow.is_match(n.as_ref()))
        {
            return true;
        }
        self.ignore_hosts
            .as_ref()
            .is_some_and(|ignore| names.iter().any(|n| ignore.is_match(n.as_ref())))
    }

    /// Whether `ignore_hosts` / `allow_hosts` are set at all.
    pub(crate) fn has_host_filters(&self) -> bool {
        self.ignore_hosts.is_some() || self.allow_hosts.is_some()
    }

    /// Whether `host:port` is to be treated as raw TCP (`tcp_hosts`).
    pub(crate) fn is_tcp_host(&self, host: &str, port: u16) -> bool {
        self.tcp_hosts
            .as_ref()
            .is_some_and(|s| s.is_match(&format!("{host}:{port}")))
    }
}
