//! The error type shared by the TLS module.
//!
//! Messages are kept to one line and name the file involved, because they end
//! up in startup failures and log lines that a user has to act on.

use std::path::PathBuf;

/// Everything that can go wrong while loading the CA, minting certificates or
/// building rustls configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory that was being accessed.
        path: PathBuf,
        /// The underlying operating system error.
        source: std::io::Error,
    },

    /// PEM text could not be decoded.
    #[error("{origin}: invalid PEM: {reason}")]
    BadPem {
        /// Where the PEM came from (a file path, or a description).
        origin: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A PEM bundle that should hold a private key holds none.
    #[error(
        "{origin}: no private key found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    MissingKey {
        /// Where the PEM came from.
        origin: String,
    },

    /// A PEM bundle that should hold a certificate holds none.
    #[error("{origin}: no certificate found")]
    MissingCert {
        /// Where the PEM came from.
        origin: String,
    },

    /// The private key is of a kind or size that cannot be used for signing.
    #[error("{origin}: unsupported private key: {reason}")]
    UnsupportedKey {
        /// Where the key came from.
        origin: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The private key does not belong to any certificate next to it.
    #[error("{origin}: the private key does not match the certificate")]
    KeyMismatch {
        /// Where the key and certificate came from.
        origin: String,
    },

    /// A certificate could not be parsed or is unusable.
    #[error("{origin}: invalid certificate: {reason}")]
    BadCert {
        /// Where the certificate came from.
        origin: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A certificate was requested without any usable host name or IP address.
    #[error("no host names given for the certificate")]
    NoNames,

    /// A requested name cannot be put into a certificate (for example because
    /// it is not ASCII; IDNs must be passed in punycode form).
    #[error("cannot put {0:?} into a certificate")]
    InvalidName(String),

    /// Certificate generation or signing failed inside rcgen.
    #[error("certificate generation failed: {0}")]
    Rcgen(String),

    /// Building a rustls configuration or loading a key into rustls failed.
    #[error("TLS configuration failed: {0}")]
    Rustls(String),
}

impl TlsError {
    /// Shorthand for attaching a path to an I/O error.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TlsError::Io { path, source }
    }
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Rcgen(e.to_string())
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e.to_string())
    }
}
