//! A streamed response with a `Content-Length` ends with `response`, never `error`.
//!
//! hyper drops a body as soon as it has written the declared length, without polling it to
//! its end: the proxy must count such a body as passed on whole.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, proxy_get, within};

const BODY: usize = 256 * 1024;

/// Records which of `response` and `error` fired, with the error's message.
#[derive(Debug, Clone, Default)]
struct Ends(Arc<Mutex<Vec<String>>>);

impl Addon for Ends {
    async fn response(&mut self, flow: &mut HttpFlow) {
        let streamed = flow.response.as_ref().is_some_and(|r| r.stream);
        self.0
            .lock()
            .expect("log")
            .push(format!("response stream={streamed}"));
    }
    async fn error(&mut self, flow: &mut HttpFlow) {
        let msg = flow
            .error
            .as_ref()
            .map(|e| e.msg.clone())
            .unwrap_or_default();
        self.0.lock().expect("log").push(format!("error {msg}"));
    }
}

/// Only `error`: the response is streamed as it comes (nothing wants it buffered).
#[derive(Debug, Clone, Default)]
struct ErrorsOnly(Arc<Mutex<Vec<String>>>);

impl Addon for ErrorsOnly {
    async fn error(&mut self, flow: &mut HttpFlow) {
        let msg = flow
            .error
            .as_ref()
            .map(|e| e.msg.clone())
            .unwrap_or_default();
        self.0.lock().expect("log").push(format!("error {msg}"));
    }
}

/// An origin answering every request with `BODY` bytes and a `Content-Length`, on
/// keep-alive connections; returns its address.
async fn length_origin() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                for _ in 0..64 {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    let hdr = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
                    if s.write_all(hdr.as_bytes()).await.is_err()
                        || s.write_all(&vec![b'x'; BODY]).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Waits until `log` holds `n` entries.
async fn wait_for(log: &Arc<Mutex<Vec<String>>>, n: usize) {
    within("the flow's last hook", async {
        while log.lock().expect("log").len() < n {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[actix_rt::test]
async fn a_body_streamed_past_stream_large_bodies_ends_with_response() {
    let origin = length_origin().await;
    let ends = Ends::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("stream_large_bodies=64k")
            .addon(ends.clone()),
    )
    .await;
    for i in 0..2 {
        let out = within(
            "get",
            proxy_get(proxy.addr(), &format!("http://{origin}/{i}")),
        )
        .await;
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "{}",
            &out[..out.len().min(200)]
        );
        assert!(out.len() > BODY, "the whole body reached the client");
    }
    wait_for(&ends.0, 2).await;
    // Settle: a late `error` would show up here.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        *ends.0.lock().expect("log"),
        vec!["response stream=true"; 2],
        "each streamed flow ends with response, not error"
    );
}

#[actix_rt::test]
async fn a_streamed_body_with_only_an_error_addon_is_no_error() {
    let origin = length_origin().await;
    let errors = ErrorsOnly::default();
    // No `response` hook: every response streams as it comes, and nothing marks the flow's
    // end but the error this test expects never to see.
    let proxy = TestProxy::start(Proxy::builder().addon(errors.clone())).await;
    for i in 0..2 {
        let out = within(
            "get",
            proxy_get(proxy.addr(), &format!("http://{origin}/{i}")),
        )
        .await;
        assert!(
            out.starts_with("HTTP/1.1 200"),
            "{}",
            &out[..out.len().min(200)]
        );
    }
    // A false error is fired when the body is dropped, right after its last bytes: give it
    // time to arrive.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        errors.0.lock().expect("log").is_empty(),
        "no error for a body passed on whole: {:?}",
        errors.0.lock().expect("log")
    );
}
