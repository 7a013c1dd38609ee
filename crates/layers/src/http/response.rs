//! The response phase: the server's response read into the flow, walked through
//! `response_headers` and `response`, and answered to the client (buffered or streamed).

use std::rc::Rc;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::body::Incoming;
use waylay_core::HookKind;
use waylay_core::flow::{
    CompactString, HttpFlow, HttpVersion, KILLED_MESSAGE, Message, Response, decimal, now,
    reason_phrase,
};

use super::body::{BodyEnd, ProxyBody, Read, keep_streamed, read_up_to};
use super::convert::{headers_from, headers_into, headers_to, version_of};
use super::walk::{HyperResponse, Killed, error_response, fail, flow_failed, killed, run_hook};
use crate::config::ProxyConfig;
use crate::conn::pool::PoolEntry;
use crate::context::{ConnCtx, fire};
use crate::proto::headers::{
    bodiless, remove_in_order, strip_hop_by_hop, strip_hop_by_hop_keeping_close,
};

/// The message's `Content-Length`: its first value, decimal digits around which spaces and
/// tabs are allowed (hyper has rejected any other form on the messages it parsed). Read from
/// the bytes: every request and response asks.
pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    decimal(h.get(CONTENT_LENGTH)?.as_bytes().trim_ascii())
}

/// Whether the response is server-sent events (`Content-Type: text/event-stream`).
pub(crate) fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Sets `Content-Length` to the real body length when waylay sends a buffered body; with
/// trailers there is none (HTTP/1 then sends the body chunked, the only framing that carries
/// trailers).
pub(crate) fn fix_content_length(map: &mut HeaderMap, len: usize, trailers: bool) {
    // The common case (no `Transfer-Encoding`, one `Content-Length` that already says `len`,
    // or none for an empty body) is settled in one pass over the fields, without a lookup:
    // every buffered request and response comes here.
    if !trailers {
        let (mut lengths, mut matching) = (0usize, true);
        let mut te = false;
        for (n, v) in map.iter() {
            if n == CONTENT_LENGTH {
                lengths += 1;
                matching &= is_decimal(v.as_bytes(), len);
            } else if n == TRANSFER_ENCODING {
                te = true;
                break;
            }
        }
        if !te && (lengths == 1 && matching || lengths == 0 && len == 0) {
            return;
        }
    }
    remove_in_order(map, |n| {
        n == TRANSFER_ENCODING || (trailers && n == CONTENT_LENGTH)
    });
    if trailers {
        return;
    }
    // One lookup: an empty body without the field stays without it; one field that already
    // says `len` (a body nobody changed) is left as it is.
    let mut values = map.get_all(CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (None, _) if len == 0 => {}
        (Some(v), None) if is_decimal(v.as_bytes(), len) => {}
        _ => {
            map.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
}

/// Whether `bytes` are `len` written in decimal, as waylay writes it (no sign, no leading
/// zero).
fn is_decimal(bytes: &[u8], len: usize) -> bool {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    bytes == &digits[i..]
}

/// Reads the server's response into the flow, runs the response hooks, and answers the
/// client.
/// `cfg` is the configuration the request was served under (read once per request).
pub(crate) async fn response_phase(
    ctx: &Rc<ConnCtx>,
    cfg: Arc<ProxyConfig>,
    mut flow: Box<HttpFlow>,
    entry: PoolEntry,
    resp: hyper::Response<Incoming>,
) -> Result<HyperResponse, Killed> {
    let (mut parts, body) = resp.into_parts();
    let declared_len = content_length(&parts.headers);
    record_response(&mut flow, &mut parts);
    // Answered without the server's body (killed, over the limit): the connection is
    // reused only if there was none to read.
    let unread = |entry: &PoolEntry, body: &Incoming| {
        entry
            .state
            .end_exchange(http_body::Body::is_end_stream(body))
    };
    // No hook future for a hook nobody handles (see `observed`).
    let mut flow = if ctx.manager().handles(HookKind::ResponseHeaders) {
        match run_hook(ctx, HookKind::ResponseHeaders, flow).await {
            Ok(f) => f,
            Err(k) => {
                unread(&entry, &body);
                return Err(k);
            }
        }
    } else {
        flow
    };

    let no_body = bodiless(&flow.request.method, parts.status.as_u16());
    if let (Some(limit), Some(len)) = (cfg.body_size_limit, declared_len)
        && len > limit
        && !no_body
    {
        unread(&entry, &body);
        let msg = format!("response body of {len} bytes exceeds body_size_limit ({limit} bytes)");
        return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await;
    }

    let streamed = flow.response.as_ref().is_some_and(|r| r.stream);
    if ctx.manager().handles(HookKind::Response) && !streamed {
        let limits = Limits {
            read: if no_body { 0 } else { cfg.stream_large_bodies },
            body_size: cfg.body_size_limit,
            store: cfg.store_streamed_bodies,
        };
        drop(cfg);
        return buffer_response(
            ctx,
            flow,
            parts.extensions,
            body,
            limits,
            declared_len,
            entry,
        )
        .await;
    }
    let mut body = ProxyBody::streaming(Vec::new(), body, cfg.body_size_limit);
    if let Some(r) = flow.response.as_mut() {
        r.stream = true;
        // Kept only for an addon that sees the finished response.
        let keep = cfg.store_streamed_bodies && ctx.manager().handles(HookKind::Response);
        body = keep_streamed(keep, r, body);
    }
    Ok(stream_to_client(
        ctx,
        flow,
        parts.extensions,
        body,
        declared_len,
        release_on_end(&entry),
    ))
}

/// Records the server's response head in the flow (before `response_headers`). The header
/// map moves into the flow (nothing reads `parts.headers` afterwards): no copy per response.
fn record_response(flow: &mut HttpFlow, parts: &mut http::response::Parts) {
    let status = parts.status.as_u16();
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map_or_else(
            || CompactString::const_new(reason_phrase(status)),
            |r| CompactString::from_utf8_lossy(r.as_bytes()),
        );
    // Server-sent events arrive over a long time and the client wants each as it comes:
    // marked streamed before `response_headers` (an addon may still unmark it), so the
    // `response` hook never holds them back (mitmproxy buffers them, with a warning).
    let event_stream = is_event_stream(&parts.headers);
    let message = Message::new_at(
        version_of(parts.version),
        headers_from(std::mem::take(&mut parts.headers)),
        now(),
    );
    let mut response = Response {
        status_code: status,
        reason,
        message,
    };
    response.stream = event_stream;
    flow.response = Some(response);
}

/// Frees the server connection for its next exchange once the response body has ended
/// (`true`: read to its end), or marks it closed (see [`crate::conn::pool::EntryState::release_unread`]).
fn release_on_end(entry: &PoolEntry) -> Box<dyn FnOnce(bool) + Send> {
    let state = entry.state.clone();
    Box::new(move |read_all| state.end_exchange(read_all))
}

/// What [`buffer_response`] needs of the configuration.
struct Limits {
    /// Read up to this many bytes into the flow; a larger body is streamed.
    read: u64,
    /// `body_size_limit`.
    body_size: Option<u64>,
    /// `store_streamed_bodies`.
    store: bool,
}

/// Reads the response body into the flow (up to `limits.read` bytes) for the `response`
/// hook and answers from the flow; a larger body is streamed instead (the flow marked so).
async fn buffer_response(
    ctx: &Rc<ConnCtx>,
    mut flow: Box<HttpFlow>,
    extensions: http::Extensions,
    body: Incoming,
    limits: Limits,
    declared_len: Option<u64>,
    entry: PoolEntry,
) -> Result<HyperResponse, Killed> {
    let Limits {
        read: limit,
        body_size: body_size_limit,
        store,
    } = limits;
    // Killed while the server still sends the body: stop waiting for it at once. Dropping
    // the half-read body closes the server connection (it is never reused), and the client
    // is dropped.
    let read = match flow.existing_kill_switch() {
        None => read_up_to(body, limit).await,
        Some(switch) => tokio::select! {
            read = read_up_to(body, limit) => read,
            () = switch.killed() => {
                flow.kill();
                return killed(ctx, flow).await;
            }
        },
    };
    match read {
        Ok(Read::Complete(b, trailers)) => {
            entry.state.release();
            if let Some(max) = body_size_limit
                && b.len() as u64 > max
            {
                let msg = format!("response body exceeds body_size_limit ({max} bytes)");
                return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await;
            }
            if let Some(r) = flow.response.as_mut() {
                r.raw_content = Some(b);
                r.trailers = trailers.map(|t| Box::new(headers_from(t)));
                r.timestamp_end = Some(now());
            }
            respond_from_flow(ctx, flow, Some(extensions)).await
        }
        Ok(Read::TooLarge(chunks, rest)) => {
            let mut body = ProxyBody::streaming(chunks, rest, body_size_limit);
            if let Some(r) = flow.response.as_mut() {
                r.stream = true;
                body = keep_streamed(store, r, body);
            }
            Ok(stream_to_client(
                ctx,
                flow,
                extensions,
                body,
                declared_len,
                release_on_end(&entry),
            ))
        }
        Err(e) => {
            entry.state.release_unread();
            let msg = format!(
                "server {} failed while sending the response body: {e}",
                entry.server.address
            );
            fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await
        }
    }
}

/// The client's response head built from the flow's response (`extensions`: those of the
/// server's response; `None` when an addon made the response). `h1_client`: the client
/// speaks HTTP/1, where a `Connection: close` stays.
fn status_of(resp: &Response) -> Result<StatusCode, String> {
    StatusCode::from_u16(resp.status_code)
        .map_err(|_| format!("invalid status code {}", resp.status_code))
}

/// `headers` are the flow response's, as a header map.
fn response_head(
    resp: &Response,
    mut headers: HeaderMap,
    extensions: Option<http::Extensions>,
    h1_client: bool,
) -> Result<hyper::Response<()>, String> {
    let status = status_of(resp)?;
    let made_by_addon = extensions.is_none();
    // A challenge an addon answers with (`proxyauth`'s 407) is for this hop: it stays.
    let challenges: Vec<HeaderValue> = if made_by_addon {
        headers
            .get_all(http::header::PROXY_AUTHENTICATE)
            .iter()
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    if h1_client {
        strip_hop_by_hop_keeping_close(&mut headers);
    } else {
        strip_hop_by_hop(&mut headers, false);
    }
    for v in challenges {
        headers.append(http::header::PROXY_AUTHENTICATE, v);
    }
    let mut r = hyper::Response::new(());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    if let Some(ext) = extensions {
        *r.extensions_mut() = ext;
    }
    if resp.reason != reason_phrase(resp.status_code)
        && let Ok(rp) = hyper::ext::ReasonPhrase::try_from(resp.reason.as_bytes())
    {
        r.extensions_mut().insert(rp);
    } else {
        r.extensions_mut().remove::<hyper::ext::ReasonPhrase>();
    }
    Ok(r)
}

/// Whether the flow's client speaks HTTP/1 (connection options mean something to it).
fn h1_client(flow: &HttpFlow) -> bool {
    matches!(
        flow.request.http_version,
        HttpVersion::Http10 | HttpVersion::Http11
    )
}

/// Answers the client with a response an addon set in `requestheaders` or `request`: as
/// mitmproxy does, `responseheaders` fires for it first (its `timestamp_start` set now), then
/// `response`.
pub(crate) async fn respond_made(
    ctx: &Rc<ConnCtx>,
    mut flow: Box<HttpFlow>,
) -> Result<HyperResponse, Killed> {
    if let Some(r) = flow.response.as_mut() {
        r.timestamp_start = now();
    }
    let flow = run_hook(ctx, HookKind::ResponseHeaders, flow).await?;
    respond_from_flow(ctx, flow, None).await
}

/// Answers the client with the flow's buffered response, after the `response` hook.
pub(crate) async fn respond_from_flow(
    ctx: &Rc<ConnCtx>,
    flow: Box<HttpFlow>,
    extensions: Option<http::Extensions>,
) -> Result<HyperResponse, Killed> {
    let mut flow = run_hook(ctx, HookKind::Response, flow).await?;
    let h1 = h1_client(&flow);
    let Some(resp) = flow.response.as_mut() else {
        return fail(
            ctx,
            flow,
            StatusCode::BAD_GATEWAY,
            "an addon removed the response".into(),
        )
        .await;
    };
    if let Err(msg) = status_of(resp) {
        return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await;
    }
    // The flow is dropped once answered: its response headers move into the head.
    let headers = headers_into(std::mem::take(&mut resp.headers));
    let head = match response_head(resp, headers, extensions, h1) {
        Ok(h) => h,
        Err(msg) => return fail(ctx, flow, StatusCode::BAD_GATEWAY, msg).await,
    };
    let raw = resp.raw_content.take().unwrap_or_default();
    let trailers = resp.trailers.take().map(|t| headers_into(*t));
    let (mut head, ()) = head.into_parts();
    if !bodiless(&flow.request.method, resp.status_code) {
        fix_content_length(&mut head.headers, raw.len(), trailers.is_some());
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
    release: Box<dyn FnOnce(bool) + Send>,
) -> HyperResponse {
    let manager = ctx.manager().clone();
    let h1 = h1_client(&flow);
    let mut head = match flow
        .response
        .as_ref()
        .map(|r| response_head(r, headers_to(&r.headers), Some(extensions), h1))
    {
        Some(Ok(h)) => h,
        Some(Err(msg)) => return error_response(StatusCode::BAD_GATEWAY, &msg),
        None => return error_response(StatusCode::BAD_GATEWAY, "an addon removed the response"),
    };
    // A body through a chunk function may change length: it goes out without one (chunked
    // on HTTP/1.1), where mitmproxy keeps the server's and the framing breaks.
    let transform = flow.response.as_ref().and_then(|r| r.stream_fn.clone());
    if transform.is_some() {
        head.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    let switch = flow.existing_kill_switch();
    let mut flow = Some(flow);
    let body = body
        .with_exact(declared_len)
        .with_transform(transform)
        .with_kill(switch)
        .on_end(Box::new(move |n, err| {
            release(err.is_none());
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
                    Some(BodyEnd::Killed) => {
                        flow_failed(&manager, flow, KILLED_MESSAGE.to_owned()).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    #[test]
    fn content_length_is_rewritten_only_when_it_differs() {
        // (fields before, body length, trailers, fields after)
        for (have, len, trailers, want) in [
            (&["1024"][..], 1024, false, &["1024"][..]),
            (&["0"][..], 0, false, &["0"][..]),
            (&["10"][..], 1024, false, &["1024"][..]),
            (&["01024"][..], 1024, false, &["1024"][..]),
            (&["1024", "1024"][..], 1024, false, &["1024"][..]),
            (&[][..], 0, false, &[][..]),
            (&[][..], 5, false, &["5"][..]),
            (&["5"][..], 5, true, &[][..]),
        ] {
            // Without Transfer-Encoding (the one-pass case), with it before the lengths and
            // after them.
            for te in [None, Some(true), Some(false)] {
                let mut h = HeaderMap::new();
                h.append(http::header::SERVER, HeaderValue::from_static("x"));
                if te == Some(true) {
                    h.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                }
                for v in have {
                    h.append(CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
                }
                if te == Some(false) {
                    h.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                }
                h.append(http::header::ETAG, HeaderValue::from_static("\"e\""));
                fix_content_length(&mut h, len, trailers);
                let after: Vec<&str> = h
                    .get_all(CONTENT_LENGTH)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                assert_eq!(after, want, "{have:?} {len} {trailers} {te:?}");
                assert!(!h.contains_key(TRANSFER_ENCODING));
                assert!(h.contains_key(http::header::SERVER) && h.contains_key(http::header::ETAG));
            }
        }
    }

    #[test]
    fn content_length_reads_decimal_digits_only() {
        for (v, want) in [
            ("1024", Some(1024)),
            (" 7\t", Some(7)),
            ("0", Some(0)),
            ("007", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            (" ", None),
            ("+5", None),
            ("-1", None),
            ("5, 5", None),
            ("1e3", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            assert_eq!(content_length(&h), want, "{v:?}");
        }
        assert_eq!(content_length(&HeaderMap::new()), None);
    }

    #[test]
    fn event_streams_are_recognised_by_their_media_type() {
        for v in [
            "text/event-stream",
            "Text/Event-Stream",
            "text/event-stream; charset=utf-8",
            " text/event-stream ;x=y",
        ] {
            assert!(is_event_stream(&with_type(v)), "{v}");
        }
        for v in ["text/plain", "text/event-streams", "application/json", ""] {
            assert!(!is_event_stream(&with_type(v)), "{v}");
        }
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
