//! TLS interception: the local CA, leaf certificates minted on demand for
//! intercepted clients, and client configurations for upstream servers.
//!
//! All rustls configurations here are built with an explicitly chosen ring
//! provider, so behaviour does not depend on which crypto provider some other
//! crate installed as the process default.

mod ca;
mod cert_cache;
mod error;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use ca::{
    CA_CERT_DER_FILE, CA_CERT_PEM_FILE, CA_FILE, CertificateAuthority, MITMPROXY_CA_FILE,
};
pub use cert_cache::{CertCache, DEFAULT_CAPACITY};
pub use error::TlsError;
pub use verify::{UpstreamTls, client_config, describe_tls_error};

/// The ring crypto provider used for every configuration in this module,
/// built once and shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs ring as the process-wide default provider, for other crates that
/// build rustls configurations without naming one. Harmless if a default is
/// already installed (that one is kept).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}
