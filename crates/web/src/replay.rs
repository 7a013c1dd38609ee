//! Replaying a flow's request: sent again *through the proxy* (to the address its client
//! connected to), so it runs through every addon as a new flow, marked `is_replay`.
//! HTTPS goes through a CONNECT tunnel and TLS trusting the proxy's own CA from `confdir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use waylay_core::HttpFlow;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    #[error("replay: {0}")]
    Refused(String),
    #[error("replay: cannot reach the proxy at {0}: {1}")]
    Proxy(SocketAddr, std::io::Error),
    #[error("replay: TLS through the proxy failed: {0}")]
    Tls(String),
    #[error("replay: the proxy did not answer within 30 s")]
    Timeout,
}

/// Where the proxy listens, as the flow's client saw it.
pub(crate) fn proxy_addr(flow: &HttpFlow) -> SocketAddr {
    let mut a = flow.client.sockname;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

const HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
];

/// The request as waylay sends it again: HTTP/1.1, the body as it travelled, framed by
/// `Content-Length`, `Connection: close`.
pub(crate) fn request_bytes(flow: &HttpFlow, absolute: bool) -> Result<Vec<u8>, ReplayError> {
    let q = &flow.request;
    if q.stream {
        return Err(ReplayError::Refused(
            "the request body was streamed, not kept".into(),
        ));
    }
    if flow.websocket.is_some() {
        return Err(ReplayError::Refused(
            "WebSocket flows cannot be replayed".into(),
        ));
    }
    let target = if absolute {
        q.url()
    } else {
        q.path.to_string()
    };
    let body = q.raw_content.clone().unwrap_or_default();
    let mut out = format!("{} {} HTTP/1.1\r\n", q.method, target).into_bytes();
    if !q.headers.contains("host") {
        out.extend_from_slice(format!("Host: {}\r\n", q.pretty_host()).as_bytes());
    }
    for (k, v) in q.headers.iter() {
        if k.starts_with(':') || HOP.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            continue;
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || !matches!(q.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    Ok(out)
}

/// The proxy's CA certificate from `confdir` (waylay's, or mitmproxy's it would use).
fn ca_roots(confdir: &Path) -> Result<rustls::RootCertStore, ReplayError> {
    let mut roots = rustls::RootCertStore::empty();
    for name in [
        "waylay-ca-cert.pem",
        "waylay-ca.pem",
        "mitmproxy-ca-cert.pem",
        "mitmproxy-ca.pem",
    ] {
        let Ok(pem) = std::fs::read(confdir.join(name)) else {
            continue;
        };
        for c in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(c);
        }
        if !roots.is_empty() {
            return Ok(roots);
        }
    }
    Err(ReplayError::Tls(format!(
        "no CA certificate in {}",
        confdir.display()
    )))
}

/// `~/x` as the home directory's `x`.
pub(crate) fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(req).await?;
    s.flush().await?;
    let mut out = Vec::new();
    // The answer is not kept (the new flow is in the UI); read a bounded amount until close.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 || out.len() > 1 << 20 {
            break;
        }
        out.extend_from_slice(&buf[..n.min(64)]);
    }
    Ok(out)
}

/// Sends `flow`'s request again through the proxy; `on_connect` learns the local address of
/// the connection first (so the addon can recognise the new flow as a replay).
pub(crate) async fn replay(
    flow: &HttpFlow,
    confdir: &Path,
    on_connect: impl FnOnce(SocketAddr),
) -> Result<(), ReplayError> {
    let proxy = proxy_addr(flow);
    let https = flow.request.scheme.eq_ignore_ascii_case("https");
    let req = request_bytes(flow, !https)?;
    let run = async {
        let mut s = TcpStream::connect(proxy)
            .await
            .map_err(|e| ReplayError::Proxy(proxy, e))?;
        if let Ok(local) = s.local_addr() {
            on_connect(local);
        }
        if !https {
            return exchange(s, &req)
                .await
                .map(drop)
                .map_err(|e| ReplayError::Proxy(proxy, e));
        }
        let q = &flow.request;
        let authority = if q.host.contains(':') {
            format!("[{}]:{}", q.host, q.port)
        } else {
            format!("{}:{}", q.host, q.port)
        };
        let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        s.write_all(connect.as_bytes())
            .await
            .map_err(|e| ReplayError::Proxy(proxy, e))?;
        // Read the CONNECT answer's head byte by byte (it is small, and nothing may be
        // consumed past it).
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(ReplayError::Refused("CONNECT answer too long".into()));
            }
            let b = s
                .read_u8()
                .await
                .map_err(|e| ReplayError::Proxy(proxy, e))?;
            head.push(b);
        }
        let status = String::from_utf8_lossy(&head);
        if !status.split(' ').nth(1).is_some_and(|c| c.starts_with('2')) {
            return Err(ReplayError::Refused(format!(
                "the proxy refused the tunnel: {}",
                status.lines().next().unwrap_or("")
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ReplayError::Tls(e.to_string()))?
            .with_root_certificates(ca_roots(confdir)?)
            .with_no_client_auth();
        let sni = flow
            .server
            .as_ref()
            .and_then(|s| s.sni.clone())
            .unwrap_or_else(|| q.host.to_string());
        let name = ServerName::try_from(sni).map_err(|e| ReplayError::Tls(e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, s)
            .await
            .map_err(|e| ReplayError::Tls(e.to_string()))?;
        exchange(tls, &req)
            .await
            .map(drop)
            .map_err(|e| ReplayError::Proxy(proxy, e))
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or(Err(ReplayError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use waylay_core::Request;
    use waylay_core::flow::Client;

    #[test]
    fn the_request_is_sent_again_with_its_body_and_without_hop_headers() {
        let client = Arc::new(Client::new(
            "127.0.0.1:5000".parse().unwrap(),
            "0.0.0.0:8080".parse().unwrap(),
        ));
        let mut q = Request::from_url("POST", "http://example.com:81/a?b").unwrap();
        q.headers.append("Connection", "keep-alive");
        q.headers.append("X-A", "1");
        q.set_raw_content("hi");
        let f = HttpFlow::new(client, q);
        let b = String::from_utf8(request_bytes(&f, true).unwrap()).unwrap();
        assert_eq!(
            b,
            "POST http://example.com:81/a?b HTTP/1.1\r\nHost: example.com:81\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert_eq!(proxy_addr(&f), "127.0.0.1:8080".parse().unwrap());
        let b = String::from_utf8(request_bytes(&f, false).unwrap()).unwrap();
        assert!(b.starts_with("POST /a?b HTTP/1.1\r\n"));
    }
}
