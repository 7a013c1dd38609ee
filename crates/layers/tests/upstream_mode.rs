//! `--mode upstream:URL` end to end against tinyproxy on loopback: plain HTTP and HTTPS
//! (intercepted inside the CONNECT waylay opens at the upstream proxy), `upstream_auth`
//! against tinyproxy's BasicAuth, and an upstream proxy that refuses (407) or is dead giving
//! the client a 502 naming it, followed by a request that succeeds; and the route chosen per
//! flow by an addon (`via` on the flow's server), in regular mode.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use waylay_core::flow::{Address, Server};
use waylay_core::hooks::ServerConnectionHookData;
use waylay_core::{Addon, HttpFlow, Via};

use waylay_layers::{Proxy, ProxyBuilder};
use waylay_testkit::{
    TempDir, TestProxy, http_origin, https_origin, proxy_get, raw_request, socks5_server,
    tinyproxy, within,
};

const T: Duration = Duration::from_secs(10);

fn upstream(proxy: SocketAddr) -> ProxyBuilder {
    Proxy::builder().set(format!("mode=upstream:http://{proxy}"))
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// curl through `proxy`, trusting `ca` (the proxy's CA); stdout, or the failure.
async fn curl(proxy: SocketAddr, ca: &std::path::Path, url: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "8", "--noproxy", ""])
            .arg("-x")
            .arg(format!("http://{proxy}"))
            .arg("--cacert")
            .arg(ca)
            .arg(url)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .output(),
    )
    .await
    .expect("curl in time")
    .expect("run curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[actix_rt::test]
async fn plain_and_intercepted_https_go_through_tinyproxy() {
    let Some(tiny) = tinyproxy(None).await else {
        return;
    };
    let dir = TempDir::new("upstream-mode");
    let origin = http_origin().await;
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let proxy = TestProxy::start(upstream(tiny.addr).set(format!(
        "ssl_verify_upstream_trusted_ca={}",
        origin_ca.display()
    )))
    .await;
    let out = within(
        "plain GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/plain")),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200")
            && out.ends_with(&format!("origin GET /plain host={origin}")),
        "{out}"
    );
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, proxy.running().ca_cert_pem()).expect("write CA");
    let port = tls_origin.port();
    let out = curl(
        proxy.addr(),
        &ca,
        &format!("https://localhost:{port}/secure"),
    )
    .await
    .expect("HTTPS through the upstream");
    // Answered by the origin through an intercepted tunnel (curl trusted waylay's CA).
    assert_eq!(out, format!("origin GET /secure host=localhost:{port}"));
    let log = tiny.log();
    // Plain HTTP went absolute-form to tinyproxy (no CONNECT), HTTPS by a CONNECT.
    assert!(
        log.contains(&format!("GET http://{origin}/plain")),
        "tinyproxy saw no absolute-form request: {log}"
    );
    assert!(!log.contains(&format!("CONNECT {origin}")), "{log}");
    assert!(
        log.contains(&format!("CONNECT localhost:{port}")),
        "tinyproxy saw no CONNECT for the HTTPS origin: {log}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn upstream_auth_is_sent_and_a_refusal_names_the_proxy() {
    let Some(tiny) = tinyproxy(Some(("alice", "s3cret"))).await else {
        return;
    };
    let origin = http_origin().await;
    // Without credentials: tinyproxy answers 407, the client gets a 502 naming it.
    let proxy = TestProxy::start(upstream(tiny.addr)).await;
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/a")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(
        out.contains(&tiny.addr.to_string()) && out.contains("407"),
        "502 should name the proxy and its answer: {out}"
    );
    // The client's own Proxy-Authorization (here the right one) is never forwarded.
    let req = format!(
        "GET http://{origin}/own HTTP/1.1\r\nHost: {origin}\r\n\
         Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\nConnection: close\r\n\r\n"
    );
    let out = within("GET", raw_request(proxy.addr(), req.as_bytes())).await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    // Given `upstream_auth` while running: the same proxy goes through.
    proxy
        .running()
        .manager()
        .set(&["upstream_auth=alice:s3cret"])
        .await
        .expect("set");
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/same")),
    )
    .await;
    assert!(
        out.ends_with(&format!("origin GET /same host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
    // With `upstream_auth` from the start: through.
    let proxy = TestProxy::start(upstream(tiny.addr).set("upstream_auth=alice:s3cret")).await;
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/b")),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with(&format!("origin GET /b host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_dead_upstream_gives_a_502_naming_it_then_requests_still_work() {
    let Some(tiny) = tinyproxy(None).await else {
        return;
    };
    let origin = http_origin().await;
    let dead = format!("127.0.0.1:{}", dead_port());
    let proxy =
        TestProxy::start(Proxy::builder().set(format!("mode=upstream:http://{dead}"))).await;
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/x")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.contains(&dead), "502 should name the dead proxy: {out}");
    // The next request on the same proxy still gets its 502 (not a hang), and a proxy whose
    // upstream is alive serves.
    let out = within(
        "GET again",
        proxy_get(proxy.addr(), &format!("http://{origin}/y")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    // The upstream comes up on that address (a forwarder to tinyproxy): the same proxy
    // serves again.
    let Ok(listener) = tokio::net::TcpListener::bind(&dead).await else {
        return proxy.shutdown().await; // the port was taken meanwhile
    };
    let tiny_addr = tiny.addr;
    actix_rt::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            actix_rt::spawn(async move {
                if let Ok(mut back) = TcpStream::connect(tiny_addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut back).await;
                }
            });
        }
    });
    let out = within(
        "GET revived",
        proxy_get(proxy.addr(), &format!("http://{origin}/up")),
    )
    .await;
    assert!(
        out.ends_with(&format!("origin GET /up host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
    let proxy = TestProxy::start(upstream(tiny.addr)).await;
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/z")),
    )
    .await;
    assert!(
        out.ends_with(&format!("origin GET /z host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn modes_not_wired_yet_are_refused_with_one_line() {
    for spec in [
        "reverse:dns://127.0.0.1:1",
        "reverse:udp://127.0.0.1:1",
        "regular@8081",
        "socks5",
        "transparent",
        "bogus",
    ] {
        let dir = TempDir::new("modes");
        let r = Proxy::builder()
            .set(format!("confdir={}", dir.path().display()))
            .set("workers=1")
            .listen("127.0.0.1:0")
            .set(format!("mode={spec}"))
            .start()
            .await;
        match r {
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("mode") && !text.contains('\n'),
                    "{spec}: {text}"
                );
            }
            Ok(p) => {
                p.shutdown().await;
                panic!("{spec}: accepted");
            }
        }
    }
}

/// Sends each flow for a listed port through that port's route (`via` on the flow's
/// server, set in `request_headers`).
struct Routes(Vec<(u16, Via)>);

impl Addon for Routes {
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if let Some((_, via)) = self.0.iter().find(|(p, _)| *p == flow.request.port) {
            let mut server =
                Server::new(Address::new(flow.request.host.clone(), flow.request.port));
            server.via = Some(via.clone());
            flow.server = Some(Arc::new(server));
        }
    }
}

#[actix_rt::test]
async fn an_addon_routes_each_flow_through_its_own_upstream() {
    let (Some(tiny_a), Some(tiny_b)) = (tinyproxy(None).await, tinyproxy(None).await) else {
        return;
    };
    let (a, b, c) = (
        http_origin().await,
        http_origin().await,
        http_origin().await,
    );
    let via = |p: SocketAddr| Via::parse(&format!("http://{p}")).expect("via");
    let routes = Routes(vec![
        (a.port(), via(tiny_a.addr)),
        (b.port(), via(tiny_b.addr)),
    ]);
    let proxy = TestProxy::start(Proxy::builder().addon(routes)).await;
    // Twice each, on one client connection per request: pooled connections never cross routes.
    for round in 0..2 {
        for origin in [a, b, c] {
            let url = format!("http://{origin}/r{round}");
            let out = within("GET", proxy_get(proxy.addr(), &url)).await;
            assert!(
                out.ends_with(&format!("origin GET /r{round} host={origin}")),
                "{out}"
            );
        }
    }
    // The same, on one kept-alive client connection: its pooled server connections are keyed
    // by route, so a request never rides a connection opened for another route.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    for (i, origin) in [a, c, b, a, c, b].into_iter().enumerate() {
        let req = format!("GET http://{origin}/k{i} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let want = format!("origin GET /k{i} host={origin}");
        let mut got = Vec::new();
        within("keep-alive response", async {
            while !got.ends_with(want.as_bytes()) {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
    }
    drop(s);
    // Each proxy saw its own origin only; the third went direct.
    let (log_a, log_b) = (tiny_a.log(), tiny_b.log());
    let saw = |log: &str, o: SocketAddr| log.contains(&o.to_string());
    assert!(
        saw(&log_a, a) && !saw(&log_a, b) && !saw(&log_a, c),
        "{log_a}"
    );
    assert!(
        saw(&log_b, b) && !saw(&log_b, a) && !saw(&log_b, c),
        "{log_b}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_socks5_upstream_carries_plain_and_intercepted_https() {
    let socks = socks5_server(Some(("bob", "pw"))).await;
    let dir = TempDir::new("socks5-upstream");
    let origin = http_origin().await;
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=upstream:socks5://bob:pw@{}", socks.addr))
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            )),
    )
    .await;
    let out = within(
        "plain GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/s")),
    )
    .await;
    assert!(
        out.ends_with(&format!("origin GET /s host={origin}")),
        "{out}"
    );
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, proxy.running().ca_cert_pem()).expect("write CA");
    let port = tls_origin.port();
    let out = curl(proxy.addr(), &ca, &format!("https://localhost:{port}/t"))
        .await
        .expect("HTTPS through the SOCKS5 upstream");
    assert_eq!(out, format!("origin GET /t host=localhost:{port}"));
    let targets = socks.targets();
    assert!(targets.contains(&origin.to_string()), "{targets:?}");
    assert!(
        targets.contains(&format!("localhost:{port}")),
        "{targets:?}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn in_upstream_mode_an_addon_can_send_a_flow_direct() {
    let Some(tiny) = tinyproxy(None).await else {
        return;
    };
    let (a, c) = (http_origin().await, http_origin().await);
    let routes = Routes(vec![(c.port(), Via::Direct)]);
    let proxy = TestProxy::start(upstream(tiny.addr).addon(routes)).await;
    for origin in [a, c] {
        let out = within(
            "GET",
            proxy_get(proxy.addr(), &format!("http://{origin}/d")),
        )
        .await;
        assert!(
            out.ends_with(&format!("origin GET /d host={origin}")),
            "{out}"
        );
    }
    let log = tiny.log();
    assert!(
        log.contains(&a.to_string()) && !log.contains(&c.to_string()),
        "{log}"
    );
    proxy.shutdown().await;
}

/// Adds a header to every CONNECT sent upstream.
struct Tag;

impl Addon for Tag {
    async fn http_connect_upstream(&mut self, flow: &mut HttpFlow) {
        flow.request.headers.insert("X-Tag", "from-addon");
    }
}

/// A CONNECT-only proxy recording each CONNECT head it gets, then relaying.
async fn recording_proxy() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    actix::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            actix::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let target = text.split(' ').nth(1).unwrap_or("").to_owned();
                if let Ok(mut h) = seen.lock() {
                    h.push(text);
                }
                let Ok(mut up) = TcpStream::connect(target).await else {
                    return;
                };
                if s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                }
            });
        }
    });
    (addr, heads)
}

#[actix_rt::test]
async fn http_connect_upstream_changes_the_connect_sent_upstream() {
    let (upstream_addr, heads) = recording_proxy().await;
    let dir = TempDir::new("connect-upstream");
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let proxy = TestProxy::start(
        upstream(upstream_addr)
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .set("upstream_auth=u:p")
            .addon(Tag),
    )
    .await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, proxy.running().ca_cert_pem()).expect("write CA");
    let port = tls_origin.port();
    let out = curl(proxy.addr(), &ca, &format!("https://localhost:{port}/c"))
        .await
        .expect("HTTPS through the recording upstream");
    assert_eq!(out, format!("origin GET /c host=localhost:{port}"));
    let heads = heads.lock().expect("heads").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with(&format!("connect localhost:{port} ")),
        "{head}"
    );
    assert!(head.contains("x-tag: from-addon"), "{head}");
    // upstream_auth=u:p, Basic dTpw.
    assert!(head.contains("proxy-authorization: basic dtpw"), "{head}");
    proxy.shutdown().await;
}

/// Routes every server connection through one proxy, set in `server_connect`.
struct ViaInServerConnect(Via);

impl Addon for ViaInServerConnect {
    async fn server_connect(&mut self, data: &mut ServerConnectionHookData) {
        data.server.via = Some(self.0.clone());
    }
}

#[actix_rt::test]
async fn a_via_set_in_server_connect_routes_an_intercepted_tunnel() {
    let Some(tiny) = tinyproxy(None).await else {
        return;
    };
    let dir = TempDir::new("via-server-connect");
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let via = Via::parse(&format!("http://{}", tiny.addr)).expect("via");
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .addon(ViaInServerConnect(via)),
    )
    .await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, proxy.running().ca_cert_pem()).expect("write CA");
    let port = tls_origin.port();
    let out = curl(proxy.addr(), &ca, &format!("https://localhost:{port}/v"))
        .await
        .expect("HTTPS routed in server_connect");
    assert_eq!(out, format!("origin GET /v host=localhost:{port}"));
    let log = tiny.log();
    assert!(log.contains(&format!("CONNECT localhost:{port}")), "{log}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_https_upstream_proxy_in_mode_form_carries_plain_and_intercepted_https() {
    let Some(tiny) = tinyproxy(None).await else {
        return;
    };
    let dir = TempDir::new("upstream-https");
    let (front, front_ca) = waylay_testkit::tls_front(tiny.addr, &dir).await;
    let origin = http_origin().await;
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    // One trust file: the proxy's front and the HTTPS origin.
    let trusted = dir.path().join("trusted.pem");
    let pems = [&front_ca, &origin_ca]
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read CA"))
        .collect::<String>();
    std::fs::write(&trusted, pems).expect("write trusted");
    let mode = format!("mode=upstream:https://localhost:{}", front.port());
    // First without trusting the front: a 502 naming the proxy and the TLS failure.
    let proxy = TestProxy::start(Proxy::builder().set(mode)).await;
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/x")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(
        out.contains(&format!(
            "TLS handshake with upstream proxy localhost:{}",
            front.port()
        )),
        "{out}"
    );
    // Trusted now: plain HTTP (absolute-form over TLS to the proxy) and intercepted HTTPS
    // (a CONNECT over TLS to the proxy).
    proxy
        .running()
        .manager()
        .set(&[format!(
            "ssl_verify_upstream_trusted_ca={}",
            trusted.display()
        )])
        .await
        .expect("set");
    let out = within(
        "GET",
        proxy_get(proxy.addr(), &format!("http://{origin}/plain")),
    )
    .await;
    assert!(
        out.ends_with(&format!("origin GET /plain host={origin}")),
        "{out}"
    );
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
    let port = tls_origin.port();
    let out = curl(proxy.addr(), &ca, &format!("https://localhost:{port}/s")).await;
    assert_eq!(out, Ok(format!("origin GET /s host=localhost:{port}")));
    let log = tiny.log();
    assert!(log.contains(&format!("CONNECT localhost:{port}")), "{log}");
    assert!(log.contains(&format!("http://{origin}/plain")), "{log}");
    proxy.shutdown().await;
}
