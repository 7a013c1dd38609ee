//! HTTP protocol details end to end on 127.0.0.1: HTTP/1.0 clients, `Expect: 100-continue`,
//! HEAD/204/304 on a kept-alive connection, 1xx, trailers, pipelining, conflicting framing,
//! an HTTP/1 client reaching an HTTP/2 server, timeouts, and curl as a real client.
//!
//! Most cases run twice: with no addon (requests are forwarded without a flow) and with an
//! addon observing every HTTP hook (the flow path), since the two paths differ.

use std::net::SocketAddr;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use waylay_layers::{Proxy, ProxyBuilder};
use waylay_testkit::{
    Observe, TempDir, TestProxy, http_origin, https_origin, raw_request, scripted_origin,
    test_tls_acceptor,
};

const T: Duration = Duration::from_secs(10);

/// Both ways of running the proxy: unobserved and observed.
fn builders() -> [(&'static str, ProxyBuilder); 2] {
    [
        ("unobserved", Proxy::builder()),
        ("observed", Proxy::builder().addon(Observe)),
    ]
}

/// One response read off a kept-alive connection: the head (lowercased) and the body,
/// framed by `Content-Length` or chunked (trailers appended to the head), or none.
async fn read_response<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    no_body: bool,
) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(T, r.read_line(&mut line))
            .await
            .expect("response head in time")
            .expect("read head");
        assert!(n > 0, "connection closed inside a response head: {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if no_body {
        return (lower, body);
    }
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.resize(len, 0);
        tokio::time::timeout(T, r.read_exact(&mut body))
            .await
            .expect("body in time")
            .expect("read body");
        return (lower, body);
    }
    if lower.contains("transfer-encoding: chunked") {
        let mut trailers = String::new();
        loop {
            let mut size = String::new();
            tokio::time::timeout(T, r.read_line(&mut size))
                .await
                .expect("chunk in time")
                .expect("read chunk size");
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .expect("chunk size");
            if n == 0 {
                loop {
                    let mut line = String::new();
                    tokio::time::timeout(T, r.read_line(&mut line))
                        .await
                        .expect("trailer in time")
                        .expect("read trailer");
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    trailers.push_str(&line.to_ascii_lowercase());
                }
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await.expect("chunk");
            body.extend_from_slice(&chunk[..n]);
        }
        return (format!("{lower}{trailers}"), body);
    }
    (lower, body)
}

#[actix_rt::test]
async fn http10_client_gets_its_answer_and_the_connection_closes() {
    let origin = http_origin().await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        let req = format!("GET http://{origin}/ten HTTP/1.0\r\n\r\n");
        let out = tokio::time::timeout(T, raw_request(proxy.addr(), req.as_bytes()))
            .await
            .expect("closed in time");
        assert!(out.starts_with("HTTP/1.0 200"), "{label}: {out}");
        assert!(
            out.ends_with(&format!("origin GET /ten host={origin}")),
            "{label}: {out}"
        );
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let origin = http_origin().await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        let s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut s = BufReader::new(s);
        let head = format!(
            "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        );
        s.get_mut().write_all(head.as_bytes()).await.expect("write");
        let (interim, _) = read_response(&mut s, true).await;
        assert!(
            interim.starts_with("http/1.1 100 continue"),
            "{label}: {interim}"
        );
        s.get_mut().write_all(b"hello").await.expect("body");
        let (head, body) = read_response(&mut s, false).await;
        assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
        assert_eq!(body, b"hello", "{label}");
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn head_204_and_304_keep_the_connection_in_step() {
    let origin = http_origin().await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        let mut s = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
        let send = |method: &str, path: &str| {
            format!("{method} http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\n\r\n")
        };
        s.get_mut()
            .write_all(send("HEAD", "/bytes/100").as_bytes())
            .await
            .expect("write");
        let (head, _) = read_response(&mut s, true).await;
        assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
        assert!(head.contains("content-length: 100"), "{label}: {head}");
        for status in [204, 304] {
            s.get_mut()
                .write_all(send("GET", &format!("/status/{status}")).as_bytes())
                .await
                .expect("write");
            let (head, _) = read_response(&mut s, true).await;
            assert!(
                head.starts_with(&format!("http/1.1 {status}")),
                "{label}: {head}"
            );
        }
        // The same connection still carries a normal exchange, in step.
        s.get_mut()
            .write_all(send("GET", "/after").as_bytes())
            .await
            .expect("write");
        let (head, body) = read_response(&mut s, false).await;
        assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("origin GET /after host={origin}"),
            "{label}"
        );
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn informational_responses_before_the_final_one_are_absorbed() {
    let (origin, _) = scripted_origin(|_| {
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    })
    .await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        let mut s = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
        let req = format!("GET http://{origin}/hints HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        s.get_mut().write_all(req.as_bytes()).await.expect("write");
        let (head, body) = read_response(&mut s, false).await;
        assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
        assert_eq!(body, b"ok", "{label}");
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn trailers_pass_both_ways() {
    let (origin, seen) = scripted_origin(|_| {
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n".to_vec()
    })
    .await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        let mut s = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
        let req = format!(
            "POST http://{origin}/t HTTP/1.1\r\nHost: {origin}\r\nTE: trailers\r\nTrailer: x-request-sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-request-sum: 42\r\n\r\n"
        );
        s.get_mut().write_all(req.as_bytes()).await.expect("write");
        let (head, body) = read_response(&mut s, false).await;
        assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
        assert_eq!(body, b"hello", "{label}");
        assert!(
            head.contains("x-checksum: abc123"),
            "{label}: response trailer lost: {head}"
        );
        let last = seen
            .lock()
            .expect("log")
            .last()
            .cloned()
            .unwrap_or_default();
        let last = last.to_ascii_lowercase();
        assert!(last.contains("abc"), "{label}: {last}");
        assert!(
            last.contains("x-request-sum: 42"),
            "{label}: request trailer lost: {last}"
        );
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn pipelined_requests_are_answered_in_order() {
    let origin = http_origin().await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        let mut s = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
        let two = format!(
            "GET http://{origin}/one HTTP/1.1\r\nHost: {origin}\r\n\r\nGET http://{origin}/two HTTP/1.1\r\nHost: {origin}\r\n\r\n"
        );
        s.get_mut().write_all(two.as_bytes()).await.expect("write");
        for path in ["/one", "/two"] {
            let (head, body) = read_response(&mut s, false).await;
            assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!("origin GET {path} host={origin}"),
                "{label}"
            );
        }
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn conflicting_framing_never_desynchronises() {
    let (origin, seen) = scripted_origin(|path| {
        let body = format!("answer {path}");
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        seen.lock().expect("log").clear();

        // Two different Content-Length values: rejected (400), nothing reaches the origin.
        let req = format!(
            "POST http://{origin}/dup HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{label}: {out}");
        // With body bytes already sent, hyper closes without writing its 400; either way
        // the connection ends and nothing is forwarded.
        let req = format!(
            "POST http://{origin}/dup HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 400"),
            "{label}: {out}"
        );
        assert!(seen.lock().expect("log").is_empty(), "{label}");

        // Content-Length and chunked together: chunked wins (RFC 9112 §6.3) and the origin
        // gets the request re-framed exactly as the proxy read it, without the stale length.
        let req = format!(
            "POST http://{origin}/cl-te HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("answer /cl-te"),
            "{label}: {out}"
        );
        let first = seen
            .lock()
            .expect("log")
            .first()
            .cloned()
            .unwrap_or_default();
        assert!(first.starts_with("POST /cl-te "), "{label}: {first}");
        assert!(
            !first.to_ascii_lowercase().contains("content-length: 30"),
            "{label}: {first}"
        );
        assert!(
            first.ends_with("abc") || first.ends_with("abc\r\n0\r\n\r\n"),
            "{label}: {first:?}"
        );

        // The same with a request smuggled after the chunked body: whatever the client gets,
        // every answer matches a request the origin saw, in order, and no body ever contains
        // the smuggled request (hyper closes such a connection, as the framing asks).
        seen.lock().expect("log").clear();
        let req = format!(
            "POST http://{origin}/cl-te HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET http://{origin}/next HTTP/1.1\r\nHost: {origin}\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        let seen_now = seen.lock().expect("log").clone();
        let answers: Vec<&str> = out.matches("answer /").collect();
        assert!(
            answers.len() <= seen_now.len(),
            "{label}: {out} / {seen_now:?}"
        );
        for r in &seen_now {
            let body = r.split("\r\n\r\n").skip(1).collect::<String>();
            assert!(
                !body.contains("GET"),
                "{label}: smuggled into a body: {r:?}"
            );
            assert!(
                !r.to_ascii_lowercase().contains("content-length: 30"),
                "{label}: {r:?}"
            );
        }

        // A bad chunk size: 400 or a closed connection, and the proxy keeps serving.
        let req = format!(
            "POST http://{origin}/bad HTTP/1.1\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(
            !out.contains("answer /bad") || out.is_empty(),
            "{label}: {out}"
        );
        let req = format!(
            "GET http://{origin}/ok HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(out.ends_with("answer /ok"), "{label}: {out}");
        proxy.shutdown().await;
    }
}

/// An HTTPS origin that speaks only HTTP/2 (ALPN `h2`); returns its address and CA file.
async fn h2_origin(dir: &TempDir) -> (SocketAddr, std::path::PathBuf) {
    let (acceptor, ca_file) = test_tls_acceptor(dir, "h2-origin-ca.pem", &[b"h2"]);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let text = format!("h2 origin {:?} {}", req.version(), req.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        text,
                    ))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_file)
}

#[actix_rt::test]
async fn http1_client_reaches_an_http2_server() {
    let dir = TempDir::new("h1-to-h2");
    let (origin, ca) = h2_origin(&dir).await;
    for (label, builder) in builders() {
        let builder = builder.set(format!("ssl_verify_upstream_trusted_ca={}", ca.display()));
        let proxy = TestProxy::start(builder).await;
        let port = origin.port();
        let mut s = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
        for path in ["/a", "/b"] {
            let req = format!(
                "GET https://localhost:{port}{path} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
            );
            s.get_mut().write_all(req.as_bytes()).await.expect("write");
            let (head, body) = read_response(&mut s, false).await;
            assert!(head.starts_with("http/1.1 200"), "{label}: {head}");
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!("h2 origin HTTP/2.0 {path}"),
                "{label}"
            );
        }
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn idle_and_silent_clients_are_closed() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("idle_timeout=1")
            .set("header_timeout=1"),
    )
    .await;
    // A client that connects and never speaks.
    let mut silent = TcpStream::connect(proxy.addr()).await.expect("connect");
    // A client that starts a request head and stalls.
    let mut slow = TcpStream::connect(proxy.addr()).await.expect("connect");
    slow.write_all(format!("GET http://{origin}/slow HTTP/1.1\r\nHost:").as_bytes())
        .await
        .expect("write");
    // A tunnel nobody uses.
    let mut tunnel = TcpStream::connect(proxy.addr()).await.expect("connect");
    tunnel
        .write_all(format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    for (name, s) in [
        ("silent", &mut silent),
        ("slow", &mut slow),
        ("tunnel", &mut tunnel),
    ] {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "{name}: still open after 8 s");
        let text = String::from_utf8_lossy(&buf);
        assert!(!text.contains("origin GET"), "{name}: {text}");
    }
    // The proxy keeps serving.
    let req = format!(
        "GET http://{origin}/after HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    );
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(
        out.ends_with(&format!("origin GET /after host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
}

/// The header timeout of a keep-alive connection is re-armed for each request (hyper keeps one
/// sleep per connection and resets it): a request after one that outlasted the timeout (its
/// body came late) is served, and a later head that stalls is still cut off.
#[actix_rt::test]
async fn the_header_timeout_is_rearmed_for_each_request_of_a_connection() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("idle_timeout=60")
            .set("header_timeout=1"),
    )
    .await;
    let mut s = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
    // The first request's body comes 1.5 s after its head: past the first deadline.
    s.get_mut()
        .write_all(
            format!(
                "POST http://{origin}/first HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.get_mut().write_all(b"hello").await.expect("write");
    let (_, body) = read_response(&mut s, false).await;
    assert!(body.starts_with(b"origin POST /first"), "{body:?}");
    // The second head in two parts: its read waits once, on the re-armed deadline.
    let head = format!("GET http://{origin}/second HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let (a, b) = head.split_at(20);
    s.get_mut().write_all(a.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.get_mut().write_all(b.as_bytes()).await.expect("write");
    let (_, body) = read_response(&mut s, false).await;
    assert!(body.starts_with(b"origin GET /second"), "{body:?}");
    // A third head that stalls is closed by the timeout.
    s.get_mut()
        .write_all(format!("GET http://{origin}/third HTTP/1.1\r\nHost:").as_bytes())
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled head still open after 8 s");
    assert!(!String::from_utf8_lossy(&rest).contains("origin GET /third"));
    proxy.shutdown().await;
}

/// curl as a real client: plain HTTP through the proxy, and HTTPS through CONNECT trusting
/// the proxy's CA, over HTTP/1.1 and HTTP/2.
#[actix_rt::test]
async fn curl_through_the_proxy() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("curl is needed for this test (.ci/run installs it)");
    }
    let dir = TempDir::new("curl");
    let origin = http_origin().await;
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let proxy = TestProxy::start(Proxy::builder().set(format!(
        "ssl_verify_upstream_trusted_ca={}",
        origin_ca.display()
    )))
    .await;
    let ca_file = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca_file, proxy.running().ca_cert_pem()).expect("write CA");
    let proxy_url = format!("http://{}", proxy.addr());
    let curl = |args: Vec<String>| async move {
        let out = tokio::time::timeout(
            T,
            tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "8", "--noproxy", ""])
                .args(&args)
                .env_remove("http_proxy")
                .env_remove("https_proxy")
                .env_remove("HTTPS_PROXY")
                .env_remove("ALL_PROXY")
                .output(),
        )
        .await
        .expect("curl in time")
        .expect("run curl");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = curl(vec![
        "-x".into(),
        proxy_url.clone(),
        format!("http://{origin}/plain"),
    ])
    .await;
    assert_eq!(out, format!("origin GET /plain host={origin}"));
    let port = tls_origin.port();
    for version in ["--http1.1", "--http2"] {
        let out = curl(vec![
            "-x".into(),
            proxy_url.clone(),
            "--cacert".into(),
            ca_file.display().to_string(),
            version.into(),
            format!("https://localhost:{port}/secure"),
        ])
        .await;
        assert_eq!(
            out,
            format!("origin GET /secure host=localhost:{port}"),
            "{version}"
        );
    }
}

#[actix_rt::test]
async fn a_client_hanging_up_mid_body_leaves_the_proxy_serving() {
    let origin = http_origin().await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder).await;
        {
            let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
            let head = format!(
                "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 100000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.expect("head");
            s.write_all(&[b'x'; 1000]).await.expect("some body");
            // Hang up with 99 000 bytes still owed.
        }
        let req = format!(
            "GET http://{origin}/next HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(
            out.ends_with(&format!("origin GET /next host={origin}")),
            "{label}: {out}"
        );
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn a_chunked_body_over_the_limit_is_refused_and_the_proxy_goes_on() {
    let origin = http_origin().await;
    for (label, builder) in builders() {
        let proxy = TestProxy::start(builder.set("body_size_limit=1k")).await;
        let chunk = "a".repeat(1000);
        let mut req = format!(
            "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for _ in 0..4 {
            req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        req.push_str("0\r\n\r\n");
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        if label == "observed" {
            // The body is read for the hooks, then refused whole.
            assert!(out.starts_with("HTTP/1.1 413"), "{label}: {out}");
            assert!(out.contains("body_size_limit"), "{label}: {out}");
        } else {
            // Streamed: the limit trips mid-stream; hyper closes the client connection
            // without writing waylay's 413 (the log line names the limit).
            assert!(
                out.is_empty() || out.starts_with("HTTP/1.1 413"),
                "{label}: {out}"
            );
        }
        // Either way the proxy goes on.
        let next = format!(
            "GET http://{origin}/next HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), next.as_bytes()).await;
        assert!(
            out.ends_with(&format!("origin GET /next host={origin}")),
            "{label}: {out}"
        );
        proxy.shutdown().await;
    }
}
