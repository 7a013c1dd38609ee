//! The `mitmproxy` API a script sees, on test flows through `AddonHarness::script`: the
//! parts the end-to-end comparisons with mitmdump do not reach (connections and TLS,
//! `Request.make`, encodings, errors, TCP flows).
#![cfg(feature = "python")]

use std::sync::Arc;

use waylay_core::flow::{TcpMessage, TlsInfo};
use waylay_testkit::{AddonHarness, FlowExt, TempDir, tclient, tflow, tresp, ttcpflow};

async fn harness(name: &str, src: &str) -> (AddonHarness, TempDir) {
    let dir = TempDir::new(name);
    let p = dir.path().join(format!("{name}.py"));
    std::fs::write(&p, src).expect("write script");
    (AddonHarness::script(&p).await, dir)
}

const CONNS: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    c, s = flow.client_conn, flow.server_conn
    h = flow.request.headers
    h["x-client"] = f"{c.peername[0]}:{c.peername[1]} sni={c.sni} alpn={c.alpn} tls={c.tls_version} est={c.tls_established}"
    h["x-server"] = f"{s.address[0]}:{s.address[1]}"
    h["x-flow"] = f"{len(flow.id)} {flow.live} {flow.is_replay} {flow.error} {flow.marked!r}"
    flow.marked = ":star:"
    flow.comment = "seen"
"#;

#[actix_rt::test]
async fn connections_and_their_tls_details() {
    let (mut h, _d) = harness("conns", CONNS).await;
    let mut client = tclient();
    client.tls = Some(TlsInfo {
        sni: Some("example.com".into()),
        alpn: Some("h2".into()),
        version: Some("TLSv1.3".into()),
        ..TlsInfo::default()
    });
    let mut flow = tflow();
    flow.client = Arc::new(client);
    let flow = h.request(flow).await;
    let get = |n| flow.request.headers.get(n).map(str::to_owned);
    assert_eq!(
        get("x-client").as_deref(),
        Some("127.0.0.1:22 sni=example.com alpn=b'h2' tls=TLSv1.3 est=True")
    );
    assert_eq!(get("x-server").as_deref(), Some("example.com:80"));
    assert_eq!(get("x-flow").as_deref(), Some("36 True None None ''"));
    assert_eq!(flow.marked, ":star:");
    assert_eq!(flow.comment, "seen");
}

const MAKE: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    if flow.request.path == "/path":
        flow.request = http.Request.make("POST", "https://other.example:8443/new?a=1", b"body", {"X-Made": "1"})

def response(flow: http.HTTPFlow) -> None:
    r = flow.response
    r.encode("gzip")
    r.headers["x-encoded"] = r.headers["content-encoding"] + " " + str(r.raw_content != r.content)
    r.headers["x-text"] = r.text
    r.decode()
    r.set_text(r.get_text() + "!")
    r.headers["x-json-error"] = type(_try_json(r)).__name__

def error(flow: http.HTTPFlow) -> None:
    flow.metadata["error_seen"] = flow.error.msg

def _try_json(r):
    try:
        return r.json()
    except Exception as e:
        return e
"#;

#[actix_rt::test]
async fn request_make_encodings_and_errors() {
    let (mut h, _d) = harness("make", MAKE).await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.method, "POST");
    assert_eq!(flow.request.scheme, "https");
    assert_eq!(flow.request.host, "other.example");
    assert_eq!(flow.request.port, 8443);
    assert_eq!(flow.request.path, "/new?a=1");
    assert_eq!(flow.request.headers.get("x-made"), Some("1"));
    assert_eq!(flow.request.raw_content.as_deref(), Some(&b"body"[..]));

    let flow = h.response(tflow().with_response(tresp())).await;
    let r = flow.response.expect("response");
    assert_eq!(r.headers.get("x-encoded"), Some("gzip True"));
    assert_eq!(r.headers.get("x-text"), Some("message"));
    assert_eq!(r.headers.get("content-encoding"), None);
    assert_eq!(r.raw_content.as_deref(), Some(&b"message!"[..]));
    assert_eq!(r.headers.get("content-length"), Some("8"));
    assert_eq!(r.headers.get("x-json-error"), Some("JSONDecodeError"));

    let flow = h.error(tflow().with_error("connection refused")).await;
    assert_eq!(
        flow.metadata.get("error_seen"),
        Some(&serde_json::json!("connection refused"))
    );
}

const TCP: &str = r#"
from mitmproxy import tcp

def tcp_message(flow: tcp.TCPFlow) -> None:
    m = flow.messages[-1]
    m.content = m.content.replace(b"foo", b"bar")
    flow.metadata["count"] = len(flow.messages)
    flow.metadata["from_client"] = m.from_client
"#;

#[actix_rt::test]
async fn tcp_messages_on_a_test_flow() {
    let (mut h, _d) = harness("tcp_api", TCP).await;
    let mut flow = ttcpflow();
    flow.messages.push(TcpMessage::new(true, "foo foo"));
    let n = flow.messages.len();
    let flow = h.tcp_message(flow).await;
    assert_eq!(
        flow.messages.last().map(|m| &m.content[..]),
        Some(&b"bar bar"[..])
    );
    assert_eq!(flow.metadata.get("count"), Some(&serde_json::json!(n)));
    assert_eq!(
        flow.metadata.get("from_client"),
        Some(&serde_json::json!(true))
    );
}
