//! `--mode socks5` end to end with curl: `--socks5` (the client resolves: an IP target) and
//! `--socks5-hostname` (a domain target), plain HTTP and intercepted HTTPS (the leaf issued
//! by waylay's CA), an IPv6 target, username/password accepted and refused (`socks5_auth`),
//! a client that is not SOCKS5, the replies to a failed dial and to BIND.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waylay_core::hooks::Socks5AuthData;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{
    TempDir, TestProxy, http_origin, http_origin_v6, https_origin, peers, read_to_close, within,
};

/// Records each flow's mode and URL, as addons see them.
#[derive(Clone, Default)]
struct Seen {
    flows: Arc<Mutex<Vec<(String, String)>>>,
}

impl Seen {
    fn flows(&self) -> Vec<(String, String)> {
        self.flows.lock().expect("flows").clone()
    }
}

impl Addon for Seen {
    async fn request(&mut self, flow: &mut HttpFlow) {
        if let Ok(mut v) = self.flows.lock() {
            v.push((flow.client.proxy_mode.clone(), flow.request.pretty_url()));
        }
    }
}

/// The proxy's log lines on this thread (one worker: every connection runs on it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let w = logs.clone();
        let guard = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        let guard = tracing::subscriber::set_default(guard);
        (logs, guard)
    }

    fn has(&self, part: &str) -> bool {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).contains(part)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

/// Accepts alice / pw, as the `proxyauth` addon does for `proxyauth=alice:pw`.
#[derive(Clone, Default)]
struct Alice;

impl Addon for Alice {
    async fn socks5_auth(&mut self, data: &mut Socks5AuthData) {
        data.valid = data.username == "alice" && data.password == "pw";
    }
}

async fn socks_proxy(builder: waylay_layers::ProxyBuilder) -> TestProxy {
    TestProxy::start(builder.set("mode=socks5")).await
}

/// curl's output (`%{http_code}` then the body), or `None` without curl.
async fn curl(args: &[String]) -> Option<Output> {
    let bin = peers::program("curl")?;
    let out = within(
        "curl",
        tokio::process::Command::new(bin)
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output(),
    )
    .await
    .expect("run curl");
    Some(out)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[actix_rt::test]
async fn curl_socks5_and_socks5_hostname_plain_http() {
    let origin = http_origin().await;
    let seen = Seen::default();
    let proxy = socks_proxy(Proxy::builder().addon(seen.clone())).await;
    let socks = proxy.addr().to_string();
    assert_eq!(proxy.running().listeners()[0].mode, "socks5");
    for (flag, host) in [
        ("--socks5", "127.0.0.1"),
        ("--socks5-hostname", "localhost"),
    ] {
        let url = format!("http://{host}:{}/via-{flag}", origin.port());
        let Some(out) = curl(&[flag.into(), socks.clone(), url]).await else {
            return;
        };
        let text = stdout(&out);
        assert!(text.ends_with("\n200"), "{flag}: {out:?}");
        assert!(
            text.starts_with(&format!("origin GET /via-{flag}")),
            "{text}"
        );
    }
    let flows = seen.flows();
    assert_eq!(flows.len(), 2, "{flows:?}");
    assert!(flows.iter().all(|(mode, _)| mode == "socks5"), "{flows:?}");
    assert_eq!(
        flows[1].1,
        format!("http://localhost:{}/via---socks5-hostname", origin.port())
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn curl_socks5_https_is_intercepted_with_waylays_leaf() {
    let dir = TempDir::new("socks5-https");
    let (origin, origin_ca) = https_origin(&dir).await;
    let seen = Seen::default();
    let proxy = socks_proxy(
        Proxy::builder()
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .addon(seen.clone()),
    )
    .await;
    // The client trusts waylay's CA only: the handshake succeeds only with a leaf it issued.
    let ca = dir.path().join("waylay-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
    let socks = proxy.addr().to_string();
    for (flag, host) in [
        ("--socks5", "127.0.0.1"),
        ("--socks5-hostname", "localhost"),
    ] {
        let url = format!("https://{host}:{}/tls", origin.port());
        let args = [
            flag.into(),
            socks.clone(),
            "--cacert".into(),
            ca.display().to_string(),
            url,
        ];
        let Some(out) = curl(&args).await else {
            return;
        };
        let text = stdout(&out);
        assert!(text.ends_with("\n200"), "{flag}: {out:?}");
        assert!(text.starts_with("origin GET /tls"), "{text}");
    }
    let flows = seen.flows();
    assert_eq!(
        flows.len(),
        2,
        "the requests inside TLS are flows: {flows:?}"
    );
    assert!(flows[0].1.starts_with("https://"), "{flows:?}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn curl_socks5_to_an_ipv6_target() {
    let origin = http_origin_v6().await;
    let proxy = socks_proxy(Proxy::builder()).await;
    let url = format!("http://[::1]:{}/six", origin.port());
    let Some(out) = curl(&["--socks5".into(), proxy.addr().to_string(), url]).await else {
        return;
    };
    let text = stdout(&out);
    assert!(text.ends_with("\n200"), "{out:?}");
    assert!(text.starts_with("origin GET /six"), "{text}");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn curl_socks5_auth_accepted_then_refused_then_accepted() {
    let (logs, _guard) = Logs::capture();
    let origin = http_origin().await;
    let seen = Seen::default();
    let proxy = socks_proxy(
        Proxy::builder()
            .set("proxyauth=alice:pw")
            .addon(Alice)
            .addon(seen.clone()),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/auth", origin.port());
    let with = |creds: &str| format!("socks5h://{creds}@{}", proxy.addr());
    let Some(out) = curl(&["-x".into(), with("alice:pw"), url.clone()]).await else {
        return;
    };
    assert!(stdout(&out).ends_with("\n200"), "{out:?}");
    let Some(out) = curl(&["-x".into(), with("alice:nope"), url.clone()]).await else {
        return;
    };
    assert!(!out.status.success(), "{out:?}");
    assert!(stdout(&out).ends_with("\n000"), "{out:?}");
    // Without credentials: the proxy offers only username/password.
    let Some(out) = curl(&[
        "--socks5-hostname".into(),
        proxy.addr().to_string(),
        url.clone(),
    ])
    .await
    else {
        return;
    };
    assert!(stdout(&out).ends_with("\n000"), "{out:?}");
    let Some(out) = curl(&["-x".into(), with("alice:pw"), url]).await else {
        return;
    };
    assert!(stdout(&out).ends_with("\n200"), "{out:?}");
    assert_eq!(seen.flows().len(), 2);
    assert!(
        logs.has("SOCKS5 authentication failed for user \"alice\""),
        "{}",
        logs.text()
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn without_an_addon_checking_credentials_socks5_auth_refuses() {
    let proxy = socks_proxy(Proxy::builder().set("proxyauth=alice:pw")).await;
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    c.write_all(b"\x05\x01\x02\x01\x05alice\x02pw")
        .await
        .expect("write");
    let answer = within("answer", read_to_close(&mut c)).await;
    assert_eq!(answer, [5, 2, 1, 1]);
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_client_that_is_not_socks5_is_closed_and_the_next_one_served() {
    let (logs, _guard) = Logs::capture();
    let origin = http_origin().await;
    let proxy = socks_proxy(Proxy::builder()).await;
    for garbage in [
        &b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
        b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
        b"\xff\xfe\xfd",
    ] {
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(garbage).await.expect("write");
        let answer = within("close", read_to_close(&mut c)).await;
        assert!(answer.is_empty(), "{garbage:?}: {answer:?}");
    }
    let url = format!("http://127.0.0.1:{}/after", origin.port());
    let Some(out) = curl(&["--socks5".into(), proxy.addr().to_string(), url]).await else {
        return;
    };
    assert!(stdout(&out).ends_with("\n200"), "{out:?}");
    assert!(logs.has("not a SOCKS5 client"), "{}", logs.text());
    proxy.shutdown().await;
}

/// Sends a no-auth greeting and `request`; returns the whole answer.
async fn socks_exchange(proxy: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(proxy).await.expect("connect");
    c.write_all(b"\x05\x01\x00").await.expect("greeting");
    let mut sel = [0u8; 2];
    within("method", c.read_exact(&mut sel))
        .await
        .expect("method");
    assert_eq!(sel, [5, 0]);
    c.write_all(request).await.expect("request");
    within("answer", read_to_close(&mut c)).await
}

#[actix_rt::test]
async fn a_failed_dial_and_bind_get_their_socks_replies() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let (logs, _guard) = Logs::capture();
    let proxy = socks_proxy(Proxy::builder()).await;
    let mut connect = b"\x05\x01\x00\x01\x7f\x00\x00\x01".to_vec();
    connect.extend_from_slice(&dead.port().to_be_bytes());
    let answer = socks_exchange(proxy.addr(), &connect).await;
    assert_eq!(answer[..2], [5, 5], "connection refused: {answer:?}");
    assert!(
        logs.has(&format!("SOCKS5 CONNECT to {dead} failed")),
        "{}",
        logs.text()
    );
    // BIND and UDP ASSOCIATE: command not supported.
    for cmd in [2u8, 3] {
        let req = [5, cmd, 0, 1, 127, 0, 0, 1, 0, 80];
        let answer = socks_exchange(proxy.addr(), &req).await;
        assert_eq!(answer[..2], [5, 7], "command {cmd}: {answer:?}");
    }
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn an_ignored_host_is_passed_through_untouched() {
    let dir = TempDir::new("socks5-ignore");
    let (origin, origin_ca) = https_origin(&dir).await;
    let seen = Seen::default();
    let proxy = socks_proxy(
        Proxy::builder()
            .set(format!("ignore_hosts=^localhost:{}$", origin.port()))
            .addon(seen.clone()),
    )
    .await;
    // The client sees the origin's own certificate: it trusts only the origin's CA.
    let args = [
        "--socks5-hostname".into(),
        proxy.addr().to_string(),
        "--cacert".into(),
        origin_ca.display().to_string(),
        format!("https://localhost:{}/through", origin.port()),
    ];
    let Some(out) = curl(&args).await else {
        return;
    };
    let text = stdout(&out);
    assert!(text.ends_with("\n200"), "{out:?}");
    assert!(text.starts_with("origin GET /through"), "{text}");
    assert!(seen.flows().is_empty(), "passthrough makes no flow");
    proxy.shutdown().await;
}
