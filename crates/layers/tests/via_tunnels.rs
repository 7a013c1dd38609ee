//! The route of a CONNECT tunnel chosen per flow by an addon, in `http_connect` (the `via`
//! of the CONNECT flow's server) and in `next_layer` (its `via`): one addon sends two hosts
//! through two different tinyproxy instances and a third direct, checked at each proxy, for
//! intercepted HTTPS and for a raw TCP tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waylay_core::flow::{Address, Server};
use waylay_core::hooks::NextLayer;
use waylay_core::{Addon, HttpFlow, Via};
use waylay_layers::Proxy;
use waylay_testkit::{
    TempDir, TestProxy, connect_tunnel, https_origin, tcp_line_origin, tinyproxy, within,
};

const T: Duration = Duration::from_secs(10);

/// Which hook sets the route.
#[derive(Clone, Copy, Debug)]
enum Hook {
    HttpConnect,
    NextLayer,
}

/// Sends a tunnel to a listed port through that port's proxy; others keep the mode's route.
struct Routes {
    hook: Hook,
    by_port: Vec<(u16, Via)>,
}

impl Routes {
    fn via(&self, port: u16) -> Option<Via> {
        self.by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, v)| v.clone())
    }
}

impl Addon for Routes {
    async fn http_connect(&mut self, flow: &mut HttpFlow) {
        if let Hook::HttpConnect = self.hook
            && let Some(via) = self.via(flow.request.port)
        {
            let mut server =
                Server::new(Address::new(flow.request.host.clone(), flow.request.port));
            server.via = Some(via);
            flow.server = Some(Arc::new(server));
        }
    }

    async fn next_layer(&mut self, nl: &mut NextLayer) {
        if let Hook::NextLayer = self.hook
            && let Some(port) = nl.server.as_ref().map(|s| s.port)
            && let Some(via) = self.via(port)
        {
            nl.via = Some(via);
        }
    }
}

async fn curl(proxy: SocketAddr, ca: &std::path::Path, url: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "8", "--noproxy", ""])
            .arg("-x")
            .arg(format!("http://{proxy}"))
            .arg("--cacert")
            .arg(ca)
            .arg(url)
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

fn via(p: SocketAddr) -> Via {
    Via::parse(&format!("http://{p}")).expect("via")
}

async fn two_proxies_and_direct(hook: Hook) {
    let (Some(tiny_a), Some(tiny_b)) = (tinyproxy(None).await, tinyproxy(None).await) else {
        return;
    };
    let dir = TempDir::new("via-tunnels");
    let (a, _) = https_origin(&dir).await;
    let (b, _) = https_origin(&dir).await;
    let (c, _) = https_origin(&dir).await;
    let proxy = TestProxy::start(
        Proxy::builder()
            // Three origins, three test CAs.
            .set("ssl_insecure=true")
            .addon(Routes {
                hook,
                by_port: vec![(a.port(), via(tiny_a.addr)), (b.port(), via(tiny_b.addr))],
            }),
    )
    .await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
    for round in 0..2 {
        for origin in [a, b, c] {
            let port = origin.port();
            let out = curl(
                proxy.addr(),
                &ca,
                &format!("https://localhost:{port}/r{round}"),
            )
            .await;
            assert_eq!(
                out,
                Ok(format!("origin GET /r{round} host=localhost:{port}")),
                "{hook:?}"
            );
        }
    }
    // Each proxy saw its own origin only; the third went direct.
    let (log_a, log_b) = (tiny_a.log(), tiny_b.log());
    let saw = |log: &str, o: SocketAddr| log.contains(&format!("CONNECT localhost:{}", o.port()));
    assert!(
        saw(&log_a, a) && !saw(&log_a, b) && !saw(&log_a, c),
        "{hook:?}: {log_a}"
    );
    assert!(
        saw(&log_b, b) && !saw(&log_b, a) && !saw(&log_b, c),
        "{hook:?}: {log_b}"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_via_set_in_http_connect_routes_each_tunnel() {
    two_proxies_and_direct(Hook::HttpConnect).await;
}

#[actix_rt::test]
async fn a_via_set_in_next_layer_routes_each_tunnel() {
    two_proxies_and_direct(Hook::NextLayer).await;
}

#[actix_rt::test]
async fn a_raw_tcp_tunnel_follows_the_via_of_next_layer() {
    let Some(tiny) = tinyproxy(None).await else {
        return;
    };
    let (routed, direct) = (tcp_line_origin().await, tcp_line_origin().await);
    let proxy = TestProxy::start(Proxy::builder().addon(Routes {
        hook: Hook::NextLayer,
        by_port: vec![(routed.addr.port(), via(tiny.addr))],
    }))
    .await;
    for origin in [&routed, &direct] {
        let mut s = within(
            "tunnel",
            connect_tunnel(proxy.addr(), &origin.addr.to_string()),
        )
        .await
        .expect("CONNECT");
        s.write_all(b"line\n").await.expect("write");
        let mut got = [0u8; 11];
        within("echo", s.read_exact(&mut got)).await.expect("read");
        assert_eq!(&got, b"echo: line\n");
    }
    let log = tiny.log();
    assert!(log.contains(&format!("CONNECT {}", routed.addr)), "{log}");
    assert!(!log.contains(&format!("CONNECT {}", direct.addr)), "{log}");
    proxy.shutdown().await;
}
