//! Evaluating a filter tree against a flow, with mitmproxy's rules for what each operator
//! looks at.
//!
//! The common operators do not allocate: text that has to be assembled first (a URL, a
//! header block, an address) is written into a reusable per-thread buffer. Only `~b`,
//! `~bq` and `~bs` allocate, and only to undo a `Content-Encoding`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;

use super::FlowRef;
use super::ast::{FlagOp, Node, Rex, RexOp};
use crate::flow::encoding;
use crate::flow::{HttpFlow, HttpVersion, Message, Request, TcpFlow};

thread_local! {
    static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
    static BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer larger than this is not kept for the next flow.
const KEEP_CAPACITY: usize = 64 * 1024;

fn with_text<R>(f: impl FnOnce(&mut String) -> R) -> R {
    TEXT.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > KEEP_CAPACITY {
                *buf = String::new();
            }
            r
        }
        Err(_) => f(&mut String::new()),
    })
}

fn with_bytes<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BYTES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let r = f(&mut buf);
            if buf.capacity() > KEEP_CAPACITY {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Whether `node` matches `flow`.
pub(super) fn eval(node: &Node, flow: FlowRef<'_>) -> bool {
    match node {
        Node::Not(n) => !eval(n, flow),
        Node::And(ns) => ns.iter().all(|n| eval(n, flow)),
        Node::Or(ns) => ns.iter().any(|n| eval(n, flow)),
        Node::Flag(op) => flag(*op, flow),
        Node::Rex(op, rex) => match flow {
            FlowRef::Http(f) => http_rex(*op, rex, f),
            FlowRef::Tcp(f) => tcp_rex(*op, rex, f),
        },
        Node::Code(code) => match flow {
            FlowRef::Http(f) => f
                .response
                .as_ref()
                .is_some_and(|r| u32::from(r.status_code) == *code),
            FlowRef::Tcp(_) => false,
        },
    }
}

fn flag(op: FlagOp, flow: FlowRef<'_>) -> bool {
    match (op, flow) {
        (FlagOp::All, _) => true,
        (FlagOp::Udp | FlagOp::Dns, _) => false,
        (FlagOp::Http, FlowRef::Http(_)) | (FlagOp::Tcp, FlowRef::Tcp(_)) => true,
        (FlagOp::Http, FlowRef::Tcp(_)) | (FlagOp::Tcp, FlowRef::Http(_)) => false,
        (FlagOp::Error, FlowRef::Http(f)) => f.error.is_some(),
        (FlagOp::Error, FlowRef::Tcp(f)) => f.error.is_some(),
        (FlagOp::Marked, FlowRef::Http(f)) => !f.marked.is_empty(),
        (FlagOp::Marked, FlowRef::Tcp(f)) => !f.marked.is_empty(),
        (FlagOp::Replay, FlowRef::Http(f)) => f.is_replay.is_some(),
        (FlagOp::ReplayRequest, FlowRef::Http(f)) => f.is_replay.as_deref() == Some("request"),
        (FlagOp::ReplayResponse, FlowRef::Http(f)) => f.is_replay.as_deref() == Some("response"),
        (FlagOp::Replay | FlagOp::ReplayRequest | FlagOp::ReplayResponse, FlowRef::Tcp(_)) => false,
        (FlagOp::Request, FlowRef::Http(f)) => f.response.is_none(),
        (FlagOp::Response, FlowRef::Http(f)) => f.response.is_some(),
        (FlagOp::WebSocket, FlowRef::Http(f)) => f.websocket.is_some(),
        (FlagOp::Asset, FlowRef::Http(f)) => f.response.as_ref().is_some_and(|r| is_asset(r)),
        (
            FlagOp::Request | FlagOp::Response | FlagOp::WebSocket | FlagOp::Asset,
            FlowRef::Tcp(_),
        ) => false,
    }
}

/// mitmproxy's asset content types (matched case-sensitively, anywhere in the value).
const ASSET_TYPES: &[&[u8]] = &[
    b"text/javascript",
    b"application/x-javascript",
    b"application/javascript",
    b"text/css",
    b"image/",
    b"font/",
    b"application/font",
];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn is_asset(m: &Message) -> bool {
    content_types(m).any(|v| ASSET_TYPES.iter().any(|t| contains(v, t)))
}

fn content_types(m: &Message) -> impl Iterator<Item = &[u8]> {
    m.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v)
}

fn content_type_matches(rex: &Rex, m: &Message) -> bool {
    content_types(m).any(|v| rex.is_match_bytes(v))
}

fn headers_match(rex: &Rex, m: &Message) -> bool {
    with_bytes(|buf| {
        for (name, value) in m.headers.iter() {
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n");
        }
        rex.is_match_bytes(buf)
    })
}

/// The body with `Content-Encoding` undone, or as it is when that fails (mitmproxy's
/// `get_content(strict=False)`); `None` when the body is not held. A streamed body kept on
/// disk (`store_streamed_bodies`) is read back, as mitmproxy matches the one it keeps.
fn content(m: &Message) -> Option<Cow<'_, [u8]>> {
    let raw: Cow<'_, [u8]> = match (&m.raw_content, &m.stored_body) {
        (Some(r), _) => Cow::Borrowed(r),
        (None, Some(b)) if b.is_complete() => Cow::Owned(b.read_all().ok()?),
        (None, _) => return None,
    };
    let Some(ce) = m
        .headers
        .get("content-encoding")
        .map(str::trim)
        .filter(|e| !e.is_empty())
    else {
        return Some(raw);
    };
    if ce.eq_ignore_ascii_case("identity") || ce.eq_ignore_ascii_case("none") {
        return Some(raw);
    }
    Some(match encoding::decode_all(ce, &raw) {
        Ok(v) => Cow::Owned(v),
        Err(_) => raw,
    })
}

fn body_matches(rex: &Rex, m: &Message) -> bool {
    content(m).is_some_and(|c| rex.is_match_bytes(&c))
}

fn http_rex(op: RexOp, rex: &Rex, f: &HttpFlow) -> bool {
    let resp = f.response.as_ref();
    let ws = f.websocket.as_ref().map_or(&[][..], |w| &w.messages[..]);
    match op {
        RexOp::Body => {
            body_matches(rex, &f.request)
                || resp.is_some_and(|r| body_matches(rex, r))
                || ws.iter().any(|m| rex.is_match_bytes(&m.content))
        }
        RexOp::BodyRequest => {
            body_matches(rex, &f.request)
                || ws
                    .iter()
                    .any(|m| m.from_client && rex.is_match_bytes(&m.content))
        }
        RexOp::BodyResponse => {
            resp.is_some_and(|r| body_matches(rex, r))
                || ws
                    .iter()
                    .any(|m| !m.from_client && rex.is_match_bytes(&m.content))
        }
        RexOp::ContentType => {
            content_type_matches(rex, &f.request)
                || resp.is_some_and(|r| content_type_matches(rex, r))
        }
        RexOp::ContentTypeRequest => content_type_matches(rex, &f.request),
        RexOp::ContentTypeResponse => resp.is_some_and(|r| content_type_matches(rex, r)),
        RexOp::Header => {
            headers_match(rex, &f.request) || resp.is_some_and(|r| headers_match(rex, r))
        }
        RexOp::HeaderRequest => headers_match(rex, &f.request),
        RexOp::HeaderResponse => resp.is_some_and(|r| headers_match(rex, r)),
        RexOp::Method => rex.is_match_bytes(f.request.method.as_bytes()),
        RexOp::Domain => {
            let pretty = pretty_host(&f.request);
            rex.is_match_str(&f.request.host)
                || (pretty != f.request.host && rex.is_match_str(pretty))
        }
        RexOp::Url => url_matches(rex, &f.request),
        RexOp::Src => src_matches(rex, &f.client.peername),
        RexOp::Dst => f
            .server
            .as_ref()
            .is_some_and(|s| dst_matches(rex, &s.address.host, s.address.port)),
        RexOp::Meta => meta_matches(rex, &f.metadata),
        RexOp::Marker => rex.is_match_str(&f.marked),
        RexOp::Comment => rex.is_match_str(&f.comment),
    }
}

fn tcp_rex(op: RexOp, rex: &Rex, f: &TcpFlow) -> bool {
    match op {
        RexOp::Body => f.messages.iter().any(|m| rex.is_match_bytes(&m.content)),
        RexOp::BodyRequest => f
            .messages
            .iter()
            .any(|m| m.from_client && rex.is_match_bytes(&m.content)),
        RexOp::BodyResponse => f
            .messages
            .iter()
            .any(|m| !m.from_client && rex.is_match_bytes(&m.content)),
        RexOp::Src => src_matches(rex, &f.client.peername),
        RexOp::Dst => f
            .server
            .as_ref()
            .is_some_and(|s| dst_matches(rex, &s.address.host, s.address.port)),
        RexOp::Meta => meta_matches(rex, &f.metadata),
        RexOp::Marker => rex.is_match_str(&f.marked),
        RexOp::Comment => rex.is_match_str(&f.comment),
        RexOp::ContentType
        | RexOp::ContentTypeRequest
        | RexOp::ContentTypeResponse
        | RexOp::Header
        | RexOp::HeaderRequest
        | RexOp::HeaderResponse
        | RexOp::Method
        | RexOp::Domain
        | RexOp::Url => false,
    }
}

fn src_matches(rex: &Rex, addr: &std::net::SocketAddr) -> bool {
    // mitmproxy formats the peer as `host:port` without brackets, also for IPv6.
    with_text(|buf| {
        let _ = write!(buf, "{}:{}", addr.ip(), addr.port());
        rex.is_match_str(buf)
    })
}

fn dst_matches(rex: &Rex, host: &str, port: u16) -> bool {
    with_text(|buf| {
        let _ = write!(buf, "{host}:{port}");
        rex.is_match_str(buf)
    })
}

fn meta_matches(rex: &Rex, meta: &crate::flow::Metadata) -> bool {
    with_text(|buf| {
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                buf.push('\n');
            }
            buf.push_str(k);
            buf.push_str(": ");
            super::pystr::py_str(v, buf);
        }
        rex.is_match_str(buf)
    })
}

/// The request's `Host` header, or `:authority` for HTTP/2 and 3 (mitmproxy's
/// `host_header`).
fn host_header(r: &Request) -> Option<&str> {
    if matches!(r.http_version, HttpVersion::Http2 | HttpVersion::Http3) && !r.authority.is_empty()
    {
        return Some(&r.authority);
    }
    r.headers.get("host")
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn valid_label(l: &str) -> bool {
    (1..=63).contains(&l.len())
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// mitmproxy's `is_valid_host` for text hosts (DNS name or IP address).
fn is_valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if !host.is_ascii() {
        // An internationalised name: valid when every label is made of letters, digits,
        // `-` and `_` (its IDNA form then is).
        return host.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        });
    }
    if host.len() > 255 {
        return false;
    }
    let h = host.strip_suffix('.').unwrap_or(host);
    h.split('.').all(valid_label)
}

/// Splits an authority as mitmproxy's `parse_authority(check=False)`: the host (brackets
/// removed) and the port, or the whole text and no port when it is malformed.
fn parse_authority(a: &str) -> (&str, Option<u16>) {
    let port_ok = |rest: &str| -> Option<Option<u16>> {
        if rest.is_empty() {
            return Some(None);
        }
        let digits = rest.strip_prefix(':')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // A port beyond 65535 makes the authority malformed.
        digits.parse::<u16>().ok().map(Some)
    };
    let split = (|| {
        // `[^:]+` then an optional `:digits`.
        let end = a.find(':').unwrap_or(a.len());
        if end > 0
            && let Some(p) = port_ok(&a[end..])
        {
            return Some((&a[..end], p));
        }
        // `\[.+\]` then an optional `:digits` (the last `]` that leaves a valid rest).
        if a.starts_with('[') {
            for (i, _) in a.rmatch_indices(']') {
                if i >= 2
                    && let Some(p) = port_ok(&a[i + 1..])
                {
                    return Some((&a[..=i], p));
                }
            }
        }
        None
    })();
    let Some((mut host, port)) = split else {
        return (a, None);
    };
    if host.len() >= 2 && host.starts_with('[') && host.ends_with(']') {
        host = &host[1..host.len() - 1];
    }
    if !is_valid_host(host) {
        return (a, None);
    }
    (host, port)
}

/// mitmproxy's `pretty_host`.
fn pretty_host(r: &Request) -> &str {
    match host_header(r) {
        Some(h) if !h.is_empty() => parse_authority(h).0,
        _ => &r.host,
    }
}

fn url_matches(rex: &Rex, r: &Request) -> bool {
    if r.method == "CONNECT" {
        return rex.is_match_str(&r.authority);
    }
    let path = if r.path == "*" { "" } else { r.path.as_str() };
    let (host, port) = match host_header(r) {
        Some(h) if !h.is_empty() => {
            let (host, port) = parse_authority(h);
            let port = port
                .filter(|&p| p != 0)
                .or_else(|| default_port(&r.scheme))
                .unwrap_or(443);
            (host, port)
        }
        _ => (r.host.as_str(), r.port),
    };
    with_text(|buf| {
        buf.push_str(&r.scheme);
        buf.push_str("://");
        buf.push_str(host);
        if default_port(&r.scheme) != Some(port) {
            let _ = write!(buf, ":{port}");
        }
        buf.push_str(path);
        rex.is_match_str(buf)
    })
}
