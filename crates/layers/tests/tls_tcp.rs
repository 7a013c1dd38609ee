//! Raw TCP inside an intercepted TLS tunnel, on 127.0.0.1: after the client's TLS handshake,
//! what the client speaks inside decides the layer (as mitmproxy's `next_layer`). A line
//! protocol with `tcp_message` rewriting and the event order, a server that speaks first, an
//! HTTP client that still gets the HTTP layer, `rawtcp=false`, and a server that drops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use waylay_core::flow::Client;
use waylay_core::hooks::{ClientHelloData, Layer, NextLayer, ServerConnectionHookData, TlsData};
use waylay_core::{Addon, HttpFlow, TcpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{
    TempDir, TestProxy, connect_tls, https_origin, read_n, read_to_close, tls_banner_origin,
    tls_line_origin, tls_reset_origin, within,
};

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

type Log = Arc<Mutex<Vec<String>>>;

/// Records the events it sees; upper-cases what the client sends when told.
#[derive(Default)]
struct Recorder {
    log: Log,
    upper: bool,
}

impl Recorder {
    fn push(&self, s: impl Into<String>) {
        self.log.lock().expect("test step").push(s.into());
    }
}

impl Addon for Recorder {
    async fn client_connect(&mut self, _c: &mut Client) {
        self.push("client_connect");
    }
    async fn client_disconnect(&mut self, _c: &mut Client) {
        self.push("client_disconnect");
    }
    async fn http_connect(&mut self, _f: &mut HttpFlow) {
        self.push("http_connect");
    }
    async fn next_layer(&mut self, d: &mut NextLayer) {
        if d.layer == Layer::Tls {
            // The ClientHello's bytes say nothing readable.
            self.push("next_layer Tls");
        } else {
            self.push(format!(
                "next_layer {:?} {:?}",
                d.layer,
                String::from_utf8_lossy(&d.data_client)
            ));
        }
    }
    async fn tls_clienthello(&mut self, _d: &mut ClientHelloData) {
        self.push("tls_clienthello");
    }
    async fn tls_start_server(&mut self, _d: &mut TlsData) {
        self.push("tls_start_server");
    }
    async fn tls_established_server(&mut self, _d: &mut TlsData) {
        self.push("tls_established_server");
    }
    async fn tls_start_client(&mut self, _d: &mut TlsData) {
        self.push("tls_start_client");
    }
    async fn tls_established_client(&mut self, _d: &mut TlsData) {
        self.push("tls_established_client");
    }
    async fn server_connect(&mut self, _d: &mut ServerConnectionHookData) {
        self.push("server_connect");
    }
    async fn server_disconnect(&mut self, _d: &mut ServerConnectionHookData) {
        self.push("server_disconnect");
    }
    async fn request(&mut self, f: &mut HttpFlow) {
        self.push(format!("request {}", f.request.path));
    }
    async fn tcp_start(&mut self, f: &mut TcpFlow) {
        let tls = f
            .server
            .as_ref()
            .is_some_and(|s| s.tls && s.tls_info.is_some());
        self.push(format!("tcp_start server_tls={tls}"));
    }
    async fn tcp_message(&mut self, f: &mut TcpFlow) {
        let Some(m) = f.messages.last_mut() else {
            return;
        };
        let dir = if m.from_client { "c>s" } else { "s>c" };
        self.push(format!(
            "tcp_message {dir} {}",
            String::from_utf8_lossy(&m.content)
        ));
        if self.upper && m.from_client {
            m.content = Bytes::from(m.content.to_ascii_uppercase());
        }
    }
    async fn tcp_error(&mut self, f: &mut TcpFlow) {
        let msg = f.error.as_ref().map(|e| e.msg.clone()).unwrap_or_default();
        self.push(format!("tcp_error {msg}"));
    }
    async fn tcp_end(&mut self, _f: &mut TcpFlow) {
        self.push("tcp_end");
    }
}

/// Waits (bounded) until the log has an entry starting with `prefix`; returns the log.
async fn wait_for(log: &Log, prefix: &str) -> Vec<String> {
    for _ in 0..400 {
        {
            let l = log.lock().expect("test step");
            if l.iter().any(|e| e.starts_with(prefix)) {
                return l.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {prefix:?} in {:?}", log.lock().expect("test step"));
}

/// A proxy trusting the origin's CA, with `addon` and the extra options.
async fn proxy_for(
    origin_ca: &std::path::Path,
    addon: Option<Recorder>,
    options: &[&str],
) -> TestProxy {
    let mut b = Proxy::builder().set(format!(
        "ssl_verify_upstream_trusted_ca={}",
        origin_ca.display()
    ));
    for o in options {
        b = b.set(*o);
    }
    if let Some(a) = addon {
        b = b.addon(a);
    }
    TestProxy::start(b).await
}

/// CONNECT to `localhost:port` and TLS with the proxy's CA trusted, offering `alpn`.
async fn tls_client(proxy: &TestProxy, port: u16, alpn: &[&[u8]]) -> ClientTls {
    within(
        "CONNECT + TLS",
        connect_tls(
            proxy.addr(),
            &format!("localhost:{port}"),
            "localhost",
            &proxy.ca_pem,
            alpn,
        ),
    )
    .await
    .expect("test step")
}

#[actix_rt::test]
async fn line_protocol_inside_tls_is_tcp_with_rewriting_and_events_in_order() {
    let dir = TempDir::new("tls-tcp-line");
    let (origin, ca) = tls_line_origin(&dir).await;
    let log = Log::default();
    let addon = Recorder {
        log: log.clone(),
        upper: true,
    };
    let proxy = proxy_for(&ca, Some(addon), &[]).await;
    let mut s = tls_client(&proxy, origin.addr.port(), &[]).await;
    s.write_all(b"hello\n").await.expect("test step");
    assert_eq!(read_n(&mut s, 12).await, b"echo: HELLO\n");
    s.write_all(b"second line\n").await.expect("test step");
    assert_eq!(read_n(&mut s, 18).await, b"echo: SECOND LINE\n");
    // Half-close (close_notify + FIN): the server sees the end, closes, the flow ends cleanly.
    within("shutdown", s.shutdown()).await.expect("test step");
    assert!(read_to_close(&mut s).await.is_empty());
    let events = wait_for(&log, "client_disconnect").await;
    assert_eq!(
        events,
        [
            "client_connect",
            "http_connect",
            "next_layer Tls",
            "tls_clienthello",
            "server_connect",
            "tls_start_server",
            "tls_established_server",
            "tls_start_client",
            "tls_established_client",
            "next_layer Tcp \"hello\\n\"",
            "tcp_start server_tls=true",
            "tcp_message c>s hello\n",
            "tcp_message s>c echo: HELLO\n",
            "tcp_message c>s second line\n",
            "tcp_message s>c echo: SECOND LINE\n",
            "server_disconnect",
            "tcp_end",
            "client_disconnect",
        ],
        "{events:#?}"
    );
    assert_eq!(origin.received(), b"HELLO\nSECOND LINE\n");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn line_protocol_inside_tls_without_addons() {
    // No addon: the relay's fast path (no flow) over the two TLS sessions.
    let dir = TempDir::new("tls-tcp-plain");
    let (origin, ca) = tls_line_origin(&dir).await;
    let proxy = proxy_for(&ca, None, &[]).await;
    let mut s = tls_client(&proxy, origin.addr.port(), &[]).await;
    for i in 0..20 {
        let line = format!("line {i}\n");
        s.write_all(line.as_bytes()).await.expect("test step");
        let want = format!("echo: {line}");
        assert_eq!(read_n(&mut s, want.len()).await, want.as_bytes());
    }
    within("shutdown", s.shutdown()).await.expect("test step");
    assert!(read_to_close(&mut s).await.is_empty());
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_tls_server_that_speaks_first_reaches_the_client() {
    let dir = TempDir::new("tls-tcp-banner");
    let (origin, ca) = tls_banner_origin(&dir, "220 ready\r\n").await;
    let log = Log::default();
    let addon = Recorder {
        log: log.clone(),
        upper: false,
    };
    let proxy = proxy_for(&ca, Some(addon), &[]).await;
    let mut s = tls_client(&proxy, origin.addr.port(), &[]).await;
    // The client says nothing until it has the banner.
    assert_eq!(read_n(&mut s, 11).await, b"220 ready\r\n");
    s.write_all(b"quit\n").await.expect("test step");
    assert_eq!(read_n(&mut s, 11).await, b"echo: quit\n");
    drop(s);
    let events = wait_for(&log, "client_disconnect").await;
    // The server's banner decided: nothing from the client yet.
    assert!(
        events.iter().any(|e| e == "next_layer Tcp \"\""),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e == "tcp_message s>c 220 ready\r\n"),
        "{events:#?}"
    );
    assert_eq!(origin.received(), b"quit\n");
    proxy.shutdown().await;
}

/// Sends a GET in `s` and reads the whole answer (`Connection: close`).
async fn get(s: &mut ClientTls, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("test step");
    String::from_utf8_lossy(&read_to_close(s).await).into_owned()
}

#[actix_rt::test]
async fn http_inside_tls_still_gets_the_http_layer() {
    let dir = TempDir::new("tls-tcp-http");
    let (origin, ca) = https_origin(&dir).await;
    let log = Log::default();
    let addon = Recorder {
        log: log.clone(),
        upper: false,
    };
    let proxy = proxy_for(&ca, Some(addon), &[]).await;

    // ALPN http/1.1 decides without reading anything.
    let mut s = tls_client(&proxy, origin.port(), &[b"http/1.1"]).await;
    let out = get(&mut s, "/alpn").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("origin GET /alpn host=localhost"), "{out}");
    let events = wait_for(&log, "request /alpn").await;
    assert!(
        events.iter().any(|e| e == "next_layer Http1 \"\""),
        "{events:#?}"
    );

    // No ALPN: the request's first bytes decide (so no waiting for the detection timeout).
    let mut s = tls_client(&proxy, origin.port(), &[]).await;
    let out = get(&mut s, "/bytes").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("origin GET /bytes host=localhost"), "{out}");
    let events = wait_for(&log, "request /bytes").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("next_layer Http1 \"GET /bytes HTTP/1.1")),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e.starts_with("tcp_")), "{events:#?}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn without_rawtcp_non_http_inside_tls_is_served_as_http() {
    // `rawtcp=false`: the inner layer is HTTP/1 as before raw TCP existed, so a line protocol
    // gets the one-line 400 of a malformed request (as on the proxy port) and never reaches
    // the server.
    let dir = TempDir::new("tls-tcp-norawtcp");
    let (origin, ca) = tls_line_origin(&dir).await;
    let log = Log::default();
    let addon = Recorder {
        log: log.clone(),
        upper: false,
    };
    let proxy = proxy_for(&ca, Some(addon), &["rawtcp=false"]).await;
    let mut s = tls_client(&proxy, origin.addr.port(), &[]).await;
    s.write_all(b"hello\n").await.expect("test step");
    let out = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(
        out.starts_with("HTTP/1.1 400") && out.ends_with("malformed request line\n"),
        "{out:?}"
    );
    let events = wait_for(&log, "client_disconnect").await;
    assert!(
        events.iter().any(|e| e == "next_layer Http1 \"hello\\n\""),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e.starts_with("tcp_")), "{events:#?}");
    assert!(origin.received().is_empty());
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_tls_server_dropping_mid_stream_is_a_tcp_error_and_the_proxy_goes_on() {
    let dir = TempDir::new("tls-tcp-reset");
    let (origin, ca) = tls_reset_origin(&dir, 6).await;
    let good_dir = TempDir::new("tls-tcp-good");
    let (good, good_ca) = tls_line_origin(&good_dir).await;
    // Trust both origins' CAs.
    let both = dir.path().join("both.pem");
    let pem = [
        std::fs::read_to_string(&ca).expect("test step"),
        std::fs::read_to_string(&good_ca).expect("test step"),
    ]
    .concat();
    std::fs::write(&both, pem).expect("test step");
    let log = Log::default();
    let addon = Recorder {
        log: log.clone(),
        upper: false,
    };
    let proxy = proxy_for(&both, Some(addon), &[]).await;

    let mut s = tls_client(&proxy, origin.addr.port(), &[]).await;
    s.write_all(b"hello\n").await.expect("test step");
    // The proxy closes the client's side once the server is gone.
    let _ = read_to_close(&mut s).await;
    let events = wait_for(&log, "tcp_error").await;
    let tail: Vec<&str> = events
        .iter()
        .skip_while(|e| !e.starts_with("tcp_start"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail.first(),
        Some(&"tcp_start server_tls=true"),
        "{events:#?}"
    );
    assert!(
        tail.iter()
            .position(|e| *e == "server_disconnect")
            .is_some_and(|i| tail
                .get(i + 1)
                .is_some_and(|e| e.starts_with("tcp_error server"))),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e == "tcp_end"), "{events:#?}");
    assert_eq!(origin.received(), b"hello\n");

    // The next connection is served.
    let mut s = tls_client(&proxy, good.addr.port(), &[]).await;
    s.write_all(b"again\n").await.expect("test step");
    assert_eq!(read_n(&mut s, 12).await, b"echo: again\n");
    drop(s);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_unreachable_tls_server_is_a_tcp_error_for_a_tcp_client() {
    // The origin's CA is not trusted: the server's TLS fails during interception, the client's
    // handshake is finished anyway, and its non-HTTP bytes get tcp_start then tcp_error.
    let dir = TempDir::new("tls-tcp-untrusted");
    let (origin, _ca) = tls_line_origin(&dir).await;
    let log = Log::default();
    let addon = Recorder {
        log: log.clone(),
        upper: false,
    };
    let proxy = TestProxy::start(Proxy::builder().addon(addon)).await;
    let mut s = tls_client(&proxy, origin.addr.port(), &[]).await;
    s.write_all(b"hello\n").await.expect("test step");
    assert!(read_to_close(&mut s).await.is_empty());
    let events = wait_for(&log, "tcp_error").await;
    let tail: Vec<&str> = events
        .iter()
        .skip_while(|e| !e.starts_with("next_layer Tcp"))
        .map(String::as_str)
        .collect();
    assert!(!tail.contains(&"server_disconnect"), "{events:#?}");
    // The server's TCP connection closed when its TLS failed, before the client's layer.
    let closed = events.iter().position(|e| e == "server_disconnect");
    let next = events.iter().position(|e| e.starts_with("next_layer Tcp"));
    assert!(closed.is_some() && closed < next, "{events:#?}");
    assert_eq!(
        tail.get(1),
        Some(&"tcp_start server_tls=false"),
        "{events:#?}"
    );
    assert!(
        tail.get(2)
            .is_some_and(|e| e.starts_with("tcp_error TLS handshake with")),
        "{events:#?}"
    );
    assert!(origin.received().is_empty());
    proxy.shutdown().await;
}
