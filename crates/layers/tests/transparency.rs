//! The same exchange directly and through the proxy gives the same bytes.

use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, http_origin, raw_request};

fn split(resp: &str) -> (String, &str) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let mut lines: Vec<&str> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect();
    lines.sort_unstable();
    (lines.join("\n"), body)
}

#[actix_rt::test]
async fn same_bytes_direct_and_through_the_proxy() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    for (path, body) in [
        ("/hello?x=1", ""),
        ("/echo", "some body with \u{e9} unicode"),
        ("/status/404", ""),
    ] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let direct = format!(
            "{method} {path} HTTP/1.1\r\nHost: {origin}\r\nX-Case: Kept\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let proxied = direct.replacen(path, &format!("http://{origin}{path}"), 1);
        let a = raw_request(origin, direct.as_bytes()).await;
        let b = raw_request(proxy.addr(), proxied.as_bytes()).await;
        let (ha, ba) = split(&a);
        let (hb, bb) = split(&b);
        assert_eq!(ba, bb, "{path}");
        assert_eq!(ha, hb, "{path}");
    }
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_50_mib_download_arrives_intact() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    const N: usize = 50 * 1024 * 1024;
    let out = waylay_testkit::raw_request_bytes(
        proxy.addr(),
        format!(
            "GET http://{origin}/bytes/{N} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &out[at..];
    assert_eq!(body.len(), N);
    // A position-dependent pattern: any lost, duplicated or reordered chunk shows.
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    proxy.shutdown().await;
}
