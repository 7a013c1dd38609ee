//! Regression tests, each named after what broke.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, http_origin, raw_request, within};

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
