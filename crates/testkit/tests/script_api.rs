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

const TCP_KEEPS: &str = r#"
kept = []

def tcp_message(flow):
    if not kept:
        kept.append(flow)
        return
    k = kept[0]
    same = str(k.id == flow.id).encode()
    flow.messages[-1].content = b"%d %s %s" % (len(k.messages), k.messages[-1].content, same)
"#;

/// A TCP flow a script keeps stays readable after its hook, as an HTTP flow does.
#[actix_rt::test]
async fn a_kept_tcp_flow_stays_readable() {
    let (mut h, _d) = harness("tcp_keeps", TCP_KEEPS).await;
    let mut first = ttcpflow();
    first.messages.push(TcpMessage::new(true, "one"));
    let first = h.tcp_message(first).await;
    let mut second = ttcpflow();
    second.messages.push(TcpMessage::new(true, "two"));
    let second = h.tcp_message(second).await;
    assert_eq!(
        second.messages.last().map(|m| &m.content[..]),
        Some(&b"3 one False"[..]),
        "logs: {:?}",
        h.logs()
    );
    assert_eq!(
        first.messages.last().map(|m| &m.content[..]),
        Some(&b"one"[..])
    );
}

const CONN_HOOKS: &str = r#"
import logging
from mitmproxy import connection, tls
from mitmproxy.proxy import server_hooks

def client_connected(client: connection.Client):
    logging.info(f"client_connected {client.peername[0]} {isinstance(client, connection.Client)} {client.connected}")
    if client.peername[1] == 1:
        client.error = "refused by script"

def client_disconnected(client: connection.Client):
    logging.info(f"client_disconnected {client.peername[1]}")

def server_connect(data: server_hooks.ServerConnectionHookData):
    logging.info(f"server_connect {data.server.address} client={data.client.peername[0]}")
    if data.server.address[0] == "redirect.example":
        data.server.address = ("127.0.0.1", 9)
        data.server.sni = "sni.example"
    if data.server.address[0] == "blocked.example":
        data.server.error = "blocked by script"

def server_connected(data):
    logging.info(f"server_connected {data.server.peername}")

def server_connect_error(data):
    logging.info(f"server_connect_error {data.server.error}")

def server_disconnected(data):
    logging.info(f"server_disconnected {data.server.address}")

def tls_clienthello(data: tls.ClientHelloData):
    h = data.client_hello
    logging.info(f"tls_clienthello sni={h.sni} alpn={h.alpn_protocols} server={data.context.server.address} first={data.establish_server_tls_first}")
    if h.sni == "pass.example":
        data.ignore_connection = True

def tls_start_server(data: tls.TlsData):
    logging.info(f"tls_start_server {data.conn.sni} {list(data.conn.alpn_offers)} {data.ssl_conn} {data.is_dtls}")
    data.conn.sni = "other.example"
    data.conn.alpn_offers = [b"http/1.1"]

def tls_established_client(data: tls.TlsData):
    logging.info(f"tls_established_client {data.conn.sni} {data.conn.alpn} {data.context.client.peername[1]}")

def tls_failed_server(data: tls.TlsData):
    logging.info(f"tls_failed_server {data.conn.error}")
"#;

#[actix_rt::test]
async fn connection_and_tls_hooks_under_mitmproxys_names() {
    use waylay_core::flow::{Address, Server};
    use waylay_core::hooks::{ClientHelloData, ServerConnectionHookData, Side, TlsData};

    let (mut h, _d) = harness("conn_hooks", CONN_HOOKS).await;
    let c = h.client_connect(tclient()).await;
    assert_eq!(c.error, None);
    assert!(
        h.has_log("client_connected 127.0.0.1 True True"),
        "{:?}",
        h.logs()
    );
    let mut refused = tclient();
    refused.peername = ([127, 0, 0, 1], 1).into();
    assert_eq!(
        h.client_connect(refused).await.error.as_deref(),
        Some("refused by script")
    );
    h.client_disconnect(tclient()).await;
    assert!(h.has_log("client_disconnected 22"));

    let data = |host: &str| ServerConnectionHookData {
        client: Arc::new(tclient()),
        server: Server::new(Address::new(host, 443)),
    };
    let d = h.server_connect(data("redirect.example")).await;
    assert_eq!(d.server.address, Address::new("127.0.0.1", 9));
    assert_eq!(d.server.sni.as_deref(), Some("sni.example"));
    assert!(h.has_log("server_connect ('redirect.example', 443) client=127.0.0.1"));
    let d = h.server_connect(data("blocked.example")).await;
    assert_eq!(d.server.error.as_deref(), Some("blocked by script"));
    let d = h.server_connect(data("example.com")).await;
    assert_eq!(d.server.address, Address::new("example.com", 443));
    assert_eq!(d.server.error, None);
    let mut up = data("example.com");
    up.server.peername = Some(([127, 0, 0, 1], 443).into());
    h.server_connected(up).await;
    assert!(h.has_log("server_connected ('127.0.0.1', 443)"));
    let mut failed = data("example.com");
    failed.server.error = Some("connection refused".into());
    h.server_connect_error(failed).await;
    assert!(h.has_log("server_connect_error connection refused"));
    h.server_disconnect(data("example.com")).await;
    assert!(h.has_log("server_disconnected ('example.com', 443)"));

    let hello = |sni: &str| ClientHelloData {
        client: Arc::new(tclient()),
        server: Some(Address::new("example.com", 443)),
        sni: Some(sni.into()),
        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
        ignore_connection: false,
        establish_server_tls_first: true,
    };
    assert!(
        h.tls_clienthello(hello("pass.example"))
            .await
            .ignore_connection
    );
    assert!(
        !h.tls_clienthello(hello("example.com"))
            .await
            .ignore_connection
    );
    assert!(h.has_log(
        "tls_clienthello sni=example.com alpn=[b'h2', b'http/1.1'] server=('example.com', 443) first=True"
    ));

    let tls = |side| TlsData {
        side,
        client: Arc::new(tclient()),
        server: Some(Server::new(Address::new("example.com", 443))),
        sni: Some("example.com".into()),
        alpn_offers: vec!["h2".into(), "http/1.1".into()],
        alpn: None,
        error: None,
    };
    let d = h.tls_start_server(tls(Side::Server)).await;
    assert_eq!(d.sni.as_deref(), Some("other.example"));
    assert_eq!(d.alpn_offers, vec!["http/1.1".to_owned()]);
    assert!(h.has_log("tls_start_server example.com [b'h2', b'http/1.1'] None False"));
    let mut est = tls(Side::Client);
    est.alpn = Some("h2".into());
    h.tls_established_client(est).await;
    assert!(h.has_log("tls_established_client example.com b'h2' 22"));
    let mut bad = tls(Side::Server);
    bad.error = Some("certificate unknown".into());
    h.tls_failed_server(bad).await;
    assert!(h.has_log("tls_failed_server certificate unknown"));
}

const PARITY: &str = r#"
from mitmproxy import http

def _r(m):
    return [m.http_version, m.content, list(m.headers.fields), m.trailers and list(m.trailers.fields)]

def sig():
    out = []
    r = http.Request.make("GET", "https://example.com:8443/p?q=1", "body", {"X-A": "1"})
    out.append([r.method, r.scheme, r.host, r.port, r.path, r.url, r.authority, r.pretty_url] + _r(r))
    r = http.Request.make("POST", "http://example.com/", b"", [(b"x-b", b"2"), (b"X-B", b"3")])
    out.append([r.method, r.url, r.authority, r.host_header] + _r(r))
    r = http.Request.make("PUT", "http://h.example:81/x", b"abc", http.Headers(host="h", content_type="t"))
    out.append([r.host, r.port, r.url] + _r(r))
    r = http.Response.make(200, "hi", {"Content-Type": "text/plain"})
    out.append([r.status_code, r.reason] + _r(r))
    r = http.Response.make(404)
    out.append([r.status_code, r.reason] + _r(r))
    r = http.Response.make(302, b"", http.Headers(location="/x"))
    out.append([r.status_code, r.reason] + _r(r))
    r = http.Response.make(418, b"x", [(b"a", b"1")])
    r.trailers = http.Headers(x_t="1")
    r.trailers["y"] = "2"
    out.append([r.status_code, r.reason] + _r(r))
    r.trailers = None
    out.append(r.trailers)
    return repr(out)

def request(flow):
    flow.metadata["sig"] = sig()
    c = flow.copy()
    c.request.path = "/copied"
    c.metadata["copy"] = True
    flow.metadata["copy"] = [c.id != flow.id, c.live, c.request.path, flow.request.path, "copy" in flow.metadata]
    flow.request.trailers = http.Headers(grpc_status="0")

def response(flow):
    t = flow.response.trailers
    flow.metadata["trailers"] = None if t is None else t.get("x-trailer")
    if t is not None:
        t["x-trailer"] = "changed"
        t.add("x-more", "1")

if __name__ == "__main__":
    print(sig())
"#;

/// `Request.make`, `Response.make` and trailers give what mitmproxy 12.3.1's give (the same
/// function run by mitmproxy's own Python), `flow.copy()` is a separate flow, and trailers a
/// script reads and writes are the flow's.
#[actix_rt::test]
async fn make_trailers_and_copy_as_in_mitmproxy() {
    let (mut h, dir) = harness("parity", PARITY).await;
    let flow = h.request(tflow()).await;
    let ours = flow
        .metadata
        .get("sig")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    assert_eq!(
        flow.metadata.get("copy"),
        Some(&serde_json::json!([true, false, "/copied", "/path", false]))
    );
    assert_eq!(
        flow.request
            .trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status")),
        Some("0")
    );

    let mut resp = tresp();
    let mut trailers = waylay_core::Headers::default();
    trailers.append("x-trailer", "sent");
    resp.trailers = Some(Box::new(trailers));
    let flow = h.response(tflow().with_response(resp)).await;
    assert_eq!(
        flow.metadata.get("trailers"),
        Some(&serde_json::json!("sent"))
    );
    let t = flow
        .response
        .and_then(|r| r.message.trailers)
        .expect("trailers");
    assert_eq!(t.get("x-trailer"), Some("changed"));
    assert_eq!(t.get("x-more"), Some("1"));
    let flow = h.response(tflow().with_response(tresp())).await;
    assert_eq!(
        flow.metadata.get("trailers"),
        Some(&serde_json::Value::Null)
    );

    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let out = std::process::Command::new(python)
        .arg(dir.path().join("parity.py"))
        .output()
        .expect("mitmproxy's python runs");
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ours.as_deref(), Some(theirs.as_str()));
}

const HEADERS: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    h = flow.request.headers
    out = []
    try:
        h["x-missing"]
    except KeyError as e:
        out.append("keyerror:" + str(e.args[0]))
    try:
        del h["x-missing"]
    except KeyError:
        out.append("del-keyerror")
    h["X-One"] = "1"
    h["x-one"] = b"2"
    h.add("x-two", "a")
    h.add("X-Two", "b")
    out.append(h["X-ONE"])
    out.append(",".join(h.get_all("x-two")))
    out.append(str("x-two" in h) + str(b"x-two" in h) + str("x-nope" in h))
    out.append(str(h.get("x-nope")) + h.get("x-nope", "dflt"))
    out.append(str(isinstance(h, http.Headers)) + str(len(h.fields) == len(h.items(multi=True))))
    out.append(repr(h.get_all("x-one")))
    c = h.copy()
    c["x-copy"] = "only in the copy"
    out.append(str("x-copy" in h))
    del h["x-two"]
    out.append(str(h.get("x-two")))
    h.update({"x-upd": "u"})
    flow.request.headers["x-report"] = "|".join(out)

def response(flow: http.HTTPFlow) -> None:
    kinds = type(flow).response is not None and type(flow.request).headers is not None
    same = flow.response is flow.response and flow.response.headers is flow.response.headers
    flow.response = None
    gone = flow.response is None
    flow.response = http.Response.make(202, b"made", {"x-made": "1"})
    flow.response.headers = http.Headers(x_set="1")
    flow.response.headers["x-attrs"] = f"{kinds} {same} {gone}"
"#;

/// The flow headers' native view answers as mitmproxy's `Headers` do: case-insensitive
/// keys, `KeyError` for a missing key, str or bytes values, `in`, `get`, `get_all`, `add`,
/// `del`, a copy that is its own, and the rest of the multidict API over the same headers.
#[actix_rt::test]
async fn flow_headers_behave_as_mitmproxys_headers() {
    let (mut h, _dir) = harness("headers", HEADERS).await;
    let f = h.request(tflow()).await;
    let report = f.request.headers.get("x-report").map(str::to_owned);
    assert_eq!(
        report.as_deref(),
        Some(
            "keyerror:x-missing|del-keyerror|2|a,b|TrueTrueFalse|Nonedflt|TrueTrue|['2']|False|None"
        ),
        "logs: {:?}",
        h.logs()
    );
    assert_eq!(f.request.headers.get("x-upd"), Some("u"));
    assert_eq!(f.request.headers.get("x-one"), Some("2"));

    // `flow.response` and `message.headers` (native descriptors): the same view on every
    // read, `None` once removed, a made response adopted, headers replaced by assignment.
    let f = h.response(tflow().with_response(tresp())).await;
    let r = f.response.expect("the made response");
    assert_eq!(r.status_code, 202);
    assert_eq!(
        r.headers.get("x-attrs"),
        Some("True True True"),
        "logs: {:?}",
        h.logs()
    );
    assert_eq!(r.headers.get("x-set"), Some("1"));
    assert_eq!(r.headers.get("x-made"), None);
}

const SWAPS: &str = r#"
from mitmproxy import http
from mitmproxy.flow import Error

def swaps(flow):
    out = []
    old = flow.response
    code = old.status_code
    h = old.headers
    flow.response = None
    out.append(flow.response is None)
    out.append(old.status_code == code)
    h["x-while-out"] = "1"
    flow.response = old
    out.append([flow.response is old, flow.response.status_code == code])
    out.append(flow.response.headers.get("x-while-out"))
    made = http.Response.make(404, b"nope", {"x-made": "1"})
    flow.response = made
    out.append([flow.response.status_code, old.status_code == code, flow.response is made])
    old.headers["x-old"] = "1"
    out.append("x-old" in flow.response.headers)
    flow.response = old
    out.append([flow.response.status_code == code, made.status_code, made.content])
    out.append("x-old" in flow.response.headers)
    made.status_code = 405
    out.append(flow.response.status_code == code)
    flow.response = flow.response
    out.append(flow.response.status_code == code)

    oldreq = flow.request
    path = oldreq.path
    newreq = http.Request.make("POST", "http://other.example/made")
    flow.request = newreq
    out.append([flow.request.path, oldreq.path == path, flow.request is newreq])
    flow.request = oldreq
    out.append([flow.request.path == path, newreq.path, newreq.method, flow.request is oldreq])
    flow.request = oldreq
    out.append(flow.request.path == path)

    flow.error = Error("boom")
    err = flow.error
    out.append([str(flow.error), flow.error.msg])
    flow.error = None
    out.append(flow.error)
    flow.error = err
    out.append([flow.error.msg, flow.error.timestamp == err.timestamp])
    flow.error = None
    return repr(out)

def response(flow):
    flow.comment = swaps(flow)
    flow.response.headers["x-final"] = "1"

if __name__ == "__main__":
    from mitmproxy.test import tflow
    print(swaps(tflow.tflow(resp=True)))
"#;

/// A script that takes `flow.response` (or `flow.request`) out and puts the same object
/// back, or swaps in a `Response.make(...)` and back, gets back the message it took out, as
/// in mitmproxy 12.3.1 (the same function run by mitmproxy's own Python); the object taken
/// out keeps its own data meanwhile (its headers view included), and `flow.error` put back
/// keeps its timestamp.
#[actix_rt::test]
async fn a_response_or_request_taken_out_and_put_back_is_restored() {
    let (mut h, dir) = harness("swaps", SWAPS).await;
    let mut resp = tresp();
    resp.headers.insert("x-orig", "kept");
    let f = h.response(tflow().with_response(resp)).await;
    let ours = f.comment.clone();
    assert!(!h.has_log("error in hook"), "{:?}", h.logs());
    let r = f.response.as_ref().expect("the response put back");
    assert_eq!(r.status_code, tresp().status_code);
    assert_eq!(r.headers.get("x-orig"), Some("kept"));
    assert_eq!(r.headers.get("x-old"), Some("1"));
    assert_eq!(r.headers.get("x-while-out"), Some("1"));
    assert_eq!(r.headers.get("x-final"), Some("1"));
    assert_eq!(r.headers.get("x-made"), None);
    assert_eq!(f.request.path, tflow().request.path);
    assert_eq!(f.request.method, tflow().request.method);
    assert!(f.error.is_none());

    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let out = std::process::Command::new(python)
        .arg(dir.path().join("swaps.py"))
        .output()
        .expect("mitmproxy's python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(ours, theirs);
}

const NON_UTF8: &str = r#"
def request(flow):
    h = flow.request.headers
    v = h["x-latin1"]
    # Read as mitmproxy reads it (UTF-8, other bytes as surrogate escapes), written back as
    # text and as bytes under a bytes name: the same bytes each time.
    h["x-copy"] = v
    h[b"x-bytes-name"] = v.encode("utf-8", "surrogateescape")
    h["x-repr"] = repr(v) + " " + repr(h.get_all(b"X-LATIN1"))
"#;

/// A header value that is not UTF-8 survives a read and a write unchanged, whichever way the
/// script names the field.
#[actix_rt::test]
async fn header_bytes_that_are_not_utf8_round_trip() {
    let (mut h, _d) = harness("non_utf8", NON_UTF8).await;
    let mut flow = tflow();
    flow.request.headers.insert("x-latin1", &b"caf\xe9"[..]);
    let flow = h.request(flow).await;
    let raw = |n| flow.request.headers.get_bytes(n).map(<[u8]>::to_vec);
    assert_eq!(raw("x-copy").as_deref(), Some(&b"caf\xe9"[..]));
    assert_eq!(raw("x-bytes-name").as_deref(), Some(&b"caf\xe9"[..]));
    assert_eq!(
        flow.request.headers.get("x-repr"),
        Some("'caf\\udce9' ['caf\\udce9']")
    );
}

const STRUTILS: &str = r#"
from mitmproxy import types
from mitmproxy.utils import strutils

def request(flow):
    h = flow.request.headers
    data = b"a'b\"c\n\t\x00\xff\\\\'"
    e = strutils.bytes_to_escaped_str(data)
    h["x-escaped"] = e
    h["x-kept"] = repr(strutils.bytes_to_escaped_str(b"a\nb'", keep_spacing=True, escape_single_quotes=True))
    h["x-round-trip"] = str(strutils.escaped_str_to_bytes(e) == data)
    h["x-control"] = strutils.escape_control_characters("a\x01b\tc\x7f", keep_spacing=False)
    h["x-always"] = repr((strutils.always_str(b"x"), strutils.always_bytes("y"), strutils.always_str(None)))
    h["x-path"] = str(issubclass(types.Path, str))
"#;

/// `mitmproxy.utils.strutils` as scripts use it (mitmproxy's tcp-simple example imports it),
/// and `mitmproxy.types.Path` for command annotations. Escaping round-trips, also a run of
/// backslashes before a quote, which mitmproxy's version shortens (`b"\\\\'"` comes back
/// as `b"\\'"`).
#[actix_rt::test]
async fn strutils_and_command_types() {
    let (mut h, _d) = harness("strutils", STRUTILS).await;
    let flow = h.request(tflow()).await;
    let get = |n| flow.request.headers.get(n).map(str::to_owned);
    assert_eq!(
        get("x-escaped").as_deref(),
        Some(r#"a'b"c\n\t\x00\xff\\\\'"#)
    );
    // A real newline (kept), an escaped quote (asked for): Python's repr of that text.
    assert_eq!(get("x-kept").as_deref(), Some(r#""a\nb\\'""#));
    assert_eq!(get("x-round-trip").as_deref(), Some("True"));
    assert_eq!(get("x-control").as_deref(), Some("a.b.c."));
    assert_eq!(get("x-always").as_deref(), Some("('x', b'y', None)"));
    assert_eq!(get("x-path").as_deref(), Some("True"));
}

const LOAD_OPTIONS: &str = r#"
from mitmproxy import ctx

def load(loader):
    loader.add_option("mine", int, 4, "Mine.")
    global seen
    seen = f"{ctx.options.listen_port} {ctx.options.ssl_insecure} {ctx.options.mine}"

def request(flow):
    flow.request.headers["x-seen"] = seen
"#;

/// A script loaded by the harness reads the harness's options in `load`, as it would in the
/// proxy (its own option at its default there).
#[actix_rt::test]
async fn a_script_reads_options_in_load() {
    let (mut h, _d) = harness("load_options", LOAD_OPTIONS).await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.headers.get("x-seen"), Some("8080 False 4"));
}
