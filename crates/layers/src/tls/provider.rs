//! The crypto provider every TLS configuration of waylay is built with.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::{CipherSuite, SupportedCipherSuite};

/// The ring crypto provider used for every configuration in this module,
/// built once and shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// [`provider`] with the cipher suites in the order browsers offer them (AES-128-GCM first,
/// then AES-256-GCM, then ChaCha20-Poly1305; TLS 1.3 before 1.2), for both of waylay's TLS
/// sides: the order it offers servers, and the order it picks in for clients (the configs
/// minted for intercepted clients use it with `ignore_client_order`, as mitmproxy picks in
/// its own order, OpenSSL's `OP_CIPHER_SERVER_PREFERENCE`).
///
/// ring's default order puts AES-256-GCM with SHA-384 first, and clients offer it first too
/// (OpenSSL, rustls): then the whole TLS 1.3 key schedule, transcript and resumption
/// binders run on SHA-384, which this CPU computes in software, where SHA-256 has
/// instructions of its own: the largest hashing cost of a new intercepted connection, on
/// each side. The suites are the same; only their order changes.
pub(crate) fn aes128_first_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = (*provider()).clone();
            p.cipher_suites.sort_by_key(suite_rank);
            Arc::new(p)
        })
        .clone()
}

/// Browser order: TLS 1.3 first, then AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 (a stable
/// sort keeps ring's order, ECDSA before RSA, within a rank).
fn suite_rank(suite: &SupportedCipherSuite) -> (u8, u8) {
    let version = match suite {
        SupportedCipherSuite::Tls13(_) => 0,
        SupportedCipherSuite::Tls12(_) => 1,
    };
    let cipher = match suite.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    (version, cipher)
}

/// Installs ring as the process-wide default provider, for other crates that
/// build rustls configurations without naming one. Harmless if a default is
/// already installed (that one is kept).
pub fn install_default_provider() {
    let _ = CryptoProvider::install_default((*provider()).clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_offered_the_same_suites_in_browser_order() {
        let ours: Vec<CipherSuite> = aes128_first_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut ring: Vec<CipherSuite> =
            provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(ours[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(ours[1], CipherSuite::TLS13_AES_256_GCM_SHA384);
        assert!(
            ours[..3]
                .iter()
                .all(|s| format!("{s:?}").starts_with("TLS13_"))
        );
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        ring.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, ring);
    }
}
