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
    /// The server connection of this tunnel failed earlier (the text says how).
    #[error("{0}")]
    Earlier(String),
    /// An addon refused the connection in `server_connect`.
    #[error("connection to {addr} refused by an addon: {reason}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The error the addon set.
        reason: String,
    },
}
