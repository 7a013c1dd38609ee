//! Client replay (`-C`): recorded requests sent again to the live servers, through waylay's
//! own proxy listener, so every replayed flow goes through the addon chain like live
//! traffic and is marked as a replay (`is_replay == "request"`, `~replay` matches it).
//!
//! Each request is sent on a fresh connection to the proxy: absolute-form for `http`, a
//! `CONNECT` tunnel and TLS trusting the proxy's CA for `https`. The request goes out as
//! HTTP/1.1 (a recorded HTTP/2 request included) with its recorded method, path, headers
//! and body; the proxy then dials the server as for any client. A marker header tells the
//! [`ReplayMarker`] addon (registered first) which flows are replays; it removes the header
//! before any other addon or the server sees it. WebSocket handshakes and TCP flows are not
//! replayed (as in mitmproxy).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use waylay_core::hooks::Loader;
use waylay_core::options::OptionValue;
use waylay_core::{Addon, Flow, HookKind, HookSet, HttpFlow, OptionSpec};

/// The header that marks a replayed request between the replayer and [`ReplayMarker`].
pub const MARKER: &str = "x-waylay-client-replay";

/// How long one replayed exchange may take before it is reported as failed.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Marks replayed requests (`is_replay = "request"`) and removes the marker header; declares
/// the client replay options. Register it before every other addon.
#[derive(Debug, Default)]
pub struct ReplayMarker;

impl ReplayMarker {
    /// The options of client replay (mitmproxy's names).
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new(
                "client_replay",
                OptionValue::Seq(Vec::new()),
                "Replay client requests from a saved file (through the proxy, so addons see them).",
            ),
            OptionSpec::new(
                "client_replay_concurrency",
                OptionValue::Int(1),
                "Concurrency limit on in-flight client replay requests: 1, or -1 for no limit.",
            ),
        ]
    }
}

impl Addon for ReplayMarker {
    fn name(&self) -> String {
        "clientplayback".into()
    }

    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Load, HookKind::RequestHeaders])
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if flow.request.headers.remove(MARKER) > 0 {
            flow.is_replay = Some("request".into());
        }
    }
}

/// Why one request could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The flow cannot be replayed (no request to send, a WebSocket, a TCP flow).
    #[error("{0}")]
    NotReplayable(String),
    /// Talking to the proxy failed.
    #[error("replaying {url}: {source}")]
    Io {
        /// The request's URL.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
}

fn io(url: &str) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        url: url.to_owned(),
        source,
    }
}

/// The request of `flow` as HTTP/1.1 bytes (`target` is absolute- or origin-form), marked,
/// with `Connection: close` so the answer ends with the connection.
fn request_bytes(f: &HttpFlow, target: &str) -> Vec<u8> {
    let r = &f.request;
    let body = r.raw_content.clone().unwrap_or_default();
    let mut out = format!("{} {target} HTTP/1.1\r\n", r.method).into_bytes();
    let mut has_host = false;
    for (name, value) in r.headers.fields() {
        let lower = name.to_ascii_lowercase();
        // Framing and connection handling are this exchange's own.
        if matches!(
            lower.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "proxy-connection"
        ) || lower.starts_with(':')
        {
            continue;
        }
        has_host |= lower == "host";
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        out.extend_from_slice(format!("Host: {}\r\n", authority(f)).as_bytes());
    }
    if !body.is_empty() || matches!(r.method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(format!("{MARKER}: 1\r\nConnection: close\r\n\r\n").as_bytes());
    out.extend_from_slice(&body);
    out
}

fn authority(f: &HttpFlow) -> String {
    let r = &f.request;
    let host = if r.host.contains(':') {
        format!("[{}]", r.host)
    } else {
        r.host.to_string()
    };
    format!("{host}:{}", r.port)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, req: &[u8]) -> std::io::Result<()> {
    s.write_all(req).await?;
    s.flush().await?;
    // The proxy's answer is read and dropped: the flow (and the addons) have it.
    let mut buf = vec![0u8; 64 * 1024];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Replays one recorded flow through the proxy at `proxy` (whose CA is `ca_pem`).
pub async fn replay_one(proxy: SocketAddr, ca_pem: &str, flow: &Flow) -> Result<(), ReplayError> {
    let f = match flow {
        Flow::Http(f) => f,
        Flow::Tcp(_) => return Err(ReplayError::NotReplayable("cannot replay TCP flows".into())),
    };
    if f.websocket.is_some() {
        return Err(ReplayError::NotReplayable(
            "cannot replay WebSocket flows".into(),
        ));
    }
    if f.request.method.eq_ignore_ascii_case("CONNECT") {
        return Err(ReplayError::NotReplayable(
            "cannot replay CONNECT requests".into(),
        ));
    }
    let url = f.request.url();
    tracing::debug!(%url, %proxy, "client replay: sending");
    let run = async {
        let mut s = TcpStream::connect(proxy).await.map_err(io(&url))?;
        if f.request.scheme.eq_ignore_ascii_case("https") {
            let auth = authority(f);
            let connect = format!("CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n");
            s.write_all(connect.as_bytes()).await.map_err(io(&url))?;
            read_connect_answer(&mut s).await.map_err(io(&url))?;
            let tls = tls_connector(ca_pem).map_err(io(&url))?;
            let name = rustls_pki_types::ServerName::try_from(f.request.host.to_string())
                .map_err(|e| io(&url)(std::io::Error::other(e)))?;
            let tls = tls.connect(name, s).await.map_err(io(&url))?;
            exchange(tls, &request_bytes(f, &f.request.path))
                .await
                .map_err(io(&url))
        } else {
            exchange(s, &request_bytes(f, &url)).await.map_err(io(&url))
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, run)
        .await
        .map_err(|_| {
            io(&url)(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer",
            ))
        })?
}

/// Reads the proxy's answer to CONNECT; anything but 2xx is an error.
async fn read_connect_answer(s: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || s.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("the proxy closed the CONNECT tunnel"));
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "CONNECT refused: {}",
            line.lines().next().unwrap_or("")
        )))
    }
}

fn tls_connector(ca_pem: &str) -> std::io::Result<tokio_rustls::TlsConnector> {
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
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Replays `flows` through the proxy, `concurrency` at a time (`None`: all at once); a flow
/// that cannot be replayed is logged and skipped. Returns how many were sent.
pub async fn replay_all(
    proxy: SocketAddr,
    ca_pem: &str,
    flows: Vec<Flow>,
    concurrency: Option<usize>,
) -> usize {
    use futures::StreamExt;
    let limit = concurrency.unwrap_or(usize::MAX).max(1);
    let results: Vec<Result<(), ReplayError>> = futures::stream::iter(flows.iter())
        .map(|f| replay_one(proxy, ca_pem, f))
        .buffered(limit)
        .collect()
        .await;
    let mut sent = 0;
    for r in results {
        match r {
            Ok(()) => sent += 1,
            Err(e) => tracing::warn!("client replay: {e}"),
        }
    }
    sent
}
