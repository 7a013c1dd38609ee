//! Dialing a server through a route ([`Via`]): straight, through an HTTP proxy (CONNECT),
//! through an HTTP proxy reached over TLS, or through a SOCKS5 proxy.
//!
//! This is the mechanism only: the layers decide the route (the mode, or an addon through
//! the server's `via`), fire `http_connect_upstream` on the CONNECT built by
//! [`connect_request`], and turn a [`ViaError`] into the client's 502. Errors name the
//! proxy and what it answered (`upstream proxy 127.0.0.1:3128 answered 407 Proxy
//! Authentication Required`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use waylay_core::flow::{Address, Client, Headers, HttpVersion, Message, Server};
use waylay_core::{
    Credentials, HookKind, HttpFlow, ManagerHandle, ProxyScheme, Request, UpstreamProxy, Via,
};

use crate::io::{BoxIo, PrefixedIo};
use crate::proto::socks5::{ClientHandshake, ClientStep, Reply, Socks5Error, TargetAddr};

/// The largest CONNECT response head accepted from an upstream proxy.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// What dialing through a route needs besides the route itself.
#[derive(Clone)]
pub struct ViaOptions {
    /// Limit for the TCP connect, and again for each handshake (TLS, CONNECT, SOCKS5).
    pub timeout: Duration,
    /// TLS towards an HTTPS proxy, verified as towards servers (`ssl_insecure`, trusted CAs),
    /// used as it is: [`ViaOptions::new`] makes one offering HTTP/1.1 only.
    pub tls: Arc<rustls::ClientConfig>,
    /// Credentials for proxies whose URL has none (the `upstream_auth` option).
    pub upstream_auth: Option<Credentials>,
}

impl ViaOptions {
    /// Options verifying HTTPS proxies as `upstream` says servers are verified (offering
    /// HTTP/1.1 by ALPN whatever `upstream.alpn` holds).
    pub fn new(
        timeout: Duration,
        upstream: &crate::tls::UpstreamTls,
        upstream_auth: Option<Credentials>,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client_config(&crate::tls::UpstreamTls {
            alpn: vec![b"http/1.1".to_vec()],
            ..upstream.clone()
        })?;
        Ok(Self {
            timeout,
            tls,
            upstream_auth,
        })
    }
}

impl std::fmt::Debug for ViaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViaOptions")
            .field("timeout", &self.timeout)
            .field("upstream_auth", &self.upstream_auth)
            .finish_non_exhaustive()
    }
}

/// Why a connection through a route failed. The text is the one-line reason for the 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViaError {
    /// The server (direct route) could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Server {
        /// The server's `host:port`.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The proxy could not be reached.
    #[error("cannot connect to upstream proxy {proxy}: {reason}")]
    Connect {
        /// The proxy's `host:port`.
        proxy: String,
        /// What failed.
        reason: String,
    },
    /// The TLS handshake with an HTTPS proxy failed.
    #[error("TLS handshake with upstream proxy {proxy} failed: {reason}")]
    Tls {
        /// The proxy's `host:port`.
        proxy: String,
        /// What failed (certificate verification, protocol).
        reason: String,
    },
    /// An HTTP proxy answered the CONNECT with something else than 2xx (407, 502, ...).
    #[error("upstream proxy {proxy} answered {status} {reason}")]
    Status {
        /// The proxy's `host:port`.
        proxy: String,
        /// The status code.
        status: u16,
        /// The reason phrase it sent.
        reason: String,
    },
    /// A SOCKS5 proxy could not connect to the target (refused, unreachable, ...).
    #[error("upstream SOCKS5 proxy {proxy} answered {reply} for {target}")]
    Socks5Refused {
        /// The proxy's `host:port`.
        proxy: String,
        /// The target asked for.
        target: String,
        /// The SOCKS5 reply.
        reply: Reply,
    },
    /// A SOCKS5 proxy failed otherwise (authentication, protocol).
    #[error("upstream SOCKS5 proxy {proxy} failed: {source}")]
    Socks5 {
        /// The proxy's `host:port`.
        proxy: String,
        /// What went wrong.
        source: Socks5Error,
    },
    /// An addon killed the CONNECT in `http_connect_upstream`, or the proxy is shutting down.
    #[error("CONNECT to upstream proxy {proxy} was killed before it was sent")]
    Killed {
        /// The proxy's `host:port`.
        proxy: String,
    },
    /// The proxy broke the protocol, closed, or stalled during the handshake.
    #[error("upstream proxy {proxy} failed: {reason}")]
    Protocol {
        /// The proxy's `host:port`.
        proxy: String,
        /// What happened.
        reason: String,
    },
}

impl ViaError {
    /// Whether the proxy asked for (other) credentials: HTTP 407 (or 401, which tinyproxy
    /// answers to wrong ones), or SOCKS5 rejecting them or accepting no offered method.
    pub fn auth_required(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 401 | 407),
            Self::Socks5 { source, .. } => matches!(
                source,
                Socks5Error::AuthRejected(_) | Socks5Error::NoAcceptableMethod
            ),
            Self::Server { .. }
            | Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Socks5Refused { .. }
            | Self::Killed { .. }
            | Self::Protocol { .. } => false,
        }
    }
}

/// A connection made through a route: to the server itself, or tunnelled through a proxy.
pub struct ViaStream {
    io: BoxIo,
    /// The address actually connected to (the proxy's, for a proxied route).
    pub peername: Option<SocketAddr>,
    /// Waylay's local address of that connection.
    pub sockname: Option<SocketAddr>,
}

impl std::fmt::Debug for ViaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViaStream")
            .field("peername", &self.peername)
            .field("sockname", &self.sockname)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for ViaStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ViaStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The credentials used with `proxy`: its own, else `upstream_auth`.
pub fn credentials_for<'a>(
    proxy: &'a UpstreamProxy,
    upstream_auth: Option<&'a Credentials>,
) -> Option<&'a Credentials> {
    proxy.credentials.as_ref().or(upstream_auth)
}

/// The `Proxy-Authorization` value for `c` (HTTP Basic).
pub fn proxy_authorization(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The CONNECT request for `target` sent to an HTTP proxy: `Host`, and `Proxy-Authorization`
/// when there are credentials. The layers hand it to `http_connect_upstream` (inside an
/// `HttpFlow`) before [`dial`] sends it.
pub fn connect_request(target: &Address, credentials: Option<&Credentials>) -> Request {
    let authority = target.to_string();
    let mut headers = Headers::new();
    headers.append("Host", authority.clone());
    if let Some(c) = credentials {
        headers.append("Proxy-Authorization", proxy_authorization(c));
    }
    let mut message = Message::new(HttpVersion::Http11, headers);
    message.raw_content = Some(Bytes::new());
    Request {
        method: "CONNECT".into(),
        scheme: "http".into(),
        authority: authority.into(),
        host: target.host.as_str().into(),
        port: target.port,
        path: Default::default(),
        message,
    }
}

/// The bytes of a CONNECT head (the authority from the request, else its host and port);
/// refuses a target or header that would break the head (CR, LF, NUL; a name that is not a
/// token), whoever put it there.
fn connect_head(req: &Request) -> Result<Vec<u8>, String> {
    let authority = if req.authority.is_empty() {
        Address::new(req.host.clone(), req.port).to_string()
    } else {
        req.authority.to_string()
    };
    let breaks = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
    if authority.is_empty() || authority.bytes().any(|b| breaks(&b) || b == b' ') {
        return Err(format!("invalid CONNECT target {authority:?}"));
    }
    let mut out = format!("CONNECT {authority} HTTP/1.1\r\n").into_bytes();
    for (name, value) in req.headers.iter() {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token || value.iter().any(breaks) {
            return Err(format!("invalid CONNECT header {name:?}"));
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Opens a connection to `target` through `via`. For an HTTP(S) proxy, `connect` is the
/// CONNECT to send (from [`connect_request`], after `http_connect_upstream`); `None` sends
/// the default one.
pub async fn dial(
    via: &Via,
    target: &Address,
    connect: Option<&Request>,
    opts: &ViaOptions,
) -> Result<ViaStream, ViaError> {
    match via {
        Via::Direct => {
            let addr = target.to_string();
            let fail = |reason: String| ViaError::Server {
                addr: addr.clone(),
                reason,
            };
            let (tcp, peer) = tcp_connect(target, opts.timeout).await.map_err(fail)?;
            Ok(plain_to(tcp, peer))
        }
        Via::Proxy(proxy) => {
            let stream = connect_proxy(proxy, opts).await?;
            tunnel(stream, proxy, target, connect, opts).await
        }
    }
}

/// The route a server connection takes: the one an addon set on the server (`via`), else
/// the mode's (`direct`, or the upstream proxy of `upstream:` mode).
pub fn route<'a>(server: &'a Server, mode_default: &'a Via) -> &'a Via {
    server.via.as_ref().unwrap_or(mode_default)
}

/// Dials `server.address` through [`route`]: for an HTTP(S) proxy the CONNECT is first handed
/// to `http_connect_upstream` (an [`HttpFlow`] whose `server` is this one) when an addon
/// handles it, and sent as the addons left it.
pub async fn dial_server(
    manager: &ManagerHandle,
    client: Arc<Client>,
    server: &Server,
    mode_default: &Via,
    opts: &ViaOptions,
) -> Result<ViaStream, ViaError> {
    let via = route(server, mode_default);
    let proxy = match via {
        Via::Proxy(p) if p.scheme != ProxyScheme::Socks5 => p,
        Via::Direct | Via::Proxy(_) => return dial(via, &server.address, None, opts).await,
    };
    let credentials = credentials_for(proxy, opts.upstream_auth.as_ref());
    let request = connect_request(&server.address, credentials);
    if !manager.handles(HookKind::HttpConnectUpstream) {
        return dial(via, &server.address, Some(&request), opts).await;
    }
    let mut flow = HttpFlow::new(client, request);
    flow.server = Some(Arc::new(server.clone()));
    let killed = || ViaError::Killed {
        proxy: proxy.address.to_string(),
    };
    let flow = manager
        .fire(HookKind::HttpConnectUpstream, Box::new(flow))
        .await
        .map_err(|_| killed())?;
    if flow.killed() {
        return Err(killed());
    }
    dial(via, &server.address, Some(&flow.request), opts).await
}

/// Opens a connection to the proxy itself (TCP, then TLS for `https://`): what absolute-form
/// plain-HTTP requests go over, with [`proxy_authorization`] added to each.
pub async fn connect_proxy(
    proxy: &UpstreamProxy,
    opts: &ViaOptions,
) -> Result<ViaStream, ViaError> {
    let name = proxy.address.to_string();
    let (tcp, peer) = tcp_connect(&proxy.address, opts.timeout)
        .await
        .map_err(|reason| ViaError::Connect {
            proxy: name.clone(),
            reason,
        })?;
    match proxy.scheme {
        ProxyScheme::Http | ProxyScheme::Socks5 => Ok(plain_to(tcp, peer)),
        ProxyScheme::Https => {
            let (peername, sockname) = (Some(peer), tcp.local_addr().ok());
            let tls_fail = |reason: String| ViaError::Tls {
                proxy: name.clone(),
                reason,
            };
            let server_name = rustls_pki_types::ServerName::try_from(proxy.address.host.clone())
                .map_err(|_| tls_fail(format!("invalid name {:?}", proxy.address.host)))?;
            let connector = tokio_rustls::TlsConnector::from(opts.tls.clone());
            let tls = tokio::time::timeout(opts.timeout, connector.connect(server_name, tcp))
                .await
                .map_err(|_| tls_fail(timed_out(opts.timeout)))?
                .map_err(|e| tls_fail(crate::tls::describe_tls_error(&e)))?;
            Ok(ViaStream {
                io: Box::new(tls),
                peername,
                sockname,
            })
        }
    }
}

/// Asks the proxy on `stream` for a tunnel to `target`: CONNECT for HTTP(S) proxies, the
/// SOCKS5 handshake for SOCKS5 ones.
pub async fn tunnel(
    mut stream: ViaStream,
    proxy: &UpstreamProxy,
    target: &Address,
    connect: Option<&Request>,
    opts: &ViaOptions,
) -> Result<ViaStream, ViaError> {
    let name = proxy.address.to_string();
    let credentials = credentials_for(proxy, opts.upstream_auth.as_ref());
    let handshake = async {
        match proxy.scheme {
            ProxyScheme::Http | ProxyScheme::Https => {
                let default;
                let req = match connect {
                    Some(r) => r,
                    None => {
                        default = connect_request(target, credentials);
                        &default
                    }
                };
                http_connect(&mut stream.io, &name, req).await
            }
            ProxyScheme::Socks5 => socks5_connect(&mut stream.io, &name, target, credentials).await,
        }
    };
    let leftover = tokio::time::timeout(opts.timeout, handshake)
        .await
        .map_err(|_| ViaError::Protocol {
            proxy: name.clone(),
            reason: format!(
                "no answer to the tunnel request ({})",
                timed_out(opts.timeout)
            ),
        })??;
    if !leftover.is_empty() {
        stream.io = Box::new(PrefixedIo::new(leftover, stream.io));
    }
    Ok(stream)
}

/// Sends the CONNECT and reads the answer; returns the bytes read past its head.
async fn http_connect(io: &mut BoxIo, proxy: &str, req: &Request) -> Result<Bytes, ViaError> {
    let broken = |reason: String| ViaError::Protocol {
        proxy: proxy.to_owned(),
        reason,
    };
    let head = connect_head(req).map_err(&broken)?;
    io.write_all(&head)
        .await
        .map_err(|e| broken(format!("sending CONNECT: {e}")))?;
    io.flush()
        .await
        .map_err(|e| broken(format!("sending CONNECT: {e}")))?;
    let mut buf = Vec::with_capacity(512);
    let head_len = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_CONNECT_HEAD {
            return Err(broken(format!(
                "CONNECT answer head larger than {MAX_CONNECT_HEAD} bytes"
            )));
        }
        let mut chunk = [0u8; 4096];
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| broken(format!("reading the CONNECT answer: {e}")))?;
        if n == 0 {
            return Err(broken(
                "closed the connection before answering CONNECT".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, reason) = parse_status_line(&buf[..head_len])
        .ok_or_else(|| broken("answered CONNECT with something that is not HTTP".into()))?;
    if !(200..300).contains(&status) {
        return Err(ViaError::Status {
            proxy: proxy.to_owned(),
            status,
            reason,
        });
    }
    Ok(Bytes::copy_from_slice(&buf[head_len..]))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// `HTTP/1.x SSS reason` from the first line of `head`.
fn parse_status_line(head: &[u8]) -> Option<(u16, String)> {
    let line_end = head.iter().position(|&b| b == b'\r')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return None;
    }
    Some((code.parse().ok()?, reason.trim().to_owned()))
}

/// Runs the SOCKS5 client handshake; returns the bytes read past the final reply.
async fn socks5_connect(
    io: &mut BoxIo,
    proxy: &str,
    target: &Address,
    credentials: Option<&Credentials>,
) -> Result<Bytes, ViaError> {
    let codec = |source: Socks5Error| match source {
        Socks5Error::Refused(reply) => ViaError::Socks5Refused {
            proxy: proxy.to_owned(),
            target: target.to_string(),
            reply,
        },
        source => ViaError::Socks5 {
            proxy: proxy.to_owned(),
            source,
        },
    };
    let broken = |reason: String| ViaError::Protocol {
        proxy: proxy.to_owned(),
        reason,
    };
    let creds = credentials.map(|c| (c.username.clone(), c.password.clone()));
    let (mut hs, greeting) =
        ClientHandshake::new(TargetAddr::from_address(target), creds).map_err(codec)?;
    io.write_all(&greeting)
        .await
        .map_err(|e| broken(format!("sending the SOCKS5 greeting: {e}")))?;
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    // Greeting, authentication, request: a handful of steps, each bounded by the caller's
    // timeout.
    for _ in 0..64 {
        match hs.advance(&buf).map_err(codec)? {
            ClientStep::NeedMore => {
                let mut chunk = [0u8; 512];
                let n = io
                    .read(&mut chunk)
                    .await
                    .map_err(|e| broken(format!("reading the SOCKS5 answer: {e}")))?;
                if n == 0 {
                    return Err(broken(
                        "closed the connection during the SOCKS5 handshake".into(),
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            ClientStep::Send { consumed, bytes } => {
                buf.drain(..consumed);
                io.write_all(&bytes)
                    .await
                    .map_err(|e| broken(format!("writing to the SOCKS5 proxy: {e}")))?;
            }
            ClientStep::Connected { consumed, .. } => {
                return Ok(Bytes::copy_from_slice(&buf[consumed..]));
            }
        }
    }
    Err(broken("the SOCKS5 handshake did not finish".into()))
}

/// TCP to `addr` (its name resolved through the worker's cache, see `conn::resolve`): the
/// stream and the address it connected to.
async fn tcp_connect(addr: &Address, timeout: Duration) -> Result<(TcpStream, SocketAddr), String> {
    let connect = crate::conn::resolve::connect(&addr.host, addr.port);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok((s, peer))) => {
            let _ = s.set_nodelay(true);
            Ok((s, peer))
        }
        Ok(Err(e)) => Err(io::Error::from(e).to_string()),
        Err(_) => Err(timed_out(timeout)),
    }
}

pub(crate) fn plain(tcp: TcpStream) -> ViaStream {
    ViaStream {
        peername: tcp.peer_addr().ok(),
        sockname: tcp.local_addr().ok(),
        io: Box::new(tcp),
    }
}

/// [`plain`] for a stream whose peer is known (one system call fewer).
fn plain_to(tcp: TcpStream, peer: SocketAddr) -> ViaStream {
    ViaStream {
        peername: Some(peer),
        sockname: tcp.local_addr().ok(),
        io: Box::new(tcp),
    }
}

fn timed_out(t: Duration) -> String {
    format!("timed out after {:.1}s", t.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Some((200, "Connection established".into()))
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 407 Proxy Authentication Required\r\n"),
            Some((407, "Proxy Authentication Required".into()))
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200\r\n"),
            Some((200, String::new()))
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 abc x\r\n"), None);
    }

    #[test]
    fn connect_heads() {
        let c = Credentials {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        };
        let req = connect_request(&Address::new("::1", 443), Some(&c));
        assert_eq!(
            String::from_utf8(connect_head(&req).unwrap()).unwrap(),
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
    }

    #[test]
    fn connect_heads_refuse_what_would_split_them() {
        let mut req = connect_request(&Address::new("example.com", 443), None);
        req.headers.append("X-Evil", "a\r\nHost: other");
        assert_eq!(
            connect_head(&req),
            Err("invalid CONNECT header \"X-Evil\"".into())
        );
        let mut req = connect_request(&Address::new("example.com", 443), None);
        req.headers.append("Bad Name", "v");
        assert!(connect_head(&req).is_err());
        let mut req = connect_request(&Address::new("example.com", 443), None);
        req.authority = "example.com:443 HTTP/1.1\r\nX: y".into();
        assert!(connect_head(&req).is_err());
    }

    #[test]
    fn proxy_credentials_win_over_upstream_auth() {
        let own = Credentials::parse("a:b").unwrap();
        let global = Credentials::parse("c:d").unwrap();
        let mut p = match Via::parse("http://a:b@h:1").unwrap() {
            Via::Proxy(p) => p,
            Via::Direct => unreachable!(),
        };
        assert_eq!(credentials_for(&p, Some(&global)), Some(&own));
        p.credentials = None;
        assert_eq!(credentials_for(&p, Some(&global)), Some(&global));
        assert_eq!(credentials_for(&p, None), None);
    }
}
