//! `proxy_protocol`: behind a TCP load balancer every connection starts with a PROXY
//! protocol header, and the client addons see is the one it names. Hand-written v1 and v2
//! bytes, a real sender (HAProxy v1 and v2 in front of waylay), and a missing or garbled
//! header closed with a log line while the next connection is served.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use waylay_core::flow::Client;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, haproxy, http_origin, read_to_close, within};

/// The client address each hook saw: `client_connect` (where `block_global` decides) and
/// `request`.
#[derive(Clone, Default)]
struct Clients(Arc<Mutex<Vec<(&'static str, SocketAddr)>>>);

impl Addon for Clients {
    async fn client_connect(&mut self, client: &mut Client) {
        if let Ok(mut v) = self.0.lock() {
            v.push(("client_connect", client.peername));
        }
    }
    async fn request(&mut self, flow: &mut HttpFlow) {
        if let Ok(mut v) = self.0.lock() {
            v.push(("request", flow.client.peername));
        }
    }
}

impl Clients {
    fn take(&self) -> Vec<(&'static str, SocketAddr)> {
        std::mem::take(&mut *self.0.lock().expect("clients"))
    }
}

/// The proxy's log lines on this thread (one worker: the proxy runs on it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn proxy() -> (TestProxy, Clients) {
    let clients = Clients::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("proxy_protocol=true")
            .addon(clients.clone()),
    )
    .await;
    (proxy, clients)
}

/// `header` then a GET for `origin` through the regular-mode proxy; the whole answer.
async fn send(proxy: SocketAddr, header: &[u8], origin: SocketAddr) -> String {
    let mut c = TcpStream::connect(proxy).await.expect("connect");
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(
        format!("GET http://{origin}/pp HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    c.write_all(&bytes).await.expect("write");
    String::from_utf8_lossy(&within("answer", read_to_close(&mut c)).await).into_owned()
}

#[actix_rt::test]
async fn hand_written_v1_and_v2_headers_name_the_client() {
    let origin = http_origin().await;
    let (proxy, clients) = proxy().await;
    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 8080\r\n".to_vec();
    // v2, PROXY command, TCP over IPv6, 36 bytes of addresses: 2001:db8::7 port 4242 to
    // ::1 port 8080.
    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    v2.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v2.extend_from_slice(&[0x10, 0x92, 0x1f, 0x90]);
    for (header, client) in [(v1, "203.0.113.9:5555"), (v2, "[2001:db8::7]:4242")] {
        let out = send(proxy.addr(), &header, origin).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let client: SocketAddr = client.parse().expect("addr");
        assert_eq!(
            clients.take(),
            [("client_connect", client), ("request", client)]
        );
    }
    // A balancer's own health check (v1 UNKNOWN): the connection's address applies.
    let out = send(proxy.addr(), b"PROXY UNKNOWN\r\n", origin).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = clients.take();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].1.ip().is_loopback(), "{seen:?}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_missing_or_garbled_header_is_closed_with_a_log_line() {
    let logs = Logs::default();
    let w = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish(),
    );
    let origin = http_origin().await;
    let (proxy, clients) = proxy().await;
    for header in [
        &b""[..],
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c",
    ] {
        let out = send(proxy.addr(), header, origin).await;
        assert!(out.is_empty(), "{header:?}: {out}");
    }
    assert!(clients.take().is_empty(), "no client_connect for them");
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert_eq!(
        text.matches("without a valid PROXY protocol header")
            .count(),
        3,
        "{text}"
    );
    // The next one is served.
    let out = send(
        proxy.addr(),
        b"PROXY TCP4 198.51.100.1 127.0.0.1 1 2\r\n",
        origin,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn haproxy_v1_and_v2_in_front_of_waylay() {
    let origin = http_origin().await;
    let (proxy, clients) = proxy().await;
    for version in [1u8, 2] {
        let Some(lb) = haproxy(proxy.addr(), version).await else {
            return;
        };
        let mut c = TcpStream::connect(lb.addr).await.expect("connect");
        let client = c.local_addr().expect("client addr");
        let req = format!(
            "GET http://{origin}/lb HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        );
        c.write_all(req.as_bytes()).await.expect("write");
        let out =
            String::from_utf8_lossy(&within("answer", read_to_close(&mut c)).await).into_owned();
        assert!(out.starts_with("HTTP/1.1 200"), "v{version}: {out}");
        // The client behind HAProxy, not HAProxy's own connection (the peer's start-up
        // probe through HAProxy may be there too, with its own address).
        let seen = clients.take();
        assert!(
            seen.contains(&("client_connect", client)),
            "v{version}: {seen:?}"
        );
        let requests: Vec<_> = seen.iter().filter(|(h, _)| *h == "request").collect();
        assert_eq!(requests, [&("request", client)], "v{version}");
    }
    proxy.shutdown().await;
}
