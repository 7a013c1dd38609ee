//! CONNECT tunnels: answering CONNECT, detecting what the client speaks inside, and handing
//! the stream to the TLS, HTTP or relay layer.

use std::rc::Rc;

use bytes::BytesMut;
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use waylay_core::HookKind;
use waylay_core::flow::{Address, HttpFlow, Message, Request, split_host_port};
use waylay_core::hooks::{Layer, NextLayer};

use crate::context::{ConnCtx, Target};
use crate::detect::{Detected, detect};
use crate::http::body::ProxyBody;
use crate::http::convert::{headers_from, version_of};
use crate::http::error_response;
use crate::io::{BoxIo, PrefixedIo};

/// Most bytes read while waiting to tell which protocol a tunnel carries.
const MAX_DETECT: usize = 64 * 1024;

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
    let Some((host, port)) = split_host_port(&authority, 443) else {
        let msg = format!("bad CONNECT target {authority:?}: expected host:port");
        tracing::info!(client.addr = %ctx.client().peername, "{msg}");
        return Ok(error_response(StatusCode::BAD_REQUEST, &msg));
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
    actix::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io: BoxIo = Box::new(TokioIo::new(upgraded));
                serve_tunnel(tunnel_ctx, io, target_host, target_port).await;
            }
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    });
    Ok(hyper::Response::new(ProxyBody::empty()))
}

/// Detects the protocol inside a tunnel and serves it.
pub(crate) async fn serve_tunnel(ctx: Rc<ConnCtx>, mut io: BoxIo, host: String, port: u16) {
    let cfg = ctx.shared.config();
    let mut buf = BytesMut::with_capacity(4096);
    let detected = loop {
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match detect(&buf) {
            Detected::NeedMore if buf.len() < MAX_DETECT => continue,
            Detected::Tls => {
                if crate::intercept::client_hello_complete(&buf) || buf.len() >= MAX_DETECT {
                    break Detected::Tls;
                }
            }
            d => break d,
        }
    };
    let mut layer = match detected {
        Detected::Tls => Layer::Tls,
        Detected::Http1 => Layer::Http1,
        Detected::Http2 => Layer::Http2,
        Detected::Other | Detected::NeedMore => Layer::Tcp,
    };
    if cfg.is_tcp_host(&host, port) {
        layer = Layer::Tcp;
    }
    if layer == Layer::Tls && cfg.passthrough(&host, port) {
        layer = Layer::Passthrough;
    }
    if layer == Layer::Tcp && !cfg.rawtcp {
        layer = Layer::Passthrough;
    }
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
    let io: BoxIo = Box::new(PrefixedIo::new(data.clone(), io));
    match layer {
        Layer::Tls => crate::intercept::intercept(ctx, io, &data, host, port).await,
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
        Layer::Tcp | Layer::Passthrough => relay(ctx, io, host, port).await,
    }
}

/// Relays bytes between the client and `host:port` untouched.
pub(crate) async fn relay(ctx: Rc<ConnCtx>, mut io: BoxIo, host: String, port: u16) {
    let cfg = ctx.shared.config();
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    let mut server = match tokio::time::timeout(cfg.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(client.addr = %ctx.client().peername, server.addr = %format!("{host}:{port}"), "cannot connect: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(client.addr = %ctx.client().peername, server.addr = %format!("{host}:{port}"), "connect timed out");
            return;
        }
    };
    let _ = server.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut server).await {
        tracing::debug!(server.addr = %format!("{host}:{port}"), "relay ended: {e}");
    }
}
