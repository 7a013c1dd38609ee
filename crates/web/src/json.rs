//! Flows as mitmweb's `flow_to_json` shapes them (field names kept so scripts written for
//! mitmweb's API carry over), without bodies, plus waylay's `seq` (the list position).

use serde_json::{Value, json};
use waylay_core::flow::{Client, Message, Server};
use waylay_core::{Flow, Headers, HttpFlow, TcpFlow};

fn headers(h: &Headers) -> Value {
    Value::Array(
        h.iter()
            .map(|(k, v)| json!([k, String::from_utf8_lossy(v)]))
            .collect(),
    )
}

fn addr(a: std::net::SocketAddr) -> Value {
    json!([a.ip().to_string(), a.port()])
}

fn client(c: &Client) -> Value {
    let tls = c.tls.as_ref();
    json!({
        "id": c.id.to_string(),
        "peername": addr(c.peername),
        "sockname": addr(c.sockname),
        "tls_established": c.tls_established(),
        "sni": c.sni(),
        "cipher": tls.and_then(|t| t.cipher.clone()),
        "alpn": tls.and_then(|t| t.alpn.clone()),
        "tls_version": tls.and_then(|t| t.version.clone()),
        "timestamp_start": c.timestamp_start,
        "timestamp_tls_setup": c.timestamp_tls_setup,
        "timestamp_end": c.timestamp_end,
    })
}

fn server(s: &Server) -> Value {
    let tls = s.tls_info.as_ref();
    json!({
        "id": s.id.to_string(),
        "peername": s.peername.map(addr),
        "sockname": s.sockname.map(addr),
        "address": [s.address.host, s.address.port],
        "tls_established": s.tls && s.timestamp_tls_setup.is_some(),
        "sni": s.sni,
        "cipher": tls.and_then(|t| t.cipher.clone()),
        "alpn": tls.and_then(|t| t.alpn.clone()),
        "tls_version": tls.and_then(|t| t.version.clone()),
        "timestamp_start": s.timestamp_start,
        "timestamp_tcp_setup": s.timestamp_tcp_setup,
        "timestamp_tls_setup": s.timestamp_tls_setup,
        "timestamp_end": s.timestamp_end,
    })
}

/// Body facts of a message: `contentLength` (`None` when not held: streamed or not read).
/// `len` overrides the length when the body was dropped from memory but is known.
fn content_meta(m: &Message, len: Option<usize>) -> (Value, Value) {
    let n = m.raw_content.as_ref().map(|b| b.len()).or(len);
    (json!(n), json!(n.map(|n| format!("len-{n}"))))
}

/// The list and detail JSON of a flow. `lens` are the body lengths when the flow held in
/// memory has had its bodies moved to the store.
pub(crate) fn flow_json(
    flow: &Flow,
    seq: u64,
    intercepted: bool,
    modified: bool,
    lens: BodyLens,
) -> Value {
    match flow {
        Flow::Http(f) => http_json(f, seq, intercepted, modified, lens),
        Flow::Tcp(f) => tcp_json(f, seq, intercepted, modified),
    }
}

/// Body lengths remembered for a flow whose bodies are not in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BodyLens {
    pub(crate) request: Option<usize>,
    pub(crate) response: Option<usize>,
}

fn http_json(f: &HttpFlow, seq: u64, intercepted: bool, modified: bool, lens: BodyLens) -> Value {
    let q = &f.request;
    let (ql, qh) = content_meta(q, lens.request);
    let mut v = json!({
        "id": f.id.to_string(),
        "seq": seq,
        "type": "http",
        "intercepted": intercepted,
        "is_replay": f.is_replay,
        "modified": modified,
        "marked": f.marked,
        "comment": f.comment,
        // The breakpoint rules that edited it (waylay's own field).
        "breakpoint_rule": f.metadata.get(waylay_addons::BREAKPOINT_METADATA),
        "timestamp_created": f.timestamp_created,
        "live": f.live,
        "client_conn": client(&f.client),
        "server_conn": f.server.as_deref().map(server),
        "request": {
            "method": q.method,
            "scheme": q.scheme,
            "host": q.host,
            "port": q.port,
            "path": q.path,
            "http_version": q.http_version.as_str(),
            "headers": headers(&q.headers),
            "trailers": q.trailers.as_ref().map(headers),
            "contentLength": ql,
            "contentHash": qh,
            "timestamp_start": q.timestamp_start,
            "timestamp_end": q.timestamp_end,
            "pretty_host": q.pretty_host(),
        },
    });
    if let Some(e) = &f.error {
        v["error"] = json!({"msg": e.msg, "timestamp": e.timestamp});
    }
    if let Some(s) = &f.response {
        let (sl, sh) = content_meta(s, lens.response);
        v["response"] = json!({
            "http_version": s.http_version.as_str(),
            "status_code": s.status_code,
            "reason": s.reason,
            "headers": headers(&s.headers),
            "trailers": s.trailers.as_ref().map(headers),
            "contentLength": sl,
            "contentHash": sh,
            "timestamp_start": s.timestamp_start,
            "timestamp_end": s.timestamp_end,
        });
    }
    if let Some(ws) = &f.websocket {
        v["websocket"] = json!({
            "messages_meta": {
                "contentLength": ws.messages.iter().map(|m| m.content.len()).sum::<usize>(),
                "count": ws.messages.len(),
                "timestamp_last": ws.messages.last().map(|m| m.timestamp),
            },
            "closed_by_client": ws.closed_by_client,
            "close_code": ws.close_code,
            "close_reason": ws.close_reason,
            "timestamp_end": ws.timestamp_end,
        });
    }
    v
}

fn tcp_json(f: &TcpFlow, seq: u64, intercepted: bool, modified: bool) -> Value {
    let mut v = json!({
        "id": f.id.to_string(),
        "seq": seq,
        "type": "tcp",
        "intercepted": intercepted,
        "is_replay": null,
        "modified": modified,
        "marked": f.marked,
        "comment": f.comment,
        "timestamp_created": f.timestamp_created,
        "live": f.live,
        "client_conn": client(&f.client),
        "server_conn": f.server.as_deref().map(server),
        "messages_meta": {
            "contentLength": f.messages.iter().map(|m| m.content.len()).sum::<usize>(),
            "count": f.messages.len(),
            "timestamp_last": f.messages.last().map(|m| m.timestamp),
        },
    });
    if let Some(e) = &f.error {
        v["error"] = json!({"msg": e.msg, "timestamp": e.timestamp});
    }
    v
}

/// The messages of a WebSocket or TCP flow, as mitmweb's `messages/content/<view>.json`.
pub(crate) fn messages_json(flow: &Flow) -> Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match flow {
        Flow::Http(f) => Value::Array(
            f.websocket
                .iter()
                .flat_map(|w| &w.messages)
                .map(|m| {
                    json!({
                        "from_client": m.from_client,
                        "timestamp": m.timestamp,
                        "type": if m.is_text() { "text" } else { "binary" },
                        "dropped": m.dropped,
                        "text": text(&m.content),
                    })
                })
                .collect(),
        ),
        Flow::Tcp(f) => Value::Array(
            f.messages
                .iter()
                .map(|m| {
                    json!({
                        "from_client": m.from_client,
                        "timestamp": m.timestamp,
                        "text": text(&m.content),
                    })
                })
                .collect(),
        ),
    }
}
