//! `--mode reverse:tcp://HOST:PORT` and `reverse:tls://HOST:PORT` end to end on loopback:
//! every connection is relayed as raw TCP to the target through the TCP layer (`tcp_*`
//! hooks), a client's TLS is terminated with a leaf for its SNI, and a `tls://` target gets
//! TLS from waylay whatever the client speaks. Real clients: tokio and rustls sockets, and
//! `openssl s_client`.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use waylay_core::hooks::TlsData;
use waylay_core::{Addon, TcpFlow};
use waylay_layers::Proxy;
use waylay_testkit::peers::program;
use waylay_testkit::{TempDir, TestProxy, tcp_line_origin, tls_line_origin, within};

type Log = Arc<Mutex<Vec<String>>>;

/// Records the TCP and TLS events with what they say.
#[derive(Clone, Default)]
struct Recorder(Log);

impl Recorder {
    fn push(&self, s: String) {
        self.0.lock().expect("log").push(s);
    }

    fn log(&self) -> Vec<String> {
        self.0.lock().expect("log").clone()
    }

    /// Waits (bounded) until an entry starts with `prefix`.
    async fn wait_for(&self, prefix: &str) -> Vec<String> {
        for _ in 0..500 {
            let log = self.log();
            if log.iter().any(|e| e.starts_with(prefix)) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {prefix:?} in {:?}", self.log());
    }
}

impl Addon for Recorder {
    async fn tcp_start(&mut self, f: &mut TcpFlow) {
        self.push(format!("tcp_start {}", f.client.proxy_mode));
    }
    async fn tcp_message(&mut self, f: &mut TcpFlow) {
        if let Some(m) = f.messages.last() {
            let dir = if m.from_client { "c>s" } else { "s>c" };
            self.push(format!(
                "tcp_message {dir} {}",
                String::from_utf8_lossy(&m.content).trim_end()
            ));
        }
    }
    async fn tcp_error(&mut self, f: &mut TcpFlow) {
        let msg = f.error.as_ref().map(|e| e.msg.clone()).unwrap_or_default();
        self.push(format!("tcp_error {msg}"));
    }
    async fn tcp_end(&mut self, _f: &mut TcpFlow) {
        self.push("tcp_end".into());
    }
    async fn tls_established_client(&mut self, d: &mut TlsData) {
        self.push(format!("tls_established_client sni={:?}", d.sni));
    }
    async fn tls_established_server(&mut self, d: &mut TlsData) {
        self.push(format!("tls_established_server sni={:?}", d.sni));
    }
    async fn tls_failed_server(&mut self, d: &mut TlsData) {
        self.push(format!(
            "tls_failed_server {}",
            d.error.clone().unwrap_or_default()
        ));
    }
}

/// A TLS client straight to `addr`, for `name`, trusting only `ca_pem`.
async fn tls_to(
    addr: std::net::SocketAddr,
    name: &str,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(waylay_layers::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
    within(
        "TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("TLS with the proxy")
}

/// Sends `line` and reads the echo line back.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, line: &str) {
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    s.flush().await.expect("flush");
    let want = format!("echo: {line}\n");
    let mut got = vec![0u8; want.len()];
    within("echo", s.read_exact(&mut got)).await.expect("read");
    assert_eq!(String::from_utf8_lossy(&got), want);
}

#[actix_rt::test]
async fn tcp_target_relays_plain_and_tls_clients_through_the_tcp_layer() {
    let origin = tcp_line_origin().await;
    let rec = Recorder::default();
    let mode = format!("reverse:tcp://{}", origin.addr);
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode={mode}"))
            .addon(rec.clone()),
    )
    .await;

    // A plain client: raw TCP, with the tcp_* hooks and the mode on the flow's client.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    echo(&mut s, "hello").await;
    echo(&mut s, "again").await;
    drop(s);
    let log = rec.wait_for("tcp_end").await;
    assert_eq!(log[0], format!("tcp_start {mode}"), "{log:?}");
    assert!(log.contains(&"tcp_message c>s hello".to_owned()), "{log:?}");
    assert!(
        log.contains(&"tcp_message s>c echo: hello".to_owned()),
        "{log:?}"
    );

    // A TLS client: its TLS is terminated (a leaf for its SNI), plain bytes to the target.
    rec.0.lock().expect("log").clear();
    let mut tls = tls_to(proxy.addr(), "service.test", &proxy.ca_pem).await;
    echo(&mut tls, "secret").await;
    tls.shutdown().await.expect("close_notify");
    drop(tls);
    let log = rec.wait_for("tcp_end").await;
    assert!(
        log.contains(&"tls_established_client sni=Some(\"service.test\")".to_owned()),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|e| e.starts_with("tls_established_server")),
        "{log:?}"
    );
    assert!(
        log.contains(&"tcp_message c>s secret".to_owned()),
        "{log:?}"
    );
    let received = String::from_utf8_lossy(&origin.received()).into_owned();
    assert_eq!(received, "hello\nagain\nsecret\n");
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn tls_target_gets_tls_from_plain_and_tls_clients() {
    let dir = TempDir::new("reverse-tls");
    let (origin, origin_ca) = tls_line_origin(&dir).await;
    let rec = Recorder::default();
    let port = origin.addr.port();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:tls://localhost:{port}"))
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .addon(rec.clone()),
    )
    .await;

    // A plain client: waylay adds the TLS towards the target (SNI: the target's name).
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    echo(&mut s, "plain").await;
    drop(s);
    let log = rec.wait_for("tcp_end").await;
    assert!(
        log.contains(&"tls_established_server sni=Some(\"localhost\")".to_owned()),
        "{log:?}"
    );

    // A TLS client naming another host: terminated with a leaf for its name, and the target
    // still gets the target's name as SNI (keep_host_header is off).
    rec.0.lock().expect("log").clear();
    let mut tls = tls_to(proxy.addr(), "front.test", &proxy.ca_pem).await;
    echo(&mut tls, "wrapped").await;
    tls.shutdown().await.expect("close_notify");
    drop(tls);
    let log = rec.wait_for("tcp_end").await;
    assert!(
        log.contains(&"tls_established_client sni=Some(\"front.test\")".to_owned()),
        "{log:?}"
    );
    assert!(
        log.contains(&"tls_established_server sni=Some(\"localhost\")".to_owned()),
        "{log:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&origin.received()),
        "plain\nwrapped\n"
    );
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn openssl_s_client_through_a_tls_target() {
    let Some(openssl) = program("openssl") else {
        return;
    };
    let dir = TempDir::new("reverse-tls-openssl");
    let (origin, origin_ca) = tls_line_origin(&dir).await;
    let port = origin.addr.port();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:tls://localhost:{port}"))
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            )),
    )
    .await;
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("write CA");
    let mut child = tokio::process::Command::new(openssl)
        .args(["s_client", "-quiet", "-verify_return_error"])
        .args(["-connect", &proxy.addr().to_string()])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"from openssl\n").await.expect("write");
    stdin.flush().await.expect("flush");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = within("openssl echo", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert_eq!(line, "echo: from openssl");
    drop(stdin);
    let _ = child.kill().await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_tls_target_failing_verification_then_succeeding() {
    let dir = TempDir::new("reverse-tls-fail");
    let (origin, _untrusted) = tls_line_origin(&dir).await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!(
                "mode=reverse:tls://localhost:{}",
                origin.addr.port()
            ))
            .addon(rec.clone()),
    )
    .await;
    // The target's certificate is not trusted: the client is closed, tcp_error says why.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let _ = s.write_all(b"nope\n").await;
    let mut buf = Vec::new();
    let _ = within("closed", s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    let log = rec.wait_for("tcp_error").await;
    assert!(
        log.iter()
            .any(|e| e.starts_with("tls_failed_server") && e.contains("certificate")),
        "{log:?}"
    );
    // Turned off verification: the next connection works.
    proxy
        .running()
        .manager()
        .set(&["ssl_insecure=true"])
        .await
        .expect("set");
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    echo(&mut s, "now").await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn a_refused_tcp_target_then_one_that_listens() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let rec = Recorder::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:tcp://{addr}"))
            .addon(rec.clone()),
    )
    .await;
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    let _ = s.write_all(b"x\n").await;
    let mut buf = Vec::new();
    let _ = within("closed", s.read_to_end(&mut buf)).await;
    let log = rec.wait_for("tcp_error").await;
    assert!(
        log.iter()
            .any(|e| e.starts_with("tcp_error") && e.contains(&addr.to_string())),
        "{log:?}"
    );
    // The target comes up on that port: the proxy serves it.
    let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
        return; // the port was taken meanwhile
    };
    actix_rt::spawn(async move {
        if let Ok((s, _)) = listener.accept().await {
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if w.write_all(format!("echo: {l}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    echo(&mut s, "up").await;
    proxy.shutdown().await;
}

#[actix_rt::test]
async fn keep_host_header_with_a_tls_target_and_a_plain_client_still_adds_tls() {
    let dir = TempDir::new("reverse-tls-keep");
    let (origin, origin_ca) = tls_line_origin(&dir).await;
    let rec = Recorder::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!(
                "mode=reverse:tls://localhost:{}",
                origin.addr.port()
            ))
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .set("keep_host_header=true")
            .addon(rec.clone()),
    )
    .await;
    // No client SNI to keep: the target's name.
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    echo(&mut s, "kept").await;
    drop(s);
    let log = rec.wait_for("tcp_end").await;
    assert!(
        log.contains(&"tls_established_server sni=Some(\"localhost\")".to_owned()),
        "{log:?}"
    );
    // A TLS client's SNI is kept towards the target.
    rec.0.lock().expect("log").clear();
    let mut tls = tls_to(proxy.addr(), "localhost", &proxy.ca_pem).await;
    echo(&mut tls, "sni kept").await;
    tls.shutdown().await.expect("close_notify");
    let log = rec.wait_for("tcp_end").await;
    assert!(
        log.contains(&"tls_established_server sni=Some(\"localhost\")".to_owned()),
        "{log:?}"
    );
    proxy.shutdown().await;
}

/// Records `next_layer` in a log the test's server writes to as well.
struct NextLayerLog(Log);

impl Addon for NextLayerLog {
    async fn next_layer(&mut self, _d: &mut waylay_core::hooks::NextLayer) {
        self.0.lock().expect("log").push("next_layer".into());
    }
}

/// Regression: a reverse `tcp://` target was dialed only once the client's first bytes had
/// decided the layer, so a protocol where the server speaks first (SMTP, FTP, SSH) waited
/// out the detection timeout before its greeting. The target is now dialed at once: the
/// server accepts before the layer is chosen (its greeting chooses raw TCP), the client gets
/// the greeting without sending a byte, and the greeting is relayed once, in order.
#[actix_rt::test]
async fn a_reverse_tcp_target_that_speaks_first_is_dialed_before_the_client_sends() {
    let log: Log = Log::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = listener.local_addr().expect("addr");
    let server_log = log.clone();
    actix_rt::spawn(async move {
        let Ok((s, _)) = listener.accept().await else {
            return;
        };
        server_log
            .lock()
            .expect("log")
            .push("server accepted".into());
        let mut s = BufReader::new(s);
        if s.get_mut().write_all(b"220 ready\r\n").await.is_err() {
            return;
        }
        let mut line = String::new();
        while matches!(s.read_line(&mut line).await, Ok(n) if n > 0) {
            let _ = s
                .get_mut()
                .write_all(format!("echo: {line}").as_bytes())
                .await;
            line.clear();
        }
    });
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!("mode=reverse:tcp://{target}"))
            .addon(NextLayerLog(log.clone())),
    )
    .await;
    let mut client = BufReader::new(TcpStream::connect(proxy.addr()).await.expect("connect"));
    let mut greeting = String::new();
    within("the greeting", client.read_line(&mut greeting))
        .await
        .expect("read");
    assert_eq!(greeting, "220 ready\r\n");
    echo(&mut client, "HELO client").await;
    let order = log.lock().expect("log").clone();
    assert_eq!(order, ["server accepted", "next_layer"]);
    proxy.shutdown().await;
}
