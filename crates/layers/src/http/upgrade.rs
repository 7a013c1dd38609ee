//! The WebSocket handshake on the HTTP side: recognising an upgrade request, the
//! `websocket_handshake` hook, and the server's answer (a 101 hands both connections to the
//! relay in `relay/websocket.rs`).

use std::rc::Rc;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use waylay_core::flow::{HttpFlow, Message, Response, WebSocketData, now, reason_phrase};
use waylay_core::{FlowError, HookKind};

use super::body::ProxyBody;
use super::convert::{headers_from, headers_to, version_of};
use super::response::response_phase;
use super::walk::{Killed, fail, killed, proceed, run_hook};
use crate::conn::pool::PoolEntry;
use crate::context::{ConnCtx, fire};
use crate::proto::headers::strip_hop_by_hop;
use crate::relay::websocket::{run, server_gone};

/// Whether a client's request asks to switch to WebSocket: HTTP/1.1 `GET` with
/// `Connection: upgrade` and `Upgrade: websocket`.
pub(crate) fn wants_upgrade(parts: &http::request::Parts) -> bool {
    parts.version == http::Version::HTTP_11
        && parts.method == http::Method::GET
        // The common request has no `Upgrade` field: one lookup, no token scan.
        && parts.headers.contains_key(UPGRADE)
        && has_token(&parts.headers, CONNECTION, "upgrade")
        && has_token(&parts.headers, UPGRADE, "websocket")
}

fn has_token(h: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Fires `websocket_handshake`, then removes the extension offer so that the server does
/// not negotiate an extension waylay cannot relay (permessage-deflate).
pub(crate) async fn handshake(ctx: &ConnCtx, flow: Box<HttpFlow>) -> Result<Box<HttpFlow>, Killed> {
    let mut flow = run_hook(ctx, HookKind::WebsocketHandshake, flow).await?;
    flow.request.headers.remove("sec-websocket-extensions");
    Ok(flow)
}

/// The server's answer to an upgrade request. Anything but a 101 is an ordinary response;
/// a 101 runs the response hooks, is passed to the client, and both connections go to the
/// WebSocket relay once hyper hands them over.
pub(crate) async fn response(
    ctx: &Rc<ConnCtx>,
    mut flow: Box<HttpFlow>,
    entry: PoolEntry,
    mut resp: hyper::Response<Incoming>,
    client_upgrade: OnUpgrade,
) -> Result<hyper::Response<ProxyBody>, Killed> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused: the connection stays plain HTTP and its driver reports its end.
        entry.state.upgrading(false);
        return response_phase(ctx, ctx.shared.config(), flow, entry, resp).await;
    }
    let server_upgrade = hyper::upgrade::on(&mut resp);
    let (parts, _body) = resp.into_parts();
    let mut message = Message::new(version_of(parts.version), headers_from(parts.headers));
    message.timestamp_start = now();
    flow.response = Some(Response {
        status_code: 101,
        reason: reason_phrase(101).into(),
        message,
    });
    let server = entry.server.clone();
    let Some(mut f) = ctx.fire(HookKind::ResponseHeaders, flow).await else {
        return Err(Killed);
    };
    if proceed(&mut f).await.is_err() {
        server_gone(ctx.manager(), ctx, &server).await;
        return killed(ctx, f).await;
    }
    flow = f;
    // Set before `response`, as mitmproxy does, so addons can tell a WebSocket follows.
    if ctx.shared.config().websocket {
        flow.websocket = Some(WebSocketData::default());
    }
    if let Some(r) = flow.response.as_mut() {
        r.timestamp_end = Some(now());
    }
    let Some(mut f) = ctx.fire(HookKind::Response, flow).await else {
        return Err(Killed);
    };
    if proceed(&mut f).await.is_err() {
        server_gone(ctx.manager(), ctx, &server).await;
        return killed(ctx, f).await;
    }
    flow = f;
    let head = match flow.response.as_ref() {
        Some(r) if r.status_code == 101 => {
            let mut headers = headers_to(&r.headers);
            strip_hop_by_hop(&mut headers, true);
            let mut head = hyper::Response::new(ProxyBody::empty());
            *head.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *head.headers_mut() = headers;
            head
        }
        _ => {
            server_gone(ctx.manager(), ctx, &server).await;
            let msg = "an addon changed the server's 101 Switching Protocols response".to_owned();
            return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await;
        }
    };
    let relay_ctx = ctx.clone();
    let task = actix::spawn(async move {
        match futures::future::try_join(client_upgrade, server_upgrade).await {
            Ok((client, server_io)) => run(relay_ctx, flow, client, server_io, server).await,
            Err(e) => {
                let msg = format!("WebSocket upgrade failed: {e}");
                tracing::info!(client.addr = %flow.client.peername, url = %flow.request.url(), "{msg}");
                flow.error = Some(FlowError::new(msg));
                flow.live = false;
                let manager = relay_ctx.manager().clone();
                let _ = fire(&manager, HookKind::Error, flow).await;
                server_gone(&manager, &relay_ctx, &server).await;
            }
        }
    });
    // The client connection ends (`client_disconnect`) after the WebSocket.
    ctx.relays.borrow_mut().push(task);
    Ok(head)
}
