//! The crypto provider every TLS configuration of waylay is built with.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

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
