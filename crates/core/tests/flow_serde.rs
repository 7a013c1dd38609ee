//! Every flow type survives a serde round trip (serde_json) unchanged, including header
//! values that are not UTF-8.

use std::sync::Arc;

use bytes::Bytes;
use waylay_core::flow::{Address, Server, TlsInfo, WebSocketMessage};
use waylay_core::{Flow, FlowError, Headers, HttpFlow, TcpFlow};
use waylay_testkit::{FlowExt, tflow, tresp, ttcpflow, twebsocketflow};

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let json = serde_json::to_string(value).expect("serialises");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// A flow with every optional part filled in.
fn full_http_flow() -> HttpFlow {
    let mut flow = twebsocketflow();
    flow.request
        .headers
        .append("X-Binary", Bytes::from_static(b"\xff\xfe latin-1 \xe9"));
    flow.request.headers.append("x-dup", "1");
    flow.request.headers.append("X-Dup", "2");
    flow.request.trailers = Some(Box::new(Headers::from_pairs([("grpc-status", "0")])));
    if let Some(r) = flow.response.as_mut() {
        r.headers
            .append("Set-Cookie", Bytes::from_static(b"a=\x80\x81"));
        r.timestamp_end = Some(r.timestamp_start + 0.25);
    }
    let ws = flow.websocket.as_mut().expect("has websocket data");
    ws.messages
        .push(WebSocketMessage::binary(false, &b"\x00\x01\xff"[..]));
    ws.messages[0].dropped = true;
    ws.messages[1].injected = true;
    ws.closed_by_client = Some(true);
    ws.close_code = Some(1000);
    ws.close_reason = "bye".into();
    ws.timestamp_end = Some(1.5);
    let mut server = Server::new(Address::new("2001:db8::1", 443));
    server.tls = true;
    server.sni = Some("example.com".into());
    server.peername = Some("[2001:db8::1]:443".parse().expect("an address"));
    server.tls_info = Some(TlsInfo {
        sni: Some("example.com".into()),
        alpn: Some("h2".into()),
        alpn_offers: vec!["h2".into(), "http/1.1".into()],
        version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
        certificate_list: vec![Bytes::from_static(b"\x30\x82 not really DER")],
    });
    flow.server = Some(Arc::new(server));
    flow.error = Some(FlowError::new("server hung up"));
    flow.marked = ":star:".into();
    flow.comment = "a comment".into();
    flow.metadata
        .insert("addon".into(), serde_json::json!({"k": [1, 2, 3]}));
    flow.is_replay = Some("request".into());
    flow
}

#[test]
fn http_flow_with_response_and_websocket_round_trips() {
    let flow = full_http_flow();
    let back = round_trip(&flow);
    assert_eq!(back, flow);
    assert_eq!(back.id, flow.id);
    let raw = back.request.headers.get_bytes("x-binary").unwrap();
    assert_eq!(raw, b"\xff\xfe latin-1 \xe9");
    assert_eq!(back.request.headers.get("x-binary"), None, "not UTF-8");
}

#[test]
fn simple_flows_round_trip() {
    for flow in [
        tflow(),
        tflow().with_response(tresp()),
        tflow().with_error("boom"),
        twebsocketflow(),
    ] {
        assert_eq!(round_trip(&flow), flow);
    }
    let mut streamed = tflow().with_response(tresp());
    streamed.request.raw_content = None;
    streamed.request.stream = true;
    assert_eq!(round_trip(&streamed), streamed);
}

#[test]
fn tcp_flow_round_trips() {
    let mut flow = ttcpflow();
    flow.messages[1].content = Bytes::from_static(b"\x00\xff\xfe binary");
    flow.messages[1].injected = true;
    flow.error = Some(FlowError::new("reset"));
    flow.metadata.insert("n".into(), 1.into());
    let back: TcpFlow = round_trip(&flow);
    assert_eq!(back, flow);
}

#[test]
fn the_flow_enum_round_trips_with_its_type_tag() {
    let flows = vec![
        Flow::Http(Box::new(full_http_flow())),
        Flow::Tcp(Box::new(ttcpflow())),
    ];
    let json = serde_json::to_value(&flows).unwrap();
    assert_eq!(json[0]["type"], "http");
    assert_eq!(json[1]["type"], "tcp");
    let back: Vec<Flow> = serde_json::from_value(json).unwrap();
    assert_eq!(back, flows);
}

#[test]
fn headers_serialise_as_ordered_pairs_with_raw_bytes_only_when_needed() {
    let h = Headers::from_pairs([
        ("Host", Bytes::from_static(b"example.com")),
        ("X-Raw", Bytes::from_static(b"\xff")),
    ]);
    let json = serde_json::to_value(&h).unwrap();
    assert_eq!(
        json,
        serde_json::json!([["Host", "example.com"], ["X-Raw", [255]]])
    );
    assert_eq!(round_trip(&h), h);
}

/// serde_json's default float parsing can be off by one ULP; flow timestamps must come
/// back exactly (this value came back as 1795538339.782365).
#[test]
fn regression_timestamps_round_trip_exactly() {
    let mut flow = ttcpflow();
    flow.timestamp_created = 1_795_538_339.782_365_3;
    flow.messages[0].timestamp = 1_795_538_339.782_365_3;
    let back: TcpFlow = round_trip(&flow);
    assert_eq!(
        back.timestamp_created.to_bits(),
        flow.timestamp_created.to_bits()
    );
    assert_eq!(back, flow);
}
