//! Dialing through routes against real peers on loopback: tinyproxy (with and without Basic
//! auth, behind a TLS front for an HTTPS proxy), dante's danted (SOCKS5), the testkit's
//! SOCKS5 server (username/password), and an in-process origin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use waylay_core::flow::{Address, Server};
use waylay_core::{Addon, Credentials, HttpFlow, Via};
use waylay_layers::socks5::{Reply, Socks5Error};
use waylay_layers::tls::UpstreamTls;
use waylay_layers::via::{ViaError, ViaOptions, ViaStream, connect_request, dial, dial_server};
use waylay_testkit::{
    AddonHarness, TempDir, danted, http_origin, read_to_close, scripted_origin, socks5_server,
    tclient, tinyproxy, tls_front, within,
};

fn opts(extra_ca: Option<PathBuf>, upstream_auth: Option<&str>) -> ViaOptions {
    let upstream = UpstreamTls {
        extra_ca_pem: extra_ca,
        ..UpstreamTls::default()
    };
    let auth = upstream_auth.map(|s| Credentials::parse(s).expect("credentials"));
    ViaOptions::new(Duration::from_secs(5), &upstream, auth).expect("via options")
}

fn via(s: &str) -> Via {
    Via::parse(s).expect("via URL")
}

fn target(a: SocketAddr) -> Address {
    Address::new(a.ip().to_string(), a.port())
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One GET through an established tunnel; returns the response.
async fn get(mut s: ViaStream, host: &str) -> String {
    let req = format!("GET /via HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write request");
    String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned()
}

async fn dial_ok(v: &Via, origin: SocketAddr, o: &ViaOptions) {
    let s = within("dial", dial(v, &target(origin), None, o))
        .await
        .unwrap_or_else(|e| panic!("{v}: {e}"));
    let resp = within("get", get(s, &origin.to_string())).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{v}: {resp}");
}

async fn dial_err(v: &Via, to: &Address, o: &ViaOptions) -> ViaError {
    match within("dial", dial(v, to, None, o)).await {
        Ok(_) => panic!("{v} to {to}: expected an error"),
        Err(e) => e,
    }
}

#[actix_rt::test]
async fn direct_route_and_its_failure() {
    let origin = http_origin().await;
    let o = opts(None, None);
    dial_ok(&Via::Direct, origin, &o).await;
    let dead = Address::new("127.0.0.1", dead_port());
    let e = dial_err(&Via::Direct, &dead, &o).await;
    assert!(matches!(e, ViaError::Server { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot connect to {dead}")),
        "{e}"
    );
    dial_ok(&Via::Direct, origin, &o).await;
}

#[actix_rt::test]
async fn http_proxy_tunnels_through_tinyproxy() {
    let Some(proxy) = tinyproxy(None).await else {
        return;
    };
    let origin = http_origin().await;
    let v = via(&format!("http://{}", proxy.addr));
    dial_ok(&v, origin, &opts(None, None)).await;
    assert!(
        proxy.log().contains(&format!("CONNECT {origin}")),
        "{}",
        proxy.log()
    );
}

#[actix_rt::test]
async fn http_proxy_basic_auth_407_then_credentials() {
    let Some(proxy) = tinyproxy(Some(("user", "s3cret"))).await else {
        return;
    };
    let origin = http_origin().await;
    let bare = via(&format!("http://{}", proxy.addr));
    let e = dial_err(&bare, &target(origin), &opts(None, None)).await;
    assert!(matches!(e, ViaError::Status { status: 407, .. }), "{e:?}");
    assert!(e.auth_required());
    assert!(
        e.to_string()
            .starts_with(&format!("upstream proxy {} answered 407", proxy.addr)),
        "{e}"
    );
    // Wrong credentials: refused again (tinyproxy says 401 then, not 407).
    let e = dial_err(&bare, &target(origin), &opts(None, Some("user:wrong"))).await;
    assert!(
        matches!(
            e,
            ViaError::Status {
                status: 401 | 407,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.auth_required());
    // The URL's credentials, then `upstream_auth`'s.
    let with = via(&format!("http://user:s3cret@{}", proxy.addr));
    dial_ok(&with, origin, &opts(None, None)).await;
    dial_ok(&bare, origin, &opts(None, Some("user:s3cret"))).await;
}

#[actix_rt::test]
async fn http_proxy_failing_to_reach_the_target_is_named() {
    let Some(proxy) = tinyproxy(None).await else {
        return;
    };
    let v = via(&format!("http://{}", proxy.addr));
    let dead = Address::new("127.0.0.1", dead_port());
    let e = dial_err(&v, &dead, &opts(None, None)).await;
    let ViaError::Status { status, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(*status >= 500, "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("upstream proxy {} answered", proxy.addr)),
        "{e}"
    );
    // The proxy still serves the next one.
    dial_ok(&v, http_origin().await, &opts(None, None)).await;
}

#[actix_rt::test]
async fn dead_proxy_is_named() {
    let port = dead_port();
    let e = dial_err(
        &via(&format!("http://127.0.0.1:{port}")),
        &Address::new("127.0.0.1", 80),
        &opts(None, None),
    )
    .await;
    assert!(matches!(e, ViaError::Connect { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "cannot connect to upstream proxy 127.0.0.1:{port}"
        )),
        "{e}"
    );
}

fn connect_ok(_path: &str) -> Vec<u8> {
    b"HTTP/1.1 200 Connection established\r\n\r\nEARLY".to_vec()
}

#[actix_rt::test]
async fn connect_sends_the_addons_headers_and_keeps_early_bytes() {
    let (fake_proxy, seen) = scripted_origin(connect_ok).await;
    let to = Address::new("example.test", 443);
    let creds = Credentials::parse("Aladdin:open sesame").unwrap();
    // What `http_connect_upstream` hands an addon, changed by it.
    let mut req = connect_request(&to, Some(&creds));
    req.headers.append("X-Trace", "abc");
    let mut s = within(
        "dial",
        dial(
            &via(&format!("http://{fake_proxy}")),
            &to,
            Some(&req),
            &opts(None, None),
        ),
    )
    .await
    .unwrap();
    let mut early = [0u8; 5];
    within("early", s.read_exact(&mut early)).await.unwrap();
    assert_eq!(&early, b"EARLY");
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("CONNECT example.test:443 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("Host: example.test:443\r\n"), "{head}");
    assert!(
        head.contains("Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Trace: abc\r\n"), "{head}");
}

fn not_http(_path: &str) -> Vec<u8> {
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()
}

#[actix_rt::test]
async fn a_proxy_answering_garbage_is_a_protocol_error() {
    let (fake_proxy, _) = scripted_origin(not_http).await;
    let e = dial_err(
        &via(&format!("http://{fake_proxy}")),
        &Address::new("example.test", 443),
        &opts(None, None),
    )
    .await;
    assert!(matches!(e, ViaError::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains(&fake_proxy.to_string()), "{e}");
}

#[actix_rt::test]
async fn https_proxy_is_verified_then_tunnels() {
    let Some(proxy) = tinyproxy(None).await else {
        return;
    };
    let dir = TempDir::new("via-https-proxy");
    let (front, ca) = tls_front(proxy.addr, &dir).await;
    let origin = http_origin().await;
    let v = via(&format!("https://{front}"));
    // Not trusted: a TLS error naming the proxy.
    let e = dial_err(&v, &target(origin), &opts(None, None)).await;
    assert!(matches!(e, ViaError::Tls { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("TLS handshake with upstream proxy {front} failed")),
        "{e}"
    );
    dial_ok(&v, origin, &opts(Some(ca), None)).await;
    assert!(proxy.log().contains(&format!("CONNECT {origin}")));
}

#[actix_rt::test]
async fn socks5_through_danted() {
    let Some(proxy) = danted().await else {
        return;
    };
    let origin = http_origin().await;
    let v = via(&format!("socks5://{}", proxy.addr));
    dial_ok(&v, origin, &opts(None, None)).await;
    let dead = Address::new("127.0.0.1", dead_port());
    let e = dial_err(&v, &dead, &opts(None, None)).await;
    assert_eq!(
        e,
        ViaError::Socks5Refused {
            proxy: proxy.addr.to_string(),
            target: dead.to_string(),
            reply: Reply::ConnectionRefused,
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "upstream SOCKS5 proxy {} answered connection refused for {dead}",
            proxy.addr
        )
    );
    dial_ok(&v, origin, &opts(None, None)).await;
}

#[actix_rt::test]
async fn socks5_with_username_and_password() {
    let server = socks5_server(Some(("alice", "p@ss"))).await;
    let origin = http_origin().await;
    let bare = via(&format!("socks5://{}", server.addr));
    // No credentials: the proxy accepts no offered method.
    let e = dial_err(&bare, &target(origin), &opts(None, None)).await;
    assert!(
        matches!(
            e,
            ViaError::Socks5 {
                source: Socks5Error::NoAcceptableMethod,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.auth_required());
    let e = dial_err(&bare, &target(origin), &opts(None, Some("alice:nope"))).await;
    assert!(
        matches!(
            e,
            ViaError::Socks5 {
                source: Socks5Error::AuthRejected(_),
                ..
            }
        ),
        "{e:?}"
    );
    dial_ok(&bare, origin, &opts(None, Some("alice:p@ss"))).await;
    let with = via(&format!("socks5://alice:p%40ss@{}", server.addr));
    dial_ok(&with, origin, &opts(None, None)).await;

    // A domain-name target is sent as a name, for the proxy to resolve.
    let named = Address::new("localhost", origin.port());
    let s = within("dial", dial(&with, &named, None, &opts(None, None)))
        .await
        .unwrap();
    let resp = within("get", get(s, "localhost")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(
        server.targets().last().map(String::as_str),
        Some(format!("localhost:{}", origin.port()).as_str())
    );
}

/// Tags the CONNECT sent upstream, or kills it for `blocked.test`.
struct TagsUpstreamConnect;

impl Addon for TagsUpstreamConnect {
    async fn http_connect_upstream(&mut self, flow: &mut HttpFlow) {
        if flow.request.host == "blocked.test" {
            flow.kill();
            return;
        }
        let server = flow.server.as_ref().map(|s| s.address.to_string());
        flow.request
            .headers
            .append("X-Server", server.unwrap_or_default());
        flow.request.headers.append("X-Trace", "from-addon");
    }
}

#[actix_rt::test]
async fn http_connect_upstream_lets_an_addon_change_or_kill_the_connect() {
    let h = AddonHarness::new(TagsUpstreamConnect).await;
    let (fake_proxy, seen) = scripted_origin(connect_ok).await;
    let upstream = via(&format!("http://{fake_proxy}"));
    let client = Arc::new(tclient());
    let server = Server::new(Address::new("example.test", 443));
    let o = opts(None, Some("u:p"));
    let s = within(
        "dial",
        dial_server(h.manager(), client.clone(), &server, &upstream, &o),
    )
    .await
    .unwrap();
    drop(s);
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("CONNECT example.test:443 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("X-Trace: from-addon\r\n"), "{head}");
    assert!(head.contains("X-Server: example.test:443\r\n"), "{head}");
    assert!(
        head.contains("Proxy-Authorization: Basic dTpw\r\n"),
        "{head}"
    );

    let blocked = Server::new(Address::new("blocked.test", 443));
    let e = within(
        "dial",
        dial_server(h.manager(), client, &blocked, &upstream, &o),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("CONNECT to upstream proxy {fake_proxy} was killed before it was sent")
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[actix_rt::test]
async fn a_servers_via_overrides_the_modes_route() {
    let h = AddonHarness::empty().await;
    let origin = http_origin().await;
    let dead_proxy = via(&format!("http://127.0.0.1:{}", dead_port()));
    let mut server = Server::new(target(origin));
    let o = opts(None, None);
    let e = within(
        "dial",
        dial_server(h.manager(), Arc::new(tclient()), &server, &dead_proxy, &o),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ViaError::Connect { .. }), "{e:?}");
    server.via = Some(Via::Direct);
    let s = within(
        "dial",
        dial_server(h.manager(), Arc::new(tclient()), &server, &dead_proxy, &o),
    )
    .await
    .unwrap();
    let resp = within("get", get(s, &origin.to_string())).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}
