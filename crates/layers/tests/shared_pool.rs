//! Server connections shared by a worker's client connections (`share_server_connections`):
//! while no addon observes server connections, an idle one serves the next client (an
//! intercepted TLS client's eager dial included), and they close once their clients are gone;
//! while an addon handles `server_connect` (or another server-connection hook), and by
//! default, every client connection keeps its own, as in mitmproxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use waylay_core::Addon;
use waylay_core::hooks::ServerConnectionHookData;
use waylay_layers::Proxy;
use waylay_testkit::{TempDir, TestProxy, connect_tls, test_tls_acceptor, within};

/// Clients opened one after the other, each kept open.
const CLIENTS: usize = 4;

/// TLS connections an origin accepted and saw end.
#[derive(Default)]
struct Counts {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// An HTTPS origin (HTTP/1.1) answering `ok`, counting its connections.
async fn counting_origin(dir: &TempDir) -> (std::net::SocketAddr, Arc<Counts>) {
    let (acceptor, _ca) = test_tls_acceptor(dir, "pool-origin-ca.pem", &[b"http/1.1"]);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.opened.fetch_add(1, Ordering::SeqCst);
            let (acceptor, c) = (acceptor.clone(), c.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    let svc = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
                c.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

/// Reads one response whose body is `ok` (Content-Length 2).
async fn read_ok<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut got = Vec::new();
    while !(got.ends_with(b"\r\n\r\nok")) {
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Opens `CLIENTS` intercepted HTTPS connections one after the other through `proxy`, each
/// with one request answered, and keeps them open.
async fn idle_clients(
    proxy: &TestProxy,
    origin: std::net::SocketAddr,
) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = within(
            "tunnel and TLS",
            connect_tls(
                proxy.addr(),
                &origin.to_string(),
                "localhost",
                &proxy.ca_pem,
                &[b"http/1.1"],
            ),
        )
        .await
        .expect("TLS through the proxy");
        s.write_all(b"GET /p HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let out = within("response", read_ok(&mut s)).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        // The response's end returns the server connection to the pool just after the
        // client has it; the next client comes a moment later, as a real one would.
        tokio::time::sleep(Duration::from_millis(50)).await;
        held.push(s);
    }
    held
}

/// Waits (bounded) until the origin saw every connection it accepted end.
async fn all_closed(counts: &Counts) {
    within("the server connections close", async {
        while counts.closed.load(Ordering::SeqCst) < counts.opened.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[actix_rt::test]
async fn idle_server_connections_serve_other_clients_when_no_addon_observes_them() {
    let dir = TempDir::new("shared-pool");
    let (origin, counts) = counting_origin(&dir).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("ssl_insecure=true")
            .set("share_server_connections=true"),
    )
    .await;
    let held = idle_clients(&proxy, origin).await;
    // Every client after the first reused the idle connection (its eager dial included).
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    // A second request on the first client still works (on the shared connection).
    let mut held = held;
    let first = held.first_mut().expect("a client");
    first
        .write_all(b"GET /again HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let out = within("second response", read_ok(first)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    // Once no client is left, the shared connection closes.
    drop(held);
    all_closed(&counts).await;
    proxy.shutdown().await;
}

/// Counts `server_connect` events.
#[derive(Clone, Default)]
struct ServerConnects(Arc<AtomicUsize>);

impl Addon for ServerConnects {
    async fn server_connect(&mut self, _data: &mut ServerConnectionHookData) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[actix_rt::test]
async fn each_client_keeps_its_own_server_connections_while_an_addon_observes_them() {
    let dir = TempDir::new("own-pool");
    let (origin, counts) = counting_origin(&dir).await;
    let seen = ServerConnects::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("ssl_insecure=true")
            .set("share_server_connections=true")
            .addon(seen.clone()),
    )
    .await;
    let held = idle_clients(&proxy, origin).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), CLIENTS);
    assert_eq!(seen.0.load(Ordering::SeqCst), CLIENTS);
    // A client's server connection closes with it, the others stay.
    let mut held = held;
    drop(held.pop());
    within("the last client's server connection closes", async {
        while counts.closed.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(counts.closed.load(Ordering::SeqCst), 1);
    drop(held);
    all_closed(&counts).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn server_connections_are_not_shared_by_default() {
    let dir = TempDir::new("default-pool");
    let (origin, counts) = counting_origin(&dir).await;
    let proxy = TestProxy::start(Proxy::builder().set("ssl_insecure=true")).await;
    let held = idle_clients(&proxy, origin).await;
    assert_eq!(counts.opened.load(Ordering::SeqCst), CLIENTS);
    drop(held);
    all_closed(&counts).await;
    proxy.shutdown().await;
}

/// Clients opened `PARALLEL` at a time in a burst (as the idle bench does), each with one
/// request answered and kept open, then all sending a second one at once.
const BURST: usize = 200;
const PARALLEL: usize = 25;

/// One request on `s` and its response, or what did not come within 10 s.
async fn one_request<S: AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
) -> Result<(), String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    // tokio-rustls may keep part of a write in its TLS buffer when the socket is not
    // writable at once, and once this task has spent its cooperative budget (~128 IO
    // operations per poll, soon reached by hundreds of clients joined in one task) a socket
    // looks unwritable: unflushed, such a request never leaves (without this flush the
    // second round below loses all but ~127 requests, the idle bench's "stall").
    s.flush().await.map_err(|e| format!("flush: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), read_ok(s)).await {
        Ok(out) if out.starts_with("HTTP/1.1 200") => Ok(()),
        Ok(out) => Err(format!("not a 200: {out}")),
        Err(_) => Err(format!("no response to {path} within 10 s")),
    }
}

#[actix_rt::test]
async fn every_client_of_a_burst_gets_its_responses_on_shared_connections() {
    let dir = TempDir::new("burst-pool");
    let (origin, counts) = counting_origin(&dir).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("ssl_insecure=true")
            .set("share_server_connections=true"),
    )
    .await;
    let (addr, ca) = (proxy.addr(), proxy.ca_pem.clone());
    let mut held = Vec::new();
    let mut failures = Vec::new();
    while held.len() + failures.len() < BURST {
        let opened = futures::future::join_all((0..PARALLEL).map(|i| {
            let ca = ca.clone();
            async move {
                let mut s = tokio::time::timeout(
                    Duration::from_secs(10),
                    connect_tls(addr, &origin.to_string(), "localhost", &ca, &[b"http/1.1"]),
                )
                .await
                .map_err(|_| "tunnel and TLS: timed out".to_owned())?
                .map_err(|e| format!("tunnel and TLS: {e}"))?;
                one_request(&mut s, &format!("/first/{i}")).await?;
                Ok::<_, String>(s)
            }
        }))
        .await;
        for r in opened {
            match r {
                Ok(s) => held.push(s),
                Err(e) => failures.push(format!("first request: {e}")),
            }
        }
    }
    // Shared: far fewer server connections than clients.
    let after_first = counts.opened.load(Ordering::SeqCst);
    assert!(
        after_first < BURST / 2,
        "{after_first} server connections for {BURST} clients"
    );
    // Every client again, all at once (more server connections are dialed for them).
    let again = futures::future::join_all(
        held.iter_mut()
            .enumerate()
            .map(|(i, s)| async move { one_request(s, &format!("/again/{i}")).await }),
    )
    .await;
    failures.extend(
        again
            .into_iter()
            .filter_map(|r| r.err().map(|e| format!("second request: {e}"))),
    );
    let opened = counts.opened.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {BURST} clients failed ({opened} server connections): {failures:?}",
        failures.len()
    );
    drop(held);
    all_closed(&counts).await;
    proxy.shutdown().await;
}
