//! `--mode transparent` for real: the test re-runs itself inside a new network namespace
//! (`unshare --net`), brings up loopback, starts origins and waylay there, and installs an
//! nftables rule redirecting the client's traffic for the origins' ports to waylay, as a
//! user would (the README's commands). The client (curl) connects from 127.0.0.2; waylay's own
//! connections leave from 127.0.0.1 and are not redirected, which is what keeps a
//! transparent proxy from looping. Plain HTTP and intercepted HTTPS (the leaf for the SNI,
//! issued by waylay's CA) arrive at the origins, and each flow says `transparent`. Needs
//! root (or user namespaces), nft and curl: skipped with a line on a developer's machine
//! without them, a failure under CI.

use std::sync::{Arc, Mutex};

use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::peers::program;
use waylay_testkit::{
    TempDir, TestProxy, http_origin, https_origin, rerun_in_netns, run_program, within,
};

const NAME: &str = "transparent_mode_in_a_network_namespace";

#[test]
fn transparent_mode_in_a_network_namespace() {
    if rerun_in_netns(NAME, &["nft", "ip", "curl"], "netns: transparent checked") {
        inside();
    }
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Addon for Seen {
    async fn request(&mut self, flow: &mut HttpFlow) {
        if let Ok(mut v) = self.0.lock() {
            v.push((flow.client.proxy_mode.clone(), flow.request.pretty_url()));
        }
    }
}

async fn curl(args: &[String]) -> String {
    let bin = program("curl").expect("checked outside");
    let out = within(
        "curl",
        tokio::process::Command::new(bin)
            .args(["-sS", "--max-time", "10", "--interface", "127.0.0.2"])
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output(),
    )
    .await
    .expect("run curl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn inside() {
    run_program("ip", &["link", "set", "lo", "up"], None);
    // The proxy's log in the failure output.
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .finish(),
    );
    actix_rt::System::new().block_on(async {
        let dir = TempDir::new("transparent");
        let plain = http_origin().await;
        let (tls, origin_ca) = https_origin(&dir).await;
        let seen = Seen::default();
        let proxy = TestProxy::start(
            Proxy::builder()
                .set("mode=transparent")
                .set(format!(
                    "ssl_verify_upstream_trusted_ca={}",
                    origin_ca.display()
                ))
                .addon(seen.clone()),
        )
        .await;
        let port = proxy.addr().port();
        // The user's rule: the client's traffic (from 127.0.0.2) to the origins' ports goes
        // to waylay; waylay's own (from 127.0.0.1) is left alone.
        let rules = format!(
            "table ip waylay_test {{\n chain output {{\n  type nat hook output priority -100; policy accept;\n  \
             ip saddr 127.0.0.2 tcp dport {{ {}, {} }} redirect to :{port}\n }}\n}}\n",
            plain.port(),
            tls.port()
        );
        run_program("nft", &["-f", "-"], Some(&rules));

        let out = curl(&[format!("http://127.0.0.1:{}/plain", plain.port())]).await;
        assert!(out.starts_with("origin GET /plain") && out.ends_with("\n200"), "{out}");

        let ca = dir.path().join("waylay-ca.pem");
        std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
        let out = curl(&[
            "--cacert".into(),
            ca.display().to_string(),
            "--resolve".into(),
            format!("localhost:{}:127.0.0.1", tls.port()),
            format!("https://localhost:{}/tls", tls.port()),
        ])
        .await;
        assert!(out.starts_with("origin GET /tls") && out.ends_with("\n200"), "{out}");

        // Straight to the transparent port (not redirected): closed, not a loop.
        let out = curl(&[format!("http://127.0.0.1:{port}/loop")]).await;
        assert!(out.contains("\n000"), "{out}");

        let seen = seen.0.lock().expect("seen").clone();
        assert_eq!(
            seen,
            [
                (
                    "transparent".to_owned(),
                    format!("http://127.0.0.1:{}/plain", plain.port())
                ),
                (
                    "transparent".to_owned(),
                    format!("https://localhost:{}/tls", tls.port())
                ),
            ]
        );
        proxy.shutdown().await;
    });
    println!("netns: transparent checked");
}
