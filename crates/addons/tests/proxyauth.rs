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

/// An htpasswd file with a bcrypt user and a `{SHA}` user (whose password has a `:`).
fn htpasswd_file(dir: &TempDir) -> std::path::PathBuf {
    use base64::Engine as _;
    use sha1::Digest as _;
    let bc = bcrypt::hash("s3cret", 4).expect("bcrypt");
    let sha = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"pa:ss"));
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("# users\nalice:{bc}\nbob:{{SHA}}{sha}\n")).expect("write");
    path
}

async fn decide(h: &mut AddonHarness, auth: Option<String>) -> Option<u16> {
    let mut flow = tflow();
    if let Some(a) = auth {
        flow.request.headers.insert("proxy-authorization", a);
    }
    h.request_headers(flow)
        .await
        .response
        .map(|r| r.status_code)
}

#[actix_rt::test]
async fn an_htpasswd_file_checks_bcrypt_and_sha1_users() {
    let dir = TempDir::new("proxyauth-htpasswd");
    let path = htpasswd_file(&dir);
    let mut h = harness(&format!("proxyauth=@{}", path.display())).await;
    // Twice each: the second answer comes from the cache and must be the same.
    for _ in 0..2 {
        assert_eq!(decide(&mut h, Some(basic("alice:s3cret"))).await, None);
        assert_eq!(decide(&mut h, Some(basic("bob:pa:ss"))).await, None);
        assert_eq!(decide(&mut h, Some(basic("alice:wrong"))).await, Some(407));
        assert_eq!(decide(&mut h, Some(basic("bob:pa"))).await, Some(407));
        assert_eq!(decide(&mut h, Some(basic("carol:s3cret"))).await, Some(407));
        assert_eq!(decide(&mut h, None).await, Some(407));
    }
    // A new value replaces the file and forgets what was verified against it.
    h.set_options(&["proxyauth=carol:x"]).await.expect("valid");
    assert_eq!(decide(&mut h, Some(basic("alice:s3cret"))).await, Some(407));
    assert_eq!(decide(&mut h, Some(basic("carol:x"))).await, None);
}

#[actix_rt::test]
async fn a_password_may_contain_colons() {
    let mut h = harness("proxyauth=alice:a:b:c").await;
    assert_eq!(decide(&mut h, Some(basic("alice:a:b:c"))).await, None);
    assert_eq!(decide(&mut h, Some(basic("alice:a"))).await, Some(407));
    assert_eq!(decide(&mut h, Some(basic("alice:a:b"))).await, Some(407));
}

#[actix_rt::test]
async fn bad_values_are_refused_in_configure_with_one_line() {
    let dir = TempDir::new("proxyauth-bad");
    let bad_line = dir.path().join("bad");
    std::fs::write(&bad_line, "ok:{SHA}x\nu:$apr1$x$y\n").expect("write");
    let missing = dir.path().join("missing");
    let mut h = harness("proxyauth=alice:s3cret").await;
    for (value, part) in [
        (
            format!("@{}", missing.display()),
            "cannot read htpasswd file",
        ),
        (format!("@{}", bad_line.display()), "line 2"),
        ("nocolon".to_owned(), "\"nocolon\""),
        ("@".to_owned(), "\"@\""),
    ] {
        let e = h
            .set_options(&[format!("proxyauth={value}")])
            .await
            .expect_err("refused")
            .to_string();
        assert!(e.starts_with("option proxyauth: "), "{e}");
        assert!(e.contains(part), "{value}: {e}");
        assert!(!e.contains('\n'), "{e}");
        // The old value still holds.
        assert_eq!(decide(&mut h, Some(basic("alice:s3cret"))).await, None);
    }
}

#[actix_rt::test]
async fn a_missing_htpasswd_file_stops_the_proxy_from_starting() {
    let dir = TempDir::new("proxyauth");
    let r = Proxy::builder()
        .set(format!("confdir={}", dir.path().display()))
        .set("workers=1")
        .listen("127.0.0.1:0")
        .set(format!("proxyauth=@{}", dir.path().join("nope").display()))
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

/// curl through the proxy with `--proxy-user`; its status code.
async fn curl(proxy: SocketAddr, url: &str, user: &str) -> Option<String> {
    let bin = waylay_testkit::peers::program("curl")?;
    let out = waylay_testkit::within(
        "curl",
        tokio::process::Command::new(bin)
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-x", &format!("http://{proxy}"), "--proxy-user", user, url])
            .output(),
    )
    .await
    .expect("run curl");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[actix_rt::test]
async fn curl_with_proxy_user_against_an_htpasswd_file() {
    let dir = TempDir::new("proxyauth-curl");
    let path = htpasswd_file(&dir);
    let (origin, seen) = recording_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("proxyauth=@{}", path.display()))
            .addon_with(ProxyAuth::from_options),
    )
    .await;
    let url = format!("http://{origin}/p");
    let Some(code) = curl(proxy.addr(), &url, "alice:s3cret").await else {
        proxy.shutdown().await;
        return;
    };
    assert_eq!(code, "200");
    // The same credentials again: verified once, remembered.
    let again = curl(proxy.addr(), &url, "alice:s3cret")
        .await
        .expect("curl");
    assert_eq!(again, "200");
    let refused = curl(proxy.addr(), &url, "alice:wrong").await.expect("curl");
    assert_eq!(refused, "407");
    // After a refusal the next request still works, the SHA-1 user too.
    let after = curl(proxy.addr(), &url, "bob:pa:ss").await.expect("curl");
    assert_eq!(after, "200");
    assert_eq!(seen.lock().expect("log").len(), 3);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn proxyauth_set_at_run_time_takes_effect_and_unset_lifts_it() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon_with(ProxyAuth::from_options)).await;
    let req =
        format!("GET http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "before: {out}");

    let manager = proxy.running().manager().clone();
    manager.set(&["proxyauth=alice:s3cret"]).await.expect("set");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 407"), "set: {out}");
    let authed = format!(
        "GET http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
        basic("alice:s3cret")
    );
    let out = raw_request(proxy.addr(), authed.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "with credentials: {out}");

    manager.set(&["proxyauth="]).await.expect("unset");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "unset: {out}");
    proxy.shutdown().await;
}
