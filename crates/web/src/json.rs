//! Flows as mitmweb's `flow_to_json` shapes them (field names kept so scripts written for
//! mitmweb's API carry over), without bodies, plus waylay's `seq` (the list position).

use std::fmt::Display;

use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeTuple, Serializer};
use serde_json::{Value, json};
use waylay_core::flow::{Client, FlowError, Message, Server};
use waylay_core::{Flow, Headers, HttpFlow, TcpFlow};

// The JSON is written straight from the flow by these borrowing `Serialize` shapes (no
// `serde_json::Value` tree in between): the browsers' updates serialise every flow, and
// building a `Value` map per flow and then printing it cost about twice as much.

/// A value written with its `Display` (ids, IP addresses).
struct Text<T>(T);

impl<T: Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `[ip, port]`.
struct Addr(std::net::SocketAddr);

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&Text(self.0.ip()))?;
        t.serialize_element(&self.0.port())?;
        t.end()
    }
}

/// `[[name, value], ...]`, values as (lossy) UTF-8.
struct HeadersJson<'a>(&'a Headers);

impl Serialize for HeadersJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for (k, v) in self.0.iter() {
            seq.serialize_element(&(k, String::from_utf8_lossy(v)))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ClientJson<'a> {
    id: Text<&'a waylay_core::flow::ConnectionId>,
    peername: Addr,
    sockname: Addr,
    tls_established: bool,
    sni: Option<&'a str>,
    cipher: Option<&'a str>,
    alpn: Option<&'a str>,
    tls_version: Option<&'a str>,
    timestamp_start: f64,
    timestamp_tls_setup: Option<f64>,
    timestamp_end: Option<f64>,
}

fn client(c: &Client) -> ClientJson<'_> {
    let tls = c.tls.as_ref();
    ClientJson {
        id: Text(&c.id),
        peername: Addr(c.peername),
        sockname: Addr(c.sockname),
        tls_established: c.tls_established(),
        sni: c.sni(),
        cipher: tls.and_then(|t| t.cipher.as_deref()),
        alpn: tls.and_then(|t| t.alpn.as_deref()),
        tls_version: tls.and_then(|t| t.version.as_deref()),
        timestamp_start: c.timestamp_start,
        timestamp_tls_setup: c.timestamp_tls_setup,
        timestamp_end: c.timestamp_end,
    }
}

#[derive(Serialize)]
struct ServerJson<'a> {
    id: Text<&'a waylay_core::flow::ConnectionId>,
    peername: Option<Addr>,
    sockname: Option<Addr>,
    address: (&'a str, u16),
    tls_established: bool,
    sni: Option<&'a str>,
    cipher: Option<&'a str>,
    alpn: Option<&'a str>,
    tls_version: Option<&'a str>,
    timestamp_start: Option<f64>,
    timestamp_tcp_setup: Option<f64>,
    timestamp_tls_setup: Option<f64>,
    timestamp_end: Option<f64>,
}

fn server(s: &Server) -> ServerJson<'_> {
    let tls = s.tls_info.as_ref();
    ServerJson {
        id: Text(&s.id),
        peername: s.peername.map(Addr),
        sockname: s.sockname.map(Addr),
        address: (&s.address.host, s.address.port),
        tls_established: s.tls && s.timestamp_tls_setup.is_some(),
        sni: s.sni.as_deref(),
        cipher: tls.and_then(|t| t.cipher.as_deref()),
        alpn: tls.and_then(|t| t.alpn.as_deref()),
        tls_version: tls.and_then(|t| t.version.as_deref()),
        timestamp_start: s.timestamp_start,
        timestamp_tcp_setup: s.timestamp_tcp_setup,
        timestamp_tls_setup: s.timestamp_tls_setup,
        timestamp_end: s.timestamp_end,
    }
}

/// `contentHash`: waylay gives the length, not a digest (cheap, and enough for the page to
/// tell two bodies apart when their sizes differ).
struct LenHash(usize);

impl Serialize for LenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("len-{}", self.0))
    }
}

/// Body facts of a message: `contentLength` (`None` when not held: streamed or not read).
/// `len` overrides the length when the body was dropped from memory but is known.
fn content_len(m: &Message, len: Option<usize>) -> Option<usize> {
    m.raw_content.as_ref().map(|b| b.len()).or(len)
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    msg: &'a str,
    timestamp: f64,
}

fn error(e: &FlowError) -> ErrorJson<'_> {
    ErrorJson {
        msg: &e.msg,
        timestamp: e.timestamp,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagesMeta {
    content_length: usize,
    count: usize,
    #[serde(rename = "timestamp_last")]
    timestamp_last: Option<f64>,
}

impl MessagesMeta {
    /// The meta of a WebSocket's or a TCP flow's `messages`, given each one's content
    /// length and timestamp.
    fn of<M>(messages: &[M], len: impl Fn(&M) -> usize, timestamp: impl Fn(&M) -> f64) -> Self {
        Self {
            content_length: messages.iter().map(len).sum(),
            count: messages.len(),
            timestamp_last: messages.last().map(timestamp),
        }
    }
}

/// The fields a request and a response share, after their own (`flatten`: written into the
/// same JSON object, in this order; serialising stays a walk over borrowed fields).
#[derive(Serialize)]
struct MessageJson<'a> {
    headers: HeadersJson<'a>,
    trailers: Option<HeadersJson<'a>>,
    #[serde(rename = "contentLength")]
    content_length: Option<usize>,
    #[serde(rename = "contentHash")]
    content_hash: Option<LenHash>,
    timestamp_start: f64,
    timestamp_end: Option<f64>,
}

/// The shared fields of `m`; `len` as in [`content_len`].
fn message(m: &Message, len: Option<usize>) -> MessageJson<'_> {
    let content_length = content_len(m, len);
    MessageJson {
        headers: HeadersJson(&m.headers),
        trailers: m.trailers.as_deref().map(HeadersJson),
        content_length,
        content_hash: content_length.map(LenHash),
        timestamp_start: m.timestamp_start,
        timestamp_end: m.timestamp_end,
    }
}

#[derive(Serialize)]
struct RequestJson<'a> {
    method: &'a str,
    scheme: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    http_version: &'static str,
    #[serde(flatten)]
    message: MessageJson<'a>,
    pretty_host: String,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    http_version: &'static str,
    status_code: u16,
    reason: &'a str,
    #[serde(flatten)]
    message: MessageJson<'a>,
}

#[derive(Serialize)]
struct WebSocketJson<'a> {
    messages_meta: MessagesMeta,
    closed_by_client: Option<bool>,
    close_code: Option<u16>,
    close_reason: &'a str,
    timestamp_end: Option<f64>,
}

#[derive(Serialize)]
struct HttpJson<'a> {
    id: Text<waylay_core::FlowId>,
    seq: u64,
    #[serde(rename = "type")]
    ty: &'static str,
    intercepted: bool,
    is_replay: Option<&'a str>,
    modified: bool,
    marked: &'a str,
    comment: &'a str,
    /// The breakpoint rules that edited it (waylay's own field).
    breakpoint_rule: Option<&'a serde_json::Value>,
    timestamp_created: f64,
    live: bool,
    client_conn: ClientJson<'a>,
    server_conn: Option<ServerJson<'a>>,
    request: RequestJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket: Option<WebSocketJson<'a>>,
}

#[derive(Serialize)]
struct TcpJson<'a> {
    id: Text<waylay_core::FlowId>,
    seq: u64,
    #[serde(rename = "type")]
    ty: &'static str,
    intercepted: bool,
    is_replay: Option<&'a str>,
    modified: bool,
    marked: &'a str,
    comment: &'a str,
    timestamp_created: f64,
    live: bool,
    client_conn: ClientJson<'a>,
    server_conn: Option<ServerJson<'a>>,
    messages_meta: MessagesMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
}

/// A flow's list and detail JSON, ready to serialise.
#[derive(Serialize)]
#[serde(untagged)]
enum FlowJson<'a> {
    Http(Box<HttpJson<'a>>),
    Tcp(Box<TcpJson<'a>>),
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
    serde_json::to_value(flow_shape(flow, seq, intercepted, modified, lens)).unwrap_or(Value::Null)
}

/// The same JSON as [`flow_json`], written straight into `out`.
pub(crate) fn write_flow_json(
    out: &mut Vec<u8>,
    flow: &Flow,
    seq: u64,
    intercepted: bool,
    modified: bool,
    lens: BodyLens,
) {
    // Writing into a `Vec` fails only if serialising does, and these shapes cannot fail.
    let _ = serde_json::to_writer(out, &flow_shape(flow, seq, intercepted, modified, lens));
}

fn flow_shape(
    flow: &Flow,
    seq: u64,
    intercepted: bool,
    modified: bool,
    lens: BodyLens,
) -> FlowJson<'_> {
    match flow {
        Flow::Http(f) => FlowJson::Http(Box::new(http_json(f, seq, intercepted, modified, lens))),
        Flow::Tcp(f) => FlowJson::Tcp(Box::new(tcp_json(f, seq, intercepted, modified))),
    }
}

/// Body lengths remembered for a flow whose bodies are not in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BodyLens {
    pub(crate) request: Option<usize>,
    pub(crate) response: Option<usize>,
}

fn http_json(
    f: &HttpFlow,
    seq: u64,
    intercepted: bool,
    modified: bool,
    lens: BodyLens,
) -> HttpJson<'_> {
    let q = &f.request;
    HttpJson {
        id: Text(f.id),
        seq,
        ty: "http",
        intercepted,
        is_replay: f.is_replay.as_deref(),
        modified,
        marked: &f.marked,
        comment: &f.comment,
        breakpoint_rule: f.metadata.get(waylay_addons::BREAKPOINT_METADATA),
        timestamp_created: f.timestamp_created,
        live: f.live,
        client_conn: client(&f.client),
        server_conn: f.server.as_deref().map(server),
        request: RequestJson {
            method: &q.method,
            scheme: &q.scheme,
            host: &q.host,
            port: q.port,
            path: &q.path,
            http_version: q.http_version.as_str(),
            message: message(q, lens.request),
            pretty_host: q.pretty_host(),
        },
        error: f.error.as_ref().map(error),
        response: f.response.as_ref().map(|s| ResponseJson {
            http_version: s.http_version.as_str(),
            status_code: s.status_code,
            reason: &s.reason,
            message: message(s, lens.response),
        }),
        websocket: f.websocket.as_ref().map(|ws| WebSocketJson {
            messages_meta: MessagesMeta::of(&ws.messages, |m| m.content.len(), |m| m.timestamp),
            closed_by_client: ws.closed_by_client,
            close_code: ws.close_code,
            close_reason: &ws.close_reason,
            timestamp_end: ws.timestamp_end,
        }),
    }
}

fn tcp_json(f: &TcpFlow, seq: u64, intercepted: bool, modified: bool) -> TcpJson<'_> {
    TcpJson {
        id: Text(f.id),
        seq,
        ty: "tcp",
        intercepted,
        is_replay: None,
        modified,
        marked: &f.marked,
        comment: &f.comment,
        timestamp_created: f.timestamp_created,
        live: f.live,
        client_conn: client(&f.client),
        server_conn: f.server.as_deref().map(server),
        messages_meta: MessagesMeta::of(&f.messages, |m| m.content.len(), |m| m.timestamp),
        error: f.error.as_ref().map(error),
    }
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
