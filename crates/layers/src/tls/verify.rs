//! Client-side TLS towards the real (upstream) servers, and turning
//! handshake failures into one-line reasons for error pages.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::error::TlsError;

/// How waylay connects to upstream servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Accept any upstream certificate (mitmproxy's `ssl_insecure`).
    pub insecure: bool,
    /// A PEM file with extra trusted CA certificates, added to the system
    /// roots (mitmproxy's `ssl_verify_upstream_trusted_ca`).
    pub extra_ca_pem: Option<PathBuf>,
    /// ALPN protocols to offer, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// A directory whose files hold more trusted CA certificates (PEM; files without a
    /// certificate are skipped), added like `extra_ca_pem`
    /// (mitmproxy's `ssl_verify_upstream_trusted_confdir`).
    pub extra_ca_dir: Option<PathBuf>,
    /// Offer TLS 1.3 only (mitmproxy's `tls_version_server_min=TLS1_3`).
    pub tls13_only: bool,
}

/// Builds a rustls client configuration (ring, TLS 1.2 and 1.3, the cipher suites in
/// browser order: AES-128-GCM first) according to `opts`.
///
/// The system trust store is read once per process and reused; a system
/// without any usable roots still works with `extra_ca_pem`.
pub fn client_config(opts: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = super::provider::aes128_first_provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;

    let mut config = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let mut roots = native_roots().clone();
        if let Some(path) = &opts.extra_ca_pem {
            add_pem_roots(&mut roots, path)?;
        }
        if let Some(dir) = &opts.extra_ca_dir {
            add_pem_dir(&mut roots, dir)?;
        }
        if roots.is_empty() {
            tracing::warn!(
                "no trusted root certificates; every upstream certificate will be rejected"
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(config))
}

/// The system trust store, loaded on first use. Individual unreadable or
/// unparsable certificates are logged and skipped rather than failing
/// startup: one broken file in /etc/ssl should not disable the proxy.
fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "could not load some system root certificates");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(loaded.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "skipped unparsable system root certificates");
        }
        tracing::debug!(added, "loaded system root certificates");
        store
    })
}

/// Adds the certificates of every file in `dir` that holds any; a directory without a single
/// certificate is an error (a wrong path should not pass silently).
fn add_pem_dir(roots: &mut RootCertStore, dir: &std::path::Path) -> Result<(), TlsError> {
    let entries = std::fs::read_dir(dir).map_err(TlsError::io(dir))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let before = roots.len();
    for f in &files {
        match add_pem_roots(roots, f) {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(path = %f.display(), "skipping a file in the trusted CA directory: {e}")
            }
        }
    }
    if roots.len() == before {
        return Err(TlsError::MissingCert {
            origin: dir.display().to_string(),
        });
    }
    Ok(())
}

fn add_pem_roots(roots: &mut RootCertStore, path: &std::path::Path) -> Result<(), TlsError> {
    let pem = std::fs::read(path).map_err(TlsError::io(path))?;
    let origin = path.display().to_string();
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::BadPem {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::BadCert {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError::MissingCert { origin });
    }
    Ok(())
}

/// Skips certificate validation but still checks the handshake signature,
/// so the certificate waylay records for the flow really belongs to the peer
/// it talked to.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Explains a TLS failure in one line, for 502 bodies and logs, e.g.
/// `certificate verify failed: UnknownIssuer (...)` or
/// `certificate verify failed: certificate expired`.
///
/// Accepts a `rustls::Error` directly or the `std::io::Error` that
/// tokio-rustls wraps it in; other errors fall back to their own message.
pub fn describe_tls_error(error: &(dyn std::error::Error + 'static)) -> String {
    let line = match find_rustls_error(error) {
        Some(e) => describe_rustls(e),
        None => describe_other(error),
    };
    // Keep the promise of one line even if a nested message has newlines.
    line.replace(['\r', '\n'], " ")
}

/// Walks the source chain (io::Error hides its payload behind `get_ref`).
fn find_rustls_error<'a>(
    mut error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    loop {
        if let Some(e) = error.downcast_ref::<rustls::Error>() {
            return Some(e);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            error = inner;
            continue;
        }
        error = error.source()?;
    }
}

fn describe_rustls(error: &rustls::Error) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(cert) => {
            format!("certificate verify failed: {}", describe_certificate(cert))
        }
        E::AlertReceived(alert) => format!("peer sent TLS alert: {alert:?}"),
        E::NoApplicationProtocol => "no common ALPN protocol with peer".to_owned(),
        E::PeerIncompatible(why) => format!("peer is incompatible: {why:?}"),
        E::PeerMisbehaved(why) => format!("peer misbehaved: {why:?}"),
        E::InvalidMessage(why) => format!("invalid TLS message from peer: {why:?}"),
        E::NoCertificatesPresented => "peer presented no certificate".to_owned(),
        other => other.to_string(),
    }
}

fn describe_certificate(error: &CertificateError) -> String {
    use CertificateError as C;
    match error {
        C::UnknownIssuer => {
            "UnknownIssuer (not signed by a trusted CA; self-signed or missing intermediate?)"
                .to_owned()
        }
        C::Expired | C::ExpiredContext { .. } => "certificate expired".to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not yet valid".to_owned(),
        C::NotValidForName => "hostname mismatch".to_owned(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "hostname mismatch: expected {}, certificate is for {}",
            server_name_text(expected),
            if presented.is_empty() {
                "no names".to_owned()
            } else {
                presented
                    .iter()
                    .map(|n| tidy_presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        C::Revoked => "certificate revoked".to_owned(),
        C::BadSignature => "bad certificate signature".to_owned(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "certificate not valid for TLS server authentication".to_owned()
        }
        C::BadEncoding => "malformed certificate".to_owned(),
        C::Other(other) => other.to_string(),
        other => format!("{other:?}"),
    }
}

/// rustls reports presented names in Debug form (`DnsName("a.test")`);
/// users want just `a.test`.
fn tidy_presented_name(name: &str) -> &str {
    name.split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(name, |inner| inner.trim_matches('"'))
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn describe_other(error: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    match error
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
    {
        Some(ErrorKind::UnexpectedEof) => "connection closed during TLS handshake".to_owned(),
        Some(ErrorKind::ConnectionReset) => "connection reset during TLS handshake".to_owned(),
        Some(ErrorKind::TimedOut) => "TLS handshake timed out".to_owned(),
        _ => error.to_string(),
    }
}
