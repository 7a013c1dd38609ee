//! The path to the server: the request as the server gets it (hop-by-hop headers removed,
//! `Host` / `:authority`, the target in the server protocol's form) and sending it on a
//! pooled connection, retried once on a fresh one when a kept-alive connection was stale.

use std::rc::Rc;

use http::header::{EXPECT, HOST};
use http::{HeaderMap, HeaderValue, Method};
use hyper::body::Incoming;
use waylay_core::flow::HttpFlow;

use super::body::ProxyBody;
use super::convert::headers_to;
use super::response::fix_content_length;
use crate::conn::dest::Destination;
use crate::conn::dial::{checkout, checkout_upgrade};
use crate::conn::pool::{ConnState, PoolEntry};
use crate::conn::server::{Unsent, exchange};
use crate::context::ConnCtx;
use crate::error::{ForwardError, ServerError};
use crate::proto::headers::{remove_in_order, strip_hop_by_hop};

/// Sends the request `build` makes on a server connection for `key` (a dedicated one for an
/// upgrade) and gives back the connection and the response head. When a kept-alive
/// connection turns out to be stale before the request was written to it and `can_retry`,
/// it retries once on a fresh connection: `build` is then handed the request it made the
/// first time, given back unsent by hyper, so nothing has to be copied up front in case of a
/// retry. `Err` says which side failed and why (the 502's reason).
pub(crate) async fn send_upstream(
    ctx: &Rc<ConnCtx>,
    key: &Destination,
    upgrade: bool,
    can_retry: bool,
    mut build: impl FnMut(
        &PoolEntry,
        Option<hyper::Request<ProxyBody>>,
    ) -> Result<hyper::Request<ProxyBody>, String>,
) -> Result<(PoolEntry, hyper::Response<Incoming>), ForwardError> {
    let mut attempt = 0;
    let mut unsent = None;
    loop {
        attempt += 1;
        let entry = if upgrade {
            checkout_upgrade(ctx, key).await
        } else {
            checkout(ctx, key).await
        }?;
        let retryable = can_retry && entry.state.get().used() && attempt == 1;
        let upstream = build(&entry, unsent.take()).map_err(ForwardError::Request)?;
        entry.state.send(entry.h2);
        match exchange(&entry.slot, &entry.addr, upstream).await {
            Ok(Ok(resp)) => {
                // The upstream proxy itself refusing (not the server answering): a 502 naming
                // it, as for a refused CONNECT.
                if let Some(form) = &entry.proxy_form
                    && resp.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
                {
                    ctx.pool.evict(key, &entry);
                    return Err(ServerError::Via(crate::via::ViaError::Status {
                        proxy: form.proxy.clone(),
                        status: resp.status().as_u16(),
                        reason: resp
                            .status()
                            .canonical_reason()
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .into());
                }
                return Ok((entry, resp));
            }
            Ok(Err(Unsent { reason, request })) => {
                ctx.pool.evict(key, &entry);
                if retryable && request.is_some() {
                    tracing::debug!(server.addr = %entry.server.address, "retrying on a new connection: {reason}");
                    unsent = request.map(|r| *r);
                    continue;
                }
                return Err(ServerError::Protocol {
                    addr: entry.server.address.to_string(),
                    reason,
                }
                .into());
            }
            Err(_) => {
                ctx.pool.evict(key, &entry);
                return Err(ServerError::Gone {
                    addr: entry.server.address.to_string(),
                }
                .into());
            }
        }
    }
}

/// On a connection to an HTTP(S) proxy itself, the request goes absolute-form to the
/// destination (`http://host:port/path`, `Host` left as it is), with the proxy's
/// `Proxy-Authorization`.
pub(crate) fn to_proxy_form(
    req: &mut hyper::Request<ProxyBody>,
    entry: &PoolEntry,
    dest: &Dest<'_>,
) -> Result<(), String> {
    let Some(form) = &entry.proxy_form else {
        return Ok(());
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("http://{}{path}", dest.host_port());
    *req.uri_mut() = url
        .parse()
        .map_err(|e| format!("invalid request target {url:?}: {e}"))?;
    if let Some(auth) = &form.authorization {
        req.headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
    }
    Ok(())
}

pub(crate) fn buffered_body(flow: &HttpFlow) -> ProxyBody {
    let raw = flow.request.raw_content.clone().unwrap_or_default();
    let trailers = flow.request.trailers.as_deref().map(headers_to);
    ProxyBody::full(raw).with_trailers(trailers)
}

/// Where a request goes, as the upstream request needs it.
pub(crate) struct Dest<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The authority the client named (absolute-form URL or `:authority`), may be empty.
    pub(crate) authority: &'a str,
}

impl Dest<'_> {
    /// `host[:port]`, the port left out when it is the scheme's default.
    pub(crate) fn host_port(&self) -> String {
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
pub(crate) fn upstream_request(
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
    let host = if h2 { headers.get(HOST).cloned() } else { None };
    remove_in_order(&mut headers, |n| n == EXPECT || (h2 && n == HOST));
    let uri = if h2 {
        let authority = match host {
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
            // RFC 9112 §3.2.2: for absolute-form requests the URL's authority wins over Host
            // (left alone when it already says the same, as clients send it).
            if !host_is(&headers, dest.authority) {
                let a = HeaderValue::from_str(dest.authority)
                    .map_err(|_| format!("invalid authority {:?}", dest.authority))?;
                headers.insert(HOST, a);
            }
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
        fix_content_length(&mut headers, len, trailers);
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

/// Sets `Host` to `authority` unless the message has exactly one and it says so already (a
/// client's absolute-form request, RFC 9112 §3.2.2); a message without `Host` is left so.
pub(crate) fn point_host_at(headers: &mut HeaderMap, authority: &str) {
    let mut values = headers.get_all(HOST).iter();
    match (values.next(), values.next()) {
        (None, _) => return,
        (Some(v), None) if v.as_bytes() == authority.as_bytes() => return,
        _ => {}
    }
    match HeaderValue::from_str(authority) {
        Ok(a) => {
            headers.insert(HOST, a);
        }
        // A parsed URI's authority is always a valid field value; the client's `Host` stays.
        Err(_) => tracing::debug!(authority, "absolute-form authority is not a valid Host"),
    }
}

/// Whether the message has exactly one `Host`, and it is `authority`.
fn host_is(headers: &HeaderMap, authority: &str) -> bool {
    let mut values = headers.get_all(HOST).iter();
    matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes() == authority.as_bytes())
}

/// The request as it goes to the server: the flow's (possibly changed) request, hop-by-hop
/// headers removed, framed for the server's protocol. Its `Host` is the flow's: the
/// absolute-form rule ([`point_host_at`]) was applied before the hooks.
pub(crate) fn build_upstream(
    flow: &HttpFlow,
    extensions: http::Extensions,
    client_path: Option<&http::uri::PathAndQuery>,
    body: ProxyBody,
    entry: &PoolEntry,
) -> Result<hyper::Request<ProxyBody>, String> {
    let h2 = entry.h2;
    let r = &flow.request;
    let method = Method::from_bytes(r.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", r.method))?;
    let path = if r.path.is_empty() { "/" } else { &r.path };
    // The client's target as hyper parsed it, unless an addon changed the path.
    let path_and_query: http::uri::PathAndQuery = match client_path {
        Some(p) if p.as_str() == path => p.clone(),
        _ => path
            .parse()
            .map_err(|e| format!("invalid request target {path:?}: {e}"))?,
    };
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
    let mut req = upstream_request(
        method,
        headers_to(&r.headers),
        &dest,
        path_and_query,
        buffered,
        Some(extensions),
        body,
        h2,
        false,
        matches!(entry.state.get(), ConnState::Upgrading { .. }),
    )?;
    to_proxy_form(&mut req, entry, &dest)?;
    if r.stream && r.stream_fn.is_some() {
        // Through a chunk function the length may change: sent chunked (see the response's).
        req.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    Ok(req)
}

/// Points a request's `Host` (HTTP/1, and HTTP/2 when the client sent one) and its URL's
/// authority at the reverse target, as [`waylay_core::ReverseTarget::apply`] does on a flow.
pub(crate) fn rewrite_host<B>(req: &mut hyper::Request<B>, target: &waylay_core::ReverseTarget) {
    let host = target.host_header();
    if (req.version() != http::Version::HTTP_2 || req.headers().contains_key(http::header::HOST))
        && let Ok(v) = http::HeaderValue::from_str(&host)
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        if let Ok(a) = host.parse() {
            parts.authority = Some(a);
            if let Ok(u) = http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
}

/// Sets `Authorization: Basic` for `credentials` on a request to a reverse target (what
/// mitmproxy's `upstream_auth` does in reverse mode), replacing the client's.
pub(crate) fn authorize<B>(req: &mut hyper::Request<B>, credentials: &waylay_core::Credentials) {
    if let Ok(v) = http::HeaderValue::from_str(&crate::via::proxy_authorization(credentials)) {
        req.headers_mut().insert(http::header::AUTHORIZATION, v);
    }
}
