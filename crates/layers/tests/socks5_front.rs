//! The SOCKS5 server side (`waylay_layers::front::socks5_accept`, run by the testkit's
//! SOCKS5 server) against a real client: curl with `--socks5` (IP target) and
//! `--socks5-hostname` (domain target), with and without username/password.

use std::net::SocketAddr;
use std::process::Output;

use waylay_testkit::{http_origin, peers, socks5_server, within};

async fn curl(args: &[String]) -> Option<Output> {
    let bin = peers::program("curl")?;
    let out = within(
        "curl",
        tokio::process::Command::new(bin)
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(args)
            .output(),
    )
    .await
    .expect("run curl");
    Some(out)
}

fn code(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn url(origin: SocketAddr, host: &str) -> String {
    format!("http://{host}:{}/", origin.port())
}

#[actix_rt::test]
async fn curl_through_socks5_by_ip_and_by_name() {
    let server = socks5_server(None).await;
    let origin = http_origin().await;
    let proxy = server.addr.to_string();
    let Some(out) = curl(&["--socks5".into(), proxy.clone(), url(origin, "127.0.0.1")]).await
    else {
        return;
    };
    assert_eq!(code(&out), "200", "{out:?}");
    let Some(out) = curl(&["--socks5-hostname".into(), proxy, url(origin, "localhost")]).await
    else {
        return;
    };
    assert_eq!(code(&out), "200", "{out:?}");
    assert_eq!(
        server.targets(),
        [origin.to_string(), format!("localhost:{}", origin.port())]
    );
}

#[actix_rt::test]
async fn curl_socks5_auth_accepted_and_refused() {
    let server = socks5_server(Some(("alice", "pw"))).await;
    let origin = http_origin().await;
    let with = |creds: &str| format!("socks5h://{creds}@{}", server.addr);
    let Some(out) = curl(&["-x".into(), with("alice:pw"), url(origin, "127.0.0.1")]).await else {
        return;
    };
    assert_eq!(code(&out), "200", "{out:?}");
    let Some(out) = curl(&["-x".into(), with("alice:nope"), url(origin, "127.0.0.1")]).await else {
        return;
    };
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(code(&out), "000");
    // The server still serves the next client.
    let Some(out) = curl(&["-x".into(), with("alice:pw"), url(origin, "127.0.0.1")]).await else {
        return;
    };
    assert_eq!(code(&out), "200", "{out:?}");
}
