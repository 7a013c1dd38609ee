//! The next-layer step: what does the client speak, and which layer serves it?
//!
//! Every nesting goes through here, as in mitmproxy: the proxy port (HTTP/1 or HTTP/2 with
//! absolute-form requests and CONNECT), a CONNECT tunnel (TLS, HTTP/1, HTTP/2, raw TCP or
//! passthrough), and the inside of an intercepted TLS connection (HTTP/1, HTTP/2 or raw TCP).
//! Each step detects the client's first bytes, applies `ignore_hosts` / `allow_hosts` /
//! `tcp_hosts`, asks the pure [`choose`], fires `next_layer` (an addon may override the
//! choice) and serves the layer. The layers themselves never call back here: a CONNECT
//! handler queues its tunnel on the connection ([`ConnCtx::open_tunnel`]) and the TLS layer
//! returns the decrypted stream, so the nesting is a loop in this file, not an import cycle.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use waylay_core::flow::Address;
use waylay_core::hooks::{Layer, NextLayer};
use waylay_core::{HookKind, ReverseScheme, Via};

use crate::conn::dest::Destination;
use crate::conn::dial::{
    DialSpec, ServerStream, connect_direct, connect_stream, handshake, sni_for,
};
use crate::context::{ConnCtx, Tunnel};
use crate::error::ServerError;
use crate::intercept::{Intercepted, ServerPlan, ServerTls, TlsOutcome, Upstream};
use crate::io::{BoxIo, Io, PrefixedIo, TlsReads};
use crate::proto::client_hello::{client_hello_complete, parse_client_hello};
use crate::proto::detect::{Detected, detect};
use crate::proto::target::Scheme;
use crate::relay::tcp::{Mode, ServerSide};

/// Most bytes read while waiting to tell which protocol a tunnel carries.
pub(crate) const MAX_DETECT: usize = 64 * 1024;

/// How long a tunnel waits for the client's next bytes while its protocol is not known yet.
///
/// A client that sends nothing within it after CONNECT (a protocol where the server speaks
/// first: SMTP, FTP, an SSH server banner...) or leaves its first message unfinished is
/// served as raw TCP, so the server's greeting reaches it about this long after CONNECT. TLS
/// and HTTP clients send at once, so they never wait for it. mitmproxy decides the same case
/// by seeing the server's bytes first, because it dials eagerly; waylay does so for a reverse
/// `tcp://` target ([`detect_client_or_server`]).
pub(crate) const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a layer is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position<'a> {
    /// Inside a CONNECT tunnel.
    Tunnel {
        /// `ignore_hosts` / `allow_hosts` leave this connection alone.
        ignored: bool,
        /// `tcp_hosts` matches the tunnel's destination.
        tcp_host: bool,
    },
    /// Inside an intercepted TLS connection, with the ALPN protocol agreed on.
    InsideTls { alpn: Option<&'a [u8]> },
    /// A reverse proxy's `tcp://` or `tls://` client: raw TCP, its TLS terminated first.
    ReverseStream {
        /// `ignore_hosts` / `allow_hosts` leave this connection alone.
        ignored: bool,
    },
}

/// The layer for what the client's first bytes look like (`detected`: `Other` also when the
/// client sent nothing in time, or the server spoke first), as mitmproxy's `next_layer`
/// decides it.
///
/// - In a tunnel: an ignored host is relayed untouched and a `tcp_hosts` one is raw TCP
///   whatever it speaks; otherwise TLS, HTTP/1 and HTTP/2 are recognised, and anything else
///   is raw TCP with `rawtcp`, passthrough without.
/// - A reverse proxy to a `tcp://` or `tls://` target: raw TCP, after the client's TLS when
///   it starts with a ClientHello (an ignored host is relayed untouched).
/// - Inside TLS: an HTTP ALPN decides at once; without one, HTTP/1 and HTTP/2 are recognised
///   by their first bytes and anything else is raw TCP with `rawtcp` and HTTP/1 without (as
///   before raw TCP existed).
pub(crate) fn choose(position: Position<'_>, detected: Detected, rawtcp: bool) -> Layer {
    match position {
        Position::Tunnel { ignored: true, .. } => Layer::Passthrough,
        Position::Tunnel { tcp_host: true, .. } => Layer::Tcp,
        Position::Tunnel { .. } => match detected {
            Detected::Tls => Layer::Tls,
            Detected::Http1 => Layer::Http1,
            Detected::Http2 => Layer::Http2,
            Detected::Other | Detected::NeedMore if rawtcp => Layer::Tcp,
            Detected::Other | Detected::NeedMore => Layer::Passthrough,
        },
        Position::ReverseStream { ignored: true } => Layer::Passthrough,
        Position::ReverseStream { ignored: false } => match detected {
            Detected::Tls => Layer::Tls,
            Detected::Http1 | Detected::Http2 | Detected::Other | Detected::NeedMore => Layer::Tcp,
        },
        Position::InsideTls { alpn } => {
            let not_http = if rawtcp { Layer::Tcp } else { Layer::Http1 };
            match alpn {
                Some(b"h2") => Layer::Http2,
                Some(b"http/1.1" | b"http/1.0") => Layer::Http1,
                Some(_) => not_http,
                None => match detected {
                    Detected::Http1 => Layer::Http1,
                    Detected::Http2 => Layer::Http2,
                    Detected::Tls | Detected::Other | Detected::NeedMore => not_http,
                },
            }
        }
    }
}

/// The layer of regular mode's proxy port from the client's first bytes: HTTP/2 (prior
/// knowledge) or HTTP/1; anything else gets a 400 with the reason (a regular-mode port takes
/// no TLS: that goes through CONNECT).
pub(crate) fn proxy_port_layer(first: &[u8]) -> Result<Layer, &'static str> {
    match detect(first) {
        Detected::Http2 => Ok(Layer::Http2),
        // An unfinished preface is HTTP/2 too (hyper reports what is wrong with it).
        _ if first.starts_with(b"PRI ") => Ok(Layer::Http2),
        Detected::Http1 | Detected::NeedMore => Ok(Layer::Http1),
        Detected::Tls => Err("waylay: this is an HTTP proxy port; TLS must go through CONNECT"),
        Detected::Other if first.first() == Some(&0x16) => {
            Err("waylay: this is an HTTP proxy port; TLS must go through CONNECT")
        }
        Detected::Other => Err("waylay: malformed request line"),
    }
}

/// Serves regular mode's proxy port: `first` is what the client sent first (peeked), `io`
/// the whole stream. Every CONNECT tunnel opened on it is served concurrently on this task;
/// returns when the connection and all its tunnels are done.
pub(crate) async fn serve_proxy_port(ctx: Rc<ConnCtx>, io: BoxIo, first: &[u8]) {
    if !ctx.take_tunnels() {
        return;
    }
    let mut running = FuturesUnordered::new();
    let front = ctx.clone();
    let layer = proxy_port_layer(first);
    running.push(Box::pin(async move {
        match layer {
            Ok(Layer::Http2) => crate::http::serve_h2(front, io, None).await,
            Ok(_) => crate::http::serve_h1(front, io, None).await,
            Err(reason) => {
                tracing::info!(client.addr = %front.client().peername, "bad request: {reason}");
                crate::http::bad_request(io, reason).await;
            }
        }
    })
        as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>);
    loop {
        tokio::select! {
            t = ctx.next_tunnel() => running.push(Box::pin(tunnel(ctx.clone(), t))),
            done = running.next() => if done.is_none() {
                // A tunnel is queued before its CONNECT is answered, so none can be missed.
                match ctx.try_next_tunnel() {
                    Some(t) => running.push(Box::pin(tunnel(ctx.clone(), t))),
                    None => break,
                }
            },
        }
    }
}

/// Serves a CONNECT tunnel once hyper hands its stream over. The tunnel is taken apart
/// first: kept whole, its fields would stay in the future kept for the tunnel's life.
async fn tunnel(ctx: Rc<ConnCtx>, t: Box<Tunnel>) {
    let Tunnel {
        upgrade,
        host,
        port,
        via,
    } = *t;
    match upgrade.await {
        Ok(upgraded) => {
            let io = unwrap_upgraded(upgraded);
            let address = Address::new(host, port);
            serve_tunnel_to(ctx, io, address, TunnelTo::Server(Scheme::Http), via).await;
        }
        Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
    }
}

/// The client's stream after CONNECT. On the proxy port hyper served a `BoxIo` (behind
/// `serve_h1`'s `ReadLatch`): taken back out of hyper's `Upgraded` (with what hyper read past
/// the CONNECT in front of it), every read and write of the tunnel skips two adapters between
/// tokio's and hyper's IO traits, hyper's rewind buffer and one dynamic call (measured: some
/// hundred instructions per intercepted request).
fn unwrap_upgraded(upgraded: hyper::upgrade::Upgraded) -> BoxIo {
    match upgraded.downcast::<TokioIo<crate::io::ReadLatch<BoxIo>>>() {
        Ok(parts) => {
            let io = parts.io.into_inner().into_inner();
            if parts.read_buf.is_empty() {
                io
            } else {
                Box::new(PrefixedIo::new(parts.read_buf, io))
            }
        }
        Err(upgraded) => Box::new(TokioIo::new(upgraded)),
    }
}

/// What the client's first bytes say, or `None` when it closed (or failed) before any.
async fn detect_client(io: &mut BoxIo, buf: &mut BytesMut) -> Option<Detected> {
    loop {
        match tokio::time::timeout(DETECT_TIMEOUT, io.read_buf(buf)).await {
            // The client waits for the server (or paused mid-message): raw TCP.
            Err(_) => return Some(Detected::Other),
            Ok(Ok(0) | Err(_)) if buf.is_empty() => return None,
            Ok(Ok(0) | Err(_)) => return Some(Detected::Other),
            Ok(Ok(_)) => {}
        }
        match detect(buf) {
            Detected::NeedMore if buf.len() < MAX_DETECT => continue,
            Detected::Tls => {
                if client_hello_complete(buf) || buf.len() >= MAX_DETECT {
                    return Some(Detected::Tls);
                }
            }
            d => return Some(d),
        }
    }
}

/// [`detect_client`] for a reverse `tcp://` target, whose connection is opened at once (as
/// mitmproxy dials a reverse target eagerly) and kept for the layer's first dial
/// ([`ConnCtx::set_predialed`]): a server that speaks first (an SMTP, FTP or SSH greeting)
/// decides raw TCP as soon as its first bytes arrive (peeked, so the relay still reads
/// them), instead of after [`DETECT_TIMEOUT`] without a byte from the client.
async fn detect_client_or_server(
    ctx: &ConnCtx,
    io: &mut BoxIo,
    buf: &mut BytesMut,
    address: &Address,
) -> Option<Detected> {
    /// What happened first.
    enum Event {
        Client(Option<Detected>),
        Dialed(Option<tokio::net::TcpStream>),
        /// The server sent bytes (true), or closed or failed (false).
        Server(bool),
    }
    let timeout = ctx.shared.config().via.timeout;
    let dial = tokio::time::timeout(timeout, connect_direct(address));
    let client = detect_client(io, buf);
    tokio::pin!(dial, client);
    let mut dialing = true;
    let mut server: Option<tokio::net::TcpStream> = None;
    let mut watching = false;
    let detected = loop {
        let event = tokio::select! {
            d = &mut client => Event::Client(d),
            r = &mut dial, if dialing => Event::Dialed(r.ok().and_then(Result::ok)),
            r = peek_first(server.as_ref()), if watching => Event::Server(r),
        };
        match event {
            Event::Client(d) => break d,
            Event::Dialed(s) => {
                dialing = false;
                watching = s.is_some();
                server = s;
            }
            Event::Server(true) => break Some(Detected::Other),
            Event::Server(false) => watching = false,
        }
    };
    // The client spoke first while the dial was still under way: it is the connection the
    // layer dials next, so it is finished rather than abandoned (a failed one is the layer's
    // own dial to report).
    if dialing && detected.is_some() {
        server = dial.await.ok().and_then(Result::ok);
    }
    if let Some(s) = server {
        let _ = s.set_nodelay(true);
        ctx.set_predialed(address.clone(), s);
    }
    detected
}

/// Whether `server` sends a first byte (left in the socket); pending without a server.
async fn peek_first(server: Option<&tokio::net::TcpStream>) -> bool {
    let Some(s) = server else {
        return std::future::pending().await;
    };
    let mut one = [0u8; 1];
    matches!(s.peek(&mut one).await, Ok(n) if n > 0)
}

/// Fires `next_layer` when some addon handles it: the layer and the server's route it chose
/// (`via`), or `None` when the proxy is shutting down.
async fn next_layer_hook(
    ctx: &ConnCtx,
    server: Address,
    data: &Bytes,
    detected: Layer,
    via: Option<Via>,
) -> Option<(Layer, Option<Via>)> {
    if !ctx.manager().handles(HookKind::NextLayer) {
        return Some((detected, via));
    }
    let nl = Box::new(NextLayer {
        client: ctx.client(),
        server: Some(server),
        data_client: data.clone(),
        detected,
        layer: detected,
        via,
    });
    ctx.fire(HookKind::NextLayer, nl)
        .await
        .map(|nl| (nl.layer, nl.via))
}

/// What a tunnel leads to, which decides the layers on its server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelTo {
    /// A server the client named (CONNECT, SOCKS5, transparent): plain HTTP goes to it by
    /// this scheme, TLS is intercepted with TLS to the server under the client's SNI.
    Server(Scheme),
    /// A reverse proxy's fixed target: its scheme says what waylay speaks to it, whatever the
    /// client speaks (mitmproxy's reverse layer stacks).
    Reverse(ReverseScheme),
}

impl TunnelTo {
    /// Whether the layer inside is raw TCP whatever the client sends (reverse `tcp://` and
    /// `tls://`): only TLS from the client is told apart.
    fn stream(self) -> bool {
        matches!(self, Self::Reverse(ReverseScheme::Tcp | ReverseScheme::Tls))
    }
}

/// Detects the protocol inside a tunnel and serves it.
///
/// A target matching `ignore_hosts` is relayed untouched and one matching `tcp_hosts` is raw
/// TCP, both decided before the client sends anything; otherwise the client's first bytes
/// decide, and `ignore_hosts` / `allow_hosts` are checked against the target and the TLS SNI.
/// Plain HTTP from the client goes to the target by `plain` (`https` for a reverse proxy to
/// an HTTPS target).
pub(crate) fn serve_tunnel(
    ctx: Rc<ConnCtx>,
    io: BoxIo,
    host: String,
    port: u16,
    plain: Scheme,
) -> impl std::future::Future<Output = ()> {
    serve_tunnel_to(
        ctx,
        io,
        Address::new(host, port),
        TunnelTo::Server(plain),
        None,
    )
}

/// [`serve_tunnel`] for any [`TunnelTo`], the server reached through `via` (`None`: the
/// mode's route); `next_layer` may still change both the layer and the route.
///
/// Two phases, as inside TLS: the setup (detection, `next_layer`, interception, dialing) is
/// boxed and freed once done, so the future kept for the tunnel's (mostly idle) life holds
/// only the layer serving it. Not an `async fn`: its arguments would stay in that future
/// beside the layer (about 600 bytes per idle intercepted connection, S5).
pub(crate) fn serve_tunnel_to(
    ctx: Rc<ConnCtx>,
    io: BoxIo,
    address: Address,
    to: TunnelTo,
    via: Option<Via>,
) -> impl std::future::Future<Output = ()> {
    let setup = Box::pin(tunnel_layer(ctx, io, address, to, via));
    async move {
        if let Some(layer) = setup.await {
            layer.serve().await;
        }
    }
}

/// What serves a tunnel once its layer is chosen and set up.
enum Serving {
    /// HTTP (or raw TCP) inside intercepted TLS.
    InsideTls(Rc<ConnCtx>, Box<Intercepted>),
    Http1(Rc<ConnCtx>, BoxIo, Destination),
    Http2(Rc<ConnCtx>, BoxIo, Destination),
    Relay(Rc<ConnCtx>, BoxIo, ServerSide, Mode),
}

impl Serving {
    /// The layer's future (not an `async fn`, which would keep `self` beside it).
    fn serve(self) -> impl std::future::Future<Output = ()> {
        use futures::future::Either::{Left, Right};
        match self {
            Self::InsideTls(ctx, i) => Left(Left(serve_inside_tls(ctx, i))),
            Self::Http1(ctx, io, dest) => Left(Right(crate::http::serve_h1(ctx, io, Some(dest)))),
            Self::Http2(ctx, io, dest) => Right(Left(crate::http::serve_h2(ctx, io, Some(dest)))),
            Self::Relay(ctx, io, side, mode) => Right(Right(relay(ctx, io, side, mode))),
        }
    }
}

/// The setup of [`serve_tunnel_to`]: the layer that serves the tunnel, or `None` when the
/// tunnel is over already.
async fn tunnel_layer(
    ctx: Rc<ConnCtx>,
    mut io: BoxIo,
    address: Address,
    to: TunnelTo,
    via: Option<Via>,
) -> Option<Serving> {
    let cfg = ctx.shared.config();
    let (host, port) = (address.host.clone(), address.port);
    let target = address.to_string();
    let mut buf = BytesMut::new();
    let ignored_early = cfg
        .ignore_hosts
        .as_ref()
        .is_some_and(|s| s.is_match(&target));
    let tcp_host = !ignored_early && !to.stream() && cfg.is_tcp_host(&host, port);
    // A reverse `tcp://` target is dialed while the client is read (the route is direct: the
    // early connection is what the layer's first direct dial uses).
    let eager = to == TunnelTo::Reverse(ReverseScheme::Tcp)
        && via.is_none()
        && matches!(ctx.mode.default_route, Via::Direct);
    let detected = if ignored_early || tcp_host {
        Detected::NeedMore
    } else {
        buf.reserve(4096);
        // Boxed: the setup future stays small (it is allocated per tunnel).
        let detected = if eager {
            Box::pin(detect_client_or_server(&ctx, &mut io, &mut buf, &address)).await
        } else {
            Box::pin(detect_client(&mut io, &mut buf)).await
        };
        detected?
    };
    let ignored = ignored_early
        || !tcp_host && {
            let mut names = vec![target];
            if detected == Detected::Tls
                && let Some(sni) = parse_client_hello(&buf).and_then(|h| h.sni)
            {
                names.push(Address::new(sni, port).to_string());
            }
            cfg.has_host_filters() && cfg.ignores(&names)
        };
    let position = if to.stream() {
        Position::ReverseStream { ignored }
    } else {
        Position::Tunnel { ignored, tcp_host }
    };
    let layer = choose(position, detected, cfg.rawtcp);
    let data = buf.freeze();
    let (layer, via) = Box::pin(next_layer_hook(&ctx, address.clone(), &data, layer, via)).await?;
    let io: BoxIo = if data.is_empty() {
        io
    } else {
        Box::new(PrefixedIo::new(data.clone(), io))
    };
    // What waylay speaks to the server: TLS, and under which name.
    let server_tls = match to {
        TunnelTo::Server(_) => ServerTls::ClientSni,
        TunnelTo::Reverse(s) if !s.tls() => ServerTls::Plain,
        // mitmproxy's rule: the target's name, unless the client's Host (and SNI) are kept.
        TunnelTo::Reverse(_) if cfg.keep_host_header => ServerTls::ClientSni,
        TunnelTo::Reverse(_) => ServerTls::Sni(sni_for(&host)),
    };
    let plain = match to {
        TunnelTo::Server(plain) => plain,
        TunnelTo::Reverse(s) if s.tls() => Scheme::Https,
        TunnelTo::Reverse(_) => Scheme::Http,
    };
    let dest = Destination {
        scheme: plain,
        host: host.as_str().into(),
        port,
        route: via.clone(),
    };
    let dial = |address| ServerSide::Dial(address, via.clone());
    Some(match layer {
        Layer::Tls => {
            let plan = ServerPlan {
                tls: server_tls,
                via: via.clone(),
            };
            let intercepted = Box::pin(crate::intercept::intercept(
                &ctx,
                io,
                data,
                host.clone(),
                port,
                plan,
            ));
            match intercepted.await {
                TlsOutcome::Intercepted(i) if to.stream() => {
                    let Intercepted { client, server, .. } = *i;
                    let side = server_side(server.into_stream(&ctx).await, address);
                    Serving::Relay(ctx, Box::new(client), side, Mode::Tcp)
                }
                TlsOutcome::Intercepted(i) => Serving::InsideTls(ctx, i),
                TlsOutcome::Ignored(io) => {
                    Serving::Relay(ctx, io, dial(address), Mode::Passthrough)
                }
                TlsOutcome::Done => return None,
            }
        }
        Layer::Http1 => Serving::Http1(ctx, io, dest),
        Layer::Http2 => Serving::Http2(ctx, io, dest),
        Layer::Tcp => {
            let side = if to == TunnelTo::Reverse(ReverseScheme::Tls) {
                // A plain client to a `tls://` target: waylay adds the TLS, under the
                // target's name (there is no client SNI to keep).
                let spec = DialSpec {
                    address: address.clone(),
                    tls: Some((sni_for(&host), Vec::new())),
                    via: via.clone(),
                    proxy_form: false,
                };
                server_side(Box::pin(connect_stream(&ctx, &spec)).await, address)
            } else {
                dial(address)
            };
            Serving::Relay(ctx, io, side, Mode::Tcp)
        }
        Layer::Passthrough => Serving::Relay(ctx, io, dial(address), Mode::Passthrough),
    })
}

/// The TCP relay, boxed: the futures that may end in it (a tunnel's, the layer inside TLS)
/// stay sized for the HTTP layer they serve far more often, and an idle HTTP connection
/// does not keep the relay's size allocated (S5 in BENCHMARKS.md).
async fn relay(ctx: Rc<ConnCtx>, io: BoxIo, side: ServerSide, mode: Mode) {
    Box::pin(crate::relay::tcp::serve(ctx, io, side, mode)).await;
}

/// The TCP layer's server side for a stream dialed before it started.
fn server_side(server: Result<ServerStream, ServerError>, address: Address) -> ServerSide {
    match server {
        Ok(stream) => ServerSide::Connected {
            stream: Box::new(stream),
            prefix: Bytes::new(),
        },
        Err(e) => ServerSide::Failed {
            address,
            error: e.to_string(),
        },
    }
}

/// Who spoke first inside the TLS, while the client's protocol is not known yet.
#[derive(Debug)]
enum First {
    /// The client sent bytes (they are in the client buffer) or sent nothing in time.
    Client(Detected),
    /// The server sent bytes first (they are in the server buffer): not HTTP.
    Server,
    /// The client closed (or failed) before sending anything.
    Closed,
}

/// Reads the first decrypted bytes of `client` into `buf` until [`detect`] can tell (or
/// [`DETECT_TIMEOUT`] passes without a byte), and meanwhile the first bytes of `server`
/// (when given) into `server_buf`: a server that speaks first decides at once.
async fn first_bytes<C: Io, S: Io>(
    client: &mut C,
    buf: &mut BytesMut,
    mut server: Option<&mut S>,
    server_buf: &mut BytesMut,
) -> First {
    buf.reserve(4096);
    loop {
        let server_read = async {
            match server.as_deref_mut() {
                Some(s) => {
                    server_buf.reserve(4096);
                    s.read_buf(server_buf).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = tokio::time::timeout(DETECT_TIMEOUT, client.read_buf(buf)) => match r {
                // The client waits for the server (or paused mid-message).
                Err(_) => return First::Client(Detected::Other),
                Ok(Ok(0) | Err(_)) if buf.is_empty() => return First::Closed,
                Ok(Ok(0) | Err(_)) => return First::Client(Detected::Other),
                Ok(Ok(_)) => match detect(buf) {
                    Detected::NeedMore if buf.len() < MAX_DETECT => {}
                    d => return First::Client(d),
                },
            },
            r = server_read => match r {
                Ok(n) if n > 0 => return First::Server,
                // The server closed or failed first: let the client's bytes decide.
                Ok(_) | Err(_) => server = None,
            },
        }
    }
}

/// Closes a server stream no layer took (with its `server_disconnect`).
async fn close_unused(ctx: &ConnCtx, server: Upstream) {
    server.close(ctx).await;
}

/// Chooses and serves the layer inside the client's TLS (`next_layer` may override it).
async fn serve_inside_tls(ctx: Rc<ConnCtx>, tls: Box<Intercepted>) {
    // Two phases: everything up to the HTTP layer is boxed and freed once done, so the
    // future kept for the (mostly idle) life of the connection holds the HTTP layer only.
    let serve = {
        let Some(http) = Box::pin(prepare_inside_tls(&ctx, tls)).await else {
            return;
        };
        http_layer(ctx, http)
    };
    serve.await;
}

/// The HTTP layer's future, made outside an `async fn` so that the stream it takes is not
/// kept a second time beside it. HTTP/2 is boxed: the future is sized for HTTP/1.
fn http_layer(
    ctx: Rc<ConnCtx>,
    http: InsideHttp,
) -> futures::future::Either<
    impl std::future::Future<Output = ()>,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
> {
    let InsideHttp { client, target, h2 } = http;
    if h2 {
        futures::future::Either::Right(Box::pin(crate::http::serve_h2(ctx, client, Some(target))))
    } else {
        futures::future::Either::Left(crate::http::serve_h1(ctx, client, Some(target)))
    }
}

/// The HTTP layer chosen inside an intercepted TLS connection, its server connection pooled.
struct InsideHttp {
    client: PrefixedIo<TlsReads<tokio_rustls::server::TlsStream<BoxIo>>>,
    target: Destination,
    h2: bool,
}

/// Chooses the layer inside the client's TLS and serves it when it is not HTTP; for HTTP,
/// pools the server connection and gives the client's stream back for [`serve_inside_tls`].
async fn prepare_inside_tls(ctx: &Rc<ConnCtx>, tls: Box<Intercepted>) -> Option<InsideHttp> {
    let ctx = ctx.clone();
    let Intercepted {
        mut client,
        alpn,
        mut server,
        target,
    } = *tls;
    let cfg = ctx.shared.config();
    let mut data = BytesMut::new();
    let mut server_data = BytesMut::new();
    let detected = if alpn.is_some() {
        Detected::NeedMore
    } else {
        // Only a raw TCP layer could relay what a server says first.
        let watch = match (&mut server, cfg.rawtcp) {
            (Upstream::Dialed(Ok(s)), true) => Some(&mut s.io),
            _ => None,
        };
        match Box::pin(first_bytes(&mut client, &mut data, watch, &mut server_data)).await {
            First::Client(d) => d,
            First::Server => Detected::Other,
            First::Closed => {
                Box::pin(close_unused(&ctx, server)).await;
                return None;
            }
        }
    };
    let alpn_bytes = alpn.as_deref().map(str::as_bytes);
    let layer = choose(
        Position::InsideTls { alpn: alpn_bytes },
        detected,
        cfg.rawtcp,
    );
    let data = data.freeze();
    let server_data = server_data.freeze();
    let address = Address::new(target.host.clone(), target.port);
    // The server is connected already: its route is shown, a change to it is moot.
    let via = target.route.clone();
    let Some((layer, _)) =
        Box::pin(next_layer_hook(&ctx, address.clone(), &data, layer, via)).await
    else {
        Box::pin(close_unused(&ctx, server)).await;
        return None;
    };
    if layer == Layer::Http1 && detect(&data) == Detected::Other {
        // HTTP/1 chosen for bytes that are not HTTP (`rawtcp` off): one clear line, as on
        // the proxy port.
        let reason = "waylay: malformed request line";
        tracing::info!(client.addr = %ctx.client().peername, "bad request inside TLS: {reason}");
        Box::pin(crate::http::bad_request(client, reason)).await;
        Box::pin(close_unused(&ctx, server)).await;
        return None;
    }
    // Reads stop after a short record (see `TlsReads`).
    let client = PrefixedIo::new(data, TlsReads::new(client));
    let mode = match layer {
        Layer::Http1 | Layer::Http2 => {
            // A failed dial is already in the pool's failures: requests are answered 502.
            // A pooled server connection is in the pool already.
            if let Upstream::Dialed(Ok(mut stream)) = server {
                if !server_data.is_empty() {
                    stream.io = Box::new(PrefixedIo::new(server_data, stream.io));
                }
                match Box::pin(handshake(&ctx, stream)).await {
                    Ok(entry) => ctx.pool.insert(target.clone(), entry),
                    Err(e) => {
                        tracing::info!(client.addr = %ctx.client().peername, "{e}");
                        ctx.pool.fail(target.clone(), e);
                    }
                }
            }
            return Some(InsideHttp {
                client,
                target,
                h2: layer == Layer::Http2,
            });
        }
        Layer::Tcp => Mode::Tcp,
        Layer::Passthrough => Mode::Passthrough,
        Layer::Tls => {
            tracing::info!(client.addr = %ctx.client().peername, "TLS inside intercepted TLS is not intercepted again: relayed as raw TCP");
            Mode::Tcp
        }
    };
    let server_side = match server.into_stream(&ctx).await {
        Ok(stream) => ServerSide::Connected {
            stream: Box::new(stream),
            prefix: server_data,
        },
        Err(e) => ServerSide::Failed {
            address,
            error: e.to_string(),
        },
    };
    relay(ctx, Box::new(client), server_side, mode).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TUNNEL: Position<'static> = Position::Tunnel {
        ignored: false,
        tcp_host: false,
    };

    fn inside(alpn: Option<&'static [u8]>) -> Position<'static> {
        Position::InsideTls { alpn }
    }

    #[test]
    fn in_a_tunnel_the_first_bytes_decide() {
        assert_eq!(choose(TUNNEL, Detected::Tls, false), Layer::Tls);
        assert_eq!(choose(TUNNEL, Detected::Http1, false), Layer::Http1);
        assert_eq!(choose(TUNNEL, Detected::Http2, false), Layer::Http2);
        assert_eq!(choose(TUNNEL, Detected::Other, true), Layer::Tcp);
        assert_eq!(choose(TUNNEL, Detected::Other, false), Layer::Passthrough);
    }

    #[test]
    fn host_filters_win_over_the_bytes() {
        for d in [Detected::Tls, Detected::Http1, Detected::Other] {
            let ignored = Position::Tunnel {
                ignored: true,
                tcp_host: true,
            };
            assert_eq!(choose(ignored, d, true), Layer::Passthrough);
            let tcp = Position::Tunnel {
                ignored: false,
                tcp_host: true,
            };
            assert_eq!(choose(tcp, d, false), Layer::Tcp);
        }
    }

    #[test]
    fn an_http_alpn_decides_without_bytes() {
        for rawtcp in [true, false] {
            assert_eq!(
                choose(inside(Some(b"h2")), Detected::Other, rawtcp),
                Layer::Http2
            );
            assert_eq!(
                choose(inside(Some(b"http/1.1")), Detected::Other, rawtcp),
                Layer::Http1
            );
        }
    }

    #[test]
    fn inside_tls_without_alpn_the_first_bytes_decide() {
        assert_eq!(choose(inside(None), Detected::Http1, true), Layer::Http1);
        assert_eq!(choose(inside(None), Detected::Http2, true), Layer::Http2);
        assert_eq!(choose(inside(None), Detected::Other, true), Layer::Tcp);
        assert_eq!(choose(inside(None), Detected::Tls, true), Layer::Tcp);
        assert_eq!(
            choose(inside(Some(b"imap")), Detected::Other, true),
            Layer::Tcp
        );
    }

    #[test]
    fn without_rawtcp_what_is_not_http_stays_http1_inside_tls() {
        assert_eq!(choose(inside(None), Detected::Other, false), Layer::Http1);
        assert_eq!(choose(inside(None), Detected::Http2, false), Layer::Http2);
        assert_eq!(
            choose(inside(Some(b"imap")), Detected::Other, false),
            Layer::Http1
        );
    }

    #[test]
    fn a_reverse_stream_is_raw_tcp_after_the_clients_tls() {
        let pos = Position::ReverseStream { ignored: false };
        for rawtcp in [true, false] {
            assert_eq!(choose(pos, Detected::Tls, rawtcp), Layer::Tls);
            for d in [
                Detected::Http1,
                Detected::Http2,
                Detected::Other,
                Detected::NeedMore,
            ] {
                assert_eq!(choose(pos, d, rawtcp), Layer::Tcp);
            }
            let ignored = Position::ReverseStream { ignored: true };
            assert_eq!(choose(ignored, Detected::Tls, rawtcp), Layer::Passthrough);
        }
    }

    #[test]
    fn the_proxy_port_takes_http_only() {
        assert_eq!(
            proxy_port_layer(b"GET http://a/ HTTP/1.1"),
            Ok(Layer::Http1)
        );
        assert_eq!(
            proxy_port_layer(b"CONNECT a:443 HTTP/1.1"),
            Ok(Layer::Http1)
        );
        assert_eq!(
            proxy_port_layer(crate::proto::detect::H2_PREFACE),
            Ok(Layer::Http2)
        );
        assert_eq!(
            proxy_port_layer(b"PRI * HTTP/2.0\r\n\r\nXX"),
            Ok(Layer::Http2)
        );
        let tls = proxy_port_layer(&[0x16, 3, 1, 0, 5]).expect_err("tls");
        assert!(tls.contains("CONNECT"), "{tls}");
        let other = proxy_port_layer(b"\x00\x01hello").expect_err("other");
        assert!(other.contains("malformed"), "{other}");
    }

    proptest! {
        #[test]
        fn random_first_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..32), rawtcp in any::<bool>()) {
            let d = detect(&b);
            let _ = proxy_port_layer(&b);
            let _ = choose(TUNNEL, d, rawtcp);
            let _ = choose(inside(None), d, rawtcp);
            let _ = choose(Position::ReverseStream { ignored: false }, d, rawtcp);
        }
    }

    fn own2<A, B, F>(_: fn(A, B) -> F) -> usize {
        size_of::<F>()
    }
    fn rr2<'a, A: 'a, B, F>(_: fn(&'a A, B) -> F) -> usize {
        size_of::<F>()
    }
    fn own3<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }
    fn own5<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    /// The futures an idle intercepted connection keeps allocated (S5; the client's serve
    /// future is bounded in `conn::client`'s tests): the tunnel's (boxed in the proxy port's set) and hyper's
    /// server connection inside it. The sizes print with `--nocapture`; the bounds hold in
    /// debug builds, where futures are largest.
    #[test]
    fn idle_connection_futures_stay_small() {
        let proxy_port = own3(serve_proxy_port);
        let tunnel = own2(tunnel);
        let inside = own2(serve_inside_tls);
        for (name, size) in [
            ("serve_proxy_port", proxy_port),
            ("tunnel", tunnel),
            ("serve_tunnel_to", own5(serve_tunnel_to)),
            ("serve_inside_tls", inside),
            ("prepare_inside_tls", rr2(prepare_inside_tls)),
            (
                "serve_h1<PrefixedIo<BoxIo>>",
                own3(crate::http::serve_h1::<PrefixedIo<BoxIo>>),
            ),
            ("serve_h1<BoxIo>", own3(crate::http::serve_h1::<BoxIo>)),
            (
                "serve_h1<PrefixedIo<TlsReads<TlsStream<BoxIo>>>>",
                own3(
                    crate::http::serve_h1::<
                        PrefixedIo<TlsReads<tokio_rustls::server::TlsStream<BoxIo>>>,
                    >,
                ),
            ),
            (
                "TlsStream<BoxIo>",
                size_of::<tokio_rustls::server::TlsStream<BoxIo>>(),
            ),
            (
                "rustls::ServerConnection",
                size_of::<rustls::ServerConnection>(),
            ),
            (
                "rustls::ClientConnection",
                size_of::<rustls::ClientConnection>(),
            ),
            (
                "serve_h2<PrefixedIo<BoxIo>>",
                own3(crate::http::serve_h2::<PrefixedIo<BoxIo>>),
            ),
        ] {
            eprintln!("{name}: {size} bytes");
        }
        assert!(tunnel <= 4096, "tunnel {tunnel}");
        assert!(inside <= 4096, "serve_inside_tls {inside}");
    }
}
