//! `--mode reverse:http(s)://HOST:PORT` end to end on loopback: every request goes to the
//! target with `Host` rewritten to it; a TLS client is intercepted with a leaf for its SNI and
//! the target reached over TLS; a refused target gives a 502 naming it, and the proxy keeps
//! serving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use waylay_core::{Addon, HttpFlow};

use waylay_layers::Proxy;
use waylay_testkit::peers::program;
use waylay_testkit::{TempDir, TestProxy, http_origin, https_origin, raw_request, within};

const T: Duration = Duration::from_secs(10);

/// Records each flow's `client.proxy_mode` and `Host` as `request_headers` sees them.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Addon for Seen {
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        let host = flow
            .request
            .headers
            .get("host")
            .unwrap_or_default()
            .to_owned();
        if let Ok(mut v) = self.0.lock() {
            v.push((flow.client.proxy_mode.clone(), host));
        }
    }
}

#[actix_rt::test]
async fn plain_http_goes_to_the_target_with_host_rewritten() {
    let origin = http_origin().await;
    let seen = Seen::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:http://{origin}"))
            .addon(seen.clone()),
    )
    .await;
    for path in ["/one", "/two"] {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: example.invalid\r\nConnection: close\r\n\r\n");
        let out = within("GET", raw_request(proxy.addr(), req.as_bytes())).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            out.ends_with(&format!("origin GET {path} host={origin}")),
            "{out}"
        );
    }
    // Two requests on one kept-alive connection.
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = within("pipelined", raw_request(proxy.addr(), req)).await;
    assert!(
        out.contains(&format!("origin GET /a host={origin}")),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("origin GET /b host={origin}")),
        "{out}"
    );
    // Addons see the flow already pointed at the target, in mode `reverse:http://...`.
    let seen = seen.0.lock().expect("seen").clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (mode, host) in seen {
        assert_eq!(mode, format!("reverse:http://{origin}"));
        assert_eq!(host, origin.to_string());
    }
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_refused_target_gives_a_502_naming_it() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let proxy = TestProxy::start(Proxy::builder().set(format!("mode=reverse:http://{dead}"))).await;
    for _ in 0..2 {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let out = within("GET", raw_request(proxy.addr(), req)).await;
        assert!(out.starts_with("HTTP/1.1 502"), "{out}");
        assert!(out.contains(&dead.to_string()), "{out}");
    }
    // The target comes up: the same proxy serves it.
    let Ok(l) = tokio::net::TcpListener::bind(dead).await else {
        return proxy.shutdown().await; // the port was taken meanwhile
    };
    counting_origin_on(l);
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = within("GET", raw_request(proxy.addr(), req)).await;
    assert!(out.ends_with(&format!("conn 1 req 1 host={dead}")), "{out}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_untrusted_https_target_gives_a_502_then_succeeds_once_trusted() {
    let dir = TempDir::new("reverse-https-untrusted");
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let port = tls_origin.port();
    let proxy =
        TestProxy::start(Proxy::builder().set(format!("mode=reverse:https://localhost:{port}")))
            .await;
    let req = b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = within("GET", raw_request(proxy.addr(), req)).await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(
        out.contains(&format!("localhost:{port}")) && out.contains("certificate"),
        "{out}"
    );
    proxy
        .running()
        .manager()
        .set(&[format!(
            "ssl_verify_upstream_trusted_ca={}",
            origin_ca.display()
        )])
        .await
        .expect("set");
    let out = within("GET", raw_request(proxy.addr(), req)).await;
    assert!(
        out.ends_with(&format!("origin GET /t host=localhost:{port}")),
        "{out}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_https_target_is_reached_from_tls_and_plain_clients() {
    let dir = TempDir::new("reverse-https");
    let (tls_origin, origin_ca) = https_origin(&dir).await;
    let port = tls_origin.port();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:https://localhost:{port}"))
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            )),
    )
    .await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, proxy.running().ca_cert_pem()).expect("write CA");
    // A plain client: waylay speaks TLS to the target.
    let req = b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = within("plain GET", raw_request(proxy.addr(), req)).await;
    assert!(
        out.ends_with(&format!("origin GET /plain host=localhost:{port}")),
        "{out}"
    );
    for version in ["--http1.1", "--http2"] {
        let out = tokio::time::timeout(
            T,
            tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "8", "--noproxy", "*", version])
                .arg("--cacert")
                .arg(&ca)
                .arg(format!("https://localhost:{}/r", proxy.addr().port()))
                .output(),
        )
        .await
        .expect("curl in time")
        .expect("run curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            body,
            format!("origin GET /r host=localhost:{port}"),
            "{version}"
        );
    }
    proxy.shutdown().await;
}

/// Runs curl with `args` (never through a proxy from the environment); its stdout, or its
/// stderr as the error.
async fn curl(args: &[&str]) -> Result<String, String> {
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "8", "--noproxy", "*"])
            .args(args)
            .output(),
    )
    .await
    .map_err(|_| "curl timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A plain HTTP/1.1 origin that counts its connections and answers every request
/// `conn N req M host=H`, keeping each connection open.
async fn counting_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    counting_origin_on(l)
}

/// [`counting_origin`] on a bound listener.
fn counting_origin_on(l: tokio::net::TcpListener) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let count = conns.clone();
    actix_rt::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            actix_rt::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                for m in 1..=100 {
                    let mut host = String::new();
                    loop {
                        match lines.next_line().await {
                            Ok(Some(l)) if l.is_empty() => break,
                            Ok(Some(l)) => {
                                if let Some(h) =
                                    l.strip_prefix("host: ").or(l.strip_prefix("Host: "))
                                {
                                    host = h.to_owned();
                                }
                            }
                            Ok(None) | Err(_) => return,
                        }
                    }
                    let body = format!("conn {n} req {m} host={host}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// A reverse proxy to `target` trusting nothing extra, and its CA in `dir`.
async fn reverse_proxy(target: &str, dir: &TempDir) -> (TestProxy, std::path::PathBuf) {
    let proxy = TestProxy::start(Proxy::builder().set(format!("mode=reverse:{target}"))).await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
    (proxy, ca)
}

#[actix_rt::test]
async fn tls_clients_to_an_http_target_get_a_leaf_and_plain_http_to_it() {
    let dir = TempDir::new("reverse-tls-http");
    let origin = http_origin().await;
    let (proxy, ca) = reverse_proxy(&format!("http://{origin}"), &dir).await;
    let url = format!("https://localhost:{}/t", proxy.addr().port());
    let ca = ca.to_string_lossy().into_owned();
    for version in ["--http1.1", "--http2"] {
        let out = curl(&[version, "--cacert", &ca, &url]).await;
        assert_eq!(
            out.as_deref(),
            Ok(format!("origin GET /t host={origin}").as_str()),
            "{version}"
        );
    }
    // The negotiated protocol is HTTP/2 for a client offering it, although the target
    // speaks plain HTTP/1.1.
    let out = curl(&[
        "--http2",
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url,
    ])
    .await;
    assert_eq!(out.as_deref(), Ok("2"));
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn h2c_prior_knowledge_through_the_reverse_proxy() {
    let origin = http_origin().await;
    let dir = TempDir::new("reverse-h2c");
    let (proxy, _) = reverse_proxy(&format!("http://{origin}"), &dir).await;
    let url = format!("http://127.0.0.1:{}/h2c", proxy.addr().port());
    let out = curl(&["--http2-prior-knowledge", "-w", " %{http_version}", &url]).await;
    assert_eq!(
        out.as_deref(),
        Ok(format!("origin GET /h2c host={origin} 2").as_str())
    );
    proxy.shutdown().await;
}

/// Runs h2load and returns the `requests:` line of its summary.
async fn h2load(args: &[&str]) -> Option<String> {
    let h2load = program("h2load")?;
    let out = tokio::time::timeout(T, tokio::process::Command::new(h2load).args(args).output())
        .await
        .expect("h2load in time")
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .find(|l| l.starts_with("requests:"))
            .unwrap_or(&text)
            .to_owned(),
    )
}

#[actix_rt::test]
async fn h2load_over_h2c_and_tls_alpn() {
    let origin = http_origin().await;
    let dir = TempDir::new("reverse-h2load");
    let (proxy, _) = reverse_proxy(&format!("http://{origin}"), &dir).await;
    let port = proxy.addr().port();
    // h2c prior knowledge, then HTTP/2 over TLS (h2load does not verify the leaf).
    for url in [
        format!("http://127.0.0.1:{port}/load"),
        format!("https://localhost:{port}/load"),
    ] {
        let Some(line) = h2load(&["-n", "60", "-c", "3", "-m", "4", &url]).await else {
            return;
        };
        assert!(
            line.contains("60 total") && line.contains("60 succeeded") && line.contains("0 failed"),
            "{url}: {line}"
        );
    }
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn websocket_through_the_reverse_proxy() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let origin = waylay_testkit::WsOrigin::start().await;
    let seen = Seen::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:http://{}", origin.addr))
            .addon(seen.clone()),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    let url = format!("ws://127.0.0.1:{}/chat", proxy.addr().port());
    let (mut ws, resp) = within("ws handshake", tokio_tungstenite::client_async(url, tcp))
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.expect("send");
        let got = within("echo", ws.next()).await.expect("open").expect("msg");
        assert_eq!(got, Message::text(text));
    }
    ws.close(None).await.expect("close");
    // The origin's handshake named it as Host.
    let hs = origin.record.handshakes();
    let host = hs[0]
        .iter()
        .find(|(n, _)| n == "host")
        .map(|(_, v)| v.clone());
    assert_eq!(host, Some(origin.addr.to_string()));
    let seen = seen.0.lock().expect("seen").clone();
    assert_eq!(seen[0].0, format!("reverse:http://{}", origin.addr));
    proxy.shutdown().await;
}

/// Handles `server_connect` (and does nothing with it).
struct ObservesServers;

impl Addon for ObservesServers {
    async fn server_connect(&mut self, _d: &mut waylay_core::hooks::ServerConnectionHookData) {}
}

#[actix_rt::test]
async fn server_connections_are_reused_across_a_clients_requests() {
    let (origin, conns) = counting_origin().await;
    let dir = TempDir::new("reverse-reuse");
    // An addon observing server connections: each client connection keeps its own (without
    // one, idle ones are shared by the worker's clients: `tests/shared_pool.rs`), so the
    // second client's connection is a new one whatever the timing.
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:http://{origin}"))
            .addon(ObservesServers),
    )
    .await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
    // Five requests on one kept-alive plain client connection: one server connection.
    let mut s = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    for i in 1..=5 {
        s.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let want = format!("conn 1 req {i} host={origin}");
        let mut got = Vec::new();
        within("keep-alive response", async {
            while !got.ends_with(want.as_bytes()) {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
    }
    drop(s);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // A TLS client asking three URLs on one connection (curl reuses it): one more.
    let url = format!("https://localhost:{}/t", proxy.addr().port());
    let ca = ca.to_string_lossy().into_owned();
    let out = curl(&["--http2", "--cacert", &ca, &url, &url, &url]).await;
    let want = (1..=3)
        .map(|m| format!("conn 2 req {m} host={origin}"))
        .collect::<String>();
    assert_eq!(out.as_deref(), Ok(want.as_str()));
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn keep_host_header_leaves_host_and_authority_alone() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:http://{origin}"))
            .set("keep_host_header=true"),
    )
    .await;
    let req = b"GET /kept HTTP/1.1\r\nHost: front.example\r\nConnection: close\r\n\r\n";
    let out = within("GET", raw_request(proxy.addr(), req)).await;
    assert!(
        out.ends_with("origin GET /kept host=front.example"),
        "{out}"
    );
    // HTTP/2 from the client: its :authority becomes the target's Host.
    let url = format!("http://127.0.0.1:{}/h2", proxy.addr().port());
    let out = curl(&["--http2-prior-knowledge", "-H", "Host: h2.example", &url]).await;
    assert_eq!(out.as_deref(), Ok("origin GET /h2 host=h2.example"));
    // Off again: rewritten to the target.
    proxy
        .running()
        .manager()
        .set(&["keep_host_header=false"])
        .await
        .expect("set");
    let out = within("GET", raw_request(proxy.addr(), req)).await;
    assert!(
        out.ends_with(&format!("origin GET /kept host={origin}")),
        "{out}"
    );
    proxy.shutdown().await;
}

fn ok_answer(_path: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

#[actix_rt::test]
async fn upstream_auth_sends_basic_authorization_to_the_target() {
    let (origin, seen) = waylay_testkit::scripted_origin(ok_answer).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:http://{origin}"))
            .set("upstream_auth=Aladdin:open sesame"),
    )
    .await;
    // The client's own Authorization is replaced (as mitmproxy's upstream_auth does).
    let req =
        b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer mine\r\nConnection: close\r\n\r\n";
    let out = within("GET", raw_request(proxy.addr(), req)).await;
    assert!(out.ends_with("ok"), "{out}");
    let head = seen.lock().expect("seen")[0].to_ascii_lowercase();
    assert!(
        head.contains("authorization: basic qwxhzgrpbjpvcgvuihnlc2ftzq=="),
        "{head}"
    );
    assert!(!head.contains("bearer"), "{head}");
    proxy.shutdown().await;
}
