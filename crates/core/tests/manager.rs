//! The addon manager through the testkit: hook order, ownership, concurrency, runtime
//! add/remove, lifecycle, `update`, commands, the `log` hook and intercepts.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};
use waylay_core::flow::{Address, Flow, InterceptHandle, Release, Server};
use waylay_core::hooks::{
    ClientHelloData, Configure, Layer, Loader, LogEntry, NextLayer, ServerConnectionHookData, Side,
    TlsData,
};
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionsError, TcpFlow};
use waylay_testkit::{AddonHarness, FlowExt, tclient, tflow, tresp, ttcpflow, twebsocketflow};

type Events = Arc<Mutex<Vec<String>>>;

fn events() -> Events {
    Arc::default()
}

fn taken(events: &Events) -> Vec<String> {
    std::mem::take(&mut *events.lock().expect("lock"))
}

/// Appends its tag to the `x-chain` request header (reading what the previous addons left)
/// in every HTTP request and response hook.
struct Tag(&'static str);

impl Tag {
    fn chain(&self, flow: &mut HttpFlow) {
        let prev = flow.request.headers.get("x-chain").unwrap_or("").to_owned();
        flow.request
            .headers
            .insert("x-chain", format!("{prev}{}", self.0));
    }
}

impl Addon for Tag {
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        self.chain(flow);
    }
    async fn request(&mut self, flow: &mut HttpFlow) {
        self.chain(flow);
    }
    async fn response(&mut self, flow: &mut HttpFlow) {
        self.chain(flow);
    }
}

fn chain(flow: &HttpFlow) -> &str {
    flow.request.headers.get("x-chain").unwrap_or("")
}

#[actix_rt::test]
async fn hooks_walk_addons_in_registration_order() {
    let mut h = AddonHarness::with_addons((Tag("a"), Tag("b"), Tag("c"))).await;
    let flow = h.request_headers(tflow()).await;
    assert_eq!(chain(&flow), "abc");
    let flow = h.request(flow).await;
    assert_eq!(chain(&flow), "abcabc");
    let flow = h.response(flow.with_response(tresp())).await;
    assert_eq!(chain(&flow), "abcabcabc");
}

/// Checks that what the previous addon did is there, then changes the flow further.
struct Follower;

impl Addon for Follower {
    async fn request(&mut self, flow: &mut HttpFlow) {
        let saw = flow.request.headers.get("x-chain") == Some("a");
        flow.request
            .headers
            .insert("x-follower-saw-a", saw.to_string());
        flow.request.path = "/rewritten".into();
        flow.response = Some(tresp());
    }
}

#[actix_rt::test]
async fn an_addons_change_is_seen_by_the_next_and_returned() {
    let mut h = AddonHarness::with_addons((Tag("a"), Follower, Tag("c"))).await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.headers.get("x-follower-saw-a"), Some("true"));
    assert_eq!(chain(&flow), "ac");
    assert_eq!(flow.request.path, "/rewritten");
    assert_eq!(flow.response.unwrap().status_code, 200);
}

/// Holds every request until released; declares its hooks so no other hook is sent to it.
struct Gate {
    entered: Option<oneshot::Sender<()>>,
    release: Arc<Notify>,
}

impl Addon for Gate {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        if let Some(tx) = self.entered.take() {
            let _ = tx.send(());
        }
        self.release.notified().await;
        flow.request.headers.insert("x-gate", "passed");
    }
}

/// Counts responses in a `count` header.
#[derive(Default)]
struct Counter(u64);

impl Addon for Counter {
    async fn response(&mut self, flow: &mut HttpFlow) {
        self.0 += 1;
        if let Some(r) = flow.response.as_mut() {
            r.headers.insert("count", self.0.to_string());
        }
    }
}

#[actix_rt::test]
async fn a_slow_addon_delays_only_the_flows_it_holds() {
    let release = Arc::new(Notify::new());
    let (entered_tx, entered) = oneshot::channel();
    let gate = Gate {
        entered: Some(entered_tx),
        release: release.clone(),
    };
    let mut h = AddonHarness::with_addons((gate, Counter::default())).await;

    let manager = h.manager().clone();
    let held = actix_rt::spawn(async move {
        manager
            .fire(HookKind::Request, Box::new(tflow()))
            .await
            .map(|f| *f)
    });
    entered.await.unwrap();

    // While the gate holds that flow, the manager answers and other hooks' flows pass.
    for n in 1..=3 {
        let flow = h.response(tflow().with_response(tresp())).await;
        assert_eq!(
            flow.response.unwrap().headers.get("count"),
            Some(n.to_string().as_str())
        );
    }
    assert_eq!(h.manager().addons().await.len(), 2);
    assert_eq!(h.options().int("listen_port"), 8080);
    assert!(!held.is_finished());

    release.notify_one();
    let flow = held.await.unwrap().unwrap();
    assert_eq!(flow.request.headers.get("x-gate"), Some("passed"));
}

/// Records every lifecycle event and request it sees.
struct Recorder {
    name: &'static str,
    events: Events,
}

impl Recorder {
    fn new(name: &'static str, events: &Events) -> Self {
        Self {
            name,
            events: events.clone(),
        }
    }

    fn record(&self, what: &str) {
        self.events
            .lock()
            .expect("lock")
            .push(format!("{}:{what}", self.name));
    }
}

impl Addon for Recorder {
    async fn load(&mut self, _loader: &mut Loader) {
        self.record("load");
    }
    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        let what = if cfg.changed("listen_port") && cfg.updated.len() == 1 {
            "configure(listen_port)"
        } else {
            "configure(all)"
        };
        self.record(what);
        Ok(())
    }
    async fn running(&mut self) {
        self.record("running");
    }
    async fn done(&mut self) {
        self.record("done");
    }
    async fn request(&mut self, flow: &mut HttpFlow) {
        self.record("request");
        Tag(self.name).chain(flow);
    }
}

#[actix_rt::test]
async fn lifecycle_load_configure_running_done() {
    let ev = events();
    let mut h = AddonHarness::new(Recorder::new("a", &ev)).await;
    assert_eq!(taken(&ev), ["a:load", "a:configure(all)"]);

    h.running().await;
    assert_eq!(taken(&ev), ["a:running"]);
    // An addon added while running gets `running` too.
    h.add(Recorder::new("b", &ev)).await;
    assert_eq!(taken(&ev), ["b:load", "b:configure(all)", "b:running"]);

    h.set_options(&["listen_port=9090"]).await.unwrap();
    assert_eq!(
        taken(&ev),
        ["a:configure(listen_port)", "b:configure(listen_port)"]
    );

    h.shutdown().await;
    assert_eq!(taken(&ev), ["a:done", "b:done"]);
    let flow = h.request(tflow()).await;
    assert_eq!(chain(&flow), "");
    assert!(taken(&ev).is_empty());
}

#[actix_rt::test]
async fn addons_are_added_and_removed_at_runtime() {
    let ev = events();
    let mut h = AddonHarness::new(Recorder::new("a", &ev)).await;
    assert_eq!(chain(&h.request(tflow()).await), "a");

    let b = h.add(Recorder::new("b", &ev)).await;
    assert_eq!(chain(&h.request(tflow()).await), "ab");
    taken(&ev);

    assert!(h.remove(b).await);
    assert_eq!(taken(&ev), ["b:done"]);
    assert_eq!(chain(&h.request(tflow()).await), "a");
    assert_eq!(taken(&ev), ["a:request"]);
    assert!(!h.remove(b).await, "removing twice");
    assert_eq!(h.manager().addons().await.len(), 1);

    // Adding it back puts it last.
    h.add(Recorder::new("b", &ev)).await;
    h.add(Tag("c")).await;
    assert_eq!(chain(&h.request(tflow()).await), "abc");
}

/// Implements every flow hook; records which method ran and marks the payload.
struct EveryHook(Events);

impl EveryHook {
    fn hit(&self, method: &str) {
        self.0.lock().expect("lock").push(method.to_owned());
    }
    fn http(&self, method: &str, flow: &mut HttpFlow) {
        self.hit(method);
        flow.comment = method.to_owned();
    }
    fn tcp(&self, method: &str, flow: &mut TcpFlow) {
        self.hit(method);
        flow.comment = method.to_owned();
    }
    fn tls(&self, method: &str, data: &mut TlsData) {
        self.hit(method);
        data.alpn = Some(method.to_owned());
    }
}

impl Addon for EveryHook {
    async fn client_connect(&mut self, c: &mut waylay_core::flow::Client) {
        self.hit("client_connect");
        c.proxy_mode = "client_connect".into();
    }
    async fn client_disconnect(&mut self, c: &mut waylay_core::flow::Client) {
        self.hit("client_disconnect");
        c.proxy_mode = "client_disconnect".into();
    }
    async fn server_connect(&mut self, d: &mut ServerConnectionHookData) {
        self.hit("server_connect");
        d.server.address = Address::new("elsewhere.test", 8443);
    }
    async fn server_disconnect(&mut self, d: &mut ServerConnectionHookData) {
        self.hit("server_disconnect");
        d.server.error = Some("server_disconnect".into());
    }
    async fn next_layer(&mut self, d: &mut NextLayer) {
        self.hit("next_layer");
        d.layer = Layer::Tcp;
    }
    async fn http_connect(&mut self, f: &mut HttpFlow) {
        self.http("http_connect", f);
    }
    async fn http_connect_upstream(&mut self, f: &mut HttpFlow) {
        self.http("http_connect_upstream", f);
    }
    async fn request_headers(&mut self, f: &mut HttpFlow) {
        self.http("request_headers", f);
    }
    async fn request(&mut self, f: &mut HttpFlow) {
        self.http("request", f);
    }
    async fn response_headers(&mut self, f: &mut HttpFlow) {
        self.http("response_headers", f);
    }
    async fn response(&mut self, f: &mut HttpFlow) {
        self.http("response", f);
    }
    async fn error(&mut self, f: &mut HttpFlow) {
        self.http("error", f);
    }
    async fn websocket_handshake(&mut self, f: &mut HttpFlow) {
        self.http("websocket_handshake", f);
    }
    async fn websocket_start(&mut self, f: &mut HttpFlow) {
        self.http("websocket_start", f);
    }
    async fn websocket_message(&mut self, f: &mut HttpFlow) {
        self.http("websocket_message", f);
        if let Some(m) = f.websocket.as_mut().and_then(|w| w.messages.last_mut()) {
            m.set_text("rewritten");
        }
    }
    async fn websocket_error(&mut self, f: &mut HttpFlow) {
        self.http("websocket_error", f);
    }
    async fn websocket_end(&mut self, f: &mut HttpFlow) {
        self.http("websocket_end", f);
    }
    async fn tcp_start(&mut self, f: &mut TcpFlow) {
        self.tcp("tcp_start", f);
    }
    async fn tcp_message(&mut self, f: &mut TcpFlow) {
        self.tcp("tcp_message", f);
        if let Some(m) = f.messages.last_mut() {
            m.content = "rewritten".into();
        }
    }
    async fn tcp_error(&mut self, f: &mut TcpFlow) {
        self.tcp("tcp_error", f);
    }
    async fn tcp_end(&mut self, f: &mut TcpFlow) {
        self.tcp("tcp_end", f);
    }
    async fn tls_clienthello(&mut self, d: &mut ClientHelloData) {
        self.hit("tls_clienthello");
        d.ignore_connection = true;
    }
    async fn tls_start_client(&mut self, d: &mut TlsData) {
        self.tls("tls_start_client", d);
    }
    async fn tls_start_server(&mut self, d: &mut TlsData) {
        self.tls("tls_start_server", d);
    }
    async fn tls_established_client(&mut self, d: &mut TlsData) {
        self.tls("tls_established_client", d);
    }
    async fn tls_established_server(&mut self, d: &mut TlsData) {
        self.tls("tls_established_server", d);
    }
    async fn tls_failed_client(&mut self, d: &mut TlsData) {
        self.tls("tls_failed_client", d);
    }
    async fn tls_failed_server(&mut self, d: &mut TlsData) {
        self.tls("tls_failed_server", d);
    }
}

fn tls_data(side: Side) -> TlsData {
    TlsData {
        side,
        client: Arc::new(tclient()),
        server: None,
        sni: Some("example.com".into()),
        alpn_offers: vec!["h2".into()],
        alpn: None,
        error: None,
    }
}

#[actix_rt::test]
async fn every_typed_harness_method_reaches_its_hook() {
    let ev = events();
    let mut h = AddonHarness::new(EveryHook(ev.clone())).await;

    let c = h.client_connect(tclient()).await;
    assert_eq!(c.proxy_mode, "client_connect");
    let c = h.client_disconnect(c).await;
    assert_eq!(c.proxy_mode, "client_disconnect");
    let conn = ServerConnectionHookData {
        client: Arc::new(tclient()),
        server: Server::new(Address::new("example.com", 443)),
    };
    let conn = h.server_connect(conn).await;
    assert_eq!(conn.server.address.to_string(), "elsewhere.test:8443");
    let conn = h.server_disconnect(conn).await;
    assert_eq!(conn.server.error.as_deref(), Some("server_disconnect"));
    let nl = NextLayer {
        client: Arc::new(tclient()),
        server: None,
        data_client: "GET / HTTP/1.1\r\n".into(),
        detected: Layer::Http1,
        layer: Layer::Http1,
        via: None,
    };
    assert_eq!(h.next_layer(nl).await.layer, Layer::Tcp);

    let http_hooks = [
        "http_connect",
        "http_connect_upstream",
        "request_headers",
        "request",
        "response_headers",
        "response",
        "error",
        "websocket_handshake",
        "websocket_start",
        "websocket_message",
        "websocket_error",
        "websocket_end",
    ];
    for method in http_hooks {
        let flow = twebsocketflow();
        let flow = match method {
            "http_connect" => h.http_connect(flow).await,
            "http_connect_upstream" => h.http_connect_upstream(flow).await,
            "request_headers" => h.request_headers(flow).await,
            "request" => h.request(flow).await,
            "response_headers" => h.response_headers(flow).await,
            "response" => h.response(flow).await,
            "error" => h.error(flow.with_error("boom")).await,
            "websocket_handshake" => h.websocket_handshake(flow).await,
            "websocket_start" => h.websocket_start(flow).await,
            "websocket_message" => h.websocket_message(flow).await,
            "websocket_error" => h.websocket_error(flow).await,
            "websocket_end" => h.websocket_end(flow).await,
            other => unreachable!("{other}"),
        };
        assert_eq!(flow.comment, method);
        if method == "websocket_message" {
            let last = flow.websocket.unwrap().messages.pop().unwrap();
            assert_eq!(last.as_text(), Some("rewritten"));
        }
    }
    for method in ["tcp_start", "tcp_message", "tcp_error", "tcp_end"] {
        let flow = ttcpflow();
        let flow = match method {
            "tcp_start" => h.tcp_start(flow).await,
            "tcp_message" => h.tcp_message(flow).await,
            "tcp_error" => h.tcp_error(flow).await,
            "tcp_end" => h.tcp_end(flow).await,
            other => unreachable!("{other}"),
        };
        assert_eq!(flow.comment, method);
        if method == "tcp_message" {
            assert_eq!(&flow.messages.last().unwrap().content[..], b"rewritten");
        }
    }
    let hello = ClientHelloData {
        client: Arc::new(tclient()),
        server: None,
        sni: Some("example.com".into()),
        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
        ignore_connection: false,
        establish_server_tls_first: true,
    };
    assert!(h.tls_clienthello(hello).await.ignore_connection);
    for method in [
        "tls_start_client",
        "tls_start_server",
        "tls_established_client",
        "tls_established_server",
        "tls_failed_client",
        "tls_failed_server",
    ] {
        let d = match method {
            "tls_start_client" => h.tls_start_client(tls_data(Side::Client)).await,
            "tls_start_server" => h.tls_start_server(tls_data(Side::Server)).await,
            "tls_established_client" => h.tls_established_client(tls_data(Side::Client)).await,
            "tls_established_server" => h.tls_established_server(tls_data(Side::Server)).await,
            "tls_failed_client" => h.tls_failed_client(tls_data(Side::Client)).await,
            "tls_failed_server" => h.tls_failed_server(tls_data(Side::Server)).await,
            other => unreachable!("{other}"),
        };
        assert_eq!(d.alpn.as_deref(), Some(method));
    }

    let mut expected = vec![
        "client_connect",
        "client_disconnect",
        "server_connect",
        "server_disconnect",
        "next_layer",
    ];
    expected.extend(http_hooks);
    expected.extend(["tcp_start", "tcp_message", "tcp_error", "tcp_end"]);
    expected.extend([
        "tls_clienthello",
        "tls_start_client",
        "tls_start_server",
        "tls_established_client",
        "tls_established_server",
        "tls_failed_client",
        "tls_failed_server",
    ]);
    assert_eq!(taken(&ev), expected);
}

/// Comments every flow it is told about.
#[derive(Default)]
struct Updates(usize);

impl Addon for Updates {
    async fn update(&mut self, flows: &mut Vec<Flow>) {
        for f in flows.iter_mut() {
            self.0 += 1;
            match f {
                Flow::Http(f) => f.comment = format!("update {}", self.0),
                Flow::Tcp(f) => f.comment = format!("update {}", self.0),
            }
        }
    }
}

#[actix_rt::test]
async fn update_reaches_addons_with_the_flows() {
    let mut h = AddonHarness::new(Updates::default()).await;
    let flows = vec![
        Flow::Http(Box::new(tflow())),
        Flow::Tcp(Box::new(ttcpflow())),
    ];
    let ids: Vec<_> = flows.iter().map(Flow::id).collect();
    let flows = h.update(flows).await;
    assert_eq!(flows.iter().map(Flow::id).collect::<Vec<_>>(), ids);
    match &flows[..] {
        [Flow::Http(a), Flow::Tcp(b)] => {
            assert_eq!(a.comment, "update 1");
            assert_eq!(b.comment, "update 2");
        }
        other => panic!("unexpected flows {other:?}"),
    }
    // Through the handle too.
    let again = h.manager().update(flows).await.unwrap();
    assert_eq!(again.len(), 2);
}

/// Declares `counter.add` (adds its arguments) and `counter.get`.
#[derive(Default)]
struct Commands(i64);

impl Addon for Commands {
    async fn load(&mut self, loader: &mut Loader) {
        loader.add_command("counter.add", "Add the arguments to the counter.");
        loader.add_command("counter.get", "Show the counter.");
    }

    async fn command(&mut self, name: &str, args: &[String]) -> Result<String, String> {
        match name {
            "counter.add" => {
                for a in args {
                    self.0 += a.parse::<i64>().map_err(|e| format!("{a:?}: {e}"))?;
                }
                Ok(self.0.to_string())
            }
            "counter.get" => Ok(self.0.to_string()),
            other => Err(format!("unknown command {other}")),
        }
    }
}

#[actix_rt::test]
async fn commands_declared_in_load_are_routed_to_their_addon() {
    let mut h = AddonHarness::with_addons((Tag("a"), Commands::default())).await;
    let names: Vec<_> = h
        .manager()
        .commands()
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["counter.add", "counter.get"]);
    assert_eq!(h.command("counter.add", &["2", "3"]).await.unwrap(), "5");
    assert_eq!(h.command("counter.get", &[]).await.unwrap(), "5");
    let err = h.command("counter.add", &["x"]).await.unwrap_err();
    assert!(err.contains("\"x\""), "{err}");
    let err = h.command("counter.nope", &[]).await.unwrap_err();
    assert_eq!(err, "unknown command counter.nope");
}

/// Forwards every log record it receives, and logs from inside `log` (which must not come
/// back to it).
struct LogSink(mpsc::UnboundedSender<LogEntry>);

impl Addon for LogSink {
    async fn log(&mut self, entry: &mut LogEntry) {
        tracing::warn!("inside the log hook: {}", entry.message);
        let _ = self.0.send(entry.clone());
    }
}

#[actix_rt::test]
async fn log_hook_receives_tracing_records_without_recursion() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let h = AddonHarness::new(LogSink(tx)).await;

    tracing::info!(flow.id = 7, "first record");
    let e = rx.recv().await.unwrap();
    assert_eq!(e.message, "first record flow.id=7");
    assert_eq!(e.level, waylay_core::hooks::LogLevel::Info);

    tracing::error!("second record");
    let e = rx.recv().await.unwrap();
    assert_eq!(
        e.message, "second record",
        "a record from inside `log` came back"
    );
    // The record from inside the hook was still logged, just not delivered to addons.
    assert!(h.has_log("inside the log hook: first record"));
    assert!(h.has_log("inside the log hook: second record"));
}

/// Intercepts every request and hands out the handle.
struct Interceptor(mpsc::UnboundedSender<InterceptHandle>);

impl Addon for Interceptor {
    async fn request(&mut self, flow: &mut HttpFlow) {
        let _ = self.0.send(flow.intercept());
    }
}

#[actix_rt::test]
async fn intercepted_flows_wait_until_resumed_or_killed() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut h = AddonHarness::new(Interceptor(tx)).await;

    for (release, expected) in [
        (
            InterceptHandle::resume as fn(&InterceptHandle),
            Release::Resumed,
        ),
        (InterceptHandle::kill, Release::Killed),
    ] {
        let mut flow = h.request(tflow()).await;
        assert!(flow.intercepted());
        let handle = rx.recv().await.unwrap();
        let state = flow.intercept_state().clone();
        let waiter = actix_rt::spawn(async move { state.wait().await });
        // The layer's wait does not end by itself.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        release(&handle);
        assert_eq!(waiter.await.unwrap(), expected);
        assert!(!flow.intercepted());
    }

    // A flow resumed through the flow itself, before anyone waits.
    let mut flow = h.request(tflow()).await;
    let _handle = rx.recv().await.unwrap();
    flow.resume();
    assert_eq!(flow.intercept_state().wait().await, Release::Resumed);
}

#[actix_rt::test]
async fn a_flow_resumed_with_an_edit_gets_the_edit_when_it_wakes() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut h = AddonHarness::new(Interceptor(tx)).await;
    let mut flow = h.request(tflow()).await;
    let handle = rx.recv().await.unwrap();
    assert!(handle.is_waiting());
    let edit: waylay_core::flow::HttpEdit = Box::new(|f: &mut HttpFlow| {
        f.request.headers.insert("x-edited", "yes");
    });
    let waiter = actix_rt::spawn(async move {
        let released = flow.wait_released().await;
        (released, flow)
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    handle.resume_with(edit);
    let (released, flow) = waiter.await.unwrap();
    assert_eq!(released, Release::Resumed);
    assert_eq!(flow.request.headers.get("x-edited"), Some("yes"));
    assert!(!handle.is_waiting());
    // Once released, another edit is ignored (the flow has gone on).
    handle.resume_with::<waylay_core::flow::HttpEdit>(Box::new(|f: &mut HttpFlow| {
        f.request.headers.insert("x-late", "yes");
    }));
    assert_eq!(flow.request.headers.get("x-late"), None);

    // A kill wins over nothing: no edit is applied.
    let mut flow = h.request(tflow()).await;
    let handle = rx.recv().await.unwrap();
    handle.kill();
    assert_eq!(flow.wait_released().await, Release::Killed);
}
