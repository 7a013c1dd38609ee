//! Server-sent events through the real proxy while an addon observes `response`: each event
//! reaches the client as the origin sends it (mitmproxy buffers it, with a warning).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, proxy_get, within};

/// Records, per `response` hook, the path, whether the response was streamed and the body
/// the flow kept.
#[derive(Debug, Clone, Default)]
struct Observe(Arc<Mutex<Vec<Seen>>>);

/// The path, `response.stream`, and the length of the body the flow kept.
type Seen = (String, bool, Option<usize>);

/// Unsets `stream` at `response_headers`: the addon wants the whole body at `response`.
#[derive(Debug, Default)]
struct Buffer;

impl Addon for Buffer {
    async fn response_headers(&mut self, flow: &mut HttpFlow) {
        if let Some(r) = flow.response.as_mut() {
            r.stream = false;
        }
    }
}

impl Addon for Observe {
    async fn response(&mut self, flow: &mut HttpFlow) {
        if let Some(r) = flow.response.as_ref() {
            self.0.lock().expect("log").push((
                flow.request.path.to_string(),
                r.stream,
                r.raw_content.as_ref().map(|b| b.len()),
            ));
        }
    }
}

/// Reads the request head (up to the blank line).
async fn read_head(s: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if s.read(&mut byte).await.expect("read") == 0 {
            return;
        }
        head.push(byte[0]);
    }
}

/// Reads from `s` into `got` until `needle` is in it.
async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(got).contains(needle) {
        let n = s.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[actix_rt::test]
async fn events_reach_the_client_before_the_origin_finishes() {
    let origin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin_addr = origin.local_addr().expect("addr");
    let (release_tx, release_rx) = oneshot::channel::<()>();
    // The origin sends one event, waits for the test to say the client has it, then sends
    // the last one and ends the body.
    let server = tokio::spawn(async move {
        let (mut s, _) = origin.accept().await.expect("accept");
        read_head(&mut s).await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
              Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n\
              f\r\ndata: first!!\n\n\r\n",
        )
        .await
        .expect("write");
        s.flush().await.expect("flush");
        release_rx.await.expect("released");
        s.write_all(b"e\r\ndata: last!!\n\n\r\n0\r\n\r\n")
            .await
            .expect("write");
        s.flush().await.expect("flush");
        // Keep the connection until the proxy is done with it.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });

    let seen = Observe::default();
    let proxy = TestProxy::start(Proxy::builder().addon(seen.clone())).await;
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    c.write_all(
        format!(
            "GET http://{origin_addr}/events HTTP/1.1\r\nHost: {origin_addr}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    // If the proxy held the body for `response`, this would never come: the origin sends the
    // rest only after it.
    within(
        "the first event",
        read_until(&mut c, &mut got, "data: first!!"),
    )
    .await;
    assert!(!String::from_utf8_lossy(&got).contains("data: last!!"));
    release_tx.send(()).expect("origin waiting");
    within(
        "the last event",
        read_until(&mut c, &mut got, "data: last!!"),
    )
    .await;
    let out = String::from_utf8_lossy(&got).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{out}"
    );
    within("origin done", server).await.expect("origin");

    // `response` fired once the stream ended, on a flow marked streamed (no body kept)...
    within("the response hook", async {
        while seen.0.lock().expect("log").is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        seen.0.lock().expect("log")[0],
        ("/events".to_owned(), true, None)
    );
    // ...and an ordinary response after it is still buffered for the addon.
    let plain = waylay_testkit::http_origin().await;
    let out = proxy_get(proxy.addr(), &format!("http://{plain}/plain")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    within("the second response hook", async {
        while seen.0.lock().expect("log").len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let second = seen.0.lock().expect("log")[1].clone();
    assert_eq!((second.0.as_str(), second.1), ("/plain", false));
    assert!(second.2.is_some_and(|n| n > 0), "{second:?}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_addon_may_ask_for_the_events_buffered() {
    let origin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin_addr = origin.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = origin.accept().await.expect("accept");
        read_head(&mut s).await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 13\r\n\r\n\
              data: whole\n\n",
        )
        .await
        .expect("write");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let seen = Observe::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Buffer).addon(seen.clone())).await;
    let out = proxy_get(proxy.addr(), &format!("http://{origin_addr}/events")).await;
    assert!(out.ends_with("data: whole\n\n"), "{out}");
    within("the response hook", async {
        while seen.0.lock().expect("log").is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        seen.0.lock().expect("log")[0],
        ("/events".to_owned(), false, Some(13))
    );
    proxy.shutdown().await;
    server.abort();
}
