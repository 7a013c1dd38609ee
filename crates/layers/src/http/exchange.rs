//! One request/response exchange: the flow is built from the client's request, walked
//! through the hooks, forwarded (or answered by an addon), and the response walked back.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::{Body as _, Incoming};
use waylay_core::flow::{
    HttpFlow, Message, Release, Request, Response, now, reason_phrase, split_host_port,
};
use waylay_core::{FlowError, HookKind, ManagerHandle};

use super::body::{NOT_FULLY_TRANSFERRED, ProxyBody, Read, is_limit_error, read_up_to};
use super::convert::{bodiless, headers_from, headers_to, strip_hop_by_hop, version_of};
use crate::config::ProxyConfig;
use crate::context::{ConnCtx, PoolKey, Target, fire};
use crate::server_conn::{Forward, PoolEntry, checkout, checkout_upgrade, evict};

/// Returned to hyper to drop the connection (a killed flow).
#[derive(Debug)]
pub(crate) struct Killed;

impl std::fmt::Display for Killed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flow killed")
    }
}

impl std::error::Error for Killed {}

type HyperResponse = hyper::Response<ProxyBody>;

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

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Sets `Content-Length` to the real body length when waylay sends a buffered body; with
/// trailers there is none (HTTP/1 then sends the body chunked, the only framing that carries
/// trailers).
fn fix_content_length(map: &mut HeaderMap, len: usize, had_length: bool, trailers: bool) {
    map.remove(TRANSFER_ENCODING);
    if trailers {
        map.remove(CONTENT_LENGTH);
    } else if had_length || len > 0 || map.contains_key(CONTENT_LENGTH) {
        map.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
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
async fn flow_failed(manager: &ManagerHandle, mut flow: Box<HttpFlow>, msg: String) {
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

/// Where a request goes: the tunnel's destination, or the absolute-form URL's.
fn destination(
    target: &Option<Target>,
    uri: &http::Uri,
) -> Result<(&'static str, String, u16, String), String> {
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    if let Some(t) = target {
        return Ok((t.scheme, t.host.clone(), t.port, authority));
    }
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) => return Err(format!("unsupported URL scheme {s:?}")),
        None => {
            return Err("waylay is a proxy: the request target must be an absolute URL (http://host/path) or CONNECT host:port".into());
        }
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) = split_host_port(&authority, default)
        .ok_or_else(|| format!("bad authority {authority:?} in request target"))?;
    Ok((scheme, host, port, authority))
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

/// Sends the request `build` makes on a server connection for `key` (a dedicated one for an
/// upgrade) and gives back the connection and the response head. When a kept-alive
/// connection turns out to be stale and `can_retry` (the request can be sent again), it
/// retries once on a fresh connection; `build` is told whether the request it makes may be
/// retried (so it keeps a copy of what it would otherwise move). `Err` is the reason for a
/// 502.
async fn send_upstream(
    ctx: &Rc<ConnCtx>,
    key: &PoolKey,
    upgrade: bool,
    can_retry: bool,
    mut build: impl FnMut(&PoolEntry, bool) -> Result<hyper::Request<ProxyBody>, String>,
) -> Result<(PoolEntry, hyper::Response<Incoming>), String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let entry = if upgrade {
            checkout_upgrade(ctx, key).await
        } else {
            checkout(ctx, key).await
        }
        .map_err(|e| e.to_string())?;
        let retryable = can_retry && entry.used.get() && attempt == 1;
        let upstream = build(&entry, retryable)?;
        if !entry.h2 {
            entry.busy.set(true);
        }
        entry.used.set(true);
        match entry.addr.send(Forward(upstream)).await {
            Ok(Ok(resp)) => return Ok((entry, resp)),
            Ok(Err(msg)) => {
                evict(ctx, key, &entry);
                if retryable {
                    tracing::debug!(server.addr = %entry.server.address, "retrying on a new connection: {msg}");
                    continue;
                }
                return Err(format!("server {} failed: {msg}", entry.server.address));
            }
            Err(_) => {
                evict(ctx, key, &entry);
                return Err(format!(
                    "server connection to {} is gone",
                    entry.server.address
                ));
            }
        }
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
    let method = parts.method;
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    // A request without a body can be sent again on a fresh connection if a kept-alive one
    // turns out to be stale.
    let empty = body.is_end_stream();
    let mut body = Some(body);
    // Set when the client's side of a streamed request body fails (the client hung up, or
    // the body outgrew `body_size_limit`): the server's failure that follows is not its own.
    // Only a request with a body gets one.
    let mut client_failure: Option<Arc<std::sync::OnceLock<String>>> = None;
    let mut extensions = Some(parts.extensions);
    let mut headers = Some(parts.headers);
    let key = PoolKey {
        tls: dest.scheme == "https",
        host: dest.host.to_owned(),
        port: dest.port,
    };
    let sent = send_upstream(ctx, &key, false, empty, |entry, retryable| {
        let upstream_body = match body.take() {
            Some(b) if !empty => {
                let seen = client_failure.get_or_insert_with(Arc::default).clone();
                ProxyBody::streaming(Vec::new(), b, cfg.body_size_limit)
                    .with_exact(declared_len)
                    .on_end(Box::new(move |_, err| {
                        if let Some(e) = err.filter(|e| e != NOT_FULLY_TRANSFERRED) {
                            let _ = seen.set(e);
                        }
                    }))
            }
            _ => ProxyBody::empty(),
        };
        let (ext, hdrs) = if retryable {
            (extensions.clone(), headers.clone())
        } else {
            (extensions.take(), headers.take())
        };
        upstream_request(
            method.clone(),
            hdrs.unwrap_or_default(),
            dest,
            path_and_query.clone(),
            None,
            ext,
            upstream_body,
            entry.h2,
            absolute_form,
            false,
        )
    })
    .await;
    let (entry, resp) = match sent {
        Ok(sent) => sent,
        Err(reason) => {
            // A failure of the client's side of the body, not the server's.
            if let Some(e) = client_failure.as_ref().and_then(|c| c.get()) {
                return if is_limit_error(e) {
                    failed(StatusCode::PAYLOAD_TOO_LARGE, format!("request {e}"))
                } else {
                    let reason = format!("client disconnected while sending the request body: {e}");
                    failed(StatusCode::BAD_REQUEST, reason)
                };
            }
            return failed(StatusCode::BAD_GATEWAY, reason);
        }
    };
    let (mut head, body) = resp.into_parts();
    let no_body = bodiless(method.as_str(), head.status.as_u16());
    let declared_len = content_length(&head.headers);
    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
        && !no_body
    {
        entry.busy.set(false);
        let msg = format!("response body of {len} bytes exceeds body_size_limit ({limit} bytes)");
        return failed(StatusCode::BAD_GATEWAY, msg);
    }
    strip_hop_by_hop(&mut head.headers, false);
    let busy = entry.busy.clone();
    let body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit)
        .with_exact(declared_len)
        .on_end(Box::new(move |_, _| busy.set(false)));
    hyper::Response::from_parts(head, body)
}

/// Serves one request from a client.
pub(crate) async fn handle(
    ctx: Rc<ConnCtx>,
    target: Rc<Option<Target>>,
    req: hyper::Request<Incoming>,
) -> Result<HyperResponse, Killed> {
    let cfg = ctx.shared.config();
    // `proxyauth`: requests to the proxy itself (not those inside an authorised tunnel).
    if target.is_none()
        && let Some(auth) = &cfg.proxyauth
        && !auth.accepts(
            req.headers()
                .get(http::header::PROXY_AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    {
        let msg = "proxy authentication required (proxyauth)";
        tracing::info!(client.addr = %ctx.client().peername, "{msg}");
        let mut r = error_response(StatusCode::PROXY_AUTHENTICATION_REQUIRED, msg);
        r.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"waylay\""),
        );
        return Ok(r);
    }
    if req.method() == Method::CONNECT {
        // Boxed, like the observed path below: the future hyper keeps per connection is
        // then only as large as the unobserved path needs (it stays allocated while idle).
        return Box::pin(crate::tunnel::connect(ctx, req)).await;
    }
    let mut req = req;
    if cfg.anticache {
        let h = req.headers_mut();
        h.remove(http::header::IF_NONE_MATCH);
        h.remove(http::header::IF_MODIFIED_SINCE);
    }
    if cfg.anticomp {
        req.headers_mut().insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
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
    let (scheme, host, port, authority) = match destination(&target, req.uri()) {
        Ok(d) => d,
        Err(msg) => {
            tracing::info!(client.addr = %ctx.client().peername, "bad request: {msg}");
            return Ok(error_response(StatusCode::BAD_REQUEST, &msg));
        }
    };
    let absolute_form =
        target.is_none() || req.uri().scheme().is_some() && req.version() != http::Version::HTTP_2;
    if !manager.handles_any(HTTP_HOOKS) && !req.headers().contains_key(UPGRADE) {
        let dest = Dest {
            scheme,
            host: &host,
            port,
            authority: &authority,
        };
        return Ok(forward_unobserved(&ctx, &cfg, req, &dest, absolute_form).await);
    }
    let dest = (scheme, host, port, authority);
    Box::pin(observed(ctx, cfg, req, dest, absolute_form)).await
}

/// Serves a request some addon observes: the flow is built and walked through the hooks.
async fn observed(
    ctx: Rc<ConnCtx>,
    cfg: Arc<ProxyConfig>,
    req: hyper::Request<Incoming>,
    (scheme, host, port, authority): (&'static str, String, u16, String),
    absolute_form: bool,
) -> Result<HyperResponse, Killed> {
    let manager = ctx.manager();
    let (mut parts, body) = req.into_parts();
    // A WebSocket handshake: the client's side of the upgrade, taken before the extensions
    // are copied onto the server's request.
    let client_upgrade = crate::websocket::wants_upgrade(&parts)
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let path = match parts.uri.path_and_query() {
        Some(p) => p.as_str().to_owned(),
        None => "/".to_owned(),
    };
    let mut message = Message::new(version_of(parts.version), headers_from(&parts.headers));
    message.timestamp_start = now();
    let request = Request {
        method: parts.method.as_str().to_owned(),
        scheme: scheme.to_owned(),
        authority,
        host,
        port,
        path,
        message,
    };
    let mut flow = Box::new(HttpFlow::new(ctx.client(), request));

    let declared_len = content_length(&parts.headers);
    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
    {
        let msg = format!("request body of {len} bytes exceeds body_size_limit ({limit} bytes)");
        return fail(&ctx, flow, StatusCode::PAYLOAD_TOO_LARGE, msg).await;
    }

    if client_upgrade.is_some() {
        flow = crate::websocket::handshake(&ctx, flow).await?;
    }

    let Some(mut flow_) = ctx.fire(HookKind::RequestHeaders, flow).await else {
        return Err(Killed);
    };
    if proceed(&mut flow_).await.is_err() {
        return killed(&ctx, flow_).await;
    }
    flow = flow_;

    // The request body: buffered for the `request` hook, streamed when nobody looks at it or
    // it is larger than `stream_large_bodies`.
    let mut req_body: Option<ProxyBody> = None;
    if flow.response.is_none() {
        if manager.handles(HookKind::Request) {
            match read_up_to(body, cfg.stream_large_bodies).await {
                Ok(Read::Complete(b, trailers)) => {
                    if let Some(limit) = cfg.body_size_limit
                        && b.len() as u64 > limit
                    {
                        let msg = format!("request body exceeds body_size_limit ({limit} bytes)");
                        return fail(&ctx, flow, StatusCode::PAYLOAD_TOO_LARGE, msg).await;
                    }
                    flow.request.raw_content = Some(b);
                    flow.request.trailers = trailers.as_ref().map(headers_from);
                    flow.request.timestamp_end = Some(now());
                }
                Ok(Read::TooLarge(chunks, rest)) => {
                    flow.request.stream = true;
                    req_body = Some(ProxyBody::streaming(chunks, rest, cfg.body_size_limit));
                }
                Err(e) => {
                    let msg = format!("client disconnected while sending the request body: {e}");
                    flow_failed(manager, flow, msg).await;
                    return Err(Killed);
                }
            }
            let Some(mut f) = ctx.fire(HookKind::Request, flow).await else {
                return Err(Killed);
            };
            if proceed(&mut f).await.is_err() {
                return killed(&ctx, f).await;
            }
            flow = f;
        } else if body.is_end_stream() {
            // No body: held as empty, so a stale keep-alive can be retried.
            flow.request.raw_content = Some(Bytes::new());
            flow.request.timestamp_end = Some(now());
        } else {
            flow.request.stream = true;
            req_body = Some(
                ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit)
                    .with_exact(declared_len),
            );
        }
    }

    // An addon answered: the server is never contacted.
    if flow.response.is_some() {
        return respond_from_flow(&ctx, flow, None).await;
    }

    let key = PoolKey {
        tls: flow.request.scheme == "https",
        host: flow.request.host.clone(),
        port: flow.request.port,
    };
    let upstream_extensions = parts.extensions;
    let mut req_body = req_body;
    let can_retry = !flow.request.stream;
    let sent = send_upstream(
        &ctx,
        &key,
        client_upgrade.is_some(),
        can_retry,
        |entry, _| {
            let body = match req_body.take() {
                Some(b) => b,
                None => buffered_body(&flow),
            };
            build_upstream(&flow, &upstream_extensions, body, entry, absolute_form)
        },
    )
    .await;
    let (entry, resp) = match sent {
        Ok(sent) => sent,
        Err(reason) => return fail(&ctx, flow, StatusCode::BAD_GATEWAY, reason).await,
    };
    flow.server = Some(entry.server.clone());
    if let Some(client_upgrade) = client_upgrade {
        return crate::websocket::response(&ctx, flow, entry, resp, client_upgrade).await;
    }
    response_phase(&ctx, flow, entry, resp).await
}

fn buffered_body(flow: &HttpFlow) -> ProxyBody {
    let raw = flow.request.raw_content.clone().unwrap_or_default();
    let trailers = flow.request.trailers.as_ref().map(headers_to);
    ProxyBody::full(raw).with_trailers(trailers)
}

/// Where a request goes, as the upstream request needs it.
struct Dest<'a> {
    scheme: &'a str,
    host: &'a str,
    port: u16,
    /// The authority the client named (absolute-form URL or `:authority`), may be empty.
    authority: &'a str,
}

impl Dest<'_> {
    /// `host[:port]`, the port left out when it is the scheme's default.
    fn host_port(&self) -> String {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_owned()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn authority_or_host_port(&self) -> String {
        if self.authority.is_empty() {
            self.host_port()
        } else {
            self.authority.to_owned()
        }
    }
}

/// Builds the request for the server from its parts: hop-by-hop headers removed, `Host` or
/// `:authority` set, the target in the server protocol's form. `buffered` is the length of
/// a body waylay holds in memory and whether it has trailers (`Content-Length` is set to
/// match).
#[allow(clippy::too_many_arguments)]
fn upstream_request(
    method: Method,
    mut headers: HeaderMap,
    dest: &Dest<'_>,
    path_and_query: http::uri::PathAndQuery,
    buffered: Option<(usize, bool)>,
    extensions: Option<http::Extensions>,
    body: ProxyBody,
    h2: bool,
    absolute_form: bool,
    keep_upgrade: bool,
) -> Result<hyper::Request<ProxyBody>, String> {
    strip_hop_by_hop(&mut headers, keep_upgrade);
    // The body was already read (or is streamed on demand): the client got its 100 Continue.
    headers.remove(EXPECT);
    let uri = if h2 {
        let authority = match headers.remove(HOST) {
            Some(h) => h
                .to_str()
                .map(str::to_owned)
                .unwrap_or_else(|_| dest.authority_or_host_port()),
            None => dest.authority_or_host_port(),
        };
        http::Uri::builder()
            .scheme(dest.scheme)
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| format!("invalid request target {}://{authority}: {e}", dest.scheme))?
    } else {
        if absolute_form && !dest.authority.is_empty() {
            // RFC 9112 §3.2.2: for absolute-form requests the URL's authority wins over Host.
            let a = HeaderValue::from_str(dest.authority)
                .map_err(|_| format!("invalid authority {:?}", dest.authority))?;
            headers.insert(HOST, a);
        } else if !headers.contains_key(HOST) {
            let a = dest.authority_or_host_port();
            let a = HeaderValue::from_str(&a).map_err(|_| format!("invalid host {a:?}"))?;
            headers.insert(HOST, a);
        }
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path_and_query);
        http::Uri::from_parts(parts).map_err(|e| format!("invalid request target: {e}"))?
    };
    if let Some((len, trailers)) = buffered {
        let had = headers.contains_key(CONTENT_LENGTH);
        fix_content_length(&mut headers, len, had, trailers);
    }
    let mut req = hyper::Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    *req.headers_mut() = headers;
    if !h2 && let Some(ext) = extensions {
        *req.extensions_mut() = ext;
    }
    Ok(req)
}

/// The request as it goes to the server: the flow's (possibly changed) request, hop-by-hop
/// headers removed, framed for the server's protocol.
fn build_upstream(
    flow: &HttpFlow,
    extensions: &http::Extensions,
    body: ProxyBody,
    entry: &PoolEntry,
    absolute_form: bool,
) -> Result<hyper::Request<ProxyBody>, String> {
    let h2 = entry.h2;
    let r = &flow.request;
    let method = Method::from_bytes(r.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", r.method))?;
    let path = if r.path.is_empty() { "/" } else { &r.path };
    let path_and_query: http::uri::PathAndQuery = path
        .parse()
        .map_err(|e| format!("invalid request target {path:?}: {e}"))?;
    let dest = Dest {
        scheme: &r.scheme,
        host: &r.host,
        port: r.port,
        authority: &r.authority,
    };
    let buffered = match &r.raw_content {
        Some(raw) if !r.stream => Some((raw.len(), r.trailers.is_some())),
        _ => None,
    };
    upstream_request(
        method,
        headers_to(&r.headers),
        &dest,
        path_and_query,
        buffered,
        Some(extensions.clone()),
        body,
        h2,
        absolute_form,
        entry.upgrading.get(),
    )
}

/// Reads the server's response into the flow, runs the response hooks, and answers the
/// client.
pub(crate) async fn response_phase(
    ctx: &Rc<ConnCtx>,
    mut flow: Box<HttpFlow>,
    entry: PoolEntry,
    resp: hyper::Response<Incoming>,
) -> Result<HyperResponse, Killed> {
    let cfg = ctx.shared.config();
    let manager = ctx.manager();
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .unwrap_or_else(|| reason_phrase(status).to_owned());
    let mut message = Message::new(version_of(parts.version), headers_from(&parts.headers));
    message.timestamp_start = now();
    flow.response = Some(Response {
        status_code: status,
        reason,
        message,
    });

    let release = {
        let busy = entry.busy.clone();
        move || busy.set(false)
    };
    let Some(mut f) = ctx.fire(HookKind::ResponseHeaders, flow).await else {
        release();
        return Err(Killed);
    };
    if proceed(&mut f).await.is_err() {
        release();
        return killed(ctx, f).await;
    }
    flow = f;

    let no_body = bodiless(&flow.request.method, status);
    let declared_len = content_length(&parts.headers);
    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
        && !no_body
    {
        release();
        let msg = format!("response body of {len} bytes exceeds body_size_limit ({limit} bytes)");
        return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await;
    }

    if manager.handles(HookKind::Response) {
        match read_up_to(body, if no_body { 0 } else { cfg.stream_large_bodies }).await {
            Ok(Read::Complete(b, trailers)) => {
                release();
                if let Some(limit) = cfg.body_size_limit
                    && b.len() as u64 > limit
                {
                    let msg = format!("response body exceeds body_size_limit ({limit} bytes)");
                    return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await;
                }
                if let Some(r) = flow.response.as_mut() {
                    r.raw_content = Some(b);
                    r.trailers = trailers.as_ref().map(headers_from);
                    r.timestamp_end = Some(now());
                }
                respond_from_flow(ctx, flow, Some(parts.extensions)).await
            }
            Ok(Read::TooLarge(chunks, rest)) => {
                if let Some(r) = flow.response.as_mut() {
                    r.stream = true;
                }
                let body = ProxyBody::streaming(chunks, rest, cfg.body_size_limit);
                Ok(stream_to_client(
                    ctx,
                    flow,
                    parts.extensions,
                    body,
                    declared_len,
                    Box::new(release),
                ))
            }
            Err(e) => {
                release();
                let msg = format!(
                    "server {} failed while sending the response body: {e}",
                    entry.server.address
                );
                fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await
            }
        }
    } else {
        if let Some(r) = flow.response.as_mut() {
            r.stream = true;
        }
        let body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit);
        Ok(stream_to_client(
            ctx,
            flow,
            parts.extensions,
            body,
            declared_len,
            Box::new(release),
        ))
    }
}

/// The client's response head built from the flow's response.
fn response_head(
    resp: &Response,
    extensions: Option<http::Extensions>,
) -> Result<hyper::Response<()>, String> {
    let status = StatusCode::from_u16(resp.status_code)
        .map_err(|_| format!("invalid status code {}", resp.status_code))?;
    let mut headers = headers_to(&resp.headers);
    strip_hop_by_hop(&mut headers, false);
    let mut r = hyper::Response::new(());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    if let Some(ext) = extensions {
        *r.extensions_mut() = ext;
    }
    if resp.reason != reason_phrase(resp.status_code)
        && let Ok(rp) = hyper::ext::ReasonPhrase::try_from(resp.reason.clone().into_bytes())
    {
        r.extensions_mut().insert(rp);
    } else {
        r.extensions_mut().remove::<hyper::ext::ReasonPhrase>();
    }
    Ok(r)
}

/// Answers the client with the flow's buffered response, after the `response` hook.
async fn respond_from_flow(
    ctx: &Rc<ConnCtx>,
    flow: Box<HttpFlow>,
    extensions: Option<http::Extensions>,
) -> Result<HyperResponse, Killed> {
    let Some(mut flow) = ctx.fire(HookKind::Response, flow).await else {
        return Err(Killed);
    };
    if proceed(&mut flow).await.is_err() {
        return killed(ctx, flow).await;
    }
    let Some(resp) = flow.response.as_ref() else {
        return fail(
            ctx,
            flow,
            StatusCode::BAD_GATEWAY,
            "an addon removed the response".into(),
        )
        .await;
    };
    let head = match response_head(resp, extensions) {
        Ok(h) => h,
        Err(msg) => return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await,
    };
    let raw = resp.raw_content.clone().unwrap_or_default();
    let trailers = resp.trailers.as_ref().map(headers_to);
    let (mut head, ()) = head.into_parts();
    if !bodiless(&flow.request.method, resp.status_code) {
        let had = head.headers.contains_key(CONTENT_LENGTH);
        fix_content_length(&mut head.headers, raw.len(), had, trailers.is_some());
    }
    Ok(hyper::Response::from_parts(
        head,
        ProxyBody::full(raw).with_trailers(trailers),
    ))
}

/// Streams the server's response body to the client; the `response` (or `error`) hook fires
/// when the body has been passed on.
fn stream_to_client(
    ctx: &Rc<ConnCtx>,
    flow: Box<HttpFlow>,
    extensions: http::Extensions,
    body: ProxyBody,
    declared_len: Option<u64>,
    release: Box<dyn FnOnce() + Send>,
) -> HyperResponse {
    let manager = ctx.manager().clone();
    let head = match flow
        .response
        .as_ref()
        .map(|r| response_head(r, Some(extensions)))
    {
        Some(Ok(h)) => h,
        Some(Err(msg)) => return error_response(StatusCode::BAD_GATEWAY, &msg),
        None => return error_response(StatusCode::BAD_GATEWAY, "an addon removed the response"),
    };
    let mut flow = Some(flow);
    let body = body
        .with_exact(declared_len)
        .on_end(Box::new(move |n, err| {
            release();
            let Some(mut flow) = flow.take() else { return };
            actix::spawn(async move {
                match err {
                    None => {
                        if let Some(r) = flow.response.as_mut() {
                            r.timestamp_end = Some(now());
                        }
                        flow.metadata.insert("response_size".into(), n.into());
                        let _ = fire(&manager, HookKind::Response, flow).await;
                    }
                    Some(e) => {
                        flow_failed(
                            &manager,
                            flow,
                            format!("response body transfer failed: {e}"),
                        )
                        .await
                    }
                }
            });
        }));
    let (head, ()) = head.into_parts();
    hyper::Response::from_parts(head, body)
}
