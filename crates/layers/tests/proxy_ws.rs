//! WebSocket end to end on 127.0.0.1: an in-process tokio-tungstenite echo origin (plain and
//! TLS), the real proxy, tokio-tungstenite clients (absolute-form upgrade, inside CONNECT,
//! wss inside an intercepted tunnel).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use waylay_core::flow::WebSocketMessage;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{
    TempDir, TestProxy, WsClient, WsOrigin, http_origin, proxy_get, ws_in_connect, ws_next,
    ws_through_proxy, wss_in_connect,
};

/// Records the hooks it sees, and the flow as it was at the last WebSocket hook.
#[derive(Clone, Default)]
struct Recorder {
    hooks: Arc<Mutex<Vec<&'static str>>>,
    last: Arc<Mutex<Option<HttpFlow>>>,
}

impl Recorder {
    fn push(&self, name: &'static str, flow: &HttpFlow) {
        self.hooks.lock().expect("lock").push(name);
        if name.starts_with("websocket") {
            *self.last.lock().expect("lock") = Some(flow.clone());
        }
    }

    fn hooks(&self) -> Vec<&'static str> {
        self.hooks.lock().expect("lock").clone()
    }

    /// Waits (at most 10 s) until `name` was seen; the hooks so far.
    async fn wait_for(&self, name: &str) -> Vec<&'static str> {
        for _ in 0..200 {
            if self.hooks().contains(&name) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.hooks()
    }

    fn last(&self) -> HttpFlow {
        self.last
            .lock()
            .expect("lock")
            .clone()
            .expect("a WebSocket hook ran")
    }
}

impl Addon for Recorder {
    async fn websocket_handshake(&mut self, flow: &mut HttpFlow) {
        self.push("websocket_handshake", flow);
    }
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        self.push("requestheaders", flow);
    }
    async fn request(&mut self, flow: &mut HttpFlow) {
        self.push("request", flow);
    }
    async fn response_headers(&mut self, flow: &mut HttpFlow) {
        self.push("responseheaders", flow);
    }
    async fn response(&mut self, flow: &mut HttpFlow) {
        self.push("response", flow);
    }
    async fn error(&mut self, flow: &mut HttpFlow) {
        self.push("error", flow);
    }
    async fn websocket_start(&mut self, flow: &mut HttpFlow) {
        self.push("websocket_start", flow);
    }
    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        self.push("websocket_message", flow);
    }
    async fn websocket_error(&mut self, flow: &mut HttpFlow) {
        self.push("websocket_error", flow);
    }
    async fn client_disconnect(&mut self, _client: &mut waylay_core::flow::Client) {
        self.hooks.lock().expect("lock").push("client_disconnect");
    }

    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        self.push("websocket_end", flow);
    }
}

async fn send(ws: &mut WsClient, m: Message) {
    tokio::time::timeout(Duration::from_secs(20), ws.send(m))
        .await
        .expect("send in time")
        .expect("send");
}

async fn next(ws: &mut WsClient) -> Message {
    ws_next(ws).await.expect("a message").expect("no error")
}

fn big(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

/// Text, unicode, binary (small and 16 MiB) echo, and pings both ways with exactly one pong.
async fn echo_all(ws: &mut WsClient, origin: &WsOrigin) {
    for text in ["hello", "héllo wörld ✓ 🦀 — ünïcödé", ""] {
        send(ws, Message::text(text)).await;
        assert_eq!(next(ws).await, Message::text(text));
    }
    let small = Bytes::from_static(&[0, 1, 2, 0xff, 0xfe]);
    send(ws, Message::binary(small.clone())).await;
    assert_eq!(next(ws).await, Message::binary(small));
    let huge = big(16 << 20);
    send(ws, Message::binary(huge.clone())).await;
    match next(ws).await {
        Message::Binary(b) => assert!(b == huge, "16 MiB echo differs ({} bytes)", b.len()),
        other => panic!("expected binary, got {other:?}"),
    }

    // A client ping reaches the server and comes back as exactly one pong.
    send(ws, Message::Ping(Bytes::from_static(b"cli"))).await;
    assert_eq!(next(ws).await, Message::Pong(Bytes::from_static(b"cli")));
    send(ws, Message::text("after-ping")).await;
    assert_eq!(next(ws).await, Message::text("after-ping"));
    // A server ping reaches the client; the server gets exactly one pong.
    send(ws, Message::text("ping-me")).await;
    assert_eq!(next(ws).await, Message::Ping(Bytes::from_static(b"srv")));
    send(ws, Message::text("after-server-ping")).await;
    assert_eq!(next(ws).await, Message::text("after-server-ping"));
    let received = origin.record.received();
    let pings = received
        .iter()
        .filter(|m| **m == Message::Ping(Bytes::from_static(b"cli")))
        .count();
    let pongs = received
        .iter()
        .filter(|m| **m == Message::Pong(Bytes::from_static(b"srv")))
        .count();
    assert_eq!((pings, pongs), (1, 1), "{received:?}");
}

/// The client closes with 4001 and a reason; the answer carries the same.
async fn client_close(ws: &mut WsClient) {
    let frame = CloseFrame {
        code: CloseCode::from(4001),
        reason: "client bye".into(),
    };
    send(ws, Message::Close(Some(frame.clone()))).await;
    assert_eq!(next(ws).await, Message::Close(Some(frame)));
}

#[actix_rt::test]
async fn ws_absolute_form_echo_hooks_in_order_and_close_code() {
    let origin = WsOrigin::start().await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(Proxy::builder().addon(rec.clone())).await;
    let (mut ws, head) = ws_through_proxy(proxy.addr(), origin.addr, "/chat?x=1", &[])
        .await
        .expect("upgrade");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    echo_all(&mut ws, &origin).await;
    client_close(&mut ws).await;

    let hooks = rec.wait_for("websocket_end").await;
    let http: Vec<_> = hooks.iter().take(6).copied().collect();
    assert_eq!(
        http,
        [
            "websocket_handshake",
            "requestheaders",
            "request",
            "responseheaders",
            "response",
            "websocket_start"
        ]
    );
    let last_ws = hooks.iter().rev().find(|h| h.starts_with("websocket"));
    assert_eq!(last_ws, Some(&"websocket_end"), "{hooks:?}");
    assert!(!hooks.contains(&"websocket_error"), "{hooks:?}");
    // The client connection ends after its WebSocket, not when hyper hands the stream over.
    drop(ws);
    let all = rec.wait_for("client_disconnect").await;
    assert_eq!(
        &all[all.len() - 2..],
        ["websocket_end", "client_disconnect"],
        "{all:?}"
    );
    // Text, unicode, empty, 2 binary, after-ping, ping-me, after-server-ping from the
    // client; the same echoed but ping-me (answered with a ping).
    let n = hooks.iter().filter(|h| **h == "websocket_message").count();
    assert_eq!(n, 15, "{hooks:?}");
    let flow = rec.last();
    let ws_data = flow.websocket.expect("websocket data");
    assert_eq!(ws_data.close_code, Some(4001));
    assert_eq!(ws_data.close_reason, "client bye");
    assert_eq!(ws_data.closed_by_client, Some(true));
    // The two 16 MiB messages pushed the oldest out of the bounded history.
    let forgotten = flow.metadata["websocket_messages_forgotten"]
        .as_u64()
        .expect("count");
    assert_eq!(ws_data.messages.len() as u64 + forgotten, 15);
    let last_two: Vec<_> = ws_data.messages[ws_data.messages.len() - 2..]
        .iter()
        .map(|m| (m.from_client, m.as_text()))
        .collect();
    assert_eq!(
        last_two,
        [
            (true, Some("after-server-ping")),
            (false, Some("after-server-ping"))
        ]
    );
    assert_eq!(flow.response.map(|r| r.status_code), Some(101));
    assert_eq!(flow.request.path, "/chat?x=1");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn ws_inside_connect_without_addons_and_server_close_code() {
    let origin = WsOrigin::start().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let target = origin.addr.to_string();
    let mut ws = ws_in_connect(proxy.addr(), &target, "/plain")
        .await
        .expect("upgrade");
    echo_all(&mut ws, &origin).await;
    // The server closes with 4001 and a reason.
    send(&mut ws, Message::text("close-me")).await;
    assert_eq!(
        next(&mut ws).await,
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "server bye".into()
        }))
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn wss_inside_intercepted_tls() {
    let dir = TempDir::new("wss");
    let origin = WsOrigin::start_tls(&dir).await;
    let ca = origin.ca_file.clone().expect("TLS origin");
    let rec = Recorder::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("ssl_verify_upstream_trusted_ca={}", ca.display()))
            .addon(rec.clone()),
    )
    .await;
    let target = format!("localhost:{}", origin.addr.port());
    let mut ws = wss_in_connect(proxy.addr(), &target, "localhost", &proxy.ca_pem, "/secure")
        .await
        .expect("wss through the proxy");
    echo_all(&mut ws, &origin).await;
    client_close(&mut ws).await;
    let hooks = rec.wait_for("websocket_end").await;
    assert!(hooks.contains(&"websocket_start"), "{hooks:?}");
    let flow = rec.last();
    assert_eq!(flow.request.scheme, "https");
    assert_eq!(flow.websocket.and_then(|w| w.close_code), Some(4001));
    proxy.shutdown().await;
}

/// Rewrites `rewrite-me`, drops `drop-me-please`, and on `inject` injects one message
/// towards each side.
struct Meddler;

impl Addon for Meddler {
    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        let Some(ws) = flow.websocket.as_mut() else {
            return;
        };
        let Some(last) = ws.messages.last_mut() else {
            return;
        };
        if !last.from_client {
            return;
        }
        match last.as_text() {
            Some("rewrite-me") => last.set_text("rewritten"),
            Some("drop-me-please") => last.drop_message(),
            Some("inject") => {
                ws.inject(true, WebSocketMessage::text(false, "injected-to-client"));
                ws.inject(false, WebSocketMessage::text(true, "injected-to-server"));
            }
            _ => {}
        }
    }
}

#[actix_rt::test]
async fn addon_rewrites_drops_and_injects_messages() {
    let origin = WsOrigin::start().await;
    let proxy = TestProxy::start(Proxy::builder().addon(Meddler)).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("rewrite-me")).await;
    assert_eq!(next(&mut ws).await, Message::text("rewritten"));
    send(&mut ws, Message::text("drop-me-please")).await;
    send(&mut ws, Message::text("after-drop")).await;
    assert_eq!(next(&mut ws).await, Message::text("after-drop"));
    send(&mut ws, Message::text("inject")).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut ws).await.into_text().expect("text").to_string());
    }
    got.sort();
    assert_eq!(got, ["inject", "injected-to-client", "injected-to-server"]);

    let texts: Vec<String> = origin
        .record
        .received()
        .into_iter()
        .filter_map(|m| m.into_text().ok().map(|t| t.to_string()))
        .collect();
    assert_eq!(
        texts,
        ["rewritten", "after-drop", "inject", "injected-to-server"]
    );
    client_close(&mut ws).await;
    proxy.shutdown().await;
}

/// Keeps the injector of the WebSocket it sees start, and records every message.
#[derive(Clone, Default)]
struct KeepInjector {
    injector: Arc<Mutex<Option<waylay_core::flow::WebSocketInjector>>>,
    seen: Arc<Mutex<Vec<(bool, bool, String)>>>,
}

impl Addon for KeepInjector {
    async fn websocket_start(&mut self, flow: &mut HttpFlow) {
        *self.injector.lock().expect("lock") = flow.websocket.as_ref().and_then(|w| w.injector());
    }

    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        if let Some(m) = flow.websocket.as_ref().and_then(|w| w.messages.last()) {
            let text = m.as_text().unwrap_or_default().to_owned();
            self.seen
                .lock()
                .expect("lock")
                .push((m.from_client, m.injected, text));
        }
    }

    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        // The injected messages are in the flow's history, marked injected.
        if let Some(ws) = flow.websocket.as_ref() {
            for m in ws.messages.iter().filter(|m| m.injected) {
                let text = m.as_text().unwrap_or_default().to_owned();
                self.seen.lock().expect("lock").push((
                    m.from_client,
                    true,
                    format!("history:{text}"),
                ));
            }
        }
    }
}

#[actix_rt::test]
async fn injector_sends_at_any_time_outside_hooks() {
    let origin = WsOrigin::start().await;
    let keep = KeepInjector::default();
    let proxy = TestProxy::start(Proxy::builder().addon(keep.clone())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    // One exchange so the relay is surely running.
    send(&mut ws, Message::text("hello")).await;
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    let injector = keep
        .injector
        .lock()
        .expect("lock")
        .clone()
        .expect("an injector in websocket_start");
    // From the test itself, no hook running: one towards each side.
    injector
        .inject(true, WebSocketMessage::text(false, "pushed-to-client"))
        .expect("queued");
    injector
        .send(
            false,
            WebSocketMessage::binary(true, Bytes::from_static(b"pushed-to-server")),
        )
        .await
        .expect("queued");
    assert_eq!(next(&mut ws).await, Message::text("pushed-to-client"));
    // The origin echoes what it got: the binary message comes back through the proxy.
    assert_eq!(
        next(&mut ws).await,
        Message::binary(Bytes::from_static(b"pushed-to-server"))
    );
    client_close(&mut ws).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !injector.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // After the end, injecting fails cleanly.
    assert_eq!(
        injector.inject(true, WebSocketMessage::text(false, "late")),
        Err(waylay_core::flow::InjectError::Closed)
    );
    let seen = keep.seen.lock().expect("lock").clone();
    // The injected messages did not go through websocket_message; the echo did.
    assert!(
        !seen
            .iter()
            .any(|(_, injected, t)| *injected && !t.starts_with("history:")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(false, true, "history:pushed-to-client".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(true, true, "history:pushed-to-server".into())),
        "{seen:?}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn permessage_deflate_offer_is_negotiated_away() {
    let origin = WsOrigin::start().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let (mut ws, head) = ws_through_proxy(
        proxy.addr(),
        origin.addr,
        "/deflate",
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await
    .expect("upgrade");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
    let text = "compressible ".repeat(1000);
    send(&mut ws, Message::text(text.clone())).await;
    assert_eq!(next(&mut ws).await, Message::text(text));
    let handshakes = origin.record.handshakes();
    assert_eq!(handshakes.len(), 1);
    assert!(
        !handshakes[0]
            .iter()
            .any(|(n, _)| n == "sec-websocket-extensions"),
        "{handshakes:?}"
    );
    client_close(&mut ws).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn server_dropping_mid_stream_is_a_websocket_error() {
    let origin = WsOrigin::start().await;
    let http = http_origin().await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(Proxy::builder().addon(rec.clone())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("one")).await;
    assert_eq!(next(&mut ws).await, Message::text("one"));
    send(&mut ws, Message::text("drop-me")).await;
    // The client sees its connection end without a close frame.
    match ws_next(&mut ws).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => panic!("expected the connection to end, got {m:?}"),
    }
    let hooks = rec.wait_for("websocket_error").await;
    assert!(hooks.contains(&"websocket_error"), "{hooks:?}");
    assert!(!hooks.contains(&"websocket_end"), "{hooks:?}");
    let flow = rec.last();
    let err = flow.error.expect("flow.error set").msg;
    assert!(err.contains("server"), "{err}");

    // The proxy goes on serving.
    let out = proxy_get(proxy.addr(), &format!("http://{http}/after")).await;
    assert!(
        out.ends_with(&format!("origin GET /after host={http}")),
        "{out}"
    );
    proxy.shutdown().await;
}

/// Kills the flow at the client's message "kill-me" in `websocket_message`.
#[derive(Clone, Default)]
struct KillAtMessage;

impl Addon for KillAtMessage {
    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        let last = flow.websocket.as_ref().and_then(|ws| ws.messages.last());
        if last.is_some_and(|m| m.from_client && m.as_text() == Some("kill-me")) {
            flow.kill();
        }
    }
}

/// A flow killed at `websocket_message` ended with the relay's own words ("killed by an
/// addon") in place of the kill's error. mitmproxy 12.3.1 (a script calling `flow.kill()` in
/// `websocket_message`) ends it with `flow.error.msg == "Connection killed."`: so does waylay,
/// whatever the relay sees of the connections closing after the kill, and the connection
/// ends once (`websocket_error`, as the hook table says for a kill).
#[actix_rt::test]
async fn a_websocket_killed_at_a_message_keeps_the_kill_error() {
    let origin = WsOrigin::start().await;
    let http = http_origin().await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(Proxy::builder().addon(KillAtMessage).addon(rec.clone())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("one")).await;
    assert_eq!(next(&mut ws).await, Message::text("one"));
    send(&mut ws, Message::text("kill-me")).await;
    match ws_next(&mut ws).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => panic!("expected the connection to end, got {m:?}"),
    }
    let hooks = rec.wait_for("websocket_error").await;
    let ends: Vec<_> = hooks
        .iter()
        .filter(|h| matches!(**h, "websocket_error" | "websocket_end" | "error"))
        .collect();
    assert_eq!(ends, [&"websocket_error"], "{hooks:?}");
    let err = rec.last().error.expect("flow.error set").msg;
    assert_eq!(err, waylay_core::flow::KILLED_MESSAGE);
    assert!(!texts(&origin).iter().any(|t| t == "kill-me"));
    // Nothing else fires for it later, and the proxy goes on serving.
    let out = proxy_get(proxy.addr(), &format!("http://{http}/after")).await;
    assert!(
        out.ends_with(&format!("origin GET /after host={http}")),
        "{out}"
    );
    let ends_after = rec
        .hooks()
        .iter()
        .filter(|h| matches!(**h, "websocket_error" | "websocket_end" | "error"))
        .count();
    assert_eq!(ends_after, 1, "{:?}", rec.hooks());
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn client_dropping_mid_stream_is_a_websocket_error() {
    let origin = WsOrigin::start().await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(Proxy::builder().addon(rec.clone())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("one")).await;
    assert_eq!(next(&mut ws).await, Message::text("one"));
    drop(ws);
    let hooks = rec.wait_for("websocket_error").await;
    assert!(hooks.contains(&"websocket_error"), "{hooks:?}");
    assert!(!hooks.contains(&"websocket_end"), "{hooks:?}");
    let err = rec.last().error.expect("flow.error set").msg;
    assert!(err.contains("client"), "{err}");
    // The server's side was dropped too.
    for _ in 0..100 {
        if !origin.record.errors.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.record.errors.lock().expect("lock").len(), 1);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn websocket_option_off_relays_bytes_without_hooks() {
    let origin = WsOrigin::start().await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(Proxy::builder().set("websocket=false").addon(rec.clone())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("raw")).await;
    assert_eq!(next(&mut ws).await, Message::text("raw"));
    client_close(&mut ws).await;
    let hooks = rec.hooks();
    assert!(hooks.contains(&"response"), "{hooks:?}");
    assert!(
        !hooks
            .iter()
            .any(|h| h.starts_with("websocket_") && *h != "websocket_handshake"),
        "{hooks:?}"
    );
    proxy.shutdown().await;
}

/// Sends 1 MiB messages towards a server that stopped reading: the sends must stall long
/// before 256 MiB, the proxy having stopped reading from the client.
async fn client_sends_stall(ws: &mut WsClient) -> usize {
    let chunk = Bytes::from(vec![1u8; 1 << 20]);
    for i in 0..256 {
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            ws.send(Message::Binary(chunk.clone())),
        )
        .await;
        match sent {
            Ok(r) => r.expect("send"),
            Err(_) => return i,
        }
    }
    256
}

#[actix_rt::test]
async fn slow_server_stops_the_proxy_reading_from_the_client() {
    let origin = WsOrigin::start().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("stall")).await;
    let sent = client_sends_stall(&mut ws).await;
    println!("client got {sent} MiB out before stalling");
    assert!(sent < 128, "the proxy kept reading: {sent} MiB");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn slow_client_stops_the_proxy_reading_from_the_server() {
    let origin = WsOrigin::start().await;
    // With an addon on every message, the hook path is the one under test.
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder::default())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("flood")).await;
    let flooded = || {
        origin
            .record
            .flooded
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut last = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = flooded();
        if now == last {
            break;
        }
        last = now;
    }
    println!("server got {last} MiB out before stalling");
    assert!(last < 128, "the proxy kept reading: {last} MiB");
    // Reading again lets the rest through.
    for _ in 0..256 {
        match next(&mut ws).await {
            Message::Binary(b) => assert_eq!(b.len(), 1 << 20),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    assert_eq!(flooded(), 256);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn recorded_history_is_bounded() {
    let origin = WsOrigin::start().await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(Proxy::builder().addon(rec.clone())).await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    let chunk = big(1 << 20);
    for _ in 0..40 {
        send(&mut ws, Message::binary(chunk.clone())).await;
        assert_eq!(next(&mut ws).await, Message::binary(chunk.clone()));
    }
    client_close(&mut ws).await;
    rec.wait_for("websocket_end").await;
    let flow = rec.last();
    let kept = flow.websocket.expect("websocket").messages;
    let bytes: usize = kept.iter().map(|m| m.content.len()).sum();
    let forgotten = flow.metadata["websocket_messages_forgotten"]
        .as_u64()
        .expect("count");
    assert!(bytes <= 32 << 20, "{bytes}");
    assert_eq!(kept.len() as u64 + forgotten, 80);
    proxy.shutdown().await;
}

/// Intercepts each client message that starts with `hold` and hands its release handle to
/// the test.
#[derive(Clone)]
struct Holder {
    held: tokio::sync::mpsc::UnboundedSender<waylay_core::flow::InterceptHandle>,
}

impl Addon for Holder {
    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        let hold = flow
            .websocket
            .as_ref()
            .and_then(|ws| ws.messages.last())
            .is_some_and(|m| m.from_client && m.as_text().is_some_and(|t| t.starts_with("hold")));
        if hold {
            let _ = self.held.send(flow.intercept());
        }
    }
}

async fn next_held(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<waylay_core::flow::InterceptHandle>,
) -> waylay_core::flow::InterceptHandle {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message held in time")
        .expect("the holder is alive")
}

fn texts(origin: &WsOrigin) -> Vec<String> {
    origin
        .record
        .received()
        .into_iter()
        .filter_map(|m| m.into_text().ok().map(|t| t.to_string()))
        .collect()
}

#[actix_rt::test]
async fn intercepted_message_waits_and_is_sent_edited_or_killed() {
    let origin = WsOrigin::start().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let rec = Recorder::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .addon(Holder { held: tx })
            .addon(rec.clone()),
    )
    .await;

    // Held, then resumed with an edit of the held message: the origin gets the edit.
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("hold-me")).await;
    let handle = next_held(&mut rx).await;
    assert!(
        !texts(&origin).iter().any(|t| t == "hold-me"),
        "a held message went on"
    );
    handle.resume_with::<waylay_core::flow::HttpEdit>(Box::new(|f: &mut HttpFlow| {
        if let Some(m) = f.websocket.as_mut().and_then(|ws| ws.messages.last_mut()) {
            m.set_text("edited while held");
        }
    }));
    assert_eq!(next(&mut ws).await, Message::text("edited while held"));
    // Resumed without an edit: sent as it was; unheld messages pass as before.
    send(&mut ws, Message::text("hold-plain")).await;
    next_held(&mut rx).await.resume();
    assert_eq!(next(&mut ws).await, Message::text("hold-plain"));
    send(&mut ws, Message::text("free")).await;
    assert_eq!(next(&mut ws).await, Message::text("free"));
    assert_eq!(texts(&origin), ["edited while held", "hold-plain", "free"]);
    client_close(&mut ws).await;
    let hooks = rec.wait_for("websocket_end").await;
    assert!(hooks.contains(&"websocket_end"), "{hooks:?}");
    // The flow's history holds the edited message.
    let flow = rec.last();
    let recorded: Vec<&str> = flow
        .websocket
        .as_ref()
        .expect("websocket data")
        .messages
        .iter()
        .filter(|m| m.from_client)
        .filter_map(|m| m.as_text())
        .collect();
    assert_eq!(recorded, ["edited while held", "hold-plain", "free"]);

    // Killed while held: the message never reaches the origin, the client's connection
    // ends without a close frame, and the flow ends as a WebSocket error.
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("hold-kill")).await;
    next_held(&mut rx).await.kill();
    match ws_next(&mut ws).await {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => panic!("expected the connection to end, got {m:?}"),
    }
    let hooks = rec.wait_for("websocket_error").await;
    assert!(hooks.contains(&"websocket_error"), "{hooks:?}");
    assert!(!texts(&origin).iter().any(|t| t == "hold-kill"));
    let err = rec.last().error.expect("flow.error set").msg;
    assert!(err.contains("killed"), "{err}");

    // The next connection works.
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/", &[])
        .await
        .expect("upgrade");
    send(&mut ws, Message::text("after kill")).await;
    assert_eq!(next(&mut ws).await, Message::text("after kill"));
    client_close(&mut ws).await;
    proxy.shutdown().await;
}
