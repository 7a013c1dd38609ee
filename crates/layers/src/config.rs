//! The options the layers read, parsed once per change into plain fields.

use std::path::PathBuf;
use std::time::Duration;

use regex::RegexSet;
use waylay_core::{Credentials, Mode, ModeSpec, Options, OptionsError};

use crate::tls::UpstreamTls;
use crate::via::ViaOptions;

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
    /// `store_streamed_bodies`: a streamed body is also kept (on disk) for the flow.
    pub(crate) store_streamed_bodies: bool,
    pub(crate) body_size_limit: Option<u64>,
    pub(crate) ignore_hosts: Option<RegexSet>,
    pub(crate) allow_hosts: Option<RegexSet>,
    pub(crate) tcp_hosts: Option<RegexSet>,
    pub(crate) header_timeout: Duration,
    /// `idle_timeout`: a connection with no byte moving either way for this long is closed
    /// (zero: never).
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_header_size: usize,
    /// The modes to listen in, one listener each, in the order given (`regular` when none).
    /// Read when the proxy starts: listeners are not rebound on a later change.
    pub(crate) modes: Vec<ModeSpec>,
    /// `proxyauth` is set: SOCKS5 clients must send a username and password.
    pub(crate) proxyauth: bool,
    /// `proxy_protocol`: each connection starts with a PROXY protocol header naming the
    /// real client.
    pub(crate) proxy_protocol: bool,
    /// `keep_host_header`: a reverse proxy leaves `Host` / `:authority` (and the server's
    /// SNI) as the client sent them.
    pub(crate) keep_host_header: bool,
    /// `share_server_connections`: idle server connections serve any client connection of
    /// the worker while no addon observes server connections (see `conn::pool::SharedPool`).
    pub(crate) share_server_connections: bool,
    /// What dialing through a route needs (timeouts, TLS to HTTPS proxies, `upstream_auth`).
    pub(crate) via: ViaOptions,
}

/// Options waylay declares under mitmproxy's names (so option files and scripts written for
/// mitmproxy load) but does not implement yet: setting one to anything but its default is
/// refused with a clear error rather than silently ignored.
const NOT_YET: &[&str] = &[
    "add_upstream_certs_to_client_chain",
    "certs",
    "client_certs",
    "connection_strategy",
    "server",
    "normalize_outbound_headers",
    "validate_inbound_headers",
];

fn refuse_unimplemented(o: &Options) -> Result<(), OptionsError> {
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

/// The `listen_port` option when it was given (even as 8080, its default), so that a mode
/// with another default port (`socks5`: 1080) keeps it unless the user asked for a port.
pub(crate) fn listen_port_option(o: &Options) -> Option<u16> {
    u16::try_from(o.int("listen_port"))
        .ok()
        .filter(|_| o.is_given("listen_port"))
}

/// The modes waylay listens in, each with its own listener (`--mode` repeated); two on one
/// address are refused, and so are the mitmproxy modes waylay does not implement.
fn modes(o: &Options) -> Result<Vec<ModeSpec>, OptionsError> {
    let specs = o.seq("mode");
    let bad = |value: String, expected: String| OptionsError::BadValue {
        name: "mode".into(),
        value,
        expected,
    };
    let mut modes = waylay_core::mode::parse_modes(
        specs,
        o.str("listen_host").unwrap_or(""),
        listen_port_option(o),
    )
    .map_err(|e| bad(specs.join(","), e.to_string()))?;
    if modes.is_empty() {
        modes.push(ModeSpec {
            mode: Mode::Regular,
            listen_host: None,
            listen_port: None,
        });
    }
    for m in &modes {
        match &m.mode {
            Mode::Regular | Mode::Upstream(_) | Mode::Socks5 => {}
            #[cfg(target_os = "linux")]
            Mode::Transparent => {}
            #[cfg(not(target_os = "linux"))]
            Mode::Transparent => {
                return Err(bad(
                    m.to_string(),
                    "a mode this platform supports (transparent mode is Linux only)".into(),
                ));
            }
            Mode::Reverse(_) => {}
        }
    }
    Ok(modes)
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

/// Checks the options the proxy layers read, as starting a proxy would, without starting
/// one: a program that runs its addons with no listener (`waylay -n -r FILE`) refuses the
/// same bad values with the same error.
pub fn check_options(o: &Options) -> Result<(), OptionsError> {
    if o.bool("server") {
        return ProxyConfig::from_options(o).map(drop);
    }
    // `server=false` is what such a program runs with; a proxy refuses it, the check not.
    let mut with_server = o.clone();
    with_server.set("server", waylay_core::OptionValue::Bool(true))?;
    ProxyConfig::from_options(&with_server).map(drop)
}

impl ProxyConfig {
    /// Reads and validates the layer options.
    pub(crate) fn from_options(o: &Options) -> Result<Self, OptionsError> {
        refuse_unimplemented(o)?;
        let modes = modes(o)?;
        let upstream_auth = match o.str("upstream_auth").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(Credentials::parse(s).map_err(|e| OptionsError::BadValue {
                name: "upstream_auth".into(),
                value: "(hidden)".into(),
                expected: format!("USER:PASS ({e})"),
            })?),
        };
        let connect_timeout = secs(o, "connect_timeout");
        let upstream_tls = UpstreamTls {
            insecure: o.bool("ssl_insecure"),
            extra_ca_pem: o.str("ssl_verify_upstream_trusted_ca").map(expand_home),
            extra_ca_dir: o
                .str("ssl_verify_upstream_trusted_confdir")
                .map(expand_home),
            tls13_only: o.str("tls_version_server_min") == Some("TLS1_3"),
            alpn: Vec::new(),
        };
        let via = ViaOptions::new(connect_timeout, &upstream_tls, upstream_auth)
            .map_err(|e| OptionsError::rejected("ssl_verify_upstream_trusted_ca", e.to_string()))?;
        Ok(Self {
            modes,
            proxyauth: o.str("proxyauth").is_some_and(|v| !v.is_empty()),
            proxy_protocol: o.bool("proxy_protocol"),
            keep_host_header: o.bool("keep_host_header"),
            share_server_connections: o.bool("share_server_connections"),
            via,
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
            store_streamed_bodies: o.bool("store_streamed_bodies"),
            body_size_limit: size(o, "body_size_limit")?,
            ignore_hosts: regexes(o, "ignore_hosts")?,
            allow_hosts: regexes(o, "allow_hosts")?,
            tcp_hosts: regexes(o, "tcp_hosts")?,
            header_timeout: secs(o, "header_timeout"),
            // Zero: never.
            idle_timeout: u64::try_from(o.int("idle_timeout"))
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_header_size: usize::try_from(o.int("max_header_size"))
                .unwrap_or(65536)
                .max(8192),
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
