//! A WebSocket echo origin (plain and TLS) that records what reaches it, and WebSocket
//! clients that go through the proxy (absolute-form upgrade, inside CONNECT, and wss inside
//! an intercepted TLS tunnel).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::proxy::TempDir;

/// Any stream a test WebSocket runs on.
pub trait TestIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> TestIo for T {}

/// A WebSocket client (or server side) over any test stream.
pub type WsClient = WebSocketStream<Box<dyn TestIo>>;

/// Large enough for the 16 MiB messages the tests send, with room to spare.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// A handshake request's header fields, in order, names lower-case.
pub type HeaderList = Vec<(String, String)>;

/// What the echo origin saw, shared with the test.
#[derive(Debug, Clone, Default)]
pub struct WsRecord {
    /// The handshake request headers of each connection (lower-case names).
    pub handshakes: Arc<Mutex<Vec<HeaderList>>>,
    /// Every message received, in order, over all connections (pings and pongs included;
    /// close frames as `Message::Close`).
    pub received: Arc<Mutex<Vec<Message>>>,
    /// Set when a connection ended with an error (no close frame).
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Messages sent by `flood` so far.
    pub flooded: Arc<std::sync::atomic::AtomicUsize>,
}

impl WsRecord {
    /// The messages received so far.
    pub fn received(&self) -> Vec<Message> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The handshake headers of the connections so far.
    pub fn handshakes(&self) -> Vec<HeaderList> {
        self.handshakes
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

/// A WebSocket echo origin on `127.0.0.1:0`.
///
/// It echoes text and binary messages, answers close frames with the same code, and obeys
/// text commands: `close-me` (it closes with 4001 "server bye"), `drop-me` (it drops the
/// TCP connection without a close frame), `ping-me` (it sends a ping `srv`), `stall` (it
/// stops reading for 30 s) and `flood` (it sends up to 256 binary messages of 1 MiB,
/// counting them in [`WsRecord::flooded`], then goes on echoing).
#[derive(Debug)]
pub struct WsOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub record: WsRecord,
    /// For a TLS origin: the PEM file of the CA that issued its certificate.
    pub ca_file: Option<std::path::PathBuf>,
}

impl WsOrigin {
    /// A plain `ws://` origin.
    pub async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = l.local_addr().expect("addr");
        let record = WsRecord::default();
        let rec = record.clone();
        actix::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                actix::spawn(serve_ws(Box::new(s), rec.clone()));
            }
        });
        Self {
            addr,
            record,
            ca_file: None,
        }
    }

    /// A `wss://` origin for `localhost`, its certificate issued by a CA minted now (its
    /// PEM file is written in `dir`).
    pub async fn start_tls(dir: &TempDir) -> Self {
        let (acceptor, ca_file) =
            crate::proxy::test_tls_acceptor(dir, "ws-origin-ca.pem", &[b"http/1.1"]);
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = l.local_addr().expect("addr");
        let record = WsRecord::default();
        let rec = record.clone();
        actix::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                let rec = rec.clone();
                actix::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        serve_ws(Box::new(tls), rec).await;
                    }
                });
            }
        });
        Self {
            addr,
            record,
            ca_file: Some(ca_file),
        }
    }
}

async fn serve_ws(io: Box<dyn TestIo>, rec: WsRecord) {
    let handshakes = rec.handshakes.clone();
    #[expect(
        clippy::result_large_err,
        reason = "the signature is tungstenite's handshake callback"
    )]
    let callback = move |req: &Request, resp: Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if let Ok(mut h) = handshakes.lock() {
            h.push(headers);
        }
        Ok(resp)
    };
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(ws_config())).await
    else {
        return;
    };
    // Bounded: the test's timeouts end every conversation; a stray connection is dropped
    // with the test's actix system.
    while let Some(m) = ws.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                if let Ok(mut v) = rec.errors.lock() {
                    v.push(e.to_string());
                }
                return;
            }
        };
        if let Ok(mut v) = rec.received.lock() {
            v.push(m.clone());
        }
        let reply = match &m {
            Message::Text(t) if t.as_str() == "close-me" => {
                Some(Message::Close(Some(CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "server bye".into(),
                })))
            }
            Message::Text(t) if t.as_str() == "drop-me" => return,
            Message::Text(t) if t.as_str() == "ping-me" => {
                Some(Message::Ping(Bytes::from_static(b"srv")))
            }
            Message::Text(t) if t.as_str() == "stall" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                None
            }
            Message::Text(t) if t.as_str() == "flood" => {
                let chunk = Bytes::from(vec![7u8; 1 << 20]);
                for _ in 0..256 {
                    if ws.send(Message::Binary(chunk.clone())).await.is_err() {
                        return;
                    }
                    rec.flooded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                None
            }
            Message::Text(_) | Message::Binary(_) => Some(m),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => None,
        };
        if let Some(r) = reply
            && ws.send(r).await.is_err()
        {
            return;
        }
    }
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || s.read(&mut b).await? == 0 {
            return Err(std::io::Error::other(format!(
                "no complete response head: {:?}",
                String::from_utf8_lossy(&head)
            )));
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A WebSocket through the proxy's own port: `GET ws-origin-url` in absolute form with the
/// upgrade headers (plus `extra` header lines, e.g. an extension offer). Returns the stream
/// and the proxy's 101 response head.
pub async fn ws_through_proxy(
    proxy: SocketAddr,
    origin: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<(WsClient, String)> {
    let mut s = TcpStream::connect(proxy).await?;
    let mut req = format!(
        "GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let head = read_head(&mut s).await?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(head));
    }
    let io: Box<dyn TestIo> = Box::new(s);
    let ws = WebSocketStream::from_raw_socket(io, Role::Client, Some(ws_config())).await;
    Ok((ws, head))
}

/// A WebSocket inside a CONNECT tunnel to `target` (`host:port`), plain `ws://`.
pub async fn ws_in_connect(
    proxy: SocketAddr,
    target: &str,
    path: &str,
) -> std::io::Result<WsClient> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    let head = read_head(&mut s).await?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(head));
    }
    let io: Box<dyn TestIo> = Box::new(s);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{target}{path}"),
        io,
        Some(ws_config()),
    )
    .await
    .map_err(std::io::Error::other)?;
    Ok(ws)
}

/// A `wss://` WebSocket inside a CONNECT tunnel to `target` that the proxy intercepts,
/// trusting only `ca_pem` (the proxy's CA).
pub async fn wss_in_connect(
    proxy: SocketAddr,
    target: &str,
    server_name: &str,
    ca_pem: &str,
    path: &str,
) -> std::io::Result<WsClient> {
    let tls = crate::proxy::connect_tls(proxy, target, server_name, ca_pem, &[b"http/1.1"]).await?;
    let io: Box<dyn TestIo> = Box::new(tls);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("wss://{target}{path}"),
        io,
        Some(ws_config()),
    )
    .await
    .map_err(std::io::Error::other)?;
    Ok(ws)
}

/// The next data or control message on `ws` within 20 s (`None` when the stream ended or
/// failed, or on timeout).
pub async fn ws_next(ws: &mut WsClient) -> Option<Result<Message, String>> {
    match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        Ok(Some(Ok(m))) => Some(Ok(m)),
        Ok(Some(Err(e))) => Some(Err(e.to_string())),
        Ok(None) => None,
        Err(_) => Some(Err("timed out".into())),
    }
}
