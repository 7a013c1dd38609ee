//! TLS interception inside a CONNECT tunnel: read the ClientHello, connect to the server
//! first (so the client is offered only what the server accepted), mint a certificate, and
//! hand the decrypted stream back to the next-layer step, which serves what is inside.

use std::rc::Rc;

use waylay_core::flow::{Address, Client, TlsInfo, now};
use waylay_core::hooks::{ClientHelloData, Side, TlsData};
use waylay_core::{HookKind, Via};

use crate::config::ProxyConfig;
use crate::conn::dest::Destination;
use crate::conn::dial::{DialSpec, ServerStream, connect_stream, sni_for};
use crate::conn::server::tls_version_name;
use crate::context::ConnCtx;
use crate::error::ServerError;
use crate::io::BoxIo;
use crate::proto::client_hello::{Hello, parse_client_hello};
use crate::proto::target::Scheme;

/// DNS names and IP addresses of a server certificate (for `upstream_cert`).
fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => out.push((*d).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => out.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(ip);
                        out.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    out
}

/// What to offer the server: what the client offered and waylay can speak (HTTP, and with
/// `rawtcp` any other protocol, relayed as raw TCP inside the TLS).
fn offers_for_server(client_offers: &[Vec<u8>], http2: bool, rawtcp: bool) -> Vec<Vec<u8>> {
    client_offers
        .iter()
        .filter(|p| match p.as_slice() {
            b"h2" => http2,
            b"http/1.1" | b"http/1.0" => true,
            _ => rawtcp,
        })
        .cloned()
        .collect()
}

/// What to offer the client: the protocol the server chose (`Ok(None)`: none, then HTTP/1.1
/// if it was offered), or, when the server could not be reached (`Err`), HTTP/1.1 if the
/// client offered it (its requests get a readable 502) and else what it offered.
fn alpn_for_client(server: Result<Option<String>, ()>, offers: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let has_h1 = offers.iter().any(|p| p == b"http/1.1");
    match server {
        Ok(Some(p)) => vec![p.into_bytes()],
        Ok(None) if has_h1 => vec![b"http/1.1".to_vec()],
        Ok(None) => Vec::new(),
        Err(()) if has_h1 || offers.is_empty() => offers
            .iter()
            .filter(|p| p.as_slice() == b"http/1.1")
            .cloned()
            .collect(),
        Err(()) => offers.to_vec(),
    }
}

/// The client side's TLS as the flow records it.
fn client_tls_info(conn: &rustls::ServerConnection, ch: &ClientHelloData) -> TlsInfo {
    TlsInfo {
        sni: ch.sni.clone(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        alpn_offers: ch.alpn_protocols.clone(),
        version: tls_version_name(conn.protocol_version()),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite())),
        certificate_list: Vec::new(),
    }
}

/// An intercepted TLS connection, ready for the layer inside it.
pub(crate) struct Intercepted {
    /// The client's side, decrypted.
    pub(crate) client: tokio_rustls::server::TlsStream<BoxIo>,
    /// The ALPN protocol the client and waylay agreed on.
    pub(crate) alpn: Option<String>,
    /// The server connection dialed for it (TLS set up), or why that failed; or none, an
    /// idle connection of the worker's shared pool serving it.
    pub(crate) server: Upstream,
    /// Where it goes (`https`), and the pool key of `server`.
    pub(crate) target: Destination,
}

impl std::fmt::Debug for Intercepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intercepted")
            .field("alpn", &self.alpn)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The server side of an intercepted TLS connection, before the layer inside is known.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "lives inside the boxed `Intercepted` until the layer is chosen, then consumed"
)]
pub(crate) enum Upstream {
    /// Dialed for this connection (TLS set up), or why that failed.
    Dialed(Result<ServerStream, ServerError>),
    /// Not dialed: an idle connection of the worker's shared pool to the same destination,
    /// with the same SNI and ALPN offer, decided what the client is offered and serves its
    /// HTTP; a layer that needs a stream of its own (TCP inside the TLS) dials this.
    Pooled(DialSpec),
}

impl Upstream {
    /// The server stream for a layer that needs one (dialed now when pooled).
    pub(crate) async fn into_stream(self, ctx: &Rc<ConnCtx>) -> Result<ServerStream, ServerError> {
        match self {
            Self::Dialed(r) => r,
            Self::Pooled(spec) => Box::pin(connect_stream(ctx, &spec)).await,
        }
    }

    /// Closes a dialed stream no layer took (with its `server_disconnect`).
    pub(crate) async fn close(self, ctx: &ConnCtx) {
        if let Self::Dialed(Ok(stream)) = self {
            stream.close(ctx).await;
        }
    }
}

/// How the server side of an intercepted TLS connection is reached.
#[derive(Debug, Clone)]
pub(crate) struct ServerPlan {
    /// TLS to the server, and with which SNI.
    pub(crate) tls: ServerTls,
    /// The route an addon chose for it (`None`: the mode's).
    pub(crate) via: Option<Via>,
}

/// The server side's TLS.
#[derive(Debug, Clone)]
pub(crate) enum ServerTls {
    /// TLS, with the client's SNI (else the host's name): a CONNECT tunnel.
    ClientSni,
    /// TLS, with this SNI (a reverse proxy's target name; `None` for an IP literal).
    Sni(Option<String>),
    /// Plain TCP (a reverse proxy to an `http://` or `tcp://` target).
    Plain,
}

/// What the TLS layer did with a connection.
pub(crate) enum TlsOutcome {
    /// Intercepted: the next layer serves what is inside.
    Intercepted(Box<Intercepted>),
    /// `tls_clienthello` set `ignore_connection`: relay the connection untouched.
    Ignored(BoxIo),
    /// Over (the handshake failed, or the proxy is shutting down).
    Done,
}

impl std::fmt::Debug for TlsOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Intercepted(i) => f.debug_tuple("Intercepted").field(i).finish(),
            Self::Ignored(_) => f.write_str("Ignored"),
            Self::Done => f.write_str("Done"),
        }
    }
}

/// Intercepts the TLS connection in `io` (whose first bytes, `hello`, are a ClientHello).
pub(crate) async fn intercept(
    ctx: &Rc<ConnCtx>,
    io: BoxIo,
    hello: bytes::Bytes,
    host: String,
    port: u16,
    plan: ServerPlan,
) -> TlsOutcome {
    let cfg = ctx.shared.config();
    let parsed = parse_client_hello(&hello).unwrap_or_default();
    // The bytes read during detection (a 4 KiB buffer) are not kept for the connection's life.
    drop(hello);
    let Some(ch) = client_hello(ctx, &cfg, &parsed, &host, port).await else {
        return TlsOutcome::Done;
    };
    if ch.ignore_connection {
        return TlsOutcome::Ignored(io);
    }
    let offers = offers_for_server(&parsed.alpn, cfg.http2, cfg.rawtcp);
    let sni_host = parsed.sni.clone().unwrap_or_else(|| host.clone());
    let dialed = dial_server(ctx, &cfg, &ch, (host, port), plan, offers, sni_host).await;
    accept_client(ctx, &cfg, io, &ch, dialed).await
}

/// Fires `tls_clienthello` for the parsed ClientHello (its host filters decided first);
/// `None` when the proxy is shutting down.
async fn client_hello(
    ctx: &ConnCtx,
    cfg: &ProxyConfig,
    parsed: &Hello,
    host: &str,
    port: u16,
) -> Option<Box<ClientHelloData>> {
    let mut names = vec![Address::new(host.to_owned(), port).to_string()];
    if let Some(sni) = &parsed.sni {
        names.push(Address::new(sni.clone(), port).to_string());
    }
    let ignore = cfg.has_host_filters() && cfg.ignores(&names);
    let ch = Box::new(ClientHelloData {
        client: ctx.client(),
        server: Some(Address::new(host.to_owned(), port)),
        sni: parsed.sni.clone(),
        alpn_protocols: parsed
            .alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        ignore_connection: ignore,
        establish_server_tls_first: true,
    });
    ctx.fire(HookKind::TlsClienthello, ch).await
}

/// The server side, dialed before the client's handshake is answered.
struct Dialed {
    /// The connection (TLS set up), or why it failed, or a pooled one serves it.
    server: Upstream,
    /// Where it goes, and the pool key of `server`.
    target: Destination,
    /// The names the client's certificate is minted for.
    names: Vec<String>,
    /// The ALPN protocols offered to the client.
    client_alpn: Vec<Vec<u8>>,
}

/// Connects to the server as `plan` says (TLS offering `offers`, or plain), and decides
/// what the client is offered and which names its certificate carries (with
/// `upstream_cert`, the server's).
async fn dial_server(
    ctx: &Rc<ConnCtx>,
    cfg: &ProxyConfig,
    ch: &ClientHelloData,
    (host, port): (String, u16),
    plan: ServerPlan,
    offers: Vec<Vec<u8>>,
    sni_host: String,
) -> Dialed {
    let server_sni = match plan.tls {
        ServerTls::ClientSni => Some(ch.sni.clone().or_else(|| sni_for(&host))),
        ServerTls::Sni(sni) => Some(sni),
        ServerTls::Plain => None,
    };
    let scheme = if server_sni.is_some() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let mut target = Destination::direct(scheme, host.clone(), port);
    target.route = plan.via.clone();
    let spec = DialSpec {
        address: Address::new(host.clone(), port),
        tls: server_sni.map(|sni| (sni, offers.clone())),
        via: plan.via,
        proxy_form: false,
    };
    let mut names = vec![sni_host];
    if let Some(reused) = pooled(ctx, cfg, &spec, &target, &offers, &mut names) {
        return Dialed {
            server: Upstream::Pooled(spec),
            target,
            names,
            client_alpn: reused,
        };
    }
    // The raw stream: the HTTP handshake waits until the client's protocol is known.
    let server = connect_stream(ctx, &spec).await;
    let server_alpn = match &server {
        Ok(stream) => {
            let info = stream.server.tls_info.clone().unwrap_or_default();
            if cfg.upstream_cert
                && let Some(leaf) = info.certificate_list.first()
            {
                for n in cert_names(leaf) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            Ok(info.alpn)
        }
        Err(e) => {
            // Finish the client's handshake anyway and answer its requests with a 502 that
            // names the reason, as a browser user can read it. Each of those (or the TCP
            // flow's error) is logged at info with its URL; this line would say it twice.
            tracing::debug!(client.addr = %ctx.client().peername, server.addr = %format!("{host}:{port}"), "{e}");
            ctx.pool.fail(target.clone(), e.clone());
            Err(())
        }
    };
    let client_alpn = if spec.tls.is_none() {
        // A plain server: the client may speak whatever waylay translates (HTTP/2 to the
        // client, HTTP/1.1 to the server) or relays, in its own order of preference.
        offers
    } else {
        alpn_for_client(server_alpn, &offers)
    };
    Dialed {
        server: Upstream::Dialed(server),
        target,
        names,
        client_alpn,
    }
}

/// With the worker's shared pool: an idle TLS connection to `target` made with the same SNI
/// and ALPN offer as `spec` is reused instead of dialing (its certificate's names added to
/// `names` with `upstream_cert`); gives the ALPN protocols to offer the client.
fn pooled(
    ctx: &ConnCtx,
    cfg: &ProxyConfig,
    spec: &DialSpec,
    target: &Destination,
    offers: &[Vec<u8>],
    names: &mut Vec<String>,
) -> Option<Vec<Vec<u8>>> {
    if !ctx.pool.is_shared() {
        return None;
    }
    let (sni, _) = spec.tls.as_ref()?;
    let entry = ctx.pool.usable(target)?;
    let info = entry.server.tls_info.as_ref()?;
    let same_offer = info.alpn_offers.len() == offers.len()
        && info
            .alpn_offers
            .iter()
            .zip(offers)
            .all(|(a, b)| a.as_bytes() == b.as_slice());
    if entry.proxy_form.is_some() || info.sni != *sni || !same_offer {
        return None;
    }
    if cfg.upstream_cert
        && let Some(leaf) = info.certificate_list.first()
    {
        for n in cert_names(leaf) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    Some(alpn_for_client(Ok(info.alpn.clone()), offers))
}

/// Answers the client's handshake with a certificate minted for `dialed.names`, firing the
/// client-side TLS hooks; the server connection is closed when the handshake fails.
async fn accept_client(
    ctx: &Rc<ConnCtx>,
    cfg: &ProxyConfig,
    io: BoxIo,
    ch: &ClientHelloData,
    dialed: Dialed,
) -> TlsOutcome {
    let Dialed {
        server,
        target,
        names,
        client_alpn,
    } = dialed;
    let data = Box::new(TlsData {
        side: Side::Client,
        client: ctx.client(),
        server: None,
        sni: ch.sni.clone(),
        alpn_offers: ch.alpn_protocols.clone(),
        alpn: None,
        error: None,
    });
    let Some(mut data) = ctx.fire(HookKind::TlsStartClient, data).await else {
        return TlsOutcome::Done;
    };
    ctx.shared.certs.set_tls13_only(cfg.client_tls13_only);
    let config = match ctx.shared.certs.server_config(&names, &client_alpn) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(client.addr = %ctx.client().peername, "cannot mint a certificate for {names:?}: {e}");
            server.close(ctx).await;
            return TlsOutcome::Done;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match acceptor.accept(io).await {
        Ok(t) => t,
        Err(e) => {
            server.close(ctx).await;
            let reason = crate::tls::describe_tls_error(&e);
            tracing::info!(client.addr = %ctx.client().peername, sni = ?ch.sni, "client TLS handshake failed (does the client trust the waylay CA?): {reason}");
            data.error = Some(reason);
            let _ = ctx.fire(HookKind::TlsFailedClient, data).await;
            return TlsOutcome::Done;
        }
    };
    let info = client_tls_info(tls.get_ref().1, ch);
    let alpn = info.alpn.clone();
    let mut client = Client::clone(&ctx.client());
    client.tls = Some(info);
    client.timestamp_tls_setup = Some(now());
    ctx.set_client(client);
    data.client = ctx.client();
    data.alpn = alpn.clone();
    let _ = ctx.fire(HookKind::TlsEstablishedClient, data).await;
    TlsOutcome::Intercepted(Box::new(Intercepted {
        client: tls,
        alpn,
        server,
        target,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_offered_what_waylay_can_speak() {
        let offers = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"imap".to_vec()];
        assert_eq!(offers_for_server(&offers, true, true), offers);
        assert_eq!(
            offers_for_server(&offers, false, false),
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn the_client_is_offered_what_the_server_chose() {
        let offers = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        assert_eq!(
            alpn_for_client(Ok(Some("h2".into())), &offers),
            vec![b"h2".to_vec()]
        );
        assert_eq!(
            alpn_for_client(Ok(None), &offers),
            vec![b"http/1.1".to_vec()]
        );
        assert_eq!(
            alpn_for_client(Ok(None), &[b"imap".to_vec()]),
            Vec::<Vec<u8>>::new()
        );
        // The server is unreachable: HTTP/1.1, so the client reads the 502.
        assert_eq!(
            alpn_for_client(Err(()), &offers),
            vec![b"http/1.1".to_vec()]
        );
        assert_eq!(
            alpn_for_client(Err(()), &[b"imap".to_vec()]),
            vec![b"imap".to_vec()]
        );
    }
}
