//! CONNECT: the `http_connect` hook, and the tunnel queued for the next-layer step.

use std::rc::Rc;

use http::StatusCode;
use hyper::body::Incoming;
use waylay_core::HookKind;
use waylay_core::flow::{HttpFlow, Message, Request};

use super::body::ProxyBody;
use super::convert::{headers_from, version_of};
use super::walk::{Killed, error_response};
use crate::context::{ConnCtx, Tunnel};
use crate::proto::target::connect_target;

/// Answers a CONNECT request (after `http_connect`) and serves the tunnel once hyper hands
/// over the stream.
pub(crate) async fn connect(
    ctx: Rc<ConnCtx>,
    mut req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ProxyBody>, Killed> {
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
        // Authority-form: no scheme, as mitmproxy records a CONNECT.
        scheme: Default::default(),
        authority: authority.into(),
        host: host.into(),
        port,
        path: Default::default(),
        message: Message::new(
            version_of(req.version()),
            headers_from(req.headers().clone()),
        ),
    };
    let flow = Box::new(HttpFlow::new(ctx.client(), request));
    let Some(mut flow) = ctx.fire(HookKind::HttpConnect, flow).await else {
        return Err(Killed);
    };
    if flow.killed() {
        return Err(Killed);
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
    ctx.open_tunnel(Tunnel {
        upgrade: hyper::upgrade::on(&mut req),
        host: flow.request.host.to_string(),
        port: flow.request.port,
        via: flow.server.as_ref().and_then(|s| s.via.clone()),
    });
    Ok(hyper::Response::new(ProxyBody::empty()))
}
