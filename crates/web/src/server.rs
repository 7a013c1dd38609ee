//! The UI's HTTP server (hyper): authentication first, then mitmweb's REST paths.
#![expect(
    clippy::result_large_err,
    reason = "handlers answer Err(response) on the UI's own thread; boxing buys nothing"
)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use waylay_core::flow::{Headers, HttpVersion, Message};
use waylay_core::{Flow, HttpFlow};

use crate::assets;
use crate::auth::{Access, check_fetch_site, query_param};
use crate::json::messages_json;
use crate::state::{ApiError, Shared};

/// An answer's body: whole, or streamed (flow files, HAR); an error mid-stream aborts the
/// connection, so a cut download is never mistaken for a whole one.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) type Resp = hyper::Response<Body>;

/// A whole body.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Request bodies (edits, uploads) larger than this are refused.
const MAX_BODY: usize = 64 << 20;

pub(crate) fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = hyper::Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json_resp(v: &Value) -> Resp {
    respond(200, "application/json", v.to_string())
}

pub(crate) fn error(status: u16, msg: &str) -> Resp {
    respond(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

impl From<ApiError> for Resp {
    fn from(e: ApiError) -> Self {
        error(e.0, &e.1)
    }
}

/// What every answer carries: no framing, no sniffing, no referrer (the token may be in the
/// URL), only this origin's scripts and styles.
fn secure(mut r: Resp, api: bool) -> Resp {
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn set_cookies(r: &mut Resp, cookies: &[String]) {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// The login page (no script: a form posting the token or password to `/login`).
fn login_page(status: u16, note: &str) -> Resp {
    let note = note.replace('<', "&lt;");
    respond(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html><head><meta charset=utf-8><title>waylay: log in</title>\
             <link rel=stylesheet href=/static/app.css></head><body class=login>\
             <form method=post action=/login id=login><h1>waylay</h1>\
             <p>Open the URL waylay printed at start, or enter its token or the web password.</p>\
             <p class=note>{note}</p>\
             <input type=password name=token autofocus placeholder=\"token or password\">\
             <button type=submit>Log in</button></form></body></html>"
        ),
    )
}

/// Serves one request.
pub(crate) async fn handle(
    req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_owned();
    let api = !path.starts_with("/static/");
    Ok(secure(route_auth(req, &shared, &path).await, api))
}

async fn route_auth(req: hyper::Request<Incoming>, shared: &Arc<Shared>, path: &str) -> Resp {
    let auth = &shared.auth;
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    // The login page's stylesheet is public; nothing else is.
    if method == Method::GET && path == "/static/app.css" {
        return assets::get("app.css").unwrap_or_else(|| error(404, "not found"));
    }
    if path == "/login" && method == Method::POST {
        if let Err(e) = check_fetch_site(req.headers()) {
            return error(403, &e.to_string());
        }
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let form = String::from_utf8_lossy(&body);
        let given = query_param(&form, "token").unwrap_or_default();
        if !given.is_empty() && auth.check_secret(&given) {
            let mut r = respond(303, "text/plain", "");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            set_cookies(&mut r, &auth.session_cookies());
            return r;
        }
        return login_page(403, "Wrong token or password.");
    }
    let access = auth.access(req.headers(), query.as_deref());
    let mut cookies = Vec::new();
    match access {
        Access::Denied => {
            return if method == Method::GET && (path == "/" || path == "/index.html") {
                login_page(403, "")
            } else {
                error(
                    403,
                    "authentication required: the token from the URL waylay printed, `Authorization: Bearer <token>`, or the session cookie",
                )
            };
        }
        Access::Credentials => {
            cookies.extend(auth.session_cookies());
            // Take the token out of the address bar (and of the browser's history).
            if method == Method::GET
                && path == "/"
                && query.as_deref().is_some_and(|q| q.contains("token="))
            {
                let mut r = respond(302, "text/plain", "");
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/"));
                set_cookies(&mut r, &cookies);
                return r;
            }
        }
        Access::Session => {
            if !auth.has_xsrf_cookie(req.headers()) {
                cookies.push(auth.xsrf_cookie());
            }
        }
        Access::Bearer => {}
    }
    let checked = if access == Access::Bearer || path == "/updates" {
        // The socket streams every flow: another site must not open it (cross-site
        // WebSocket hijacking), even though the session cookie would not go along.
        check_fetch_site(req.headers())
    } else {
        auth.check_unsafe(&method, req.headers())
    };
    if let Err(e) = checked {
        return error(403, &e.to_string());
    }
    let mut r = route(req, shared, path, &method, query.as_deref().unwrap_or("")).await;
    set_cookies(&mut r, &cookies);
    r
}

pub(crate) async fn read_body(req: hyper::Request<Incoming>) -> Result<Bytes, Resp> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(413, &format!("request body refused: {e}"))),
    }
}

async fn read_json(req: hyper::Request<Incoming>) -> Result<Value, Resp> {
    let b = read_body(req).await?;
    serde_json::from_slice(&b).map_err(|e| error(400, &format!("bad JSON: {e}")))
}

fn param_u64(query: &str, name: &str) -> Result<Option<u64>, Resp> {
    match query_param(query, name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| error(400, &format!("{name} must be a number, got {v:?}"))),
    }
}

async fn route(
    req: hyper::Request<Incoming>,
    shared: &Arc<Shared>,
    path: &str,
    method: &Method,
    query: &str,
) -> Resp {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = segs
        .iter()
        .map(|s| s.strip_suffix(".json").unwrap_or(s))
        .collect();
    let m = method.as_str();
    let result: Result<Resp, Resp> = match (m, segs.as_slice()) {
        ("GET", [""] | ["index.html"]) => {
            Ok(assets::get("index.html").unwrap_or_else(|| error(404, "not found")))
        }
        ("GET", ["static", name]) => {
            Ok(assets::get(name).unwrap_or_else(|| error(404, "not found")))
        }
        ("GET", ["updates"]) => return crate::ws::upgrade(req, shared.clone()),
        ("GET", ["flows"]) => list(shared, query),
        ("POST", ["flows", "resume"]) => {
            Ok(json_resp(&json!({"count": shared.release_all(false)})))
        }
        ("POST", ["flows", "kill"]) => Ok(json_resp(&json!({"count": shared.release_all(true)}))),
        ("GET", ["flows", "dump"]) => crate::files::dump(shared, query, false),
        ("GET", ["flows", "har"]) => crate::files::dump(shared, query, true),
        ("POST", ["flows", "dump"]) => crate::files::load(req, shared).await,
        ("GET", ["flows", id, "export", format]) => export(shared, id, format),
        ("GET", ["flows", id]) => shared
            .snapshot(id)
            .map(|s| json_resp(&s.json()))
            .map_err(Resp::from),
        ("PUT", ["flows", id]) => match read_json(req).await {
            Ok(patch) => shared
                .edit(id, |f| apply_patch(f, &patch))
                .map(|s| json_resp(&s.json()))
                .map_err(Resp::from),
            Err(r) => Err(r),
        },
        ("DELETE", ["flows", id]) => shared
            .delete(id)
            .map(|()| json_resp(&json!({})))
            .map_err(Resp::from),
        ("POST", ["flows", id, "replay"]) => start_replay(shared, id),
        ("POST", ["flows", id, action]) => flow_action(shared, id, action),
        ("GET", ["flows", id, part @ ("request" | "response"), "content.data"]) => {
            body(shared, id, part)
        }
        ("POST", ["flows", id, part @ ("request" | "response"), "content.data"]) => {
            match read_body(req).await {
                Ok(b) => shared
                    .edit(id, |f| set_body(f, part, b))
                    .map(|s| json_resp(&s.json()))
                    .map_err(Resp::from),
                Err(r) => Err(r),
            }
        }
        ("POST", ["flows", id, "messages", "content.data"]) => match read_body(req).await {
            Ok(b) => shared
                .edit(id, |f| set_last_message(f, b))
                .map(|s| json_resp(&s.json()))
                .map_err(Resp::from),
            Err(r) => Err(r),
        },
        ("GET", ["flows", id, part, "content", view]) => {
            content_view(shared, id, part, view, query)
        }
        ("POST", ["clear"]) => {
            shared.clear();
            Ok(json_resp(&json!({})))
        }
        ("GET", ["events"]) => Ok(json_resp(&Value::Array(shared.events()))),
        ("GET", ["options"]) => {
            let o = shared
                .options
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            Ok(json_resp(&o))
        }
        ("PUT", ["options"]) => match read_json(req).await {
            Ok(v) => put_options(shared, &v).await,
            Err(r) => Err(r),
        },
        ("GET", ["filter"]) => {
            let expr = query_param(query, "expr").unwrap_or_default();
            Ok(match crate::filter::WebFilter::parse(&expr) {
                Ok(_) => json_resp(&json!({"ok": true})),
                Err(e) => respond(
                    400,
                    "application/json",
                    json!({"error": {"message": e.message, "position": e.position}}).to_string(),
                ),
            })
        }
        ("GET", ["state"]) => {
            let (ring, ring_bytes) = shared.ring_stats();
            Ok(json_resp(&json!({
                "version": env!("CARGO_PKG_VERSION"),
                "servers": {},
                "store": {
                    "path": shared.store.path().display().to_string(),
                    "flows": shared.store.count().unwrap_or(0),
                    "dropped_bodies": shared.store.drops.bodies.load(std::sync::atomic::Ordering::Relaxed),
                    "dropped_flows": shared.store.drops.flows.load(std::sync::atomic::Ordering::Relaxed),
                },
                "ring": {"flows": ring, "body_bytes": ring_bytes},
            })))
        }
        _ => Err(error(404, &format!("no such endpoint: {m} {path}"))),
    };
    result.unwrap_or_else(|r| r)
}

fn list(shared: &Shared, query: &str) -> Result<Resp, Resp> {
    let after = param_u64(query, "after")?;
    let before = param_u64(query, "before")?;
    let limit = param_u64(query, "limit")?.unwrap_or(1000) as usize;
    let (snaps, n) = shared.page(after, before, limit)?;
    let arr = Value::Array(snaps.iter().map(|s| s.json()).collect());
    let mut r = json_resp(&arr);
    r.headers_mut().insert("x-waylay-seq", HeaderValue::from(n));
    Ok(r)
}

fn flow_action(shared: &Shared, id: &str, action: &str) -> Result<Resp, Resp> {
    let snap = match action {
        "resume" => shared.release(id, false)?,
        "kill" => shared.kill(id)?,
        "revert" => shared.revert(id)?,
        "duplicate" => shared.duplicate(id)?,
        other => return Err(error(404, &format!("no flow action {other:?}"))),
    };
    Ok(json_resp(&snap.json()))
}

/// Sends the request of flow `id` again through the proxy (in the background: the new flow
/// shows up in the list, marked a replay; a failure goes to the event log).
fn start_replay(shared: &Arc<Shared>, id: &str) -> Result<Resp, Resp> {
    let (_, full) = shared.full(id)?;
    let flow = waylay_core::replay::replayable(&full)
        .map_err(|e| error(400, &e.to_string()))?
        .clone();
    let Some(manager) = shared.manager.get().cloned() else {
        return Err(error(503, "the proxy is not running"));
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let proxy = waylay_core::replay::proxy_addr(&flow);
        if let Err(e) = waylay_core::replay::replay(&manager, &flow, proxy).await {
            shared.event("warn", format!("replay: {e}"));
        }
    });
    Ok(json_resp(&json!({})))
}

fn message_of<'a>(f: &'a HttpFlow, part: &str) -> Option<&'a Message> {
    match part {
        "request" => Some(&f.request.message),
        "response" => f.response.as_ref().map(|r| &r.message),
        _ => None,
    }
}

fn body(shared: &Shared, id: &str, part: &str) -> Result<Resp, Resp> {
    let (_, full) = shared.full(id)?;
    let Flow::Http(f) = &full else {
        return Err(error(400, "not an HTTP flow"));
    };
    let m = message_of(f, part).ok_or_else(|| error(404, &format!("the flow has no {part}")))?;
    let Some(raw) = &m.raw_content else {
        return Err(error(
            404,
            "the body is not held (streamed, not read yet, or not stored under overload)",
        ));
    };
    let ct = m
        .headers
        .get("content-type")
        .unwrap_or("application/octet-stream");
    let mut r = respond(200, ct, raw.clone());
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    Ok(r)
}

/// `auto` (JSON pretty-printed, else text, else hex), `json`, `text`, `hex`; at most `lines`
/// lines (default 512).
fn content_view(
    shared: &Shared,
    id: &str,
    part: &str,
    view: &str,
    query: &str,
) -> Result<Resp, Resp> {
    let (_, full) = shared.full(id)?;
    let max_lines = param_u64(query, "lines")?.unwrap_or(512) as usize;
    if part == "messages" {
        return Ok(json_resp(&messages_json(&full)));
    }
    let Flow::Http(f) = &full else {
        return Err(error(400, "not an HTTP flow"));
    };
    let m = message_of(f, part).ok_or_else(|| error(404, &format!("the flow has no {part}")))?;
    let body = m
        .content()
        .map_err(|e| error(404, &format!("no content to show: {e}")))?;
    let ct = m.headers.get("content-type").unwrap_or("");
    let (name, text) = render(view, ct, &body).map_err(|e| error(400, &e))?;
    let total = text.lines().count();
    let shown: Vec<&str> = text.lines().take(max_lines).collect();
    Ok(json_resp(&json!({
        "text": shown.join("\n"),
        "view_name": name,
        "description": format!("{name}, {} bytes", body.len()),
        "lines_total": total,
        "truncated": total > max_lines,
    })))
}

pub(crate) fn render(
    view: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(&'static str, String), String> {
    let hex = |b: &[u8]| {
        b.chunks(16)
            .enumerate()
            .map(|(i, c)| {
                let h: Vec<String> = c.iter().map(|x| format!("{x:02x}")).collect();
                let a: String = c
                    .iter()
                    .map(|&x| {
                        if x.is_ascii_graphic() || x == b' ' {
                            x as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                format!("{:08x}  {:<48} {a}", i * 16, h.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let pretty_json = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
    };
    let form = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let k = query_param(&format!("k={k}"), "k").unwrap_or_default();
                let v = query_param(&format!("v={v}"), "v").unwrap_or_default();
                format!("{k}: {v}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    match view.to_ascii_lowercase().as_str() {
        "form" => Ok(("Form", form(body))),
        "auto" if content_type.starts_with("application/x-www-form-urlencoded") => {
            Ok(("Form", form(body)))
        }
        "auto" => {
            if (content_type.contains("json")
                || body.first().is_some_and(|c| *c == b'{' || *c == b'['))
                && let Some(p) = pretty_json(body)
            {
                return Ok(("JSON", p));
            }
            match std::str::from_utf8(body) {
                Ok(t)
                    if !t
                        .chars()
                        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) =>
                {
                    Ok(("Text", t.to_owned()))
                }
                _ => Ok(("Hex", hex(body))),
            }
        }
        "json" => pretty_json(body)
            .map(|p| ("JSON", p))
            .ok_or_else(|| "the body is not valid JSON".to_owned()),
        "text" | "raw" => Ok(("Text", String::from_utf8_lossy(body).into_owned())),
        "hex" => Ok(("Hex", hex(body))),
        other => Err(format!(
            "no content view {other:?} (auto, json, form, text, hex)"
        )),
    }
}

fn set_body(f: &mut Flow, part: &str, b: Bytes) -> Result<(), ApiError> {
    let Flow::Http(f) = f else {
        return Err(ApiError(400, "not an HTTP flow".into()));
    };
    match part {
        "request" => f.request.set_content(b),
        _ => match f.response.as_mut() {
            Some(r) => r.set_content(b),
            None => return Err(ApiError(400, "the flow has no response".into())),
        },
    }
    Ok(())
}

/// Replaces the content of the last message of a WebSocket or TCP flow (the one an
/// intercepted flow holds); a WebSocket message keeps its kind, and text that is not UTF-8
/// is refused.
fn set_last_message(f: &mut Flow, b: Bytes) -> Result<(), ApiError> {
    let f = match f {
        Flow::Tcp(t) => {
            let Some(m) = t.messages.last_mut() else {
                return Err(ApiError(400, "the flow has no TCP message".into()));
            };
            m.content = b;
            return Ok(());
        }
        Flow::Http(f) => f,
    };
    let Some(m) = f.websocket.as_mut().and_then(|w| w.messages.last_mut()) else {
        return Err(ApiError(400, "the flow has no WebSocket message".into()));
    };
    if m.is_text() && std::str::from_utf8(&b).is_err() {
        return Err(ApiError(400, "a text message must be UTF-8".into()));
    }
    m.content = b;
    Ok(())
}

fn headers_from(v: &Value) -> Result<Headers, ApiError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError(400, "headers must be a list of [name, value] pairs".into()))?;
    let mut h = Headers::new();
    for pair in arr {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) if !k.is_empty() => {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || HeaderValue::from_str(v).is_err()
                {
                    return Err(ApiError(400, format!("invalid header {k:?}: {v:?}")));
                }
                h.append(k.clone(), v.clone());
            }
            _ => return Err(ApiError(400, format!("bad header pair {pair}"))),
        }
    }
    Ok(h)
}

fn version_from(v: &str) -> Result<HttpVersion, ApiError> {
    match v {
        "HTTP/1.0" => Ok(HttpVersion::Http10),
        "HTTP/1.1" => Ok(HttpVersion::Http11),
        "HTTP/2.0" | "HTTP/2" => Ok(HttpVersion::Http2),
        "HTTP/3" => Ok(HttpVersion::Http3),
        other => Err(ApiError(400, format!("unknown HTTP version {other:?}"))),
    }
}

fn str_field<'a>(o: &'a Value, k: &str) -> Result<Option<&'a str>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError(400, format!("{k} must be a string, got {other}"))),
    }
}

/// Applies mitmweb's partial update (`PUT /flows/<id>`).
pub(crate) fn apply_patch(flow: &mut Flow, patch: &Value) -> Result<(), ApiError> {
    let obj = patch
        .as_object()
        .ok_or_else(|| ApiError(400, "the update must be a JSON object".into()))?;
    for key in obj.keys() {
        if !["request", "response", "marked", "comment"].contains(&key.as_str()) {
            return Err(ApiError(400, format!("cannot update {key:?}")));
        }
    }
    let (marked, comment) = match flow {
        Flow::Http(f) => (&mut f.marked, &mut f.comment),
        Flow::Tcp(f) => (&mut f.marked, &mut f.comment),
    };
    match patch.get("marked") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => *marked = if *b { "🔴".into() } else { String::new() },
        Some(Value::String(s)) => *marked = s.clone(),
        Some(other) => {
            return Err(ApiError(
                400,
                format!("marked must be a string or a bool, got {other}"),
            ));
        }
    }
    if let Some(c) = str_field(patch, "comment")? {
        *comment = c.to_owned();
    }
    let Flow::Http(f) = flow else {
        if patch.get("request").is_some() || patch.get("response").is_some() {
            return Err(ApiError(400, "not an HTTP flow".into()));
        }
        return Ok(());
    };
    if let Some(q) = patch.get("request") {
        let r = &mut f.request;
        if let Some(v) = str_field(q, "method")? {
            if v.is_empty() || !v.bytes().all(|c| c.is_ascii_alphabetic()) {
                return Err(ApiError(400, format!("bad method {v:?}")));
            }
            r.method = v.into();
        }
        if let Some(v) = str_field(q, "scheme")? {
            r.scheme = v.into();
        }
        if let Some(v) = str_field(q, "host")? {
            r.host = v.into();
        }
        if let Some(p) = q.get("port").filter(|p| !p.is_null()) {
            r.port = p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| ApiError(400, format!("bad port {p}")))?;
        }
        if let Some(v) = str_field(q, "path")? {
            r.path = v.into();
        }
        if let Some(v) = str_field(q, "http_version")? {
            r.http_version = version_from(v)?;
        }
        if let Some(h) = q.get("headers") {
            r.headers = headers_from(h)?;
        }
        if let Some(c) = str_field(q, "content")? {
            r.set_content(Bytes::from(c.to_owned()));
        }
    }
    if let Some(s) = patch.get("response") {
        let r = f
            .response
            .as_mut()
            .ok_or_else(|| ApiError(400, "the flow has no response to edit".into()))?;
        if let Some(c) = s
            .get("code")
            .or_else(|| s.get("status_code"))
            .filter(|c| !c.is_null())
        {
            r.status_code = c
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| ApiError(400, format!("bad status code {c}")))?;
        }
        if let Some(v) = str_field(s, "reason")? {
            r.reason = v.into();
        }
        if let Some(v) = str_field(s, "http_version")? {
            r.http_version = version_from(v)?;
        }
        if let Some(h) = s.get("headers") {
            r.headers = headers_from(h)?;
        }
        if let Some(c) = str_field(s, "content")? {
            r.set_content(Bytes::from(c.to_owned()));
        }
    }
    Ok(())
}

/// Flow `id` in one of mitmproxy's export formats (`curl`, `httpie`, `raw`, `raw_request`,
/// `raw_response`) or as a HAR document (`har`, a download).
fn export(shared: &Shared, id: &str, format: &str) -> Result<Resp, Resp> {
    let (_, full) = shared.full(id)?;
    let Flow::Http(f) = &full else {
        return Err(error(400, "only HTTP flows can be exported"));
    };
    if format == "har" {
        let doc = waylay_core::flowfile::har::document([&full]);
        let text = serde_json::to_vec_pretty(&doc).map_err(|e| error(500, &e.to_string()))?;
        let mut r = respond(200, "application/json", text);
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"flow-{id}.har\"")) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(r);
    }
    let out = waylay_addons::export::export(format, f).map_err(|e| {
        let status = match e {
            waylay_addons::export::ExportError::UnknownFormat(_) => 404,
            _ => 400,
        };
        error(status, &e.to_string())
    })?;
    Ok(respond(200, "text/plain; charset=utf-8", out))
}

/// `PUT /options {name: value}`: set through the addon manager as `--set` would, so every
/// addon's `configure` checks and sees them; nothing changes when one value is refused.
async fn put_options(shared: &Shared, v: &Value) -> Result<Resp, Resp> {
    let obj = v
        .as_object()
        .ok_or_else(|| error(400, "options must be a JSON object"))?;
    let refuse = |option: &str, message: String, position: Option<usize>| {
        respond(
            400,
            "application/json",
            json!({"error": {"option": option, "message": message, "position": position}})
                .to_string(),
        )
    };
    let mut specs = Vec::new();
    for (k, val) in obj {
        if k.starts_with("web_") {
            return Err(refuse(
                k,
                format!("{k} takes effect only at start: restart waylay web with --set {k}=..."),
                None,
            ));
        }
        if k == "intercept" {
            let expr = val.as_str().unwrap_or("");
            if !expr.trim().is_empty()
                && let Err(e) = crate::filter::WebFilter::parse(expr)
            {
                return Err(refuse(k, e.message, Some(e.position)));
            }
            // As mitmproxy: setting the filter turns interception on, clearing it off.
            if !obj.contains_key("intercept_active") {
                specs.push(format!("intercept_active={}", !expr.trim().is_empty()));
            }
        }
        if k == waylay_addons::BREAKPOINTS_OPTION
            && let Some(rules) = val.as_array()
        {
            // Checked here for the position of the error (the addon refuses it too).
            for (i, rule) in rules.iter().enumerate() {
                if let Some(Err(e)) = rule.as_str().map(waylay_addons::check_breakpoint_rule) {
                    return Err(respond(
                        400,
                        "application/json",
                        json!({"error": {"option": k, "index": i, "message": e.message, "position": e.position}})
                            .to_string(),
                    ));
                }
            }
        }
        match val {
            Value::Bool(b) => specs.push(format!("{k}={b}")),
            Value::Number(n) => specs.push(format!("{k}={n}")),
            Value::String(s) => specs.push(format!("{k}={s}")),
            Value::Null => specs.push(format!("{k}=")),
            Value::Array(items) if items.is_empty() => specs.push(format!("{k}=")),
            Value::Array(items) => {
                for i in items {
                    let Some(s) = i.as_str() else {
                        return Err(refuse(
                            k,
                            format!("{k}: expected a list of strings, got {i}"),
                            None,
                        ));
                    };
                    specs.push(format!("{k}={s}"));
                }
            }
            Value::Object(_) => {
                return Err(refuse(
                    k,
                    format!("{k}: expected a value, got an object"),
                    None,
                ));
            }
        }
    }
    let manager = shared.manager.get().cloned().ok_or_else(|| {
        error(
            503,
            "options cannot be changed: this UI is not attached to the proxy's addon manager",
        )
    })?;
    match manager.set(&specs).await {
        Ok(changed) => Ok(json_resp(&json!({"changed": changed}))),
        Err(e) => {
            let name = match &e {
                waylay_core::OptionsError::Unknown { name, .. }
                | waylay_core::OptionsError::BadValue { name, .. }
                | waylay_core::OptionsError::Rejected { name, .. } => name.clone(),
                _ => String::new(),
            };
            Err(refuse(&name, e.to_string(), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn content_views() {
        let (n, t) = render("auto", "application/json", br#"{"a":[1,2]}"#).unwrap();
        assert_eq!(
            (n, t.as_str()),
            ("JSON", "{\n  \"a\": [\n    1,\n    2\n  ]\n}")
        );
        let (n, t) = render("auto", "application/x-www-form-urlencoded", b"a=1&b=x+y%21").unwrap();
        assert_eq!((n, t.as_str()), ("Form", "a: 1\nb: x y!"));
        let (n, t) = render("auto", "", b"\x00\x01abc").unwrap();
        assert_eq!(n, "Hex");
        assert!(t.starts_with("00000000  00 01 61 62 63"), "{t}");
        assert_eq!(
            render("auto", "text/plain", b"hi").unwrap(),
            ("Text", "hi".to_owned())
        );
        assert!(render("json", "", b"nope").is_err());
        assert!(render("bogus", "", b"").is_err());
    }
}
