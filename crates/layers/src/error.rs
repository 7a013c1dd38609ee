//! Errors of the proxy, saying which side failed.

use std::io;

/// Why the proxy could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An option has a bad value or name.
    #[error(transparent)]
    Options(#[from] waylay_core::OptionsError),
    /// An addon could not be added.
    #[error(transparent)]
    Addon(#[from] waylay_core::AddError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The CA could not be loaded or created.
    #[error("certificate authority: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Any other I/O failure of the proxy itself.
    #[error("{context}: {source}")]
    Io {
        /// What waylay was doing.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Why a request could not be forwarded; the text is the one-line reason put in the 502 body.
#[derive(Debug, thiserror::Error, Clone)]
pub enum ServerError {
    /// DNS or connect failure.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The TLS handshake with the server failed.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What failed (certificate verification, protocol).
        reason: String,
    },
    /// The server sent something that is not valid HTTP, or closed early.
    #[error("server {addr} failed: {reason}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The server connection of this tunnel failed earlier, as this says.
    #[error("{0}")]
    Earlier(Box<ServerError>),
    /// The server connection's actor stopped (its connection ended under the request).
    #[error("server connection to {addr} is gone")]
    Gone {
        /// `host:port`.
        addr: String,
    },
    /// The route to the server failed: the upstream proxy could not be reached, refused the
    /// tunnel (407, 502, ...) or failed its handshake. The text names the proxy.
    #[error("{0}")]
    Via(crate::via::ViaError),
    /// An addon refused the connection in `server_connect`.
    #[error("connection to {addr} refused by an addon: {reason}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The error the addon set.
        reason: String,
    },
}

/// Which side of a proxied connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client, or its connection to waylay.
    Client,
    /// The server, or waylay's connection to it.
    Server,
    /// waylay itself (an addon's decision, a request it cannot build).
    Proxy,
}

impl ServerError {
    /// The side that failed: the server, except when an addon refused the connection.
    pub fn side(&self) -> Side {
        match self {
            Self::Refused { .. } => Side::Proxy,
            Self::Earlier(e) => e.side(),
            Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Protocol { .. }
            | Self::Gone { .. }
            | Self::Via(_) => Side::Server,
        }
    }
}

/// Why a request could not be forwarded; the text is the one-line reason of the 502.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The server connection failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The request (as addons left it) cannot be sent: an invalid method, target or header.
    #[error("{0}")]
    Request(String),
}

impl ForwardError {
    /// The side that failed.
    pub(crate) fn side(&self) -> Side {
        match self {
            Self::Server(e) => e.side(),
            Self::Request(_) => Side::Proxy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_side_that_failed() {
        let refused = ServerError::Refused {
            addr: "a:1".into(),
            reason: "no".into(),
        };
        assert_eq!(refused.side(), Side::Proxy);
        let connect = ServerError::Connect {
            addr: "a:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(
            ServerError::Earlier(Box::new(connect.clone())).side(),
            Side::Server
        );
        assert_eq!(ForwardError::from(connect).side(), Side::Server);
        assert_eq!(ForwardError::Request("bad".into()).side(), Side::Proxy);
    }
}
