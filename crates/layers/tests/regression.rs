//! Regression tests, each named after what broke.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use waylay_layers::Proxy;
use waylay_testkit::{Observe, TestProxy, http_origin, raw_request, within};

/// `CONNECT 127.0.0.1 HTTP/1.1` was answered `200` and tunnelled to port 443: the
/// authority form of a CONNECT target needs a port (RFC 9110 §9.3.6).
#[actix_rt::test]
async fn connect_without_a_port_is_answered_400_with_the_reason() {
    let proxy = TestProxy::start(Proxy::builder()).await;
    for target in [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "127.0.0.1:",
        "127.0.0.1:x",
    ] {
        let req =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        let out = within("answer", raw_request(proxy.addr(), req.as_bytes())).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{target}: {out}");
        assert!(
            out.contains("port"),
            "{target}: the reason names the port: {out}"
        );
    }
    // The proxy still serves the next client.
    let origin = http_origin().await;
    let req = format!(
        "GET http://{origin}/after HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    );
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

/// A request with both `Content-Length` and `Transfer-Encoding: chunked`, followed by more
/// bytes on the same connection, was forwarded and answered by the server, but the client
/// received nothing: waylay closed the connection with the extra bytes unread, and the reset
/// that sends destroyed the response. The response must arrive (the connection may close
/// after it).
#[actix_rt::test]
async fn a_request_with_content_length_and_chunked_followed_by_more_bytes_gets_its_response() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    // The bytes that follow: a second request with a body larger than waylay reads ahead,
    // so some are still unread in the socket when waylay is done with the connection.
    let body = vec![b'x'; 256 * 1024];
    let second = format!(
        "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = format!(
        "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 55\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{second}"
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    s.write_all(&req).await.expect("write");
    // Read only once waylay is done with the connection, as a slow client would: the
    // response must still be there.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut out = Vec::new();
    let read = within(
        "answer",
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
    )
    .await;
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    // A lingering close ends with a FIN, never a reset that could destroy the response.
    assert!(read.is_ok(), "{read:?}");
    proxy.shutdown().await;
}

/// An origin that answers every request with these fields in this order, hop-by-hop ones
/// between them, and keeps the connection open (it never sends `Connection: close`).
async fn ordered_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    waylay_testkit::scripted_origin(|_| {
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: keep-alive\r\nX-B: 2\r\nKeep-Alive: timeout=5\r\nX-C: 3\r\nContent-Length: 2\r\nX-D: 4\r\n\r\nok".to_vec()
    })
    .await
}

/// The names of the fields of a message head, in order, lowercase.
fn field_names(head: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .collect()
}

/// Sends `req` and reads the answer until waylay closes the connection (a test failure if it
/// stays open).
async fn answer_until_closed(proxy: std::net::SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    within(
        "the connection closed",
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out),
    )
    .await
    .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Stripping the hop-by-hop fields with `HeaderMap::remove` moved the last field into the
/// removed one's place: the server got the client's fields (and the client the server's) in
/// another order than they were sent.
#[actix_rt::test]
async fn stripping_hop_by_hop_headers_keeps_the_order_of_the_others() {
    let (origin, seen) = ordered_origin().await;
    for (label, builder) in [
        ("no addon", Proxy::builder()),
        ("with an addon", Proxy::builder().addon(Observe)),
    ] {
        let proxy = TestProxy::start(builder).await;
        let req = format!(
            "GET http://{origin}/o HTTP/1.1\r\nHost: {origin}\r\nX-1: a\r\nProxy-Connection: keep-alive\r\nX-2: b\r\nConnection: close, x-private\r\nX-Private: p\r\nX-3: c\r\nX-2: d\r\nX-4: e\r\n\r\n"
        );
        let out = within("answer", raw_request(proxy.addr(), req.as_bytes())).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{label}: {out}");
        let sent = last_sent(&seen);
        assert_eq!(
            field_names(&sent),
            ["host", "x-1", "x-2", "x-2", "x-3", "x-4"],
            "{label}: to the server: {sent}"
        );
        let got: Vec<String> = field_names(&out)
            .into_iter()
            .filter(|n| n != "connection" && n != "date")
            .collect();
        assert_eq!(
            got,
            ["x-a", "x-b", "x-c", "content-length", "x-d"],
            "{label}: to the client: {out}"
        );
        proxy.shutdown().await;
    }
}

/// waylay dropped the client's `Connection: close`: the response came without it and the
/// connection stayed open. As any HTTP/1.1 proxy (RFC 9112 §9.6, and mitmproxy), waylay
/// closes the client connection after the response, which says `Connection: close`.
#[actix_rt::test]
async fn a_client_connection_close_closes_the_connection_after_the_response() {
    let (origin, _seen) = ordered_origin().await;
    for (label, builder) in [
        ("no addon", Proxy::builder()),
        ("with an addon", Proxy::builder().addon(Observe)),
    ] {
        let proxy = TestProxy::start(builder).await;
        for close in ["Connection: close", "Connection: x-private, Close"] {
            let req = format!(
                "GET http://{origin}/c HTTP/1.1\r\nHost: {origin}\r\n{close}\r\nX-Private: p\r\n\r\n"
            );
            let out = answer_until_closed(proxy.addr(), &req).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{label}, {close}: {out}");
            assert!(out.ends_with("\r\n\r\nok"), "{label}, {close}: {out}");
            assert!(
                out.to_ascii_lowercase()
                    .contains("\r\nconnection: close\r\n"),
                "{label}, {close}: {out}"
            );
        }
        proxy.shutdown().await;
    }
}

/// waylay dropped the server's `Connection: close` with the other hop-by-hop fields and kept
/// the client connection open. mitmproxy passes it on and closes the client connection after
/// the response; so does waylay now (the client learns the server wanted to end, as it would
/// without a proxy), with the field in its place.
#[actix_rt::test]
async fn a_server_connection_close_reaches_the_client_and_closes_its_connection() {
    let (origin, _seen) = waylay_testkit::scripted_origin(|_| {
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\nContent-Length: 2\r\nX-B: 2\r\n\r\nok"
            .to_vec()
    })
    .await;
    for (label, builder) in [
        ("no addon", Proxy::builder()),
        ("with an addon", Proxy::builder().addon(Observe)),
    ] {
        let proxy = TestProxy::start(builder).await;
        let req = format!("GET http://{origin}/s HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        let out = answer_until_closed(proxy.addr(), &req).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{label}: {out}");
        assert!(out.ends_with("\r\n\r\nok"), "{label}: {out}");
        let names: Vec<String> = field_names(&out)
            .into_iter()
            .filter(|n| n != "date")
            .collect();
        assert_eq!(
            names,
            ["x-a", "connection", "content-length", "x-b"],
            "{label}: {out}"
        );
        assert!(
            out.to_ascii_lowercase()
                .contains("\r\nconnection: close\r\n"),
            "{label}: {out}"
        );
        proxy.shutdown().await;
    }
}

/// An origin that answers one request per connection (`Content-Length`, no
/// `Connection: close`) and then closes it: every kept-alive server connection is stale once
/// its response is read. Returns its address and the connections it accepted.
async fn one_shot_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::AsyncBufReadExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    actix_rt::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            actix_rt::spawn(async move {
                let mut s = tokio::io::BufReader::new(s);
                // The request head, up to its empty line (bounded).
                for _ in 0..100 {
                    let mut line = String::new();
                    match s.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let _ = s
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // Dropped: closed without a word.
            });
        }
    });
    (addr, accepted)
}

/// Reads one response framed by `Content-Length` (bounded in size).
async fn read_response(s: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return got;
            }
        }
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 || got.len() > 64 * 1024 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// A request on a kept-alive server connection the server has just closed must not fail:
/// before a request goes on a pooled connection no copy of it is kept any more (hyper gives
/// an unsent request back, and waylay sends that on a fresh connection), so a connection
/// found closed, before or while the request is handed to it, still gives the client its
/// answer, with and without addons.
#[actix_rt::test]
async fn a_server_closing_its_kept_alive_connection_unannounced_does_not_fail_the_next_request() {
    let (origin, accepted) = one_shot_origin().await;
    for (label, builder) in [
        ("no addon", Proxy::builder()),
        ("with an addon", Proxy::builder().addon(Observe)),
    ] {
        let proxy = TestProxy::start(builder).await;
        let before = accepted.load(std::sync::atomic::Ordering::SeqCst);
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        for i in 0..5 {
            let req = format!("GET http://{origin}/r{i} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            let got = within("a response", read_response(&mut s)).await;
            let text = String::from_utf8_lossy(&got).into_owned();
            assert!(
                text.starts_with("HTTP/1.1 200"),
                "{label}, request {i}: {text}"
            );
        }
        // Every request needed its own server connection.
        let used = accepted.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert_eq!(used, 5, "{label}");
        proxy.shutdown().await;
    }
}

/// The last request the origin got.
fn last_sent(seen: &std::sync::Mutex<Vec<String>>) -> String {
    seen.lock()
        .expect("seen")
        .last()
        .cloned()
        .unwrap_or_default()
}

/// The `Host` values of the last request the origin got (any case), and that request.
fn last_hosts(seen: &std::sync::Mutex<Vec<String>>) -> (Vec<String>, String) {
    let sent = last_sent(seen);
    let hosts = sent
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    (hosts, sent)
}

/// RFC 9112 §3.2.2: for an absolute-form request the URL's authority wins over `Host`. The
/// `Host` the client sent is now left as it is when it already names that authority (no new
/// value per request); a different one must still be replaced, with and without addons.
#[actix_rt::test]
async fn an_absolute_form_authority_replaces_a_different_host_and_keeps_an_equal_one() {
    let (origin, seen) = ordered_origin().await;
    for (label, builder) in [
        ("no addon", Proxy::builder()),
        ("with an addon", Proxy::builder().addon(Observe)),
    ] {
        let proxy = TestProxy::start(builder).await;
        for host in ["elsewhere.example".to_owned(), origin.to_string()] {
            let req = format!(
                "GET http://{origin}/h HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            );
            let out = within("answer", raw_request(proxy.addr(), req.as_bytes())).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{label}, {host}: {out}");
            let (hosts, sent) = last_hosts(&seen);
            assert_eq!(hosts, [origin.to_string()], "{label}, {host}: {sent}");
        }
        proxy.shutdown().await;
    }
}

/// Sets `Host` in `request` for paths under `/rename`, and notes the `Host` it was given.
struct RenameHost(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl waylay_core::hooks::Addon for RenameHost {
    async fn request(&mut self, flow: &mut waylay_core::HttpFlow) {
        let given = flow
            .request
            .headers
            .get("host")
            .unwrap_or("none")
            .to_owned();
        self.0.lock().expect("given").push(given);
        if flow.request.path.starts_with("/rename") {
            flow.request.headers.insert("Host", "renamed.example");
        }
    }
}

/// The absolute-form rule above was applied on the way out, after the hooks: a `Host` an
/// addon set (a mitmproxy script's `flow.request.headers["Host"] = ...`) was replaced by
/// the URL's authority. It applies to what the client sent: addons see the `Host` that will
/// go out, and one they set goes out as set.
#[actix_rt::test]
async fn a_host_an_addon_sets_goes_out_as_set() {
    let (origin, seen) = ordered_origin().await;
    let given = std::sync::Arc::default();
    let proxy =
        TestProxy::start(Proxy::builder().addon(RenameHost(std::sync::Arc::clone(&given)))).await;
    for (path, sent_host) in [
        ("/keep", origin.to_string()),
        ("/rename", "renamed.example".into()),
    ] {
        let req = format!(
            "GET http://{origin}{path} HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n"
        );
        let out = within("answer", raw_request(proxy.addr(), req.as_bytes())).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
        let (hosts, sent) = last_hosts(&seen);
        assert_eq!(hosts, [sent_host], "{path}: {sent}");
    }
    assert_eq!(
        *given.lock().expect("given"),
        [origin.to_string(), origin.to_string()],
        "the addon saw the URL's authority, not the client's other Host"
    );
    proxy.shutdown().await;
}
