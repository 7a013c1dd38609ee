//! `block_global` / `block_private` through the addon manager and end to end.

use waylay_addons::{Block, is_private};
use waylay_core::Options;
use waylay_core::flow::Client;
use waylay_layers::Proxy;
use waylay_testkit::{AddonHarness, TestProxy, http_origin, raw_request, within};

fn client(ip: [u8; 4]) -> Client {
    Client::new((ip, 50000).into(), ([127, 0, 0, 1], 8080).into())
}

async fn harness(specs: &[&str]) -> AddonHarness {
    let mut o = Options::new();
    o.set_specs(specs).expect("valid");
    let mut h = AddonHarness::with_options(o.clone()).await;
    h.add(Block::from_options(&o)).await;
    h
}

#[actix_rt::test]
async fn block_global_refuses_public_clients_only() {
    let mut h = harness(&[]).await;
    let refused = h.client_connect(client([8, 8, 8, 8])).await;
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("block_global")),
        "{refused:?}"
    );
    assert_eq!(h.client_connect(client([127, 0, 0, 1])).await.error, None);
    assert_eq!(h.client_connect(client([192, 168, 1, 2])).await.error, None);
}

#[actix_rt::test]
async fn block_private_refuses_private_clients() {
    let mut h = harness(&["block_private=true", "block_global=false"]).await;
    let refused = h.client_connect(client([10, 1, 2, 3])).await;
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("block_private")),
        "{refused:?}"
    );
    assert_eq!(h.client_connect(client([8, 8, 8, 8])).await.error, None);
}

#[test]
fn private_addresses() {
    for ip in [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
    ] {
        assert!(is_private(ip.parse().expect("ip")), "{ip}");
    }
    for ip in ["8.8.8.8", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
        assert!(!is_private(ip.parse().expect("ip")), "{ip}");
    }
}

#[actix_rt::test]
async fn block_private_refuses_a_loopback_client() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("block_private=true")
            .addon_with(Block::from_options),
    )
    .await;
    let req =
        format!("GET http://{origin}/b HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let out = within("closed", raw_request(proxy.addr(), req.as_bytes())).await;
    assert!(out.is_empty(), "{out}");
    proxy.shutdown().await;
    // By default (block_global only) a loopback client is served.
    let proxy = TestProxy::start(Proxy::builder().addon_with(Block::from_options)).await;
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn block_private_set_at_run_time_takes_effect_and_unset_lifts_it() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon_with(Block::from_options)).await;
    let req =
        format!("GET http://{origin}/b HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let manager = proxy.running().manager().clone();
    // Off at start: the addon handles no `client_connect`.
    manager.set(&["block_global=false"]).await.expect("set");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "before: {out}");

    manager.set(&["block_private=true"]).await.expect("set");
    let out = within("closed", raw_request(proxy.addr(), req.as_bytes())).await;
    assert!(out.is_empty(), "set: {out}");

    manager.set(&["block_private=false"]).await.expect("unset");
    let out = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "unset: {out}");
    proxy.shutdown().await;
}
