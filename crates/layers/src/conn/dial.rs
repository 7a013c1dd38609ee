//! Dialing a server: `server_connect`, TCP, TLS with its hooks, the HTTP handshake, and
//! taking a pooled connection (or dialing one) for a request.

use std::rc::Rc;
use std::sync::Arc;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use waylay_core::flow::{Address, Client, Server, TlsInfo, now};
use waylay_core::hooks::{ServerConnectionHookData, Side, TlsData};
use waylay_core::{HookKind, ProxyScheme, Via};

use super::dest::Destination;
use super::pool::{ConnState, EntryState, PoolEntry, ProxyForm};
use super::server::{ServerConnection, tls_version_name};
use crate::context::{ConnCtx, fire};
use crate::error::ServerError;
use crate::http::body::ProxyBody;
use crate::rt::LocalExec;

/// The request sender of a fresh HTTP connection.
enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// What to dial.
#[derive(Debug, Clone)]
pub(crate) struct DialSpec {
    pub(crate) address: Address,
    /// TLS: the SNI to send (None: no SNI, e.g. IP literals) and the ALPN to offer.
    pub(crate) tls: Option<(Option<String>, Vec<Vec<u8>>)>,
    /// The route an addon chose (`None`: the mode's), set as the server's `via` before
    /// `server_connect`, where addons may still change it.
    pub(crate) via: Option<Via>,
    /// For plain-HTTP request connections: through an HTTP(S) proxy, connect to the proxy
    /// itself and send requests absolute-form (else a CONNECT tunnel, as for TLS and TCP).
    pub(crate) proxy_form: bool,
}

/// Takes a usable pooled connection for `key`, or dials one and pools it.
pub(crate) async fn checkout(
    ctx: &Rc<ConnCtx>,
    key: &Destination,
) -> Result<PoolEntry, ServerError> {
    if let Some(reason) = ctx.pool.failure(key) {
        return Err(ServerError::Earlier(Box::new(reason)));
    }
    if let Some(e) = ctx.pool.usable(key) {
        return Ok(e);
    }
    let alpn = if ctx.shared.config().http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let spec = DialSpec {
        address: key.address(),
        tls: key.is_tls().then(|| (sni_for(&key.host), alpn)),
        via: key.route.clone(),
        proxy_form: !key.is_tls(),
    };
    // Boxed: dialing (TCP, TLS, an upstream proxy's handshake) makes a large future, and
    // the request futures that check out a pooled connection would otherwise carry its
    // size (moved into a box per observed request, kept allocated per idle connection).
    let entry = Box::pin(dial(ctx, spec)).await?;
    ctx.pool.insert(key.clone(), entry.clone());
    Ok(entry)
}

/// A server connection for a WebSocket upgrade, never shared with other requests: an idle
/// pooled HTTP/1 connection is taken out of the pool (the one dialed eagerly for an
/// intercepted TLS tunnel, typically), else a new HTTP/1.1 one is dialed and not pooled.
pub(crate) async fn checkout_upgrade(
    ctx: &Rc<ConnCtx>,
    key: &Destination,
) -> Result<PoolEntry, ServerError> {
    if let Some(reason) = ctx.pool.failure(key) {
        return Err(ServerError::Earlier(Box::new(reason)));
    }
    let entry = match ctx.pool.take_idle_h1(key) {
        Some(e) => e,
        None => {
            let spec = DialSpec {
                address: key.address(),
                tls: key
                    .is_tls()
                    .then(|| (sni_for(&key.host), vec![b"http/1.1".to_vec()])),
                via: key.route.clone(),
                proxy_form: false,
            };
            Box::pin(dial(ctx, spec)).await?
        }
    };
    entry.state.upgrading(true);
    Ok(entry)
}

/// The SNI to send for `host`: none for IP literals (RFC 6066 forbids them).
pub(crate) fn sni_for(host: &str) -> Option<String> {
    host.parse::<std::net::IpAddr>()
        .is_err()
        .then(|| host.to_owned())
}

/// Dials a server: `server_connect`, TCP, TLS (with its hooks), the HTTP handshake; starts
/// the actor and the IO driver, which fires `server_disconnect` when the connection ends.
pub(crate) async fn dial(ctx: &Rc<ConnCtx>, spec: DialSpec) -> Result<PoolEntry, ServerError> {
    let stream = connect_stream(ctx, &spec).await?;
    handshake(ctx, stream).await
}

/// A server connection before any application protocol: the plain or TLS stream, what is
/// known of the server, and the ALPN protocol it chose.
///
/// `server_connect` (and, with TLS, the `tls_*_server` hooks) have fired. Whoever takes it
/// owns the `server_disconnect` event: [`handshake`] hands it to the HTTP connection's IO
/// driver, the TCP layer fires it when its relay ends, and [`ServerStream::close`] fires it
/// for a stream that no layer took.
pub(crate) struct ServerStream {
    pub(crate) io: crate::io::BoxIo,
    pub(crate) server: Server,
    pub(crate) alpn: Option<String>,
    /// Set when connected to an HTTP(S) proxy itself (see [`DialSpec::proxy_form`]).
    pub(crate) proxy_form: Option<Arc<ProxyForm>>,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("server", &self.server.address)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    /// Closes a stream no layer took, with its `server_disconnect`.
    pub(crate) async fn close(self, ctx: &ConnCtx) {
        drop(self.io);
        let mut server = self.server;
        server.timestamp_end = Some(now());
        let data = Box::new(ServerConnectionHookData {
            client: ctx.client(),
            server,
        });
        let _ = ctx.fire(HookKind::ServerDisconnect, data).await;
    }
}

/// `server_connect`, TCP, and TLS with its hooks (when `spec` says so): the stream to the
/// server, ready for an application protocol.
pub(crate) async fn connect_stream(
    ctx: &Rc<ConnCtx>,
    spec: &DialSpec,
) -> Result<ServerStream, ServerError> {
    let client = ctx.client();
    let mut server = Server::new(spec.address.clone());
    server.tls = spec.tls.is_some();
    server.sni = spec.tls.as_ref().and_then(|(sni, _)| sni.clone());
    server.timestamp_start = Some(now());
    server.via = spec.via.clone();
    let data = Box::new(ServerConnectionHookData {
        client: client.clone(),
        server,
    });
    let data = ctx
        .fire(HookKind::ServerConnect, data)
        .await
        .ok_or_else(|| shutting_down(spec))?;
    let mut server = data.server;
    let addr_text = server.address.to_string();
    if let Some(reason) = server.error.clone() {
        connect_failed(ctx, &client, server).await;
        return Err(ServerError::Refused {
            addr: addr_text,
            reason,
        });
    }
    let cfg = ctx.shared.config();
    // Straight to the server, or through the route an addon set on it (`via`), else the
    // mode's (the upstream proxy in upstream mode).
    let route = crate::via::route(&server, &ctx.mode.default_route);
    let forward = match route {
        Via::Proxy(p)
            if spec.proxy_form && spec.tls.is_none() && p.scheme != ProxyScheme::Socks5 =>
        {
            Some(p.clone())
        }
        Via::Direct | Via::Proxy(_) => None,
    };
    let predialed = match (route, &forward) {
        (Via::Direct, None) => ctx.take_predialed(&server.address),
        _ => None,
    };
    let dialed = match (&forward, predialed) {
        (None, Some(tcp)) => Ok(crate::via::plain(tcp)),
        (Some(proxy), _) => crate::via::connect_proxy(proxy, &cfg.via).await,
        (None, None) => {
            crate::via::dial_server(
                ctx.manager(),
                client.clone(),
                &server,
                &ctx.mode.default_route,
                &cfg.via,
            )
            .await
        }
    };
    let proxy_form = forward.map(|p| {
        let credentials = crate::via::credentials_for(&p, cfg.via.upstream_auth.as_ref());
        Arc::new(ProxyForm {
            proxy: p.address.to_string(),
            authorization: credentials.and_then(|c| {
                http::HeaderValue::from_str(&crate::via::proxy_authorization(c)).ok()
            }),
        })
    });
    let tcp = match dialed {
        Ok(s) => s,
        Err(crate::via::ViaError::Server { addr, reason }) => {
            server.error = Some(reason.clone());
            connect_failed(ctx, &client, server).await;
            return Err(ServerError::Connect { addr, reason });
        }
        Err(e) => {
            server.error = Some(e.to_string());
            connect_failed(ctx, &client, server).await;
            return Err(ServerError::Via(e));
        }
    };
    server.peername = tcp.peername;
    server.sockname = tcp.sockname;
    server.timestamp_tcp_setup = Some(now());
    if ctx.manager().handles(HookKind::ServerConnected) {
        let data = Box::new(ServerConnectionHookData {
            client: client.clone(),
            server,
        });
        server = match ctx.fire(HookKind::ServerConnected, data).await {
            Some(d) => d.server,
            None => return Err(shutting_down(spec)),
        };
    }

    let tcp = crate::io::IdleTimeout::new(tcp, cfg.idle_timeout);
    let (io, alpn): (crate::io::BoxIo, Option<String>) = match &spec.tls {
        None => (Box::new(tcp), None),
        Some((sni, alpn)) => tls_to_server(ctx, spec, tcp, &mut server, sni, alpn).await?,
    };

    Ok(ServerStream {
        io,
        server,
        alpn,
        proxy_form,
    })
}

/// `server_connect_error`: the server connection was refused or could not be made.
async fn connect_failed(ctx: &Rc<ConnCtx>, client: &Arc<Client>, server: Server) {
    if !ctx.manager().handles(HookKind::ServerConnectError) {
        return;
    }
    let data = Box::new(ServerConnectionHookData {
        client: client.clone(),
        server,
    });
    let _ = ctx.fire(HookKind::ServerConnectError, data).await;
}

/// TLS with the server on a connected `tcp`, with the `tls_*_server` hooks; on failure the
/// TCP connection closes (with its `server_disconnect`).
async fn tls_to_server(
    ctx: &Rc<ConnCtx>,
    spec: &DialSpec,
    tcp: crate::io::IdleTimeout<crate::via::ViaStream>,
    server: &mut Server,
    sni: &Option<String>,
    alpn: &[Vec<u8>],
) -> Result<(crate::io::BoxIo, Option<String>), ServerError> {
    let client = ctx.client();
    let addr_text = server.address.to_string();
    let mut data = Box::new(TlsData {
        side: Side::Server,
        client: client.clone(),
        server: Some(server.clone()),
        sni: sni.clone(),
        alpn_offers: alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        alpn: None,
        error: None,
    });
    data = ctx
        .fire(HookKind::TlsStartServer, data)
        .await
        .ok_or_else(|| shutting_down(spec))?;
    let alpn: Vec<Vec<u8>> = data
        .alpn_offers
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let config = ctx.shared.client_tls().map_err(|e| ServerError::Tls {
        addr: addr_text.clone(),
        reason: e.to_string(),
    })?;
    // Without SNI (IP literal), rustls verifies against the IP address.
    let name_text = data
        .sni
        .clone()
        .unwrap_or_else(|| server.address.host.clone());
    let name = rustls_pki_types::ServerName::try_from(name_text.clone()).map_err(|_| {
        ServerError::Tls {
            addr: addr_text.clone(),
            reason: format!("invalid server name {name_text:?}"),
        }
    })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match connector.with_alpn(alpn).connect(name, tcp).await {
        Ok(tls) => {
            let (_, conn) = tls.get_ref();
            let alpn = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            let info = TlsInfo {
                sni: data.sni.clone(),
                alpn: alpn.clone(),
                alpn_offers: data.alpn_offers.clone(),
                version: tls_version_name(conn.protocol_version()),
                cipher: conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite())),
                certificate_list: conn
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| bytes::Bytes::copy_from_slice(d)).collect())
                    .unwrap_or_default(),
            };
            server.tls_info = Some(info);
            server.timestamp_tls_setup = Some(now());
            data.server = Some(server.clone());
            data.alpn = alpn.clone();
            let _ = ctx.fire(HookKind::TlsEstablishedServer, data).await;
            Ok((Box::new(crate::io::TlsReads::new(tls)), alpn))
        }
        Err(e) => {
            let reason = crate::tls::describe_tls_error(&e);
            data.error = Some(reason.clone());
            let _ = ctx.fire(HookKind::TlsFailedServer, data).await;
            // The TCP connection was open (`server_connect` fired): it closes now.
            server.timestamp_end = Some(now());
            let closed = Box::new(ServerConnectionHookData {
                client: client.clone(),
                server: server.clone(),
            });
            let _ = ctx.fire(HookKind::ServerDisconnect, closed).await;
            Err(ServerError::Tls {
                addr: addr_text,
                reason,
            })
        }
    }
}

/// The HTTP handshake on a connected server stream (HTTP/2 when the server chose `h2`);
/// starts the actor and the IO driver, which fires `server_disconnect` when the connection
/// ends.
pub(crate) async fn handshake(
    ctx: &Rc<ConnCtx>,
    stream: ServerStream,
) -> Result<PoolEntry, ServerError> {
    let ServerStream {
        io,
        server,
        alpn,
        proxy_form,
    } = stream;
    let h2 = alpn.as_deref() == Some("h2");
    let addr_text = server.address.to_string();
    let state = Arc::new(EntryState::default());
    let server = Arc::new(server);
    let sender = if h2 {
        let (s, conn) = http2::Builder::new(LocalExec)
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ServerError::Protocol {
                addr: addr_text.clone(),
                reason: e.to_string(),
            })?;
        spawn_driver(ctx, server.clone(), state.clone(), conn);
        Sender::H2(s)
    } else {
        // Reads that would only wait again stop at the latch (see `ReadLatch`).
        let (s, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(crate::io::ReadLatch::new(io)))
            .await
            .map_err(|e| ServerError::Protocol {
                addr: addr_text.clone(),
                reason: e.to_string(),
            })?;
        // With upgrades, a 101 hands the connection to the WebSocket layer.
        spawn_driver(ctx, server.clone(), state.clone(), conn.with_upgrades());
        Sender::H1(s)
    };
    let (addr, slot) = match sender {
        Sender::H1(s) => ServerConnection::start_h1(s),
        Sender::H2(s) => ServerConnection::start_h2(s),
    };
    Ok(PoolEntry {
        addr: std::rc::Rc::new(addr),
        slot,
        server,
        h2,
        state,
        proxy_form,
    })
}

fn shutting_down(spec: &DialSpec) -> ServerError {
    ServerError::Connect {
        addr: spec.address.to_string(),
        reason: "proxy is shutting down".into(),
    }
}

fn spawn_driver<F, E>(ctx: &Rc<ConnCtx>, server: Arc<Server>, state: Arc<EntryState>, conn: F)
where
    F: std::future::Future<Output = Result<(), E>> + 'static,
    E: std::fmt::Display,
{
    let manager = ctx.manager().clone();
    let client = ctx.client();
    actix::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(server.addr = %server.address, error = %e, "server connection ended");
        }
        if let ConnState::Upgrading { .. } = state.close() {
            return;
        }
        let mut s = Server::clone(&server);
        s.timestamp_end = Some(now());
        let data = Box::new(ServerConnectionHookData { client, server: s });
        let _ = fire(&manager, HookKind::ServerDisconnect, data).await;
    });
}

/// TCP to `address`, trying each address its name resolves to (through the worker's cache,
/// see [`super::resolve`]); a name that does not resolve is "host unreachable". No hook
/// fires: a front that opens its server connection early keeps it with
/// [`ConnCtx::set_predialed`] for the first dial, which fires `server_connect`.
pub(crate) async fn connect_direct(address: &Address) -> std::io::Result<tokio::net::TcpStream> {
    use super::resolve::ConnectError;
    match super::resolve::connect(&address.host, address.port).await {
        Ok((s, _)) => Ok(s),
        Err(ConnectError::Lookup(e)) => Err(std::io::Error::new(
            std::io::ErrorKind::HostUnreachable,
            format!("cannot resolve {}: {e}", address.host),
        )),
        Err(ConnectError::NoAddress) => Err(std::io::Error::new(
            std::io::ErrorKind::HostUnreachable,
            format!("{} resolves to no address", address.host),
        )),
        Err(ConnectError::Connect(e)) => Err(e),
    }
}
