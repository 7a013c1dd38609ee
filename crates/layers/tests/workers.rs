//! Several worker arbiters: connections are spread over threads while the addon manager and
//! the addons live on worker 0, so hooks from the other workers cross threads. One addon
//! instance sees every flow, whichever worker serves it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waylay_core::{Addon, HttpFlow};
use waylay_layers::{Proxy, RunningProxy};
use waylay_testkit::{TempDir, connect_tls, http_origin, https_origin, proxy_get};

/// Numbers every response it sees.
#[derive(Clone, Default)]
struct Count {
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Addon for Count {
    async fn request(&mut self, flow: &mut HttpFlow) {
        flow.request.headers.insert("x-counted", "yes");
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        let mut seen = self.seen.lock().expect("lock");
        let n = seen.len() as u64 + 1;
        seen.push(n);
        if let Some(r) = flow.response.as_mut() {
            r.headers.insert("x-count", n.to_string());
        }
    }
}

async fn start(dir: &TempDir, count: Count, extra: &[String]) -> RunningProxy {
    let mut b = Proxy::builder()
        .set(format!("confdir={}", dir.path().display()))
        .set("workers=3")
        .listen("127.0.0.1:0")
        .addon(count);
    for s in extra {
        b = b.set(s.clone());
    }
    b.start().await.expect("proxy starts")
}

#[actix_rt::test]
async fn hooks_from_every_worker_reach_the_one_addon() {
    let dir = TempDir::new("workers");
    let origin = http_origin().await;
    let count = Count::default();
    let proxy = start(&dir, count.clone(), &[]).await;
    let addr = proxy.local_addr();

    // Sequential connections go round-robin over the three workers.
    for i in 0..9 {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            proxy_get(addr, &format!("http://{origin}/seq{i}")),
        )
        .await
        .expect("answer in time");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("x-count: "), "{out}");
        assert!(
            out.ends_with(&format!("origin GET /seq{i} host={origin}")),
            "{out}"
        );
    }
    // Concurrent ones too.
    let many = (0..24).map(|i| {
        let url = format!("http://{origin}/par{i}");
        async move { proxy_get(addr, &url).await }
    });
    let outs = tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(many))
        .await
        .expect("all answered in time");
    for out in &outs {
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    // One addon instance counted all 33 responses, each once.
    let seen = count.seen.lock().expect("lock").clone();
    assert_eq!(seen, (1..=33).collect::<Vec<u64>>());
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn intercepted_tls_on_several_workers() {
    let dir = TempDir::new("workers-tls");
    let (origin, origin_ca) = https_origin(&dir).await;
    let count = Count::default();
    let proxy = start(
        &dir,
        count.clone(),
        &[format!(
            "ssl_verify_upstream_trusted_ca={}",
            origin_ca.display()
        )],
    )
    .await;
    let ca = proxy.ca_cert_pem();
    let port = origin.port();
    for i in 0..6 {
        let mut tls = tokio::time::timeout(
            Duration::from_secs(10),
            connect_tls(
                proxy.local_addr(),
                &format!("localhost:{port}"),
                "localhost",
                &ca,
                &[b"http/1.1"],
            ),
        )
        .await
        .expect("tunnel in time")
        .expect("tunnel");
        let req =
            format!("GET /tls{i} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(
            out.ends_with(&format!("origin GET /tls{i} host=localhost:{port}")),
            "{out}"
        );
    }
    assert_eq!(count.seen.lock().expect("lock").len(), 6);
    proxy.shutdown().await;
}
