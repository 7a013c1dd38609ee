#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]
//! Loading, creating and persisting the CA.

mod tls_support;

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use tls_support::{TempDir, openssl};
use waylay_layers::tls::{CertCache, CertificateAuthority, TlsError};

/// Mints a leaf from `ca` and checks it both with x509-parser's signature
/// check and with rustls' full chain validation.
fn assert_leaf_verifies(ca: CertificateAuthority) {
    let ca = Arc::new(ca);
    let cache = CertCache::new(ca.clone()).expect("cache");
    let leaf = cache.get(&["localhost"]).expect("mint");
    let (_, leaf_cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).expect("parse leaf");
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parse CA");
    leaf_cert
        .verify_signature(Some(ca_cert.public_key()))
        .expect("leaf signature verifies with the CA key");
    assert_eq!(leaf_cert.issuer().as_raw(), ca_cert.subject().as_raw());

    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        waylay_layers::tls::provider(),
    )
    .build()
    .expect("verifier");
    verifier
        .verify_server_cert(
            &leaf.cert[0],
            &leaf.cert[1..],
            &ServerName::try_from("localhost").expect("name"),
            &[],
            UnixTime::now(),
        )
        .expect("rustls accepts the leaf");
}

#[test]
fn creates_ca_files_and_reloads_the_same_ca() {
    let dir = TempDir::new("create");
    let confdir = dir.path().join("nested").join("confdir");
    let ca = CertificateAuthority::load_or_create(&confdir).expect("create CA");

    let key_file = confdir.join("waylay-ca.pem");
    let pem_file = confdir.join("waylay-ca-cert.pem");
    let cer_file = confdir.join("waylay-ca-cert.cer");
    for f in [&key_file, &pem_file, &cer_file] {
        assert!(f.exists(), "{} should exist", f.display());
    }
    assert_eq!(ca.origin(), Some(key_file.as_path()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        std::fs::read(&cer_file).expect("read cer"),
        ca.cert_der().as_ref()
    );
    assert_eq!(
        std::fs::read_to_string(&pem_file).expect("read pem"),
        ca.cert_pem()
    );
    let bundle = std::fs::read_to_string(&key_file).expect("read key file");
    assert!(bundle.contains("PRIVATE KEY") && bundle.contains("CERTIFICATE"));
    // No temp files are left behind.
    assert_eq!(std::fs::read_dir(&confdir).expect("list").count(), 3);

    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parse");
    assert!(cert.is_ca());
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    assert_eq!(cn, Some("waylay"));
    let ku = cert.key_usage().expect("ku").expect("has key usage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());

    let again = CertificateAuthority::load_or_create(&confdir).expect("reload");
    assert_eq!(again.cert_der(), ca.cert_der());
    assert_leaf_verifies(again);
}

#[test]
fn missing_or_stale_companion_files_are_rewritten() {
    let dir = TempDir::new("companions");
    let ca = CertificateAuthority::load_or_create(dir.path()).expect("create");
    let cer = dir.path().join("waylay-ca-cert.cer");
    let pem = dir.path().join("waylay-ca-cert.pem");
    std::fs::remove_file(&cer).expect("rm");
    std::fs::write(&pem, "stale").expect("write");

    let again = CertificateAuthority::load_or_create(dir.path()).expect("reload");
    assert_eq!(again.cert_der(), ca.cert_der());
    assert_eq!(std::fs::read(&cer).expect("cer"), ca.cert_der().as_ref());
    assert_eq!(std::fs::read_to_string(&pem).expect("pem"), ca.cert_pem());
}

#[test]
fn uses_mitmproxy_ca_when_waylay_has_none() {
    // mitmproxy's layout: key first, then certificate.
    let source = TempDir::new("mitm-src");
    let original = CertificateAuthority::load_or_create(source.path()).expect("create");
    let bundle = std::fs::read_to_string(source.path().join("waylay-ca.pem")).expect("read");

    let dir = TempDir::new("mitm");
    std::fs::write(dir.path().join("mitmproxy-ca.pem"), &bundle).expect("write");
    let ca = CertificateAuthority::load_or_create(dir.path()).expect("load mitmproxy CA");
    assert_eq!(ca.cert_der(), original.cert_der());
    assert_eq!(
        ca.origin(),
        Some(dir.path().join("mitmproxy-ca.pem").as_path())
    );
    // mitmproxy's directory is left as it was.
    assert!(!dir.path().join("waylay-ca.pem").exists());

    // waylay's own CA wins when both exist.
    let own = CertificateAuthority::load_or_create(source.path()).expect("own");
    std::fs::write(source.path().join("mitmproxy-ca.pem"), "garbage").expect("write");
    let again = CertificateAuthority::load_or_create(source.path()).expect("reload own");
    assert_eq!(again.cert_der(), own.cert_der());
}

#[test]
fn accepts_certificate_before_key() {
    let source = TempDir::new("order");
    let ca = CertificateAuthority::load_or_create(source.path()).expect("create");
    let bundle = std::fs::read_to_string(source.path().join("waylay-ca.pem")).expect("read");
    let key_end = bundle.find("-----END PRIVATE KEY-----").expect("key")
        + "-----END PRIVATE KEY-----\n".len();
    let swapped = format!("{}{}", &bundle[key_end..], &bundle[..key_end]);
    let parsed = CertificateAuthority::from_pem(&swapped).expect("cert-first bundle");
    assert_eq!(parsed.cert_der(), ca.cert_der());
}

#[test]
fn pkcs8_ecdsa_key_signs_leaves() {
    let dir = TempDir::new("pkcs8");
    CertificateAuthority::load_or_create(dir.path()).expect("create");
    let bundle = std::fs::read_to_string(dir.path().join("waylay-ca.pem")).expect("read");
    assert!(bundle.contains("-----BEGIN PRIVATE KEY-----"));
    assert_leaf_verifies(CertificateAuthority::from_pem(&bundle).expect("parse"));
}

/// Extracts the SEC1 ECPrivateKey from a PKCS#8 PrivateKeyInfo.
fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let (len, header) = match input[1] {
            n if n < 0x80 => (n as usize, 2),
            0x81 => (input[2] as usize, 3),
            0x82 => (((input[2] as usize) << 8) | input[3] as usize, 4),
            other => panic!("unexpected length byte {other:#x}"),
        };
        (tag, &input[header..header + len], &input[header + len..])
    }
    let (_, info, _) = tlv(pkcs8);
    let (_, _, rest) = tlv(info); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04);
    key.to_vec()
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::new();
    writeln!(out, "-----BEGIN {label}-----").unwrap();
    for line in b64.as_bytes().chunks(64) {
        writeln!(out, "{}", std::str::from_utf8(line).unwrap()).unwrap();
    }
    writeln!(out, "-----END {label}-----").unwrap();
    out
}

#[test]
fn sec1_key_without_curve_parameters_signs_leaves() {
    // ring's PKCS#8 output wraps a SEC1 structure without the optional curve
    // parameters, the hardest case for the loader.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).expect("self-sign");
    let sec1 = sec1_from_pkcs8(key.serialized_der());
    let pem = format!("{}{}", pem_block("EC PRIVATE KEY", &sec1), cert.pem());
    assert_leaf_verifies(CertificateAuthority::from_pem(&pem).expect("parse SEC1 CA"));
}

fn openssl_ca(dir: &std::path::Path, keygen: &[&str]) -> Option<String> {
    openssl(dir, keygen)?;
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-subj",
            "/CN=Test CA/O=waylay tests",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "cert.pem",
        ],
    )?;
    let key = std::fs::read_to_string(dir.join("key.pem")).expect("key");
    let cert = std::fs::read_to_string(dir.join("cert.pem")).expect("cert");
    Some(format!("{key}{cert}"))
}

#[test]
fn sec1_ec_keys_from_openssl_sign_leaves() {
    // Without -noout openssl also emits an "EC PARAMETERS" block, which the
    // loader must skip.
    for (curve, extra) in [("prime256v1", "-noout"), ("secp384r1", "-check")] {
        let dir = TempDir::new("sec1");
        let Some(pem) = openssl_ca(
            dir.path(),
            &[
                "ecparam", "-name", curve, "-genkey", extra, "-out", "key.pem",
            ],
        ) else {
            return;
        };
        assert!(pem.contains("-----BEGIN EC PRIVATE KEY-----"));
        assert_leaf_verifies(CertificateAuthority::from_pem(&pem).expect(curve));
    }
}

#[test]
fn pkcs1_rsa_key_signs_leaves() {
    let dir = TempDir::new("pkcs1");
    let Some(pem) = openssl_ca(
        dir.path(),
        &["genrsa", "-traditional", "-out", "key.pem", "2048"],
    ) else {
        return;
    };
    assert!(pem.contains("-----BEGIN RSA PRIVATE KEY-----"));
    assert_leaf_verifies(CertificateAuthority::from_pem(&pem).expect("PKCS#1 RSA CA"));
}

#[test]
fn pkcs8_rsa_mitmproxy_style_ca_signs_leaves() {
    let dir = TempDir::new("pkcs8rsa");
    let Some(pem) = openssl_ca(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
    ) else {
        return;
    };
    assert!(pem.contains("-----BEGIN PRIVATE KEY-----"));
    let confdir = TempDir::new("pkcs8rsa-conf");
    std::fs::write(confdir.path().join("mitmproxy-ca.pem"), &pem).expect("write");
    let ca = CertificateAuthority::load_or_create(confdir.path()).expect("load RSA mitmproxy CA");
    assert_leaf_verifies(ca);
}

#[test]
fn bad_inputs_give_precise_errors() {
    let dir = TempDir::new("bad");
    let file = dir.path().join("waylay-ca.pem");
    std::fs::write(&file, "not pem at all").expect("write");
    let err = CertificateAuthority::load_or_create(dir.path()).expect_err("garbage");
    assert!(matches!(err, TlsError::MissingKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );

    let a = TempDir::new("bad-a");
    let b = TempDir::new("bad-b");
    CertificateAuthority::load_or_create(a.path()).expect("a");
    let cb = CertificateAuthority::load_or_create(b.path()).expect("b");
    let bundle_a = std::fs::read_to_string(a.path().join("waylay-ca.pem")).expect("read");
    let key_a = &bundle_a[..bundle_a.find("-----BEGIN CERTIFICATE-----").expect("cert")];
    let mixed = format!("{key_a}{}", cb.cert_pem());
    let err = CertificateAuthority::from_pem(&mixed).expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");

    let err = CertificateAuthority::from_pem(key_a).expect_err("no cert");
    assert!(matches!(err, TlsError::MissingCert { .. }), "{err:?}");
}
