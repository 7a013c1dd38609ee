//! `hardump`: a HAR 1.2 file of the HTTP flows at shutdown, plain or zlib (`.zhar`).

use std::io::Read;
use std::sync::Arc;

use waylay_addons::HarDump;
use waylay_core::flow::Server;
use waylay_testkit::{AddonHarness, FlowExt, TempDir, tflow, tresp, ttcpflow, twebsocketflow};

async fn dump(path: &str) {
    let mut h = AddonHarness::new(HarDump::new()).await;
    h.set_options(&[format!("hardump={path}")])
        .await
        .expect("hardump accepted");
    let mut f = tflow().with_response(tresp());
    f.request.timestamp_start = 1_000_000_000.25;
    f.request.timestamp_end = Some(1_000_000_000.5);
    let resp = f.response.as_mut().expect("response");
    resp.timestamp_start = 1_000_000_001.0;
    resp.timestamp_end = Some(1_000_000_001.5);
    let mut server = Server::new(waylay_core::flow::Address::new("example.com", 80));
    server.peername = Some("127.0.0.1:80".parse().expect("addr"));
    server.timestamp_start = Some(1_000_000_000.0);
    server.timestamp_tcp_setup = Some(1_000_000_000.125);
    f.server = Some(Arc::new(server));
    h.response(f).await;
    h.error(tflow().with_error("Connection refused")).await;
    // A WebSocket flow is kept at its end, not at its 101; TCP flows are not HTTP.
    let ws = h.response(twebsocketflow()).await;
    h.websocket_end(ws).await;
    h.tcp_end(ttcpflow()).await;
    h.shutdown().await;
}

fn check(doc: &serde_json::Value) {
    let log = &doc["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "waylay");
    let e = log["entries"].as_array().expect("entries");
    assert_eq!(e.len(), 3);
    let first = &e[0];
    assert_eq!(first["startedDateTime"], "2001-09-09T01:46:40.250000+00:00");
    assert_eq!(first["request"]["method"], "GET");
    assert_eq!(first["request"]["url"], "http://example.com/path");
    assert_eq!(first["request"]["httpVersion"], "HTTP/1.1");
    assert_eq!(first["request"]["bodySize"], 7);
    assert_eq!(
        first["request"]["headers"][0],
        serde_json::json!({"name": "Host", "value": "example.com"})
    );
    assert_eq!(first["response"]["status"], 200);
    assert_eq!(first["response"]["statusText"], "OK");
    assert_eq!(first["response"]["content"]["text"], "message");
    assert_eq!(first["response"]["content"]["mimeType"], "text/plain");
    assert_eq!(first["response"]["content"]["size"], 7);
    assert_eq!(first["timings"]["connect"], 125.0);
    assert_eq!(first["timings"]["ssl"], -1.0);
    assert_eq!(first["timings"]["send"], 250.0);
    assert_eq!(first["timings"]["wait"], 500.0);
    assert_eq!(first["timings"]["receive"], 500.0);
    assert_eq!(first["time"], 1375.0);
    assert_eq!(first["serverIPAddress"], "127.0.0.1");
    assert_eq!(e[1]["response"]["status"], 0);
    assert_eq!(e[1]["response"]["_error"], "Connection refused");
    assert_eq!(e[2]["_resourceType"], "websocket");
    assert_eq!(
        e[2]["_webSocketMessages"]
            .as_array()
            .expect("messages")
            .len(),
        3
    );
    assert_eq!(e[2]["_webSocketMessages"][0]["type"], "send");
    assert_eq!(e[2]["_webSocketMessages"][0]["opcode"], 2);
}

#[actix_rt::test]
async fn har_is_written_at_shutdown() {
    let dir = TempDir::new("har");
    let path = dir.path().join("out.har");
    dump(&path.display().to_string()).await;
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("written")).expect("JSON");
    check(&doc);
}

#[actix_rt::test]
async fn zhar_is_zlib_compressed() {
    let dir = TempDir::new("har");
    let path = dir.path().join("out.zhar");
    dump(&path.display().to_string()).await;
    let raw = std::fs::read(&path).expect("written");
    let mut text = Vec::new();
    flate2::read::ZlibDecoder::new(&raw[..])
        .read_to_end(&mut text)
        .expect("zlib");
    check(&serde_json::from_slice(&text).expect("JSON"));
}
