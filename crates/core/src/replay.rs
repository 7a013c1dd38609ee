//! Client replay: a recorded flow's request sent again *through the proxy's own listener*,
//! so it runs through every addon as a new flow, marked a replay (`is_replay == "request"`,
//! `~replay` matches it) from its first hook, and the proxy dials the server as for any
//! client. mitmdump's `-C`, the web UI's replay and a script's `replay.client` use it.
//!
//! The request goes out as HTTP/1.1 in absolute form (`GET https://host/path`), on a
//! connection of its own, with its recorded method, URL, headers and body: for `https` the
//! proxy opens TLS to the server itself, so the replayer needs neither a tunnel nor the
//! proxy's CA. The connection is marked on the addon manager
//! ([`ManagerHandle::mark_replay`]) before the request is written, so nothing reaches the
//! server that the client did not send. WebSocket handshakes, `CONNECT` requests, TCP flows
//! and requests whose body was streamed (not kept) are not replayed, as in mitmproxy.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::flow::{Flow, HttpFlow};
use crate::manager::ManagerHandle;

/// How long one replayed exchange may take before it is reported as failed.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The flow cannot be replayed (what it is says why).
    #[error("{0}")]
    NotReplayable(&'static str),
    /// Talking to the proxy failed.
    #[error("replaying {url}: {source}")]
    Io {
        /// The request's URL.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The proxy did not finish answering in time.
    #[error("replaying {url}: no answer within {} s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout {
        /// The request's URL.
        url: String,
    },
}

/// The HTTP flow of `flow`, if it can be replayed; why not otherwise.
pub fn replayable(flow: &Flow) -> Result<&HttpFlow, ReplayError> {
    match flow {
        Flow::Http(f) => check(f).map(|()| &**f),
        Flow::Tcp(_) => Err(ReplayError::NotReplayable("Can only replay HTTP flows.")),
    }
}

/// Whether `flow`'s request can be replayed (mitmproxy's checks and wording).
pub fn check(flow: &HttpFlow) -> Result<(), ReplayError> {
    let q = &flow.request;
    if flow.websocket.is_some() {
        return Err(ReplayError::NotReplayable("Can't replay WebSocket flows."));
    }
    if q.method.eq_ignore_ascii_case("CONNECT") {
        return Err(ReplayError::NotReplayable("Can't replay CONNECT requests."));
    }
    if q.stream || q.raw_content.is_none() {
        return Err(ReplayError::NotReplayable(
            "Can't replay flow with missing content.",
        ));
    }
    Ok(())
}

/// Fields that belong to one connection, not to the request: the replay's own connection
/// frames its request itself.
const HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "upgrade",
];

/// The request of `flow` as the replayer sends it to the proxy: HTTP/1.1 in absolute form,
/// its fields in their order and spelling less the connection's own, a `Host` if it had
/// none (an HTTP/2 request's `:authority`), the body framed by `Content-Length` (where the
/// request had it), and `Connection: close` (the answer ends with the connection).
pub fn request_bytes(flow: &HttpFlow) -> Vec<u8> {
    let q = &flow.request;
    let body = q.raw_content.as_deref().unwrap_or_default();
    let mut out = format!("{} {} HTTP/1.1\r\n", q.method, q.url()).into_bytes();
    if !q.headers.contains("host") {
        out.extend_from_slice(format!("Host: {}\r\n", authority(flow)).as_bytes());
    }
    // The body's length, where the request had its `Content-Length` (else last).
    let mut length = (!body.is_empty()
        || !matches!(q.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS"))
    .then_some(body.len());
    for (name, value) in q.headers.iter() {
        if name.eq_ignore_ascii_case("content-length") {
            if let Some(n) = length.take() {
                out.extend_from_slice(format!("{name}: {n}\r\n").as_bytes());
            }
            continue;
        }
        if name.starts_with(':') || HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// `host:port` of the request, an IPv6 host in brackets.
fn authority(flow: &HttpFlow) -> String {
    let q = &flow.request;
    if q.host.contains(':') {
        format!("[{}]:{}", q.host, q.port)
    } else {
        format!("{}:{}", q.host, q.port)
    }
}

/// The proxy address `flow` came in on (its client's view; an unspecified address, a
/// listener on all of them, as loopback): where to replay it.
pub fn proxy_addr(flow: &HttpFlow) -> SocketAddr {
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

/// Sends `flow`'s request again through the proxy listening at `proxy`, whose addon
/// manager is `manager`, and waits until the proxy has answered and closed (at most
/// [`EXCHANGE_TIMEOUT`]). The new flow, its answer included, is the addons'; the answer's
/// bytes are read and dropped here.
pub async fn replay(
    manager: &ManagerHandle,
    flow: &HttpFlow,
    proxy: SocketAddr,
) -> Result<(), ReplayError> {
    check(flow)?;
    let url = flow.request.url();
    let io = |source| ReplayError::Io {
        url: url.clone(),
        source,
    };
    let run = async {
        let mut s = TcpStream::connect(proxy).await.map_err(io)?;
        let _mark = manager.mark_replay(s.local_addr().map_err(io)?, s.peer_addr().map_err(io)?);
        s.write_all(&request_bytes(flow)).await.map_err(io)?;
        let mut buf = vec![0u8; 16 * 1024];
        while s.read(&mut buf).await.map_err(io)? > 0 {}
        Ok(())
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(ReplayError::Timeout { url: url.clone() }))
}

/// Replays `flows` through the proxy at `proxy`, `concurrency` at a time (`None`: all at
/// once); a flow that cannot be replayed is logged and skipped. Returns how many were sent.
pub async fn replay_all(
    manager: &ManagerHandle,
    proxy: SocketAddr,
    flows: &[Flow],
    concurrency: Option<usize>,
) -> usize {
    use futures::StreamExt;
    let limit = concurrency.unwrap_or(usize::MAX).max(1);
    let results: Vec<Result<(), ReplayError>> = futures::stream::iter(flows)
        .map(|f| async move { replay(manager, replayable(f)?, proxy).await })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Request;
    use crate::flow::Client;

    fn flow(url: &str) -> HttpFlow {
        let client = Arc::new(Client::new(
            "127.0.0.1:5000".parse().unwrap(),
            "0.0.0.0:8080".parse().unwrap(),
        ));
        HttpFlow::new(client, Request::from_url("POST", url).unwrap())
    }

    #[test]
    fn the_request_goes_in_absolute_form_with_its_body_and_without_hop_fields() {
        let mut f = flow("https://example.com:8443/a?b");
        f.request.headers.append("Connection", "keep-alive");
        f.request.headers.append("X-A", "1");
        f.request.headers.append("Content-Length", "99");
        f.request.set_raw_content("hi");
        let b = String::from_utf8(request_bytes(&f)).unwrap();
        assert_eq!(
            b,
            "POST https://example.com:8443/a?b HTTP/1.1\r\nHost: example.com:8443\r\nX-A: 1\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert_eq!(proxy_addr(&f), "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn an_ipv6_host_without_a_host_field_is_bracketed() {
        let mut f = flow("http://[::1]:81/");
        f.request.method = "GET".into();
        f.request.set_raw_content("");
        let b = String::from_utf8(request_bytes(&f)).unwrap();
        assert!(
            b.starts_with("GET http://[::1]:81/ HTTP/1.1\r\nHost: [::1]:81\r\n"),
            "{b}"
        );
        assert!(!b.contains("Content-Length"), "{b}");
    }

    #[test]
    fn what_cannot_be_replayed_says_why() {
        let mut f = flow("http://example.com/");
        f.request.raw_content = None;
        assert_eq!(
            check(&f).unwrap_err().to_string(),
            "Can't replay flow with missing content."
        );
        let mut f = flow("http://example.com:443");
        f.request.method = "CONNECT".into();
        f.request.set_raw_content("");
        assert!(check(&f).is_err());
    }
}
