//! Walking an HTTP flow through a hook (fire, wait while intercepted, stop when killed),
//! and the answers waylay makes itself.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, StatusCode};
use waylay_core::flow::{HttpFlow, Release};
use waylay_core::{FlowError, HookKind, ManagerHandle};

use super::body::ProxyBody;
use crate::context::{ConnCtx, fire};

/// Returned to hyper to drop the connection (a killed flow).
#[derive(Debug)]
pub(crate) struct Killed;

impl std::fmt::Display for Killed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flow killed")
    }
}

impl std::error::Error for Killed {}

pub(crate) type HyperResponse = hyper::Response<ProxyBody>;

/// A response made by waylay itself: the status and a one-line reason.
pub(crate) fn error_response(status: StatusCode, reason: &str) -> HyperResponse {
    let body = Bytes::from(format!("waylay: {reason}\n"));
    let mut r = hyper::Response::new(ProxyBody::full(body.clone()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

/// Waits while the flow is intercepted; `Err` when it was killed meanwhile or by the hook.
pub(crate) async fn proceed(flow: &mut HttpFlow) -> Result<(), ()> {
    if flow.intercepted() && flow.wait_released().await == Release::Killed {
        flow.kill();
    }
    flow.intercept_state().reset();
    if flow.killed() { Err(()) } else { Ok(()) }
}

/// Records `msg` as the flow's error, fires `error`, and logs it once.
pub(crate) async fn flow_failed(manager: &ManagerHandle, mut flow: Box<HttpFlow>, msg: String) {
    tracing::info!(client.addr = %flow.client.peername, url = %flow.request.url(), "{msg}");
    flow.error = Some(FlowError::new(msg));
    flow.live = false;
    let _ = fire(manager, HookKind::Error, flow).await;
}

/// Answers `status` with `msg` and reports the flow's error.
pub(crate) async fn fail(
    ctx: &ConnCtx,
    flow: Box<HttpFlow>,
    status: StatusCode,
    msg: String,
) -> Result<HyperResponse, Killed> {
    let resp = error_response(status, &msg);
    flow_failed(ctx.manager(), flow, msg).await;
    Ok(resp)
}

/// Drops the connection for a killed flow, after telling the addons.
pub(crate) async fn killed(
    ctx: &ConnCtx,
    mut flow: Box<HttpFlow>,
) -> Result<HyperResponse, Killed> {
    flow.live = false;
    let _ = ctx.fire(HookKind::Error, flow).await;
    Err(Killed)
}

/// Fires `kind` for `flow` and waits while an addon holds it intercepted: the flow back, or
/// `Err(Killed)` once it was killed (`error` then fired) or the proxy is shutting down.
pub(crate) async fn run_hook(
    ctx: &ConnCtx,
    kind: HookKind,
    flow: Box<HttpFlow>,
) -> Result<Box<HttpFlow>, Killed> {
    if !ctx.manager().handles(kind) {
        // Nothing to walk and nothing to wait for: a flow is intercepted or killed only in a
        // hook (or by the layer itself), and the last hook's wait has already run.
        return Ok(flow);
    }
    let Some(mut flow) = ctx.fire(kind, flow).await else {
        return Err(Killed);
    };
    if proceed(&mut flow).await.is_err() {
        flow.live = false;
        let _ = ctx.fire(HookKind::Error, flow).await;
        return Err(Killed);
    }
    Ok(flow)
}
