//! One request/response exchange: the flow is built from the client's request, walked
//! through the hooks, forwarded (or answered by an addon), and the response walked back.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, UPGRADE};
use http::{Method, StatusCode};
use hyper::body::{Body as _, Incoming};
use waylay_core::flow::{Address, CompactString, HttpFlow, Message, Request, Server, now};
use waylay_core::{HookKind, ManagerHandle};

use super::body::{BodyEnd, ProxyBody, Read, keep_streamed, read_up_to};
use super::convert::{headers_from, version_of};
use super::response::{content_length, respond_made, response_phase};
use super::upstream::{
    Dest, buffered_body, build_upstream, point_host_at, send_upstream, to_proxy_form,
    upstream_request,
};
use super::walk::{HyperResponse, Killed, error_response, fail, flow_failed, killed, run_hook};
use crate::config::ProxyConfig;
use crate::conn::dest::Destination;
use crate::conn::pool::PoolEntry;
use crate::context::ConnCtx;
use crate::pooled::Pooled;
use crate::proto::headers::{bodiless, strip_hop_by_hop, strip_hop_by_hop_keeping_close};
use crate::proto::target::{Scheme, absolute_target};

/// Where a request goes: the tunnel's destination, or the absolute-form URL's.
/// Gives the destination and the authority the client named (absent: none was named).
fn destination(
    target: &Option<Destination>,
    uri: &http::Uri,
) -> Result<(Destination, Option<http::uri::Authority>), String> {
    // Shares the request's bytes (no copy): the unobserved path only reads it.
    let authority = uri.authority().cloned();
    if let Some(t) = target {
        return Ok((t.clone(), authority));
    }
    let named = authority.as_ref().map_or("", |a| a.as_str());
    let (scheme, host, port) =
        absolute_target(uri.scheme_str(), named).map_err(|e| e.to_string())?;
    Ok((Destination::direct(scheme, host, port), authority))
}

/// The hooks of an HTTP exchange: when no addon handles any of them, a request is forwarded
/// without building a flow ([`forward_unobserved`]).
const HTTP_HOOKS: &[HookKind] = &[
    HookKind::RequestHeaders,
    HookKind::Request,
    HookKind::ResponseHeaders,
    HookKind::Response,
    HookKind::Error,
];

/// Whether some addon observes a request to `host` (its destination, or its `Host` header):
/// an addon acting only on named hosts (onboarding) costs nothing on other requests.
fn observed_host(manager: &ManagerHandle, host: &str, headers: &http::HeaderMap) -> bool {
    if !manager.handles_any(HTTP_HOOKS) {
        return false;
    }
    manager.observes_http_host(host)
        || headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| manager.observes_http_host(host_of(h)))
}

/// The host of a `Host` header value (`host`, `host:port`, `[v6]:port`).
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// Forwards a request nobody observes: no flow is built and no header is copied; the
/// client's header map goes to the server with the hop-by-hop fields removed, and the
/// server's response comes back the same way, bodies streamed. Failures are answered and
/// logged as on the observed path (there is no `error` hook to fire).
async fn forward_unobserved(
    ctx: &Rc<ConnCtx>,
    cfg: &ProxyConfig,
    req: hyper::Request<Incoming>,
    key: &Destination,
    dest: &Dest<'_>,
    absolute_form: bool,
) -> HyperResponse {
    let failed = |status: StatusCode, msg: String| {
        tracing::info!(client.addr = %ctx.client().peername, server.addr = %dest.host_port(), "{msg}");
        error_response(status, &msg)
    };
    let (parts, body) = req.into_parts();
    let declared_len = content_length(&parts.headers);
    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
    {
        let msg = format!("request body of {len} bytes exceeds body_size_limit ({limit} bytes)");
        return failed(StatusCode::PAYLOAD_TOO_LARGE, msg);
    }
    let method = parts.method.clone();
    let h1_client = parts.version < http::Version::HTTP_2;
    // A request without a body can be sent again on a fresh connection if a kept-alive one
    // turns out to be stale (hyper gives it back unsent).
    let empty = body.is_end_stream();
    let (body, client_failure) = client_body(cfg, body, declared_len);
    let mut first = Some((parts, body));
    let sent = send_upstream(ctx, key, false, empty, |entry, unsent| {
        let (parts, body) = match (unsent, first.take()) {
            (Some(unsent), _) => unsent.into_parts(),
            (None, Some(first)) => first,
            (None, None) => return Err("the request was already sent".to_owned()),
        };
        let mut req = unobserved_upstream(parts, body, dest, entry.h2, absolute_form)?;
        to_proxy_form(&mut req, entry, dest)?;
        Ok(req)
    })
    .await;
    let (entry, resp) = match sent {
        Ok(sent) => sent,
        Err(reason) => {
            // A failure of the client's side of the body, not the server's.
            if let Some(e) = client_failure.as_ref().and_then(|c| c.get()) {
                return if matches!(e, BodyEnd::Limit(_)) {
                    failed(StatusCode::PAYLOAD_TOO_LARGE, format!("request {e}"))
                } else {
                    let reason = format!("client disconnected while sending the request body: {e}");
                    failed(StatusCode::BAD_REQUEST, reason)
                };
            }
            tracing::debug!(side = ?reason.side(), "forwarding failed");
            return failed(StatusCode::BAD_GATEWAY, reason.to_string());
        }
    };
    match unobserved_response(cfg, &method, h1_client, entry, resp) {
        Ok(r) => r,
        Err(msg) => failed(StatusCode::BAD_GATEWAY, msg),
    }
}

/// A streamed request body failed on the client's side (the client hung up, or the body
/// outgrew `body_size_limit`): set by the body, read when the server's side fails after it,
/// so that the failure is not blamed on the server.
type ClientFailure = Arc<std::sync::OnceLock<BodyEnd>>;

/// The client's request body as the server gets it (streamed), and the cell its failure is
/// recorded in (only a request with a body has one).
fn client_body(
    cfg: &ProxyConfig,
    body: Incoming,
    declared_len: Option<u64>,
) -> (ProxyBody, Option<ClientFailure>) {
    if body.is_end_stream() {
        return (ProxyBody::empty(), None);
    }
    let seen = ClientFailure::default();
    let cell = seen.clone();
    let body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit)
        .with_exact(declared_len)
        .on_end(Box::new(move |_, err| {
            if let Some(e) = err.filter(|e| *e != BodyEnd::NotFullyTransferred) {
                let _ = cell.set(e);
            }
        }));
    (body, Some(seen))
}

/// The client's request, moved (not copied) into the request for the server.
fn unobserved_upstream(
    parts: http::request::Parts,
    body: ProxyBody,
    dest: &Dest<'_>,
    h2: bool,
    absolute_form: bool,
) -> Result<hyper::Request<ProxyBody>, String> {
    let path_and_query = parts
        .uri
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    upstream_request(
        parts.method,
        parts.headers,
        dest,
        path_and_query,
        None,
        Some(parts.extensions),
        body,
        h2,
        absolute_form,
        false,
    )
}

/// The server's response as the client gets it: hop-by-hop fields removed (`close` kept
/// for an HTTP/1 client), the body streamed, the server connection freed when it ends.
/// `Err` is the 502's reason.
fn unobserved_response(
    cfg: &ProxyConfig,
    method: &Method,
    h1_client: bool,
    entry: PoolEntry,
    resp: hyper::Response<Incoming>,
) -> Result<HyperResponse, String> {
    let (mut head, body) = resp.into_parts();
    let no_body = bodiless(method.as_str(), head.status.as_u16());
    let declared_len = content_length(&head.headers);
    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
        && !no_body
    {
        entry.state.end_exchange(body.is_end_stream());
        return Err(format!(
            "response body of {len} bytes exceeds body_size_limit ({limit} bytes)"
        ));
    }
    if h1_client {
        strip_hop_by_hop_keeping_close(&mut head.headers);
    } else {
        strip_hop_by_hop(&mut head.headers, false);
    }
    let state = entry.state;
    let body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit)
        .with_exact(declared_len)
        .on_end(Box::new(move |_, err| state.end_exchange(err.is_none())));
    Ok(hyper::Response::from_parts(head, body))
}

/// Serves one request from a client.
pub(crate) async fn handle(
    ctx: Rc<ConnCtx>,
    target: Rc<Option<Destination>>,
    mut req: hyper::Request<Incoming>,
) -> Result<HyperResponse, Killed> {
    let cfg = ctx.shared.config();
    if let waylay_core::Mode::Reverse(t) = &ctx.mode.spec.mode {
        if !cfg.keep_host_header {
            super::upstream::rewrite_host(&mut req, t);
        }
        if let Some(c) = &cfg.via.upstream_auth {
            // mitmproxy's `upstream_auth` in reverse mode: Basic credentials for the target.
            super::upstream::authorize(&mut req, c);
        }
    }
    if req.method() == Method::CONNECT {
        // Boxed, like the observed path below: the future hyper keeps per connection is
        // then only as large as the unobserved path needs (it stays allocated while idle).
        return Box::pin(super::connect::connect(ctx, req)).await;
    }
    let manager = ctx.manager();
    let head_size: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if head_size > cfg.max_header_size {
        let msg = format!(
            "request header section of {head_size} bytes exceeds max_header_size ({} bytes)",
            cfg.max_header_size
        );
        tracing::info!(client.addr = %ctx.client().peername, "{msg}");
        let mut r = error_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, &msg);
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    let (key, authority) = match destination(&target, req.uri()) {
        Ok(d) => d,
        Err(msg) => {
            tracing::info!(client.addr = %ctx.client().peername, "bad request: {msg}");
            return Ok(error_response(StatusCode::BAD_REQUEST, &msg));
        }
    };
    let absolute_form =
        target.is_none() || req.uri().scheme().is_some() && req.version() != http::Version::HTTP_2;
    if !observed_host(manager, &key.host, req.headers()) && !req.headers().contains_key(UPGRADE) {
        let dest = Dest {
            scheme: key.scheme.as_str(),
            host: &key.host,
            port: key.port,
            authority: authority.as_ref().map_or("", |a| a.as_str()),
        };
        // Out of line too: hyper allocates the box of this future once per connection,
        // sized for its largest state, and keeps it while the connection idles; the
        // unobserved path (its request and body held across the exchange, about 2 KiB) would
        // set that size. A recycled block per request instead (S5 in BENCHMARKS.md).
        return Ok(Pooled::with(|| {
            forward_unobserved(&ctx, &cfg, req, &key, &dest, absolute_form)
        })
        .await);
    }
    let authority = authority.map(|a| a.as_str().into()).unwrap_or_default();
    // A request to a destination fixed before it came (a tunnel's, a reverse or transparent
    // target) shows its hooks the server connection it will go on, when there is one; a
    // regular-mode request picks its connection after its hooks, as in mitmproxy.
    let fixed = target.is_some();
    Pooled::with(|| observed(ctx, cfg, req, (key, authority), (absolute_form, fixed))).await
}

/// What the request body phase gave.
enum BodyPhase {
    /// Go on to the server with this flow and the body it gets (`None`: the flow's buffered
    /// body).
    Next(Box<HttpFlow>, Option<ProxyBody>),
    /// The client was answered already (the body outgrew `body_size_limit`).
    Answered(HyperResponse),
}

/// The request body when no addon handles `request`: streamed to the server as it comes, or,
/// with none, held as empty (so a stale keep-alive can be retried). A plain function: no
/// future is made for it (see [`request_body`]).
fn request_body_unhooked(
    cfg: &ProxyConfig,
    mut flow: Box<HttpFlow>,
    body: Incoming,
    declared_len: Option<u64>,
) -> (Box<HttpFlow>, Option<ProxyBody>) {
    if body.is_end_stream() {
        // It ended with its head (no second clock read).
        flow.request.raw_content = Some(Bytes::new());
        flow.request.timestamp_end = Some(flow.request.timestamp_start);
        return (flow, None);
    }
    flow.request.stream = true;
    let body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit)
        .with_exact(declared_len)
        .with_transform(flow.request.stream_fn.clone());
    (flow, Some(body))
}

/// The request body for the `request` hook: buffered, or streamed when it is larger than
/// `stream_large_bodies`. Called only when some addon handles `request`.
async fn request_body(
    ctx: &Rc<ConnCtx>,
    cfg: &ProxyConfig,
    mut flow: Box<HttpFlow>,
    body: Incoming,
) -> Result<BodyPhase, Killed> {
    let mut streamed = None;
    if flow.request.stream && flow.response.is_none() {
        // Streaming asked for in `requestheaders` (`flow.request.stream = True`): the body
        // goes to the server as it comes; `request` fires before it is sent, as for a body
        // over `stream_large_bodies`.
        let body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit)
            .with_transform(flow.request.stream_fn.clone());
        streamed = Some(keep_streamed(
            cfg.store_streamed_bodies,
            &mut flow.request,
            body,
        ));
        let flow = run_hook(ctx, HookKind::Request, flow).await?;
        return Ok(BodyPhase::Next(flow, streamed));
    }
    match read_up_to(body, cfg.stream_large_bodies).await {
        Ok(Read::Complete(b, trailers)) => {
            if let Some(limit) = cfg.body_size_limit
                && b.len() as u64 > limit
            {
                let msg = format!("request body exceeds body_size_limit ({limit} bytes)");
                let answer = fail(ctx, flow, StatusCode::PAYLOAD_TOO_LARGE, msg).await?;
                return Ok(BodyPhase::Answered(answer));
            }
            flow.request.raw_content = Some(b);
            flow.request.trailers = trailers.map(|t| Box::new(headers_from(t)));
            flow.request.timestamp_end = Some(now());
        }
        Ok(Read::TooLarge(chunks, rest)) => {
            flow.request.stream = true;
            let body = ProxyBody::streaming(chunks, rest, cfg.body_size_limit);
            streamed = Some(keep_streamed(
                cfg.store_streamed_bodies,
                &mut flow.request,
                body,
            ));
        }
        Err(e) => {
            let msg = format!("client disconnected while sending the request body: {e}");
            flow_failed(ctx.manager(), flow, msg).await;
            return Err(Killed);
        }
    }
    let flow = run_hook(ctx, HookKind::Request, flow).await?;
    Ok(BodyPhase::Next(flow, streamed))
}

/// Serves a request some addon observes: the flow is built and walked through the hooks.
async fn observed(
    ctx: Rc<ConnCtx>,
    cfg: Arc<ProxyConfig>,
    req: hyper::Request<Incoming>,
    (dest, authority): (Destination, CompactString),
    (absolute_form, fixed): (bool, bool),
) -> Result<HyperResponse, Killed> {
    let (mut parts, body) = req.into_parts();
    // A WebSocket handshake: the client's side of the upgrade, taken before the extensions
    // are copied onto the server's request.
    let client_upgrade = super::upgrade::wants_upgrade(&parts)
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let client_path = parts.uri.path_and_query().cloned();
    let path = match &client_path {
        Some(p) => p.as_str().into(),
        None => CompactString::const_new("/"),
    };
    let declared_len = content_length(&parts.headers);
    let pooled_server = match dest.route {
        None if fixed => ctx.pool.server_for(&dest),
        _ => None,
    };
    // RFC 9112 §3.2.2: for an absolute-form request the URL's authority wins over a different
    // `Host`. Applied before the hooks (the unobserved path applies it on the way out), so
    // addons see the `Host` that will be sent, and one an addon sets goes out as set.
    if absolute_form && !authority.is_empty() {
        point_host_at(&mut parts.headers, &authority);
    }
    let headers = headers_from(std::mem::take(&mut parts.headers));
    // One clock read for the flow's creation and the request's start.
    let started = now();
    let request = Request {
        method: parts.method.as_str().into(),
        scheme: CompactString::const_new(dest.scheme.as_str()),
        authority,
        host: dest.host,
        port: dest.port,
        path,
        message: Message::new_at(version_of(parts.version), headers, started),
    };
    let mut flow = HttpFlow::boxed_at(ctx.client(), request, started);
    // A replayer's request (`waylay_core::replay`): a replay from its first hook on.
    if ctx
        .manager()
        .is_replay(flow.client.peername, flow.client.sockname)
    {
        flow.is_replay = Some("request".into());
    }
    if let Some(via) = dest.route {
        // A tunnel routed by an addon (`http_connect`, `next_layer`): its requests keep the
        // route unless an addon changes it.
        let mut server = Server::new(Address::new(flow.request.host.clone(), flow.request.port));
        server.via = Some(via);
        flow.server = Some(Arc::new(server));
    } else {
        // As in mitmproxy, the hooks see the server connection the request will go on when
        // there is one already and the request's destination was fixed before it came (an
        // intercepted tunnel's, dialed before the client's TLS handshake, and its next
        // requests').
        flow.server.clone_from(&pooled_server);
    }

    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
    {
        let msg = format!("request body of {len} bytes exceeds body_size_limit ({limit} bytes)");
        return fail(&ctx, flow, StatusCode::PAYLOAD_TOO_LARGE, msg).await;
    }

    // The WebSocket steps are boxed: they are rare, and the future of every observed request
    // (moved into a box per request) would otherwise be sized for them.
    if client_upgrade.is_some() {
        flow = Box::pin(super::upgrade::handshake(&ctx, flow)).await?;
    }

    // Checked here as well as in `run_hook`: no hook future is made, polled and dropped for a
    // hook nobody handles (a `response`-only addon's case, twice per request).
    if ctx.manager().handles(HookKind::RequestHeaders) {
        flow = run_hook(&ctx, HookKind::RequestHeaders, flow).await?;
    }

    // A response set in `requestheaders` still has the body read and `request` fired, as
    // mitmproxy does (it looks for an addon's answer after `request` only).
    let req_body = if !ctx.manager().handles(HookKind::Request) {
        if flow.response.is_some() {
            None
        } else {
            let (f, b) = request_body_unhooked(&cfg, flow, body, declared_len);
            flow = f;
            b
        }
    } else {
        match request_body(&ctx, &cfg, flow, body).await? {
            BodyPhase::Next(f, b) => {
                flow = f;
                b
            }
            BodyPhase::Answered(r) => return Ok(r),
        }
    };

    // An addon answered: the server is never contacted.
    if flow.response.is_some() {
        return respond_made(&ctx, flow).await;
    }

    // The flow's request as addons left it says where it goes, and its server's `via` (set
    // by an addon) how.
    let mut key = Destination::direct(
        Scheme::of(&flow.request.scheme),
        flow.request.host.clone(),
        flow.request.port,
    );
    key.route = match (flow.server.as_ref(), pooled_server.as_ref()) {
        // The pooled server the hooks were shown, unchanged: the request's own route (none),
        // not one a `server_connect` addon gave that connection (its pool key has none).
        (Some(s), Some(p)) if Arc::ptr_eq(s, p) => None,
        (s, _) => s.and_then(|s| s.via.clone()),
    };
    // Moved into the server's request; back from hyper with the request if it goes again.
    let mut upstream_extensions = Some(parts.extensions);
    let mut req_body = req_body;
    let can_retry = !flow.request.stream;
    // Someone may kill the flow while it waits for its server (the web UI does): the client
    // is dropped at once; the server connection, still busy, is never reused for another
    // request and closes when its answer is dropped.
    let switch = flow.existing_kill_switch();
    let sent = {
        let upgrade = client_upgrade.is_some();
        let build = |entry: &PoolEntry, unsent: Option<hyper::Request<ProxyBody>>| {
            let extensions = match unsent {
                Some(mut r) => std::mem::take(r.extensions_mut()),
                None => upstream_extensions.take().unwrap_or_default(),
            };
            let body = match req_body.take() {
                Some(b) => b,
                None => buffered_body(&flow),
            };
            build_upstream(&flow, extensions, client_path.as_ref(), body, entry)
        };
        // Made where it is awaited: a future made first and awaited later is copied into
        // the await's slot (over 1 KiB).
        match switch {
            None => Some(send_upstream(&ctx, &key, upgrade, can_retry, build).await),
            Some(s) => tokio::select! {
                sent = send_upstream(&ctx, &key, upgrade, can_retry, build) => Some(sent),
                () = s.killed() => None,
            },
        }
    };
    let Some(sent) = sent else {
        flow.kill();
        return killed(&ctx, flow).await;
    };
    let (entry, resp) = match sent {
        Ok(sent) => sent,
        Err(reason) => {
            tracing::debug!(side = ?reason.side(), "forwarding failed");
            return fail(&ctx, flow, StatusCode::BAD_GATEWAY, reason.to_string()).await;
        }
    };
    flow.server = Some(entry.server.clone());
    if let Some(client_upgrade) = client_upgrade {
        return Box::pin(super::upgrade::response(
            &ctx,
            flow,
            entry,
            resp,
            client_upgrade,
        ))
        .await;
    }
    response_phase(&ctx, cfg, flow, entry, resp).await
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    fn own3<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }
    fn own5<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }
    fn ref2<'a, A: 'a, B, F>(_: fn(&'a A, B) -> F) -> usize {
        size_of::<F>()
    }
    fn rr2<'a, A: 'a, B: 'a, F>(_: fn(&'a A, &'a B) -> F) -> usize {
        size_of::<F>()
    }
    fn ref3<'a, A: 'a, B, C, F>(_: fn(&'a A, B, C) -> F) -> usize {
        size_of::<F>()
    }
    fn ref4<'a, A: 'a, B, C, D, F>(_: fn(&'a A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }
    fn ref5<'a, A: 'a, B, C, D, E, F>(_: fn(&'a A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    /// The future hyper keeps per connection (allocated once per connection and kept while it
    /// idles: every request path is boxed) and the one boxed per observed request stay small:
    /// dialing and the WebSocket steps are boxed apart (dialing alone is about 8 KiB). The sizes print with
    /// `--nocapture`; the bounds hold in debug builds, where futures are largest.
    #[test]
    fn request_futures_stay_small() {
        use super::super::{response, upgrade, walk};
        use crate::conn::dial;
        let handle = own3(super::handle);
        let observed = own5(super::observed);
        let checkout = rr2(dial::checkout);
        for (name, size) in [
            ("handle", handle),
            ("observed", observed),
            ("dial", ref2(dial::dial)),
            ("checkout", checkout),
            ("checkout_upgrade", rr2(dial::checkout_upgrade)),
            ("response_phase", ref5(response::response_phase)),
            ("respond_from_flow", ref3(response::respond_from_flow)),
            ("run_hook", ref3(walk::run_hook)),
            ("fail", ref4(walk::fail)),
            ("upgrade::handshake", ref2(upgrade::handshake)),
            ("upgrade::response", ref5(upgrade::response)),
            ("read_up_to", own2(super::super::body::read_up_to)),
        ] {
            eprintln!("{name}: {size} bytes");
        }
        assert!(
            checkout <= 256,
            "checkout {checkout}: dialing is inline again"
        );
        assert!(
            handle <= 1024,
            "handle {handle}: a request path is inline again"
        );
        // Both request paths run in a recycled block (`pooled`), which they must fit.
        assert!(
            observed <= crate::pooled::BLOCK_SIZE,
            "observed {observed}: larger than a pooled block"
        );
        let unobserved = ref6(super::forward_unobserved);
        eprintln!("forward_unobserved: {unobserved} bytes");
        assert!(
            unobserved <= crate::pooled::BLOCK_SIZE,
            "forward_unobserved {unobserved}: larger than a pooled block"
        );
    }
    fn ref6<'a, A: 'a, B: 'a, C, D: 'a, E: 'a, G, F>(
        _: fn(&'a A, &'a B, C, &'a D, &'a E, G) -> F,
    ) -> usize {
        size_of::<F>()
    }
    fn own2<A, B, F>(_: fn(A, B) -> F) -> usize {
        size_of::<F>()
    }
}
