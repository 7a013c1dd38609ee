//! Options that change the proxy's behaviour end to end (the TLS versions, trusted CA
//! directories), and the mitmproxy options waylay declares but does not implement yet
//! (refused, never silently ignored). The policy options (`proxyauth`, `anticache`,
//! `anticomp`, `block_*`) are addons, tested in `waylay-addons`.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use waylay_layers::{Proxy, ProxyError};
use waylay_testkit::{TempDir, TestProxy, raw_request, within};

#[actix_rt::test]
async fn options_not_implemented_yet_are_refused_not_ignored() {
    for spec in [
        "store_streamed_bodies=true",
        "intercept=~d example.com",
        "connection_strategy=lazy",
        "mode=reverse:tcp://127.0.0.1:1",
        "certs=example.org=cert.pem",
        "server=false",
    ] {
        let dir = TempDir::new("not-yet");
        let r = Proxy::builder()
            .set(format!("confdir={}", dir.path().display()))
            .set("workers=1")
            .listen("127.0.0.1:0")
            .set(spec)
            .start()
            .await;
        match r {
            Err(ProxyError::Options(e)) => {
                let name = spec.split('=').next().unwrap_or_default();
                assert!(e.to_string().contains(name), "{spec}: {e}");
            }
            Err(other) => panic!("{spec}: unexpected error {other}"),
            Ok(p) => {
                p.shutdown().await;
                panic!("{spec}: accepted");
            }
        }
    }
    // Their defaults are fine (every other test starts with them).
}

/// A TLS origin speaking TLS 1.2 only (self-signed; the proxy runs with `ssl_insecure`).
async fn tls12_origin() -> SocketAddr {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(waylay_layers::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            actix::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let mut buf = vec![0u8; 4096];
                    let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ntls2")
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

#[actix_rt::test]
async fn tls_version_server_min_refuses_an_older_server() {
    let origin = tls12_origin().await;
    let req = format!(
        "GET https://localhost:{}/v HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        origin.port(),
        origin.port()
    );
    let proxy = TestProxy::start(Proxy::builder().set("ssl_insecure=true")).await;
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("tls2"),
        "{out}"
    );
    proxy.shutdown().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("ssl_insecure=true")
            .set("tls_version_server_min=TLS1_3"),
    )
    .await;
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.to_ascii_lowercase().contains("version"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn tls_version_client_min_refuses_an_older_client() {
    let dir = TempDir::new("tls13-client");
    let (origin, origin_ca) = waylay_testkit::https_origin(&dir).await;
    let proxy = TestProxy::start(Proxy::builder().set("tls_version_client_min=TLS1_3").set(
        format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display()),
    ))
    .await;
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let hello = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(proxy.ca_pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let cfg = rustls::ClientConfig::builder_with_provider(waylay_layers::tls::provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    };
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let target = format!("localhost:{}", origin.port());
    let s = waylay_testkit::connect_tunnel(proxy.addr(), &target)
        .await
        .expect("tunnel");
    let old = within("handshake", hello(TLS12).connect(name.clone(), s)).await;
    assert!(old.is_err(), "a TLS 1.2 client got through");
    let s = waylay_testkit::connect_tunnel(proxy.addr(), &target)
        .await
        .expect("tunnel");
    let mut tls = within("handshake", hello(TLS13).connect(name, s))
        .await
        .expect("a TLS 1.3 client is served");
    let req = format!("GET /v HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    let out = String::from_utf8_lossy(&waylay_testkit::read_to_close(&mut tls).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn trusted_confdir_adds_the_certificates_of_a_directory() {
    let dir = TempDir::new("trusted-dir");
    let (origin, _ca) = waylay_testkit::https_origin(&dir).await;
    std::fs::write(dir.path().join("notes.txt"), "not a certificate").expect("write");
    let req = format!(
        "GET https://localhost:{p}/d HTTP/1.1\r\nHost: localhost:{p}\r\nConnection: close\r\n\r\n",
        p = origin.port()
    );
    // Without it the origin's CA is unknown.
    let proxy = TestProxy::start(Proxy::builder()).await;
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    proxy.shutdown().await;
    let proxy = TestProxy::start(Proxy::builder().set(format!(
        "ssl_verify_upstream_trusted_confdir={}",
        dir.path().display()
    )))
    .await;
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

/// Declares the option `greeting` in `load` and records every value `configure` gives it.
struct Greeter {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl waylay_core::Addon for Greeter {
    async fn load(&mut self, loader: &mut waylay_core::hooks::Loader) {
        loader.add_option(waylay_core::OptionSpec::new(
            "greeting",
            waylay_core::OptionValue::Str("hello".into()),
            "What to say.",
        ));
    }

    async fn configure(
        &mut self,
        cfg: &mut waylay_core::hooks::Configure,
    ) -> Result<(), waylay_core::OptionsError> {
        let v = cfg.options.str("greeting").unwrap_or_default().to_owned();
        self.seen.lock().expect("seen").push(v);
        Ok(())
    }
}

#[actix_rt::test]
async fn set_before_an_addon_is_added_reaches_the_option_it_declares() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("greeting=bonjour")
            .addon(Greeter { seen: seen.clone() }),
    )
    .await;
    assert_eq!(
        proxy.running().manager().options().str("greeting"),
        Some("bonjour")
    );
    assert_eq!(
        seen.lock().expect("seen").last().map(String::as_str),
        Some("bonjour")
    );
    proxy.shutdown().await;

    // An option that no addon declares still stops the start, naming it.
    let dir = TempDir::new("undeclared");
    let r = Proxy::builder()
        .set(format!("confdir={}", dir.path().display()))
        .set("workers=1")
        .listen("127.0.0.1:0")
        .set("greetin=bonjour")
        .addon(Greeter { seen })
        .start()
        .await;
    match r {
        Err(ProxyError::Options(e)) => assert!(e.to_string().contains("greetin"), "{e}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(p) => {
            p.shutdown().await;
            panic!("accepted an undeclared option");
        }
    }
}
