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
    AddonHarness, TempDir, TestProxy, http_origin, proxy_get, tflow, treq, within,
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
    flow.response.headers["x-had"] = str(getattr(flow, "mark", None)) + "/" + str(flow.metadata.get("m"))
    flow.mark = 1
    flow.metadata["m"] = 2
    if flow.request.path == "/keep":
        kept.append(flow)
    if flow.request.path == "/check":
        flow.response.headers["x-kept"] = kept[0].metadata.get("m", "gone") and str(kept[0].mark)
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
            Some("None/None"),
            "{p}: a fresh flow object"
        );
        if p == "/check" {
            assert_eq!(
                r.headers.get("x-kept"),
                Some("1"),
                "the kept flow kept its attributes"
            );
        }
    }
}
