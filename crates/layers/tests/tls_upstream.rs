//! Client configurations for connecting to upstream servers.

mod tls_support;

use std::sync::Arc;

use rustls::CertificateError;
use tls_support::{TempDir, connect, serve_once};
use waylay_layers::tls::{
    CertCache, CertificateAuthority, TlsError, UpstreamTls, client_config, describe_tls_error,
};

/// An "upstream" server whose certificate comes from a CA nobody trusts,
/// stored in `dir` so its certificate file can be handed to the client.
fn untrusted_upstream(dir: &TempDir, names: &[&str]) -> Arc<rustls::ServerConfig> {
    let ca = CertificateAuthority::load_or_create(dir.path()).expect("CA");
    let cache = CertCache::new(Arc::new(ca)).expect("cache");
    cache
        .server_config(names, &[b"h2".to_vec(), b"http/1.1".to_vec()])
        .expect("server config")
}

#[tokio::test]
async fn verified_mode_rejects_unknown_ca() {
    let dir = TempDir::new("upstream-unknown");
    let (addr, _server) = serve_once(untrusted_upstream(&dir, &["localhost"])).await;
    let config = client_config(&UpstreamTls::default()).expect("client config");
    let err = connect(config, addr, "localhost")
        .await
        .expect_err("must be rejected");
    let reason = describe_tls_error(&err);
    println!("{reason}");
    assert!(
        reason.contains("UnknownIssuer") || reason.contains("unknown issuer"),
        "{reason}"
    );
    assert!(!reason.contains('\n'));
}

#[tokio::test]
async fn extra_ca_file_is_trusted() {
    let dir = TempDir::new("upstream-extra");
    let (addr, server) = serve_once(untrusted_upstream(&dir, &["localhost"])).await;
    let opts = UpstreamTls {
        extra_ca_pem: Some(dir.path().join("waylay-ca-cert.pem")),
        alpn: vec![b"http/1.1".to_vec()],
        ..UpstreamTls::default()
    };
    let config = client_config(&opts).expect("client config");
    let alpn = connect(config, addr, "localhost")
        .await
        .expect("trusted via extra CA");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    server.await.expect("join").expect("server");
}

#[tokio::test]
async fn extra_ca_still_checks_the_host_name() {
    let dir = TempDir::new("upstream-name");
    let (addr, _server) = serve_once(untrusted_upstream(&dir, &["other.test"])).await;
    let opts = UpstreamTls {
        extra_ca_pem: Some(dir.path().join("waylay-ca-cert.pem")),
        ..UpstreamTls::default()
    };
    let config = client_config(&opts).expect("client config");
    let err = connect(config, addr, "localhost")
        .await
        .expect_err("wrong name");
    let reason = describe_tls_error(&err);
    println!("{reason}");
    assert!(reason.contains("hostname mismatch"), "{reason}");
    assert!(reason.contains("other.test"), "{reason}");
}

#[tokio::test]
async fn insecure_mode_accepts_anything() {
    let dir = TempDir::new("upstream-insecure");
    let (addr, server) = serve_once(untrusted_upstream(&dir, &["other.test"])).await;
    let opts = UpstreamTls {
        insecure: true,
        alpn: vec![b"h2".to_vec()],
        ..UpstreamTls::default()
    };
    let config = client_config(&opts).expect("client config");
    let alpn = connect(config, addr, "localhost")
        .await
        .expect("insecure accepts");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    server.await.expect("join").expect("server");
}

#[test]
fn bad_extra_ca_files_are_reported_by_name() {
    let dir = TempDir::new("upstream-bad");
    let missing = dir.path().join("nope.pem");
    let err = client_config(&UpstreamTls {
        extra_ca_pem: Some(missing.clone()),
        ..UpstreamTls::default()
    })
    .expect_err("missing file");
    assert!(matches!(err, TlsError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificates here").expect("write");
    let err = client_config(&UpstreamTls {
        extra_ca_pem: Some(empty),
        ..UpstreamTls::default()
    })
    .expect_err("no certs");
    assert!(err.to_string().contains("empty.pem"), "{err}");
}

#[test]
fn describes_common_failures() {
    let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
    assert_eq!(
        describe_tls_error(&expired),
        "certificate verify failed: certificate expired"
    );
    let wrapped = std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
    );
    assert_eq!(
        describe_tls_error(&wrapped),
        "certificate verify failed: hostname mismatch"
    );
    let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    assert_eq!(
        describe_tls_error(&eof),
        "connection closed during TLS handshake"
    );
}
