//! `anticache` and `anticomp` through the addon manager and end to end through a proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use waylay_testkit::scripted_origin;

/// An origin that records each request (lowercased) and answers `200 ok`.
async fn recording_origin() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    scripted_origin(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await
}

use waylay_addons::{AntiCache, AntiComp};
use waylay_core::{HookKind, Options};
use waylay_layers::Proxy;
use waylay_testkit::{AddonHarness, TestProxy, raw_request, tflow};

fn options(specs: &[&str]) -> Options {
    let mut o = Options::new();
    o.set_specs(specs).expect("valid");
    o
}

#[actix_rt::test]
async fn anticache_removes_the_conditional_request_headers() {
    let o = options(&["anticache=true"]);
    let mut h = AddonHarness::with_options(o.clone()).await;
    h.add(AntiCache::from_options(&o)).await;
    let mut flow = tflow();
    flow.request.headers.insert("if-none-match", "\"abc\"");
    flow.request
        .headers
        .insert("if-modified-since", "Tue, 24 Nov 2026 10:00:00 GMT");
    let flow = h.request_headers(flow).await;
    assert_eq!(flow.request.headers.get("if-none-match"), None);
    assert_eq!(flow.request.headers.get("if-modified-since"), None);
}

#[actix_rt::test]
async fn anticomp_asks_for_identity() {
    let o = options(&["anticomp=true"]);
    let mut h = AddonHarness::with_options(o.clone()).await;
    h.add(AntiComp::from_options(&o)).await;
    let mut flow = tflow();
    flow.request.headers.insert("accept-encoding", "gzip, br");
    let flow = h.request_headers(flow).await;
    assert_eq!(
        flow.request.headers.get("accept-encoding"),
        Some("identity")
    );
}

#[actix_rt::test]
async fn off_they_handle_no_request_and_keep_the_fast_path() {
    let o = options(&[]);
    let mut h = AddonHarness::with_options(o.clone()).await;
    h.add(AntiCache::from_options(&o)).await;
    h.add(AntiComp::from_options(&o)).await;
    assert!(!h.handles(HookKind::RequestHeaders));
    // Turned off at run time, they leave requests alone.
    let o = options(&["anticache=true", "anticomp=true"]);
    let mut h = AddonHarness::with_options(o.clone()).await;
    h.add(AntiCache::from_options(&o)).await;
    h.add(AntiComp::from_options(&o)).await;
    h.set_options(&["anticache=false", "anticomp=false"])
        .await
        .expect("set");
    let mut flow = tflow();
    flow.request.headers.insert("if-none-match", "x");
    let flow = h.request_headers(flow).await;
    assert_eq!(flow.request.headers.get("if-none-match"), Some("x"));
    assert_eq!(flow.request.headers.get("accept-encoding"), None);
}

#[actix_rt::test]
async fn anticache_and_anticomp_rewrite_the_request() {
    let (origin, seen) = recording_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("anticache=true")
            .set("anticomp=true")
            .addon_with(AntiCache::from_options)
            .addon_with(AntiComp::from_options),
    )
    .await;
    let req = format!(
        "GET http://{origin}/c HTTP/1.1\r\nHost: {origin}\r\nIf-None-Match: \"abc\"\r\nIf-Modified-Since: Tue, 24 Nov 2026 10:00:00 GMT\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n"
    );
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let head = seen
        .lock()
        .expect("log")
        .last()
        .map(|h| h.to_ascii_lowercase())
        .unwrap_or_default();
    assert!(!head.contains("if-none-match"), "{head}");
    assert!(!head.contains("if-modified-since"), "{head}");
    assert!(head.contains("accept-encoding: identity"), "{head}");
    assert!(!head.contains("gzip"), "{head}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn anticache_and_anticomp_set_at_run_time_take_effect() {
    let (origin, seen) = recording_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .addon_with(AntiCache::from_options)
            .addon_with(AntiComp::from_options),
    )
    .await;
    let req = format!(
        "GET http://{origin}/c HTTP/1.1\r\nHost: {origin}\r\nIf-None-Match: \"abc\"\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    );
    let last = || {
        seen.lock()
            .expect("log")
            .last()
            .map(|h| h.to_ascii_lowercase())
            .unwrap_or_default()
    };
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(last().contains("if-none-match"), "{}", last());
    assert!(last().contains("accept-encoding: gzip"), "{}", last());

    let manager = proxy.running().manager().clone();
    manager
        .set(&["anticache=true", "anticomp=true"])
        .await
        .expect("set");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!last().contains("if-none-match"), "{}", last());
    assert!(last().contains("accept-encoding: identity"), "{}", last());

    manager
        .set(&["anticache=false", "anticomp=false"])
        .await
        .expect("unset");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(last().contains("if-none-match"), "{}", last());
    proxy.shutdown().await;
}
