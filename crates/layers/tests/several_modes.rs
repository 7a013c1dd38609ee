//! Several modes in one process (`--mode` repeated): a listener each, every one serving, each
//! flow's `client.proxy_mode` naming the mode that accepted it, a startup line per listener;
//! a port in use fails the start with one line naming it.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::{Proxy, ProxyError};
use waylay_testkit::{
    TempDir, TestProxy, http_origin, proxy_get, raw_request, read_to_close, within,
};

#[derive(Clone, Default)]
struct Modes(Arc<Mutex<Vec<(String, String)>>>);

impl Addon for Modes {
    async fn request(&mut self, flow: &mut HttpFlow) {
        if let Ok(mut v) = self.0.lock() {
            v.push((
                flow.client.proxy_mode.clone(),
                flow.request.path.to_string(),
            ));
        }
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

/// A GET through a SOCKS5 proxy, by hand: greeting, CONNECT to `origin`, the request.
async fn socks5_get(
    proxy: std::net::SocketAddr,
    origin: std::net::SocketAddr,
    path: &str,
) -> String {
    let mut c = TcpStream::connect(proxy).await.expect("connect");
    let std::net::SocketAddr::V4(o) = origin else {
        panic!("IPv4 origin");
    };
    let mut hello = b"\x05\x01\x00\x05\x01\x00\x01".to_vec();
    hello.extend_from_slice(&o.ip().octets());
    hello.extend_from_slice(&o.port().to_be_bytes());
    c.write_all(&hello).await.expect("handshake");
    let mut answer = [0u8; 12];
    within("socks answer", c.read_exact(&mut answer))
        .await
        .expect("answer");
    assert_eq!(answer[..2], [5, 0]);
    assert_eq!(answer[2..4], [5, 0], "succeeded: {answer:?}");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.expect("request");
    String::from_utf8_lossy(&within("response", read_to_close(&mut c)).await).into_owned()
}

#[actix_rt::test]
async fn three_modes_in_one_process_each_serving() {
    let logs = Logs::default();
    let w = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish(),
    );
    let origin = http_origin().await;
    let seen = Modes::default();
    let reverse = format!("reverse:http://{origin}");
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("mode=regular")
            .set("mode=socks5")
            .set(format!("mode={reverse}"))
            .addon(seen.clone()),
    )
    .await;
    let running = proxy.running();
    let modes: Vec<_> = running.listeners().iter().map(|l| l.mode.clone()).collect();
    assert_eq!(modes, ["regular", "socks5", reverse.as_str()]);
    let regular = running.addr_of("regular").expect("regular");
    let socks = running.addr_of("socks5").expect("socks5");
    let rev = running.addr_of(&reverse).expect("reverse");
    assert_eq!(running.addr_of("reverse"), Some(rev));
    assert_eq!(running.local_addr(), regular);
    assert!(regular != socks && socks != rev && regular != rev);

    let out = proxy_get(regular, &format!("http://{origin}/by-regular")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = socks5_get(socks, origin, "/by-socks5").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = within(
        "reverse",
        raw_request(
            rev,
            b"GET /by-reverse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    let seen = seen.0.lock().expect("seen").clone();
    assert_eq!(
        seen,
        [
            ("regular".to_owned(), "/by-regular".to_owned()),
            ("socks5".to_owned(), "/by-socks5".to_owned()),
            (reverse.clone(), "/by-reverse".to_owned()),
        ]
    );
    // The listeners are bound: the modes cannot change while running (refused, one line).
    let refused = running
        .manager()
        .set(&["mode=regular"])
        .await
        .expect_err("a mode change is refused");
    assert!(refused.to_string().contains("restart"), "{refused}");
    let out = proxy_get(regular, &format!("http://{origin}/still")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    for line in [
        format!("HTTP(S) proxy listening at http://{regular}"),
        format!("SOCKS v5 proxy listening at {socks}"),
        format!("Reverse proxy to http://{origin} listening at {rev}"),
    ] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_port_in_use_fails_the_start_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = TempDir::new("port-in-use");
    let r = Proxy::builder()
        .set(format!("confdir={}", dir.path().display()))
        .set("workers=1")
        .listen("127.0.0.1:0")
        .set("mode=regular")
        .set(format!("mode=socks5@{port}"))
        .start()
        .await;
    match r {
        Err(e @ ProxyError::Bind { .. }) => {
            let line = e.to_string();
            assert!(
                line.contains(&format!("127.0.0.1:{port}")) && line.contains("socks5"),
                "{line}"
            );
            assert!(!line.contains('\n'), "{line}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(p) => {
            p.shutdown().await;
            panic!("started on a port in use");
        }
    }
    // Nothing was left listening: the regular listener bound first is closed again.
    drop(taken);
}

#[actix_rt::test]
async fn two_modes_on_one_address_are_refused() {
    let dir = TempDir::new("same-address");
    let r = Proxy::builder()
        .set(format!("confdir={}", dir.path().display()))
        .set("mode=regular@18080")
        .set("mode=socks5@18080")
        .start()
        .await;
    match r {
        Err(ProxyError::Options(e)) => assert!(e.to_string().contains("18080"), "{e}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(p) => {
            p.shutdown().await;
            panic!("accepted");
        }
    }
}
