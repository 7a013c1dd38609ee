//! TLS passthrough on 127.0.0.1: `ignore_hosts`, `allow_hosts` (on the CONNECT target and the
//! SNI) and `tls_clienthello`'s `ignore_connection` relay a connection untouched, so the
//! client sees the origin's own certificate, while another origin through the same proxy is
//! still intercepted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waylay_core::hooks::ClientHelloData;
use waylay_core::{Addon, TcpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TempDir, TestProxy, connect_tls, https_origin};

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Two HTTPS origins, each with its own test CA; the proxy trusts both.
struct Origins {
    a: SocketAddr,
    a_ca: String,
    b: SocketAddr,
    b_ca: String,
    both_ca_file: std::path::PathBuf,
    _dirs: (TempDir, TempDir),
}

async fn origins() -> Origins {
    let (da, db) = (TempDir::new("pass-a"), TempDir::new("pass-b"));
    let (a, a_file) = https_origin(&da).await;
    let (b, b_file) = https_origin(&db).await;
    let a_ca = std::fs::read_to_string(a_file).expect("read CA");
    let b_ca = std::fs::read_to_string(b_file).expect("read CA");
    let both_ca_file = da.path().join("both.pem");
    std::fs::write(&both_ca_file, format!("{a_ca}{b_ca}")).expect("write CA");
    Origins {
        a,
        a_ca,
        b,
        b_ca,
        both_ca_file,
        _dirs: (da, db),
    }
}

fn builder(o: &Origins) -> waylay_layers::ProxyBuilder {
    Proxy::builder().set(format!(
        "ssl_verify_upstream_trusted_ca={}",
        o.both_ca_file.display()
    ))
}

/// The leaf certificate the client sees through the proxy for `target` with SNI `localhost`,
/// trusting only `ca_pem`, after a GET answered by the origin; `Err` when the handshake
/// fails (the certificate does not chain to `ca_pem`).
async fn leaf_via(proxy: &TestProxy, target: &str, ca_pem: &str) -> Result<Vec<u8>, String> {
    let mut tls = within(
        "TLS through the proxy",
        connect_tls(proxy.addr(), target, "localhost", ca_pem, &[b"http/1.1"]),
    )
    .await
    .map_err(|e| e.to_string())?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    tls.write_all(b"GET /pass HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = within("response", tls.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("origin GET /pass host=localhost"), "{out}");
    Ok(leaf)
}

/// `target` is passed through: the origin's own certificate (chaining to `origin_ca`, not to
/// the proxy's CA).
async fn assert_passthrough(proxy: &TestProxy, target: &str, origin_ca: &str) {
    let leaf = leaf_via(proxy, target, origin_ca).await;
    assert!(leaf.is_ok(), "{target}: {leaf:?}");
    let minted = leaf_via(proxy, target, &proxy.ca_pem).await;
    assert!(minted.is_err(), "{target} was intercepted");
}

/// `target` is intercepted: a certificate minted by the proxy's CA.
async fn assert_intercepted(proxy: &TestProxy, target: &str, origin_ca: &str) {
    let leaf = leaf_via(proxy, target, &proxy.ca_pem).await;
    assert!(leaf.is_ok(), "{target}: {leaf:?}");
    let own = leaf_via(proxy, target, origin_ca).await;
    assert!(own.is_err(), "{target} was passed through");
}

#[actix_rt::test]
async fn ignore_hosts_passes_one_origin_through_and_intercepts_the_other() {
    let o = origins().await;
    let proxy =
        TestProxy::start(builder(&o).set(format!("ignore_hosts=^localhost:{}$", o.a.port()))).await;
    assert_passthrough(&proxy, &format!("localhost:{}", o.a.port()), &o.a_ca).await;
    assert_intercepted(&proxy, &format!("localhost:{}", o.b.port()), &o.b_ca).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn allow_hosts_intercepts_only_the_allowed_origin() {
    let o = origins().await;
    let proxy = TestProxy::start(builder(&o).set(format!("allow_hosts=:{}$", o.b.port()))).await;
    assert_passthrough(&proxy, &format!("localhost:{}", o.a.port()), &o.a_ca).await;
    assert_intercepted(&proxy, &format!("localhost:{}", o.b.port()), &o.b_ca).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn ignore_hosts_matches_the_sni_when_the_target_is_an_ip() {
    let o = origins().await;
    let proxy =
        TestProxy::start(builder(&o).set(format!("ignore_hosts=^localhost:{}$", o.a.port()))).await;
    // CONNECT to the IP; the ClientHello's SNI (`localhost`) matches the pattern.
    assert_passthrough(&proxy, &format!("127.0.0.1:{}", o.a.port()), &o.a_ca).await;
    assert_intercepted(&proxy, &format!("127.0.0.1:{}", o.b.port()), &o.b_ca).await;
    proxy.shutdown().await;

    // allow_hosts: allowed by SNI although the target (an IP) is not listed.
    let proxy =
        TestProxy::start(builder(&o).set(format!("allow_hosts=^localhost:{}$", o.b.port()))).await;
    assert_intercepted(&proxy, &format!("127.0.0.1:{}", o.b.port()), &o.b_ca).await;
    assert_passthrough(&proxy, &format!("127.0.0.1:{}", o.a.port()), &o.a_ca).await;
    proxy.shutdown().await;
}

/// Passes connections to one port through from `tls_clienthello`; records any `tcp_*` event.
struct IgnorePort {
    port: u16,
    tcp_events: Arc<Mutex<u32>>,
}

impl Addon for IgnorePort {
    async fn tls_clienthello(&mut self, d: &mut ClientHelloData) {
        assert_eq!(d.sni.as_deref(), Some("localhost"));
        if d.server.as_ref().is_some_and(|s| s.port == self.port) {
            d.ignore_connection = true;
        }
    }
    async fn tcp_start(&mut self, _f: &mut TcpFlow) {
        *self.tcp_events.lock().expect("lock") += 1;
    }
    async fn tcp_message(&mut self, _f: &mut TcpFlow) {
        *self.tcp_events.lock().expect("lock") += 1;
    }
}

#[actix_rt::test]
async fn tls_clienthello_can_ignore_the_connection() {
    let o = origins().await;
    let tcp_events = Arc::new(Mutex::new(0));
    let proxy = TestProxy::start(builder(&o).addon(IgnorePort {
        port: o.a.port(),
        tcp_events: tcp_events.clone(),
    }))
    .await;
    assert_passthrough(&proxy, &format!("localhost:{}", o.a.port()), &o.a_ca).await;
    assert_intercepted(&proxy, &format!("localhost:{}", o.b.port()), &o.b_ca).await;
    // Passthrough relays with no `tcp_*` events.
    assert_eq!(*tcp_events.lock().unwrap(), 0);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn ignored_hosts_are_relayed_before_the_client_speaks() {
    // A server that speaks first behind an ignored host: decided on the target alone, so
    // the banner arrives without the detection wait.
    let origin = waylay_testkit::tcp_banner_origin("hello from the server\n").await;
    let proxy = TestProxy::start(Proxy::builder().set(format!(
        "ignore_hosts=^127\\.0\\.0\\.1:{}$",
        origin.addr.port()
    )))
    .await;
    let mut s = within(
        "CONNECT",
        waylay_testkit::connect_tunnel(proxy.addr(), &origin.addr.to_string()),
    )
    .await
    .unwrap();
    let mut banner = [0u8; 22];
    let started = std::time::Instant::now();
    within("banner", s.read_exact(&mut banner)).await.unwrap();
    assert_eq!(&banner, b"hello from the server\n");
    assert!(started.elapsed() < Duration::from_millis(900));
    proxy.shutdown().await;
}
