//! Leaf minting, caching and the server side of intercepted handshakes.

mod tls_support;

use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use tls_support::{client_trusting, connect, serve_once};
use waylay_layers::tls::{CertCache, CertificateAuthority};
use x509_parser::extensions::GeneralName;

fn cache() -> CertCache {
    let ca = CertificateAuthority::generate().expect("CA");
    CertCache::new(Arc::new(ca)).expect("cache")
}

fn sans(der: &[u8]) -> (Vec<String>, Vec<IpAddr>) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse");
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let ext = cert
        .subject_alternative_name()
        .expect("san ext")
        .expect("has SANs");
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("v4")),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("v6")),
                n => panic!("bad IP SAN length {n}"),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (dns, ips)
}

#[test]
fn leaf_for_dns_name() {
    let cache = cache();
    let leaf = cache.get(&["example.com"]).expect("mint");
    assert_eq!(leaf.cert.len(), 2, "chain is [leaf, CA]");
    assert_eq!(&leaf.cert[1], cache.ca().cert_der());
    assert_eq!(
        sans(&leaf.cert[0]),
        (vec!["example.com".to_owned()], vec![])
    );

    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).expect("parse");
    let (_, ca) = x509_parser::parse_x509_certificate(cache.ca().cert_der()).expect("parse CA");
    assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
    assert_eq!(cert.issuer().to_string(), ca.subject().to_string());
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    assert_eq!(cn, Some("example.com"));
    assert!(!cert.is_ca());
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("has EKU")
        .value;
    assert!(eku.server_auth);
    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert!(days < 398, "leaf valid for {days} days");
    assert!(
        validity.not_before.timestamp() < time::OffsetDateTime::now_utc().unix_timestamp() - 86_400
    );
}

#[test]
fn leaves_for_ip_literals() {
    let cache = cache();
    let v4 = cache.get(&["127.0.0.1"]).expect("v4");
    assert_eq!(
        sans(&v4.cert[0]),
        (vec![], vec!["127.0.0.1".parse::<IpAddr>().expect("ip")])
    );
    for spelling in ["::1", "[::1]"] {
        let v6 = cache.get(&[spelling]).expect("v6");
        assert_eq!(
            sans(&v6.cert[0]),
            (vec![], vec!["::1".parse::<IpAddr>().expect("ip")])
        );
    }
    assert_eq!(cache.minted(), 2, "bracketed and bare IPv6 share a leaf");

    let mixed = cache
        .get(&[
            "Example.COM".to_owned(),
            "10.1.2.3".to_owned(),
            "www.example.com".to_owned(),
        ])
        .expect("mixed");
    let (dns, ips) = sans(&mixed.cert[0]);
    assert_eq!(dns, vec!["example.com", "www.example.com"]);
    assert_eq!(ips, vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]);
}

#[test]
fn cache_key_ignores_order_case_and_duplicates() {
    let cache = cache();
    let a = cache.get(&["b.test", "a.test"]).expect("a");
    let b = cache.get(&["A.test", "b.test", "a.test"]).expect("b");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(cache.minted(), 1);
    let names: Vec<String> = vec!["c.test".into()];
    cache.get(&names).expect("vec of strings works");
    assert_eq!(cache.minted(), 2);
}

#[test]
fn serials_are_unique() {
    let cache = cache();
    let serial = |name: &str| {
        let leaf = cache.get(&[name]).expect("mint");
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert[0]).expect("parse");
        cert.raw_serial().to_vec()
    };
    assert_ne!(serial("one.test"), serial("two.test"));
}

#[test]
fn concurrent_misses_mint_once() {
    let cache = Arc::new(cache());
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let cache = cache.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                cache.get(&["a.test".to_owned()]).expect("mint")
            })
        })
        .collect();
    let leaves: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(cache.minted(), 1);
    assert!(leaves.iter().all(|l| Arc::ptr_eq(l, &leaves[0])));
}

#[test]
fn cache_is_bounded_and_keeps_recent_entries() {
    let ca = CertificateAuthority::generate().expect("CA");
    let cache = CertCache::with_capacity(Arc::new(ca), 8).expect("cache");
    let hot = cache.get(&["hot.test"]).expect("hot");
    for i in 0..50 {
        cache.get(&[format!("host{i}.test")]).expect("mint");
        cache.get(&["hot.test"]).expect("hot again");
        assert!(cache.cached() <= 8, "cache grew to {}", cache.cached());
    }
    assert_eq!(cache.minted(), 51);
    assert!(Arc::ptr_eq(&hot, &cache.get(&["hot.test"]).expect("hot")));
}

#[test]
fn server_configs_are_cached() {
    let cache = cache();
    let alpn = vec![b"h2".to_vec()];
    let a = cache.server_config(&["x.test"], &alpn).expect("a");
    let b = cache.server_config(&["X.test"], &alpn).expect("b");
    assert!(Arc::ptr_eq(&a, &b));
    let c = cache.server_config(&["x.test"], &[]).expect("c");
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(cache.minted(), 1, "configs share the leaf");
}

#[test]
fn names_that_cannot_be_certified_are_errors() {
    let cache = cache();
    let none: [&str; 0] = [];
    assert!(cache.get(&none).is_err());
    let err = cache.get(&["bad host"]).expect_err("invalid");
    assert!(err.to_string().contains("bad host"), "{err}");
    assert_eq!(cache.minted(), 0);
}

#[tokio::test]
async fn end_to_end_handshake_with_alpn() {
    let cache = cache();
    let alpn = [b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = cache
        .server_config(&["localhost"], &alpn)
        .expect("server config");

    let (addr, server) = serve_once(config.clone()).await;
    let client = client_trusting(cache.ca().cert_der(), &[b"h2", b"http/1.1"]);
    let negotiated = connect(client, addr, "localhost").await.expect("handshake");
    assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        server.await.expect("join").expect("server").as_deref(),
        Some(&b"h2"[..])
    );

    // A client that only speaks HTTP/1.1 gets HTTP/1.1.
    let (addr, server) = serve_once(config).await;
    let client = client_trusting(cache.ca().cert_der(), &[b"http/1.1"]);
    let negotiated = connect(client, addr, "localhost").await.expect("handshake");
    assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
    server.await.expect("join").expect("server");
}

#[tokio::test]
async fn end_to_end_tls12_and_ip_address() {
    let cache = cache();
    let config = cache
        .server_config(&["127.0.0.1"], &[])
        .expect("server config");
    let (addr, server) = serve_once(config).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cache.ca().cert_der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(waylay_layers::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("tls12")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let negotiated = connect(Arc::new(client), addr, "127.0.0.1")
        .await
        .expect("handshake");
    assert_eq!(negotiated, None);
    server.await.expect("join").expect("server");
}
