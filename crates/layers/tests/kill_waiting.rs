//! Killing a flow while its request waits for the server's answer (the web UI's kill, or an
//! addon's kept [`KillSwitch`]): regression tests, each named after what broke.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use waylay_core::flow::{KILLED_MESSAGE, KillSwitch};
use waylay_core::{Addon, HookKind, HookSet, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, http_origin, proxy_get, within};

/// Takes the kill switch at `request` (as the web UI does), counts response heads and
/// records every `error`.
#[derive(Debug, Clone, Default)]
struct KeepSwitch {
    switch: Arc<Mutex<Option<KillSwitch>>>,
    heads: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Addon for KeepSwitch {
    fn hooks(&self) -> HookSet {
        // `response` handled: a response body is read whole before it (not streamed).
        HookSet::of(&[
            HookKind::Request,
            HookKind::ResponseHeaders,
            HookKind::Response,
            HookKind::Error,
        ])
    }
    async fn request(&mut self, flow: &mut HttpFlow) {
        *self.switch.lock().expect("lock") = Some(flow.kill_switch());
    }
    async fn response_headers(&mut self, _flow: &mut HttpFlow) {
        self.heads.fetch_add(1, Ordering::SeqCst);
    }
    async fn response(&mut self, _flow: &mut HttpFlow) {}
    async fn error(&mut self, flow: &mut HttpFlow) {
        let msg = flow
            .error
            .as_ref()
            .map(|e| e.msg.clone())
            .unwrap_or_default();
        self.errors.lock().expect("lock").push(msg);
    }
}

/// How the held request's connection ended at the origin.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The proxy closed it.
    Closed,
    /// Still open after 10 s of holding the answer back.
    StillOpen,
}

/// An origin that reads one request head, writes `answer` (a part of its response, maybe
/// nothing) and never finishes it: says when the request is in, then whether the proxy
/// closed the connection within 10 s.
async fn holding_origin(
    answer: &'static [u8],
) -> (
    std::net::SocketAddr,
    oneshot::Receiver<()>,
    oneshot::Receiver<Seen>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (arrived_tx, arrived) = oneshot::channel();
    let (seen_tx, seen) = oneshot::channel();
    actix::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        if s.write_all(answer).await.is_err() {
            return;
        }
        let _ = arrived_tx.send(());
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = seen_tx.send(if closed.is_ok() {
            Seen::Closed
        } else {
            Seen::StillOpen
        });
    });
    (addr, arrived, seen)
}

/// The kill dropped the client at once, but the server connection stayed open until the
/// server answered: the exchange in flight kept it (the response body being read for the
/// `response` hook was not watched). Now the kill closes it at once, the client gets no
/// answer, `error` fires once with mitmproxy's text, and the proxy serves the next request.
#[actix_rt::test]
async fn a_kill_while_waiting_for_the_server_closes_the_server_connection_at_once() {
    // Killed before the server's head, and once the head is in (`response_headers` ran)
    // while the body is read for `response`.
    for (what, answer, heads) in [
        ("no head yet", &b""[..], 0),
        (
            "half the body",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"[..],
            1,
        ),
    ] {
        kill_while_held(what, answer, heads).await;
    }
}

async fn kill_while_held(what: &str, answer: &'static [u8], heads: usize) {
    let keep = KeepSwitch::default();
    let proxy = TestProxy::start(Proxy::builder().addon(keep.clone())).await;
    let (origin, arrived, seen) = holding_origin(answer).await;
    let p = proxy.addr();
    let client = actix::spawn(async move {
        let mut s = TcpStream::connect(p).await.expect("connect");
        let req = format!("GET http://{origin}/held HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        (closed.is_ok(), String::from_utf8_lossy(&out).into_owned())
    });
    within("the request reaches the origin", arrived)
        .await
        .expect("the origin got the request");
    within("the response head", async {
        while keep.heads.load(Ordering::SeqCst) < heads {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let switch = keep
        .switch
        .lock()
        .expect("lock")
        .clone()
        .expect("a switch taken in request");
    switch.kill();
    let (closed, answer) = within("the killed client", client)
        .await
        .expect("client task");
    assert!(closed, "{what}: the client's connection was left open");
    assert_eq!(answer, "", "{what}: the client got an answer");
    let seen = within("the origin's connection", seen)
        .await
        .expect("the origin reports");
    assert_eq!(
        seen,
        Seen::Closed,
        "{what}: the server connection was left open"
    );
    within("error", async {
        while keep.errors.lock().expect("lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The next request goes through (and `error` fired once for the killed flow).
    let origin = http_origin().await;
    let out = within(
        "after the kill",
        proxy_get(p, &format!("http://{origin}/after")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
    assert_eq!(
        *keep.errors.lock().expect("lock"),
        [KILLED_MESSAGE],
        "{what}"
    );
    proxy.shutdown().await;
}
