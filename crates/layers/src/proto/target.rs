//! Where a client wants to go, from what it wrote: the authority of a CONNECT request, and
//! the absolute-form URL of a request to the proxy itself.

use waylay_core::flow::{CompactString, split_host_port};

/// Why a request target cannot be used; the text is the one-line reason of the 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// A CONNECT target without a port (`CONNECT example.com HTTP/1.1`).
    #[error("bad CONNECT target {0:?}: expected host:port (the port is required)")]
    ConnectNoPort(String),
    /// A CONNECT target that is no `host:port` at all.
    #[error("bad CONNECT target {0:?}: expected host:port")]
    Connect(String),
    /// A request to the proxy port whose target is not an absolute URL.
    #[error(
        "waylay is a proxy: the request target must be an absolute URL (http://host/path) or CONNECT host:port"
    )]
    NotAbsolute,
    /// An absolute URL with a scheme other than `http` or `https`.
    #[error("unsupported URL scheme {0:?}")]
    Scheme(String),
    /// An absolute URL whose authority is no `host[:port]`.
    #[error("bad authority {0:?} in request target")]
    Authority(String),
}

/// The `host` and `port` of a CONNECT request's authority-form target (RFC 9110 §9.3.6:
/// `host:port`, the port required; an IPv6 host in brackets).
pub(crate) fn connect_target(authority: &str) -> Result<(String, u16), TargetError> {
    let a = authority.trim();
    let port_text = match a.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .and_then(|(_, after)| after.strip_prefix(':')),
        // A bare IPv6 literal (several colons) has no port either.
        None => a
            .rsplit_once(':')
            .filter(|(h, _)| !h.contains(':'))
            .map(|(_, p)| p),
    };
    match port_text {
        None | Some("") => Err(TargetError::ConnectNoPort(a.to_owned())),
        Some(_) => match split_host_port(a, 0) {
            Some((host, port)) if !host.is_empty() && port != 0 => Ok((host.to_string(), port)),
            _ => Err(TargetError::Connect(a.to_owned())),
        },
    }
}

/// The scheme of a request waylay forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The scheme a flow's request names (`https` is TLS; anything else plain HTTP).
    pub(crate) fn of(s: &str) -> Self {
        if s.eq_ignore_ascii_case("https") {
            Self::Https
        } else {
            Self::Http
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub(crate) fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// Where an absolute-form request (`GET http://host:port/path`) goes: scheme, host, port.
/// `scheme` and `authority` are the URL's parts as hyper parsed them.
pub(crate) fn absolute_target(
    scheme: Option<&str>,
    authority: &str,
) -> Result<(Scheme, CompactString, u16), TargetError> {
    let scheme = match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        Some(s) => return Err(TargetError::Scheme(s.to_owned())),
        None => return Err(TargetError::NotAbsolute),
    };
    let (host, port) = split_host_port(authority, scheme.default_port())
        .ok_or_else(|| TargetError::Authority(authority.to_owned()))?;
    Ok((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn connect_needs_host_and_port() {
        assert_eq!(
            connect_target("example.com:443"),
            Ok(("example.com".into(), 443))
        );
        assert_eq!(
            connect_target("127.0.0.1:8080"),
            Ok(("127.0.0.1".into(), 8080))
        );
        assert_eq!(connect_target("[::1]:443"), Ok(("::1".into(), 443)));
    }

    #[test]
    fn connect_without_a_port_is_refused_naming_the_port() {
        for t in ["127.0.0.1", "example.com", "[::1]", "::1", "example.com:"] {
            let e = connect_target(t).expect_err(t);
            assert_eq!(e, TargetError::ConnectNoPort(t.into()), "{t}");
            assert!(e.to_string().contains("port"), "{e}");
        }
    }

    #[test]
    fn connect_with_a_bad_port_or_host_is_refused() {
        for t in [
            "example.com:x",
            "example.com:70000",
            ":443",
            "example.com:0",
            "[::1]x:1",
            "",
        ] {
            assert!(connect_target(t).is_err(), "{t}");
        }
    }

    #[test]
    fn absolute_urls_give_scheme_host_and_port() {
        assert_eq!(
            absolute_target(Some("http"), "example.com"),
            Ok((Scheme::Http, "example.com".into(), 80))
        );
        assert_eq!(
            absolute_target(Some("HTTPS"), "example.com:8443"),
            Ok((Scheme::Https, "example.com".into(), 8443))
        );
        assert_eq!(
            absolute_target(Some("http"), "[::1]:81"),
            Ok((Scheme::Http, "::1".into(), 81))
        );
    }

    #[test]
    fn what_is_no_absolute_http_url_is_refused() {
        assert_eq!(absolute_target(None, ""), Err(TargetError::NotAbsolute));
        assert_eq!(
            absolute_target(Some("ftp"), "example.com"),
            Err(TargetError::Scheme("ftp".into()))
        );
        assert!(matches!(
            absolute_target(Some("http"), "example.com:x"),
            Err(TargetError::Authority(_))
        ));
    }

    proptest! {
        #[test]
        fn random_targets_never_panic(s in ".{0,64}") {
            let _ = connect_target(&s);
            let _ = absolute_target(Some("http"), &s);
        }

        #[test]
        fn host_and_port_come_back_as_written(host in "[a-z][a-z0-9.-]{0,30}", port in 1u16..) {
            let parsed = connect_target(&format!("{host}:{port}"));
            prop_assert_eq!(parsed, Ok((host, port)));
        }
    }
}
