//! In-process raw TCP origins on `127.0.0.1:0` (a line protocol, a length-prefixed binary
//! protocol, a server that speaks first, one that resets mid-stream, one that never reads),
//! the same protocols over TLS, and a client helper opening a CONNECT tunnel through the
//! proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::proxy::TempDir;

/// A running test origin: its address, and what it received over all its connections.
#[derive(Debug, Clone)]
pub struct TcpOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

impl TcpOrigin {
    /// Every byte received so far, all connections in arrival order.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    fn record(&self, bytes: &[u8]) {
        if let Ok(mut r) = self.received.lock() {
            r.extend_from_slice(bytes);
        }
    }
}

/// Starts an origin that runs `serve` for every accepted connection.
async fn spawn_origin<F, Fut>(serve: F) -> TcpOrigin
where
    F: Fn(TcpStream, TcpOrigin) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let origin = TcpOrigin {
        addr: l.local_addr().expect("addr"),
        received: Arc::default(),
        connections: Arc::default(),
    };
    let o = origin.clone();
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            o.connections.fetch_add(1, Ordering::Relaxed);
            actix::spawn(serve(s, o.clone()));
        }
    });
    origin
}

/// Answers every line `x\n` with `echo: x\n`; closes when the client closes.
async fn echo_lines<S: AsyncRead + AsyncWrite + Unpin>(s: S, origin: TcpOrigin) {
    let (r, mut w) = tokio::io::split(s);
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        origin.record(&line);
        let mut out = b"echo: ".to_vec();
        out.extend_from_slice(&line);
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// A line protocol: every line `x\n` is answered `echo: x\n`.
pub async fn tcp_line_origin() -> TcpOrigin {
    spawn_origin(echo_lines).await
}

/// A server that speaks first: sends `banner` on accept, then serves the line protocol of
/// [`tcp_line_origin`].
pub async fn tcp_banner_origin(banner: &'static str) -> TcpOrigin {
    spawn_origin(move |mut s: TcpStream, o| async move {
        if s.write_all(banner.as_bytes()).await.is_ok() {
            echo_lines(s, o).await;
        }
    })
    .await
}

/// A binary protocol: frames of a 4-byte big-endian length and that many bytes, each answered
/// with a frame of the same length whose bytes are the request's, inverted (`!b`).
pub async fn tcp_binary_origin() -> TcpOrigin {
    spawn_origin(|s: TcpStream, o: TcpOrigin| async move {
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        loop {
            let mut len = [0u8; 4];
            if r.read_exact(&mut len).await.is_err() {
                break;
            }
            let n = u32::from_be_bytes(len) as usize;
            let mut payload = vec![0u8; n];
            if r.read_exact(&mut payload).await.is_err() {
                break;
            }
            o.record(&len);
            o.record(&payload);
            for b in &mut payload {
                *b = !*b;
            }
            if w.write_all(&len).await.is_err() || w.write_all(&payload).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    })
    .await
}

/// Reads `after` bytes (answering nothing), then resets the connection (RST).
pub async fn tcp_reset_origin(after: usize) -> TcpOrigin {
    spawn_origin(move |mut s: TcpStream, o: TcpOrigin| async move {
        let mut buf = vec![0u8; after];
        if s.read_exact(&mut buf).await.is_ok() {
            o.record(&buf);
        }
        let _ = s.set_zero_linger();
        drop(s);
    })
    .await
}

/// Accepts connections and never reads from them (for backpressure tests); each is held for
/// `hold`, then closed.
pub async fn tcp_stalled_origin(hold: Duration) -> TcpOrigin {
    spawn_origin(move |s: TcpStream, _| async move {
        tokio::time::sleep(hold).await;
        drop(s);
    })
    .await
}

/// Starts a TLS origin for `localhost` and `127.0.0.1` (no ALPN), its certificate issued by
/// a test CA minted now, that runs `serve` on every handshaken connection; returns it and the
/// CA certificate's PEM file (written in `dir`).
async fn spawn_tls_origin<F, Fut>(dir: &TempDir, serve: F) -> (TcpOrigin, PathBuf)
where
    F: Fn(TlsStream<TcpStream>, TcpOrigin) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (acceptor, ca_file) = crate::proxy::test_tls_acceptor(dir, "tcp-origin-ca.pem", &[]);
    let origin = spawn_origin(move |s: TcpStream, o: TcpOrigin| {
        let acceptor = acceptor.clone();
        let serve = serve.clone();
        async move {
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await
            {
                serve(tls, o).await;
            }
        }
    })
    .await;
    (origin, ca_file)
}

/// [`tcp_line_origin`] over TLS: returns the origin and its CA certificate's PEM file.
pub async fn tls_line_origin(dir: &TempDir) -> (TcpOrigin, PathBuf) {
    spawn_tls_origin(dir, echo_lines).await
}

/// [`tcp_banner_origin`] over TLS: sends `banner` once the handshake is done, then serves
/// the line protocol.
pub async fn tls_banner_origin(dir: &TempDir, banner: &'static str) -> (TcpOrigin, PathBuf) {
    spawn_tls_origin(dir, move |mut s: TlsStream<TcpStream>, o| async move {
        if s.write_all(banner.as_bytes()).await.is_ok() && s.flush().await.is_ok() {
            echo_lines(s, o).await;
        }
    })
    .await
}

/// [`tcp_reset_origin`] over TLS: reads `after` decrypted bytes (answering nothing), then
/// resets the TCP connection with no TLS close_notify.
pub async fn tls_reset_origin(dir: &TempDir, after: usize) -> (TcpOrigin, PathBuf) {
    spawn_tls_origin(dir, move |mut s: TlsStream<TcpStream>, o| async move {
        let mut buf = vec![0u8; after];
        if s.read_exact(&mut buf).await.is_ok() {
            o.record(&buf);
        }
        let _ = s.get_ref().0.set_zero_linger();
        drop(s);
    })
    .await
}

/// Opens a CONNECT tunnel to `target` (`host:port`) through the proxy at `proxy`; returns the
/// stream once the proxy answered 200.
pub async fn connect_tunnel(proxy: SocketAddr, target: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::Error::other("proxy closed during CONNECT"));
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(s)
}
