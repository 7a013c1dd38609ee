//! Flow files end to end: `-w` through the real proxy (a 100 MiB download included), `-r`
//! through the binary (filters, HAR, damaged files), and server replay with the origin down.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waylay::addons::{Save, ServerReplay};
use waylay::client_replay;
use waylay::flow::{Client, Request, Response, Server};
use waylay::flowfile::{FlowReader, FlowWriter};
use waylay::{Flow, HttpFlow, Proxy};
use waylay_testkit::{
    TempDir, TestProxy, http_origin, https_origin, proxy_get, scripted_origin, within,
};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/mitmproxy-12.3.1.flows"
);
const FIXTURE_HAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/mitmproxy-12.3.1.har"
);

fn read(path: &std::path::Path) -> Vec<Flow> {
    FlowReader::new(std::fs::File::open(path).expect("exists"))
        .collect::<Result<_, _>>()
        .expect("reads")
}

fn http(f: &Flow) -> &HttpFlow {
    match f {
        Flow::Http(h) => h,
        Flow::Tcp(_) => panic!("expected an HTTP flow"),
    }
}

#[actix_rt::test]
async fn w_records_flows_through_the_real_proxy() {
    let dir = TempDir::new("e2e-w");
    let path = dir.path().join("out.flows");
    let origin = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("save_stream_file={}", path.display()))
            .addon(Save::new()),
    )
    .await;
    let a = within(
        "first",
        proxy_get(proxy.addr(), &format!("http://{origin}/hello")),
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let b = within(
        "second",
        proxy_get(proxy.addr(), &format!("http://{origin}/status/404")),
    )
    .await;
    assert!(b.starts_with("HTTP/1.1 404"), "{b}");
    // A server that is down gives an error flow.
    let dead = dead_addr().await;
    let c = within("dead", proxy_get(proxy.addr(), &format!("http://{dead}/x"))).await;
    assert!(c.starts_with("HTTP/1.1 502"), "{c}");
    within("shutdown", proxy.shutdown()).await;

    let flows = read(&path);
    assert_eq!(flows.len(), 3);
    let f = http(&flows[0]);
    assert_eq!(f.request.url(), format!("http://{origin}/hello"));
    let r = f.response.as_ref().expect("response");
    assert_eq!(r.status_code, 200);
    assert!(r.text().expect("text").starts_with("origin GET /hello"));
    assert_eq!(r.headers.get("x-origin"), Some("1"));
    let s = f.server.as_deref().expect("server");
    assert_eq!(s.peername, Some(origin));
    assert!(s.timestamp_tcp_setup.is_some());
    assert!(f.client.peername.ip().is_loopback());
    assert!(!f.live);
    assert_eq!(
        http(&flows[1]).response.as_ref().expect("404").status_code,
        404
    );
    let e = http(&flows[2]);
    assert!(e.error.is_some(), "the dead server is an error flow");
}

/// An address nothing listens on (bound, then closed).
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// An origin answering every request with `len` bytes, written in 64 KiB chunks (never held
/// in memory whole), after reading the request's body (`Content-Length` framed).
async fn streaming_origin(len: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    actix::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            actix::spawn(async move {
                let mut head = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                let end = loop {
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                };
                let declared = String::from_utf8_lossy(&head[..end])
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .unwrap_or(0);
                let mut body = head.len() - end;
                while body < declared {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body += n,
                    }
                }
                let hdr = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n"
                );
                if s.write_all(hdr.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0x5au8; 64 * 1024];
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    addr
}

/// The process's resident set and its peak, in KiB (Linux).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[actix_rt::test]
async fn w_during_a_100_mib_download_keeps_memory_bounded() {
    const LEN: usize = 100 << 20;
    let dir = TempDir::new("e2e-big");
    let path = dir.path().join("big.flows");
    let origin = streaming_origin(LEN).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("save_stream_file={}", path.display()))
            .addon(Save::new()),
    )
    .await;
    let (before, _) = rss_kib();
    let got = within("the download", async {
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let req = format!(
            "GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    })
    .await;
    assert!(got > LEN, "the whole body came through ({got} bytes)");
    within("shutdown", proxy.shutdown()).await;
    let (_, peak) = rss_kib();
    // A sanity bound only (speed and memory are measured in benches): the 100 MiB body must
    // never be held whole by the proxy, the writer or the flow file.
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB during a 100 MiB download"
    );
    let flows = read(&path);
    assert_eq!(flows.len(), 1);
    let r = http(&flows[0]).response.as_ref().expect("response");
    assert_eq!(r.status_code, 200);
    assert_eq!(r.raw_content, None, "a streamed body is not stored");
    assert!(std::fs::metadata(&path).expect("file").len() < 64 * 1024);
}

fn waylay(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("the waylay binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn r_plays_a_file_and_exits() {
    let out = waylay(&["-n", "-r", FIXTURE]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("POST http://example.com:8080/submit?a=1&b=two << 201 Created"),
        "{stdout}"
    );
    assert!(
        stdout.contains("GET http://127.0.0.1:1/ << error: Connection refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WebSocket connection closed by client: 1000 bye"),
        "{stdout}"
    );
    assert!(stdout.contains("-> tcp -> 127.0.0.1:7000"), "{stdout}");
}

#[test]
fn r_with_a_filter_and_w_copies_the_matching_flows() {
    let dir = TempDir::new("e2e-r");
    let out_path = dir.path().join("copy.flows");
    let out = waylay(&[
        "-n",
        "-q",
        "-r",
        FIXTURE,
        "-w",
        &out_path.display().to_string(),
        "--set",
        "readfile_filter=~c 201 | ~tcp",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let flows = read(&out_path);
    let ids: Vec<String> = flows.iter().map(|f| f.id().to_string()).collect();
    assert_eq!(
        ids,
        [
            "00000000-0000-4000-8000-000000000001",
            "00000000-0000-4000-8000-000000000003"
        ]
    );
    // A bad filter is a usage error, before anything runs.
    let out = waylay(&["-n", "-r", FIXTURE, "--set", "readfile_filter=~c"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("waylay: error: option readfile_filter:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn r_reads_har_files_and_stdin() {
    let out = waylay(&["-n", "-r", FIXTURE_HAR]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("POST http://example.com:8080/submit?a=1&b=two << 201 Created")
    );
    let mut child = Command::new(BIN)
        .args(["-n", "-r", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&std::fs::read(FIXTURE).expect("fixture"))
            .expect("write");
    }
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).matches(" << ").count(), 4);
}

#[test]
fn r_on_a_damaged_file_plays_what_is_before_and_fails_with_one_line() {
    let dir = TempDir::new("e2e-bad");
    let path = dir.path().join("cut.flows");
    let data = std::fs::read(FIXTURE).expect("fixture");
    std::fs::write(&path, &data[..3000]).expect("write");
    let out = waylay(&["-n", "-r", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the first flow was played"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("waylay: error: reading") && err.contains("truncated"),
        "{err}"
    );
    let out = waylay(&["-n", "-r", "/nonexistent/flows"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("No such file"),
        "{}",
        text(&out.stderr)
    );
}

/// The names of this process's `store_streamed_bodies` files still on disk.
fn stored_body_files() -> Vec<String> {
    let prefix = format!("waylay-body-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn w_with_store_streamed_bodies_keeps_streamed_bodies_without_holding_them() {
    const LEN: usize = 64 << 20;
    const UPLOAD: usize = 1 << 20;
    let dir = TempDir::new("e2e-store-streamed");
    let path = dir.path().join("stored.flows");
    let origin = streaming_origin(LEN).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("save_stream_file={}", path.display()))
            .set("stream_large_bodies=64k")
            .set("store_streamed_bodies=true")
            .addon(Save::new()),
    )
    .await;
    let (before, _) = rss_kib();
    let got = within("the upload and download", async {
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        let req = format!(
            "POST http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {UPLOAD}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let chunk = vec![0xa5u8; 64 * 1024];
        for _ in 0..UPLOAD / chunk.len() {
            s.write_all(&chunk).await.expect("upload");
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    })
    .await;
    assert!(got > LEN, "the whole body came through ({got} bytes)");
    within("shutdown", proxy.shutdown()).await;
    let (_, peak) = rss_kib();
    // A sanity bound only: the stored 64 MiB body was never held whole in memory (it went
    // from the stream to a file, and from that file into the flow file).
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 32,
        "peak RSS grew by {grew_mib} MiB while storing a 64 MiB body"
    );
    assert_eq!(
        stored_body_files(),
        Vec::<String>::new(),
        "the bodies' files are gone once the flows are written"
    );

    let flows = read(&path);
    assert_eq!(flows.len(), 1);
    let f = http(&flows[0]);
    let req = f
        .request
        .raw_content
        .as_deref()
        .expect("the streamed upload is stored");
    assert_eq!(req.len(), UPLOAD);
    assert!(req.iter().all(|b| *b == 0xa5));
    let r = f.response.as_ref().expect("response");
    let body = r
        .raw_content
        .as_deref()
        .expect("the streamed download is stored");
    assert_eq!(body.len(), LEN);
    assert!(body.iter().all(|b| *b == 0x5a));
    drop(flows);

    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let script = r#"
import sys
from mitmproxy import io
for f in io.FlowReader(open(sys.argv[1], "rb")).stream():
    req, resp = f.request.raw_content, f.response.raw_content
    print(len(req), set(req) == {0xa5}, len(resp), set(resp) == {0x5a})
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{UPLOAD} True {LEN} True")
    );
}

/// Runs waylay with `args`, killing it if it has not exited within 30 s (a bad option must
/// stop it long before; a listener that starts anyway must not hang the test).
fn waylay_bounded(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the waylay binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("exits")
}

#[test]
fn n_still_checks_every_option_with_the_same_error() {
    let dir = TempDir::new("e2e-n-options");
    let confdir = format!("confdir={}", dir.path().display());
    let bad: &[&[&str]] = &[
        &["--set", "ignore_hosts=["],
        &["--set", "mode=bogus"],
        &["--set", "mode=reverse:dns://127.0.0.1:53"],
        &["--set", "stream_large_bodies=abc"],
        &["--set", "body_size_limit=-3"],
        &["--set", "connection_strategy=lazy"],
        &["--set", "listen_port=99999"],
        &["--set", "save_stream_filter=~d ("],
        &["--set", "readfile_filter=~q ("],
        &["~d ("],
    ];
    for extra in bad {
        let mut with_n = vec!["-q", "--set", &confdir, "-n", "-r", FIXTURE];
        with_n.extend_from_slice(extra);
        let offline = waylay_bounded(&with_n);
        let mut listening = vec!["-q", "--set", &confdir, "-p", "0", "-r", FIXTURE];
        listening.extend_from_slice(extra);
        let live = waylay_bounded(&listening);
        let err = text(&offline.stderr);
        assert_eq!(offline.status.code(), Some(2), "{extra:?} with -n: {err}");
        assert!(err.starts_with("waylay: error: "), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        assert_eq!(live.status.code(), Some(2), "{extra:?} without -n");
        assert_eq!(
            err,
            text(&live.stderr),
            "{extra:?}: the same error either way"
        );
        assert!(offline.stdout.is_empty(), "{extra:?}: nothing was played");
    }
}

/// A recording of `GET http://{addr}/page?x=1` answered `200 recorded`.
fn recording(addr: SocketAddr, path: &std::path::Path) {
    let client = Arc::new(Client::new(
        ([127, 0, 0, 1], 50000).into(),
        ([127, 0, 0, 1], 8080).into(),
    ));
    let mut f = HttpFlow::new(
        client,
        Request::from_url("GET", &format!("http://{addr}/page?x=1")).expect("url"),
    );
    f.server = Some(Arc::new(Server::new(waylay::flow::Address::new(
        addr.ip().to_string(),
        addr.port(),
    ))));
    let mut r = Response::make(
        200,
        "recorded",
        [
            ("content-type", "text/plain"),
            ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ],
    );
    r.timestamp_start = 784_111_777.0;
    f.response = Some(r);
    f.live = false;
    let mut w = FlowWriter::new(std::fs::File::create(path).expect("create"));
    w.add(&Flow::Http(Box::new(f))).expect("write");
}

/// A proxy builder that knows the server replay options (they are declared by the addon,
/// and the builder checks the options before the addons load).
fn replay_builder() -> waylay::ProxyBuilder {
    let mut opts = waylay::Options::new();
    for spec in ServerReplay::option_specs() {
        opts.add(spec).expect("declared");
    }
    Proxy::builder().options(opts)
}

async fn replay_proxy(file: &std::path::Path, extra: &[&str]) -> TestProxy {
    let mut b = replay_builder()
        .set(format!("server_replay={}", file.display()))
        .addon(ServerReplay::new());
    for s in extra {
        b = b.set(*s);
    }
    TestProxy::start(b).await
}

#[actix_rt::test]
async fn server_replay_answers_from_the_recording_with_the_origin_down() {
    let dir = TempDir::new("e2e-replay");
    let file = dir.path().join("rec.flows");
    let dead = dead_addr().await;
    recording(dead, &file);

    let proxy = replay_proxy(&file, &[]).await;
    let a = within(
        "replayed",
        proxy_get(proxy.addr(), &format!("http://{dead}/page?x=1")),
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.ends_with("recorded"), "{a}");
    assert!(!a.contains("1994"), "Date was refreshed: {a}");
    // Used up: the next identical request is an extra one, forwarded to the dead origin.
    let b = within(
        "forwarded",
        proxy_get(proxy.addr(), &format!("http://{dead}/page?x=1")),
    )
    .await;
    assert!(b.starts_with("HTTP/1.1 502"), "{b}");
    within("shutdown", proxy.shutdown()).await;

    // reuse, no refresh, ignored query parameter.
    let proxy = replay_proxy(
        &file,
        &[
            "server_replay_reuse=true",
            "server_replay_refresh=false",
            "server_replay_ignore_params=x",
        ],
    )
    .await;
    for q in ["x=1", "x=2", "x=1"] {
        let r = within(
            "reused",
            proxy_get(proxy.addr(), &format!("http://{dead}/page?{q}")),
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("recorded"),
            "{q}: {r}"
        );
        assert!(r.contains("Sun, 06 Nov 1994 08:49:37 GMT"), "{r}");
    }
    within("shutdown", proxy.shutdown()).await;
}

#[actix_rt::test]
async fn server_replay_extra_choices() {
    let dir = TempDir::new("e2e-extra");
    let file = dir.path().join("rec.flows");
    let dead = dead_addr().await;
    recording(dead, &file);
    let live = http_origin().await;
    for (extra, want) in [
        ("forward", "HTTP/1.1 200"),
        ("204", "HTTP/1.1 204"),
        ("400", "HTTP/1.1 400"),
        ("404", "HTTP/1.1 404"),
        ("500", "HTTP/1.1 500"),
        ("kill", ""),
    ] {
        let proxy = replay_proxy(&file, &[&format!("server_replay_extra={extra}")]).await;
        // Not in the recording: a live origin answers only if the request is forwarded.
        let r = within(
            "extra",
            proxy_get(proxy.addr(), &format!("http://{live}/other")),
        )
        .await;
        if want.is_empty() {
            assert!(
                r.is_empty() || r.starts_with("HTTP/1.1 502"),
                "{extra}: {r}"
            );
        } else {
            assert!(r.starts_with(want), "{extra}: {r}");
        }
        if extra == "forward" {
            assert!(r.contains("origin GET /other"), "{r}");
        } else {
            assert!(
                !r.contains("origin GET"),
                "{extra} must not reach the server: {r}"
            );
        }
        // The recorded request is still answered from the recording.
        let a = within(
            "replayed",
            proxy_get(proxy.addr(), &format!("http://{dead}/page?x=1")),
        )
        .await;
        assert!(a.ends_with("recorded"), "{extra}: {a}");
        within("shutdown", proxy.shutdown()).await;
    }
    // A missing recording is a clear option error.
    let r = replay_builder()
        .set("server_replay=/nonexistent.flows")
        .addon(ServerReplay::new())
        .listen("127.0.0.1:0")
        .start()
        .await;
    let e = r.expect_err("refused");
    assert!(e.to_string().contains("server_replay"), "{e}");
}

fn answer_ok(path: &str) -> Vec<u8> {
    let body = format!("scripted {path}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Recorded requests to `base` (`http://host:port`): a GET and a POST with a body.
fn recorded_requests(base: &str) -> Vec<Flow> {
    let client = Arc::new(Client::new(
        ([127, 0, 0, 1], 50000).into(),
        ([127, 0, 0, 1], 8080).into(),
    ));
    let get = HttpFlow::new(
        client.clone(),
        Request::from_url("GET", &format!("{base}/one?q=1")).expect("url"),
    );
    let mut post = HttpFlow::new(
        client,
        Request::from_url("POST", &format!("{base}/two")).expect("url"),
    );
    post.request.headers.append("Content-Type", "text/plain");
    post.request.set_raw_content("payload");
    post.response = Some(Response::make(500, "recorded answer", [("x", "y")]));
    vec![Flow::Http(Box::new(get)), Flow::Http(Box::new(post))]
}

#[actix_rt::test]
async fn client_replay_sends_recorded_requests_through_the_addons() {
    let dir = TempDir::new("e2e-creplay");
    let out = dir.path().join("out.flows");
    let (origin, seen) = scripted_origin(answer_ok).await;
    let (tls_origin, ca_file) = https_origin(&dir).await;
    let mut flows = recorded_requests(&format!("http://{origin}"));
    let mut tls_req = Request::from_url(
        "GET",
        &format!("https://localhost:{}/secure", tls_origin.port()),
    )
    .expect("url");
    tls_req.headers.append("Accept", "*/*");
    let client = Arc::new(Client::new(
        ([127, 0, 0, 1], 50000).into(),
        ([127, 0, 0, 1], 8080).into(),
    ));
    flows.push(Flow::Http(Box::new(HttpFlow::new(client, tls_req))));

    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("save_stream_file={}", out.display()))
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                ca_file.display()
            ))
            .addon(Save::new()),
    )
    .await;
    let sent = within(
        "replay",
        client_replay::replay_all(proxy.running().manager(), proxy.addr(), &flows, Some(1)),
    )
    .await;
    assert_eq!(sent, 3);
    within("shutdown", proxy.shutdown()).await;

    let got = read(&out);
    assert_eq!(got.len(), 3);
    for f in &got {
        let f = http(f);
        assert_eq!(
            f.is_replay.as_deref(),
            Some("request"),
            "{}",
            f.request.url()
        );
        assert_eq!(f.response.as_ref().expect("a live answer").status_code, 200);
    }
    assert_eq!(
        http(&got[0])
            .response
            .as_ref()
            .expect("r")
            .text()
            .expect("text"),
        "scripted /one?q=1"
    );
    assert!(
        http(&got[2])
            .response
            .as_ref()
            .expect("r")
            .text()
            .expect("text")
            .starts_with("origin GET /secure")
    );
    let heads = seen.lock().expect("lock").clone();
    assert_eq!(heads.len(), 2);
    assert!(
        heads[0].starts_with("GET /one?q=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("POST /two HTTP/1.1\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].ends_with("payload"), "{}", heads[1]);
    // Nothing of the replay's own reaches the server: the connection, not a field, marks it.
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("replay"))
    );
}

/// A replay is marked by the proxy, not by anything a client sends: with `proxyauth` set it
/// needs no credentials (as in mitmproxy), while a client sending the same request is
/// still asked for them.
#[actix_rt::test]
async fn a_replay_needs_no_proxy_credentials_and_a_client_still_does() {
    let dir = TempDir::new("e2e-replay-auth");
    let out = dir.path().join("out.flows");
    let (origin, seen) = scripted_origin(answer_ok).await;
    let flows = recorded_requests(&format!("http://{origin}"));
    let proxy = TestProxy::start(
        Proxy::builder()
            .set("proxyauth=user:secret")
            .set(format!("save_stream_file={}", out.display()))
            .addon(Save::new()),
    )
    .await;
    let sent = within(
        "replay",
        client_replay::replay_all(proxy.running().manager(), proxy.addr(), &flows, None),
    )
    .await;
    assert_eq!(sent, 2);
    let direct = within(
        "a client",
        proxy_get(proxy.addr(), &format!("http://{origin}/one?q=1")),
    )
    .await;
    assert!(direct.starts_with("HTTP/1.1 407"), "{direct}");
    within("shutdown", proxy.shutdown()).await;
    let got = read(&out);
    let replayed: Vec<_> = got
        .iter()
        .map(http)
        .filter(|f| f.is_replay.is_some())
        .collect();
    assert_eq!(replayed.len(), 2);
    assert!(
        replayed
            .iter()
            .all(|f| f.response.as_ref().is_some_and(|r| r.status_code == 200))
    );
    assert_eq!(seen.lock().expect("lock").len(), 2);
}

#[actix_rt::test]
async fn c_replays_a_file_and_exits() {
    let dir = TempDir::new("e2e-c");
    let rec = dir.path().join("rec.flows");
    let out = dir.path().join("out.flows");
    let (origin, seen) = scripted_origin(answer_ok).await;
    let mut w = FlowWriter::new(std::fs::File::create(&rec).expect("create"));
    for f in recorded_requests(&format!("http://{origin}")) {
        w.add(&f).expect("write");
    }
    drop(w);
    let args: Vec<String> = [
        "-C",
        &rec.display().to_string(),
        "-p",
        "0",
        "--set",
        &format!("confdir={}", dir.path().display()),
        "-w",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // The origin runs on this test's thread: wait for the child elsewhere.
    let output = within(
        "waylay -C exits",
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(BIN)
                .args(&args)
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("runs");
            // Bounded: a child that does not exit is killed (the test then fails).
            for _ in 0..300 {
                if child.try_wait().expect("wait").is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            child.wait_with_output().expect("output")
        }),
    )
    .await
    .expect("joined");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("[replay]: GET http://{origin}/one?q=1 << 200 OK")),
        "{stdout}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 2);
    assert!(
        read(&out)
            .iter()
            .all(|f| http(f).is_replay.as_deref() == Some("request"))
    );
}

#[actix_rt::test]
async fn n_c_replays_without_a_proxy_listener() {
    let dir = TempDir::new("e2e-nc");
    let rec = dir.path().join("rec.flows");
    let (origin, seen) = scripted_origin(answer_ok).await;
    let mut w = FlowWriter::new(std::fs::File::create(&rec).expect("create"));
    for f in recorded_requests(&format!("http://{origin}")) {
        w.add(&f).expect("write");
    }
    drop(w);
    let rec = rec.display().to_string();
    let confdir = format!("confdir={}", dir.path().display());
    // As mitmdump -nC: replayed, printed, then exit; -p names a port that is never bound.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let output = within(
        "waylay -n -C exits",
        tokio::task::spawn_blocking(move || {
            waylay_bounded(&["-n", "-C", &rec, "-p", &port, "--set", &confdir])
        }),
    )
    .await
    .expect("joined");
    drop(taken);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("[replay]: GET http://{origin}/one?q=1 << 200 OK")),
        "{stdout}"
    );
    assert_eq!(seen.lock().expect("lock").len(), 2);
}
