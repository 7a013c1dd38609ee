//! The dumper's output at each `flow_detail` level, through the real addon manager.

use std::io::Write;
use std::sync::{Arc, Mutex};

use waylay_addons::Dumper;
use waylay_core::flow::{
    Address, HttpVersion, Request, Response, Server, WebSocketData, WebSocketMessage, encoding,
};
use waylay_core::{FlowError, HttpFlow, TcpFlow};
use waylay_testkit::{AddonHarness, FlowExt, tflow, tresp, ttcpflow, twebsocketflow};

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Buf {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().expect("lock")))
            .expect("the dumper writes UTF-8")
    }
}

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn harness(specs: &[&str]) -> (AddonHarness, Buf) {
    let buf = Buf::default();
    let mut h = AddonHarness::new(Dumper::new(buf.clone())).await;
    if !specs.is_empty() {
        h.set_options(specs).await.expect("valid options");
    }
    (h, buf)
}

/// A finished flow with fixed timestamps: the response took 12 ms.
fn timed(mut flow: HttpFlow, mut resp: Response) -> HttpFlow {
    flow.request.timestamp_start = 1000.0;
    flow.request.timestamp_end = Some(1000.001);
    resp.timestamp_start = 1000.010;
    resp.timestamp_end = Some(1000.012);
    flow.with_response(resp)
}

#[actix_rt::test]
async fn one_line_per_flow_by_default() {
    let (mut h, buf) = harness(&[]).await;
    h.response(timed(tflow(), tresp())).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22: GET http://example.com/path << 200 OK 7b 12ms\n"
    );

    let big = Response::make(404, vec![b'x'; 1229], [("content-type", "text/plain")]);
    h.response(timed(tflow(), big)).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22: GET http://example.com/path << 404 Not Found 1.2k 12ms\n"
    );
}

#[actix_rt::test]
async fn with_several_modes_each_line_names_the_mode() {
    let (mut h, buf) = harness(&["mode=regular", "mode=socks5@1080"]).await;
    let mut flow = timed(tflow(), tresp());
    let mut client = flow.client.as_ref().clone();
    client.proxy_mode = "socks5@1080".into();
    flow.client = std::sync::Arc::new(client);
    h.response(flow).await;
    assert_eq!(
        buf.take(),
        "[socks5@1080] 127.0.0.1:22: GET http://example.com/path << 200 OK 7b 12ms\n"
    );
    let mut tcp = ttcpflow();
    let mut client = tcp.client.as_ref().clone();
    client.proxy_mode = "regular".into();
    tcp.client = std::sync::Arc::new(client);
    h.tcp_message(tcp).await;
    assert_eq!(
        buf.take(),
        "[regular] 127.0.0.1:22 <- tcp <- example.com:80\n"
    );
}

#[actix_rt::test]
async fn flow_detail_0_prints_nothing() {
    let (mut h, buf) = harness(&["flow_detail=0"]).await;
    h.response(timed(tflow(), tresp())).await;
    h.error(tflow().with_error("boom")).await;
    h.websocket_message(twebsocketflow()).await;
    h.tcp_message(ttcpflow()).await;
    assert_eq!(buf.take(), "");
}

#[actix_rt::test]
async fn errors_are_printed_on_the_flow_line() {
    let (mut h, buf) = harness(&[]).await;
    h.error(tflow().with_error("server unreachable: connection refused"))
        .await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22: GET http://example.com/path << error: server unreachable: connection refused\n"
    );
}

#[actix_rt::test]
async fn connect_requests_are_not_printed_unless_they_fail() {
    let (mut h, buf) = harness(&[]).await;
    let mut req = Request::new("CONNECT", "http", "example.com", 443, "");
    req.authority = "example.com:443".into();
    let flow = tflow().with_request(req);
    h.response(timed(flow.clone(), Response::make(200, "", [("a", "b")])))
        .await;
    assert_eq!(buf.take(), "");
    h.error(flow.with_error("TLS handshake failed")).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22: CONNECT example.com:443 << error: TLS handshake failed\n"
    );
}

#[actix_rt::test]
async fn http2_versions_are_shown() {
    let (mut h, buf) = harness(&[]).await;
    let mut flow = tflow();
    flow.request.http_version = HttpVersion::Http2;
    let mut resp = tresp();
    resp.http_version = HttpVersion::Http2;
    h.response(timed(flow, resp)).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22: GET http://example.com/path HTTP/2.0 << HTTP/2.0 200 OK 7b 12ms\n"
    );
}

#[actix_rt::test]
async fn flow_detail_2_adds_headers() {
    let (mut h, buf) = harness(&["flow_detail=2"]).await;
    h.response(timed(tflow(), tresp())).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22: GET http://example.com/path\n\
         \x20   Host: example.com\n\
         \x20   User-Agent: waylay-testkit\n\
         \x20   Accept: */*\n\
         \x20   header: qvalue\n\
         \x20   content-length: 7\n\
         \x20<< 200 OK 7b 12ms\n\
         \x20   header-response: svalue\n\
         \x20   content-type: text/plain\n\
         \x20   content-length: 7\n"
    );
}

#[actix_rt::test]
async fn flow_detail_3_adds_decoded_bodies() {
    let (mut h, buf) = harness(&["flow_detail=3"]).await;
    let body = br#"{"hello":"world"}"#;
    let gz = encoding::encode("gzip", body).unwrap();
    let resp = Response::make(
        200,
        gz,
        [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    );
    h.response(timed(tflow(), resp)).await;
    let out = buf.take();
    assert!(
        out.contains("\n\n    content\n\n"),
        "request body missing:\n{out}"
    );
    assert!(
        out.contains("\n\n    {\n      \"hello\": \"world\"\n    }\n\n"),
        "response body not decoded and pretty-printed:\n{out}"
    );
}

#[actix_rt::test]
async fn raw_contentview_shows_json_as_sent() {
    let (mut h, buf) = harness(&["flow_detail=3", "dumper_default_contentview=true"]).await;
    let resp = Response::make(
        200,
        &br#"{"hello":"world"}"#[..],
        [("content-type", "application/json")],
    );
    h.response(timed(tflow(), resp)).await;
    assert!(buf.take().contains("\n    {\"hello\":\"world\"}\n"));
}

#[actix_rt::test]
async fn binary_bodies_are_hex_dumped() {
    let (mut h, buf) = harness(&["flow_detail=3"]).await;
    let resp = Response::make(
        200,
        &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..],
        [("content-type", "image/png")],
    );
    h.response(timed(tflow(), resp)).await;
    assert!(buf.take().contains(
        "    0000000000  89 50 4e 47 0d 0a 1a 0a  00 00 00 0d 49 48 44 52  .PNG........IHDR\n"
    ));
}

#[actix_rt::test]
async fn flow_detail_3_cuts_long_bodies_and_4_does_not() {
    let body = (0..1000).map(|i| format!("line {i}\n")).collect::<String>();
    let resp = Response::make(200, body, [("content-type", "text/plain")]);

    let (mut h, buf) = harness(&["flow_detail=3"]).await;
    h.response(timed(tflow(), resp.clone())).await;
    let out = buf.take();
    assert!(out.contains("    line 511\n"));
    assert!(!out.contains("    line 512\n"));
    assert!(out.contains("    (cut off)\n"));

    h.set_options(&["flow_detail=4"]).await.unwrap();
    h.response(timed(tflow(), resp)).await;
    let out = buf.take();
    assert!(out.contains("    line 999\n"));
    assert!(!out.contains("(cut off)"));
}

#[actix_rt::test]
async fn streamed_bodies_are_not_shown() {
    let (mut h, buf) = harness(&["flow_detail=3"]).await;
    let mut resp = Response::make(200, "", [("content-length", "5000000")]);
    resp.headers.insert("content-length", "5000000");
    resp.raw_content = None;
    resp.stream = true;
    h.response(timed(tflow(), resp)).await;
    let out = buf.take();
    assert!(out.contains(" << 200 OK 4.8m (streamed) 12ms\n"), "{out}");
    assert!(out.contains("    (body streamed, not shown)\n"), "{out}");
}

#[actix_rt::test]
async fn control_characters_from_the_network_are_escaped() {
    let (mut h, buf) = harness(&["flow_detail=2"]).await;
    let mut flow = tflow();
    flow.request.path = "/\x1b[2J".into();
    flow.request.headers.append("x-evil", "a\x1b]0;pwned\x07");
    let mut resp = tresp();
    resp.reason = "OK\x1b[31m".into();
    h.response(timed(flow, resp)).await;
    let out = buf.take();
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("http://example.com/\\x1b[2J"));
    assert!(out.contains("x-evil: a\\x1b]0;pwned\\x07"));
    assert!(out.contains("200 OK\\x1b[31m"));
}

#[actix_rt::test]
async fn showhost_uses_the_host_header() {
    let (mut h, buf) = harness(&["showhost=true"]).await;
    let mut flow = tflow();
    flow.request.host = "93.184.216.34".into();
    h.response(timed(flow, tresp())).await;
    assert!(buf.take().contains(" GET http://example.com/path "));

    h.set_options(&["showhost=false"]).await.unwrap();
    let mut flow = tflow();
    flow.request.host = "93.184.216.34".into();
    h.response(timed(flow, tresp())).await;
    assert!(buf.take().contains(" GET http://93.184.216.34/path "));
}

#[actix_rt::test]
async fn websocket_messages_and_end() {
    let (mut h, buf) = harness(&[]).await;
    let flow = h.websocket_message(twebsocketflow()).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22 <- WebSocket text message <- example.com:80/ws\n"
    );

    let mut ws = flow.websocket.clone().unwrap();
    ws.closed_by_client = Some(true);
    ws.close_code = Some(1000);
    ws.close_reason = "bye".into();
    h.websocket_end(flow.clone().with_websocket(ws.clone()))
        .await;
    assert_eq!(
        buf.take(),
        "WebSocket connection closed by client: 1000 bye\n"
    );

    ws.close_code = Some(1011);
    ws.close_reason = "oops".into();
    h.websocket_end(flow.clone().with_websocket(ws)).await;
    assert_eq!(
        buf.take(),
        "Error in WebSocket connection to example.com:80: WebSocket Error: INTERNAL_ERROR (reason: oops)\n"
    );

    h.websocket_error(flow.with_error("connection reset")).await;
    assert_eq!(
        buf.take(),
        "Error in WebSocket connection to example.com:80: connection reset\n"
    );
}

#[actix_rt::test]
async fn websocket_contents_at_flow_detail_3() {
    let (mut h, buf) = harness(&["flow_detail=3"]).await;
    let mut ws = WebSocketData::default();
    ws.messages.push(WebSocketMessage::text(true, "ping"));
    h.websocket_message(twebsocketflow().with_websocket(ws))
        .await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22 -> WebSocket text message -> example.com:80/ws\n\n    ping\n\n"
    );
}

#[actix_rt::test]
async fn tcp_messages_and_errors() {
    let (mut h, buf) = harness(&[]).await;
    let flow = h.tcp_message(ttcpflow()).await;
    assert_eq!(buf.take(), "127.0.0.1:22 <- tcp <- example.com:80\n");

    h.set_options(&["flow_detail=3"]).await.unwrap();
    let mut f = flow.clone();
    f.messages.pop();
    h.tcp_message(f).await;
    assert_eq!(
        buf.take(),
        "127.0.0.1:22 -> tcp -> example.com:80\n\n    hello\n\n"
    );

    let mut f: TcpFlow = flow;
    f.server = Some(Arc::new(Server::new(Address::new("::1", 7))));
    f.error = Some(FlowError::new("connection reset by peer"));
    h.tcp_error(f).await;
    assert_eq!(
        buf.take(),
        "Error in TCP connection to [::1]:7: connection reset by peer\n"
    );
}

#[actix_rt::test]
async fn dumper_filter_limits_the_output() {
    let (mut h, buf) = harness(&["dumper_filter=~d example.org | ~c 404"]).await;
    h.response(timed(tflow(), tresp())).await;
    assert_eq!(buf.take(), "", "example.com with a 200 is filtered out");
    h.response(timed(tflow(), Response::make(404, "", [("a", "b")])))
        .await;
    assert!(buf.take().contains("<< 404 Not Found"));
    let mut other = tflow();
    other.request.host = "example.org".into();
    other.request.headers.insert("Host", "example.org");
    h.response(timed(other, tresp())).await;
    assert!(buf.take().contains("GET http://example.org/path"));
    // Errors, WebSocket and TCP output go through the same filter.
    h.error(tflow().with_error("boom")).await;
    assert_eq!(buf.take(), "");
    h.tcp_message(ttcpflow()).await;
    assert_eq!(buf.take(), "");
    h.websocket_message(twebsocketflow()).await;
    assert_eq!(buf.take(), "");

    h.set_options(&["dumper_filter=~tcp | ~websocket"])
        .await
        .unwrap();
    h.tcp_message(ttcpflow()).await;
    let out = buf.take();
    assert_eq!(
        out, "127.0.0.1:22 <- tcp <- example.com:80\n",
        "TCP now shown"
    );
    h.websocket_message(twebsocketflow()).await;
    assert!(buf.take().contains("WebSocket"));
    h.response(timed(tflow(), tresp())).await;
    assert_eq!(buf.take(), "");

    // Unset again: everything is shown.
    h.set_options(&["dumper_filter="]).await.unwrap();
    h.response(timed(tflow(), tresp())).await;
    assert!(!buf.take().is_empty());
}

#[actix_rt::test]
async fn a_bad_dumper_filter_is_rejected_with_its_position() {
    let (mut h, buf) = harness(&[]).await;
    let err = h
        .set_options(&["dumper_filter=~c 200 & ~d"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "option dumper_filter: expected a regex after ~d at 11"
    );
    // The old value was kept and the dumper still prints everything.
    assert_eq!(h.options().str("dumper_filter"), None);
    h.response(timed(tflow(), tresp())).await;
    assert!(!buf.take().is_empty());
}

#[actix_rt::test]
async fn flow_detail_out_of_range_is_rejected() {
    let (mut h, _buf) = harness(&[]).await;
    let err = h.set_options(&["flow_detail=5"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "option flow_detail: expected 0 to 4, got 5"
    );
    let err = h.set_options(&["flow_detail=-1"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "option flow_detail: expected 0 to 4, got -1"
    );
}

#[actix_rt::test]
async fn check_options_validates_up_front() {
    let mut o = waylay_core::Options::new();
    assert!(Dumper::check_options(&o).is_ok());
    o.set_specs(&["dumper_filter=~q"]).unwrap();
    assert!(Dumper::check_options(&o).is_ok());
    o.set_specs(&["dumper_filter=~q &"]).unwrap();
    let err = Dumper::check_options(&o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "option dumper_filter: expected an expression after & at 4"
    );
}

/// A writer whose reader went away.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn a_broken_writer_is_reported_once_and_the_flow_goes_on() {
    let mut h = AddonHarness::new(Dumper::new(Broken)).await;
    let flow = h.response(timed(tflow(), tresp())).await;
    assert_eq!(flow.response.unwrap().status_code, 200);
    h.response(timed(tflow(), tresp())).await;
    let warnings = h
        .logs()
        .into_iter()
        .filter(|e| e.message.contains("cannot write flow output"))
        .count();
    assert_eq!(warnings, 1);
}

#[actix_rt::test]
async fn done_flushes() {
    #[derive(Clone, Default)]
    struct Flushes(Arc<Mutex<u32>>);
    impl Write for Flushes {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }
    let f = Flushes::default();
    let mut h = AddonHarness::new(Dumper::new(f.clone())).await;
    h.shutdown().await;
    assert_eq!(*f.0.lock().unwrap(), 1);
}
