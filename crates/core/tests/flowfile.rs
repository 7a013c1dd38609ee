#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]
//! Flow files in mitmproxy's format: waylay -> waylay, mitmproxy's fixture -> waylay (field by
//! field), waylay -> mitmproxy's own reader, damaged files, old versions, HAR.

use std::sync::Arc;

use bytes::Bytes;
use waylay_core::flow::{Server, TlsInfo, WebSocketMessage};
use waylay_core::flowfile::tnetstring::{self, Value};
use waylay_core::flowfile::{self, FlowFileError, FlowReader, FlowWriter};
use waylay_core::{Flow, FlowError, Headers, HttpFlow};
use waylay_testkit::{FlowExt, tflow, tresp, ttcpflow, twebsocketflow};

const FIXTURE: &[u8] = include_bytes!("data/mitmproxy-12.3.1.flows");
const FIXTURE_CERT: &[u8] = include_bytes!("data/mitmproxy-12.3.1-cert.der");
const FIXTURE_HAR: &str = include_str!("data/mitmproxy-12.3.1.har");
const T0: f64 = 1_700_000_000.0;

fn write(flows: &[Flow]) -> Vec<u8> {
    let mut w = FlowWriter::new(Vec::new());
    for f in flows {
        w.add(f).unwrap();
    }
    w.into_inner()
}

fn read(data: &[u8]) -> Vec<Result<Flow, FlowFileError>> {
    FlowReader::new(data).collect()
}

fn read_ok(data: &[u8]) -> Vec<Flow> {
    read(data).into_iter().map(Result::unwrap).collect()
}

fn http(f: &Flow) -> &HttpFlow {
    match f {
        Flow::Http(h) => h,
        Flow::Tcp(_) => panic!("expected an HTTP flow"),
    }
}

/// Flows as they come back from a file: not live, with every optional part filled in.
fn sample_flows() -> Vec<Flow> {
    let mut plain = tflow().with_response(tresp());
    plain
        .request
        .headers
        .append("X-Binary", Bytes::from_static(b"\xff\xfe \xe9"));
    plain.request.headers.append("x-dup", "1");
    plain.request.headers.append("X-Dup", "2");
    plain.request.trailers = Some(Box::new(Headers::from_pairs([("grpc-status", "0")])));
    plain.request.timestamp_end = Some(plain.request.timestamp_start + 0.5);
    plain.marked = ":star:".into();
    plain.comment = "note".into();
    plain.is_replay = Some("request".into());
    plain.metadata.insert(
        "k".into(),
        serde_json::json!({"a": [1, 2.5, "x", null, true]}),
    );

    let mut ws = twebsocketflow();
    let data = ws.websocket.as_mut().unwrap();
    data.messages
        .push(WebSocketMessage::binary(false, &b"\x00\x01\xff"[..]));
    data.messages[0].dropped = true;
    data.messages[1].injected = true;
    data.closed_by_client = Some(false);
    data.close_code = Some(1001);
    data.close_reason = "going away".into();
    data.timestamp_end = Some(1.5e9);

    let err = tflow().with_error("Connection refused");

    let mut tls = tflow().with_response(tresp());
    let mut client = (*tls.client).clone();
    client.tls = Some(TlsInfo {
        sni: Some("example.com".into()),
        alpn: Some("h2".into()),
        alpn_offers: vec!["h2".into(), "http/1.1".into()],
        version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
        certificate_list: Vec::new(),
    });
    client.timestamp_tls_setup = Some(client.timestamp_start + 0.1);
    tls.client = Arc::new(client);
    let mut server = Server::new(waylay_core::flow::Address::new("example.com", 443));
    server.tls = true;
    server.sni = Some("example.com".into());
    server.peername = Some("[::1]:443".parse().unwrap());
    server.sockname = Some("[::1]:50000".parse().unwrap());
    server.timestamp_start = Some(1.0);
    server.timestamp_tcp_setup = Some(1.25);
    server.timestamp_tls_setup = Some(1.5);
    server.tls_info = Some(TlsInfo {
        sni: Some("example.com".into()),
        alpn: Some("h2".into()),
        alpn_offers: vec!["h2".into()],
        version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
        certificate_list: vec![Bytes::from_static(FIXTURE_CERT)],
    });
    tls.server = Some(Arc::new(server));
    tls.request.scheme = "https".into();
    tls.request.port = 443;

    let mut tcp = ttcpflow();
    tcp.error = Some(FlowError::new("connection reset"));

    let mut flows: Vec<Flow> = vec![
        Flow::Http(Box::new(plain)),
        Flow::Http(Box::new(ws)),
        Flow::Http(Box::new(err)),
        Flow::Http(Box::new(tls)),
        Flow::Tcp(Box::new(tcp)),
    ];
    for f in &mut flows {
        match f {
            Flow::Http(h) => h.live = false,
            Flow::Tcp(t) => t.live = false,
        }
    }
    flows
}

/// The state of an HTTP flow with no server connection carries a fresh id for it on every
/// encoding; blank it so two encodings compare.
fn without_fresh_server_ids(mut v: Value, flow: &Flow) -> Value {
    let unconnected = match flow {
        Flow::Http(h) => h.server.is_none(),
        Flow::Tcp(t) => t.server.is_none(),
    };
    if unconnected && let Some(srv) = v.get_mut("server_conn") {
        srv.set("id", Value::Null);
    }
    v
}

#[test]
fn direct_encoding_matches_the_value_tree_byte_for_byte() {
    let mut flows = sample_flows();
    flows.extend(read_ok(FIXTURE));
    // Metadata of every JSON shape, an unconnected server, an empty body, big numbers.
    let mut odd = tflow();
    odd.request.set_raw_content(Vec::new());
    odd.metadata.insert(
        "m".into(),
        serde_json::json!({"big": u64::MAX, "neg": -5, "f": 1e-7, "s": "é", "l": [[], {}]}),
    );
    odd.timestamp_created = 1e21;
    flows.push(Flow::Http(Box::new(odd)));
    for flow in &flows {
        let direct = write(std::slice::from_ref(flow));
        let tree = flowfile::to_state(flow).encode();
        let unconnected = match flow {
            Flow::Http(h) => h.server.is_none(),
            Flow::Tcp(t) => t.server.is_none(),
        };
        if unconnected {
            assert_eq!(direct.len(), tree.len());
            let direct = tnetstring::decode(&Bytes::from(direct)).unwrap();
            let tree = tnetstring::decode(&Bytes::from(tree)).unwrap();
            assert_eq!(
                without_fresh_server_ids(direct, flow),
                without_fresh_server_ids(tree, flow)
            );
        } else {
            assert!(direct == tree, "flow {} encodes differently", flow.id());
        }
    }
}

#[test]
fn waylay_to_waylay_round_trip() {
    let flows = sample_flows();
    let back = read_ok(&write(&flows));
    assert_eq!(back.len(), flows.len());
    for (a, b) in flows.iter().zip(&back) {
        assert_eq!(a, b);
    }
}

/// A flow whose streamed response body (`len` bytes, in 64 KiB chunks of a pattern) was
/// kept with `store_streamed_bodies`, and the pattern's bytes.
fn stored_body_flow(dir: &std::path::Path, len: usize) -> (Flow, Vec<u8>) {
    let mut f = tflow().with_response(tresp());
    f.live = false;
    let want: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let (mut store, stored) = waylay_core::flow::BodyStore::create_in(dir).unwrap();
    for chunk in want.chunks(64 * 1024) {
        store.push(chunk);
    }
    assert!(!stored.is_complete(), "complete only once finished");
    store.finish();
    let resp = f.response.as_mut().unwrap();
    resp.raw_content = None;
    resp.stream = true;
    resp.stored_body = Some(stored);
    (Flow::Http(Box::new(f)), want)
}

#[test]
fn a_stored_streamed_body_is_written_from_its_file() {
    let dir = waylay_testkit::TempDir::new("stored-body");
    let (flow, want) = stored_body_flow(dir.path(), 300_000);
    let data = write(std::slice::from_ref(&flow));
    // The value tree (`to_state`) writes the same bytes.
    assert!(flowfile::to_state(&flow).encode() == data);
    let back = read_ok(&data);
    let r = http(&back[0]).response.as_ref().unwrap();
    assert_eq!(r.raw_content.as_deref(), Some(&want[..]));
    assert!(!r.stream, "a stored body reads back as an ordinary one");

    // HAR has it too.
    let har = flowfile::har::document([&flow]);
    let resp = &har["log"]["entries"][0]["response"];
    assert_eq!(resp["bodySize"], want.len());
    assert_eq!(resp["content"]["size"], want.len());
    assert!(resp["content"]["text"].as_str().unwrap().len() >= want.len());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let mode = file.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read a stored body");
    }

    // Dropping every copy of the flow removes the file.
    let files = || std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files(), 1);
    drop(flow);
    assert_eq!(files(), 0);

    // A body that ended early (its store dropped unfinished) is not written.
    let (mut store, stored) = waylay_core::flow::BodyStore::create_in(dir.path()).unwrap();
    store.push(b"part of it");
    drop(store);
    assert!(!stored.is_complete());
    let mut f = tflow().with_response(tresp());
    let resp = f.response.as_mut().unwrap();
    resp.raw_content = None;
    resp.stream = true;
    resp.stored_body = Some(stored);
    let back = read_ok(&write(&[Flow::Http(Box::new(f))]));
    let r = http(&back[0]).response.as_ref().unwrap();
    assert_eq!(r.raw_content, None);
    assert!(r.stream);
}

#[test]
fn a_stored_streamed_body_opens_in_mitmproxy() {
    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let dir = waylay_testkit::TempDir::new("stored-body-mitmproxy");
    let (flow, want) = stored_body_flow(dir.path(), 1 << 20);
    let path = dir.path().join("stored.flows");
    std::fs::write(&path, write(&[flow])).unwrap();
    let script = r#"
import sys
from mitmproxy import io
for f in io.FlowReader(open(sys.argv[1], "rb")).stream():
    body = f.response.raw_content
    print(len(body), body == bytes(i % 251 for i in range(len(body))))
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} True", want.len())
    );
}

#[test]
fn streamed_body_is_written_as_none_and_read_back_as_streamed() {
    let mut f = tflow().with_response(tresp());
    f.live = false;
    let resp = f.response.as_mut().unwrap();
    resp.raw_content = None;
    resp.stream = true;
    let back = read_ok(&write(&[Flow::Http(Box::new(f.clone()))]));
    let b = http(&back[0]);
    assert_eq!(b.response.as_ref().unwrap().raw_content, None);
    assert!(b.response.as_ref().unwrap().stream);
    assert_eq!(b, &f);
}

#[test]
fn mitmproxy_fixture_reads_field_by_field() {
    let flows = read_ok(FIXTURE);
    assert_eq!(flows.len(), 5);

    // 1: POST with a gzip response, marked, commented, with metadata.
    let f = http(&flows[0]);
    assert_eq!(f.id.to_string(), "00000000-0000-4000-8000-000000000001");
    assert!(!f.live);
    assert_eq!(f.request.method, "POST");
    assert_eq!(f.request.scheme, "http");
    assert_eq!(f.request.host, "example.com");
    assert_eq!(f.request.port, 8080);
    assert_eq!(f.request.path, "/submit?a=1&b=two");
    assert_eq!(f.request.url(), "http://example.com:8080/submit?a=1&b=two");
    assert_eq!(
        f.request.headers.get_all("x-dup").collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert_eq!(f.request.headers.fields()[2].0, "X-Dup");
    assert_eq!(f.request.raw_content.as_deref(), Some(&b"hello=world"[..]));
    assert_eq!(f.request.timestamp_start, T0 + 1.1);
    assert_eq!(f.request.timestamp_end, Some(T0 + 1.2));
    let r = f.response.as_ref().unwrap();
    assert_eq!((r.status_code, r.reason.as_str()), (201, "Created"));
    assert_eq!(r.headers.get("content-encoding"), Some("gzip"));
    assert_eq!(&r.content().unwrap()[..], br#"{"ok": true}"#);
    assert_eq!(r.timestamp_end, Some(T0 + 1.4));
    assert_eq!(f.marked, ":star:");
    assert_eq!(f.comment, "a comment");
    assert_eq!(f.metadata["note"], "hello");
    assert_eq!(f.metadata["n"], 1);
    assert_eq!(f.timestamp_created, T0 + 1.05);
    assert_eq!(f.client.peername, "127.0.0.1:50001".parse().unwrap());
    assert_eq!(f.client.sockname, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        f.client.id.to_string(),
        "00000000-0000-4000-8000-00000000c001"
    );
    assert_eq!(f.client.proxy_mode, "regular");
    assert!(f.client.tls.is_none());
    assert_eq!(f.client.timestamp_end, Some(T0 + 1.9));
    let s = f.server.as_deref().unwrap();
    assert_eq!(s.address.to_string(), "example.com:8080");
    assert_eq!(s.peername, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(s.sockname, Some("127.0.0.1:40001".parse().unwrap()));
    assert_eq!(s.timestamp_tcp_setup, Some(T0 + 1.03));
    assert!(!s.tls && s.tls_info.is_none());

    // 2: WebSocket.
    let f = http(&flows[1]);
    assert_eq!(f.response.as_ref().unwrap().status_code, 101);
    let ws = f.websocket.as_ref().unwrap();
    assert_eq!(ws.messages.len(), 3);
    assert!(ws.messages[0].is_text() && ws.messages[0].from_client);
    assert_eq!(&ws.messages[0].content[..], b"hello text");
    assert!(!ws.messages[1].is_text() && !ws.messages[1].from_client);
    assert_eq!(&ws.messages[1].content[..], b"\x00\x01\xff");
    assert_eq!(ws.messages[1].timestamp, T0 + 2.4);
    assert!(ws.messages[2].dropped && !ws.messages[2].injected);
    assert_eq!(ws.closed_by_client, Some(true));
    assert_eq!(ws.close_code, Some(1000));
    assert_eq!(ws.close_reason, "bye");
    assert_eq!(ws.timestamp_end, Some(T0 + 2.6));

    // 3: TCP.
    let Flow::Tcp(t) = &flows[2] else {
        panic!("expected a TCP flow")
    };
    assert_eq!(t.messages.len(), 2);
    assert!(t.messages[0].from_client);
    assert_eq!(&t.messages[0].content[..], b"hello");
    assert_eq!(&t.messages[1].content[..], b"\x00binary\xff");
    assert_eq!(t.messages[1].timestamp, T0 + 3.2);
    assert_eq!(
        t.server.as_deref().unwrap().address.to_string(),
        "127.0.0.1:7000"
    );

    // 4: an error flow.
    let f = http(&flows[3]);
    assert!(f.response.is_none());
    let e = f.error.as_ref().unwrap();
    assert_eq!(
        (e.msg.as_str(), e.timestamp),
        ("Connection refused", T0 + 4.2)
    );
    let s = f.server.as_deref().unwrap();
    assert_eq!(s.error.as_deref(), Some("Connection refused"));
    assert_eq!(s.peername, None);

    // 5: HTTPS over HTTP/2 with TLS details on both sides.
    let f = http(&flows[4]);
    assert_eq!(f.request.scheme, "https");
    assert_eq!(f.request.authority, "example.com");
    assert_eq!(f.request.http_version.as_str(), "HTTP/2.0");
    let c = f.client.tls.as_ref().unwrap();
    assert_eq!(c.sni.as_deref(), Some("example.com"));
    assert_eq!(c.alpn.as_deref(), Some("h2"));
    assert_eq!(c.alpn_offers, ["h2", "http/1.1"]);
    assert_eq!(c.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(c.cipher.as_deref(), Some("TLS_AES_256_GCM_SHA384"));
    assert_eq!(f.client.timestamp_tls_setup, Some(T0 + 5.01));
    let s = f.server.as_deref().unwrap();
    assert!(s.tls);
    assert_eq!(s.sni.as_deref(), Some("example.com"));
    assert_eq!(s.timestamp_tls_setup, Some(T0 + 5.04));
    let st = s.tls_info.as_ref().unwrap();
    assert_eq!(st.certificate_list, [Bytes::from_static(FIXTURE_CERT)]);
    assert_eq!(st.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(
        &f.response.as_ref().unwrap().raw_content.as_ref().unwrap()[..],
        b"<p>secure</p>"
    );
}

#[test]
fn mitmproxy_fixture_survives_a_waylay_rewrite() {
    let flows = read_ok(FIXTURE);
    let again = read_ok(&write(&flows));
    assert_eq!(flows, again);
}

#[test]
fn a_truncated_file_yields_the_flows_before_and_one_error() {
    let mut data = write(&sample_flows()[..2]);
    let second_len = data.len();
    data.extend_from_slice(&write(&sample_flows()[2..3]));
    data.truncate(data.len() - 10);
    let got = read(&data);
    assert_eq!(got.len(), 3, "two flows, then one error");
    assert!(got[0].is_ok() && got[1].is_ok());
    let e = got[2].as_ref().unwrap_err();
    assert!(
        matches!(e, FlowFileError::Truncated { index: 3, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("truncated") && msg.contains("flow #3"),
        "{msg}"
    );
    assert!(msg.contains(&format!("at byte {second_len}")), "{msg}");
}

#[test]
fn a_corrupt_file_yields_the_flows_before_and_one_error() {
    let mut data = write(&sample_flows()[..1]);
    let first = data.len();
    let mut second = write(&sample_flows()[1..2]);
    // Break a type tag deep inside the second flow.
    let i = second.iter().rposition(|b| *b == b';').unwrap();
    second[i] = b'?';
    data.extend_from_slice(&second);
    data.extend_from_slice(&write(&sample_flows()[2..3]));
    let got = read(&data);
    assert_eq!(got.len(), 2);
    assert!(got[0].is_ok());
    let e = got[1].as_ref().unwrap_err();
    assert!(matches!(e, FlowFileError::Corrupt { index: 2, .. }), "{e}");
    let FlowFileError::Corrupt { offset, .. } = e else {
        unreachable!()
    };
    assert!(*offset as usize >= first);

    let got = read(b"12:not a flow");
    assert!(
        matches!(got[..], [Err(FlowFileError::Truncated { .. })]),
        "{got:?}"
    );
    let got = read(b"hello");
    assert!(
        matches!(got[..], [Err(FlowFileError::Corrupt { .. })]),
        "{got:?}"
    );
    assert!(read(b"").is_empty());
}

fn fixture_states() -> Vec<Value> {
    let mut out = Vec::new();
    let data = Bytes::from_static(FIXTURE);
    let mut pos = 0;
    while pos < data.len() {
        let colon = data[pos..].iter().position(|b| *b == b':').unwrap();
        let len: usize = std::str::from_utf8(&data[pos..pos + colon])
            .unwrap()
            .parse()
            .unwrap();
        let end = pos + colon + 1 + len + 1;
        out.push(tnetstring::decode(&data.slice(pos..end)).unwrap());
        pos = end;
    }
    out
}

#[test]
fn older_versions_are_migrated_and_unknown_ones_refused() {
    // A version-17 flow as mitmproxy 9 wrote it: no proxy_mode, client `address`, server
    // `ip_address`/`source_address`, `tls_established`, `cipher_name`, a `state` field.
    let mut st = fixture_states().remove(0);
    st.set("version", Value::Int(17));
    st.set("marked", Value::str(":default:"));
    let c = st.get_mut("client_conn").unwrap();
    c.remove("proxy_mode");
    let peer = c.remove("peername").unwrap();
    c.set("address", peer);
    c.set("tls_extensions", Value::List(vec![]));
    c.set("tls_established", Value::Bool(false));
    c.set("state", Value::Int(0));
    let s = st.get_mut("server_conn").unwrap();
    let peer = s.remove("peername").unwrap();
    s.set("ip_address", peer);
    let sock = s.remove("sockname").unwrap();
    s.set("source_address", sock);
    s.remove("via");
    s.set("via2", Value::Null);
    let cipher = s.remove("cipher").unwrap();
    s.set("cipher_name", cipher);
    s.set("tls_established", Value::Bool(false));
    let flows = read_ok(&st.encode());
    let f = http(&flows[0]);
    assert_eq!(f.client.peername, "127.0.0.1:50001".parse().unwrap());
    assert_eq!(
        f.server.as_deref().unwrap().sockname,
        Some("127.0.0.1:40001".parse().unwrap())
    );
    assert_eq!(f.client.proxy_mode, "regular");

    // Version 12: `marked` was a boolean, no comment, no timestamp_created.
    let mut st = fixture_states().remove(0);
    st.set("version", Value::Int(12));
    st.set("marked", Value::Bool(true));
    st.remove("comment");
    st.remove("timestamp_created");
    let flows = read_ok(&st.encode());
    let f = http(&flows[0]);
    assert_eq!(f.marked, ":default:");
    assert_eq!(f.comment, "");
    assert_eq!(f.timestamp_created, T0 + 1.1);

    for (v, want) in [
        (Value::Int(11), "too old"),
        (Value::List(vec![Value::Int(0), Value::Int(18)]), "too old"),
        (Value::Int(22), "newer than this waylay reads"),
    ] {
        let mut st = fixture_states().remove(0);
        st.set("version", v);
        let got = read(&st.encode());
        let msg = got[0].as_ref().unwrap_err().to_string();
        assert!(msg.contains(want) && msg.contains("flow #1"), "{msg}");
    }

    let mut st = fixture_states().remove(0);
    st.set("type", Value::str("dns"));
    let msg = read(&st.encode())[0].as_ref().unwrap_err().to_string();
    assert!(msg.contains("\"dns\" is not supported"), "{msg}");
    let mut st = fixture_states().remove(0);
    st.get_mut("request")
        .unwrap()
        .set("port", Value::str("eighty"));
    let msg = read(&st.encode())[0].as_ref().unwrap_err().to_string();
    assert!(msg.contains("request.port: expected an integer"), "{msg}");
}

#[test]
fn waylay_files_open_in_mitmproxy() {
    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let dir = waylay_testkit::TempDir::new("flowfile");
    let path = dir.path().join("waylay.flows");
    let flows = sample_flows();
    std::fs::write(&path, write(&flows)).unwrap();
    let script = r#"
import json, sys
from mitmproxy import io, http, tcp
out = []
for f in io.FlowReader(open(sys.argv[1], "rb")).stream():
    d = {"type": f.type, "id": f.id, "marked": f.marked, "comment": f.comment,
         "error": f.error.msg if f.error else None, "metadata": f.metadata,
         "client_peer": list(f.client_conn.peername), "client_tls": f.client_conn.tls_version,
         "client_sni": f.client_conn.sni, "server_address": list(f.server_conn.address or []),
         "server_certs": len(f.server_conn.certificate_list),
         "server_cert_cn": f.server_conn.certificate_list[0].cn if f.server_conn.certificate_list else None}
    if isinstance(f, http.HTTPFlow):
        d["url"] = f.request.url
        d["req_headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in f.request.headers.fields]
        d["req_body"] = f.request.get_text()
        d["trailers"] = [[k, v] for k, v in f.request.trailers.items(multi=True)] if f.request.trailers else None
        d["is_replay"] = f.is_replay
        if f.response:
            d["status"] = f.response.status_code
            d["resp_body"] = f.response.get_text()
        if f.websocket:
            d["ws"] = [[m.type.name, m.from_client, m.content.hex(), m.dropped, m.injected] for m in f.websocket.messages]
            d["ws_close"] = [f.websocket.closed_by_client, f.websocket.close_code, f.websocket.close_reason]
    else:
        d["messages"] = [[m.from_client, m.content.hex()] for m in f.messages]
    out.append(d)
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got.as_array().unwrap().len(), flows.len());
    let plain = http(&flows[0]);
    let g = &got[0];
    assert_eq!(g["type"], "http");
    assert_eq!(g["id"], plain.id.to_string());
    assert_eq!(g["url"], "http://example.com/path");
    assert_eq!(g["marked"], ":star:");
    assert_eq!(g["comment"], "note");
    assert_eq!(g["is_replay"], "request");
    assert_eq!(
        g["metadata"]["k"],
        serde_json::json!({"a": [1, 2.5, "x", null, true]})
    );
    assert_eq!(g["req_body"], "content");
    assert_eq!(g["resp_body"], "message");
    assert_eq!(g["status"], 200);
    assert_eq!(g["client_peer"], serde_json::json!(["127.0.0.1", 22]));
    assert_eq!(g["trailers"], serde_json::json!([["grpc-status", "0"]]));
    let headers = g["req_headers"].as_array().unwrap();
    assert!(headers.contains(&serde_json::json!(["x-dup", "1"])));
    assert!(headers.contains(&serde_json::json!(["X-Dup", "2"])));
    let g = &got[1];
    assert_eq!(
        g["ws"],
        serde_json::json!([
            ["BINARY", true, hex(b"hello binary"), true, false],
            ["TEXT", true, hex(b"hello text"), false, true],
            ["TEXT", false, hex(b"it's me"), false, false],
            ["BINARY", false, "0001ff", false, false],
        ])
    );
    assert_eq!(
        g["ws_close"],
        serde_json::json!([false, 1001, "going away"])
    );
    assert_eq!(got[2]["error"], "Connection refused");
    let g = &got[3];
    assert_eq!(g["url"], "https://example.com/path");
    assert_eq!(g["client_tls"], "TLSv1.3");
    assert_eq!(g["client_sni"], "example.com");
    assert_eq!(g["server_address"], serde_json::json!(["example.com", 443]));
    assert_eq!(g["server_certs"], 1);
    assert_eq!(g["server_cert_cn"], "example.com");
    let g = &got[4];
    assert_eq!(g["type"], "tcp");
    assert_eq!(g["error"], "connection reset");
    assert_eq!(
        g["messages"],
        serde_json::json!([[true, hex(b"hello")], [false, hex(b"it's me")]])
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

#[test]
fn har_matches_mitmproxys_hardump_field_by_field() {
    let flows = read_ok(FIXTURE);
    let ours = flowfile::har::document(&flows);
    let theirs: serde_json::Value = serde_json::from_str(FIXTURE_HAR).unwrap();
    assert_eq!(ours["log"]["version"], "1.2");
    assert_eq!(ours["log"]["creator"]["name"], "waylay");
    let (a, b) = (
        ours["log"]["entries"].as_array().unwrap(),
        theirs["log"]["entries"].as_array().unwrap(),
    );
    assert_eq!(a.len(), 4, "the TCP flow is skipped");
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let mut x = x.clone();
        let mut y = y.clone();
        // On purpose: waylay counts the header bytes, mitmproxy the length of a Python repr.
        for v in [&mut x, &mut y] {
            for part in ["request", "response"] {
                if v[part]["headersSize"] != -1 {
                    v[part]["headersSize"] = 0.into();
                }
            }
        }
        close_floats(&mut x, &y);
        assert_eq!(x, y, "entry {i}");
    }
}

/// Copies `want`'s float where `got` has a float within a microsecond (timings are
/// differences of timestamps, computed in another order by mitmproxy).
fn close_floats(got: &mut serde_json::Value, want: &serde_json::Value) {
    match (got, want) {
        (serde_json::Value::Number(g), serde_json::Value::Number(w)) => {
            if let (Some(a), Some(b)) = (g.as_f64(), w.as_f64())
                && (a - b).abs() < 1e-3
            {
                *g = w.clone();
            }
        }
        (serde_json::Value::Object(g), serde_json::Value::Object(w)) => {
            for (k, v) in g.iter_mut() {
                if let Some(wv) = w.get(k) {
                    close_floats(v, wv);
                }
            }
        }
        (serde_json::Value::Array(g), serde_json::Value::Array(w)) => {
            for (v, wv) in g.iter_mut().zip(w) {
                close_floats(v, wv);
            }
        }
        _ => {}
    }
}

#[test]
fn har_files_are_read_as_flows() {
    let flows = read_ok(FIXTURE);
    let har = serde_json::to_vec(&flowfile::har::document(&flows)).unwrap();
    let mut with_bom = b"\xef\xbb\xbf".to_vec();
    with_bom.extend_from_slice(&har);
    for data in [har.clone(), with_bom] {
        let back = read_ok(&data);
        assert_eq!(back.len(), 4);
        let f = http(&back[0]);
        assert_eq!(f.request.method, "POST");
        assert_eq!(f.request.url(), "http://example.com:8080/submit?a=1&b=two");
        assert_eq!(f.request.raw_content.as_deref(), Some(&b"hello=world"[..]));
        assert_eq!(f.request.timestamp_start, T0 + 1.1);
        let r = f.response.as_ref().unwrap();
        assert_eq!(r.status_code, 201);
        assert_eq!(&r.content().unwrap()[..], br#"{"ok": true}"#);
        // The port comes from the URL (mitmproxy guesses 80 or 443 from the scheme).
        assert_eq!(
            f.server.as_deref().unwrap().peername,
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let ws = http(&back[1]);
        assert_eq!(ws.response.as_ref().unwrap().status_code, 101);
        let e = http(&back[2]);
        assert_eq!(e.error.as_ref().unwrap().msg, "Connection refused");
        let s = http(&back[3]);
        assert_eq!(s.request.url(), "https://example.com/secure");
        assert_eq!(s.request.http_version.as_str(), "HTTP/2.0");
    }
    // mitmproxy's own HAR output reads too.
    assert_eq!(read_ok(FIXTURE_HAR.as_bytes()).len(), 4);
    let got = read(b"{\"log\": {}}");
    let msg = got[0].as_ref().unwrap_err().to_string();
    assert!(msg.contains("not a valid HAR file"), "{msg}");
}

/// Records every flow hook it sees, with the number of WebSocket/TCP messages at that point.
#[derive(Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl waylay_core::Addon for Recorder {
    async fn request_headers(&mut self, _f: &mut HttpFlow) {
        self.push("requestheaders");
    }
    async fn request(&mut self, _f: &mut HttpFlow) {
        self.push("request");
    }
    async fn response_headers(&mut self, _f: &mut HttpFlow) {
        self.push("responseheaders");
    }
    async fn response(&mut self, _f: &mut HttpFlow) {
        self.push("response");
    }
    async fn error(&mut self, _f: &mut HttpFlow) {
        self.push("error");
    }
    async fn websocket_start(&mut self, f: &mut HttpFlow) {
        self.push(&format!("websocket_start {}", ws_len(f)));
    }
    async fn websocket_message(&mut self, f: &mut HttpFlow) {
        self.push(&format!("websocket_message {}", ws_len(f)));
    }
    async fn websocket_end(&mut self, f: &mut HttpFlow) {
        self.push(&format!("websocket_end {}", ws_len(f)));
    }
    async fn tcp_start(&mut self, f: &mut waylay_core::TcpFlow) {
        self.push(&format!("tcp_start {}", f.messages.len()));
    }
    async fn tcp_message(&mut self, f: &mut waylay_core::TcpFlow) {
        self.push(&format!("tcp_message {}", f.messages.len()));
    }
    async fn tcp_end(&mut self, f: &mut waylay_core::TcpFlow) {
        self.push(&format!("tcp_end {}", f.messages.len()));
    }
}

fn ws_len(f: &HttpFlow) -> usize {
    f.websocket.as_ref().map_or(0, |w| w.messages.len())
}

impl Recorder {
    fn push(&self, s: &str) {
        self.0.lock().unwrap().push(s.to_owned());
    }
}

#[actix_rt::test]
async fn recorded_flows_play_through_the_hooks_in_live_order() {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = waylay_testkit::AddonHarness::new(Recorder(log.clone())).await;
    let flows = read_ok(FIXTURE);
    let mut back = Vec::new();
    for f in flows.clone() {
        back.push(flowfile::play(h.manager(), f).await.unwrap());
    }
    assert_eq!(back, flows, "playing gives the flows back whole");
    let got = log.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "requestheaders",
            "request",
            "responseheaders",
            "response",
            // WebSocket: messages re-appear one by one.
            "requestheaders",
            "request",
            "responseheaders",
            "response",
            "websocket_start 0",
            "websocket_message 1",
            "websocket_message 2",
            "websocket_message 3",
            "websocket_end 3",
            "tcp_start 0",
            "tcp_message 1",
            "tcp_message 2",
            "tcp_end 2",
            "requestheaders",
            "request",
            "error",
            "requestheaders",
            "request",
            "responseheaders",
            "response",
        ]
    );
    let kinds: Vec<&str> = flows
        .iter()
        .flat_map(flowfile::hook_sequence)
        .map(|k| k.name())
        .collect();
    let names: Vec<&str> = got.iter().map(|s| s.split(' ').next().unwrap()).collect();
    assert_eq!(kinds, names);
}

mod direct_encoding {
    //! The direct encoder against the value tree on random flows.
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e12f64..1e12).prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    prop_compose! {
        fn http_flow()(
            headers in proptest::collection::vec(("[A-Za-z-]{1,12}", bytes()), 0..8),
            body in proptest::option::of(bytes()),
            resp_body in proptest::option::of(bytes()),
            meta in proptest::collection::btree_map("[a-z]{1,6}", json(), 0..4),
            comment in "\\PC{0,20}",
            path in "/[ -~]{0,30}",
            port in any::<u16>(),
            ts in 0f64..2e9,
            error in proptest::option::of("\\PC{0,20}"),
            ws in proptest::collection::vec((any::<bool>(), bytes(), any::<bool>()), 0..4),
        ) -> Flow {
            let mut f = tflow().with_response(tresp());
            for (n, v) in headers {
                f.request.headers.append(n, Bytes::from(v));
            }
            f.request.raw_content = body.map(Bytes::from);
            f.request.path = path.into();
            f.request.port = port;
            f.request.timestamp_end = Some(ts);
            f.timestamp_created = ts;
            f.response.as_mut().unwrap().raw_content = resp_body.map(Bytes::from);
            f.metadata = meta.into_iter().collect();
            f.comment = comment;
            f.error = error.map(FlowError::new);
            if !ws.is_empty() {
                let mut data = waylay_core::flow::WebSocketData::default();
                for (from_client, content, text) in ws {
                    data.messages.push(if text {
                        WebSocketMessage::text(from_client, String::from_utf8_lossy(&content).into_owned())
                    } else {
                        WebSocketMessage::binary(from_client, content)
                    });
                }
                f.websocket = Some(data);
            }
            let mut server = Server::new(waylay_core::flow::Address::new("example.com", port));
            server.timestamp_start = Some(ts);
            f.server = Some(Arc::new(server));
            Flow::Http(Box::new(f))
        }
    }

    proptest! {
        #[test]
        fn random_flows_encode_as_the_value_tree_does(flow in http_flow()) {
            prop_assert!(write(std::slice::from_ref(&flow)) == flowfile::to_state(&flow).encode());
        }
    }
}
