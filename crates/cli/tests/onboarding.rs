//! The CA onboarding page in a real browser: headless Chromium through the `waylay` binary
//! loads `http://mitm.it/`, and the certificate downloads are the confdir's files, byte for
//! byte.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use waylay_testkit::peers::program;
use waylay_testkit::{KillOnDrop, free_port, wait_listening};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("waylay-onb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

fn start_waylay(confdir: &Path, port: u16) -> KillOnDrop {
    let mut child = Command::new(BIN)
        .args(["-q", "-p", &port.to_string()])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, port);
    KillOnDrop(child)
}

/// `GET url` through the proxy; the status line and the body.
fn proxy_get(port: u16, url: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: mitm.it\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, resp[end + 4..].to_vec())
}

/// Runs `cmd` until it exits or `limit` passes (then kills it); its stdout.
fn run_bounded(mut cmd: Command, limit: Duration) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chromium_loads_the_onboarding_page_and_the_downloads_are_the_ca_files() {
    let Some(chromium) = program("chromium") else {
        return;
    };
    let confdir = temp_dir("confdir");
    let profile = temp_dir("profile");
    let port = free_port();
    let _waylay = start_waylay(&confdir, port);

    let mut cmd = Command::new(chromium);
    cmd.args([
        &format!("--proxy-server=http://127.0.0.1:{port}"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        &format!("--user-data-dir={}", profile.display()),
        "--dump-dom",
        "http://mitm.it/",
    ]);
    let (status, dom, stderr) = run_bounded(cmd, Duration::from_secs(90));
    assert!(status.success(), "chromium failed: {status}\n{stderr}");
    assert!(
        dom.contains("Install waylay's CA certificate"),
        "the page did not load:\n{dom}\n{stderr}"
    );
    for link in [
        "href=\"/cert/pem\"",
        "href=\"/cert/cer\"",
        "href=\"/cert/p12\"",
    ] {
        assert!(dom.contains(link), "{link} missing:\n{dom}");
    }

    let (st, pem) = proxy_get(port, "http://mitm.it/cert/pem");
    assert!(st.starts_with("HTTP/1.1 200"), "{st}");
    let file = std::fs::read(confdir.join("waylay-ca-cert.pem")).expect("the CA PEM file");
    assert_eq!(pem, file, "PEM download differs from waylay-ca-cert.pem");
    let (st, der) = proxy_get(port, "http://mitm.it/cert/cer");
    assert!(st.starts_with("HTTP/1.1 200"), "{st}");
    let file = std::fs::read(confdir.join("waylay-ca-cert.cer")).expect("the CA DER file");
    assert_eq!(der, file, "CER download differs from waylay-ca-cert.cer");

    // The PKCS#12 download holds that certificate, as openssl reads it (empty password).
    let (st, p12) = proxy_get(port, "http://mitm.it/cert/p12");
    assert!(st.starts_with("HTTP/1.1 200"), "{st}");
    if let Some(openssl) = program("openssl") {
        let p12_path = profile.join("ca.p12");
        std::fs::write(&p12_path, &p12).expect("write p12");
        let out = Command::new(openssl)
            .args(["pkcs12", "-in"])
            .arg(&p12_path)
            .args(["-nokeys", "-passin", "pass:"])
            .output()
            .expect("openssl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = |s: &str| {
            s.lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
                .take_while(|l| !l.starts_with("-----END CERTIFICATE"))
                .collect::<String>()
        };
        let pem_text = String::from_utf8(pem).expect("PEM is text");
        assert_eq!(
            cert(&text),
            cert(&pem_text),
            "the p12 holds another certificate"
        );
    }

    let _ = std::fs::remove_dir_all(&confdir);
    let _ = std::fs::remove_dir_all(&profile);
}
