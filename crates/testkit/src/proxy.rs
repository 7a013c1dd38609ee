//! The real proxy on an ephemeral loopback port, test origins, and plain clients for
//! end-to-end tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use waylay_layers::tls::{CertCache, CertificateAuthority};
use waylay_layers::{ProxyBuilder, RunningProxy};

/// A fresh, empty directory under the system temp dir (removed on drop).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(label: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "waylay-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real proxy, started in the current actix system on `127.0.0.1:0` with one worker and
/// a fresh CA in a temporary confdir.
#[derive(Debug)]
pub struct TestProxy {
    proxy: Option<RunningProxy>,
    /// The proxy's CA certificate (PEM), for clients to trust.
    pub ca_pem: String,
    _dir: TempDir,
}

impl TestProxy {
    /// Starts the proxy built by `builder` (addons and options already added).
    pub async fn start(builder: ProxyBuilder) -> Self {
        let dir = TempDir::new("proxy");
        let proxy = builder
            .set(format!("confdir={}", dir.path().display()))
            .set("workers=1")
            .listen("127.0.0.1:0")
            .start()
            .await
            .expect("proxy starts");
        let ca_pem = proxy.ca_cert_pem();
        Self {
            proxy: Some(proxy),
            ca_pem,
            _dir: dir,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.proxy
            .as_ref()
            .map(RunningProxy::local_addr)
            .expect("running")
    }

    /// The running proxy.
    pub fn running(&self) -> &RunningProxy {
        self.proxy.as_ref().expect("running")
    }

    /// Shuts it down (addons get `done`).
    pub async fn shutdown(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
    }
}

/// What the test origins answer: `GET /bytes/N` gives N bytes of a pattern, `/status/N`
/// that status, `POST /echo` the request body; anything else `origin <METHOD> <path>`.
async fn origin_service(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut status = 200;
    let out = if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
    } else if let Some(s) = path.strip_prefix("/status/") {
        status = s.parse().unwrap_or(200);
        Bytes::new()
    } else if path == "/echo" {
        body
    } else {
        Bytes::from(format!("origin {method} {path} host={host}"))
    };
    let mut r = hyper::Response::new(Full::new(out));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut()
        .insert("x-origin", hyper::header::HeaderValue::from_static("1"));
    Ok(r)
}

async fn serve_origin<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(origin_service))
        .await;
}

/// A plain HTTP/1.1 origin on `127.0.0.1:0`; returns its address.
pub async fn http_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("addr");
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            actix::spawn(serve_origin(s));
        }
    });
    addr
}

/// The origin of [`http_origin`], on IPv6 loopback (`[::1]`).
pub async fn http_origin_v6() -> SocketAddr {
    let l = TcpListener::bind("[::1]:0")
        .await
        .expect("bind origin on ::1");
    let addr = l.local_addr().expect("addr");
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            actix::spawn(serve_origin(s));
        }
    });
    addr
}

/// A TLS acceptor for `localhost` and `127.0.0.1` offering `alpn`, its certificate issued by
/// a test CA minted now, whose PEM is written to `dir/ca_file_name`; returns both.
pub fn test_tls_acceptor(
    dir: &TempDir,
    ca_file_name: &str,
    alpn: &[&[u8]],
) -> (tokio_rustls::TlsAcceptor, PathBuf) {
    let ca = Arc::new(CertificateAuthority::generate().expect("test CA"));
    let ca_file = dir.path().join(ca_file_name);
    std::fs::write(&ca_file, ca.cert_pem()).expect("write CA");
    let certs = CertCache::new(ca).expect("cert cache");
    let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
    let config = certs
        .server_config(&["localhost", "127.0.0.1"], &alpn)
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(config), ca_file)
}

/// An HTTPS (HTTP/1.1) origin for `localhost` on `127.0.0.1:0`, its certificate issued by a
/// test CA minted now; returns the address and the CA certificate PEM file.
pub async fn https_origin(dir: &TempDir) -> (SocketAddr, PathBuf) {
    https_origin_offering(dir, &[b"http/1.1"]).await
}

/// [`https_origin`] offering HTTP/2 as well (ALPN `h2`, then `http/1.1`): each connection is
/// served in the protocol it negotiated.
pub async fn https_origin_h2(dir: &TempDir) -> (SocketAddr, PathBuf) {
    https_origin_offering(dir, &[b"h2", b"http/1.1"]).await
}

async fn https_origin_offering(dir: &TempDir, alpn: &[&[u8]]) -> (SocketAddr, PathBuf) {
    let (acceptor, ca_file) = test_tls_acceptor(dir, "origin-ca.pem", alpn);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("addr");
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            actix::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service_fn(origin_service))
                    .await;
                } else {
                    serve_origin(tls).await;
                }
            });
        }
    });
    (addr, ca_file)
}

/// Awaits `fut` for at most 20 s, and panics naming `what` when it takes longer: every await
/// of a test is bounded.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Reads exactly `n` bytes (within 20 s).
pub async fn read_n<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within("read", r.read_exact(&mut buf))
        .await
        .expect("read the expected bytes");
    buf
}

/// Reads one response off a kept-alive stream (each read within 20 s): its head, lowercase,
/// and its body, framed by `Content-Length` (none without one).
///
/// # Panics
///
/// When the stream closes or stalls inside the response.
pub async fn read_sized_response<S: AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within("response head", s.read(&mut b))
            .await
            .expect("read head");
        assert_eq!(
            n,
            1,
            "closed in the head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("a length"));
    let mut body = vec![0u8; len];
    within("response body", s.read_exact(&mut body))
        .await
        .expect("read body");
    (head, body)
}

/// Reads until the peer closes or 10 s pass.
pub async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Sends raw bytes to `addr` and returns everything it answers until it closes.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned()
}

/// Sends raw bytes to `addr` and returns the raw answer until it closes.
pub async fn raw_request_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_to_close(&mut s).await
}

/// A GET through the proxy for `url` (absolute-form, `Connection: close`); the whole answer.
pub async fn proxy_get(proxy: SocketAddr, url: &str) -> String {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw_request(proxy, req.as_bytes()).await
}

/// Opens a CONNECT tunnel to `target` through the proxy and a TLS session in it, trusting
/// only `ca_pem`, offering `alpn`; returns the TLS stream.
pub async fn connect_tls(
    proxy: SocketAddr,
    target: &str,
    server_name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = crate::tcp_origin::connect_tunnel(proxy, target).await?;
    tls_client(s, server_name, ca_pem, alpn).await
}

/// A SOCKS5 CONNECT (no authentication) through `proxy` to `host:port`, by hand: the
/// stream once the proxy answered "succeeded".
pub async fn socks5_tunnel(proxy: SocketAddr, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    let _ = s.set_nodelay(true);
    let name_len = u8::try_from(host.len()).map_err(std::io::Error::other)?;
    let mut hello = vec![5, 1, 0, 5, 1, 0, 3, name_len];
    hello.extend_from_slice(host.as_bytes());
    hello.extend_from_slice(&port.to_be_bytes());
    s.write_all(&hello).await?;
    // Method selection (2 bytes), then a reply with an IPv4 bound address (10 bytes).
    let mut answer = [0u8; 12];
    s.read_exact(&mut answer).await?;
    if answer[..4] != [5, 0, 5, 0] {
        return Err(std::io::Error::other(format!(
            "SOCKS5 proxy refused: {answer:?}"
        )));
    }
    Ok(s)
}

/// TLS through a SOCKS5 proxy ([`socks5_tunnel`]), as [`connect_tls`] through a CONNECT.
pub async fn connect_tls_socks5(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = socks5_tunnel(proxy, host, port).await?;
    tls_client(s, host, ca_pem, alpn).await
}

async fn tls_client(
    s: TcpStream,
    server_name: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(std::io::Error::other)?)
            .map_err(std::io::Error::other)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(waylay_layers::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
}

/// An addon that handles every HTTP flow hook and changes nothing: with it registered, requests
/// take the proxy's observed path (a flow is built and walked through the hooks) instead of
/// being forwarded as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct Observe;

impl waylay_core::Addon for Observe {
    async fn request_headers(&mut self, _: &mut waylay_core::HttpFlow) {}
    async fn request(&mut self, _: &mut waylay_core::HttpFlow) {}
    async fn response_headers(&mut self, _: &mut waylay_core::HttpFlow) {}
    async fn response(&mut self, _: &mut waylay_core::HttpFlow) {}
    async fn error(&mut self, _: &mut waylay_core::HttpFlow) {}
}

/// An origin speaking raw HTTP/1.1: it records every request head (and body, framed by
/// `Content-Length` or chunked) and answers with `answer(path)`, keeping the connection
/// (at most 100 requests each). Returns its address and the recorded requests, oldest first.
pub async fn scripted_origin(
    answer: fn(&str) -> Vec<u8>,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let log = log.clone();
            actix::spawn(async move {
                let (rd, mut wr) = s.into_split();
                let mut rd = BufReader::new(rd);
                for _ in 0..100 {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        match rd.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let lower = head.to_ascii_lowercase();
                    let mut record = head.clone();
                    if lower.contains("transfer-encoding: chunked") {
                        loop {
                            let mut line = String::new();
                            if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            record.push_str(&line);
                            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                            if n == 0 {
                                // Trailers, up to the empty line.
                                loop {
                                    let mut t = String::new();
                                    if rd.read_line(&mut t).await.unwrap_or(0) == 0 {
                                        return;
                                    }
                                    record.push_str(&t);
                                    if t == "\r\n" {
                                        break;
                                    }
                                }
                                break;
                            }
                            let mut chunk = vec![0; n + 2];
                            if rd.read_exact(&mut chunk).await.is_err() {
                                return;
                            }
                            record.push_str(&String::from_utf8_lossy(&chunk));
                        }
                    } else if let Some(len) = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                    {
                        let mut b = vec![0; len];
                        if rd.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        record.push_str(&String::from_utf8_lossy(&b));
                    }
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    log.lock().expect("log").push(record);
                    if wr.write_all(&answer(&path)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}
