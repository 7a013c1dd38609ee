//! The README's reverse and upstream mode commands, run on the real `waylay` binary with real
//! clients (curl, a TCP socket, a TLS socket) against loopback origins and peers (tinyproxy,
//! a TLS front, a SOCKS5 server with credentials).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waylay_testkit::peers::program;
use waylay_testkit::{
    TempDir, http_origin, https_origin, socks5_server, tcp_line_origin, tinyproxy, tls_front,
    tls_line_origin, within,
};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

/// A running `waylay` with its confdir; killed when dropped.
struct Waylay {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Drop for Waylay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Waylay {
    /// `waylay -q -p PORT --set confdir=... ARGS`, once it listens.
    async fn start(args: &[&str]) -> Self {
        let dir = TempDir::new("cli-modes");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(BIN)
            .args(["-q", "-p", &port.to_string()])
            .args(["--set", &format!("confdir={}", dir.path().display())])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("waylay starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("waylay {args:?} exited early: {status}");
            }
            assert!(Instant::now() < deadline, "waylay never listened on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // It binds before it writes its CA into the confdir.
        let ca = dir.path().join("waylay-ca-cert.pem");
        while !ca.exists() {
            assert!(
                Instant::now() < deadline,
                "waylay never wrote {}",
                ca.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port, dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("waylay-ca-cert.pem")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// curl with `args`, never through a proxy from the environment: stdout, or stderr.
async fn curl(args: &[&str]) -> Result<String, String> {
    let curl = program("curl").ok_or("no curl")?;
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::process::Command::new(curl)
            .args(["-sS", "--max-time", "10", "--noproxy", ""])
            .args(args)
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
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

/// Sends a line and reads the echo over any stream.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, line: &str) {
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let want = format!("echo: {line}\n");
    let mut got = vec![0u8; want.len()];
    within("echo", s.read_exact(&mut got)).await.expect("read");
    assert_eq!(String::from_utf8_lossy(&got), want);
}

/// A TLS client to `addr` for `name`, trusting only the PEM file `ca`.
async fn tls_to(
    addr: SocketAddr,
    name: &str,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(waylay_layers::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
    within(
        "TLS",
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("TLS with waylay")
}

/// `waylay -m reverse:http://...` (plain and TLS clients, `keep_host_header`),
/// `reverse:https://...`, `reverse:tcp://...`, `reverse:tls://...`.
#[actix_rt::test]
async fn reverse_mode_commands() {
    if program("curl").is_none() {
        return;
    }
    let origin = http_origin().await;
    let w = Waylay::start(&["-m", &format!("reverse:http://{origin}")]).await;
    let plain = curl(&[&format!("http://127.0.0.1:{}/", w.port)]).await;
    assert_eq!(plain, Ok(format!("origin GET / host={origin}")));
    let ca = w.ca().display().to_string();
    let tls = curl(&["--cacert", &ca, &format!("https://localhost:{}/s", w.port)]).await;
    assert_eq!(tls, Ok(format!("origin GET /s host={origin}")));
    drop(w);

    let w = Waylay::start(&[
        "-m",
        &format!("reverse:http://{origin}"),
        "--set",
        "keep_host_header=true",
    ])
    .await;
    let kept = curl(&[
        "-H",
        "Host: front.example",
        &format!("http://127.0.0.1:{}/k", w.port),
    ])
    .await;
    assert_eq!(kept, Ok("origin GET /k host=front.example".to_owned()));
    drop(w);

    let dir = TempDir::new("cli-reverse-https");
    let (https, origin_ca) = https_origin(&dir).await;
    let trust = format!("ssl_verify_upstream_trusted_ca={}", origin_ca.display());
    let w = Waylay::start(&[
        "-m",
        &format!("reverse:https://localhost:{}", https.port()),
        "--set",
        &trust,
    ])
    .await;
    let ca = w.ca().display().to_string();
    let out = curl(&["--cacert", &ca, &format!("https://localhost:{}/h", w.port)]).await;
    assert_eq!(
        out,
        Ok(format!("origin GET /h host=localhost:{}", https.port()))
    );
    drop(w);

    let tcp = tcp_line_origin().await;
    let w = Waylay::start(&["-m", &format!("reverse:tcp://{}", tcp.addr)]).await;
    let mut s = tokio::net::TcpStream::connect(w.addr())
        .await
        .expect("connect");
    echo(&mut s, "over tcp").await;
    drop(w);

    let (tls_origin, tls_ca) = tls_line_origin(&dir).await;
    let trust = format!("ssl_verify_upstream_trusted_ca={}", tls_ca.display());
    let w = Waylay::start(&[
        "-m",
        &format!("reverse:tls://localhost:{}", tls_origin.addr.port()),
        "--set",
        &trust,
    ])
    .await;
    let mut s = tls_to(w.addr(), "localhost", &w.ca()).await;
    echo(&mut s, "over tls").await;
}

/// `waylay -m upstream:http://...` (with `upstream_auth`), `upstream:https://...`,
/// `upstream:socks5://user:pass@...`, then curl through waylay for plain HTTP and HTTPS.
#[actix_rt::test]
async fn upstream_mode_commands() {
    let (Some(tiny), Some(tiny_auth)) = (
        tinyproxy(None).await,
        tinyproxy(Some(("user", "pass"))).await,
    ) else {
        return;
    };
    if program("curl").is_none() {
        return;
    }
    let dir = TempDir::new("cli-upstream");
    let origin = http_origin().await;
    let (https, origin_ca) = https_origin(&dir).await;
    let (front, front_ca) = tls_front(tiny.addr, &dir).await;
    let trusted = dir.path().join("trusted.pem");
    let pems = [&origin_ca, &front_ca]
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read CA"))
        .collect::<String>();
    std::fs::write(&trusted, pems).expect("write trusted");
    let trust = format!("ssl_verify_upstream_trusted_ca={}", trusted.display());
    let socks = socks5_server(Some(("user", "pass"))).await;

    let http_mode = format!("upstream:http://{}", tiny.addr);
    let auth_mode = format!("upstream:http://{}", tiny_auth.addr);
    let https_mode = format!("upstream:https://localhost:{}", front.port());
    let socks_mode = format!("upstream:socks5://user:pass@{}", socks.addr);
    let cases: [&[&str]; 4] = [
        &["-m", &http_mode, "--set", &trust],
        &[
            "-m",
            &auth_mode,
            "--set",
            "upstream_auth=user:pass",
            "--set",
            &trust,
        ],
        &["-m", &https_mode, "--set", &trust],
        &["-m", &socks_mode, "--set", &trust],
    ];
    for args in cases {
        let w = Waylay::start(args).await;
        let proxy = format!("http://127.0.0.1:{}", w.port);
        let ca = w.ca().display().to_string();
        let plain = curl(&["-x", &proxy, &format!("http://{origin}/p")]).await;
        assert_eq!(
            plain,
            Ok(format!("origin GET /p host={origin}")),
            "{args:?}"
        );
        let url = format!("https://localhost:{}/s", https.port());
        let tls = curl(&["-x", &proxy, "--cacert", &ca, &url]).await;
        assert_eq!(
            tls,
            Ok(format!("origin GET /s host=localhost:{}", https.port())),
            "{args:?}"
        );
    }
    assert!(tiny.log().contains(&format!("http://{origin}/p")));
    assert!(tiny_auth.log().contains(&format!("http://{origin}/p")));
    assert!(!socks.targets().is_empty());
}
