//! TLS interception: the local CA, leaf certificates minted on demand for
//! intercepted clients, and client configurations for upstream servers.
//!
//! All rustls configurations here are built with an explicitly chosen ring
//! provider, so behaviour does not depend on which crypto provider some other
//! crate installed as the process default.

mod ca;
mod cert_cache;
mod error;
mod provider;
mod verify;

pub use ca::{
    CA_CERT_DER_FILE, CA_CERT_PEM_FILE, CA_FILE, CertificateAuthority, MITMPROXY_CA_FILE,
};
pub use cert_cache::{CertCache, DEFAULT_CAPACITY};
pub use error::TlsError;
pub use provider::{install_default_provider, provider};
pub use verify::{UpstreamTls, client_config, describe_tls_error};
