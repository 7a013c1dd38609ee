//! The TLS ClientHello: is it complete, and what does it offer (SNI, ALPN)?

use super::detect::tls_record_len;

/// What the ClientHello offered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) sni: Option<String>,
    pub(crate) alpn: Vec<Vec<u8>>,
}

/// Parses a ClientHello from the first bytes of a connection; `None` while incomplete or
/// not a ClientHello.
pub(crate) fn parse_client_hello(buf: &[u8]) -> Option<Hello> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = buf;
    while !rd.is_empty() {
        if acceptor.read_tls(&mut rd).is_err() {
            return None;
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let ch = accepted.client_hello();
            Some(Hello {
                sni: ch.server_name().map(str::to_owned),
                alpn: ch
                    .alpn()
                    .map(|it| it.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default(),
            })
        }
        _ => None,
    }
}

/// Whether `buf` holds a whole ClientHello.
pub(crate) fn client_hello_complete(buf: &[u8]) -> bool {
    tls_record_len(buf).is_some() && parse_client_hello(buf).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real ClientHello (rustls client, SNI `example.com`, ALPN `h2`, `http/1.1`).
    fn hello_bytes(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        roots.roots.clear();
        let mut cfg = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).expect("name");
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).expect("conn");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("write");
        out
    }

    #[test]
    fn a_whole_client_hello_gives_its_sni_and_alpn() {
        let b = hello_bytes("example.com", &[b"h2", b"http/1.1"]);
        assert!(client_hello_complete(&b));
        let h = parse_client_hello(&b).expect("parsed");
        assert_eq!(h.sni.as_deref(), Some("example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn an_ip_literal_sends_no_sni() {
        let b = hello_bytes("127.0.0.1", &[]);
        let h = parse_client_hello(&b).expect("parsed");
        assert_eq!(h.sni, None);
        assert!(h.alpn.is_empty());
    }

    #[test]
    fn a_truncated_client_hello_is_incomplete() {
        let b = hello_bytes("example.com", &[b"h2"]);
        for cut in [0, 1, 5, 6, b.len() / 2, b.len() - 1] {
            assert!(!client_hello_complete(&b[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn http_is_no_client_hello() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = client_hello_complete(&b);
        }

        #[test]
        fn a_damaged_client_hello_never_panics(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut b = hello_bytes("example.com", &[b"h2"]);
            let i = idx.index(b.len());
            b[i] = byte;
            let _ = parse_client_hello(&b);
        }
    }
}
