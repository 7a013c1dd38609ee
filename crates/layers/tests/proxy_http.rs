//! End to end on 127.0.0.1: real origins, the real proxy, plain clients.
use rustls_pki_types::pem::PemObject;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waylay_core::flow::Response;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{
    TempDir, TestProxy, connect_tls, http_origin, https_origin, proxy_get, raw_request,
    read_sized_response, read_to_close, test_tls_acceptor, within,
};

#[derive(Default)]
struct Rewrite;

impl Addon for Rewrite {
    async fn request(&mut self, flow: &mut HttpFlow) {
        if flow.request.path == "/answer" {
            flow.response = Some(Response::make(200, "from addon", [("x-by", "addon")]));
        }
        if flow.request.path == "/kill" {
            flow.kill();
        }
        flow.request.headers.insert("x-added", "1");
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        if let Some(r) = flow.response.as_mut() {
            r.headers.insert("x-seen", "yes");
        }
    }
}

#[actix_rt::test]
async fn forwards_absolute_form_and_runs_hooks() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon(Rewrite)).await;
    let out = proxy_get(proxy.addr(), &format!("http://{origin}/hello")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("x-seen: yes"), "{out}");
    assert!(
        out.ends_with(&format!("origin GET /hello host={origin}")),
        "{out}"
    );

    // Answered by the addon: the origin is never asked.
    let out = proxy_get(proxy.addr(), "http://127.0.0.1:1/answer").await;
    assert!(
        out.contains("x-by: addon") && out.ends_with("from addon"),
        "{out}"
    );

    // Killed: the connection is dropped without an answer.
    let out = proxy_get(proxy.addr(), &format!("http://{origin}/kill")).await;
    assert!(out.is_empty(), "{out}");

    // And the next request works.
    let out = proxy_get(proxy.addr(), &format!("http://{origin}/again")).await;
    assert!(
        out.ends_with(&format!("origin GET /again host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn bad_input_gets_clear_errors_and_the_proxy_goes_on() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder().set("body_size_limit=1k")).await;
    let ok = format!("origin GET /ok host={origin}");

    let out = raw_request(proxy.addr(), b"GARBAGE\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        proxy_get(proxy.addr(), &format!("http://{origin}/ok"))
            .await
            .ends_with(&ok)
    );

    let big = format!(
        "GET http://{origin}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let out = raw_request(proxy.addr(), big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(
        proxy_get(proxy.addr(), &format!("http://{origin}/ok"))
            .await
            .ends_with(&ok)
    );

    let out = raw_request(
        proxy.addr(),
        b"GET /origin-form HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("absolute URL"),
        "{out}"
    );

    let out = proxy_get(proxy.addr(), "http://127.0.0.1:1/").await;
    assert!(
        out.starts_with("HTTP/1.1 502") && out.contains("cannot connect to 127.0.0.1:1"),
        "{out}"
    );
    assert!(
        proxy_get(proxy.addr(), &format!("http://{origin}/ok"))
            .await
            .ends_with(&ok)
    );

    let post = format!(
        "POST http://{origin}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{}",
        "b".repeat(2000)
    );
    let out = raw_request(proxy.addr(), post.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");

    // A client hanging up mid-body.
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(
        format!("POST http://{origin}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nabc")
            .as_bytes(),
    )
    .await
    .unwrap();
    drop(s);
    assert!(
        proxy_get(proxy.addr(), &format!("http://{origin}/ok"))
            .await
            .ends_with(&ok)
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn keep_alive_serves_several_requests_and_bodies_pass_unchanged() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let body = "x".repeat(5000);
    let req = format!(
        "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {}\r\n\r\n{body}GET http://{origin}/bytes/3000000 HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        2,
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains(&body));
    let expected: Vec<u8> = (0..3_000_000usize).map(|i| (i % 251) as u8).collect();
    assert!(out.ends_with(&expected));
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn intercepts_tls_with_a_minted_certificate_and_verifies_the_server() {
    let dir = TempDir::new("origin");
    let (origin, origin_ca) = https_origin(&dir).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .addon(Rewrite),
    )
    .await;
    let target = format!("localhost:{}", origin.port());
    let mut tls = connect_tls(
        proxy.addr(),
        &target,
        "localhost",
        &proxy.ca_pem,
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(b"GET /secret HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("x-seen: yes"),
        "{out}"
    );
    assert!(out.ends_with("origin GET /secret host=localhost"), "{out}");

    // The leaf names the host and is issued by the proxy's CA.
    let (_, cert) = x509_parser::parse_x509_certificate(&peer).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(format!("{:?}", san.value.general_names).contains("localhost"));
    let ca_der = rustls_pki_types::CertificateDer::pem_slice_iter(proxy.ca_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_untrusted_server_certificate_is_a_502_naming_the_reason() {
    let dir = TempDir::new("origin");
    let (origin, _) = https_origin(&dir).await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let target = format!("localhost:{}", origin.port());
    let mut tls = connect_tls(
        proxy.addr(),
        &target,
        "localhost",
        &proxy.ca_pem,
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 502") && out.contains("UnknownIssuer"),
        "{out}"
    );

    // With ssl_insecure the same server is reached.
    let insecure = TestProxy::start(Proxy::builder().set("ssl_insecure=true")).await;
    let mut tls = connect_tls(
        insecure.addr(),
        &target,
        "localhost",
        &insecure.ca_pem,
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    assert!(String::from_utf8_lossy(&out).ends_with("origin GET /x host=localhost"));
    proxy.shutdown().await;
    insecure.shutdown().await;
}

/// Both TLS sides of an intercepted connection use AES-128-GCM when the peer accepts it:
/// servers are offered it first (an origin following the client's order takes it), and
/// clients get it whatever they list first (the testkit's rustls client lists AES-256-GCM
/// first), as mitmproxy picks in its own order.
#[actix_rt::test]
async fn both_sides_get_aes_128_gcm_as_browsers_do() {
    let dir = TempDir::new("origin");
    let (origin, _) = resumption_origin(&dir).await;
    let proxy = TestProxy::start(Proxy::builder().set("ssl_insecure=true")).await;
    let target = format!("localhost:{}", origin.port());
    let mut tls = connect_tls(
        proxy.addr(),
        &target,
        "localhost",
        &proxy.ca_pem,
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let client_side = tls.get_ref().1.negotiated_cipher_suite().map(|c| c.suite());
    assert_eq!(
        client_side,
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&read_to_close(&mut tls).await).into_owned();
    assert!(out.ends_with("cipher=TLS13_AES_128_GCM_SHA256"), "{out}");
    proxy.shutdown().await;
}

/// Names are resolved through a short per-worker cache: it holds a name's addresses, not a
/// port, and a port nobody listens on is an error at once, not a stale success.
#[actix_rt::test]
async fn a_name_resolved_moments_ago_reaches_each_port_and_a_closed_one_is_a_502() {
    let a = http_origin().await;
    let b = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for port in [a.port(), b.port(), closed, a.port()] {
        let out = proxy_get(proxy.addr(), &format!("http://localhost:{port}/x")).await;
        if port == closed {
            assert!(out.starts_with("HTTP/1.1 502"), "{out}");
        } else {
            assert!(
                out.starts_with("HTTP/1.1 200")
                    && out.ends_with(&format!("origin GET /x host=localhost:{port}")),
                "{out}"
            );
        }
    }
    proxy.shutdown().await;
}

/// An HTTPS origin for `localhost` whose answer says whether the TLS handshake resumed a
/// session (`handshake=Some(Resumed)`) or was a full one (`handshake=Some(Full)`), then the
/// cipher suite (` cipher=...`, the client's first choice: it follows the client's order),
/// its certificate from a test CA (PEM in the returned file); HTTP/1.1 only.
async fn resumption_origin(dir: &TempDir) -> (std::net::SocketAddr, std::path::PathBuf) {
    let (acceptor, ca_file) = test_tls_acceptor(dir, "resume-ca.pem", &[b"http/1.1"]);
    let mut config = (**acceptor.config()).clone();
    config.ignore_client_order = false;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = l.local_addr().expect("addr");
    actix_rt::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            actix_rt::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let kind = format!("{:?}", conn.handshake_kind());
                let cipher = conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("handshake={kind} cipher={cipher}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca_file)
}

/// One request through `proxy` to `target` in intercepted TLS, the client offering `alpn`;
/// the whole answer.
async fn intercepted_get(proxy: &TestProxy, target: &str, alpn: &[&[u8]]) -> String {
    let mut tls = within(
        "tunnel",
        connect_tls(proxy.addr(), target, "localhost", &proxy.ca_pem, alpn),
    )
    .await
    .expect("intercepted TLS");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    String::from_utf8_lossy(&within("answer", read_to_close(&mut tls)).await).into_owned()
}

/// TLS sessions towards servers are resumed whatever ALPN the client offered, but only under
/// the verification settings that made them: a session made with `ssl_insecure` is never
/// offered once verification is back on (the untrusted server is refused, not resumed).
#[actix_rt::test]
async fn server_sessions_are_resumed_only_under_the_trust_that_made_them() {
    let dir = TempDir::new("resume");
    let (origin, origin_ca) = resumption_origin(&dir).await;
    let target = format!("localhost:{}", origin.port());
    let proxy = TestProxy::start(Proxy::builder().set("ssl_insecure=true")).await;

    let out = intercepted_get(&proxy, &target, &[b"http/1.1"]).await;
    assert!(out.contains("handshake=Some(Full) "), "{out}");
    // Another client offer (h2 too: the server is offered both, picks HTTP/1.1), the same
    // verification: the session is resumed.
    let out = intercepted_get(&proxy, &target, &[b"h2", b"http/1.1"]).await;
    assert!(out.contains("handshake=Some(Resumed) "), "{out}");

    // Verification on: the session made without it is not offered, the server's certificate
    // is checked and refused.
    proxy
        .running()
        .manager()
        .set(&["ssl_insecure=false"])
        .await
        .expect("set");
    let out = intercepted_get(&proxy, &target, &[b"http/1.1"]).await;
    assert!(
        out.starts_with("HTTP/1.1 502") && out.contains("UnknownIssuer"),
        "{out}"
    );

    // Trusting the origin's CA: a full handshake (a new trust, a new session cache), then a
    // resumed one.
    proxy
        .running()
        .manager()
        .set(&[format!(
            "ssl_verify_upstream_trusted_ca={}",
            origin_ca.display()
        )])
        .await
        .expect("set");
    let out = intercepted_get(&proxy, &target, &[b"http/1.1"]).await;
    assert!(out.contains("handshake=Some(Full) "), "{out}");
    let out = intercepted_get(&proxy, &target, &[b"http/1.1"]).await;
    assert!(out.contains("handshake=Some(Resumed) "), "{out}");
    proxy.shutdown().await;
}

/// A client stream whose first write carries the CONNECT request too (so the proxy reads
/// the TLS ClientHello with the CONNECT head, in hyper's buffer), and whose reads skip the
/// proxy's answer to the CONNECT first.
struct PipelinedConnect {
    inner: tokio::net::TcpStream,
    /// The CONNECT request, sent in front of the first write.
    connect: Option<Vec<u8>>,
    /// What of the first write is still to go (CONNECT + the caller's bytes).
    pending: Vec<u8>,
    /// The proxy's answer to the CONNECT, until its blank line.
    head: Vec<u8>,
}

impl tokio::io::AsyncRead for PipelinedConnect {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        while !this.head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let mut one = tokio::io::ReadBuf::new(&mut b);
            match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut one) {
                Poll::Ready(Ok(())) if one.filled().is_empty() => {
                    return Poll::Ready(Err(std::io::Error::other("closed during CONNECT")));
                }
                Poll::Ready(Ok(())) => this.head.push(b[0]),
                other => return other,
            }
        }
        if !this.head.starts_with(b"HTTP/1.1 200") {
            return Poll::Ready(Err(std::io::Error::other(
                String::from_utf8_lossy(&this.head).into_owned(),
            )));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PipelinedConnect {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(connect) = this.connect.take() {
            this.pending = connect;
            this.pending.extend_from_slice(buf);
        }
        while !this.pending.is_empty() {
            match std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.pending) {
                Poll::Ready(Ok(n)) => {
                    this.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // The caller's bytes are in `pending` (or were already written): they
                // count as written only once all of `pending` is out.
                Poll::Pending => return Poll::Pending,
            }
            if this.pending.is_empty() {
                return Poll::Ready(Ok(buf.len()));
            }
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Intercepted keep-alive: on one TLS connection (its ClientHello sent with the CONNECT
/// head, so the proxy finds it in hyper's buffer after the upgrade), responses of every size
/// (empty, one byte, one TLS record, just over one, many records) arrive whole and in order.
#[actix_rt::test]
async fn intercepted_keep_alive_delivers_every_response_whole_and_in_order() {
    let dir = TempDir::new("origin");
    let (origin, _) = https_origin(&dir).await;
    let proxy = TestProxy::start(Proxy::builder().set("ssl_insecure=true")).await;
    let target = format!("localhost:{}", origin.port());
    let tcp = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    let stream = PipelinedConnect {
        inner: tcp,
        connect: Some(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes()),
        pending: Vec::new(),
        head: Vec::new(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(proxy.ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(waylay_layers::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = within(
        "TLS through a pipelined CONNECT",
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, stream),
    )
    .await
    .expect("intercepted TLS");
    let sizes = [
        0usize, 1, 1024, 16_384, 16_385, 100_000, 1_048_576, 7, 1024, 0, 65_536, 3,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        tls.write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let (head, body) = read_sized_response(&mut tls).await;
        assert!(
            head.starts_with("http/1.1 200"),
            "request {i} ({n} bytes): {head}"
        );
        let want: Vec<u8> = (0..n).map(|j| (j % 251) as u8).collect();
        assert!(body == want, "request {i}: body of {n} bytes differs");
    }
    // Several requests written at once come back in order too.
    let mut batch = String::new();
    for n in [5usize, 20_000, 0, 1] {
        batch.push_str(&format!(
            "GET /bytes/{n} HTTP/1.1\r\nHost: localhost\r\n\r\n"
        ));
    }
    tls.write_all(batch.as_bytes()).await.expect("send batch");
    for n in [5usize, 20_000, 0, 1] {
        let (_, body) = read_sized_response(&mut tls).await;
        assert_eq!(body.len(), n);
        assert!(body.iter().enumerate().all(|(j, &b)| b == (j % 251) as u8));
    }
    proxy.shutdown().await;
}
