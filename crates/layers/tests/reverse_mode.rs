//! `--mode reverse:http(s)://HOST:PORT` end to end on loopback: every request goes to the
//! target with `Host` rewritten to it; a TLS client is intercepted with a leaf for its SNI and
//! the target reached over TLS; a refused target gives a 502 naming it, and the proxy keeps
//! serving.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use waylay_core::{Addon, HttpFlow};

use waylay_layers::Proxy;
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
