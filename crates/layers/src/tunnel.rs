//! CONNECT tunnels: answering CONNECT, detecting what the client speaks inside, and handing
//! the stream to the TLS, HTTP or raw TCP layer.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use waylay_core::HookKind;
use waylay_core::flow::{Address, HttpFlow, Message, Request};
use waylay_core::hooks::{Layer, NextLayer};

use crate::context::{ConnCtx, Target};
use crate::http::body::ProxyBody;
use crate::http::convert::{headers_from, version_of};
use crate::http::error_response;
use crate::io::{BoxIo, PrefixedIo};
use crate::proto::client_hello::{client_hello_complete, parse_client_hello};
use crate::proto::detect::{Detected, detect};
use crate::proto::target::connect_target;
use crate::tcp;

/// Most bytes read while waiting to tell which protocol a tunnel carries.
pub(crate) const MAX_DETECT: usize = 64 * 1024;

/// Answers a CONNECT request (after `http_connect`) and serves the tunnel once hyper hands
/// over the stream.
pub(crate) async fn connect(
    ctx: Rc<ConnCtx>,
    mut req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ProxyBody>, crate::http::Killed> {
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let (host, port) = match connect_target(&authority) {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string();
            tracing::info!(client.addr = %ctx.client().peername, "{msg}");
            return Ok(error_response(StatusCode::BAD_REQUEST, &msg));
        }
    };
    let request = Request {
        method: "CONNECT".into(),
        scheme: "http".into(),
        authority,
        host,
        port,
        path: String::new(),
        message: Message::new(version_of(req.version()), headers_from(req.headers())),
    };
    let flow = Box::new(HttpFlow::new(ctx.client(), request));
    let Some(mut flow) = ctx.fire(HookKind::HttpConnect, flow).await else {
        return Err(crate::http::Killed);
    };
    if flow.killed() {
        return Err(crate::http::Killed);
    }
    if let Some(resp) = &flow.response
        && !(200..300).contains(&resp.status_code)
    {
        // The addon refused the tunnel with its own response.
        let status = StatusCode::from_u16(resp.status_code).unwrap_or(StatusCode::FORBIDDEN);
        let body = resp.raw_content.clone().unwrap_or_default();
        let mut r = hyper::Response::new(ProxyBody::full(body));
        *r.status_mut() = status;
        *r.headers_mut() = crate::http::convert::headers_to(&resp.headers);
        return Ok(r);
    }
    flow.live = false;
    let target_host = flow.request.host.clone();
    let target_port = flow.request.port;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let tunnel_ctx = ctx.clone();
    let task = actix::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io: BoxIo = Box::new(TokioIo::new(upgraded));
                serve_tunnel(tunnel_ctx, io, target_host, target_port).await;
            }
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    });
    ctx.tunnels.borrow_mut().push(task);
    Ok(hyper::Response::new(ProxyBody::empty()))
}

/// How long a tunnel waits for the client's next bytes while its protocol is not known yet.
///
/// A client that sends nothing within it after CONNECT (a protocol where the server speaks
/// first: SMTP, FTP, an SSH server banner...) or leaves its first message unfinished is
/// served as raw TCP, so the server's greeting reaches it about this long after CONNECT. TLS
/// and HTTP clients send at once, so they never wait for it. mitmproxy decides the same case
/// by seeing the server's bytes first, because it dials eagerly.
pub(crate) const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

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

/// Detects the protocol inside a tunnel and serves it.
///
/// As mitmproxy's `next_layer`: a target matching `ignore_hosts` is relayed untouched and one
/// matching `tcp_hosts` is raw TCP, both decided before the client sends anything; otherwise
/// the client's first bytes decide (TLS, HTTP/1, HTTP/2, else raw TCP), and `ignore_hosts` /
/// `allow_hosts` are checked against the target and the TLS SNI.
pub(crate) async fn serve_tunnel(ctx: Rc<ConnCtx>, mut io: BoxIo, host: String, port: u16) {
    let cfg = ctx.shared.config();
    let target = Address::new(host.clone(), port).to_string();
    let mut buf = BytesMut::new();
    let ignored_early = cfg
        .ignore_hosts
        .as_ref()
        .is_some_and(|s| s.is_match(&target));
    let mut layer = if ignored_early {
        Layer::Passthrough
    } else if cfg.is_tcp_host(&host, port) {
        Layer::Tcp
    } else {
        buf.reserve(4096);
        let Some(detected) = detect_client(&mut io, &mut buf).await else {
            return;
        };
        let layer = match detected {
            Detected::Tls => Layer::Tls,
            Detected::Http1 => Layer::Http1,
            Detected::Http2 => Layer::Http2,
            Detected::Other | Detected::NeedMore => Layer::Tcp,
        };
        let mut names = vec![target.clone()];
        if layer == Layer::Tls
            && let Some(sni) = parse_client_hello(&buf).and_then(|h| h.sni)
        {
            names.push(Address::new(sni, port).to_string());
        }
        let ignored = cfg.has_host_filters() && cfg.ignores(&names);
        // Without `rawtcp`, what is not HTTP or TLS is relayed with no events.
        if ignored || (layer == Layer::Tcp && !cfg.rawtcp) {
            Layer::Passthrough
        } else {
            layer
        }
    };
    let data = buf.freeze();
    if ctx.manager().handles(HookKind::NextLayer) {
        let nl = Box::new(NextLayer {
            client: ctx.client(),
            server: Some(Address::new(host.clone(), port)),
            data_client: data.clone(),
            detected: layer,
            layer,
        });
        match ctx.fire(HookKind::NextLayer, nl).await {
            Some(nl) => layer = nl.layer,
            None => return,
        }
    }
    let io: BoxIo = if data.is_empty() {
        io
    } else {
        Box::new(PrefixedIo::new(data.clone(), io))
    };
    match layer {
        Layer::Tls => crate::intercept::intercept(ctx, io, data, host, port).await,
        Layer::Http1 => {
            let target = Target {
                scheme: "http",
                host,
                port,
            };
            crate::http::serve_h1(ctx, io, Some(target)).await;
        }
        Layer::Http2 => {
            let target = Target {
                scheme: "http",
                host,
                port,
            };
            crate::http::serve_h2(ctx, io, Some(target)).await;
        }
        Layer::Tcp => {
            tcp::serve(
                ctx,
                io,
                tcp::ServerSide::Dial(Address::new(host, port)),
                tcp::Mode::Tcp,
            )
            .await
        }
        Layer::Passthrough => {
            tcp::serve(
                ctx,
                io,
                tcp::ServerSide::Dial(Address::new(host, port)),
                tcp::Mode::Passthrough,
            )
            .await;
        }
    }
}
