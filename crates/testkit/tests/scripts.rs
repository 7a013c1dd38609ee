//! mitmproxy addon scripts run by waylay (`ScriptAddon`), end to end through the real proxy,
//! each compared with mitmproxy 12.3.1 (`mitmdump -s`) running the same script on the same
//! requests: what the origin receives and what the client receives must match.
#![cfg(feature = "python")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use waylay_addons::ScriptAddon;
use waylay_core::hooks::LogLevel;
use waylay_layers::Proxy;
use waylay_testkit::{
    AddonHarness, FlowExt, TempDir, TestProxy, peers, raw_request, scripted_origin, tflow, tresp,
    within,
};

/// The origin's answer: a small JSON body, a cookie, and the path echoed in a header
/// (chunked, without `Content-Length`, for a path under `/chunked`).
fn answer(path: &str) -> Vec<u8> {
    let body = format!("{{\"path\": \"{path}\", \"n\": 1}}");
    if path.starts_with("/chunked") {
        return format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .into_bytes();
    }
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Origin-Path: {path}\r\nSet-Cookie: s=1; Path=/\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request head (+ body) as the origin recorded it, normalised for comparison: the request
/// line, then the headers lowercased and stably sorted by name (duplicates keep their
/// order), then the body. `connection` is left out: mitmproxy forwards the client's
/// `Connection: close`, waylay drops hop-by-hop headers (RFC 9110 §7.6.1), and waylay's
/// header map moves the last field into the removed one's place.
fn normalise_request(raw: &str) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("").to_owned();
    let mut headers: Vec<String> = lines
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.starts_with("connection:") && !l.starts_with("proxy-"))
        .collect();
    let body = unchunk(&mut headers, body);
    headers.sort_by(|a, b| a.split(':').next().cmp(&b.split(':').next()));
    let mut out = vec![first];
    out.extend(headers);
    out.push(body.to_owned());
    out.join("\n")
}

/// What a client received, normalised: the status line, the headers lowercased and sorted
/// (both proxies keep the origin's order; sorted so a hop header added differently does
/// not hide the rest), the body. `connection`/`date` are the proxies' own.
fn normalise_response(raw: &str) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_owned();
    let mut headers: Vec<String> = lines
        .map(str::to_ascii_lowercase)
        .filter(|l| !l.starts_with("connection:") && !l.starts_with("date:"))
        .collect();
    let body = unchunk(&mut headers, body);
    headers.sort();
    format!("{status}\n{}\n\n{body}", headers.join("\n"))
}

/// A chunked body as the bytes it carries, its `Transfer-Encoding: chunked` as the
/// `Content-Length` it amounts to: framing is hop by hop, and waylay sends a buffered body
/// with its length where mitmproxy keeps the chunks (both are the same message).
fn unchunk(headers: &mut [String], body: &str) -> String {
    let Some(at) = headers
        .iter()
        .position(|h| h.starts_with("transfer-encoding:") && h.ends_with("chunked"))
    else {
        return body.to_owned();
    };
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    headers[at] = format!("content-length: {}", out.len());
    out
}

fn write_script(dir: &TempDir, name: &str, src: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, src).expect("write script");
    p
}

/// waylay running `script` (its options declared, `sets` applied) on an ephemeral loopback
/// port, as the comparisons run it.
async fn script_proxy<S: AsRef<str>>(script: &Path, sets: &[S]) -> TestProxy {
    let addon = ScriptAddon::load(script).expect("script loads");
    let mut opts = waylay_core::Options::new();
    for spec in addon.option_specs() {
        opts.add(spec).expect("script option");
    }
    let mut builder = Proxy::builder().set("flow_detail=0");
    for s in sets {
        builder = builder.set(s.as_ref());
    }
    TestProxy::start(builder.options(opts).addon(addon)).await
}

/// The CA certificate mitmdump made in `confdir` (PEM).
fn mitm_ca(confdir: &TempDir) -> String {
    std::fs::read_to_string(confdir.path().join("mitmproxy-ca-cert.pem")).expect("mitmproxy's CA")
}

/// mitmdump running `script` on an ephemeral loopback port; killed on drop.
struct Mitmdump {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Mitmdump {
    fn start(bin: &Path, script: &Path, confdir: &Path, sets: &[&str]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--flow-detail",
            "0",
        ])
        .arg("-s")
        .arg(script)
        .arg("--set")
        .arg(format!("confdir={}", confdir.display()));
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mitmdump starts");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening at ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').to_owned());
                }
                keep.lock().expect("lines").push(line);
            }
        });
        let at = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("mitmdump says where it listens");
        let port: u16 = at
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
        }
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }
}

impl Drop for Mitmdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request to send through a proxy: the path and extra head lines and body.
struct Req {
    method: &'static str,
    path: &'static str,
    extra: &'static str,
    body: &'static str,
}

/// A plain GET of `path`.
fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        path,
        extra: "",
        body: "",
    }
}

fn raw(origin: SocketAddr, r: &Req) -> Vec<u8> {
    let len = if (r.body.is_empty() && r.method == "GET") || r.extra.contains("Transfer-Encoding") {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", r.body.len())
    };
    format!(
        "{} http://{origin}{} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n{}{len}\r\n{}",
        r.method, r.path, r.extra, r.body
    )
    .into_bytes()
}

/// What the origin received and what the client received, per request.
type Seen = Vec<(Vec<String>, String)>;

async fn send_all(
    proxy: SocketAddr,
    origin: SocketAddr,
    log: &Mutex<Vec<String>>,
    reqs: &[Req],
) -> Seen {
    let mut out = Vec::new();
    for r in reqs {
        log.lock().expect("log").clear();
        let answer = within(
            "request through the proxy",
            raw_request(proxy, &raw(origin, r)),
        )
        .await;
        let got: Vec<String> = log
            .lock()
            .expect("log")
            .iter()
            .map(|s| normalise_request(&s.replace(&origin.to_string(), "ORIGIN")))
            .collect();
        out.push((
            got,
            normalise_response(&answer.replace(&origin.to_string(), "ORIGIN")),
        ));
    }
    out
}

/// Runs `script` in waylay and in mitmdump on `reqs` and asserts both saw and answered the
/// same; returns waylay's proxy logs' text for further checks.
async fn compare(name: &str, src: &str, sets: &[&str], reqs: &[Req]) -> Option<Seen> {
    let bin = peers::mitmdump()?;
    let dir = TempDir::new(name);
    let script = write_script(&dir, &format!("{name}.py"), src);
    let (origin, log) = scripted_origin(answer).await;

    let proxy = script_proxy(&script, sets).await;
    let ours = send_all(proxy.addr(), origin, &log, reqs).await;
    proxy.shutdown().await;

    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), sets);
    let theirs = send_all(mitm.addr, origin, &log, reqs).await;
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(
            a.0,
            b.0,
            "request {i}: the origin received different requests (left waylay, right mitmproxy); mitmdump said:\n{}",
            mitm.output()
        );
        assert_eq!(
            a.1,
            b.1,
            "request {i}: the client received different answers (left waylay, right mitmproxy); mitmdump said:\n{}",
            mitm.output()
        );
    }
    Some(ours)
}

const REWRITE: &str = r#"
from mitmproxy import http, ctx

class Rewrite:
    def request(self, flow: http.HTTPFlow) -> None:
        r = flow.request
        r.headers["X-Added"] = "yes"
        r.headers.add("X-Multi", "a")
        r.headers.add("X-Multi", "b")
        if "x-drop" in r.headers:
            del r.headers["x-drop"]
        r.query["added"] = "a b&c"
        r.path = r.path.replace("/old", "/new")
        r.headers["X-Url"] = r.url
        r.headers["X-Pretty"] = r.pretty_host + "|" + str(r.port) + "|" + r.scheme + "|" + r.method
        if r.method == "POST":
            r.text = r.text.upper() + "!"

    def response(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        data = resp.json()
        data["seen"] = flow.request.path
        resp.text = __import__("json").dumps(data, sort_keys=True)
        resp.headers["X-Status"] = str(resp.status_code) + " " + resp.reason
        resp.headers["X-Multi-Count"] = str(len(flow.request.headers.get_all("x-multi")))
        resp.status_code = 201

addons = [Rewrite()]
"#;

#[actix_rt::test]
async fn rewriting_requests_and_responses_matches_mitmproxy() {
    compare(
        "rewrite",
        REWRITE,
        &[],
        &[
            Req {
                method: "GET",
                path: "/old/a?x=1",
                extra: "X-Drop: 1\r\n",
                body: "",
            },
            Req {
                method: "POST",
                path: "/post",
                extra: "Content-Type: text/plain\r\n",
                body: "hello",
            },
        ],
    )
    .await;
}

const REPLY: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    if flow.request.path.startswith("/kill"):
        flow.kill()
    if flow.request.path.startswith("/local"):
        flow.response = http.Response.make(
            418, b"from the proxy", {"Content-Type": "text/plain", "X-Made": "1"}
        )
"#;

#[actix_rt::test]
async fn a_response_made_in_request_matches_mitmproxy() {
    let seen = compare(
        "reply",
        REPLY,
        &[],
        &[
            Req {
                method: "GET",
                path: "/local/x",
                extra: "",
                body: "",
            },
            Req {
                method: "GET",
                path: "/remote",
                extra: "",
                body: "",
            },
        ],
    )
    .await;
    if let Some(seen) = seen {
        assert!(seen[0].0.is_empty(), "the origin was not contacted");
        assert!(seen[0].1.contains("from the proxy"), "{}", seen[0].1);
    }
}

const KEEPS: &str = r#"
from mitmproxy import http

seen = []
cache = {}

def request(flow: http.HTTPFlow) -> None:
    # Flows kept from earlier hooks stay readable, as mitmproxy's flow objects are.
    if seen:
        last = seen[-1]
        flow.request.headers["x-last"] = "%s %s %s %d %s" % (
            last.request.path,
            last.response.status_code,
            last.response.headers.get("x-origin-path"),
            len(seen),
            last.live,
        )
    cached = cache.get(flow.request.path)
    if cached is not None:
        # Another flow's response, answered again.
        flow.response = cached
        flow.response.headers["x-cached"] = "yes"

def response(flow: http.HTTPFlow) -> None:
    seen.append(flow)
    cache.setdefault(flow.request.path, flow.response)
    flow.response.headers["x-first"] = seen[0].request.path
"#;

#[actix_rt::test]
async fn flows_and_responses_a_script_keeps_match_mitmproxy() {
    let seen = compare(
        "keeps",
        KEEPS,
        &[],
        &[get("/a"), get("/b"), get("/a"), get("/c"), get("/a")],
    )
    .await;
    if let Some(seen) = seen {
        assert!(seen[2].0.is_empty(), "a cached answer: {seen:?}");
        assert!(seen[2].1.contains("x-cached: yes"), "{}", seen[2].1);
        assert!(
            seen[3].0[0].contains("x-last: /a 200 /a 3 false"),
            "{:?}",
            seen[3].0
        );
    }
}

const STATE: &str = r#"
import logging
from mitmproxy import ctx, http

class State:
    def __init__(self):
        self.n = 0

    def load(self, loader):
        loader.add_option("greeting", str, "hello", "What to greet with.")
        loader.add_option("shout", bool, False, "Upper-case it.")
        loader.add_option("times", int, 1, "How often.")

    def request(self, flow):
        self.n += 1
        flow.metadata["n"] = self.n
        flow.marker = "set in request"
        g = ctx.options.greeting * ctx.options.times
        flow.request.headers["x-greeting"] = g.upper() if ctx.options.shout else g
        logging.info("request %d", self.n)

    def response(self, flow):
        flow.response.headers["x-n"] = str(flow.metadata["n"])
        flow.response.headers["x-marker"] = flow.marker
        flow.response.headers["x-cookie"] = ",".join(flow.response.cookies.keys())
        flow.response.headers["x-client"] = str(flow.client_conn.peername[0])
        flow.response.headers["x-server"] = str(flow.server_conn.address[1] > 0)

addons = [State()]
"#;

#[actix_rt::test]
async fn options_metadata_and_flow_attributes_match_mitmproxy() {
    compare(
        "state",
        STATE,
        &["greeting=hey", "shout=true", "times=2"],
        &[
            Req {
                method: "GET",
                path: "/1",
                extra: "",
                body: "",
            },
            Req {
                method: "GET",
                path: "/2",
                extra: "",
                body: "",
            },
        ],
    )
    .await;
}

const FORMS: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    r = flow.request
    if r.urlencoded_form:
        form = r.urlencoded_form
        form["extra"] = "1 2"
        r.headers["x-form"] = ",".join(f"{k}={v}" for k, v in form.items(multi=True))
    r.headers["x-cookies"] = ";".join(f"{k}={v}" for k, v in r.cookies.items(multi=True))
    r.headers["x-path-components"] = "/".join(r.path_components)
    q = r.query
    r.headers["x-query"] = ",".join(q.get_all("a"))
"#;

#[actix_rt::test]
async fn forms_cookies_and_queries_match_mitmproxy() {
    compare(
        "forms",
        FORMS,
        &[],
        &[Req {
            method: "POST",
            path: "/f/a%20b?a=1&a=2&b",
            extra: "Content-Type: application/x-www-form-urlencoded\r\nCookie: k=v; other=2\r\n",
            body: "x=1&y=h%C3%A9",
        }],
    )
    .await;
}

const CONTENT_LENGTH: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    r = flow.request
    if r.path.startswith("/empty"):
        r.content = b""
    elif r.path.startswith("/post"):
        r.text = "a longer body than before"
    elif r.path.startswith("/chunked"):
        r.text = "still chunked"
    r.headers["x-req-cl"] = r.headers.get("content-length", "none")

def response(flow: http.HTTPFlow) -> None:
    resp = flow.response
    if flow.request.path.endswith("/none"):
        resp.content = b""
    else:
        resp.text = "new body for " + flow.request.path
    resp.headers["x-resp-cl"] = resp.headers.get("content-length", "none")
    resp.headers["x-resp-te"] = resp.headers.get("transfer-encoding", "none")
"#;

/// Setting `content`/`text` updates `Content-Length` as mitmproxy does: on a GET without a
/// body (`b""` gives `Content-Length: 0`), on a POST, on a response; never on a chunked
/// request or response, whose length the framing carries.
#[actix_rt::test]
async fn setting_content_updates_content_length_as_mitmproxy_does() {
    compare(
        "content_length",
        CONTENT_LENGTH,
        &[],
        &[
            Req {
                method: "GET",
                path: "/empty",
                extra: "",
                body: "",
            },
            Req {
                method: "POST",
                path: "/post",
                extra: "Content-Type: text/plain\r\n",
                body: "short",
            },
            Req {
                method: "GET",
                path: "/post/none",
                extra: "",
                body: "",
            },
            Req {
                method: "POST",
                path: "/chunked",
                extra: "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n",
                body: "5\r\nhello\r\n0\r\n\r\n",
            },
        ],
    )
    .await;
}

const FILTER: &str = r#"
from mitmproxy import ctx, flowfilter, http

class Filtered:
    def load(self, loader):
        loader.add_option("match", str, "~u /api & ~m POST", "What to tag.")

    def configure(self, updated):
        if "match" in updated:
            self.filter = flowfilter.parse(ctx.options.match)

    def request(self, flow: http.HTTPFlow) -> None:
        flow.request.headers["x-match"] = str(self.filter(flow))
        flow.request.headers["x-host"] = str(flowfilter.match("~d 127.0.0.1 & !~h x-nothing", flow))

    def response(self, flow: http.HTTPFlow) -> None:
        flow.response.headers["x-json"] = str(flowfilter.match("~c 200 & ~t json & ~bs path", flow))

addons = [Filtered()]
"#;

#[actix_rt::test]
async fn flowfilter_in_a_script_matches_mitmproxy() {
    compare(
        "filtered",
        FILTER,
        &[],
        &[
            Req {
                method: "POST",
                path: "/api/x",
                extra: "",
                body: "a",
            },
            Req {
                method: "GET",
                path: "/api/x",
                extra: "",
                body: "",
            },
        ],
    )
    .await;
}

const FAULT: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-before"] = "kept"
    raise RuntimeError("script failed on purpose")

def response(flow: http.HTTPFlow) -> None:
    flow.response.headers["x-after"] = "still runs"
"#;

#[actix_rt::test]
async fn an_exception_in_a_hook_keeps_the_edits_before_it_as_mitmproxy_does() {
    compare(
        "fault",
        FAULT,
        &[],
        &[Req {
            method: "GET",
            path: "/",
            extra: "",
            body: "",
        }],
    )
    .await;
}

#[actix_rt::test]
async fn an_exception_is_logged_with_its_traceback() {
    let dir = TempDir::new("fault-log");
    let script = write_script(&dir, "fault.py", FAULT);
    let mut h = AddonHarness::script(&script).await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.headers.get("x-before"), Some("kept"));
    assert!(h.has_log_at(LogLevel::Error, "RuntimeError: script failed on purpose"));
    assert!(h.has_log("Traceback (most recent call last)"));
    assert!(
        h.has_log("fault.py\", line 6, in request"),
        "{:?}",
        h.logs()
    );
    // The next flow still goes through the script.
    let flow = h.response(tflow().with_response(tresp())).await;
    assert_eq!(
        flow.response.expect("response").headers.get("x-after"),
        Some("still runs")
    );
}

#[actix_rt::test]
async fn the_harness_runs_a_script_on_test_flows() {
    let dir = TempDir::new("harness");
    let script = write_script(&dir, "state.py", STATE);
    let mut h = AddonHarness::script(&script).await;
    h.set_options(&["greeting=yo"])
        .await
        .expect("script option is settable");
    let flow = h.request(tflow()).await;
    assert_eq!(flow.request.headers.get("x-greeting"), Some("yo"));
    assert_eq!(flow.metadata.get("n"), Some(&serde_json::json!(1)));
    let flow = h.response(flow.with_response(tresp())).await;
    let resp = flow.response.expect("response");
    assert_eq!(resp.headers.get("x-n"), Some("1"));
    assert_eq!(resp.headers.get("x-marker"), Some("set in request"));
}

/// Starts waylay with `script` and, when the peer is there, mitmdump with it; returns the
/// running waylay proxy and mitmdump.
async fn both(name: &str, src: &str) -> Option<(TestProxy, Mitmdump, TempDir, TempDir)> {
    let bin = peers::mitmdump()?;
    let dir = TempDir::new(name);
    let script = write_script(&dir, &format!("{name}.py"), src);
    let addon = ScriptAddon::load(&script).expect("script loads");
    let proxy = TestProxy::start(Proxy::builder().addon(addon)).await;
    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &[]);
    Some((proxy, mitm, dir, confdir))
}

const WEBSOCKET: &str = r#"
from mitmproxy import ctx, http

def websocket_message(flow: http.HTTPFlow) -> None:
    msg = flow.websocket.messages[-1]
    if msg.from_client:
        if msg.text == "drop":
            msg.drop()
        elif msg.text == "inject":
            ctx.master.commands.call("inject.websocket", flow, True, b"injected to client")
        else:
            msg.content = msg.content.upper()
    elif not msg.injected:
        msg.text = msg.text + " (seen, " + str(len(flow.websocket.messages) > 0) + ")"
"#;

async fn websocket_scenario(proxy: SocketAddr, origin: SocketAddr) -> Vec<String> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = within(
        "ws handshake",
        waylay_testkit::ws_through_proxy(proxy, origin, "/ws", &[]),
    )
    .await
    .expect("handshake");
    let mut got = Vec::new();
    for text in ["hello", "drop", "after drop", "inject"] {
        ws.send(Message::text(text)).await.expect("send");
        if text == "drop" {
            continue;
        }
        let n = if text == "inject" { 2 } else { 1 };
        for _ in 0..n {
            match waylay_testkit::ws_next(&mut ws).await {
                Some(Ok(Message::Text(t))) => got.push(t.to_string()),
                other => got.push(format!("{other:?}")),
            }
        }
    }
    let _ = ws.close(None).await;
    got
}

#[actix_rt::test]
async fn a_websocket_message_script_matches_mitmproxy() {
    let Some((proxy, mitm, _d, _c)) = both("websocket", WEBSOCKET).await else {
        return;
    };
    let origin = waylay_testkit::WsOrigin::start().await;
    let ours = websocket_scenario(proxy.addr(), origin.addr).await;
    let ours_seen = origin.record.received();
    let theirs = websocket_scenario(mitm.addr, origin.addr).await;
    assert_eq!(
        ours,
        [
            "HELLO (seen, True)",
            "AFTER DROP (seen, True)",
            "injected to client",
            "inject (seen, True)"
        ]
    );
    assert_eq!(ours, theirs, "mitmdump said:\n{}", mitm.output());
    let texts: Vec<String> = ours_seen
        .iter()
        .filter_map(|m| m.to_text().ok().map(str::to_owned))
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        texts,
        ["HELLO", "AFTER DROP", "inject"],
        "the origin never saw the dropped one"
    );
    proxy.shutdown().await;
}

const TCP: &str = r#"
from mitmproxy import tcp

def tcp_message(flow: tcp.TCPFlow) -> None:
    message = flow.messages[-1]
    if message.from_client:
        message.content = message.content.replace(b"secret", b"******")
    else:
        message.content = message.content.upper()
"#;

async fn tcp_scenario(proxy: SocketAddr, origin: SocketAddr) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut s = within(
        "tunnel",
        waylay_testkit::connect_tunnel(proxy, &origin.to_string()),
    )
    .await
    .expect("tunnel");
    s.write_all(b"my secret\n").await.expect("write");
    let first = waylay_testkit::read_n(&mut s, 16).await;
    s.write_all(b"no secrets here\n").await.expect("write");
    let mut out = first;
    out.extend(waylay_testkit::read_n(&mut s, 22).await);
    out
}

#[actix_rt::test]
async fn a_tcp_message_script_matches_mitmproxy() {
    let Some((proxy, mitm, _d, _c)) = both("tcp", TCP).await else {
        return;
    };
    let origin = waylay_testkit::tcp_line_origin().await;
    let ours = tcp_scenario(proxy.addr(), origin.addr).await;
    let seen = origin.received();
    assert_eq!(
        String::from_utf8_lossy(&ours),
        "ECHO: MY ******\nECHO: NO ******S HERE\n"
    );
    assert_eq!(seen, b"my ******\nno ******s here\n");
    let theirs = tcp_scenario(mitm.addr, origin.addr).await;
    assert_eq!(ours, theirs, "mitmdump said:\n{}", mitm.output());
    proxy.shutdown().await;
}

const SETS_OPTIONS: &str = r#"
from mitmproxy import ctx, exceptions

class Sets:
    def __init__(self):
        self.configured = []

    def load(self, loader):
        loader.add_option("greeting", str, "hello", "What to greet with.")
        loader.add_option("times", int, 1, "How often.")

    def configure(self, updated):
        if "times" in updated or "greeting" in updated:
            self.configured.append(",".join(sorted(u for u in updated if u in ("times", "greeting"))))

    def request(self, flow):
        if flow.request.path == "/set":
            ctx.options.update(times=3, greeting="yo")
            flow.request.headers["x-read-back"] = f"{ctx.options.greeting} {ctx.options.times}"
            errors = []
            for name, value in (("nope", 1), ("times", "many")):
                try:
                    setattr(ctx.options, name, value)
                    errors.append("none")
                except (KeyError, TypeError, exceptions.OptionsError) as e:
                    errors.append(type(e).__name__)
            flow.request.headers["x-errors"] = ",".join(errors)

    def response(self, flow):
        flow.response.headers["x-greeting"] = ctx.options.greeting * ctx.options.times
        flow.response.headers["x-configured"] = "|".join(self.configured[1:])

addons = [Sets()]
"#;

#[actix_rt::test]
async fn a_script_setting_options_matches_mitmproxy() {
    compare(
        "sets_options",
        SETS_OPTIONS,
        &[],
        &[
            Req {
                method: "GET",
                path: "/set",
                extra: "",
                body: "",
            },
            Req {
                method: "GET",
                path: "/after",
                extra: "",
                body: "",
            },
        ],
    )
    .await;
}

const WEBSOCKET_KILL: &str = r#"
from mitmproxy import http

def websocket_message(flow: http.HTTPFlow) -> None:
    msg = flow.websocket.messages[-1]
    if msg.from_client and msg.text == "kill-me":
        flow.kill()
"#;

/// What the client sees of a WebSocket whose flow a script kills at its second message: the
/// texts that come back, then `end` when the connection ends. A connection still relaying
/// after the kill gets a third message, whose echo shows it.
async fn websocket_kill_scenario(proxy: SocketAddr, origin: SocketAddr) -> Vec<String> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = within(
        "ws handshake",
        waylay_testkit::ws_through_proxy(proxy, origin, "/ws", &[]),
    )
    .await
    .expect("handshake");
    let mut got = Vec::new();
    for text in ["hello", "kill-me", "after"] {
        if ws.send(Message::text(text)).await.is_err() {
            got.push("end".to_owned());
            break;
        }
        match waylay_testkit::ws_next(&mut ws).await {
            Some(Ok(Message::Text(t))) => got.push(t.to_string()),
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                got.push("end".to_owned());
                break;
            }
            Some(Ok(other)) => got.push(format!("{other:?}")),
        }
    }
    got
}

/// A script killing a WebSocket flow at a message. waylay does what `kill()` promises: the
/// message is not forwarded and both connections close. mitmproxy 12.3.1 cannot kill a flow
/// in transit (its issue 4711): it forwards the message and goes on relaying. This test
/// holds both behaviours, so that a mitmproxy that fixes it shows here.
#[actix_rt::test]
async fn a_websocket_killed_by_a_script_ends_where_mitmproxy_relays_on() {
    let Some((proxy, mitm, _d, _c)) = both("websocket_kill", WEBSOCKET_KILL).await else {
        return;
    };
    let texts = |o: &waylay_testkit::WsOrigin| -> Vec<String> {
        o.record
            .received()
            .iter()
            .filter_map(|m| m.to_text().ok().map(str::to_owned))
            .filter(|t| !t.is_empty())
            .collect()
    };
    let ours_origin = waylay_testkit::WsOrigin::start().await;
    let ours = websocket_kill_scenario(proxy.addr(), ours_origin.addr).await;
    assert_eq!(ours, ["hello", "end"]);
    assert_eq!(texts(&ours_origin), ["hello"], "the killed message stays");
    let their_origin = waylay_testkit::WsOrigin::start().await;
    let theirs = websocket_kill_scenario(mitm.addr, their_origin.addr).await;
    assert_eq!(
        theirs,
        ["hello", "kill-me", "after"],
        "mitmdump said:\n{}",
        mitm.output()
    );
    assert_eq!(texts(&their_origin), ["hello", "kill-me", "after"]);
    proxy.shutdown().await;
}

/// Idioms common in mitmproxy scripts (reads recorded into headers, `safe` turns an exception
/// into text so a missing name shows up as a difference, not a crash). Left out on purpose:
/// `flow.request.authority` of a regular-mode HTTP/1 request, which mitmproxy empties before
/// the first hook (to send origin-form upstream) and waylay keeps as the client sent it
/// (README, "Where waylay differs").
const IDIOMS: &str = r#"
import json
from mitmproxy import ctx, http

def safe(f):
    try:
        return repr(f())
    except Exception as e:
        return "EXC " + type(e).__name__ + ": " + str(e)

def record(headers, prefix, out):
    for k, v in sorted(out.items()):
        headers[prefix + k.replace("_", "-")] = v.replace("\n", " ")[:200]

def request(flow: http.HTTPFlow) -> None:
    r = flow.request
    out = {}
    out["pretty_url"] = safe(lambda: r.pretty_url)
    out["host_header"] = safe(lambda: r.host_header)
    out["port"] = safe(lambda: r.port == flow.server_conn.address[1] if flow.server_conn.address else r.port > 0)
    out["http_version"] = safe(lambda: r.http_version)
    out["ua"] = safe(lambda: r.headers.get("USER-agent"))
    out["keys"] = safe(lambda: list(r.headers.keys()))
    out["items"] = safe(lambda: list(r.headers.items()))
    out["items_multi"] = safe(lambda: list(r.headers.items(multi=True)))
    out["fields"] = safe(lambda: r.headers.fields)
    out["get_all"] = safe(lambda: r.headers.get_all("cookie"))
    out["in"] = safe(lambda: ("HOST" in r.headers, "nope" in r.headers))
    out["len"] = safe(lambda: len(r.headers))
    out["query_get"] = safe(lambda: r.query.get("a"))
    out["query_keys"] = safe(lambda: list(r.query.keys()))
    out["query_multi"] = safe(lambda: list(r.query.items(multi=True)))
    out["path_components"] = safe(lambda: r.path_components)
    out["cookies"] = safe(lambda: dict(r.cookies))
    out["form"] = safe(lambda: list(r.urlencoded_form.items(multi=True)))
    out["multipart"] = safe(lambda: list(r.multipart_form.items(multi=True)))
    out["id_len"] = safe(lambda: len(flow.id))
    out["ts"] = safe(lambda: (type(r.timestamp_start).__name__, type(r.timestamp_end).__name__))
    out["is_replay"] = safe(lambda: flow.is_replay)
    out["client"] = safe(lambda: flow.client_conn.peername[0])
    out["content_type"] = safe(lambda: r.headers.get("content-type", "none"))
    out["get_text"] = safe(lambda: r.get_text())
    out["get_content"] = safe(lambda: r.get_content())
    out["raw"] = safe(lambda: r.raw_content)
    out["marked"] = safe(lambda: flow.marked)
    out["method_eq"] = safe(lambda: r.method == "GET")
    r.anticache()
    r.anticomp()
    r.headers.insert(0, "X-First", "1")
    r.headers.set_all("X-Set", ["p", "q"])
    r.headers.add("X-Added", "a")
    r.query.set_all("z", ["1", "2"])
    r.query.add("y", "3")
    if "b" in r.query:
        del r.query["b"]
    r.cookies["added"] = "c"
    if r.path.startswith("/put"):
        r.method = "PUT"
        r.content = r.content.replace(b"caf", b"CAF")
    if r.path.startswith("/move"):
        r.url = r.url.replace("/move", "/moved")
    record(r.headers, "x-i-", out)

def response(flow: http.HTTPFlow) -> None:
    resp = flow.response
    out = {}
    out["http_version"] = safe(lambda: resp.http_version)
    out["reason"] = safe(lambda: resp.reason)
    out["cookies"] = safe(lambda: [(k, v[0]) for k, v in resp.cookies.items(multi=True)])
    out["set_cookie"] = safe(lambda: resp.headers.get_all("set-cookie"))
    out["get_text"] = safe(lambda: resp.get_text())
    out["json_n"] = safe(lambda: resp.json()["n"])
    out["ts"] = safe(lambda: (type(resp.timestamp_start).__name__, type(resp.timestamp_end).__name__))
    out["req_method"] = safe(lambda: flow.request.method)
    out["req_path"] = safe(lambda: flow.request.path)
    out["pop"] = safe(lambda: resp.headers.pop("x-origin-path", None))
    out["pop_missing"] = safe(lambda: resp.headers.pop("x-missing", "dflt"))
    out["copy"] = safe(lambda: sorted(dict(resp.headers.copy()).keys()))
    resp.headers["Set-Cookie"] = "new=1"
    resp.headers.add("X-Two", "1")
    resp.headers.add("X-Two", "2")
    resp.set_text(resp.get_text().replace("path", "PATH"))
    resp.content = resp.content.replace(b"1", b"one")
    if flow.request.path.startswith("/redirect"):
        resp.status_code = 302
        resp.headers["Location"] = "http://example.invalid/"
    if flow.request.path.startswith("/replace"):
        flow.response = http.Response.make(
            200, json.dumps({"made": True}), http.Headers(content_type="application/json")
        )
    record(flow.response.headers, "x-o-", out)
"#;

#[actix_rt::test]
async fn common_script_idioms_match_mitmproxy() {
    let get = |path| Req {
        method: "GET",
        path,
        extra: "User-Agent: curl/8\r\nCookie: a=1\r\nAccept-Encoding: gzip\r\nIf-None-Match: x\r\n",
        body: "",
    };
    compare(
        "idioms",
        IDIOMS,
        &[],
        &[
            get("/a/b?a=1&a=2&b=3"),
            get("/redirect"),
            get("/replace"),
            get("/move/x?q=1"),
            Req {
                method: "POST",
                path: "/put/x",
                extra: "Content-Type: text/plain; charset=latin-1\r\n",
                body: "caf\u{e9}",
            },
            Req {
                method: "POST",
                path: "/form",
                extra: "Content-Type: application/x-www-form-urlencoded\r\n",
                body: "k=v&k=w&e=",
            },
        ],
    )
    .await;
}

const HOOK_ORDER: &str = r#"
from mitmproxy import http

def note(flow, name):
    flow.metadata.setdefault("hooks", []).append(name)

def requestheaders(flow):
    note(flow, "requestheaders")
    if flow.request.path.startswith("/early"):
        flow.response = http.Response.make(200, b"early")

def request(flow):
    note(flow, "request:" + repr(flow.request.content))
    if flow.request.path.startswith("/inrequest"):
        flow.response = http.Response.make(200, b"made in request")

def responseheaders(flow):
    note(flow, "responseheaders")

def response(flow):
    note(flow, "response")
    flow.response.headers["x-hooks"] = ",".join(flow.metadata["hooks"])
"#;

#[actix_rt::test]
async fn hooks_fire_in_mitmproxy_order_for_answered_flows() {
    let req = |method, path, body| Req {
        method,
        path,
        extra: "",
        body,
    };
    compare(
        "hook_order",
        HOOK_ORDER,
        &[],
        &[
            req("GET", "/plain", ""),
            req("GET", "/early", ""),
            req("POST", "/early/body", "abc"),
            req("GET", "/inrequest", ""),
            req("POST", "/inrequest/body", "xyz"),
        ],
    )
    .await;
}

const EDITS: &str = r#"
from mitmproxy import http

def safe(f):
    try:
        return repr(f())
    except Exception as e:
        return "EXC " + type(e).__name__ + ": " + str(e)

def request(flow):
    r = flow.request
    if r.path.startswith("/hostedit"):
        r.headers["Host"] = "renamed.example"
    if r.path.startswith("/sethost"):
        # Setting host (or port) points a Host header at it again.
        r.headers["Host"] = "stale.example"
        r.host = r.host
    if r.path.startswith("/setport"):
        r.headers["Host"] = "stale.example"
        r.port = r.port
    if r.path.startswith("/seturl"):
        r.headers["Host"] = "stale.example"
        r.url = r.url.replace("/seturl", "/url-set")
    flow.comment = "c"
    flow.marked = ":x:"

def response(flow):
    resp = flow.response
    p = flow.request.path
    h = {}
    h["x-r-comment"] = safe(lambda: (flow.comment, flow.marked))
    h["x-r-reason"] = safe(lambda: resp.reason)
    h["x-r-stream"] = safe(lambda: resp.stream)
    if p.startswith("/status"):
        resp.status_code = 404
    if p.startswith("/enc"):
        resp.encode("gzip")
        h["x-r-enc"] = safe(lambda: (resp.headers.get("content-encoding"), len(resp.raw_content) > 0, resp.text[:8]))
        resp.decode()
        h["x-r-dec"] = safe(lambda: (resp.headers.get("content-encoding"), resp.raw_content[:8]))
    if p.startswith("/make302"):
        flow.response = http.Response.make(302, b"", {"Location": "/elsewhere"})
    for k, v in h.items():
        flow.response.headers[k] = v[:200]
"#;

/// Status, encoding and `Host` edits (set directly, or following `host`, `port` and `url`),
/// and a redirect made in `response`.
#[actix_rt::test]
async fn status_encoding_and_host_edits_match_mitmproxy() {
    compare(
        "edits",
        EDITS,
        &[],
        &[
            get("/hostedit"),
            get("/sethost"),
            get("/setport"),
            get("/seturl"),
            get("/status"),
            get("/enc"),
            get("/make302"),
        ],
    )
    .await;
}

const FORM_EDITS: &str = r#"
from mitmproxy import http

def safe(f):
    try:
        return repr(f())
    except Exception as e:
        return "EXC " + type(e).__name__

def request(flow):
    r = flow.request
    p = r.path
    if p.startswith("/query"):
        r.query["q"] = "caf\u00e9 & more"
        r.query["empty"] = ""
        r.path_components = ["a b", "c/d", "\u00e9"] + list(r.path_components)
    if p.startswith("/form"):
        r.urlencoded_form = [("a", "1 2"), ("b", "\u00e9"), ("a", "3")]
    if p.startswith("/settext"):
        r.headers["content-type"] = "text/plain; charset=latin-1"
        r.text = "caf\u00e9"
    if p.startswith("/multipart"):
        h = {}
        h["x-mp"] = safe(lambda: list(r.multipart_form.items(multi=True)))
        r.headers["x-mp"] = h["x-mp"][:200]

def response(flow):
    resp = flow.response
    p = flow.request.path
    if p.startswith("/query"):
        resp.cookies["sid"] = ("v 1", {"Path": "/", "HttpOnly": None})
    if p.startswith("/badjson"):
        resp.text = "not json"
        resp.headers["x-json"] = safe(lambda: resp.json())
    if p.startswith("/charset"):
        resp.headers["content-type"] = "text/html; charset=iso-8859-1"
        resp.content = b"caf\xe9"
        resp.headers["x-text"] = safe(lambda: resp.text)
"#;

/// Query, path, form, text and cookie edits, encodings and charsets.
#[actix_rt::test]
async fn form_query_and_encoding_edits_match_mitmproxy() {
    compare(
        "form_edits",
        FORM_EDITS,
        &[],
        &[
            get("/query/x?z=1"),
            Req {
                method: "POST",
                path: "/form",
                extra: "Content-Type: application/x-www-form-urlencoded\r\n",
                body: "old=1",
            },
            Req {
                method: "POST",
                path: "/settext",
                extra: "Content-Type: text/plain\r\n",
                body: "x",
            },
            Req {
                method: "POST",
                path: "/multipart",
                extra: "Content-Type: multipart/form-data; boundary=XX\r\n",
                body: "--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nval\r\n--XX\r\nContent-Disposition: form-data; name=\"g\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n",
            },
            get("/badjson"),
            get("/charset"),
        ],
    )
    .await;
}

const KILLS: &str = r#"
def requestheaders(flow):
    if flow.request.path.startswith("/k-reqh"):
        flow.kill()

def request(flow):
    if flow.request.path.startswith("/k-req"):
        flow.kill()

def responseheaders(flow):
    if flow.request.path.startswith("/k-resph"):
        flow.kill()

def response(flow):
    if flow.request.path.startswith("/k-resp/"):
        flow.kill()
    flow.response.headers["x-error"] = repr(flow.error)
"#;

/// `flow.kill()` in each HTTP hook: the client gets no answer, the proxy goes on.
#[actix_rt::test]
async fn kills_in_each_hook_match_mitmproxy() {
    compare(
        "kills",
        KILLS,
        &[],
        &[
            get("/k-reqh"),
            get("/k-req"),
            get("/k-resph"),
            get("/k-resp/"),
            get("/alive"),
        ],
    )
    .await;
}

const ERRORS: &str = r#"
from mitmproxy import ctx

def load(loader):
    loader.add_option("hooklog", str, "", "Where to note the hooks.")
    loader.add_option("deadport", int, 0, "A port nobody listens on.")

def note(flow, name):
    with open(ctx.options.hooklog, "a") as f:
        f.write(flow.request.path + " " + name + "\n")

def requestheaders(flow):
    note(flow, "requestheaders")

def request(flow):
    note(flow, "request")
    if flow.request.path.startswith("/dead"):
        flow.request.port = ctx.options.deadport

def responseheaders(flow):
    note(flow, "responseheaders")

def response(flow):
    note(flow, "response " + str(flow.response.status_code))

def error(flow):
    note(flow, "error " + str(flow.error is not None) + " " + str(flow.response is None))
"#;

/// A server that cannot be reached: the client gets a 502 from both, and the script sees
/// the same hooks (`error`, no `response`) in the same order.
#[actix_rt::test]
async fn an_unreachable_server_fires_the_hooks_mitmproxy_fires() {
    let Some(bin) = peers::mitmdump() else {
        return;
    };
    let dir = TempDir::new("errors");
    let script = write_script(&dir, "errors.py", ERRORS);
    let (origin, _log) = scripted_origin(answer).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let hooklog = dir.path().join("hooks.log");
    let sets = [
        format!("hooklog={}", hooklog.display()),
        format!("deadport={dead}"),
    ];
    let reqs = ["/dead", "/alive"];
    let run = |proxy: SocketAddr| async move {
        let mut statuses = Vec::new();
        for path in reqs {
            let req = format!(
                "GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
            );
            let out = within("answer", raw_request(proxy, req.as_bytes())).await;
            statuses.push(out.lines().next().unwrap_or("").to_owned());
        }
        statuses
    };
    let read_log = || {
        let text = std::fs::read_to_string(&hooklog).unwrap_or_default();
        let _ = std::fs::remove_file(&hooklog);
        text
    };

    let proxy = script_proxy(&script, &sets).await;
    let ours = run(proxy.addr()).await;
    proxy.shutdown().await;
    let our_hooks = read_log();

    let confdir = TempDir::new("mitm-conf");
    let set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &set_refs);
    let theirs = run(mitm.addr).await;
    let their_hooks = read_log();

    let status = |s: &Vec<String>| -> Vec<String> {
        s.iter()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(status(&ours), status(&theirs), "{}", mitm.output());
    assert!(
        our_hooks.contains("/dead error True True") && our_hooks.contains("/alive response 200"),
        "{our_hooks}"
    );
    assert_eq!(our_hooks, their_hooks, "{}", mitm.output());
}

const HTTPS: &str = r#"
from mitmproxy import http

def safe(f):
    try:
        return repr(f())
    except Exception as e:
        return "EXC " + type(e).__name__

def request(flow):
    r = flow.request
    out = {
        "url": safe(lambda: r.url),
        "pretty_url": safe(lambda: r.pretty_url),
        "scheme": safe(lambda: (r.scheme, r.port == int(r.host_header.rsplit(":", 1)[1]))),
        "host": safe(lambda: (r.host, r.pretty_host)),
        "authority": safe(lambda: r.authority),
        "version": safe(lambda: r.http_version),
        "client_tls": safe(lambda: (flow.client_conn.tls_established, flow.client_conn.sni, flow.client_conn.alpn)),
        "client_tls_version": safe(lambda: flow.client_conn.tls_version),
        "server_tls": safe(lambda: (flow.server_conn.tls_established, flow.server_conn.sni)),
    }
    flow.metadata["seen"] = out

def response(flow):
    for k, v in flow.metadata["seen"].items():
        flow.response.headers["x-" + k.replace("_", "-")] = v[:200]
    flow.response.headers["x-server-tls-after"] = safe(lambda: (flow.server_conn.tls_established, flow.server_conn.sni, flow.server_conn.alpn, flow.server_conn.tls_version))
"#;

/// An intercepted HTTPS request (CONNECT, then TLS to each proxy's own CA): what a script
/// reads of the URL and of both TLS connections, and what reaches the origin and the client.
#[actix_rt::test]
async fn an_intercepted_https_request_matches_mitmproxy() {
    let Some(bin) = peers::mitmdump() else {
        return;
    };
    let dir = TempDir::new("https");
    let script = write_script(&dir, "https.py", HTTPS);
    let (origin, origin_ca) = waylay_testkit::https_origin(&dir).await;
    let target = format!("localhost:{}", origin.port());
    let trust = format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display());
    let run = |proxy: SocketAddr, ca: String| {
        let target = target.clone();
        async move {
            let mut tls = within(
                "tunnel",
                waylay_testkit::connect_tls(proxy, &target, "localhost", &ca, &[b"http/1.1"]),
            )
            .await
            .expect("TLS through the proxy");
            let req = format!("GET /x?a=1 HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
            tokio::io::AsyncWriteExt::write_all(&mut tls, req.as_bytes())
                .await
                .expect("write");
            let out = waylay_testkit::read_to_close(&mut tls).await;
            String::from_utf8_lossy(&out).replace(&origin.port().to_string(), "PORT")
        }
    };

    let proxy = script_proxy(&script, &[&trust]).await;
    let ours = run(proxy.addr(), proxy.ca_pem.clone()).await;
    proxy.shutdown().await;

    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &[trust.as_str()]);
    let theirs = run(mitm.addr, mitm_ca(&confdir)).await;
    assert!(ours.starts_with("HTTP/1.1 200"), "{ours}");
    assert_eq!(
        normalise_response(&ours),
        normalise_response(&theirs),
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
}

const STREAMING: &str = r#"
def requestheaders(flow):
    if flow.request.path.startswith("/r-func"):
        flow.request.stream = lambda data: data.upper()

def responseheaders(flow):
    p = flow.request.path
    if p.startswith("/s-plain"):
        flow.response.stream = True
    if p.startswith("/s-func"):
        flow.response.stream = lambda data: data.replace(b"path", b"PATH")
    flow.response.headers["x-callable"] = str(callable(flow.response.stream))

def response(flow):
    # Too late for a streamed response's head: both send it as it was.
    flow.response.headers["x-late"] = repr(flow.response.stream is not False)
"#;

/// `flow.response.stream` set in `responseheaders`: `True` passes the body on as it comes,
/// a function rewrites each chunk; `response` fires after, too late for the head. A function
/// as `flow.request.stream` rewrites the request body on its way to the server.
#[actix_rt::test]
async fn streamed_responses_match_mitmproxy() {
    compare(
        "streaming",
        STREAMING,
        &[],
        &[
            get("/s-plain"),
            get("/s-func"),
            get("/chunked/s-func"),
            get("/held"),
            Req {
                method: "POST",
                path: "/r-func",
                extra: "Content-Type: text/plain\r\n",
                body: "hello streamed",
            },
        ],
    )
    .await;
}

const ORDER: &str = r#"
from mitmproxy import http

def request(flow):
    r = flow.request
    if r.path.startswith("/order"):
        del r.headers["x-b"]
        r.headers["x-a"] = "changed"
        r.headers.add("x-new", "1")
        r.headers["x-c"] = "c2"
        flow.metadata["keys"] = ",".join(r.headers.keys())
    if r.path.startswith("/replace-req"):
        new = http.Request.make("POST", r.url.replace("/replace-req", "/made"), b"made body", {"X-Made": "1", "Host": "x"})
        flow.request = new
        flow.metadata["keys"] = ",".join(flow.request.headers.keys())

def response(flow):
    flow.response.headers["x-keys"] = flow.metadata.get("keys", "")
    flow.response.headers["x-method"] = flow.request.method
"#;

/// Header order after edits, and a request replaced by `Request.make` (with a `Host`:
/// without one mitmproxy sends none, which HTTP/1.1 forbids; waylay adds the URL's).
#[actix_rt::test]
async fn header_order_and_a_replaced_request_match_mitmproxy() {
    compare(
        "order",
        ORDER,
        &[],
        &[
            Req {
                method: "GET",
                path: "/order",
                extra: "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n",
                body: "",
            },
            Req {
                method: "GET",
                path: "/replace-req",
                extra: "X-Old: 1\r\n",
                body: "",
            },
        ],
    )
    .await;
}

const H2: &str = r#"
def safe(f):
    try:
        return repr(f())
    except Exception as e:
        return "EXC " + type(e).__name__

def request(flow):
    r = flow.request
    flow.metadata["seen"] = {
        "version": safe(lambda: (r.http_version, r.is_http2)),
        "authority": safe(lambda: r.authority.split(":")[0]),
        "host-header": safe(lambda: (r.host_header or "").split(":")[0]),
        "pretty-url": safe(lambda: r.pretty_url.split("//")[1].split(":")[0]),
        "keys": safe(lambda: list(r.headers.keys())),
        "alpn": safe(lambda: flow.client_conn.alpn),
    }
    r.headers["x-via-h2"] = "1"

def response(flow):
    for k, v in flow.metadata["seen"].items():
        flow.response.headers["x-" + k] = v[:200]
    flow.response.headers["x-resp-version"] = flow.response.http_version
"#;

/// An intercepted HTTP/2 client (ALPN h2 inside the tunnel) to an HTTP/2 origin: what a
/// script reads of the request (version, authority, Host) and what the client gets back.
#[actix_rt::test]
async fn an_http2_client_matches_mitmproxy() {
    use http_body_util::{BodyExt, Full};
    let Some(bin) = peers::mitmdump() else {
        return;
    };
    let dir = TempDir::new("h2");
    let script = write_script(&dir, "h2.py", H2);
    let (origin, origin_ca) = waylay_testkit::https_origin_h2(&dir).await;
    let target = format!("localhost:{}", origin.port());
    let trust = format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display());
    let run = |proxy: SocketAddr, ca: String| {
        let target = target.clone();
        async move {
            let tls = within(
                "tunnel",
                waylay_testkit::connect_tls(
                    proxy,
                    &target,
                    "localhost",
                    &ca,
                    &[b"h2", b"http/1.1"],
                ),
            )
            .await
            .expect("TLS through the proxy");
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake::<_, _, Full<bytes::Bytes>>(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(tls),
                )
                .await
                .expect("h2 handshake");
            actix::spawn(async move {
                let _ = conn.await;
            });
            let req = hyper::Request::get(format!("https://{target}/h2?q=1"))
                .body(Full::new(bytes::Bytes::new()))
                .expect("request");
            let resp = within("answer", sender.send_request(req))
                .await
                .expect("response");
            let mut lines: Vec<String> = resp
                .headers()
                .iter()
                .filter(|(n, _)| n.as_str() != "date")
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            lines.sort();
            let status = resp.status();
            let body = within("body", resp.into_body().collect())
                .await
                .expect("body")
                .to_bytes();
            format!(
                "{status}\n{}\n\n{}",
                lines.join("\n"),
                String::from_utf8_lossy(&body)
            )
            .replace(&origin.port().to_string(), "PORT")
        }
    };

    let proxy = script_proxy(&script, &[&trust]).await;
    let ours = run(proxy.addr(), proxy.ca_pem.clone()).await;
    proxy.shutdown().await;

    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &[trust.as_str()]);
    let theirs = run(mitm.addr, mitm_ca(&confdir)).await;
    assert!(ours.starts_with("200"), "{ours}");
    assert_eq!(
        ours,
        theirs,
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
}

const BYTES_HEADERS: &str = r#"
def safe(f):
    try:
        return repr(f())
    except Exception as e:
        return "EXC " + type(e).__name__

def request(flow):
    h = flow.request.headers
    seen = {
        "latin": safe(lambda: h.get("x-latin")),
        # Names compared lowercased: waylay's are (as hyper parsed them, README).
        "latin-fields": safe(lambda: [v for k, v in h.fields if k.lower() == b"x-latin"]),
        "bytes-key": safe(lambda: h.get(b"x-latin")),
    }
    seen["set-bytes"] = safe(lambda: h.__setitem__(b"x-set-bytes", b"caf\xc3\xa9"))
    seen["set-str"] = safe(lambda: h.__setitem__("x-set-str", "caf\u00e9"))
    seen["add-bytes"] = safe(lambda: h.add(b"x-add-bytes", b"v"))
    seen["get-bytes-after"] = safe(lambda: h.get_all(b"x-set-bytes"))
    flow.metadata["seen"] = seen

def response(flow):
    for k, v in flow.metadata["seen"].items():
        flow.response.headers["x-" + k] = v.encode("ascii", "backslashreplace").decode()[:200]
"#;

/// Header names and values given as bytes, and values that are not UTF-8 (read as mitmproxy
/// reads them, written as bytes and as text).
#[actix_rt::test]
async fn non_utf8_header_values_match_mitmproxy() {
    compare(
        "bytes_headers",
        BYTES_HEADERS,
        &[],
        &[Req {
            method: "GET",
            path: "/b",
            extra: "X-Latin: caf\u{e9}\r\n",
            body: "",
        }],
    )
    .await;
}

const REDIRECT: &str = r#"
from mitmproxy import ctx

def load(loader):
    loader.add_option("other", int, 0, "The other origin's port.")

def request(flow):
    r = flow.request
    if r.path.startswith("/to-other"):
        r.host = "127.0.0.1"
        r.port = ctx.options.other
    if r.path.startswith("/url-other"):
        r.url = f"http://127.0.0.1:{ctx.options.other}/via-url"

def response(flow):
    flow.response.headers["x-went"] = flow.request.pretty_url.replace(str(ctx.options.other), "OTHER")
"#;

/// A script sends requests to another server (by `host`/`port` and by `url`): what that
/// server receives and what the client gets back, as with mitmproxy.
#[actix_rt::test]
async fn redirecting_to_another_server_matches_mitmproxy() {
    let Some(bin) = peers::mitmdump() else {
        return;
    };
    let dir = TempDir::new("redirect");
    let script = write_script(&dir, "redirect.py", REDIRECT);
    let (origin, _first) = scripted_origin(answer).await;
    let (other, other_log) = scripted_origin(answer).await;
    let sets = [format!("other={}", other.port())];
    let set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let reqs = [
        Req {
            method: "GET",
            path: "/to-other/a?x=1",
            extra: "",
            body: "",
        },
        Req {
            method: "GET",
            path: "/url-other",
            extra: "",
            body: "",
        },
    ];
    let norm = |seen: Seen| -> Seen {
        seen.into_iter()
            .map(|(o, c)| {
                let f = |s: &str| s.replace(&other.to_string(), "OTHER");
                (o.iter().map(|s| f(s)).collect(), f(&c))
            })
            .collect()
    };

    let proxy = script_proxy(&script, &sets).await;
    let ours = norm(send_all(proxy.addr(), origin, &other_log, &reqs).await);
    proxy.shutdown().await;

    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &set_refs);
    let theirs = norm(send_all(mitm.addr, origin, &other_log, &reqs).await);
    assert!(
        ours[0]
            .0
            .first()
            .is_some_and(|r| r.starts_with("GET /to-other/a?x=1")),
        "the other server got it: {ours:?}"
    );
    assert_eq!(
        ours,
        theirs,
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
}

const OPTIONAL_INT: &str = r#"
from typing import Optional
from mitmproxy import ctx

def load(loader):
    loader.add_option("limit", Optional[int], None, "A limit, or none.")

def response(flow):
    flow.response.headers["x-limit"] = repr(ctx.options.limit)
    if flow.request.path.startswith("/unset"):
        ctx.options.limit = None
    if flow.request.path.startswith("/set"):
        ctx.options.limit = 42
"#;

/// An `Optional[int]` option (mitmproxy's options-configure example uses one): unset, set
/// with `--set`, and set and cleared by the script.
#[actix_rt::test]
async fn an_optional_int_option_matches_mitmproxy() {
    for sets in [&[][..], &["limit=7"][..]] {
        compare(
            "optional_int",
            OPTIONAL_INT,
            sets,
            &[get("/a"), get("/set"), get("/b"), get("/unset"), get("/c")],
        )
        .await;
    }
}

const CONCURRENT: &str = r#"
import threading, time
from mitmproxy.script import concurrent

@concurrent
def request(flow):
    time.sleep(0.05)
    flow.request.headers["x-thread"] = str(threading.current_thread() is not threading.main_thread())

@concurrent
async def response(flow):
    flow.response.headers["x-async-in-thread"] = "1"
"#;

/// mitmproxy's `@concurrent` (from `mitmproxy.script`): the hook runs in a thread of its
/// own, and its edits reach the flow.
#[actix_rt::test]
async fn a_concurrent_hook_matches_mitmproxy() {
    compare("concurrent", CONCURRENT, &[], &[get("/a"), get("/b")]).await;
}

const FLOW_IO: &str = r#"
import os
from mitmproxy import ctx, io
from mitmproxy.exceptions import FlowReadException

def load(loader):
    loader.add_option("flowdir", str, "", "Where to write the flow file.")

def response(flow):
    path = os.path.join(ctx.options.flowdir, f"flows-{os.getpid()}.mitm")
    with open(path, "ab") as f:
        io.FlowWriter(f).add(flow)
    with open(path, "rb") as f:
        flows = list(io.FlowReader(f).stream())
    last = flows[-1]
    h = flow.response.headers
    h["x-read"] = ",".join(f.request.path for f in flows)
    h["x-last"] = f"{type(last).__name__} {last.response.status_code} {last.request.method}"
    h["x-paths"] = str(len(io.read_flows_from_paths([path])))
    try:
        list(io.FlowReader(__import__("io").BytesIO(b"12:not a flow")).stream())
    except FlowReadException:
        h["x-bad"] = "FlowReadException"
"#;

/// `mitmproxy.io` in a script (mitmproxy's io-write-flow-file and io-read-saved-flows
/// examples): flows written with `FlowWriter` and read back with `FlowReader`.
#[actix_rt::test]
async fn flow_files_from_a_script_match_mitmproxy() {
    let dir = TempDir::new("flow_io_files");
    let set = format!("flowdir={}", dir.path().display());
    let seen = compare(
        "flow_io",
        FLOW_IO,
        &[set.as_str()],
        &[get("/one"), get("/two")],
    )
    .await;
    if let Some(seen) = seen {
        let second = &seen[1].1;
        for want in [
            "x-read: /one,/two",
            "x-last: httpflow 200 get",
            "x-paths: 2",
            "x-bad: flowreadexception",
        ] {
            assert!(second.contains(want), "{want}: {second}");
        }
    }
}

const BACKGROUND: &str = r#"
import asyncio
import time

done = []
tasks = set()

async def note(path):
    await asyncio.sleep(0)
    done.append(path)

def request(flow):
    # Background work started from a synchronous hook (mitmproxy's websocket-inject-message
    # example does this); the next request sees it finished.
    # Read first: in waylay the task may start before the hook returns (it runs on the
    # scripts' asyncio thread), in mitmproxy only after. An earlier request's task has
    # finished in mitmproxy by now; in waylay give its thread up to 2 s.
    for _ in range(200):
        if not tasks:
            break
        time.sleep(0.01)
    flow.request.headers["x-done-before"] = "done=" + ",".join(done)
    t = asyncio.create_task(note(flow.request.path))
    tasks.add(t)
    t.add_done_callback(tasks.discard)
"#;

/// `asyncio.create_task` in a synchronous hook starts the task (it raised "no running event
/// loop").
#[actix_rt::test]
async fn a_task_started_in_a_sync_hook_runs_as_in_mitmproxy() {
    let seen = compare(
        "background",
        BACKGROUND,
        &[],
        &[get("/a"), get("/b"), get("/c")],
    )
    .await;
    if let Some(seen) = seen {
        assert!(
            seen[2].0[0].contains("x-done-before: done=/a,/b"),
            "{:?}",
            seen[2].0
        );
    }
}

const CORE_OPTIONS: &str = r#"
from mitmproxy import ctx

# The proxy's own options (the bundled addons' are declared by the binary, not by the
# library proxy these tests run). Left out: stream_large_bodies (waylay's default is 1m,
# bounded memory; mitmproxy's None) and http3 (waylay proxies TCP).
NAMES = [
    "mode", "ssl_insecure", "body_size_limit", "anticache", "anticomp",
    "showhost", "upstream_cert", "http2", "websocket", "rawtcp", "keep_host_header",
    "block_global", "block_private", "ignore_hosts", "allow_hosts", "tcp_hosts", "server",
    "connection_strategy", "flow_detail", "store_streamed_bodies",
    "validate_inbound_headers", "normalize_outbound_headers",
    "add_upstream_certs_to_client_chain", "ssl_verify_upstream_trusted_ca",
    "upstream_auth", "proxyauth", "no_such_option",
]

def response(flow):
    for name in NAMES:
        try:
            v = repr(getattr(ctx.options, name))
        except Exception as e:
            v = "EXC " + type(e).__name__
        flow.response.headers["x-opt-" + name.replace("_", "-")] = v
    flow.response.headers["x-mode-eq"] = str(ctx.options.mode == ["regular"])
"#;

/// The proxy's own options as a script reads them (`ctx.options.mode`, ...): mitmproxy's
/// defaults and types.
#[actix_rt::test]
async fn core_options_read_by_a_script_match_mitmproxy() {
    compare(
        "core_options",
        CORE_OPTIONS,
        &["flow_detail=0"],
        &[Req {
            method: "GET",
            path: "/o",
            extra: "",
            body: "",
        }],
    )
    .await;
}

const COOKIES: &str = r#"
def request(flow):
    c = flow.request.cookies
    flow.metadata["seen"] = repr([(k, v) for k, v in c.items(multi=True)])
    if "drop" in c:
        del c["drop"]
    c["added"] = "v w"
    c.add("dup", "2")

def response(flow):
    r = flow.response
    r.headers["x-req-cookies"] = flow.metadata["seen"]
    r.headers["x-resp-cookies"] = repr([(k, v[0], sorted(v[1].keys())) for k, v in r.cookies.items(multi=True)])
    if "s" in r.cookies:
        del r.cookies["s"]
    r.cookies["new"] = ("v;al", [("Path", "/x"), ("Max-Age", "10"), ("SameSite", "a b")])
"#;

/// Request and response cookies read, added, duplicated and removed.
#[actix_rt::test]
async fn cookie_edits_match_mitmproxy() {
    compare(
        "cookies",
        COOKIES,
        &[],
        &[Req {
            method: "GET",
            path: "/c",
            extra: "Cookie: a=1; drop=x; dup=1\r\n",
            body: "",
        }],
    )
    .await;
}

const TEXT_GUESS: &str = r#"
def safe(f):
    try:
        return ascii(f())
    except Exception as e:
        return "EXC " + type(e).__name__

def request(flow):
    r = flow.request
    flow.metadata["seen"] = {
        "text": safe(lambda: r.text),
        "get-text-strict": safe(lambda: r.get_text(strict=True)),
        "get-text-loose": safe(lambda: r.get_text(strict=False)),
        "content": safe(lambda: r.content),
    }

def response(flow):
    for k, v in flow.metadata["seen"].items():
        flow.response.headers["x-" + k] = v[:200]
"#;

/// Request bodies as text: the charset from `Content-Type` (or guessed), bytes that are not
/// valid in it, strict and not.
#[actix_rt::test]
async fn body_text_decoding_matches_mitmproxy() {
    let post = |extra, body| Req {
        method: "POST",
        path: "/t",
        extra,
        body,
    };
    compare(
        "text_guess",
        TEXT_GUESS,
        &[],
        &[
            post("Content-Type: text/plain\r\n", "caf\u{e9}"),
            post(
                "Content-Type: text/plain; charset=iso-8859-1\r\n",
                "caf\u{e9}",
            ),
            post("Content-Type: application/json\r\n", "{\"a\": \"\u{e9}\"}"),
            post("", "plain ascii"),
            post(
                "Content-Type: text/html\r\n",
                "<meta charset=\"latin1\">\u{e9}",
            ),
        ],
    )
    .await;
}

const TO_HTTPS: &str = r#"
from mitmproxy import ctx

def load(loader):
    loader.add_option("tls_port", int, 0, "The HTTPS origin's port.")

def request(flow):
    r = flow.request
    r.scheme = "https"
    r.host = "localhost"
    r.port = ctx.options.tls_port

def response(flow):
    flow.response.headers["x-url"] = flow.request.url.replace(str(ctx.options.tls_port), "PORT")
    flow.response.headers["x-server-tls"] = str(flow.server_conn.tls_established)
"#;

/// A script upgrading a plain request to HTTPS (scheme, host and port), as scripts do to
/// reach a TLS-only server: the server is reached over TLS, and the client gets its answer.
#[actix_rt::test]
async fn a_request_switched_to_https_matches_mitmproxy() {
    let Some(bin) = peers::mitmdump() else {
        return;
    };
    let dir = TempDir::new("to_https");
    let script = write_script(&dir, "to_https.py", TO_HTTPS);
    let (tls_origin, origin_ca) = waylay_testkit::https_origin(&dir).await;
    let sets = [
        format!("tls_port={}", tls_origin.port()),
        format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display()),
    ];
    let set_refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    // The client asks for a loopback port nothing listens on; the script sends it on.
    let req = |proxy: SocketAddr| async move {
        let r = "GET http://127.0.0.1:1/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n";
        let out = within("answer", raw_request(proxy, r.as_bytes())).await;
        normalise_response(&out.replace(&tls_origin.port().to_string(), "PORT"))
    };
    let proxy = script_proxy(&script, &sets).await;
    let ours = req(proxy.addr()).await;
    proxy.shutdown().await;
    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &set_refs);
    let theirs = req(mitm.addr).await;
    assert!(ours.contains("x-server-tls: true"), "{ours}");
    assert_eq!(
        ours,
        theirs,
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
}

const CONNECT_HOOK: &str = r#"
from mitmproxy import http

def http_connect(flow):
    r = flow.request
    seen = f"{r.method} {r.host} {r.port} {r.authority.split(':')[0]} {r.scheme!r} {r.path!r} {r.http_version}"
    if r.port == 1:
        flow.response = http.Response.make(403, b"blocked by script", {"X-Seen": seen})
"#;

/// `http_connect` for a CONNECT request: what it reads, and a refusal it makes (the tunnel
/// is not opened and the client gets the script's answer).
#[actix_rt::test]
async fn http_connect_matches_mitmproxy() {
    let Some(bin) = peers::mitmdump() else {
        return;
    };
    let dir = TempDir::new("connect_hook");
    let script = write_script(&dir, "connect_hook.py", CONNECT_HOOK);
    // The answer, read by its Content-Length (both proxies keep the connection open).
    let connect = |proxy: SocketAddr| async move {
        let mut s = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            b"CONNECT localhost:1 HTTP/1.1\r\nHost: localhost:1\r\n\r\n",
        )
        .await
        .expect("write");
        let (head, body) = waylay_testkit::read_sized_response(&mut s).await;
        normalise_response(&format!("{head}{}", String::from_utf8_lossy(&body)))
    };
    let no_sets: [&str; 0] = [];
    let proxy = script_proxy(&script, &no_sets).await;
    let ours = connect(proxy.addr()).await;
    proxy.shutdown().await;
    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &[]);
    let theirs = connect(mitm.addr).await;
    assert!(ours.starts_with("http/1.1 403"), "{ours}");
    assert_eq!(
        ours,
        theirs,
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
}

const REPLAY: &str = r#"
import logging
from mitmproxy import ctx, http

class Again:
    def request(self, flow: http.HTTPFlow) -> None:
        flow.request.headers["x-replay-seen"] = str(flow.is_replay)
        if flow.is_replay == "request":
            return
        # A live flow is refused (a warning), as mitmproxy refuses it.
        ctx.master.commands.call("replay.client", [flow])
        again = flow.copy()
        again.request.path = "/again" + flow.request.path
        again.request.headers["x-copy"] = "yes"
        again.request.method = "POST"
        again.request.content = b"sent again"
        ctx.master.commands.call("replay.client", [again])
        a = ctx.master.addons
        flow.request.headers["x-addons"] = f"{a.get('again') is self} {self in a} {'again' in a} {a.get('view')}"

addons = [Again()]
"#;

/// What the origin received for one request through `proxy` and the replays it caused
/// (sorted: the replay runs beside the original), once `want` requests came and no more in a
/// short settle time.
async fn with_replays(
    proxy: SocketAddr,
    origin: SocketAddr,
    log: &Mutex<Vec<String>>,
    want: usize,
) -> Vec<String> {
    log.lock().expect("log").clear();
    let r = get("/one");
    let answer = within("request", raw_request(proxy, &raw(origin, &r))).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for _ in 0..200 {
        if log.lock().expect("log").len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: Vec<String> = log
        .lock()
        .expect("log")
        .iter()
        .map(|s| normalise_request(&s.replace(&origin.to_string(), "ORIGIN")))
        .collect();
    got.sort();
    got
}

/// `ctx.master.commands.call("replay.client", [flow.copy()])` from a hook sends the copy
/// again through the proxy as a new flow, a replay from its first hook (the script sees
/// `is_replay == "request"` in `request`); a live flow is refused; `ctx.master.addons` finds
/// the script's addons by name. The origin receives the same two requests from both proxies.
#[actix_rt::test]
async fn replay_client_from_a_script_matches_mitmproxy() {
    let Some(bin) = peers::mitmdump() else { return };
    let dir = TempDir::new("replay");
    let script = write_script(&dir, "replay.py", REPLAY);
    let (origin, log) = scripted_origin(answer).await;

    let proxy = script_proxy::<&str>(&script, &[]).await;
    let ours = with_replays(proxy.addr(), origin, &log, 2).await;
    proxy.shutdown().await;

    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &[]);
    let theirs = with_replays(mitm.addr, origin, &log, 2).await;
    assert_eq!(theirs.len(), 2, "mitmproxy: {theirs:#?}");
    assert_eq!(
        ours,
        theirs,
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
    assert!(ours[1].contains("x-replay-seen: request"), "{ours:#?}");
    assert!(
        ours[0].contains("x-addons: true true false none"),
        "{ours:#?}"
    );
}

/// The `probe()` of script `src` run by waylay (through the harness: the script puts its
/// result in the request's `x-probe`) and by mitmproxy's own Python, asserted equal; waylay's
/// result. `None` where mitmproxy is not installed (outside CI).
async fn probe_both(name: &str, src: &str) -> Option<String> {
    let py = peers::mitmproxy_python()?;
    let dir = TempDir::new(name);
    let script = write_script(&dir, &format!("{name}.py"), src);
    let mut h = AddonHarness::script(&script).await;
    let flow = h.request(tflow()).await;
    let ours = flow
        .request
        .headers
        .get("x-probe")
        .expect("probed")
        .to_owned();
    let out = Command::new(py)
        .arg("-c")
        .arg("import runpy, sys; print(runpy.run_path(sys.argv[1])['probe']())")
        .arg(&script)
        .output()
        .expect("mitmproxy's python runs");
    assert!(out.status.success(), "{out:?}");
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(ours, theirs, "left waylay, right mitmproxy");
    Some(ours)
}

const HELPERS: &str = r#"
from mitmproxy import connection
from mitmproxy.utils import human, strutils

def probe():
    out = [repr(connection.Address), connection.ConnectionState.OPEN.value, repr(connection.TransportProtocol)]
    for n in [0, 1, 1023, 1024, 1025, 1536, 10240, 102399, 1048576, 7516192768, 3298534883328, 1024 ** 5]:
        out.append(human.pretty_size(n))
    for text in [None, "0", "1", "10b", "1k", " 2k", "2m", "1g", "3t", "-1", "", "1K", "1.5k", "1kb", "x"]:
        try:
            out.append(human.parse_size(text))
        except ValueError as e:
            out.append(f"ValueError {e}")
    for d in [None, 0, 0.0001, 0.5, 0.999, 1, 1.5, 9.99, 10, 59.9, 60, 100, 99999]:
        out.append(human.pretty_duration(d))
    for a in [None, ("127.0.0.1", 80), ("::1", 443), ("::ffff:1.2.3.4", 5), ("example.com", 8080), ("fe80::1", 1, 0, 0)]:
        out.append(human.format_address(a))
    out.append(human.format_timestamp(0) + " " + human.format_timestamp_with_milli(1.5))
    for b in [b"", b"abc", b"\x00\x01\x02abc", b"\xff\xfe" * 3, "h\u00e9llo w\u00f6rld".encode() * 30,
              bytes(range(256)), b"a" * 99 + "\u00e9".encode() + b"\x01" * 200, "\u00e9".encode() * 50,
              "\u00e9".encode() * 10 + b"\x00" * 5, b"\x80" * 10, b"a\x0b\x0cb", b"\x7f" * 10,
              b"ab\xffcdefghij", b"a" * 100 + b"\x80" * 5] + [b"\x00" * 3 + b"a" * n for n in range(5, 10)]:
        out.append((strutils.is_mostly_bin(b), strutils.is_xml(b)))
    for b in [b"<?xml", b"  <a>", b"x<a>", b"\n<x"]:
        out.append(strutils.is_xml(b))
    return repr(out)

def request(flow):
    flow.request.headers["x-probe"] = probe()
"#;

/// `mitmproxy.utils.human` (mitmproxy's tls_passthrough example formats addresses with it,
/// and types them with `connection.Address`) and strutils' `is_mostly_bin`/`is_xml` give
/// what mitmproxy's own give, on edge cases of
/// each (sizes at unit boundaries, bad size texts, IPv6 and mapped addresses, UTF-8 cut at
/// the 100-byte mark, three controls in ten).
#[actix_rt::test]
async fn human_and_strutils_helpers_match_mitmproxy() {
    let Some(ours) = probe_both("helpers", HELPERS).await else {
        return;
    };
    assert!(ours.starts_with("['tuple[str, int]'"), "{ours}");
}

const BACKUP: &str = r#"
from mitmproxy import http

def request(flow: http.HTTPFlow) -> None:
    before = flow.modified()
    flow.backup()
    kept = flow.modified()
    flow.request.path = "/changed"
    flow.request.headers["x-gone"] = "1"
    flow.comment = "edited"
    flow.metadata["k"] = 1
    edited = flow.modified()
    flow.revert()
    after = flow.modified()
    flow.request.headers["x-states"] = f"{before} {edited} {after} {flow.comment!r} {flow.metadata}"
    flow.metadata["kept"] = kept
    flow.backup()
    flow.request.headers["x-second"] = "kept"
    flow.backup()
    flow.revert()
"#;

/// `flow.backup()`, `flow.modified()` and `flow.revert()` as mitmproxy's: the edits after a
/// backup are undone (the path, a header, the comment, metadata), a second backup keeps the
/// first. (`modified` was a property that always said False, and `revert` did nothing.)
#[actix_rt::test]
async fn backup_and_revert_match_mitmproxy() {
    let seen = compare("backup", BACKUP, &[], &[get("/orig")]).await;
    if let Some(seen) = seen {
        let origin = &seen[0].0[0];
        assert!(origin.starts_with("GET /orig "), "{origin}");
        assert!(
            origin.contains("x-states: false true false '' {}"),
            "{origin}"
        );
        assert!(!origin.contains("x-second"), "{origin}");
    }
    // Right after `backup`, nothing is modified: mitmproxy 12.3.1 says it is (its state then
    // holds the backup itself, which the backup does not).
    let dir = TempDir::new("backup-kept");
    let mut h = AddonHarness::script(write_script(&dir, "backup.py", BACKUP)).await;
    let flow = h.request(tflow()).await;
    assert_eq!(flow.metadata.get("kept"), Some(&serde_json::json!(false)));
}

const REFRESH: &str = r#"
from mitmproxy import http

def probe():
    r = http.Response.make(200, b"x", {"Date": "Wed, 21 Oct 2015 07:28:00 GMT",
                                       "Expires": "Wed, 21 Oct 2015 08:28:00 GMT",
                                       "Last-Modified": "bad date", "ETag": "1"})
    for c in ["a=b; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Path=/",
              "c=d;path=/;expires=Thu, 31 Dec 2037 23:59:59 GMT+00:00:00;HttpOnly",
              "e=f;Max-Age=10", "g=h; expires=never; Secure", "novalue", "i="]:
        r.headers.add("Set-Cookie", c)
    r.timestamp_start = 1445412480.0
    r.refresh(1445412480.0 + 3600.5)
    return repr([(k.lower(), v) for k, v in r.headers.fields])

def request(flow):
    flow.request.headers["x-probe"] = probe()
"#;

/// `Response.refresh(now)` (a no-op before) moves the dates and cookie expiries of a
/// recorded response as mitmproxy's does (and as `server_replay_refresh` does).
#[actix_rt::test]
async fn response_refresh_matches_mitmproxy() {
    let Some(ours) = probe_both("refresh", REFRESH).await else {
        return;
    };
    assert!(ours.contains("Wed, 21 Oct 2015 08:28:00 GMT"), "{ours}");
}

const SERVER_SEEN: &str = r#"
def request(flow):
    s = flow.server_conn
    flow.request.headers["x-server"] = f"{s.address} {s.timestamp_start is not None}"
"#;

/// A regular-mode client's second request on its connection shows `request` a server
/// connection not yet chosen (mitmproxy picks it after the hook), not the connection the
/// first one went on; waylay showed the pooled one.
#[actix_rt::test]
async fn a_keep_alive_request_sees_the_server_mitmproxy_shows() {
    let Some(bin) = peers::mitmdump() else { return };
    let dir = TempDir::new("keepalive-server");
    let script = write_script(&dir, "server_seen.py", SERVER_SEEN);
    let (origin, log) = scripted_origin(answer).await;
    let two = format!(
        "GET http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\n\r\n\
         GET http://{origin}/b HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    );
    let seen = |log: &Mutex<Vec<String>>| -> Vec<String> {
        let mut v: Vec<String> = log
            .lock()
            .expect("log")
            .drain(..)
            .map(|s| normalise_request(&s.replace(&origin.to_string(), "ORIGIN")))
            .collect();
        v.sort();
        v
    };
    let proxy = script_proxy::<&str>(&script, &[]).await;
    within("two requests", raw_request(proxy.addr(), two.as_bytes())).await;
    let ours = seen(&log);
    proxy.shutdown().await;
    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &[]);
    within("two requests", raw_request(mitm.addr, two.as_bytes())).await;
    let theirs = seen(&log);
    assert_eq!(theirs.len(), 2, "{theirs:#?}");
    assert_eq!(ours, theirs, "left waylay, right mitmproxy");
}

const UPSTREAMS: &str = r#"
from mitmproxy import ctx, http
from mitmproxy.connection import Server
from mitmproxy.net.server_spec import ServerSpec

def load(loader):
    loader.add_option("second_proxy", int, 0, "Port of the second upstream proxy.")

def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["x-via-before"] = repr(flow.server_conn.via)
    if flow.request.path.startswith("/second"):
        address = ("127.0.0.1", ctx.options.second_proxy)
        if flow.server_conn.timestamp_start is not None:
            flow.server_conn = Server(address=flow.server_conn.address)
        flow.server_conn.via = ServerSpec(("http", address))
    flow.request.headers["x-via-after"] = repr(flow.server_conn.via)
"#;

/// mitmproxy's change_upstream_proxy idiom: in upstream mode a script reads
/// `flow.server_conn.via` (the mode's upstream) and sends some requests through another
/// upstream proxy by setting it. Each upstream receives the same requests from waylay as
/// from mitmproxy.
#[actix_rt::test]
async fn switching_upstream_proxies_matches_mitmproxy() {
    let Some(bin) = peers::mitmdump() else { return };
    let dir = TempDir::new("upstreams");
    let script = write_script(&dir, "upstreams.py", UPSTREAMS);
    let (first, first_log) = scripted_origin(answer).await;
    let (second, second_log) = scripted_origin(answer).await;
    // Never contacted: the upstream proxies answer for it.
    let target: SocketAddr = ([127, 0, 0, 1], 9).into();
    let sets = [
        format!("mode=upstream:http://{first}"),
        format!("second_proxy={}", second.port()),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let run = |proxy: SocketAddr| async move {
        for path in ["/first", "/second", "/first/again"] {
            let r = Req {
                method: "GET",
                path,
                extra: "",
                body: "",
            };
            let a = within("through the proxy", raw_request(proxy, &raw(target, &r))).await;
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        }
    };
    let take = |log: &Mutex<Vec<String>>| -> Vec<String> {
        log.lock()
            .expect("log")
            .drain(..)
            .map(|s| normalise_request(&s.replace(&target.to_string(), "TARGET")))
            .collect()
    };
    let proxy = script_proxy(&script, &sets).await;
    run(proxy.addr()).await;
    let ours = (take(&first_log), take(&second_log));
    proxy.shutdown().await;
    let confdir = TempDir::new("mitm-conf");
    let mitm = Mitmdump::start(&bin, &script, confdir.path(), &sets);
    run(mitm.addr).await;
    let theirs = (take(&first_log), take(&second_log));
    assert_eq!((theirs.0.len(), theirs.1.len()), (2, 1), "{theirs:#?}");
    assert_eq!(
        ours,
        theirs,
        "left waylay, right mitmproxy; mitmdump said:\n{}",
        mitm.output()
    );
}
