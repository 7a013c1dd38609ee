//! The bundled rule addons end to end: the real proxy on loopback, an in-process origin, a
//! plain HTTP/1.1 client. After every refused value the proxy still serves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use waylay::Proxy;
use waylay::addons::{
    BlockList, MapLocal, MapRemote, ModifyBody, ModifyHeaders, StickyAuth, StickyCookie,
};
use waylay_testkit::{TempDir, TestProxy, proxy_get, raw_request, scripted_origin, within};

fn answer(_path: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-Remove: me\r\nContent-Type: text/plain\r\n\r\nhello, origin"
        .to_vec()
}

async fn origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    scripted_origin(answer).await
}

async fn set(proxy: &TestProxy, specs: &[&str]) -> Result<(), String> {
    within("set options", proxy.running().manager().set(specs))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn seen(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().expect("log").clone()
}

#[actix_rt::test]
async fn modify_headers_through_the_proxy() {
    let (origin, log) = origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon(ModifyHeaders::new())).await;
    set(
        &proxy,
        &["modify_headers=:X-Added:yes", "modify_headers=;X-Remove;"],
    )
    .await
    .expect("valid rules");

    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/a")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("x-added: yes"), "{out}");
    assert!(!lower.contains("x-remove"), "{out}");
    assert!(out.ends_with("hello, origin"), "{out}");
    assert!(
        seen(&log)[0].to_ascii_lowercase().contains("x-added: yes"),
        "{:?}",
        seen(&log)
    );

    let e = set(&proxy, &["modify_headers=/only"]).await.unwrap_err();
    assert!(
        e.contains("modify_headers") && e.contains("\"/only\""),
        "{e}"
    );
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/b")),
    )
    .await;
    assert!(
        out.to_ascii_lowercase().contains("x-added: yes"),
        "old rules kept: {out}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn modify_body_through_the_proxy() {
    let (origin, log) = origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon(ModifyBody::new())).await;
    set(
        &proxy,
        &[
            "modify_body=/origin/proxy",
            "modify_body=|secret|[redacted]",
        ],
    )
    .await
    .expect("valid rules");
    let req = format!(
        "POST http://{origin}/p HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 9\r\nConnection: close\r\n\r\na secret!"
    );
    let out = within("post", raw_request(proxy.addr(), req.as_bytes())).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("hello, proxy"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("content-length: 12"),
        "{out}"
    );
    assert!(seen(&log)[0].ends_with("a [redacted]!"), "{:?}", seen(&log));

    assert!(set(&proxy, &["modify_body=/(/x"]).await.is_err());
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/b")),
    )
    .await;
    assert!(out.ends_with("hello, proxy"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn map_remote_sends_the_request_elsewhere() {
    let (origin, log) = origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon(MapRemote::new())).await;
    let rule = format!(r"map_remote=|http://unreachable\.invalid/(\w+)|http://{origin}/mapped/\1");
    set(&proxy, &[rule.as_str()]).await.expect("valid rule");
    let out = within(
        "get",
        proxy_get(proxy.addr(), "http://unreachable.invalid/thing?q=1"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let req = &seen(&log)[0];
    assert!(
        req.starts_with("GET /mapped/thing?q=1 HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains(&format!("Host: {origin}\r\n")), "{req}");

    assert!(set(&proxy, &[r"map_remote=|a|\2"]).await.is_err());
    let out = within(
        "get",
        proxy_get(proxy.addr(), "http://unreachable.invalid/again"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn map_local_answers_from_a_directory_and_never_asks_the_origin() {
    let (origin, log) = origin().await;
    let dir = TempDir::new("map-local");
    std::fs::write(dir.path().join("page.html"), "<p>local</p>").unwrap();
    let proxy = TestProxy::start(Proxy::builder().addon(MapLocal::new())).await;
    let rule = format!("map_local=|{origin}/site|{}", dir.path().display());
    set(&proxy, &[rule.as_str()]).await.expect("valid rule");

    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/site/page.html")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("content-type: text/html"),
        "{out}"
    );
    assert!(out.ends_with("<p>local</p>"), "{out}");
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/site/nope.css")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    let out = within(
        "get",
        proxy_get(
            proxy.addr(),
            &format!("http://{origin}/site/../../etc/passwd"),
        ),
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 404"),
        "a path out of the directory: {out}"
    );
    assert!(
        seen(&log).is_empty(),
        "the origin was asked: {:?}",
        seen(&log)
    );

    // Outside the rule, traffic goes to the origin.
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/other")),
    )
    .await;
    assert!(out.ends_with("hello, origin"), "{out}");
    assert!(
        set(&proxy, &["map_local=|x|/does/not/exist"])
            .await
            .is_err()
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn block_list_answers_or_closes_without_asking_the_origin() {
    let (origin, log) = origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon(BlockList::new())).await;
    set(
        &proxy,
        &["block_list=/~u blocked/403", "block_list=|~u silent|444"],
    )
    .await
    .expect("valid rules");
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/blocked")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/silent")),
    )
    .await;
    assert_eq!(out, "", "444 closes the connection without a response");
    assert!(seen(&log).is_empty(), "{:?}", seen(&log));
    let out = within(
        "get",
        proxy_get(proxy.addr(), &format!("http://{origin}/fine")),
    )
    .await;
    assert!(out.ends_with("hello, origin"), "{out}");
    proxy.shutdown().await;
}

fn cookie_answer(path: &str) -> Vec<u8> {
    if path == "/login" {
        b"HTTP/1.1 200 OK\r\nSet-Cookie: session=s3cr3t; Path=/\r\nContent-Length: 2\r\n\r\nok"
            .to_vec()
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    }
}

#[actix_rt::test]
async fn stickycookie_and_stickyauth_through_the_proxy() {
    let (origin, log) = scripted_origin(cookie_answer).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .addon(StickyAuth::new())
            .addon(StickyCookie::new()),
    )
    .await;
    set(&proxy, &["stickycookie=~all", "stickyauth=~all"])
        .await
        .expect("valid filters");
    let login = format!(
        "GET http://{origin}/login HTTP/1.1\r\nHost: {origin}\r\nAuthorization: Basic dTpw\r\nConnection: close\r\n\r\n"
    );
    let out = within("login", raw_request(proxy.addr(), login.as_bytes())).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = within(
        "next",
        proxy_get(proxy.addr(), &format!("http://{origin}/next")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let next = seen(&log)[1].to_ascii_lowercase();
    assert!(next.contains("cookie: session=s3cr3t\r\n"), "{next}");
    assert!(next.contains("authorization: basic dtpw\r\n"), "{next}");

    assert!(set(&proxy, &["stickycookie=~bogus"]).await.is_err());
    let out = within(
        "again",
        proxy_get(proxy.addr(), &format!("http://{origin}/again")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}
