//! The mapping between waylay's flows and mitmproxy's flow state (format version 21), the
//! dictionary `Flow.get_state()` returns and `Flow.from_state()` takes.
//!
//! mitmproxy refuses unknown keys in its state, so nothing of waylay's own is added there.
//! What mitmproxy has and waylay lacks gets mitmproxy's defaults when written (`cipher_list`,
//! `mitmcert`, `via`, `transport_protocol`, `backup`) and is ignored when read. What waylay has
//! and mitmproxy lacks is dropped: `live` (a flow read from a file is never live), a
//! message's `stream` flag (a body that was not stored is written as `None`, and a `None`
//! body reads back as streamed), a TCP message's `injected` flag, and the server's TLS SNI
//! when it differs from the SNI of the connection (mitmproxy keeps one).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

use super::tnetstring::Value;
use crate::flow::{
    Address, Client, ConnectionId, Flow, FlowError, FlowId, Headers, HttpFlow, HttpVersion,
    Message, Metadata, Request, Response, Server, TcpFlow, TcpMessage, TlsInfo, WebSocketData,
    WebSocketMessage, WebSocketMessageKind,
};

/// The flow format version waylay writes: mitmproxy 12's.
pub const VERSION: i64 = 21;

fn s(v: &str) -> Value {
    Value::str(v)
}
fn b(v: impl Into<Bytes>) -> Value {
    Value::Bytes(v.into())
}
fn dict(items: Vec<(&str, Value)>) -> Value {
    Value::Dict(items.into_iter().map(|(k, v)| (s(k), v)).collect())
}

// ---------------------------------------------------------------------------------------
// waylay -> state

/// The state mitmproxy 12 would write for `flow`.
pub fn to_state(flow: &Flow) -> Value {
    match flow {
        Flow::Http(f) => http_to_state(f),
        Flow::Tcp(f) => tcp_to_state(f),
    }
}

/// What HTTP and TCP flows share.
struct Common<'a> {
    id: FlowId,
    ty: &'a str,
    error: Option<&'a FlowError>,
    client: &'a Client,
    server: Option<&'a Server>,
    marked: &'a str,
    comment: &'a str,
    metadata: &'a Metadata,
    is_replay: Option<&'a str>,
    timestamp_created: f64,
}

fn common(c: Common<'_>) -> Vec<(&'static str, Value)> {
    let Common {
        id,
        ty,
        error,
        client,
        server,
        marked,
        comment,
        metadata,
        is_replay,
        timestamp_created,
    } = c;
    vec![
        ("id", s(&id.to_string())),
        ("error", error.map_or(Value::Null, error_to_state)),
        ("client_conn", client_to_state(client)),
        ("server_conn", server_to_state(server)),
        ("type", s(ty)),
        ("intercepted", Value::Bool(false)),
        ("is_replay", Value::opt_str(is_replay)),
        ("marked", s(marked)),
        (
            "metadata",
            json_to_value(&serde_json::Value::Object(metadata.clone())),
        ),
        ("comment", s(comment)),
        ("timestamp_created", Value::Float(timestamp_created)),
        ("version", Value::Int(VERSION)),
        ("backup", Value::Null),
    ]
}

fn http_to_state(f: &HttpFlow) -> Value {
    let mut items = common(Common {
        id: f.id,
        ty: "http",
        error: f.error.as_ref(),
        client: &f.client,
        server: f.server.as_deref(),
        marked: &f.marked,
        comment: &f.comment,
        metadata: &f.metadata,
        is_replay: f.is_replay.as_deref(),
        timestamp_created: f.timestamp_created,
    });
    items.push(("request", request_to_state(&f.request)));
    items.push((
        "response",
        f.response.as_ref().map_or(Value::Null, response_to_state),
    ));
    items.push((
        "websocket",
        f.websocket.as_ref().map_or(Value::Null, websocket_to_state),
    ));
    dict(items)
}

fn tcp_to_state(f: &TcpFlow) -> Value {
    let mut items = common(Common {
        id: f.id,
        ty: "tcp",
        error: f.error.as_ref(),
        client: &f.client,
        server: f.server.as_deref(),
        marked: &f.marked,
        comment: &f.comment,
        metadata: &f.metadata,
        is_replay: None,
        timestamp_created: f.timestamp_created,
    });
    items.push((
        "messages",
        Value::List(
            f.messages
                .iter()
                .map(|m| {
                    Value::List(vec![
                        Value::Bool(m.from_client),
                        b(m.content.clone()),
                        Value::Float(m.timestamp),
                    ])
                })
                .collect(),
        ),
    ));
    dict(items)
}

fn error_to_state(e: &FlowError) -> Value {
    dict(vec![
        ("msg", s(&e.msg)),
        ("timestamp", Value::Float(e.timestamp)),
    ])
}

fn headers_to_state(h: &Headers) -> Value {
    Value::List(
        h.fields()
            .iter()
            .map(|(n, v)| Value::List(vec![b(Bytes::copy_from_slice(n.as_bytes())), b(v.clone())]))
            .collect(),
    )
}

fn message_items(m: &Message) -> Vec<(&'static str, Value)> {
    vec![
        ("http_version", b(m.http_version.as_str().as_bytes())),
        ("headers", headers_to_state(&m.headers)),
        ("content", content(m)),
        (
            "trailers",
            m.trailers.as_deref().map_or(Value::Null, headers_to_state),
        ),
        ("timestamp_start", Value::Float(m.timestamp_start)),
        ("timestamp_end", Value::opt_float(m.timestamp_end)),
    ]
}

/// The body as stored: in memory, or a complete stored streamed body read back (a body that
/// could not be read is written as missing, as one that was not stored).
fn content(m: &Message) -> Value {
    match (&m.raw_content, &m.stored_body) {
        (Some(c), _) => b(c.clone()),
        (None, Some(s)) if s.is_complete() => s.read_all().map_or(Value::Null, b),
        (None, _) => Value::Null,
    }
}

fn request_to_state(r: &Request) -> Value {
    let mut items = vec![
        ("host", s(&r.host)),
        ("port", Value::Int(i64::from(r.port))),
        ("method", b(r.method.as_bytes().to_vec())),
        ("scheme", b(r.scheme.as_bytes().to_vec())),
        ("authority", b(r.authority.as_bytes().to_vec())),
        ("path", b(r.path.as_bytes().to_vec())),
    ];
    items.extend(message_items(&r.message));
    dict(items)
}

fn response_to_state(r: &Response) -> Value {
    let mut items = vec![
        ("status_code", Value::Int(i64::from(r.status_code))),
        ("reason", b(r.reason.as_bytes().to_vec())),
    ];
    items.extend(message_items(&r.message));
    dict(items)
}

fn websocket_to_state(w: &WebSocketData) -> Value {
    dict(vec![
        (
            "messages",
            Value::List(
                w.messages
                    .iter()
                    .map(|m| {
                        Value::List(vec![
                            Value::Int(match m.kind {
                                WebSocketMessageKind::Text => 1,
                                WebSocketMessageKind::Binary => 2,
                            }),
                            Value::Bool(m.from_client),
                            b(m.content.clone()),
                            Value::Float(m.timestamp),
                            Value::Bool(m.dropped),
                            Value::Bool(m.injected),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "closed_by_client",
            w.closed_by_client.map_or(Value::Null, Value::Bool),
        ),
        (
            "close_code",
            w.close_code
                .map_or(Value::Null, |c| Value::Int(i64::from(c))),
        ),
        ("close_reason", s(&w.close_reason)),
        ("timestamp_end", Value::opt_float(w.timestamp_end)),
    ])
}

fn addr_to_state(a: SocketAddr) -> Value {
    Value::List(vec![
        s(&a.ip().to_string()),
        Value::Int(i64::from(a.port())),
    ])
}

fn tls_items(tls: Option<&TlsInfo>) -> Vec<(&'static str, Value)> {
    let t = tls.cloned().unwrap_or_default();
    vec![
        ("alpn", t.alpn.map_or(Value::Null, |a| b(a.into_bytes()))),
        (
            "alpn_offers",
            Value::List(
                t.alpn_offers
                    .into_iter()
                    .map(|a| b(a.into_bytes()))
                    .collect(),
            ),
        ),
        ("cipher", Value::opt_str(t.cipher.as_deref())),
        ("cipher_list", Value::List(Vec::new())),
        ("tls_version", Value::opt_str(t.version.as_deref())),
        (
            "certificate_list",
            Value::List(
                t.certificate_list
                    .iter()
                    .map(|der| b(der_to_pem(der)))
                    .collect(),
            ),
        ),
    ]
}

fn client_to_state(c: &Client) -> Value {
    let mut items = vec![
        ("id", s(&c.id.to_string())),
        ("peername", addr_to_state(c.peername)),
        ("sockname", addr_to_state(c.sockname)),
        ("transport_protocol", s("tcp")),
        ("error", Value::opt_str(c.error.as_deref())),
        ("tls", Value::Bool(c.tls.is_some())),
        ("sni", Value::opt_str(c.sni())),
        ("timestamp_start", Value::Float(c.timestamp_start)),
        ("timestamp_end", Value::opt_float(c.timestamp_end)),
        (
            "timestamp_tls_setup",
            Value::opt_float(c.timestamp_tls_setup),
        ),
        ("mitmcert", Value::Null),
        ("proxy_mode", s(&c.proxy_mode)),
    ];
    items.extend(tls_items(c.tls.as_ref()));
    dict(items)
}

fn server_to_state(srv: Option<&Server>) -> Value {
    let Some(srv) = srv else {
        // mitmproxy always has a server connection; an unconnected one has no address.
        let mut items = vec![
            ("id", s(&ConnectionId::new().to_string())),
            ("peername", Value::Null),
            ("sockname", Value::Null),
            ("transport_protocol", s("tcp")),
            ("error", Value::Null),
            ("tls", Value::Bool(false)),
            ("sni", Value::Null),
            ("timestamp_start", Value::Null),
            ("timestamp_end", Value::Null),
            ("timestamp_tls_setup", Value::Null),
            ("address", Value::Null),
            ("timestamp_tcp_setup", Value::Null),
            ("via", Value::Null),
        ];
        items.extend(tls_items(None));
        return dict(items);
    };
    let sni = srv
        .sni
        .as_deref()
        .or_else(|| srv.tls_info.as_ref().and_then(|t| t.sni.as_deref()));
    let mut items = vec![
        ("id", s(&srv.id.to_string())),
        ("peername", srv.peername.map_or(Value::Null, addr_to_state)),
        ("sockname", srv.sockname.map_or(Value::Null, addr_to_state)),
        ("transport_protocol", s("tcp")),
        ("error", Value::opt_str(srv.error.as_deref())),
        ("tls", Value::Bool(srv.tls)),
        ("sni", Value::opt_str(sni)),
        ("timestamp_start", Value::opt_float(srv.timestamp_start)),
        ("timestamp_end", Value::opt_float(srv.timestamp_end)),
        (
            "timestamp_tls_setup",
            Value::opt_float(srv.timestamp_tls_setup),
        ),
        (
            "address",
            Value::List(vec![
                s(&srv.address.host),
                Value::Int(i64::from(srv.address.port)),
            ]),
        ),
        (
            "timestamp_tcp_setup",
            Value::opt_float(srv.timestamp_tcp_setup),
        ),
        ("via", Value::Null),
    ];
    items.extend(tls_items(srv.tls_info.as_ref()));
    dict(items)
}

/// A DER certificate as PEM, as mitmproxy stores certificates.
pub(super) fn der_to_pem(der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for chunk in b64.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    out
}

/// The DER of the first PEM certificate in `pem`.
pub(super) fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "certificate is not PEM text")?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err("certificate is not PEM".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("certificate PEM is not base64: {e}"))
}

/// Metadata (JSON) as tnetstring values.
pub(super) fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(x) => Value::Bool(*x),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(x) => s(x),
        serde_json::Value::Array(a) => Value::List(a.iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => {
            Value::Dict(o.iter().map(|(k, v)| (s(k), json_to_value(v))).collect())
        }
    }
}

// ---------------------------------------------------------------------------------------
// state -> waylay

/// A state that does not describe a flow: the dotted path of the field and what is wrong.
type R<T> = Result<T, String>;

fn field<'a>(d: &'a Value, key: &str, path: &str) -> R<&'a Value> {
    d.get(key).ok_or_else(|| format!("{path}.{key} is missing"))
}

fn opt_field<'a>(d: &'a Value, key: &str) -> Option<&'a Value> {
    d.get(key).filter(|v| **v != Value::Null)
}

fn to_bytes(v: &Value, what: &str) -> R<Bytes> {
    match v {
        Value::Bytes(x) => Ok(x.clone()),
        Value::Str(x) => Ok(Bytes::copy_from_slice(x.as_bytes())),
        other => Err(format!("{what}: expected bytes, got {}", kind(other))),
    }
}

fn to_string(v: &Value, what: &str) -> R<String> {
    match v {
        Value::Str(x) => Ok(x.clone()),
        // mitmproxy keeps methods, paths and the like as bytes; they are text in waylay.
        Value::Bytes(x) => Ok(String::from_utf8_lossy(x).into_owned()),
        other => Err(format!("{what}: expected a string, got {}", kind(other))),
    }
}

fn to_f64(v: &Value, what: &str) -> R<f64> {
    match v {
        Value::Float(x) => Ok(*x),
        Value::Int(x) => Ok(*x as f64),
        other => Err(format!("{what}: expected a number, got {}", kind(other))),
    }
}

fn to_int(v: &Value, what: &str) -> R<i64> {
    match v {
        Value::Int(x) => Ok(*x),
        other => Err(format!("{what}: expected an integer, got {}", kind(other))),
    }
}

fn to_bool(v: &Value, what: &str) -> R<bool> {
    match v {
        Value::Bool(x) => Ok(*x),
        other => Err(format!("{what}: expected a boolean, got {}", kind(other))),
    }
}

fn to_list<'a>(v: &'a Value, what: &str) -> R<&'a [Value]> {
    match v {
        Value::List(x) => Ok(x),
        other => Err(format!("{what}: expected a list, got {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Bytes(_) => "bytes",
        Value::Str(_) => "a string",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dictionary",
    }
}

fn opt_string(d: &Value, key: &str, path: &str) -> R<Option<String>> {
    opt_field(d, key)
        .map(|v| to_string(v, &format!("{path}.{key}")))
        .transpose()
}

fn opt_f64(d: &Value, key: &str, path: &str) -> R<Option<f64>> {
    opt_field(d, key)
        .map(|v| to_f64(v, &format!("{path}.{key}")))
        .transpose()
}

fn f64_field(d: &Value, key: &str, path: &str) -> R<f64> {
    to_f64(field(d, key, path)?, &format!("{path}.{key}"))
}

fn port(v: &Value, what: &str) -> R<u16> {
    let p = to_int(v, what)?;
    u16::try_from(p).map_err(|_| format!("{what}: {p} is not a port"))
}

/// `(host, port[, flowinfo, scope])` as a socket address; a host that is not an IP
/// literal (mitmproxy's test flows use `("", 0)` or names) gives `None`.
fn socket_addr(v: &Value, what: &str) -> R<Option<SocketAddr>> {
    if *v == Value::Null {
        return Ok(None);
    }
    let l = to_list(v, what)?;
    if l.len() < 2 {
        return Err(format!("{what}: expected (host, port)"));
    }
    let host = to_string(&l[0], what)?;
    let port = port(&l[1], what)?;
    Ok(host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port)))
}

fn id_of<T: std::str::FromStr>(d: &Value, path: &str, fresh: impl FnOnce() -> T) -> R<T> {
    // An id that is not UUID-shaped (hand-made files) gets a fresh one rather than failing.
    Ok(match opt_field(d, "id") {
        Some(v) => to_string(v, &format!("{path}.id"))?
            .parse()
            .unwrap_or_else(|_| fresh()),
        None => fresh(),
    })
}

fn headers_from(v: &Value, what: &str) -> R<Headers> {
    let mut h = Headers::new();
    for pair in to_list(v, what)? {
        let p = to_list(pair, what)?;
        if p.len() != 2 {
            return Err(format!("{what}: expected (name, value) pairs"));
        }
        let name = to_string(&p[0], what)?;
        h.append(name, to_bytes(&p[1], what)?);
    }
    Ok(h)
}

fn http_version(v: &Value, what: &str) -> R<HttpVersion> {
    let t = to_string(v, what)?;
    match t.as_str() {
        "HTTP/1.0" => Ok(HttpVersion::Http10),
        "HTTP/1.1" | "" => Ok(HttpVersion::Http11),
        "HTTP/2.0" | "HTTP/2" => Ok(HttpVersion::Http2),
        "HTTP/3" | "HTTP/3.0" => Ok(HttpVersion::Http3),
        other => Err(format!("{what}: unsupported HTTP version {other:?}")),
    }
}

fn message_from(d: &Value, path: &str) -> R<Message> {
    let mut m = Message::new(
        http_version(
            field(d, "http_version", path)?,
            &format!("{path}.http_version"),
        )?,
        headers_from(field(d, "headers", path)?, &format!("{path}.headers"))?,
    );
    m.raw_content = opt_field(d, "content")
        .map(|v| to_bytes(v, &format!("{path}.content")))
        .transpose()?;
    m.stream = m.raw_content.is_none();
    m.trailers = opt_field(d, "trailers")
        .map(|v| headers_from(v, &format!("{path}.trailers")).map(Box::new))
        .transpose()?;
    m.timestamp_start = opt_f64(d, "timestamp_start", path)?.unwrap_or(0.0);
    m.timestamp_end = opt_f64(d, "timestamp_end", path)?;
    Ok(m)
}

fn request_from(d: &Value) -> R<Request> {
    let p = "request";
    Ok(Request {
        method: to_string(field(d, "method", p)?, "request.method")?.into(),
        scheme: to_string(field(d, "scheme", p)?, "request.scheme")?.into(),
        authority: opt_string(d, "authority", p)?.unwrap_or_default().into(),
        host: to_string(field(d, "host", p)?, "request.host")?.into(),
        port: port(field(d, "port", p)?, "request.port")?,
        path: to_string(field(d, "path", p)?, "request.path")?.into(),
        message: message_from(d, p)?,
    })
}

fn response_from(d: &Value) -> R<Response> {
    let p = "response";
    let code = to_int(field(d, "status_code", p)?, "response.status_code")?;
    Ok(Response {
        status_code: u16::try_from(code)
            .map_err(|_| format!("response.status_code: {code} is not a status"))?,
        reason: opt_string(d, "reason", p)?.unwrap_or_default().into(),
        message: message_from(d, p)?,
    })
}

fn websocket_from(d: &Value) -> R<WebSocketData> {
    let p = "websocket";
    let mut w = WebSocketData::default();
    for m in to_list(field(d, "messages", p)?, "websocket.messages")? {
        let what = "websocket.messages[]";
        let t = to_list(m, what)?;
        if t.len() < 4 {
            return Err(format!(
                "{what}: expected (type, from_client, content, timestamp, ...)"
            ));
        }
        let kind = if to_int(&t[0], what)? == 1 {
            WebSocketMessageKind::Text
        } else {
            WebSocketMessageKind::Binary
        };
        let mut msg = WebSocketMessage::new(kind, to_bool(&t[1], what)?, to_bytes(&t[2], what)?);
        msg.timestamp = to_f64(&t[3], what)?;
        msg.dropped = t
            .get(4)
            .map(|v| to_bool(v, what))
            .transpose()?
            .unwrap_or(false);
        msg.injected = t
            .get(5)
            .map(|v| to_bool(v, what))
            .transpose()?
            .unwrap_or(false);
        w.messages.push(msg);
    }
    w.closed_by_client = opt_field(d, "closed_by_client")
        .map(|v| to_bool(v, "websocket.closed_by_client"))
        .transpose()?;
    w.close_code = opt_field(d, "close_code")
        .map(|v| port(v, "websocket.close_code"))
        .transpose()?;
    w.close_reason = opt_string(d, "close_reason", p)?.unwrap_or_default();
    w.timestamp_end = opt_f64(d, "timestamp_end", p)?;
    Ok(w)
}

fn tls_from(d: &Value, path: &str, sni: Option<String>) -> R<TlsInfo> {
    let mut certificate_list = Vec::new();
    if let Some(l) = opt_field(d, "certificate_list") {
        for c in to_list(l, &format!("{path}.certificate_list"))? {
            let pem = to_bytes(c, &format!("{path}.certificate_list"))?;
            certificate_list.push(Bytes::from(
                pem_to_der(&pem).map_err(|e| format!("{path}.certificate_list: {e}"))?,
            ));
        }
    }
    let mut alpn_offers = Vec::new();
    if let Some(l) = opt_field(d, "alpn_offers") {
        for a in to_list(l, &format!("{path}.alpn_offers"))? {
            alpn_offers.push(to_string(a, &format!("{path}.alpn_offers"))?);
        }
    }
    Ok(TlsInfo {
        sni,
        alpn: opt_string(d, "alpn", path)?,
        alpn_offers,
        version: opt_string(d, "tls_version", path)?,
        cipher: opt_string(d, "cipher", path)?,
        certificate_list,
    })
}

/// Whether a connection's state says TLS was established (or at least negotiated).
fn has_tls(d: &Value) -> bool {
    matches!(d.get("tls"), Some(Value::Bool(true)))
        || opt_field(d, "timestamp_tls_setup").is_some()
        || opt_field(d, "tls_version").is_some()
}

fn client_from(d: &Value) -> R<Client> {
    let p = "client_conn";
    let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let peername = opt_field(d, "peername")
        .map(|v| socket_addr(v, "client_conn.peername"))
        .transpose()?
        .flatten()
        .unwrap_or(unspecified);
    let sockname = opt_field(d, "sockname")
        .map(|v| socket_addr(v, "client_conn.sockname"))
        .transpose()?
        .flatten()
        .unwrap_or(unspecified);
    let mut c = Client::new(peername, sockname);
    c.id = id_of(d, p, ConnectionId::new)?;
    c.proxy_mode = opt_string(d, "proxy_mode", p)?.unwrap_or_else(|| "regular".into());
    c.tls = if has_tls(d) {
        Some(tls_from(d, p, opt_string(d, "sni", p)?)?)
    } else {
        None
    };
    c.timestamp_start = opt_f64(d, "timestamp_start", p)?.unwrap_or(0.0);
    c.timestamp_tls_setup = opt_f64(d, "timestamp_tls_setup", p)?;
    c.timestamp_end = opt_f64(d, "timestamp_end", p)?;
    c.error = opt_string(d, "error", p)?;
    Ok(c)
}

fn server_from(d: &Value) -> R<Option<Server>> {
    let p = "server_conn";
    let Some(addr) = opt_field(d, "address") else {
        return Ok(None);
    };
    let a = to_list(addr, "server_conn.address")?;
    if a.len() < 2 {
        return Err("server_conn.address: expected (host, port)".into());
    }
    let mut srv = Server::new(Address::new(
        to_string(&a[0], "server_conn.address")?,
        port(&a[1], "server_conn.address")?,
    ));
    srv.id = id_of(d, p, ConnectionId::new)?;
    srv.peername = opt_field(d, "peername")
        .map(|v| socket_addr(v, "server_conn.peername"))
        .transpose()?
        .flatten();
    srv.sockname = opt_field(d, "sockname")
        .map(|v| socket_addr(v, "server_conn.sockname"))
        .transpose()?
        .flatten();
    srv.tls = matches!(d.get("tls"), Some(Value::Bool(true)));
    srv.sni = opt_string(d, "sni", p)?;
    srv.tls_info =
        if opt_field(d, "timestamp_tls_setup").is_some() || opt_field(d, "tls_version").is_some() {
            Some(tls_from(d, p, srv.sni.clone())?)
        } else {
            None
        };
    srv.timestamp_start = opt_f64(d, "timestamp_start", p)?;
    srv.timestamp_tcp_setup = opt_f64(d, "timestamp_tcp_setup", p)?;
    srv.timestamp_tls_setup = opt_f64(d, "timestamp_tls_setup", p)?;
    srv.timestamp_end = opt_f64(d, "timestamp_end", p)?;
    srv.error = opt_string(d, "error", p)?;
    Ok(Some(srv))
}

fn error_from(d: &Value) -> R<Option<FlowError>> {
    opt_field(d, "error")
        .map(|e| {
            Ok(FlowError {
                msg: to_string(field(e, "msg", "error")?, "error.msg")?,
                timestamp: opt_f64(e, "timestamp", "error")?.unwrap_or(0.0),
            })
        })
        .transpose()
}

/// Tnetstring values as JSON for metadata (bytes become text, lossily).
pub(super) fn value_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(x) => (*x).into(),
        Value::Int(x) => (*x).into(),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Bytes(x) => String::from_utf8_lossy(x).into_owned().into(),
        Value::Str(x) => x.clone().into(),
        Value::List(l) => l.iter().map(value_to_json).collect(),
        Value::Dict(items) => serde_json::Value::Object(
            items
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Str(x) => x.clone(),
                        Value::Bytes(x) => String::from_utf8_lossy(x).into_owned(),
                        other => value_to_json(other).to_string(),
                    };
                    (key, value_to_json(v))
                })
                .collect(),
        ),
    }
}

fn metadata_from(d: &Value) -> Metadata {
    match opt_field(d, "metadata").map(value_to_json) {
        Some(serde_json::Value::Object(m)) => m,
        _ => Metadata::new(),
    }
}

/// A flow from a version-21 state.
pub fn from_state(d: &Value) -> R<Flow> {
    if !matches!(d, Value::Dict(_)) {
        return Err(format!("a flow must be a dictionary, got {}", kind(d)));
    }
    let ty = to_string(field(d, "type", "flow")?, "flow.type")?;
    let client = Arc::new(client_from(field(d, "client_conn", "flow")?)?);
    let server = match opt_field(d, "server_conn") {
        Some(sv) => server_from(sv)?.map(Arc::new),
        None => None,
    };
    let id = id_of(d, "flow", FlowId::new)?;
    let marked = match opt_field(d, "marked") {
        Some(Value::Bool(true)) => ":default:".to_owned(),
        Some(Value::Bool(false)) | None => String::new(),
        Some(v) => to_string(v, "flow.marked")?,
    };
    let comment = opt_string(d, "comment", "flow")?.unwrap_or_default();
    let metadata = metadata_from(d);
    let error = error_from(d)?;
    match ty.as_str() {
        "http" => {
            let request = request_from(field(d, "request", "flow")?)?;
            let mut f = HttpFlow::new(client, request);
            f.id = id;
            f.server = server;
            f.response = opt_field(d, "response").map(response_from).transpose()?;
            f.websocket = opt_field(d, "websocket").map(websocket_from).transpose()?;
            f.error = error;
            f.marked = marked;
            f.comment = comment;
            f.metadata = metadata;
            f.live = false;
            f.is_replay = opt_string(d, "is_replay", "flow")?;
            f.timestamp_created =
                opt_f64(d, "timestamp_created", "flow")?.unwrap_or(f.request.timestamp_start);
            Ok(Flow::Http(Box::new(f)))
        }
        "tcp" => {
            let mut f = TcpFlow::new(client, server);
            f.id = id;
            for m in to_list(field(d, "messages", "flow")?, "flow.messages")? {
                let what = "flow.messages[]";
                let t = to_list(m, what)?;
                if t.len() < 3 {
                    return Err(format!(
                        "{what}: expected (from_client, content, timestamp)"
                    ));
                }
                let mut msg = TcpMessage::new(to_bool(&t[0], what)?, to_bytes(&t[1], what)?);
                msg.timestamp = to_f64(&t[2], what)?;
                f.messages.push(msg);
            }
            f.error = error;
            f.marked = marked;
            f.comment = comment;
            f.metadata = metadata;
            f.live = false;
            f.timestamp_created =
                f64_field(d, "timestamp_created", "flow").unwrap_or(f.client.timestamp_start);
            Ok(Flow::Tcp(Box::new(f)))
        }
        other => Err(format!(
            "flow type {other:?} is not supported by waylay (only http and tcp)"
        )),
    }
}
