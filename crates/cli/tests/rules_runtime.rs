//! The rule addons (`modify_headers`, `map_remote`, `block_list`, ...) act on an option set
//! while the proxy runs, and handle no flow hook while their option is empty, so an idle one
//! leaves the proxy on its flowless path. Regression: the binary registered them only when
//! their option was set at start, so setting one later (the web UI, a script) did nothing.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use waylay::addons::{
    BlockList, HarDump, MapLocal, MapRemote, ModifyBody, ModifyHeaders, Save, ServerReplay,
    StickyAuth, StickyCookie,
};
use waylay::{Dumper, Flow, HookKind, Proxy};
use waylay_testkit::{FlowExt, TempDir, TestProxy, WaylayWeb, http_origin, proxy_get, within};

/// Every hook that makes the proxy build a flow for an HTTP request.
const HTTP: &[HookKind] = &[
    HookKind::RequestHeaders,
    HookKind::Request,
    HookKind::ResponseHeaders,
    HookKind::Response,
    HookKind::Error,
];

/// The origin's `x-origin` header line as the client received it.
fn x_origin(answer: &str) -> Option<&str> {
    answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-origin:"))
        .map(|l| l["x-origin:".len()..].trim())
}

/// The status code of an HTTP/1.x answer.
fn status(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[actix_rt::test]
async fn a_custom_proxy_turns_rule_options_on_and_off_at_run_time() {
    let origin = http_origin().await;
    let other = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .addon(BlockList::new())
            .addon(MapRemote::new())
            .addon(MapLocal::new())
            .addon(ModifyBody::new())
            .addon(ModifyHeaders::new())
            .addon(StickyAuth::new())
            .addon(StickyCookie::new()),
    )
    .await;
    let manager = proxy.running().manager().clone();
    let url = format!("http://{origin}/path");

    // No rules: nobody observes HTTP, so requests take the flowless path, unmodified.
    assert!(!manager.handles_any(HTTP));
    let a = within("plain request", proxy_get(proxy.addr(), &url)).await;
    assert_eq!(status(&a), Some(200), "{a}");
    assert_eq!(x_origin(&a), Some("1"), "{a}");
    assert!(a.contains(&format!("host={origin}")), "{a}");

    // modify_headers set while running: the next response is rewritten.
    manager
        .set(&["modify_headers=/~s/x-origin/changed"])
        .await
        .expect("modify_headers accepted");
    assert!(manager.handles(HookKind::ResponseHeaders));
    let a = within("modify_headers", proxy_get(proxy.addr(), &url)).await;
    assert_eq!(x_origin(&a), Some("changed"), "{a}");

    // map_remote: the request goes to the other origin (its Host follows).
    manager
        .set(&[format!("map_remote=|//{origin}/|//{other}/")])
        .await
        .expect("map_remote accepted");
    let a = within("map_remote", proxy_get(proxy.addr(), &url)).await;
    assert!(a.contains(&format!("host={other}")), "{a}");

    // block_list: answered by the proxy, never forwarded.
    manager
        .set(&["block_list=/~u blocked/403"])
        .await
        .expect("block_list accepted");
    let blocked = format!("http://{origin}/blocked");
    let a = within("block_list", proxy_get(proxy.addr(), &blocked)).await;
    assert_eq!(status(&a), Some(403), "{a}");
    // Not the origin's `x-origin: 1`; modify_headers still rewrites the proxy's answer (its
    // `responseheaders` fires for an answer an addon made, as in mitmproxy).
    assert_eq!(x_origin(&a), Some("changed"), "{a}");

    // stickycookie / stickyauth take a filter: they join while it is set.
    manager
        .set(&["stickycookie=~q", "stickyauth=~q"])
        .await
        .expect("sticky filters accepted");
    manager
        .set(&["stickycookie=", "stickyauth="])
        .await
        .expect("sticky filters cleared");

    // A bad rule at run time is refused, naming the option; the old rules stay.
    let e = manager
        .set(&["modify_headers=/~bad(/x/y"])
        .await
        .expect_err("a bad filter is refused");
    assert!(e.to_string().contains("modify_headers"), "{e}");
    let a = within("old rules stay", proxy_get(proxy.addr(), &url)).await;
    assert_eq!(x_origin(&a), Some("changed"), "{a}");

    // Cleared: every rule addon leaves the HTTP routes, and requests go through untouched.
    manager
        .set(&["modify_headers=", "map_remote=", "block_list="])
        .await
        .expect("options cleared");
    assert!(!manager.handles_any(HTTP));
    let a = within("after clearing", proxy_get(proxy.addr(), &blocked)).await;
    assert_eq!(status(&a), Some(200), "{a}");
    assert_eq!(x_origin(&a), Some("1"), "{a}");
    assert!(a.contains(&format!("host={origin}")), "{a}");
    proxy.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

/// One HTTP/1.0 exchange with `addr` (bounded by socket timeouts); the whole answer.
fn exchange(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    s.write_all(request.as_bytes()).expect("send the request");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

fn put_options(ui: &str, token: &str, body: &str) -> String {
    exchange(
        ui,
        &format!(
            "PUT /options HTTP/1.0\r\nHost: {ui}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn get_via(proxy: &str, origin: SocketAddr, path: &str) -> String {
    exchange(
        proxy,
        &format!("GET http://{origin}{path} HTTP/1.0\r\nHost: {origin}\r\n\r\n"),
    )
}

#[actix_rt::test]
async fn waylay_web_applies_rule_options_set_in_the_ui() {
    let origin = http_origin().await;
    let other = http_origin().await;
    let conf = TempDir::new("rules-web");
    let web = WaylayWeb::start(BIN, &conf);
    let (proxy, (ui, token)) = (web.proxy.clone(), web.ui_and_token());

    // The origin is served by a task of this test's runtime: the blocking client runs on a
    // thread while the test awaits it.
    let answers = within(
        "the exchanges",
        tokio::task::spawn_blocking(move || {
            let mut answers = Vec::new();
            answers.push(get_via(&proxy, origin, "/a"));
            answers.push(put_options(
                &ui,
                &token,
                &format!(
                    r#"{{"modify_headers": ["/~s/x-origin/changed"], "map_remote": ["|//{origin}/|//{other}/"], "block_list": ["/~u blocked/403"]}}"#
                ),
            ));
            answers.push(get_via(&proxy, origin, "/a"));
            answers.push(get_via(&proxy, origin, "/blocked"));
            answers.push(put_options(
                &ui,
                &token,
                r#"{"modify_headers": [], "map_remote": [], "block_list": []}"#,
            ));
            answers.push(get_via(&proxy, origin, "/blocked"));
            answers
        }),
    )
    .await
    .expect("the client thread");
    let [before, set, mapped, blocked, cleared, after] = answers.as_slice() else {
        panic!("{answers:?}");
    };
    assert_eq!(x_origin(before), Some("1"), "{before}");
    assert!(before.contains(&format!("host={origin}")), "{before}");
    assert_eq!(status(set), Some(200), "{set}");
    assert_eq!(x_origin(mapped), Some("changed"), "{mapped}");
    assert!(mapped.contains(&format!("host={other}")), "{mapped}");
    assert_eq!(status(blocked), Some(403), "{blocked}");
    assert_eq!(status(cleared), Some(200), "{cleared}");
    assert_eq!(x_origin(after), Some("1"), "{after}");
    assert!(after.contains(&format!("host={origin}")), "{after}");
}

/// `-n -r`: the bundled addons are there too, as mitmproxy's defaults are (they were not
/// registered at all without a proxy). The rewriting rules skip flows read from a file (not
/// live, as in mitmproxy), but stickycookie keeps the cookies a read response sets and sends
/// them on a later read request, as `mitmdump -n -r` does.
#[test]
fn stickycookie_applies_to_flows_read_without_a_proxy() {
    let dir = TempDir::new("rules-offline");
    let input = dir.path().join("in.flows");
    let output = dir.path().join("out.flows");
    let mut w = waylay::flowfile::FlowWriter::new(std::fs::File::create(&input).unwrap());
    let mut resp = waylay_testkit::tresp();
    resp.headers.insert("set-cookie", "session=abc; Path=/");
    let mut first = waylay_testkit::tflow().with_response(resp);
    first.live = false;
    let mut second = waylay_testkit::tflow().with_response(waylay_testkit::tresp());
    second.live = false;
    for f in [first, second] {
        w.add(&waylay::Flow::Http(Box::new(f))).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let out = Command::new(BIN)
        .args(["-n", "-q", "-r"])
        .arg(&input)
        .arg("-w")
        .arg(&output)
        .args(["--set", "stickycookie=~d example.com"])
        .arg("--set")
        .arg(format!("confdir={}", dir.path().display()))
        .env_remove("RUST_LOG")
        .output()
        .expect("waylay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flows = waylay::flowfile::read_file(output.to_str().unwrap()).expect("the written flows");
    let [waylay::Flow::Http(a), waylay::Flow::Http(b)] = flows.as_slice() else {
        panic!("{flows:?}");
    };
    assert_eq!(a.request.headers.get("cookie"), None);
    assert_eq!(b.request.headers.get("cookie"), Some("session=abc"));
}

/// A script setting a rule option while the proxy runs (`ctx.options.x = ...` in `running`):
/// the rule applies to the next request.
#[cfg(feature = "python")]
#[actix_rt::test]
async fn a_script_sets_a_rule_option_at_run_time() {
    let origin = http_origin().await;
    let conf = TempDir::new("rules-script");
    let script = conf.path().join("rules.py");
    std::fs::write(
        &script,
        "from mitmproxy import ctx\n\ndef running():\n    ctx.options.modify_headers = ['/~s/x-origin/from-script']\n",
    )
    .expect("write the script");
    let mut child = Command::new(BIN)
        .args(["-q", "-p", "0", "-s"])
        .arg(&script)
        .arg("--set")
        .arg(format!("confdir={}", conf.path().display()))
        .arg("--set")
        .arg("termlog_verbosity=info")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("waylay starts");
    let err = waylay_testkit::Lines::new(child.stderr.take().expect("stderr"));
    let _running = waylay_testkit::KillOnDrop(child);
    let proxy = err.wait_for_proxy_addr();
    // The script's assignment is applied right after its `running` hook, which may be just
    // after the startup line: ask again (bounded) until it is.
    let answer = within(
        "the requests",
        tokio::task::spawn_blocking(move || {
            let mut answer = String::new();
            for _ in 0..200 {
                answer = get_via(&proxy, origin, "/a");
                if x_origin(&answer) != Some("1") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            answer
        }),
    )
    .await
    .expect("the client thread");
    assert_eq!(x_origin(&answer), Some("from-script"), "{answer}");
}

/// The paths of the HTTP flows in the flow file `path`, read back with waylay's `FlowReader`.
fn saved_paths(path: &std::path::Path) -> Vec<String> {
    let file = std::fs::File::open(path).expect("the flow file exists");
    waylay::flowfile::FlowReader::new(file)
        .map(|f| match f.expect("a whole flow") {
            Flow::Http(h) => h.request.path.to_string(),
            other => panic!("not an HTTP flow: {other:?}"),
        })
        .collect()
}

/// A writer the test reads back (the dumper's output).
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// Save, server replay, hardump and the dumper start and stop with their option while the
/// proxy runs, and handle no flow hook while it is unset. Regression: the binary registered
/// them only when their option was set at start, so setting `save_stream_file` or
/// `server_replay` from the web UI or a script did nothing.
#[actix_rt::test]
async fn save_replay_hardump_and_dumper_follow_their_options_at_run_time() {
    let origin = http_origin().await;
    let dir = TempDir::new("save-runtime");
    let first = dir.path().join("first.flows");
    let second = dir.path().join("second.flows");
    let recording = dir.path().join("recording.flows");
    let har = dir.path().join("flows.har");
    let out = Shared::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("flow_detail=0")
            .addon(ServerReplay::new())
            .addon(Save::new())
            .addon(HarDump::new())
            .addon(Dumper::new(out.clone())),
    )
    .await;
    let manager = proxy.running().manager().clone();
    let addr = proxy.addr();
    let url = |path: &str| format!("http://{origin}{path}");

    // All idle: nobody observes HTTP.
    assert!(!manager.handles_any(HTTP));
    within("before", proxy_get(addr, &url("/before"))).await;

    // save_stream_file set: the flows from now on are written.
    manager
        .set(&[format!("save_stream_file={}", first.display())])
        .await
        .expect("save_stream_file accepted");
    assert!(manager.handles(HookKind::Response));
    within("one", proxy_get(addr, &url("/one"))).await;
    within("two", proxy_get(addr, &url("/two"))).await;

    // Changed to another file: the first is closed, the next flows go to the second.
    manager
        .set(&[format!("save_stream_file={}", second.display())])
        .await
        .expect("save_stream_file changed");
    assert_eq!(saved_paths(&first), ["/one", "/two"]);
    within("three", proxy_get(addr, &url("/three"))).await;

    // Cleared: the file is flushed and closed at once, and nothing more is written.
    manager
        .set(&["save_stream_file="])
        .await
        .expect("save_stream_file cleared");
    assert!(!manager.handles_any(HTTP));
    within("after", proxy_get(addr, &url("/after"))).await;
    assert_eq!(saved_paths(&first), ["/one", "/two"]);
    assert_eq!(saved_paths(&second), ["/three"]);

    // A recording whose answer differs from the origin's: server replay set at run time
    // answers from it, and the origin is not asked.
    mark_recording(&second, &recording);
    manager
        .set(&[format!("server_replay={}", recording.display())])
        .await
        .expect("server_replay accepted");
    assert!(manager.handles(HookKind::Request));
    let a = within("replayed", proxy_get(addr, &url("/three"))).await;
    assert_eq!(x_origin(&a), Some("recorded"), "{a}");
    // Not in the recording: forwarded (server_replay_extra=forward).
    let a = within("extra", proxy_get(addr, &url("/four"))).await;
    assert_eq!(x_origin(&a), Some("1"), "{a}");
    // A bad path is refused, naming the option; cleared, requests go to the origin again.
    let e = manager
        .set(&[format!(
            "server_replay={}",
            dir.path().join("missing.flows").display()
        )])
        .await
        .expect_err("a missing recording is refused");
    assert!(e.to_string().contains("server_replay"), "{e}");
    manager
        .set(&["server_replay="])
        .await
        .expect("server_replay cleared");
    assert!(!manager.handles_any(HTTP));
    let a = within("after replay", proxy_get(addr, &url("/three"))).await;
    assert_eq!(x_origin(&a), Some("1"), "{a}");

    // The dumper prints once flow_detail is raised, and is quiet (off the routes) again at 0.
    assert_eq!(out.text(), "");
    manager
        .set(&["flow_detail=1"])
        .await
        .expect("flow_detail raised");
    within("printed", proxy_get(addr, &url("/printed"))).await;
    manager
        .set(&["flow_detail=0"])
        .await
        .expect("flow_detail lowered");
    assert!(!manager.handles_any(HTTP));
    within("quiet", proxy_get(addr, &url("/quiet"))).await;
    let text = out.text();
    assert!(text.contains("/printed << 200 OK"), "{text}");
    assert!(!text.contains("error"), "{text}");
    assert!(!text.contains("/quiet"), "{text}");

    // hardump set at run time: the flows from then on are written at shutdown.
    manager
        .set(&[format!("hardump={}", har.display())])
        .await
        .expect("hardump accepted");
    within("in the HAR", proxy_get(addr, &url("/har"))).await;
    proxy.shutdown().await;
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&har).expect("the HAR is written at shutdown"))
            .expect("HAR JSON");
    let urls: Vec<&str> = doc["log"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["request"]["url"].as_str())
        .collect();
    assert_eq!(urls, [format!("http://{origin}/har")], "{doc}");
}

/// Copies the flow file `from` to `to` with every response's `x-origin` header changed to
/// `recorded`, so that an answer replayed from `to` is told apart from the origin's.
fn mark_recording(from: &std::path::Path, to: &std::path::Path) {
    let mut flows = waylay::flowfile::read_file(from.to_str().expect("utf-8 path"))
        .expect("the recorded flows");
    let mut w = waylay::flowfile::FlowWriter::new(std::fs::File::create(to).expect("create"));
    for f in &mut flows {
        if let Flow::Http(h) = f
            && let Some(r) = h.response.as_mut()
        {
            r.headers.insert("x-origin", "recorded");
        }
        w.add(f).expect("write the recording");
    }
    w.flush().expect("flush the recording");
}

/// The binary: `save_stream_file` and `server_replay` set from the web UI's options editor
/// act on the next request, and clearing them stops them (the file flushed and closed).
/// Regression: save and server replay were registered only when set at start.
#[actix_rt::test]
async fn waylay_web_saves_and_replays_when_set_in_the_ui() {
    let origin = http_origin().await;
    let conf = TempDir::new("save-web");
    let saved = conf.path().join("saved.flows");
    let recording = conf.path().join("recording.flows");
    let web = WaylayWeb::start(BIN, &conf);
    let (proxy, (ui, token)) = (web.proxy.clone(), web.ui_and_token());

    let (saved_paths, answers) = within(
        "the exchanges",
        tokio::task::spawn_blocking(move || {
            let mut answers = Vec::new();
            get_via(&proxy, origin, "/before");
            answers.push(put_options(
                &ui,
                &token,
                &format!(
                    r#"{{"save_stream_file": {}}}"#,
                    serde_json::Value::from(saved.display().to_string())
                ),
            ));
            get_via(&proxy, origin, "/one");
            get_via(&proxy, origin, "/two");
            answers.push(put_options(&ui, &token, r#"{"save_stream_file": null}"#));
            get_via(&proxy, origin, "/after");
            let paths = saved_paths(&saved);
            mark_recording(&saved, &recording);
            answers.push(put_options(
                &ui,
                &token,
                &format!(
                    r#"{{"server_replay": [{}]}}"#,
                    serde_json::Value::from(recording.display().to_string())
                ),
            ));
            answers.push(get_via(&proxy, origin, "/two"));
            answers.push(put_options(&ui, &token, r#"{"server_replay": []}"#));
            answers.push(get_via(&proxy, origin, "/two"));
            (paths, answers)
        }),
    )
    .await
    .expect("the client thread");
    assert_eq!(saved_paths, ["/one", "/two"]);
    let [set, cleared, replay_set, replayed, replay_cleared, after] = answers.as_slice() else {
        panic!("{answers:?}");
    };
    for a in [set, cleared, replay_set, replay_cleared] {
        assert_eq!(status(a), Some(200), "{a}");
    }
    assert_eq!(x_origin(replayed), Some("recorded"), "{replayed}");
    assert_eq!(x_origin(after), Some("1"), "{after}");
}
