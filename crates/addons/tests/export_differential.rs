//! The export formats against mitmproxy's own (`mitmproxy.addons.export`, the peer venv):
//! the same flows, written to a flow file, exported by both; every format must match byte
//! for byte. Header names keep the case the flow holds, and `Proxy-Connection` stays, as
//! mitmproxy 12.3.1 keeps them.

use std::process::Command;

use waylay_addons::export::export;
use waylay_core::flowfile::FlowWriter;
use waylay_core::{Flow, Headers, Response};
use waylay_testkit::peers::mitmproxy_python;
use waylay_testkit::{TempDir, tflow};

const FORMATS: [&str; 5] = ["curl", "httpie", "raw", "raw_request", "raw_response"];

const EXPORT_PY: &str = r#"
import json, sys
from mitmproxy import io
from mitmproxy.addons import export
from mitmproxy.test import taddons

with taddons.context(export.Export()):
    with open(sys.argv[1], "rb") as f:
        for fl in io.FlowReader(f).stream():
            out = {}
            for fmt in ("curl", "httpie", "raw", "raw_request", "raw_response"):
                try:
                    v = export.formats[fmt](fl)
                    out[fmt] = v if isinstance(v, str) else v.decode("latin-1")
                except Exception as e:
                    out[fmt] = None
            print(json.dumps(out))
"#;

fn flows() -> Vec<waylay_core::HttpFlow> {
    let mut out = Vec::new();
    // As curl sends it through the proxy: its header case, Proxy-Connection, Host equal to
    // the host (dropped by the command exports).
    let mut f = tflow();
    f.request.host = "127.0.0.1".into();
    f.request.port = 8080;
    f.request.path = "/abc?x=1".into();
    f.request.headers = Headers::from_pairs([
        ("Host", "127.0.0.1:8080"),
        ("User-Agent", "curl/7.88.1"),
        ("Accept", "*/*"),
        ("Proxy-Connection", "Keep-Alive"),
        ("X-Mixed-CASE", "Yes"),
    ]);
    f.request.set_raw_content(bytes::Bytes::new());
    let mut r = Response::make(404, "not here", [("Content-Type", "text/plain")]);
    r.headers.append("X-Server-Case", "a");
    f.response = Some(r);
    out.push(f);
    // A POST with a body holding control characters and quotes, gzip accepted, a host
    // header that differs from the host.
    let mut f = tflow();
    f.request.method = "POST".into();
    f.request.headers = Headers::from_pairs([
        ("host", "example.org"),
        ("Accept-Encoding", "gzip"),
        ("content-type", "application/json"),
    ]);
    f.request
        .set_content(bytes::Bytes::from_static(b"{\"a\": \"it's\"}\n\t"));
    f.response = Some(Response::make(200, "ok", [("content-type", "text/plain")]));
    out.push(f);
    // A DELETE with no body, no response.
    let mut f = tflow();
    f.request.method = "DELETE".into();
    f.request.set_raw_content(bytes::Bytes::new());
    out.push(f);
    out
}

#[test]
fn every_export_format_matches_mitmproxys_for_the_same_flows() {
    let Some(python) = mitmproxy_python() else {
        return;
    };
    let dir = TempDir::new("export-diff");
    let path = dir.path().join("flows");
    let flows = flows();
    let mut w = FlowWriter::new(std::fs::File::create(&path).unwrap());
    for f in &flows {
        w.add(&Flow::Http(Box::new(f.clone()))).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let out = Command::new(python)
        .arg("-c")
        .arg(EXPORT_PY)
        .arg(&path)
        .output()
        .expect("mitmproxy's python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), flows.len());
    let curl = theirs[0]["curl"].as_str().unwrap();
    assert!(
        curl.contains("'Proxy-Connection: Keep-Alive'") && curl.contains("'X-Mixed-CASE: Yes'"),
        "{curl}"
    );
    assert!(theirs[2]["raw_response"].is_null());
    // Read back as mitmproxy read them (the flow file round trip included).
    let ours = waylay_core::flowfile::read_file(path.to_str().unwrap()).unwrap();
    for (i, (flow, theirs)) in ours.iter().zip(&theirs).enumerate() {
        let Flow::Http(flow) = flow else {
            panic!("flow {i} is not HTTP")
        };
        for fmt in FORMATS {
            let mine = export(fmt, flow)
                .ok()
                .map(|b| b.iter().map(|&c| char::from(c)).collect::<String>());
            assert_eq!(
                mine.as_deref(),
                theirs[fmt].as_str(),
                "flow {i}, format {fmt}"
            );
        }
    }
}
