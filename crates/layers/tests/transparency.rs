//! The same exchange directly and through the proxy gives the same bytes.

use waylay_core::{Addon, HookKind, HookSet, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{Observe, TestProxy, http_origin, raw_request, scripted_origin};

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

/// Adds a response field (the response's fields are then rebuilt from the flow).
struct AddField;

impl Addon for AddField {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Response])
    }
    async fn response(&mut self, flow: &mut HttpFlow) {
        if let Some(r) = flow.response.as_mut() {
            r.headers.insert("x-added", "1");
        }
    }
}

/// The lines of `head` whose field name is one of `names` (any case), in order.
fn fields<'a>(head: &'a str, names: &[&str]) -> Vec<&'a str> {
    head.lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| names.iter().any(|x| n.eq_ignore_ascii_case(x)))
        })
        .collect()
}

/// Sends `req` through the proxy at `proxy` (the scripted origin answers `ok`) and returns the
/// head the origin got for it (the last one it recorded).
async fn origin_got(
    proxy: std::net::SocketAddr,
    req: &str,
    seen: &std::sync::Mutex<Vec<String>>,
    label: &str,
) -> String {
    let out = raw_request(proxy, req.as_bytes()).await;
    assert!(out.ends_with("ok"), "{label}: {out}");
    seen.lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or_default()
}

/// Field names keep the spelling they came with, each repeated name its spellings in order,
/// both ways (HTTP/1 on both sides), whether or not addons see the flow or change it.
#[actix_rt::test]
async fn field_names_keep_their_spelling_both_ways() {
    let (origin, seen) = scripted_origin(|_| {
        b"HTTP/1.1 200 OK\r\nX-Mixed: a\r\nSERVER-Name: s\r\nx-mixed: b\r\nContent-TYPE: text/plain\r\nX-MIXED: c\r\nContent-Length: 2\r\n\r\nok".to_vec()
    })
    .await;
    let builders = [
        ("unobserved", Proxy::builder()),
        ("observed", Proxy::builder().addon(Observe)),
        ("changed", Proxy::builder().addon(AddField)),
    ];
    for (i, (label, builder)) in builders.into_iter().enumerate() {
        let proxy = TestProxy::start(builder).await;
        let req = format!(
            "GET http://{origin}/{label} HTTP/1.1\r\nHost: {origin}\r\nX-Dup: 1\r\nUser-AGENT: t\r\nx-dup: 2\r\nACCEPT: */*\r\nX-DUP: 3\r\nConnection: close\r\n\r\n"
        );
        let out = raw_request(proxy.addr(), req.as_bytes()).await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert_eq!(body, "ok", "{label}: {out}");
        // A repeated name's values travel together (one header map entry), each with its own
        // spelling.
        assert_eq!(
            fields(head, &["x-mixed", "server-name", "content-type"]),
            [
                "X-Mixed: a",
                "x-mixed: b",
                "X-MIXED: c",
                "SERVER-Name: s",
                "Content-TYPE: text/plain"
            ],
            "{label}: {head}"
        );
        if label == "changed" {
            assert_eq!(
                fields(head, &["x-added"]),
                ["x-added: 1"],
                "{label}: {head}"
            );
        }
        let sent = seen.lock().expect("lock")[3 * i].clone();
        assert_eq!(
            fields(&sent, &["host", "x-dup", "user-agent", "accept"]),
            [
                format!("Host: {origin}").as_str(),
                "X-Dup: 1",
                "x-dup: 2",
                "X-DUP: 3",
                "User-AGENT: t",
                "ACCEPT: */*"
            ],
            "{label}: {sent}"
        );
        // Names that all come in lowercase go on in lowercase (hyper then keeps no spellings).
        let low = format!(
            "GET http://{origin}/{label}/low HTTP/1.1\r\nhost: {origin}\r\nx-low: 1\r\nuser-agent: t\r\nx-low: 2\r\nconnection: close\r\n\r\n"
        );
        let sent = origin_got(proxy.addr(), &low, &seen, label).await;
        assert_eq!(
            fields(&sent, &["host", "x-low", "user-agent"]),
            [
                format!("host: {origin}").as_str(),
                "x-low: 1",
                "x-low: 2",
                "user-agent: t"
            ],
            "{label}: {sent}"
        );
        // A head of more than 32 fields (the spellings are then kept in a map, not a list),
        // a repeated name among them.
        let mut many = format!("GET http://{origin}/{label}/many HTTP/1.1\r\nHost: {origin}\r\n");
        for j in 0..40 {
            match j {
                5 => many.push_str("X-Dup: 1\r\n"),
                20 => many.push_str("x-DUP: 2\r\n"),
                38 => many.push_str("X-DUP: 3\r\n"),
                _ => many.push_str(&format!("X-Many-{j:02}: {j}\r\n")),
            }
        }
        many.push_str("Connection: close\r\n\r\n");
        let sent = origin_got(proxy.addr(), &many, &seen, label).await;
        let names: Vec<&str> = sent
            .lines()
            .filter_map(|l| l.split_once(':').map(|(n, _)| n))
            .filter(|n| n.to_ascii_lowercase().starts_with("x-"))
            .collect();
        let mut expected: Vec<String> = (0..40)
            .filter(|j| ![5, 20, 38].contains(j))
            .map(|j| format!("X-Many-{j:02}"))
            .collect();
        // The repeated name's three values go together, where its first one was.
        expected.splice(5..5, ["X-Dup", "x-DUP", "X-DUP"].map(String::from));
        assert_eq!(names, expected, "{label}: {sent}");
        proxy.shutdown().await;
    }
}
