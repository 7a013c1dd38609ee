//! A script's life in waylay: reloading on change, `async def` hooks running concurrently,
//! deadlines, commands, and load errors.
#![cfg(feature = "python")]

use std::path::PathBuf;
use std::time::Duration;

use waylay_addons::ScriptAddon;
use waylay_core::HookKind;
use waylay_core::hooks::LogLevel;
use waylay_layers::Proxy;
use waylay_testkit::{
    AddonHarness, FlowExt, TempDir, TestProxy, http_origin, proxy_get, tflow, treq, tresp, within,
};

fn write(dir: &TempDir, name: &str, src: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, src).expect("write script");
    p
}

fn version(v: &str) -> String {
    format!(
        r#"
import logging

def running():
    logging.info("running {v}")

def done():
    logging.info("done {v}")

def request(flow):
    flow.request.headers["x-version"] = "{v}"
"#
    )
}

/// Fires `request` until `check` accepts the flow (the watcher notices a change within a
/// quarter second); at most 80 tries, 100 ms apart.
async fn until(
    h: &mut AddonHarness,
    what: &str,
    check: impl Fn(&waylay_core::HttpFlow, &AddonHarness) -> bool,
) {
    for _ in 0..80 {
        let flow = h.request(tflow()).await;
        if check(&flow, h) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never saw: {what}; logs: {:?}", h.logs());
}

#[actix_rt::test]
async fn a_changed_script_is_reloaded_and_a_broken_one_keeps_the_proxy_going() {
    let dir = TempDir::new("reload");
    let path = write(&dir, "reloading.py", &version("v1"));
    let mut h = AddonHarness::script(&path).await;
    h.running().await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.headers.get("x-version"), Some("v1"));

    std::fs::write(&path, version("v2")).expect("rewrite");
    until(&mut h, "v2 after the change", |f, _| {
        f.request.headers.get("x-version") == Some("v2")
    })
    .await;
    assert!(h.has_log("done v1"), "done on the old module");
    assert!(h.has_log("running v2"), "running on the new module");

    // A syntax error: logged with its line, and flows go on untouched.
    std::fs::write(
        &path,
        "def request(flow):\n    flow.request.headers['x' = 1\n",
    )
    .expect("break");
    until(&mut h, "the syntax error logged", |_, h| {
        h.has_log_at(LogLevel::Error, "reloading.py:2: SyntaxError")
    })
    .await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.headers.get("x-version"), None);
    assert!(h.has_log("done v2"));

    // Fixed again: the script is back.
    std::fs::write(&path, version("v3")).expect("fix");
    until(&mut h, "v3 after the fix", |f, _| {
        f.request.headers.get("x-version") == Some("v3")
    })
    .await;
}

const SLOW: &str = r#"
import asyncio, time

class Slow:
    async def request(self, flow):
        start = time.monotonic()
        if flow.request.path.startswith("/forever"):
            await asyncio.Event().wait()
        await asyncio.sleep(0.4)
        flow.request.headers["x-start"] = repr(start)
        flow.request.headers["x-end"] = repr(time.monotonic())

    def response(self, flow):
        for h in ("x-start", "x-end"):
            flow.response.headers[h] = flow.request.headers.get(h, "")

addons = [Slow()]
"#;

fn span(f: &waylay_core::HttpFlow) -> (f64, f64) {
    let get = |n| {
        f.request
            .headers
            .get(n)
            .and_then(|v| v.parse::<f64>().ok())
            .expect("the async hook ran")
    };
    (get("x-start"), get("x-end"))
}

#[actix_rt::test]
async fn two_async_hooks_that_sleep_overlap() {
    let dir = TempDir::new("async");
    let path = write(&dir, "slow.py", SLOW);
    let h = AddonHarness::script(&path).await;
    let m = h.manager().clone();
    let (a, b) = within(
        "two async hooks",
        futures::future::join(
            m.fire(HookKind::Request, Box::new(tflow())),
            m.fire(HookKind::Request, Box::new(tflow())),
        ),
    )
    .await;
    let (a, b) = (span(&a.expect("a")), span(&b.expect("b")));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the hooks ran one after the other: {a:?} {b:?}"
    );
}

#[actix_rt::test]
async fn async_hooks_overlap_through_the_real_proxy() {
    let dir = TempDir::new("async-proxy");
    let path = write(&dir, "slow.py", SLOW);
    let origin = http_origin().await;
    let addon = ScriptAddon::load(&path).expect("loads");
    let proxy = TestProxy::start(Proxy::builder().addon(addon)).await;
    let url = format!("http://{origin}/a");
    let (a, b) = within(
        "two requests",
        futures::future::join(proxy_get(proxy.addr(), &url), proxy_get(proxy.addr(), &url)),
    )
    .await;
    let header = |r: &str, n: &str| -> f64 {
        r.lines()
            .find_map(|l| l.strip_prefix(n))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{n} in {r}"))
    };
    let (a, b) = (
        (header(&a, "x-start:"), header(&a, "x-end:")),
        (header(&b, "x-start:"), header(&b, "x-end:")),
    );
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the hooks ran one after the other: {a:?} {b:?}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_hook_that_never_returns_holds_only_its_flow_until_the_deadline() {
    let dir = TempDir::new("forever");
    let path = write(&dir, "slow.py", SLOW);
    let mut opts = waylay_core::Options::new();
    opts.set_specs(&["addon_timeout=2"]).expect("option");
    let mut h = AddonHarness::with_options(opts).await;
    h.add(ScriptAddon::load(&path).expect("loads")).await;
    let m = h.manager().clone();
    let stuck = actix::spawn(async move {
        let mut f = tflow();
        f.request = treq();
        f.request.path = "/forever".into();
        f.request.headers.insert("x-kept", "1");
        m.fire(HookKind::Request, Box::new(f)).await
    });
    // Another flow goes through meanwhile.
    let quick = within("a second flow", h.request(tflow())).await;
    assert!(quick.request.headers.contains("x-end"));
    let stuck = within("the stuck flow at the deadline", stuck)
        .await
        .expect("joined")
        .expect("the flow comes back");
    assert_eq!(stuck.request.headers.get("x-kept"), Some("1"));
    assert!(!stuck.request.headers.contains("x-end"));
    assert!(h.has_log_at(LogLevel::Error, "timed out"), "{:?}", h.logs());
}

const COMMANDS: &str = r#"
from mitmproxy import command, ctx
import typing

class Counter:
    def __init__(self):
        self.n = 0

    def load(self, loader):
        loader.add_option("counter_step", int, 1, "How much a request adds.")

    def configure(self, updated):
        if "counter_step" in updated:
            self.step = ctx.options.counter_step

    def request(self, flow):
        self.n += self.step

    @command.command("counter.add")
    def add(self, k: int) -> str:
        self.n += k
        return str(self.n)

    @command.command("counter.get")
    def get(self) -> int:
        return self.n

addons = [Counter()]
"#;

#[actix_rt::test]
async fn options_and_commands_from_a_script() {
    let dir = TempDir::new("commands");
    let path = write(&dir, "counter.py", COMMANDS);
    let mut h = AddonHarness::script(&path).await;
    assert!(h.options().contains("counter_step"));
    h.set_options(&["counter_step=5"]).await.expect("settable");
    h.request(tflow()).await;
    assert_eq!(h.command("counter.get", &[]).await, Ok("5".into()));
    assert_eq!(h.command("counter.add", &["3"]).await, Ok("8".into()));
    assert!(h.set_options(&["counter_step=x"]).await.is_err(), "typed");
}

#[actix_rt::test]
async fn a_script_importing_a_missing_name_fails_at_load_with_one_line() {
    let dir = TempDir::new("missing");
    let a = write(&dir, "a.py", "from mitmproxy.proxy.layers import http\n");
    let e = ScriptAddon::load(&a)
        .expect_err("does not load")
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("waylay does not provide mitmproxy.proxy"), "{e}");
    assert!(e.contains("a.py:1"), "{e}");

    let b = write(
        &dir,
        "b.py",
        "import os\nfrom mitmproxy.http import HTTPFlow, NoSuchThing\n",
    );
    let e = ScriptAddon::load(&b)
        .expect_err("does not load")
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.contains("waylay does not provide mitmproxy.http.NoSuchThing"),
        "{e}"
    );
    assert!(e.contains("b.py:2"), "{e}");
}

const HOLD: &str = r#"
from mitmproxy import command, http

class Hold:
    def __init__(self):
        self.held = []

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.path == "/hold":
            flow.intercept()
            flow.comment = "held"
            self.held.append(flow)

    @command.command("hold.release")
    def release(self) -> int:
        n = len(self.held)
        for f in self.held:
            f.resume()
        self.held.clear()
        return n

addons = [Hold()]
"#;

#[actix_rt::test]
async fn a_flow_intercepted_by_a_script_waits_until_a_command_resumes_it() {
    let dir = TempDir::new("hold");
    let path = write(&dir, "hold.py", HOLD);
    let origin = http_origin().await;
    let proxy =
        TestProxy::start(Proxy::builder().addon(ScriptAddon::load(&path).expect("loads"))).await;
    let addr = proxy.addr();
    let held = actix::spawn(async move { proxy_get(addr, &format!("http://{origin}/hold")).await });
    // Other flows go on while it is held.
    let other = within(
        "another flow",
        proxy_get(addr, &format!("http://{origin}/other")),
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    let manager = proxy.running().manager().clone();
    let mut released = false;
    for _ in 0..100 {
        if manager.command("hold.release", &[]).await == Ok("1".into()) {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released, "the flow was never held");
    let answer = within("the held flow after resume", held)
        .await
        .expect("joined");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.shutdown().await;
}

const MARKS: &str = r#"
kept = []

def response(flow):
    flow.response.headers["x-had"] = "/".join(str(x) for x in (
        getattr(flow, "mark", None),
        flow.metadata.get("m"),
        getattr(flow.request, "mark", None),
        getattr(flow.response, "mark", None),
    ))
    flow.mark = 1
    flow.metadata["m"] = 2
    # Attributes of a script's own on the request and response, as mitmproxy's allow.
    flow.request.mark = "rq"
    flow.response.mark = "rs"
    if flow.request.path == "/keep":
        kept.append(flow)
    if flow.request.path == "/check":
        k = kept[0]
        flow.response.headers["x-kept"] = " ".join(
            (str(k.metadata.get("m", "gone")), str(k.mark), k.request.mark, k.response.mark)
        )
"#;

#[actix_rt::test]
async fn a_flow_object_starts_empty_and_one_a_script_kept_stays_its_own() {
    use waylay_testkit::{FlowExt, tresp};
    let dir = TempDir::new("marks");
    let path = write(&dir, "marks.py", MARKS);
    let mut h = AddonHarness::script(&path).await;
    let with_path = |p: &str| {
        let mut f = tflow().with_response(tresp());
        f.request.path = p.into();
        f
    };
    for p in ["/a", "/keep", "/b", "/check"] {
        let f = h.response(with_path(p)).await;
        let r = f.response.expect("response");
        assert_eq!(
            r.headers.get("x-had"),
            Some("None/None/None/None"),
            "{p}: a fresh flow object"
        );
        if p == "/check" {
            assert_eq!(
                r.headers.get("x-kept"),
                Some("2 1 rq rs"),
                "the kept flow kept its attributes"
            );
        }
    }
}

const SETTER: &str = r#"
import logging
from mitmproxy import ctx, exceptions

class Setter:
    def load(self, loader):
        loader.add_option("greeting", str, "hello", "What to say.")
        loader.add_option("level", int, 1, "How much.")

    def configure(self, updated):
        if "greeting" in updated or "level" in updated:
            logging.info(f"configured greeting={ctx.options.greeting} level={ctx.options.level}")

    def request(self, flow):
        p = flow.request.path
        if p == "/set":
            ctx.options.greeting = "bonjour"
            flow.request.headers["x-read-back"] = ctx.options.greeting
        elif p == "/update":
            ctx.options.update(level=7, greeting="hola")
        elif p == "/reject":
            ctx.options.level = 13
        elif p == "/errors":
            out = []
            for f in (
                lambda: setattr(ctx.options, "nope", 1),
                lambda: setattr(ctx.options, "level", "x"),
                lambda: ctx.options.set("level=abc"),
                lambda: ctx.options.set("level=9"),
            ):
                try:
                    f()
                    out.append("ok")
                except exceptions.OptionsError:
                    out.append("OptionsError")
                except KeyError:
                    out.append("KeyError")
                except TypeError:
                    out.append("TypeError")
            flow.request.headers["x-errors"] = ",".join(out)
        elif p == "/stop":
            ctx.master.shutdown()
        flow.request.headers["x-level"] = str(ctx.options.level)

addons = [Setter()]
"#;

/// A Rust addon after the script: records the option changes it is configured with, and
/// refuses `level=13`.
#[derive(Clone, Default)]
struct Watcher(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl waylay_core::Addon for Watcher {
    async fn configure(
        &mut self,
        cfg: &mut waylay_core::hooks::Configure,
    ) -> Result<(), waylay_core::OptionsError> {
        if cfg.options.contains("level") && cfg.options.int("level") == 13 {
            return Err(waylay_core::OptionsError::rejected(
                "level",
                "13 is unlucky",
            ));
        }
        let seen: Vec<&str> = cfg.updated.iter().map(String::as_str).collect();
        if seen.len() < 5 {
            self.0
                .lock()
                .expect("lock")
                .push(format!("{seen:?} {:?}", cfg.options.str("greeting")));
        }
        Ok(())
    }
}

fn treq_path(path: &str) -> waylay_core::HttpFlow {
    let mut f = tflow();
    f.request.path = path.into();
    f
}

/// Waits (at most 4 s) until the manager's options satisfy `check`.
async fn until_options(
    h: &AddonHarness,
    what: &str,
    check: impl Fn(&waylay_core::Options) -> bool,
) {
    for _ in 0..200 {
        if check(&h.options()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("options never became {what}; logs: {:?}", h.logs());
}

#[actix_rt::test]
async fn a_script_sets_options_through_waylay_and_every_addon_is_configured() {
    let dir = TempDir::new("setter");
    let path = write(&dir, "setter.py", SETTER);
    let watcher = Watcher::default();
    let mut h = AddonHarness::script(&path).await;
    h.add(watcher.clone()).await;
    watcher.0.lock().expect("lock").clear();

    // Set inside a hook: read back at once, applied right after through the manager.
    let f = h.request(treq_path("/set")).await;
    assert_eq!(f.request.headers.get("x-read-back"), Some("bonjour"));
    until_options(&h, "greeting=bonjour", |o| {
        o.str("greeting") == Some("bonjour")
    })
    .await;
    h.sync().await;
    assert!(
        h.has_log("configured greeting=bonjour level=1"),
        "{:?}",
        h.logs()
    );
    assert_eq!(
        watcher.0.lock().expect("lock").clone(),
        vec![r#"["greeting"] Some("bonjour")"#.to_owned()],
        "the other addon's configure saw the change"
    );

    // `update` sets several at once.
    h.request(treq_path("/update")).await;
    until_options(&h, "level=7", |o| {
        o.int("level") == 7 && o.str("greeting") == Some("hola")
    })
    .await;

    // Errors are raised in the script as mitmproxy raises them; the last, good, set works.
    let f = h.request(treq_path("/errors")).await;
    assert_eq!(
        f.request.headers.get("x-errors"),
        Some("KeyError,TypeError,OptionsError,ok")
    );
    assert_eq!(f.request.headers.get("x-level"), Some("9"));
    until_options(&h, "level=9", |o| o.int("level") == 9).await;

    // An addon rejecting the value: the old one is kept, logged, and the script sees it again.
    h.clear_logs();
    h.request(treq_path("/reject")).await;
    for _ in 0..200 {
        if h.has_log("13 is unlucky") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        h.has_log_at(LogLevel::Error, "13 is unlucky"),
        "{:?}",
        h.logs()
    );
    assert_eq!(h.options().int("level"), 9);
    let f = h.request(tflow()).await;
    assert_eq!(f.request.headers.get("x-level"), Some("9"));

    // `ctx.master.shutdown()` asks whoever runs the proxy to stop.
    h.request(treq_path("/stop")).await;
    within("shutdown requested", h.manager().shutdown_requested()).await;
}

#[actix_rt::test]
async fn ctx_master_shutdown_stops_the_real_proxy_and_done_runs() {
    let dir = TempDir::new("stopper");
    let marker = dir.path().join("done.txt");
    let src = format!(
        r#"
from mitmproxy import ctx

def request(flow):
    if flow.request.path == "/stop":
        ctx.master.shutdown()

def done():
    open({marker:?}, "w").write("done")
"#,
        marker = marker.to_str().expect("utf-8")
    );
    let path = write(&dir, "stopper.py", &src);
    let origin = http_origin().await;
    let script = ScriptAddon::load(&path).expect("loads");
    let proxy = TestProxy::start(Proxy::builder().addon(script)).await;
    let _ = proxy_get(proxy.addr(), &format!("http://{origin}/stop")).await;
    within(
        "shutdown requested",
        proxy.running().manager().shutdown_requested(),
    )
    .await;
    proxy.shutdown().await;
    assert_eq!(
        std::fs::read_to_string(&marker).ok().as_deref(),
        Some("done")
    );
}

const PASSTHROUGH: &str = r#"
from mitmproxy import command, tls

events = []

def client_connected(client):
    events.append("client_connected")

def tls_clienthello(data: tls.ClientHelloData):
    events.append(f"tls_clienthello {data.client_hello.sni}")
    if data.client_hello.sni == "localhost":
        data.ignore_connection = True

def server_connect(data):
    events.append("server_connect")

def server_connected(data):
    events.append(f"server_connected {data.server.peername[0]}")

def server_connect_error(data):
    events.append("server_connect_error")

def server_disconnected(data):
    events.append("server_disconnected")

def client_disconnected(client):
    events.append("client_disconnected")

@command.command("events.take")
def take() -> str:
    out = ",".join(events)
    events.clear()
    return out
"#;

/// A TLS session to the HTTPS origin through the proxy, trusting only the origin's CA: it
/// succeeds only when the proxy passes the connection through untouched.
async fn tls_get(
    proxy: std::net::SocketAddr,
    target: &str,
    name: &str,
    ca: &str,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = waylay_testkit::connect_tls(proxy, target, name, ca, &[b"http/1.1"])
        .await
        .ok()?;
    s.write_all(b"GET /passed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[actix_rt::test]
async fn ignore_connection_in_tls_clienthello_passes_the_connection_through() {
    let dir = TempDir::new("passthrough");
    let path = write(&dir, "passthrough.py", PASSTHROUGH);
    let (origin, origin_ca) = waylay_testkit::https_origin(&dir).await;
    let ca = std::fs::read_to_string(&origin_ca).expect("origin CA");
    let script = ScriptAddon::load(&path).expect("loads");
    let proxy = TestProxy::start(Proxy::builder().addon(script)).await;
    let manager = proxy.running().manager().clone();

    // SNI "localhost": the script ignores it, the client sees the origin's own certificate.
    let target = format!("localhost:{}", origin.port());
    let got = within(
        "passthrough",
        tls_get(proxy.addr(), &target, "localhost", &ca),
    )
    .await;
    let got = got.expect("the TLS session to the origin itself works through the proxy");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    // No SNI (an IP address): intercepted, so a client trusting only the origin's CA fails.
    let target = format!("127.0.0.1:{}", origin.port());
    let got = within(
        "intercepted",
        tls_get(proxy.addr(), &target, "127.0.0.1", &ca),
    )
    .await;
    assert!(
        got.is_none(),
        "an intercepted connection shows waylay's certificate"
    );

    let mut events = String::new();
    for _ in 0..100 {
        events = manager.command("events.take", &[]).await.expect("command");
        if events.contains("client_disconnected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        events.starts_with(
            "client_connected,tls_clienthello localhost,server_connect,server_connected 127.0.0.1"
        ),
        "{events}"
    );
    assert!(events.contains("client_disconnected"), "{events}");

    // A server that refuses: server_connect_error, not server_connected.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let _ = proxy_get(proxy.addr(), &format!("http://127.0.0.1:{port}/")).await;
    let mut events = String::new();
    for _ in 0..100 {
        events.push_str(&manager.command("events.take", &[]).await.expect("command"));
        if events.contains("server_connect_error") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        events.contains("server_connect,server_connect_error"),
        "{events}"
    );
    assert!(!events.contains("server_connected"), "{events}");
    proxy.shutdown().await;
}

/// The first event after a script gained an `async def` hook reaches the new version: the
/// test waits until the file watcher has put the script on every hook's route (the change
/// is noticed; the reload itself happens on the next event), then sends exactly one flow,
/// which must run the new hook. Without the reload before `begin` asks whether the hook is
/// `async def`, the old version's answer (not async) sends the flow down the plain path and
/// the coroutine is never awaited: this flow would come back without the header.
#[actix_rt::test]
async fn a_hook_gained_on_reload_fires_without_a_restart() {
    let dir = TempDir::new("gained");
    // Version 1 implements no flow hook at all: the addon is on no flow hook's route.
    let path = write(&dir, "gained.py", "def running():\n    pass\n");
    let mut h = AddonHarness::script(&path).await;
    h.running().await;
    assert!(!h.handles(HookKind::Response));
    assert!(!h.handles(HookKind::ClientConnect));
    let f = h.response(tflow().with_response(tresp())).await;
    assert_eq!(
        f.response
            .and_then(|r| r.headers.get("x-gained").map(str::to_owned)),
        None
    );

    // Make sure the modification time moves on coarse file systems.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(
        &path,
        "import asyncio, logging\n\ndef running():\n    logging.info('running v2')\n\nasync def response(flow):\n    await asyncio.sleep(0)\n    flow.response.headers['x-gained'] = 'yes'\n\ndef client_connected(client):\n    client.error = 'gained too'\n",
    )
    .expect("rewrite");
    // The watcher noticed the change (it checks every quarter second): the script is on
    // every route, not reloaded yet.
    for _ in 0..80 {
        if h.handles(HookKind::Response) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.handles(HookKind::Response), "the change was not noticed");
    assert!(!h.has_log("running v2"), "reloaded before any event");
    // Exactly one flow: the reload happens for it, and its hook is the new one.
    let f = h.response(tflow().with_response(tresp())).await;
    let got = f
        .response
        .and_then(|r| r.headers.get("x-gained").map(str::to_owned));
    assert_eq!(got.as_deref(), Some("yes"), "logs: {:?}", h.logs());
    assert!(h.has_log("running v2"), "logs: {:?}", h.logs());
    h.sync().await;
    assert!(h.handles(HookKind::ClientConnect));
    let c = h.client_connect(waylay_testkit::tclient()).await;
    assert_eq!(c.error.as_deref(), Some("gained too"));
    // Routes are exact again after the reload: hooks the new version lacks are dropped.
    assert!(!h.handles(HookKind::Request));
    assert!(!h.handles(HookKind::TlsClienthello));
}

const KEEPS_PARTS: &str = r#"
kept = []

def response(flow):
    if flow.request.path == "/keep":
        flow.metadata["k"] = 1
        kept.append((flow.response.headers, flow.metadata))
    else:
        flow.response.headers["x-meta"] = str(flow.metadata.get("k"))
        flow.response.headers["x-kept"] = str(dict(kept[0][1]))
"#;

/// A finished flow's object is reused for the next flow only when the script kept none of
/// its parts; a metadata dict or headers view the script kept stays its own.
#[actix_rt::test]
async fn parts_of_a_flow_a_script_kept_are_not_reused() {
    let dir = TempDir::new("keeps");
    let path = write(&dir, "keeps.py", KEEPS_PARTS);
    let mut h = AddonHarness::script(&path).await;
    let mut first = tflow().with_response(tresp());
    first.request.path = "/keep".into();
    h.response(first).await;
    for _ in 0..3 {
        let f = h.response(tflow().with_response(tresp())).await;
        let r = f.response.expect("response");
        assert_eq!(r.headers.get("x-meta"), Some("None"));
        assert_eq!(r.headers.get("x-kept"), Some("{'k': 1}"));
    }
}

const REASSIGNS_METADATA: &str = r#"
import asyncio

def request(flow):
    flow.metadata = {"a": 1, "path": flow.request.path}

async def responseheaders(flow):
    await asyncio.sleep(0)
    flow.metadata = {"b": 2}

def response(flow):
    flow.response.headers["x-seen"] = repr(sorted(flow.metadata.items()))
    if flow.request.path == "/clear":
        flow.metadata = {}
"#;

/// Copies what it finds in `flow.metadata` into a header: a Rust addon after the script.
#[derive(Debug, Default)]
struct ReadsMetadata;

impl waylay_core::Addon for ReadsMetadata {
    async fn request(&mut self, flow: &mut waylay_core::HttpFlow) {
        let seen = serde_json::Value::Object(flow.metadata.clone()).to_string();
        flow.request.headers.insert("x-rust-saw", seen);
    }
}

/// `flow.metadata = {...}` (a new dict, not a mutation of the old one) is what later hooks of
/// the script see, a plain or an `async def` one, and what Rust addons after it read, as in
/// mitmproxy; assigning `{}` empties the flow's metadata.
#[actix_rt::test]
async fn a_reassigned_metadata_dict_reaches_later_hooks_and_rust_addons() {
    let dir = TempDir::new("remeta");
    let path = write(&dir, "remeta.py", REASSIGNS_METADATA);
    let mut h = AddonHarness::script(&path).await;
    h.add(ReadsMetadata).await;
    for p in ["/keep", "/clear"] {
        let mut f = tflow();
        f.request.path = p.into();
        let f = h.request(f).await;
        assert_eq!(f.metadata.get("a"), Some(&serde_json::json!(1)));
        assert_eq!(
            f.request.headers.get("x-rust-saw"),
            Some(format!(r#"{{"a":1,"path":"{p}"}}"#).as_str()),
            "the Rust addon after the script reads the new dict"
        );
        let f = h.response_headers(f.with_response(tresp())).await;
        assert_eq!(
            f.metadata.get("b"),
            Some(&serde_json::json!(2)),
            "{:?} {:?}",
            f.metadata,
            h.logs()
        );
        assert_eq!(f.metadata.get("a"), None, "the old dict is gone");
        let f = h.response(f).await;
        let r = f.response.as_ref().expect("response");
        assert_eq!(r.headers.get("x-seen"), Some("[('b', 2)]"), "{p}");
        if p == "/clear" {
            assert!(f.metadata.is_empty(), "{:?}", f.metadata);
        } else {
            assert_eq!(f.metadata.get("b"), Some(&serde_json::json!(2)));
        }
    }
}

const SHARES_METADATA: &str = r#"
def request(flow):
    flow.metadata["py"] = 1
    flow.metadata["both"] = "py"
    flow.metadata["rust-deletes"] = True
    if flow.request.path == "/reassign":
        flow.metadata = {"new": 1, "both": "py"}

def response(flow):
    seen = sorted(flow.metadata.items())
    flow.response.headers["x-seen"] = repr(seen)
    flow.metadata["late"] = flow.metadata.get("rust")
    if flow.request.path == "/empty":
        flow.metadata.clear()
"#;

/// Writes `flow.metadata` between the script's hooks: sets `rust`, overwrites `both` (which
/// the script set first), deletes `rust-deletes`.
#[derive(Debug, Default)]
struct WritesMetadata;

impl waylay_core::Addon for WritesMetadata {
    async fn request(&mut self, flow: &mut waylay_core::HttpFlow) {
        flow.metadata.insert("rust".into(), serde_json::json!("r"));
        flow.metadata
            .insert("both".into(), serde_json::json!("rust"));
        flow.metadata.remove("rust-deletes");
    }
}

/// `flow.metadata` is one dict shared by the script and the Rust addons, as mitmproxy's is
/// shared by its addons: what a Rust addon writes between two hooks of the script is there
/// in the script's next hook and stays after it, per key, and a key written by both holds
/// the last write; a script that empties the dict (or reassigns it) empties the flow's.
#[actix_rt::test]
async fn metadata_a_rust_addon_writes_between_hooks_of_a_script_survives() {
    use serde_json::json;

    let dir = TempDir::new("sharemeta");
    let path = write(&dir, "sharemeta.py", SHARES_METADATA);
    let mut h = AddonHarness::script(&path).await;
    h.add(WritesMetadata).await;

    let f = h.request(tflow()).await;
    assert_eq!(f.metadata.get("py"), Some(&json!(1)));
    assert_eq!(f.metadata.get("rust"), Some(&json!("r")));
    assert_eq!(
        f.metadata.get("both"),
        Some(&json!("rust")),
        "the later write"
    );
    assert_eq!(f.metadata.get("rust-deletes"), None);
    let mut f = f.with_response(tresp());
    // Between the hooks, as an addon of the proxy would.
    f.metadata.insert("between".into(), json!(2));
    let f = h.response(f).await;
    let r = f.response.as_ref().expect("response");
    assert_eq!(
        r.headers.get("x-seen"),
        Some("[('between', 2), ('both', 'rust'), ('py', 1), ('rust', 'r')]"),
        "logs: {:?}",
        h.logs()
    );
    assert_eq!(f.metadata.get("late"), Some(&json!("r")));
    assert_eq!(
        f.metadata.get("rust"),
        Some(&json!("r")),
        "{:?}",
        f.metadata
    );
    assert_eq!(f.metadata.get("between"), Some(&json!(2)));
    assert_eq!(f.metadata.get("both"), Some(&json!("rust")));
    assert_eq!(f.metadata.get("py"), Some(&json!(1)));
    assert_eq!(f.metadata.get("rust-deletes"), None);

    // A dict the script reassigned: the Rust addon's later writes go into the new dict.
    let mut f = tflow();
    f.request.path = "/reassign".into();
    let f = h.request(f).await;
    let f = h.response(f.with_response(tresp())).await;
    let r = f.response.as_ref().expect("response");
    assert_eq!(
        r.headers.get("x-seen"),
        Some("[('both', 'rust'), ('new', 1), ('rust', 'r')]")
    );
    assert_eq!(f.metadata.get("rust"), Some(&json!("r")));
    assert_eq!(f.metadata.get("py"), None);

    // A script that empties the dict empties the flow's metadata.
    let mut f = tflow();
    f.request.path = "/empty".into();
    let f = h.request(f).await;
    let f = h.response(f.with_response(tresp())).await;
    assert!(f.metadata.is_empty(), "{:?}", f.metadata);
}

const KEEPS_FLOW: &str = r#"
kept = []

def request(flow):
    if not kept:
        flow.request.path = "/first"
        kept.append((flow, flow.request, flow.request.headers))
        flow.request.headers["x-kept"] = "kept"
        return
    f, req, headers = kept[0]
    out = [f.request.path, req.path, headers["x-kept"]]
    c = f.copy()
    out.append("copy " + c.request.path + " " + str(c.id != f.id))
    # A kept flow can be written, as in mitmproxy: the copy it holds changes, not the flow
    # that already went on.
    req.path = "/changed"
    out.append(f.request.path)
    # Another flow's request, put into this one: copied, the kept flow keeps its own.
    flow.request = req
    flow.request.headers["x-kept"] = " ".join(out)
    out.append(f.request.headers["x-kept"])
    flow.request.headers["x-after"] = out[-1]
"#;

/// A flow object a script keeps stays readable after its hook, as mitmproxy's flow objects
/// are: it holds a copy of the flow as the hook left it (the hook lends the flow itself to it
/// for the call only), writing it changes only that copy, and the flow that went on is not
/// touched.
#[actix_rt::test]
async fn a_kept_flow_object_stays_readable_after_its_hook() {
    let dir = TempDir::new("keepsflow");
    let path = write(&dir, "keepsflow.py", KEEPS_FLOW);
    let mut h = AddonHarness::script(&path).await;
    let first = h.request(tflow()).await;
    assert_eq!(first.request.headers.get("x-kept"), Some("kept"));
    assert_eq!(first.request.path, "/first");
    let second = h.request(tflow()).await;
    assert_eq!(
        second.request.headers.get("x-kept"),
        Some("/first /first kept copy /first True /changed"),
        "logs: {:?}",
        h.logs()
    );
    assert_eq!(second.request.path, "/changed");
    assert_eq!(second.request.headers.get("x-after"), Some("kept"));
    assert_eq!(first.request.path, "/first");
}

const COLLECTED: &str = r#"
import asyncio, gc

async def request(flow):
    # A wait only this hook references, and a garbage collection while it waits.
    asyncio.get_running_loop().call_later(0.1, gc.collect)
    await asyncio.Event().wait()
    flow.request.headers["x-woke"] = "1"
"#;

/// An `async def` hook waiting on something only it references is not freed by the garbage
/// collector mid-hook (asyncio holds tasks weakly): it was, and the flow went on at once as if
/// the hook had returned; it must wait for `addon_timeout`, which reports it.
#[actix_rt::test]
async fn a_waiting_async_hook_survives_a_garbage_collection() {
    let dir = TempDir::new("collected");
    let path = write(&dir, "collected.py", COLLECTED);
    let mut opts = waylay_core::Options::new();
    opts.set_specs(&["addon_timeout=1"]).expect("option");
    let mut h = AddonHarness::with_options(opts).await;
    h.add(ScriptAddon::load(&path).expect("loads")).await;
    let started = std::time::Instant::now();
    let flow = within("the flow at the deadline", h.request(tflow())).await;
    assert!(!flow.request.headers.contains("x-woke"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "came back after {:?}, before the deadline",
        started.elapsed()
    );
    assert!(h.has_log_at(LogLevel::Error, "timed out"), "{:?}", h.logs());
}
