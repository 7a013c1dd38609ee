//! `proxyauth` through the addon manager and end to end through a proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use waylay_testkit::scripted_origin;

/// An origin that records each request (lowercased) and answers `200 ok`.
async fn recording_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    scripted_origin(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await
}

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use waylay_addons::ProxyAuth;
use waylay_core::{HookKind, Options};
use waylay_layers::{Proxy, ProxyError};
use waylay_testkit::{AddonHarness, TempDir, TestProxy, http_origin, raw_request, tflow};

fn basic(user_pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

async fn harness(spec: &str) -> AddonHarness {
    let mut options = Options::new();
    options.set_specs(&[spec]).expect("valid");
    let mut h = AddonHarness::with_options(options.clone()).await;
    h.add(ProxyAuth::from_options(&options)).await;
    h
}

#[actix_rt::test]
async fn a_connect_without_credentials_gets_a_407_challenge() {
    let mut h = harness("proxyauth=alice:s3cret").await;
    let mut flow = tflow();
    flow.request.method = "CONNECT".into();
    let flow = h.http_connect(flow).await;
    let resp = flow.response.expect("refused");
    assert_eq!(resp.status_code, 407);
    assert_eq!(
        resp.headers.get("proxy-authenticate"),
        Some("Basic realm=\"waylay\"")
    );
}

#[actix_rt::test]
async fn a_connect_with_credentials_authenticates_its_connection() {
    let mut h = harness("proxyauth=alice:s3cret").await;
    let mut connect = tflow();
    connect
        .request
        .headers
        .insert("proxy-authorization", basic("alice:s3cret"));
    let connect = h.http_connect(connect).await;
    assert!(connect.response.is_none());
    // A request on the same client connection (inside the tunnel) needs no credentials...
    let mut inside = tflow();
    inside.client = connect.client.clone();
    assert!(h.request_headers(inside).await.response.is_none());
    // ...one on another connection does.
    assert_eq!(
        h.request_headers(tflow())
            .await
            .response
            .map(|r| r.status_code),
        Some(407)
    );
}

#[actix_rt::test]
async fn without_proxyauth_the_addon_handles_no_request() {
    let h = harness("proxyauth=").await;
    assert!(!h.handles(HookKind::RequestHeaders));
    assert!(!h.handles(HookKind::HttpConnect));
}

#[actix_rt::test]
async fn proxyauth_requires_the_credentials_on_the_proxy_port_and_for_connect() {
    let (origin, seen) = recording_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("proxyauth=alice:s3cret")
            .addon_with(ProxyAuth::from_options),
    )
    .await;
    let get = |auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "GET http://{origin}/p HTTP/1.1\r\nHost: {origin}\r\n{auth}Connection: close\r\n\r\n"
        )
    };
    for (label, auth) in [
        ("none", None),
        ("wrong password", Some(basic("alice:nope"))),
        ("wrong user", Some(basic("bob:s3cret"))),
        ("not basic", Some("Bearer abc".to_owned())),
        ("garbage", Some("Basic !!!".to_owned())),
    ] {
        let out = raw_request(proxy.addr(), get(auth).as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 407"), "{label}: {out}");
        assert!(
            out.to_ascii_lowercase()
                .contains("proxy-authenticate: basic realm=\"waylay\""),
            "{label}: {out}"
        );
    }
    assert!(seen.lock().expect("log").is_empty());

    let out = raw_request(proxy.addr(), get(Some(basic("alice:s3cret"))).as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("ok"),
        "{out}"
    );
    // The credentials are for the proxy: the origin never sees them.
    let head = seen
        .lock()
        .expect("log")
        .last()
        .map(|h| h.to_ascii_lowercase())
        .unwrap_or_default();
    assert!(!head.contains("proxy-authorization"), "{head}");

    // CONNECT needs them too; the requests inside the tunnel do not.
    let connect =
        format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let out = raw_request(proxy.addr(), connect.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let connect = format!(
        "CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: {}\r\n\r\nGET /inside HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n",
        basic("alice:s3cret")
    );
    s.write_all(connect.as_bytes()).await.expect("write");
    let out = String::from_utf8_lossy(&waylay_testkit::read_to_close(&mut s).await).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("ok"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn proxyauth_any_accepts_any_credentials_but_not_none() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("proxyauth=any")
            .addon_with(ProxyAuth::from_options),
    )
    .await;
    let req =
        format!("GET http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
    let req = format!(
        "GET http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
        basic("whoever:whatever")
    );
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_htpasswd_file_is_refused_not_ignored() {
    let dir = TempDir::new("proxyauth");
    let r = Proxy::builder()
        .set(format!("confdir={}", dir.path().display()))
        .set("workers=1")
        .listen("127.0.0.1:0")
        .set("proxyauth=@htpasswd")
        .addon_with(ProxyAuth::from_options)
        .start()
        .await;
    match r {
        Err(ProxyError::Addon(e)) => assert!(e.to_string().contains("proxyauth"), "{e}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(p) => {
            p.shutdown().await;
            panic!("accepted");
        }
    }
}
