//! HTTP flows: a request, its response, and what happened around them.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::Bytes;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{
    Client, FlowError, FlowId, Headers, HttpVersion, Intercept, InterceptHandle, KILLED_MESSAGE,
    Message, Metadata, Release, Server, WebSocketData, now,
};

/// An HTTP request as waylay read it (or as an addon rewrote it).
///
/// `host`, `port` and `scheme` say where the request goes; changing them in `request_headers`
/// or `request` sends it elsewhere. Body, headers and version live in [`Message`], reachable
/// through `Deref` (`request.headers`, `request.text()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, `CONNECT`, ...
    pub method: CompactString,
    /// `http` or `https`.
    pub scheme: CompactString,
    /// The authority of the request target as sent (absolute-form or CONNECT), else empty.
    pub authority: CompactString,
    /// Destination host (name or IP literal, without brackets).
    pub host: CompactString,
    /// Destination port.
    pub port: u16,
    /// Path and query (`/a/b?c=d`); empty for CONNECT.
    pub path: CompactString,
    /// Headers, body, version, timestamps.
    #[serde(flatten)]
    pub message: Message,
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Status code (`200`).
    pub status_code: u16,
    /// Reason phrase (`OK`); HTTP/2 has none, so it is derived from the code there.
    pub reason: CompactString,
    /// Headers, body, version, timestamps.
    #[serde(flatten)]
    pub message: Message,
}

impl Deref for Request {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}
impl DerefMut for Request {
    fn deref_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}
impl Deref for Response {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.message
    }
}
impl DerefMut for Response {
    fn deref_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        443
    } else {
        80
    }
}

fn fmt_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Percent-decodes a URL component (`+` as space when `plus` is set).
fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

impl Request {
    /// A request to `scheme://host:port/path`, HTTP/1.1, no headers, empty body.
    pub fn new(
        method: impl Into<CompactString>,
        scheme: impl Into<CompactString>,
        host: impl Into<CompactString>,
        port: u16,
        path: impl Into<CompactString>,
    ) -> Self {
        let mut message = Message::new(HttpVersion::Http11, Headers::new());
        message.raw_content = Some(Bytes::new());
        Self {
            method: method.into(),
            scheme: scheme.into(),
            authority: CompactString::default(),
            host: host.into(),
            port,
            path: path.into(),
            message,
        }
    }

    /// Parses an absolute URL (`http://example.com:8080/a?b=c`) into a GET request.
    pub fn from_url(method: &str, url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("not a URL: {url}"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        let (host, port) = split_host_port(authority, default_port(scheme))
            .ok_or_else(|| format!("bad authority in URL: {url}"))?;
        let mut r = Self::new(method, scheme.to_ascii_lowercase(), host, port, path);
        r.headers.append("Host", authority.to_owned());
        Ok(r)
    }

    /// The full URL: `scheme://host[:port]/path`, the port omitted when it is the default;
    /// `host:port` for a CONNECT (authority-form), as mitmproxy's.
    pub fn url(&self) -> String {
        let host = fmt_host(&self.host);
        if self.method.eq_ignore_ascii_case("CONNECT") {
            return format!("{host}:{}", self.port);
        }
        if self.port == default_port(&self.scheme) {
            format!("{}://{}{}", self.scheme, host, self.path)
        } else {
            format!("{}://{}:{}{}", self.scheme, host, self.port, self.path)
        }
    }

    /// The `Host` header (or HTTP/2 `:authority`) if there is one, else `host`, as mitmproxy's
    /// `pretty_host`.
    pub fn pretty_host(&self) -> String {
        if let Some(h) = self.headers.get("host") {
            return split_host_port(h, self.port).map_or_else(|| h.to_owned(), |(h, _)| h.into());
        }
        if !self.authority.is_empty()
            && let Some((h, _)) = split_host_port(&self.authority, self.port)
        {
            return h.into();
        }
        self.host.to_string()
    }

    /// The URL built from `pretty_host`, as mitmproxy's `pretty_url`.
    pub fn pretty_url(&self) -> String {
        let mut r = self.clone_head();
        r.host = self.pretty_host().into();
        r.url()
    }

    fn clone_head(&self) -> Self {
        Self {
            method: self.method.clone(),
            scheme: self.scheme.clone(),
            authority: CompactString::default(),
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            message: Message::new(self.http_version, Headers::new()),
        }
    }

    /// The path without the query string.
    pub fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p)
    }

    /// The query string's `(key, value)` pairs, percent-decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, q)) = self.path.split_once('?') else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k, true), percent_decode(v, true))
            })
            .collect()
    }

    /// Replaces the query string with `pairs` (percent-encoded).
    pub fn set_query<K: AsRef<str>, V: AsRef<str>>(&mut self, pairs: &[(K, V)]) {
        let base = self.path_only().to_owned();
        if pairs.is_empty() {
            self.path = base.into();
            return;
        }
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    percent_encode(k.as_ref()),
                    percent_encode(v.as_ref())
                )
            })
            .collect();
        self.path = compact_str::format_compact!("{base}?{}", q.join("&"));
    }

    /// The cookies of the `Cookie` header(s), in order; a value in double quotes comes
    /// unquoted (backslash escapes undone), as mitmproxy reads it.
    pub fn cookies(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for header in self.headers.get_all("cookie") {
            let mut rest = header;
            while !rest.is_empty() {
                let end = rest.find([';', '=']).unwrap_or(rest.len());
                let name = rest[..end].trim();
                rest = &rest[end..];
                let mut value = String::new();
                if let Some(after) = rest.strip_prefix('=') {
                    let after = after.trim_start();
                    if let Some(quoted) = after.strip_prefix('"') {
                        let (v, used) = unquote(quoted);
                        value = v;
                        rest = &quoted[used..];
                    } else {
                        let end = after.find(';').unwrap_or(after.len());
                        value = after[..end].trim().to_owned();
                        rest = &after[end..];
                    }
                }
                // Past the pair's `;` (and anything left of a quoted value before it).
                rest = rest.find(';').map_or("", |i| &rest[i + 1..]);
                if !name.is_empty() || !value.is_empty() {
                    out.push((name.to_owned(), value));
                }
            }
        }
        out
    }

    /// Replaces the `Cookie` header with `pairs`; a value that holds a separator, a quote,
    /// a backslash, a space or anything outside printable ASCII is written in double quotes,
    /// as mitmproxy writes it.
    pub fn set_cookies<K: AsRef<str>, V: AsRef<str>>(&mut self, pairs: &[(K, V)]) {
        self.headers.remove("cookie");
        if !pairs.is_empty() {
            let v: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", k.as_ref(), quote_cookie(v.as_ref())))
                .collect();
            self.headers.append("Cookie", v.join("; "));
        }
    }
}

/// The text of a quoted string whose opening quote is already consumed, and how many bytes
/// of `s` it took (the closing quote included, when there is one).
fn unquote(s: &str) -> (String, usize) {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '"' => return (out, i + 1),
            '\\' => escaped = true,
            _ => out.push(c),
        }
    }
    (out, s.len())
}

/// A cookie value as written (see [`Request::set_cookies`]).
fn quote_cookie(v: &str) -> std::borrow::Cow<'_, str> {
    let special = |c: char| matches!(c, '"' | ',' | ';' | '\\') || !('!'..='~').contains(&c);
    if !v.chars().any(special) {
        return v.into();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out.into()
}

impl Response {
    /// Makes a recorded response fit to be served again at `now` (seconds since the epoch),
    /// as mitmproxy's `Response.refresh`: `Date`, `Expires` and `Last-Modified`, and the
    /// `Expires` of each `Set-Cookie`, move by the time since the response started. A date
    /// that does not parse is left as it is (a cookie's is dropped); a `Set-Cookie` with
    /// attributes is written back with them separated by `; `.
    pub fn refresh(&mut self, now: f64) {
        let delta = now - self.timestamp_start;
        let shift = |v: &str| {
            // A zone after `GMT` (`GMT+00:00:00`) is read as GMT, as Python's email dates are.
            let v = v.find("GMT").map_or(v, |i| &v[..i + 3]);
            crate::flowfile::har::parse_http_date(v)
                .map(|t| crate::flowfile::har::format_http_date(t + delta))
        };
        let mut fields: Vec<(String, Bytes)> = self.headers.fields().to_vec();
        let mut changed = false;
        for (name, value) in &mut fields {
            let text = std::str::from_utf8(value).ok();
            let new = if ["date", "expires", "last-modified"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                text.and_then(shift)
            } else if name.eq_ignore_ascii_case("set-cookie") {
                text.and_then(|t| refresh_set_cookie(t, &shift))
            } else {
                None
            };
            if let Some(new) = new {
                *value = Bytes::from(new);
                changed = true;
            }
        }
        if changed {
            self.headers = Headers::from_pairs(fields);
        }
    }

    /// A response with `status_code`, body and headers, as mitmproxy's `Response.make`:
    /// `Content-Length` is set from the body.
    pub fn make<N: Into<String>, V: Into<Bytes>>(
        status_code: u16,
        body: impl Into<Bytes>,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut message = Message::new(HttpVersion::Http11, Headers::from_pairs(headers));
        message.set_raw_content(body.into());
        if !message.headers.contains("content-length") {
            message.headers.insert("content-length", "0");
        }
        message.timestamp_end = Some(message.timestamp_start);
        Self {
            status_code,
            reason: reason_phrase(status_code).into(),
            message,
        }
    }
}

/// The standard reason phrase of a status code (empty when unknown).
pub fn reason_phrase(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// Splits `host:port`, `[v6]:port`, `host` (default port) into parts; `None` if malformed.
/// The host is held inline when short (every request's destination is split here).
///
/// Works on the bytes (`:`, `[` and `]` are ASCII, so every cut is on a character boundary):
/// `str::rsplit_once` with a `char` pattern and `u16::from_str` cost about 400 instructions
/// per request here, this about 100.
pub fn split_host_port(authority: &str, default: u16) -> Option<(CompactString, u16)> {
    let a = trim(authority);
    let b = a.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b[0] == b'[' {
        let close = b.iter().position(|&c| c == b']')?;
        if close == 1 {
            return None;
        }
        let port = match &b[close + 1..] {
            [] => default,
            [b':', p @ ..] => parse_port(p)?,
            _ => return None,
        };
        return Some((a[1..close].into(), port));
    }
    let Some(colon) = b.iter().rposition(|&c| c == b':') else {
        return Some((a.into(), default));
    };
    let h = &b[..colon];
    if h.contains(&b':') {
        // A bare IPv6 literal has several colons and no port.
        return Some((a.into(), default));
    }
    if h.is_empty() {
        return None;
    }
    Some((a[..colon].into(), parse_port(&b[colon + 1..])?))
}

/// `str::trim`, without its per-character walk when the ends are visible ASCII (always, on
/// the authorities hyper parsed).
fn trim(s: &str) -> &str {
    let visible = |c: Option<&u8>| c.is_some_and(|&c| c > b' ' && c < 0x7f);
    if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// A port as `u16::from_str` reads one (an optional `+`, then decimal digits that fit).
fn parse_port(p: &[u8]) -> Option<u16> {
    decimal(p.strip_prefix(b"+").unwrap_or(p)).and_then(|n| u16::try_from(n).ok())
}

/// Decimal digits (at least one, nothing else) as a number; `None` when they do not fit.
pub fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// An edit applied to an intercepted flow when it is resumed
/// ([`InterceptHandle::resume_with`]), by whoever holds the flow.
pub type HttpEdit = Box<dyn FnOnce(&mut HttpFlow) + Send>;

/// One HTTP request/response exchange, the unit addons see.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpFlow {
    /// Unique id.
    pub id: FlowId,
    /// The client connection it arrived on.
    pub client: Arc<Client>,
    /// The server connection it went to, once there is one.
    pub server: Option<Arc<Server>>,
    /// The request.
    pub request: Request,
    /// The response, once read, or as set by an addon (set in `request` to answer without
    /// contacting the server).
    pub response: Option<Response>,
    /// A protocol or connection error (not an HTTP error status).
    pub error: Option<FlowError>,
    /// The WebSocket conversation, when this flow upgraded to one.
    pub websocket: Option<WebSocketData>,
    /// A user's mark (an emoji or a word, as mitmproxy's `marked`); empty when unmarked.
    #[serde(default)]
    pub marked: String,
    /// A free-text comment.
    #[serde(default)]
    pub comment: String,
    /// Free-form data addons attach to the flow.
    #[serde(default)]
    pub metadata: Metadata,
    /// Whether the flow is still travelling through the proxy.
    #[serde(default)]
    pub live: bool,
    /// Set when the flow is a replay.
    #[serde(default)]
    pub is_replay: Option<String>,
    /// When the flow was created.
    pub timestamp_created: f64,
    #[serde(skip)]
    intercept: Intercept,
    /// Made on demand ([`Self::kill_switch`]); the layer watches it between hooks.
    #[serde(skip)]
    kill_switch: Option<super::KillSwitch>,
}

impl PartialEq for HttpFlow {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id
            && self.client == o.client
            && self.server == o.server
            && self.request == o.request
            && self.response == o.response
            && self.error == o.error
            && self.websocket == o.websocket
            && self.marked == o.marked
            && self.comment == o.comment
            && self.metadata == o.metadata
            && self.live == o.live
            && self.is_replay == o.is_replay
            && self.timestamp_created == o.timestamp_created
    }
}

impl HttpFlow {
    /// A live flow for `request` arriving on `client`.
    pub fn new(client: Arc<Client>, request: Request) -> Self {
        Self::new_at(client, request, now())
    }

    /// [`HttpFlow::new_at`] in its box: the box is allocated first and the flow written
    /// into it, so the compiler can build it there (`Box::new` of a made flow builds it on
    /// the stack and copies its 880 bytes; a flow is boxed per observed request).
    #[inline]
    pub fn boxed_at(client: Arc<Client>, request: Request, timestamp_created: f64) -> Box<Self> {
        Box::write(
            Box::new_uninit(),
            Self::new_at(client, request, timestamp_created),
        )
    }

    /// [`HttpFlow::new`] created at `timestamp_created` (a clock read the caller already
    /// made, e.g. the request's start).
    #[inline]
    pub fn new_at(client: Arc<Client>, request: Request, timestamp_created: f64) -> Self {
        Self {
            id: FlowId::new(),
            client,
            server: None,
            request,
            response: None,
            error: None,
            websocket: None,
            marked: String::new(),
            comment: String::new(),
            metadata: Metadata::new(),
            live: true,
            is_replay: None,
            timestamp_created,
            intercept: Intercept::default(),
            kill_switch: None,
        }
    }

    /// Kills the flow: the connection is dropped and `error` says so.
    pub fn kill(&mut self) {
        self.error = Some(FlowError::new(KILLED_MESSAGE));
        self.intercept.resume();
    }

    /// Whether the flow was killed.
    pub fn killed(&self) -> bool {
        self.error.as_ref().is_some_and(FlowError::is_killed)
    }

    /// Holds the flow after the current hook until the returned handle (or
    /// [`HttpFlow::resume`]) releases it. Only this flow's stream waits.
    pub fn intercept(&mut self) -> InterceptHandle {
        self.intercept.intercept()
    }

    /// Whether the flow is intercepted and waiting.
    pub fn intercepted(&self) -> bool {
        self.intercept.is_intercepted()
    }

    /// Releases an intercepted flow.
    pub fn resume(&mut self) {
        self.intercept.resume();
    }

    /// Waits while the flow is intercepted, then applies the [`HttpEdit`] it was resumed
    /// with, if any (see [`InterceptHandle::resume_with`]). Returns at once when the flow is
    /// not intercepted.
    pub async fn wait_released(&mut self) -> Release {
        let released = self.intercept.wait().await;
        if released == Release::Resumed
            && let Some(edit) = self.intercept.take_edit::<HttpEdit>()
        {
            edit(self);
        }
        released
    }

    /// The flow's [`KillSwitch`](super::KillSwitch), made now if it has none: trip it at
    /// any time to kill the flow while it streams or relays (not only in a hook).
    pub fn kill_switch(&mut self) -> super::KillSwitch {
        self.kill_switch
            .get_or_insert_with(super::KillSwitch::new)
            .clone()
    }

    /// The kill switch, if someone asked for one (for the layer serving the flow).
    pub fn existing_kill_switch(&self) -> Option<super::KillSwitch> {
        self.kill_switch.clone()
    }

    /// The intercept state, for layers that wait on it.
    pub fn intercept_state(&mut self) -> &mut Intercept {
        &mut self.intercept
    }

    /// Whether the flow may be killed (it is live and not killed yet).
    pub fn killable(&self) -> bool {
        self.live && !self.killed()
    }
}

/// A `Set-Cookie` value with its `Expires` moved by `shift` (dropped when it does not
/// parse), its attributes separated by `; `; `None` for one without a name and value
/// (left as it is, as mitmproxy leaves it).
fn refresh_set_cookie(v: &str, shift: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut parts = v.split(';').map(str::trim);
    let first = parts.next()?;
    let (name, value) = first.split_once('=')?;
    if name.trim().is_empty() || value.trim().is_empty() {
        return None;
    }
    let mut out = first.to_owned();
    for attr in parts.filter(|a| !a.is_empty()) {
        let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
        let attr = if key.trim().eq_ignore_ascii_case("expires") {
            match shift(val.trim()) {
                Some(new) => format!("{}={new}", key.trim()),
                None => continue,
            }
        } else {
            attr.to_owned()
        };
        out.push_str("; ");
        out.push_str(&attr);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    /// A flow is boxed once per observed request: at most 1 KiB, it is served by the system
    /// allocator's per-thread cache (glibc's ends at 1032 bytes); one byte more and each
    /// allocation walks the general bins (about 1,000 instructions, `BENCHMARKS.md`).
    #[test]
    fn a_flow_fits_the_allocators_thread_cache() {
        let size = size_of::<super::HttpFlow>();
        assert!(size <= 1024, "HttpFlow is {size} bytes");
    }

    /// A request's short fields (method, scheme, host, authority, a short path) and a
    /// response's reason are held in the flow itself: building and dropping an observed flow
    /// allocates none of them (six allocations per request before, `BENCHMARKS.md`, session 11).
    #[test]
    fn short_fields_are_held_inline() {
        let r = super::Request::from_url("GET", "http://127.0.0.1:8080/a?b=c").unwrap();
        for (name, f) in [
            ("method", &r.method),
            ("scheme", &r.scheme),
            ("host", &r.host),
            ("path", &r.path),
        ] {
            assert!(!f.is_heap_allocated(), "{name} {f:?} allocated");
        }
        let (host, port) = super::split_host_port("[::1]:8443", 80).unwrap();
        assert_eq!((host.as_str(), port), ("::1", 8443));
        assert!(!host.is_heap_allocated());
        let resp = super::Response::make(404, "", [] as [(&str, &str); 0]);
        assert_eq!(resp.reason, "Not Found");
        assert!(!resp.reason.is_heap_allocated());
        // A long value still works, on the heap.
        let long =
            super::Request::from_url("GET", &format!("http://h/{}", "x".repeat(100))).unwrap();
        assert_eq!(long.path.len(), 101);
    }
}
