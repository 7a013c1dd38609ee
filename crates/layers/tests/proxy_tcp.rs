//! Raw TCP through CONNECT on 127.0.0.1: line, binary and server-speaks-first protocols,
//! `tcp_message` rewriting, `tcp_hosts`, the event order, errors when either side drops, and
//! backpressure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waylay_core::flow::Client;
use waylay_core::hooks::{Layer, NextLayer, ServerConnectionHookData};
use waylay_core::{Addon, HookKind, HookSet, TcpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{
    TestProxy, connect_tunnel, http_origin, proxy_get, read_n, read_to_close, tcp_banner_origin,
    tcp_binary_origin, tcp_line_origin, tcp_reset_origin, tcp_stalled_origin, within,
};

type Log = Arc<Mutex<Vec<String>>>;

/// Records the events it sees; rewrites messages as told.
#[derive(Default)]
struct Recorder {
    log: Log,
    /// Uppercase what the client sends.
    upper: bool,
    /// Replace `echo:` by `ECHO!` in what the server sends.
    rewrite_server: bool,
    /// Kill the flow on a message containing this.
    kill_on: Option<&'static [u8]>,
    /// Inject a line to the client after its first message.
    inject: bool,
    /// Force raw TCP in `next_layer`.
    force_tcp: bool,
    /// Record the messages' content in the log.
    contents: bool,
}

impl Recorder {
    fn push(&self, s: impl Into<String>) {
        self.log.lock().expect("test step").push(s.into());
    }
}

impl Addon for Recorder {
    async fn client_connect(&mut self, _c: &mut Client) {
        self.push("client_connect");
    }
    async fn client_disconnect(&mut self, _c: &mut Client) {
        self.push("client_disconnect");
    }
    async fn server_connect(&mut self, _d: &mut ServerConnectionHookData) {
        self.push("server_connect");
    }
    async fn server_disconnect(&mut self, _d: &mut ServerConnectionHookData) {
        self.push("server_disconnect");
    }
    async fn next_layer(&mut self, d: &mut NextLayer) {
        self.push(format!("next_layer {:?}", d.layer));
        if self.force_tcp {
            d.layer = Layer::Tcp;
        }
    }
    async fn tcp_start(&mut self, f: &mut TcpFlow) {
        assert!(f.live);
        self.push("tcp_start");
    }
    async fn tcp_message(&mut self, f: &mut TcpFlow) {
        let first = f.messages.len() == 1;
        let Some(m) = f.messages.last_mut() else {
            return;
        };
        let from_client = m.from_client;
        if self.contents {
            self.push(format!(
                "tcp_message {} {}",
                if from_client { "c>s" } else { "s>c" },
                String::from_utf8_lossy(&m.content)
            ));
        } else {
            self.push("tcp_message");
        }
        if self
            .kill_on
            .is_some_and(|k| m.content.windows(k.len()).any(|w| w == k))
        {
            f.kill();
            return;
        }
        if self.upper && from_client {
            m.content = Bytes::from(m.content.to_ascii_uppercase());
        }
        if self.rewrite_server && !from_client {
            let text = String::from_utf8_lossy(&m.content).replace("echo:", "ECHO!");
            m.content = Bytes::from(text);
        }
        if self.inject && first {
            f.inject(true, &b"injected\n"[..]);
        }
    }
    async fn tcp_error(&mut self, f: &mut TcpFlow) {
        let msg = f.error.as_ref().map(|e| e.msg.clone()).unwrap_or_default();
        self.push(format!("tcp_error {msg}"));
    }
    async fn tcp_end(&mut self, f: &mut TcpFlow) {
        assert!(!f.live);
        self.push("tcp_end");
    }
}

/// Waits (bounded) until the log has an entry starting with `prefix`; returns the log.
async fn wait_for(log: &Log, prefix: &str) -> Vec<String> {
    for _ in 0..400 {
        {
            let l = log.lock().expect("test step");
            if l.iter().any(|e| e.starts_with(prefix)) {
                return l.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no {prefix:?} in {:?}", log.lock().expect("test step"));
}

/// A plain HTTP request through the proxy still works.
async fn http_still_works(proxy: &TestProxy) {
    let origin = http_origin().await;
    let out = within(
        "http after tcp",
        proxy_get(proxy.addr(), &format!("http://{origin}/after")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

async fn tunnel(proxy: &TestProxy, target: std::net::SocketAddr) -> TcpStream {
    within("CONNECT", connect_tunnel(proxy.addr(), &target.to_string()))
        .await
        .expect("test step")
}

#[actix_rt::test]
async fn line_protocol_with_events_in_order() {
    let origin = tcp_line_origin().await;
    let log = Log::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder {
        log: log.clone(),
        contents: true,
        ..Recorder::default()
    }))
    .await;
    let mut s = tunnel(&proxy, origin.addr).await;
    s.write_all(b"hello\n").await.unwrap();
    assert_eq!(read_n(&mut s, 12).await, b"echo: hello\n");
    s.write_all(b"second line\n").await.unwrap();
    assert_eq!(read_n(&mut s, 18).await, b"echo: second line\n");
    // Half-close: the server sees EOF, closes its side, and the flow ends cleanly.
    s.shutdown().await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    let events = wait_for(&log, "client_disconnect").await;
    assert_eq!(
        events,
        [
            "client_connect",
            "next_layer Tcp",
            "tcp_start",
            "server_connect",
            "tcp_message c>s hello\n",
            "tcp_message s>c echo: hello\n",
            "tcp_message c>s second line\n",
            "tcp_message s>c echo: second line\n",
            "server_disconnect",
            "tcp_end",
            "client_disconnect",
        ]
    );
    assert_eq!(origin.received(), b"hello\nsecond line\n");
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn line_protocol_fast_path_without_tcp_message() {
    // No addon at all: bytes are copied with no flow.
    let origin = tcp_line_origin().await;
    let proxy = TestProxy::start(Proxy::builder()).await;
    let mut s = tunnel(&proxy, origin.addr).await;
    for i in 0..100 {
        let line = format!("line {i}\n");
        s.write_all(line.as_bytes()).await.unwrap();
        let want = format!("echo: {line}");
        assert_eq!(read_n(&mut s, want.len()).await, want.as_bytes());
    }
    s.shutdown().await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

/// Sends `total` bytes in frames with every byte value (0x00 and non-UTF-8 included) and
/// checks each answer frame, the reader running beside the writer.
async fn binary_roundtrip(s: TcpStream, total: usize) {
    let frame_len = 100_003usize;
    let frames = total / frame_len;
    let payload = |i: usize| -> Vec<u8> {
        (0..frame_len)
            .map(|j| ((i * 7 + j * 13) % 256) as u8)
            .collect()
    };
    let (mut r, mut w) = s.into_split();
    let writer = async move {
        for i in 0..frames {
            let len = u32::try_from(frame_len).expect("test step").to_be_bytes();
            w.write_all(&len).await.expect("test step");
            w.write_all(&payload(i)).await.expect("test step");
        }
        w.shutdown().await.expect("test step");
    };
    let reader = async move {
        for i in 0..frames {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).await.expect("test step");
            assert_eq!(u32::from_be_bytes(len) as usize, frame_len);
            let mut got = vec![0u8; frame_len];
            r.read_exact(&mut got).await.expect("test step");
            let want: Vec<u8> = payload(i).iter().map(|b| !b).collect();
            assert!(got == want, "frame {i} differs");
        }
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.expect("test step");
        assert!(rest.is_empty());
    };
    within("binary roundtrip", futures::future::join(writer, reader)).await;
}

#[actix_rt::test]
async fn binary_protocol_megabytes_both_paths() {
    let origin = tcp_binary_origin().await;
    let total = 4 * 1024 * 1024;
    // Fast path.
    let proxy = TestProxy::start(Proxy::builder()).await;
    binary_roundtrip(tunnel(&proxy, origin.addr).await, total).await;
    http_still_works(&proxy).await;
    proxy.shutdown().await;

    // Every chunk through `tcp_message` (unchanged).
    let log = Log::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder {
        log: log.clone(),
        ..Recorder::default()
    }))
    .await;
    binary_roundtrip(tunnel(&proxy, origin.addr).await, total).await;
    let events = wait_for(&log, "tcp_end").await;
    assert!(events.iter().filter(|e| *e == "tcp_message").count() >= 2);
    assert!(!events.iter().any(|e| e.starts_with("tcp_error")));
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn server_speaks_first() {
    let origin = tcp_banner_origin("220 waylay-test ready\r\n").await;
    let log = Log::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder {
        log: log.clone(),
        contents: true,
        ..Recorder::default()
    }))
    .await;
    let mut s = tunnel(&proxy, origin.addr).await;
    // The client sends nothing: after the detection timeout the banner arrives.
    assert_eq!(read_n(&mut s, 23).await, b"220 waylay-test ready\r\n");
    s.write_all(b"HELO me\n").await.unwrap();
    assert_eq!(read_n(&mut s, 14).await, b"echo: HELO me\n");
    drop(s);
    let events = wait_for(&log, "tcp_end").await;
    assert!(events.contains(&"next_layer Tcp".to_owned()), "{events:?}");
    assert!(
        events.contains(&"tcp_message s>c 220 waylay-test ready\r\n".to_owned()),
        "{events:?}"
    );
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn tcp_message_rewrites_both_directions_and_injects() {
    let origin = tcp_line_origin().await;
    let log = Log::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder {
        log: log.clone(),
        upper: true,
        rewrite_server: true,
        inject: true,
        ..Recorder::default()
    }))
    .await;
    let mut s = tunnel(&proxy, origin.addr).await;
    s.write_all(b"hello there\n").await.unwrap();
    // The injected line goes to the client right after the first message.
    assert_eq!(read_n(&mut s, 9).await, b"injected\n");
    assert_eq!(read_n(&mut s, 18).await, b"ECHO! HELLO THERE\n");
    s.shutdown().await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    // The server got the rewritten bytes.
    assert_eq!(origin.received(), b"HELLO THERE\n");
    wait_for(&log, "tcp_end").await;
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn tcp_hosts_forces_raw_tcp_for_http_looking_bytes() {
    let origin = tcp_line_origin().await;
    let log = Log::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!(
                "tcp_hosts=^127\\.0\\.0\\.1:{}$",
                origin.addr.port()
            ))
            .addon(Recorder {
                log: log.clone(),
                ..Recorder::default()
            }),
    )
    .await;
    let mut s = tunnel(&proxy, origin.addr).await;
    // Would be parsed as HTTP without tcp_hosts; here the line server answers it.
    s.write_all(b"GET / HTTP/1.1\n").await.unwrap();
    assert_eq!(read_n(&mut s, 21).await, b"echo: GET / HTTP/1.1\n");
    drop(s);
    let events = wait_for(&log, "tcp_end").await;
    assert!(events.contains(&"next_layer Tcp".to_owned()), "{events:?}");

    // next_layer can force the same for a host not listed.
    let other = tcp_line_origin().await;
    let proxy2 = TestProxy::start(Proxy::builder().addon(Recorder {
        force_tcp: true,
        ..Recorder::default()
    }))
    .await;
    let mut s = tunnel(&proxy2, other.addr).await;
    s.write_all(b"GET / HTTP/1.1\n").await.unwrap();
    assert_eq!(read_n(&mut s, 21).await, b"echo: GET / HTTP/1.1\n");
    drop(s);
    http_still_works(&proxy).await;
    proxy.shutdown().await;
    proxy2.shutdown().await;
}

#[actix_rt::test]
async fn refused_server_is_a_tcp_error_and_the_client_is_closed() {
    // A port that was just free: nobody listens.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free.local_addr().unwrap();
    drop(free);
    let log = Log::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder {
        log: log.clone(),
        ..Recorder::default()
    }))
    .await;
    let mut s = tunnel(&proxy, dead).await;
    s.write_all(b"hello\n").await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    let events = wait_for(&log, "tcp_error").await;
    let err = events.iter().find(|e| e.starts_with("tcp_error")).unwrap();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!events.contains(&"tcp_end".to_owned()));
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn server_reset_mid_stream_is_a_tcp_error() {
    let origin = tcp_reset_origin(6).await;
    for hooked in [false, true] {
        let log = Log::default();
        let rec = Recorder {
            log: log.clone(),
            ..Recorder::default()
        };
        // With only the lifecycle hooks the relay takes the fast path.
        let proxy = if hooked {
            TestProxy::start(Proxy::builder().addon(rec)).await
        } else {
            TestProxy::start(Proxy::builder().addon(Lifecycle(rec))).await
        };
        let mut s = tunnel(&proxy, origin.addr).await;
        s.write_all(b"hello\n").await.unwrap();
        // The client's connection is closed (reset or FIN) without data.
        let mut buf = Vec::new();
        let _ = within("closed", s.read_to_end(&mut buf)).await;
        assert!(buf.is_empty());
        let events = wait_for(&log, "tcp_error").await;
        let err = events.iter().find(|e| e.starts_with("tcp_error")).unwrap();
        assert!(err.contains("server"), "{err}");
        assert!(!events.contains(&"tcp_end".to_owned()), "{events:?}");
        http_still_works(&proxy).await;
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn client_reset_mid_stream_is_a_tcp_error() {
    let origin = tcp_line_origin().await;
    for hooked in [false, true] {
        let log = Log::default();
        let rec = Recorder {
            log: log.clone(),
            ..Recorder::default()
        };
        let proxy = if hooked {
            TestProxy::start(Proxy::builder().addon(rec)).await
        } else {
            TestProxy::start(Proxy::builder().addon(Lifecycle(rec))).await
        };
        let mut s = tunnel(&proxy, origin.addr).await;
        s.write_all(b"hello\n").await.unwrap();
        assert_eq!(read_n(&mut s, 12).await, b"echo: hello\n");
        s.set_zero_linger().unwrap();
        drop(s);
        let events = wait_for(&log, "tcp_error").await;
        let err = events.iter().find(|e| e.starts_with("tcp_error")).unwrap();
        assert!(err.contains("client"), "{err}");
        assert!(!events.contains(&"tcp_end".to_owned()), "{events:?}");
        http_still_works(&proxy).await;
        proxy.shutdown().await;
    }
}

#[actix_rt::test]
async fn killing_the_flow_closes_both_sides() {
    let origin = tcp_line_origin().await;
    let log = Log::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Recorder {
        log: log.clone(),
        kill_on: Some(b"die"),
        ..Recorder::default()
    }))
    .await;
    let mut s = tunnel(&proxy, origin.addr).await;
    s.write_all(b"ok\n").await.unwrap();
    assert_eq!(read_n(&mut s, 9).await, b"echo: ok\n");
    s.write_all(b"die\n").await.unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    let events = wait_for(&log, "tcp_error").await;
    assert!(
        events.contains(&"tcp_error Connection killed.".to_owned()),
        "{events:?}"
    );
    assert_eq!(origin.received(), b"ok\n");
    http_still_works(&proxy).await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_server_that_does_not_read_stops_the_proxy_reading_the_client() {
    let origin = tcp_stalled_origin(Duration::from_secs(5)).await;
    for hooked in [false, true] {
        let proxy = if hooked {
            TestProxy::start(Proxy::builder().addon(Recorder::default())).await
        } else {
            TestProxy::start(Proxy::builder()).await
        };
        let s = tunnel(&proxy, origin.addr).await;
        let (_r, mut w) = s.into_split();
        // Write 64 MiB for at most 2 s: socket buffers on the way take a few MiB; a proxy
        // that read without bound would take it all.
        let chunk = vec![0x5au8; 64 * 1024];
        let mut sent = 0usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while sent < 64 * 1024 * 1024 {
            match tokio::time::timeout_at(deadline, w.write(&chunk)).await {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) => panic!("write failed: {e}"),
                Err(_) => break,
            }
        }
        println!("hooked={hooked}: the client could write {sent} bytes");
        assert!(
            sent < 40 * 1024 * 1024,
            "the proxy took {sent} bytes from the client while the server read none"
        );
        drop(w);
        http_still_works(&proxy).await;
        proxy.shutdown().await;
    }
}

/// Handles only `tcp_start`, `tcp_error` and `tcp_end` (so the relay takes the fast path).
struct Lifecycle(Recorder);

impl Addon for Lifecycle {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::TcpStart, HookKind::TcpError, HookKind::TcpEnd])
    }
    async fn tcp_start(&mut self, f: &mut TcpFlow) {
        self.0.tcp_start(f).await;
    }
    async fn tcp_error(&mut self, f: &mut TcpFlow) {
        self.0.tcp_error(f).await;
    }
    async fn tcp_end(&mut self, f: &mut TcpFlow) {
        self.0.tcp_end(f).await;
    }
}

/// Keeps the injector of the TCP flow it sees start; handles `tcp_message` or not.
#[derive(Clone, Default)]
struct KeepInjector {
    injector: Arc<Mutex<Option<waylay_core::flow::TcpInjector>>>,
    history: Log,
}

impl Addon for KeepInjector {
    // Declared, so that the very first connection already takes the unhooked relay.
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::TcpStart, HookKind::TcpEnd])
    }
    async fn tcp_start(&mut self, flow: &mut TcpFlow) {
        *self.injector.lock().expect("lock") = flow.injector();
    }
    async fn tcp_end(&mut self, flow: &mut TcpFlow) {
        let mut h = self.history.lock().expect("lock");
        for m in flow.messages.iter().filter(|m| m.injected) {
            h.push(String::from_utf8_lossy(&m.content).into_owned());
        }
    }
}

/// The same, also handling `tcp_message` (the hooked relay).
#[derive(Clone, Default)]
struct KeepInjectorHooked(KeepInjector);

impl Addon for KeepInjectorHooked {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::TcpStart, HookKind::TcpMessage, HookKind::TcpEnd])
    }
    async fn tcp_start(&mut self, flow: &mut TcpFlow) {
        self.0.tcp_start(flow).await;
    }
    async fn tcp_message(&mut self, _flow: &mut TcpFlow) {}
    async fn tcp_end(&mut self, flow: &mut TcpFlow) {
        self.0.tcp_end(flow).await;
    }
}

async fn inject_at_any_time(
    keep: KeepInjector,
    builder: waylay_layers::ProxyBuilder,
) -> Vec<String> {
    let origin = tcp_line_origin().await;
    let proxy = TestProxy::start(builder).await;
    let mut s = tunnel(&proxy, origin.addr).await;
    s.write_all(b"hello\n").await.expect("write");
    assert_eq!(read_n(&mut s, 12).await, b"echo: hello\n");
    let injector = keep
        .injector
        .lock()
        .expect("lock")
        .clone()
        .expect("an injector in tcp_start");
    // Outside any hook: a line to the client, and one to the server (echoed back).
    injector
        .inject(true, Bytes::from_static(b"pushed\n"))
        .expect("queued");
    assert_eq!(read_n(&mut s, 7).await, b"pushed\n");
    within(
        "inject",
        injector.send(false, Bytes::from_static(b"to server\n")),
    )
    .await
    .expect("queued");
    assert_eq!(read_n(&mut s, 16).await, b"echo: to server\n");
    s.shutdown().await.expect("shutdown");
    assert!(read_to_close(&mut s).await.is_empty());
    within("relay end", async {
        while !injector.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        injector.inject(true, Bytes::from_static(b"late")),
        Err(waylay_core::flow::InjectError::Closed)
    );
    assert!(origin.received().ends_with(b"to server\n"));
    http_still_works(&proxy).await;
    proxy.shutdown().await;
    keep.history.lock().expect("lock").clone()
}

#[actix_rt::test]
async fn injector_sends_at_any_time_without_a_message_hook() {
    let keep = KeepInjector::default();
    let history = inject_at_any_time(keep.clone(), Proxy::builder().addon(keep)).await;
    // No messages are recorded on this path.
    assert!(history.is_empty(), "{history:?}");
}

#[actix_rt::test]
async fn injector_sends_at_any_time_with_a_message_hook() {
    let keep = KeepInjectorHooked::default();
    let history = inject_at_any_time(keep.0.clone(), Proxy::builder().addon(keep.clone())).await;
    assert_eq!(history, ["pushed\n", "to server\n"]);
}

/// Takes the kill switch at `tcp_start` (optionally also handling `tcp_message`: the hooked
/// relay), and records the error `tcp_error` reports.
#[derive(Debug, Clone, Default)]
struct KeepSwitch {
    switch: Arc<Mutex<Option<waylay_core::flow::KillSwitch>>>,
    error: Arc<Mutex<Option<String>>>,
    hooked: bool,
}

impl Addon for KeepSwitch {
    fn hooks(&self) -> HookSet {
        if self.hooked {
            HookSet::of(&[HookKind::TcpStart, HookKind::TcpMessage, HookKind::TcpError])
        } else {
            HookSet::of(&[HookKind::TcpStart, HookKind::TcpError])
        }
    }
    async fn tcp_start(&mut self, flow: &mut TcpFlow) {
        *self.switch.lock().expect("lock") = Some(flow.kill_switch());
    }
    async fn tcp_message(&mut self, _flow: &mut TcpFlow) {}
    async fn tcp_error(&mut self, flow: &mut TcpFlow) {
        *self.error.lock().expect("lock") = flow.error.as_ref().map(|e| e.msg.clone());
    }
}

#[actix_rt::test]
async fn the_kill_switch_closes_a_live_relay_between_messages_on_both_paths() {
    for hooked in [false, true] {
        let keep = KeepSwitch {
            hooked,
            ..KeepSwitch::default()
        };
        let origin = tcp_line_origin().await;
        let proxy = TestProxy::start(Proxy::builder().addon(keep.clone())).await;
        let mut s = tunnel(&proxy, origin.addr).await;
        s.write_all(b"hello\n").await.expect("write");
        assert_eq!(read_n(&mut s, 12).await, b"echo: hello\n");
        let switch = keep
            .switch
            .lock()
            .expect("lock")
            .clone()
            .expect("a switch taken in tcp_start");
        // Nothing is in flight: the relay waits on both reads when the switch trips.
        switch.kill();
        assert!(read_to_close(&mut s).await.is_empty(), "hooked: {hooked}");
        within("tcp_error", async {
            while keep.error.lock().expect("lock").is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert_eq!(
            keep.error.lock().expect("lock").as_deref(),
            Some(waylay_core::flow::KILLED_MESSAGE),
            "hooked: {hooked}"
        );
        http_still_works(&proxy).await;
        proxy.shutdown().await;
    }
}
