//! Flows encoded as tnetstrings straight from the flow, with no value tree in between: the
//! bytes are those of [`to_state`](super::to_state)`(flow).encode()` (a test holds them equal),
//! at a fraction of the cost (no allocation per key or value).
//!
//! A tnetstring container starts with the length of its payload, so the flow is walked twice
//! by the same code ([`flow`]): once by a [`Sizer`], which records every container's payload
//! length in walk order, then by an [`Emitter`], which writes each container's length from
//! that record before its items.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::state::{VERSION, der_to_pem};
use crate::flow::{
    Client, ConnectionId, Flow, FlowError, Headers, HttpFlow, Message, Request, Response, Server,
    StoredBody, TcpFlow, TlsInfo, WebSocketData, WebSocketMessageKind,
};

/// One walk over a flow: the values in encoding order.
trait Out {
    /// Raw bytes (`,`).
    fn bytes(&mut self, b: &[u8]);
    /// A UTF-8 string (`;`).
    fn str(&mut self, s: &str);
    /// An integer (`#`).
    fn int(&mut self, i: i64);
    /// A float (`^`).
    fn float(&mut self, f: f64);
    /// A boolean (`!`).
    fn bool(&mut self, b: bool);
    /// Null (`~`).
    fn null(&mut self);
    /// A streamed body stored on disk: its bytes if it is complete, else null. The first
    /// walk decides, once, for both.
    fn stored(&mut self, b: &StoredBody);
    /// Starts a list or dictionary.
    fn open(&mut self);
    /// Ends the innermost container with its type byte (`]` or `}`).
    fn close(&mut self, tag: u8);
}

/// Short text (ids, addresses, floats) formatted on the stack.
struct Stack {
    buf: [u8; 64],
    len: usize,
}

impl Stack {
    fn new() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, and a write that does not fit fails as a
        // whole, so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `value` formatted with `Display` on the stack; `None` when it is longer than 64 bytes.
fn stack_fmt(value: impl std::fmt::Display) -> Option<Stack> {
    let mut s = Stack::new();
    write!(s, "{value}").ok().map(|()| s)
}

/// A string value from anything `Display`, without a heap allocation when it is short.
fn display<O: Out>(o: &mut O, value: impl std::fmt::Display) {
    match stack_fmt(&value) {
        Some(s) => o.str(s.as_str()),
        None => o.str(&value.to_string()),
    }
}

/// Floats as Python's `repr` parses them back (the same text as the value tree writes).
fn float_text(f: f64) -> Stack {
    let mut s = Stack::new();
    let _ = if f.is_nan() {
        s.write_str("nan")
    } else if f.is_infinite() {
        s.write_str(if f > 0.0 { "inf" } else { "-inf" })
    } else {
        // The shortest round-trip form of an f64 is at most 24 characters.
        write!(s, "{f:?}")
    };
    s
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The first walk: every container's payload length, in the order the containers open.
/// Kept by the writer between flows so its vectors are allocated once.
#[derive(Debug, Default)]
pub(super) struct Sizer {
    lens: Vec<usize>,
    /// The open containers: their slot in `lens` and the payload length of their parent so
    /// far.
    open: Vec<(usize, usize)>,
    /// The payload length of the innermost open container so far.
    acc: usize,
    /// Each stored body met: its length when it is written, `None` when it is not (yet)
    /// complete.
    stored: Vec<Option<u64>>,
}

impl Sizer {
    fn leaf(&mut self, payload: usize) {
        self.acc += digits(payload) + payload + 2;
    }
}

impl Out for Sizer {
    fn bytes(&mut self, b: &[u8]) {
        self.leaf(b.len());
    }
    fn str(&mut self, s: &str) {
        self.leaf(s.len());
    }
    fn int(&mut self, i: i64) {
        let n = usize::from(i < 0) + digits_u64(i.unsigned_abs());
        self.leaf(n);
    }
    fn float(&mut self, f: f64) {
        self.leaf(float_text(f).len);
    }
    fn bool(&mut self, b: bool) {
        self.leaf(if b { 4 } else { 5 });
    }
    fn null(&mut self) {
        self.leaf(0);
    }
    fn stored(&mut self, b: &StoredBody) {
        let len = b.is_complete().then(|| b.len());
        match len.and_then(|n| usize::try_from(n).ok()) {
            Some(n) => self.leaf(n),
            None => self.leaf(0),
        }
        self.stored.push(len);
    }
    fn open(&mut self) {
        self.open.push((self.lens.len(), self.acc));
        self.lens.push(0);
        self.acc = 0;
    }
    fn close(&mut self, _tag: u8) {
        let Some((slot, parent)) = self.open.pop() else {
            return;
        };
        self.lens[slot] = self.acc;
        self.acc = parent + digits(self.acc) + self.acc + 2;
    }
}

fn digits_u64(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The second walk: the bytes, each container's length taken from the [`Sizer`]'s record.
/// They collect in `out`; a stored body goes to `sink` directly, after what `out` holds.
struct Emitter<'a> {
    out: &'a mut Vec<u8>,
    sink: &'a mut dyn std::io::Write,
    lens: &'a [usize],
    next: usize,
    stored: &'a [Option<u64>],
    next_stored: usize,
    err: Option<std::io::Error>,
}

impl Emitter<'_> {
    fn prefix(&mut self, n: usize) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        let mut n = n;
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&buf[i..]);
        self.out.push(b':');
    }

    fn leaf(&mut self, payload: &[u8], tag: u8) {
        self.prefix(payload.len());
        self.out.extend_from_slice(payload);
        self.out.push(tag);
    }
}

impl Out for Emitter<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.leaf(b, b',');
    }
    fn str(&mut self, s: &str) {
        self.leaf(s.as_bytes(), b';');
    }
    fn int(&mut self, i: i64) {
        let mut s = Stack::new();
        let _ = write!(s, "{i}");
        self.leaf(s.as_str().as_bytes(), b'#');
    }
    fn float(&mut self, f: f64) {
        self.leaf(float_text(f).as_str().as_bytes(), b'^');
    }
    fn bool(&mut self, b: bool) {
        self.leaf(if b { b"true" } else { b"false" }, b'!');
    }
    fn null(&mut self) {
        self.leaf(b"", b'~');
    }
    fn stored(&mut self, b: &StoredBody) {
        let len = self.stored.get(self.next_stored).copied().flatten();
        self.next_stored += 1;
        let Some(len) = len.and_then(|n| usize::try_from(n).ok()) else {
            self.null();
            return;
        };
        self.prefix(len);
        if self.err.is_none() {
            let copied = self
                .sink
                .write_all(self.out)
                .and_then(|()| b.copy_to(self.sink));
            self.out.clear();
            if let Err(e) = copied {
                self.err = Some(e);
            }
        }
        self.out.push(b',');
    }
    fn open(&mut self) {
        let n = self.lens.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        self.prefix(n);
    }
    fn close(&mut self, tag: u8) {
        self.out.push(tag);
    }
}

/// Writes the tnetstring of `flow` (mitmproxy 12's state) to `sink`, through `buf` (left
/// empty); a stored body is copied from its file in pieces, never read whole.
pub(super) fn write_flow(
    flow: &Flow,
    sizer: &mut Sizer,
    buf: &mut Vec<u8>,
    sink: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    buf.clear();
    let no_server = ConnectionId::placeholder_for(flow.id());
    sizer.lens.clear();
    sizer.open.clear();
    sizer.stored.clear();
    sizer.acc = 0;
    walk(sizer, flow, no_server);
    let stored: u64 = sizer.stored.iter().flatten().sum();
    buf.reserve(
        sizer
            .acc
            .saturating_sub(usize::try_from(stored).unwrap_or(0))
            + 32,
    );
    let mut emitter = Emitter {
        out: buf,
        sink,
        lens: &sizer.lens,
        next: 0,
        stored: &sizer.stored,
        next_stored: 0,
        err: None,
    };
    walk(&mut emitter, flow, no_server);
    if let Some(e) = emitter.err {
        return Err(e);
    }
    sink.write_all(buf)?;
    buf.clear();
    Ok(())
}

/// The flow, and the id an unconnected server connection gets (made once, so both walks
/// write the same).
fn walk<O: Out>(o: &mut O, flow: &Flow, no_server: ConnectionId) {
    match flow {
        Flow::Http(f) => http(o, f, no_server),
        Flow::Tcp(f) => tcp(o, f, no_server),
    }
}

fn key<O: Out>(o: &mut O, k: &str) {
    o.str(k);
}

fn opt_str<O: Out>(o: &mut O, v: Option<&str>) {
    match v {
        Some(s) => o.str(s),
        None => o.null(),
    }
}

fn opt_float<O: Out>(o: &mut O, v: Option<f64>) {
    match v {
        Some(f) => o.float(f),
        None => o.null(),
    }
}

/// What HTTP and TCP flows share, in mitmproxy's order.
struct Common<'a> {
    id: crate::FlowId,
    ty: &'a str,
    error: Option<&'a FlowError>,
    client: &'a Client,
    server: Option<&'a Server>,
    marked: &'a str,
    comment: &'a str,
    metadata: &'a crate::flow::Metadata,
    is_replay: Option<&'a str>,
    timestamp_created: f64,
}

fn common<O: Out>(o: &mut O, c: &Common<'_>, no_server: ConnectionId) {
    key(o, "id");
    display(o, c.id);
    key(o, "error");
    match c.error {
        Some(e) => {
            o.open();
            key(o, "msg");
            o.str(&e.msg);
            key(o, "timestamp");
            o.float(e.timestamp);
            o.close(b'}');
        }
        None => o.null(),
    }
    key(o, "client_conn");
    client(o, c.client);
    key(o, "server_conn");
    server(o, c.server, no_server);
    key(o, "type");
    o.str(c.ty);
    key(o, "intercepted");
    o.bool(false);
    key(o, "is_replay");
    opt_str(o, c.is_replay);
    key(o, "marked");
    o.str(c.marked);
    key(o, "metadata");
    o.open();
    for (k, v) in c.metadata {
        o.str(k);
        json(o, v);
    }
    o.close(b'}');
    key(o, "comment");
    o.str(c.comment);
    key(o, "timestamp_created");
    o.float(c.timestamp_created);
    key(o, "version");
    o.int(VERSION);
    key(o, "backup");
    o.null();
}

/// Metadata (JSON) as tnetstring values: numbers that fit an i64 as integers, others as
/// floats.
fn json<O: Out>(o: &mut O, v: &serde_json::Value) {
    match v {
        serde_json::Value::Null => o.null(),
        serde_json::Value::Bool(b) => o.bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => o.int(i),
            None => o.float(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => o.str(s),
        serde_json::Value::Array(a) => {
            o.open();
            for x in a {
                json(o, x);
            }
            o.close(b']');
        }
        serde_json::Value::Object(m) => {
            o.open();
            for (k, x) in m {
                o.str(k);
                json(o, x);
            }
            o.close(b'}');
        }
    }
}

fn http<O: Out>(o: &mut O, f: &HttpFlow, no_server: ConnectionId) {
    o.open();
    common(
        o,
        &Common {
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
        },
        no_server,
    );
    key(o, "request");
    request(o, &f.request);
    key(o, "response");
    match &f.response {
        Some(r) => response(o, r),
        None => o.null(),
    }
    key(o, "websocket");
    match &f.websocket {
        Some(w) => websocket(o, w),
        None => o.null(),
    }
    o.close(b'}');
}

fn tcp<O: Out>(o: &mut O, f: &TcpFlow, no_server: ConnectionId) {
    o.open();
    common(
        o,
        &Common {
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
        },
        no_server,
    );
    key(o, "messages");
    o.open();
    for m in &f.messages {
        o.open();
        o.bool(m.from_client);
        o.bytes(&m.content);
        o.float(m.timestamp);
        o.close(b']');
    }
    o.close(b']');
    o.close(b'}');
}

fn headers<O: Out>(o: &mut O, h: &Headers) {
    o.open();
    for (n, v) in h.fields() {
        o.open();
        o.bytes(n.as_bytes());
        o.bytes(v);
        o.close(b']');
    }
    o.close(b']');
}

fn message<O: Out>(o: &mut O, m: &Message) {
    key(o, "http_version");
    o.bytes(m.http_version.as_str().as_bytes());
    key(o, "headers");
    headers(o, &m.headers);
    key(o, "content");
    match (&m.raw_content, &m.stored_body) {
        (Some(c), _) => o.bytes(c),
        (None, Some(b)) => o.stored(b),
        (None, None) => o.null(),
    }
    key(o, "trailers");
    match &m.trailers {
        Some(t) => headers(o, t),
        None => o.null(),
    }
    key(o, "timestamp_start");
    o.float(m.timestamp_start);
    key(o, "timestamp_end");
    opt_float(o, m.timestamp_end);
}

fn request<O: Out>(o: &mut O, r: &Request) {
    o.open();
    key(o, "host");
    o.str(&r.host);
    key(o, "port");
    o.int(i64::from(r.port));
    key(o, "method");
    o.bytes(r.method.as_bytes());
    key(o, "scheme");
    o.bytes(r.scheme.as_bytes());
    key(o, "authority");
    o.bytes(r.authority.as_bytes());
    key(o, "path");
    o.bytes(r.path.as_bytes());
    message(o, &r.message);
    o.close(b'}');
}

fn response<O: Out>(o: &mut O, r: &Response) {
    o.open();
    key(o, "status_code");
    o.int(i64::from(r.status_code));
    key(o, "reason");
    o.bytes(r.reason.as_bytes());
    message(o, &r.message);
    o.close(b'}');
}

fn websocket<O: Out>(o: &mut O, w: &WebSocketData) {
    o.open();
    key(o, "messages");
    o.open();
    for m in &w.messages {
        o.open();
        o.int(match m.kind {
            WebSocketMessageKind::Text => 1,
            WebSocketMessageKind::Binary => 2,
        });
        o.bool(m.from_client);
        o.bytes(&m.content);
        o.float(m.timestamp);
        o.bool(m.dropped);
        o.bool(m.injected);
        o.close(b']');
    }
    o.close(b']');
    key(o, "closed_by_client");
    match w.closed_by_client {
        Some(b) => o.bool(b),
        None => o.null(),
    }
    key(o, "close_code");
    match w.close_code {
        Some(c) => o.int(i64::from(c)),
        None => o.null(),
    }
    key(o, "close_reason");
    o.str(&w.close_reason);
    key(o, "timestamp_end");
    opt_float(o, w.timestamp_end);
    o.close(b'}');
}

fn addr<O: Out>(o: &mut O, a: SocketAddr) {
    o.open();
    display(o, a.ip());
    o.int(i64::from(a.port()));
    o.close(b']');
}

fn opt_addr<O: Out>(o: &mut O, a: Option<SocketAddr>) {
    match a {
        Some(a) => addr(o, a),
        None => o.null(),
    }
}

fn tls<O: Out>(o: &mut O, t: Option<&TlsInfo>) {
    key(o, "alpn");
    match t.and_then(|t| t.alpn.as_deref()) {
        Some(a) => o.bytes(a.as_bytes()),
        None => o.null(),
    }
    key(o, "alpn_offers");
    o.open();
    for a in t.map(|t| &t.alpn_offers[..]).unwrap_or_default() {
        o.bytes(a.as_bytes());
    }
    o.close(b']');
    key(o, "cipher");
    opt_str(o, t.and_then(|t| t.cipher.as_deref()));
    key(o, "cipher_list");
    o.open();
    o.close(b']');
    key(o, "tls_version");
    opt_str(o, t.and_then(|t| t.version.as_deref()));
    key(o, "certificate_list");
    o.open();
    for der in t.map(|t| &t.certificate_list[..]).unwrap_or_default() {
        o.bytes(&der_to_pem(der));
    }
    o.close(b']');
}

fn client<O: Out>(o: &mut O, c: &Client) {
    o.open();
    key(o, "id");
    display(o, c.id);
    key(o, "peername");
    addr(o, c.peername);
    key(o, "sockname");
    addr(o, c.sockname);
    key(o, "transport_protocol");
    o.str("tcp");
    key(o, "error");
    opt_str(o, c.error.as_deref());
    key(o, "tls");
    o.bool(c.tls.is_some());
    key(o, "sni");
    opt_str(o, c.sni());
    key(o, "timestamp_start");
    o.float(c.timestamp_start);
    key(o, "timestamp_end");
    opt_float(o, c.timestamp_end);
    key(o, "timestamp_tls_setup");
    opt_float(o, c.timestamp_tls_setup);
    key(o, "mitmcert");
    o.null();
    key(o, "proxy_mode");
    o.str(&c.proxy_mode);
    tls(o, c.tls.as_ref());
    o.close(b'}');
}

fn server<O: Out>(o: &mut O, srv: Option<&Server>, no_server: ConnectionId) {
    o.open();
    let Some(srv) = srv else {
        // mitmproxy always has a server connection; an unconnected one has no address.
        key(o, "id");
        display(o, no_server);
        for k in ["peername", "sockname"] {
            key(o, k);
            o.null();
        }
        key(o, "transport_protocol");
        o.str("tcp");
        key(o, "error");
        o.null();
        key(o, "tls");
        o.bool(false);
        for k in [
            "sni",
            "timestamp_start",
            "timestamp_end",
            "timestamp_tls_setup",
            "address",
            "timestamp_tcp_setup",
            "via",
        ] {
            key(o, k);
            o.null();
        }
        tls(o, None);
        o.close(b'}');
        return;
    };
    let sni = srv
        .sni
        .as_deref()
        .or_else(|| srv.tls_info.as_ref().and_then(|t| t.sni.as_deref()));
    key(o, "id");
    display(o, srv.id);
    key(o, "peername");
    opt_addr(o, srv.peername);
    key(o, "sockname");
    opt_addr(o, srv.sockname);
    key(o, "transport_protocol");
    o.str("tcp");
    key(o, "error");
    opt_str(o, srv.error.as_deref());
    key(o, "tls");
    o.bool(srv.tls);
    key(o, "sni");
    opt_str(o, sni);
    key(o, "timestamp_start");
    opt_float(o, srv.timestamp_start);
    key(o, "timestamp_end");
    opt_float(o, srv.timestamp_end);
    key(o, "timestamp_tls_setup");
    opt_float(o, srv.timestamp_tls_setup);
    key(o, "address");
    o.open();
    o.str(&srv.address.host);
    o.int(i64::from(srv.address.port));
    o.close(b']');
    key(o, "timestamp_tcp_setup");
    opt_float(o, srv.timestamp_tcp_setup);
    key(o, "via");
    o.null();
    tls(o, srv.tls_info.as_ref());
    o.close(b'}');
}
