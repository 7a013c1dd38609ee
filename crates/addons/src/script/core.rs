//! `Core`: the Rust data behind one Python flow (or one standalone request/response), and the
//! accessors the `mitmproxy` shim calls. The shim's classes are thin Python wrappers; every
//! read and write goes here, so waylay's flow stays the one source of truth and nothing is
//! copied back after a hook.
//!
//! During a hook the flow's data is *attached*: swapped into the `Core` (a move, no copy)
//! and swapped back when the hook returns. Outside a hook a Python flow object is
//! detached: reading it raises, except for what lives outside the flow (its id, its
//! interception handle, its metadata dict).

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use bytes::Bytes;
use pyo3::BoundObject;
use pyo3::exceptions::{PyAttributeError, PyIndexError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use waylay_core::flow::{Address, Client, Server};
use waylay_core::flow::{
    FlowError, FlowId, Headers, HttpVersion, Intercept, InterceptHandle, Message, Metadata,
    StreamFn, TcpInjector, TcpMessage, TlsInfo, WebSocketInjector, WebSocketMessage,
    WebSocketMessageKind,
};
use waylay_core::flowfile::{FlowReader, FlowWriter};
use waylay_core::{
    Flow, HttpFlow, Mode, ModeSpec, ProxyScheme, Request, Response, TcpFlow, UpstreamProxy, Via,
};

/// What a [`Core`] holds.
#[derive(Debug)]
pub(crate) enum Data {
    /// An HTTP flow; `live` while a hook runs, or while `kept` (otherwise `f` is a stale
    /// placeholder).
    Http {
        f: Held<HttpFlow>,
        live: bool,
        kept: bool,
    },
    /// A TCP flow, likewise.
    Tcp {
        f: Box<TcpFlow>,
        live: bool,
        kept: bool,
    },
    /// A request made by a script (`Request.make`), not yet in a flow.
    Req(Option<Box<Request>>),
    /// A response made by a script (`Response.make`), not yet in a flow.
    Resp(Option<Box<Response>>),
}

/// The flow a [`Core`] reads and writes: its own box (a placeholder between hooks, an
/// `async def` hook's flow swapped in, a script's copy), or, for the length of a plain hook,
/// the hook's flow itself, lent ([`Core::lend_http`]): a plain hook neither copies nor moves
/// the flow (moving it in and out cost more than the rest of a no-op hook).
#[derive(Debug)]
pub(crate) struct Held<T> {
    own: Box<T>,
    lent: Option<NonNull<T>>,
}

impl<T> Held<T> {
    fn new(own: Box<T>) -> Self {
        Self { own, lent: None }
    }
}

impl<T> Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self.lent {
            #[expect(unsafe_code, reason = "a lent flow is reached through its pointer")]
            // SAFETY: `lent` is set by `Core::lend_http`, whose caller keeps the flow valid
            // and otherwise unused until `Core::end_lend` clears it.
            Some(p) => unsafe { p.as_ref() },
            None => &self.own,
        }
    }
}

impl<T> DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        match self.lent {
            #[expect(unsafe_code, reason = "a lent flow is reached through its pointer")]
            // SAFETY: as in `deref`; `&mut self` (the core borrowed mutably, under the GIL)
            // makes this the only reference made from the pointer.
            Some(mut p) => unsafe { p.as_mut() },
            None => &mut self.own,
        }
    }
}

#[expect(
    unsafe_code,
    reason = "a lent flow's pointer is neither Send nor Sync by itself"
)]
// SAFETY: the pointer is only dereferenced through the core's `PyCell` borrow, under the GIL,
// while the lender keeps the flow valid and untouched (the `Core::lend_http` contract): the
// same exclusive access as the owned box has. `T` itself is `Send`.
unsafe impl<T: Send> Send for Held<T> {}

#[expect(
    unsafe_code,
    reason = "a lent flow's pointer is neither Send nor Sync by itself"
)]
// SAFETY: as for `Send`; shared access goes through a shared `PyCell` borrow.
unsafe impl<T: Sync> Sync for Held<T> {}

/// The Rust side of one Python flow, request or response.
#[pyclass(module = "mitmproxy._waylay")]
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) data: Data,
    /// The interception of the flow, kept outside the data so `resume()` works after the
    /// hook returned (the usual way to release an intercepted flow later).
    intercept: Option<InterceptHandle>,
    /// Injectors kept for injecting outside a hook.
    ws_injector: Option<WebSocketInjector>,
    tcp_injector: Option<TcpInjector>,
    /// The flow's metadata as the script's `flow.metadata` dict last had it (after the last
    /// hook): what differs from it when a hook starts was written by Rust addons meanwhile.
    pub(crate) seen: Metadata,
}

/// What a core holds for an HTTP flow between hooks: a minimal flow of the same client.
fn placeholder_flow(like: &HttpFlow) -> HttpFlow {
    HttpFlow::new(like.client.clone(), Request::new("GET", "http", "", 0, ""))
}

fn detached() -> PyErr {
    PyRuntimeError::new_err(
        "this flow is not in a hook right now (waylay hands a flow to Python only while a hook runs)",
    )
}

fn no_such(name: &str) -> PyErr {
    PyAttributeError::new_err(format!("no attribute {name:?}"))
}

pub(crate) fn to_bytes(v: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = v.cast::<PyString>() {
        if let Ok(t) = s.to_str() {
            return Ok(Bytes::copy_from_slice(t.as_bytes()));
        }
        // Bytes that were not UTF-8, decoded by the shim with `surrogateescape`: back as
        // they were.
        let b = s.call_method1("encode", ("utf-8", "surrogateescape"))?;
        return Ok(Bytes::copy_from_slice(b.cast::<PyBytes>()?.as_bytes()));
    }
    if let Ok(b) = v.extract::<Vec<u8>>() {
        return Ok(Bytes::from(b));
    }
    Err(PyValueError::new_err("expected bytes or str"))
}

fn py_obj<'py, T>(py: Python<'py>, v: T) -> PyResult<Py<PyAny>>
where
    T: IntoPyObject<'py>,
{
    v.into_pyobject(py)
        .map(|b| b.into_any().unbind())
        .map_err(Into::into)
}

fn version_of(s: &str) -> PyResult<HttpVersion> {
    match s {
        "HTTP/1.0" => Ok(HttpVersion::Http10),
        "HTTP/1.1" => Ok(HttpVersion::Http11),
        "HTTP/2.0" | "HTTP/2" => Ok(HttpVersion::Http2),
        "HTTP/3" => Ok(HttpVersion::Http3),
        other => Err(PyValueError::new_err(format!(
            "unknown HTTP version {other:?}"
        ))),
    }
}

fn body_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

impl Core {
    fn standalone(data: Data) -> Self {
        Self {
            data,
            intercept: None,
            ws_injector: None,
            tcp_injector: None,
            seen: Metadata::new(),
        }
    }

    pub(crate) fn http_placeholder(like: &HttpFlow) -> Self {
        Self::standalone(Data::Http {
            f: Held::new(Box::new(placeholder_flow(like))),
            live: false,
            kept: false,
        })
    }

    pub(crate) fn tcp_placeholder(like: &TcpFlow) -> Self {
        Self::standalone(Data::Tcp {
            f: Box::new(TcpFlow::new(like.client.clone(), None)),
            live: false,
            kept: false,
        })
    }

    /// Swaps the hook's HTTP flow in (`attach`) or back out (`detach`): for a hook whose
    /// methods may outlive the call (`async def`). `keep`, on detach: the script holds the
    /// flow object (or one of its views), which then keeps a copy of the flow as the hook
    /// left it ([`Core::end_lend`]).
    pub(crate) fn swap_http(&mut self, flow: &mut HttpFlow, attach: bool, keep: bool) {
        if let Data::Http { f, live, kept } = &mut self.data {
            debug_assert!(f.lent.is_none(), "a lent flow is not swapped");
            std::mem::swap(&mut *f.own, flow);
            if attach {
                *live = true;
                *kept = false;
                self.attached_http();
            } else if keep {
                *f.own = flow.clone();
                *live = true;
                *kept = true;
            } else {
                *live = false;
                *kept = false;
            }
        }
    }

    /// Lends the hook's HTTP flow to this core until [`Core::end_lend`]: Python reads and
    /// writes it in place.
    ///
    /// # Safety
    ///
    /// `flow` must stay valid, and be neither read nor written other than through this
    /// core, until `end_lend` has run.
    #[expect(unsafe_code, reason = "the caller keeps the lent flow valid")]
    pub(crate) unsafe fn lend_http(&mut self, flow: &mut HttpFlow) {
        if let Data::Http { f, live, kept } = &mut self.data {
            f.lent = Some(NonNull::from(flow));
            *live = true;
            *kept = false;
            self.attached_http();
        }
    }

    /// Ends [`Core::lend_http`]. Without `keep` the core holds a placeholder again,
    /// detached. With `keep` (the script holds the flow object or one of its views after the
    /// hook) it holds a copy of the flow as the hook left it: the script can still read it
    /// (and write it, as a finished flow object can be written in mitmproxy, changing
    /// nothing on the wire) until the flow's next hook lends the flow itself again; after
    /// the flow's last hook (`over`) the copy is no longer live.
    pub(crate) fn end_lend(&mut self, keep: bool, over: bool) {
        if let Data::Http { f, live, kept } = &mut self.data {
            if keep {
                let mut copy = (**f).clone();
                if over {
                    copy.live = false;
                }
                f.lent = None;
                *f.own = copy;
                *live = true;
                *kept = true;
                return;
            }
            f.lent = None;
            *live = false;
            if std::mem::take(kept) {
                // The copy of an earlier hook nobody holds any more.
                *f.own = placeholder_flow(&f.own);
            }
        }
    }

    fn attached_http(&mut self) {
        if let Data::Http { f, .. } = &mut self.data {
            self.intercept = f.intercept_state().handle();
            if self.ws_injector.is_none() {
                self.ws_injector = f.websocket.as_ref().and_then(|w| w.injector());
            }
        }
    }

    /// Forgets what belonged to the flow this core served last, before it serves another.
    pub(crate) fn reset(&mut self) {
        if !self.seen.is_empty() {
            self.seen.clear();
        }
        self.intercept = None;
        self.ws_injector = None;
        self.tcp_injector = None;
    }

    /// Swaps the hook's TCP flow in or out (`keep`: as in [`Core::swap_http`]).
    pub(crate) fn swap_tcp(&mut self, flow: &mut TcpFlow, attach: bool, keep: bool) {
        if let Data::Tcp { f, live, kept } = &mut self.data {
            std::mem::swap(&mut **f, flow);
            if attach {
                *live = true;
                *kept = false;
                if self.tcp_injector.is_none() {
                    self.tcp_injector = f.injector();
                }
            } else if keep {
                **f = flow.clone();
                *live = true;
                *kept = true;
            } else {
                *live = false;
                *kept = false;
            }
        }
    }

    fn http(&mut self) -> PyResult<&mut HttpFlow> {
        match &mut self.data {
            Data::Http { f, live: true, .. } => Ok(f),
            Data::Http { .. } | Data::Tcp { .. } => Err(detached()),
            _ => Err(PyRuntimeError::new_err("not a flow")),
        }
    }

    fn tcp(&mut self) -> PyResult<&mut TcpFlow> {
        match &mut self.data {
            Data::Tcp { f, live: true, .. } => Ok(f),
            Data::Tcp { .. } => Err(detached()),
            _ => Err(PyRuntimeError::new_err("not a TCP flow")),
        }
    }

    fn request(&mut self) -> PyResult<&mut Request> {
        if !matches!(self.data, Data::Req(_)) {
            return Ok(&mut self.http()?.request);
        }
        match &mut self.data {
            Data::Req(Some(r)) => Ok(r),
            _ => Err(PyRuntimeError::new_err("request moved into a flow")),
        }
    }

    fn response(&mut self) -> PyResult<&mut Response> {
        if !matches!(self.data, Data::Resp(_)) {
            return self
                .http()?
                .response
                .as_mut()
                .ok_or_else(|| PyRuntimeError::new_err("the flow has no response"));
        }
        match &mut self.data {
            Data::Resp(Some(r)) => Ok(r),
            _ => Err(PyRuntimeError::new_err("response moved into a flow")),
        }
    }

    fn msg(&mut self, side: u8) -> PyResult<&mut Message> {
        if side == 0 {
            Ok(&mut self.request()?.message)
        } else {
            Ok(&mut self.response()?.message)
        }
    }

    /// Side 0/1: the request's/response's headers; 2/3: their trailers (made, empty, when
    /// absent: the shim only asks for them once they exist or are being set).
    pub(super) fn hdrs(&mut self, side: u8) -> PyResult<&mut Headers> {
        if side < 2 {
            return Ok(&mut self.msg(side)?.headers);
        }
        Ok(self
            .msg(side - 2)?
            .trailers
            .get_or_insert_with(Box::default))
    }

    fn tls_of(&mut self, which: &str) -> PyResult<Option<TlsInfo>> {
        let (client, server) = match &mut self.data {
            Data::Http { f, live: true, .. } => (f.client.clone(), f.server.clone()),
            Data::Tcp { f, live: true, .. } => (f.client.clone(), f.server.clone()),
            _ => return Err(detached()),
        };
        Ok(if which == "client" {
            client.tls.clone()
        } else {
            server.and_then(|s| s.tls_info.clone())
        })
    }
}

#[pymethods]
impl Core {
    /// A standalone request (`Request.make`).
    #[staticmethod]
    fn new_request(method: &str, url: &str) -> PyResult<Self> {
        let r = Request::from_url(method, url).map_err(PyValueError::new_err)?;
        Ok(Self::standalone(Data::Req(Some(Box::new(r)))))
    }

    /// A standalone response (`Response.make`).
    #[staticmethod]
    fn new_response(status_code: u16) -> Self {
        let no_headers: [(&str, Bytes); 0] = [];
        let mut r = Response::make(status_code, Bytes::new(), no_headers);
        r.headers.clear();
        Self::standalone(Data::Resp(Some(Box::new(r))))
    }

    /// Whether this core is a request or response of its own (`make()`, or taken out of a
    /// flow), rather than a flow's.
    fn standalone_message(&self) -> bool {
        matches!(self.data, Data::Req(_) | Data::Resp(_))
    }

    fn attached(&self) -> bool {
        matches!(
            self.data,
            Data::Http { live: true, .. }
                | Data::Tcp { live: true, .. }
                | Data::Req(Some(_))
                | Data::Resp(Some(_))
        )
    }

    // ---- the flow itself ----

    fn fget(&mut self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        if let Data::Tcp { .. } = self.data {
            let f = self.tcp()?;
            return match name {
                "id" => py_obj(py, f.id.to_string()),
                "marked" => py_obj(py, f.marked.clone()),
                "comment" => py_obj(py, f.comment.clone()),
                "live" => py_obj(py, f.live),
                "timestamp_created" => py_obj(py, f.timestamp_created),
                "error" => py_obj(py, f.error.as_ref().map(|e| e.msg.clone())),
                "error_timestamp" => py_obj(py, f.error.as_ref().map(|e| e.timestamp)),
                "killable" => py_obj(py, f.live && !f.killed()),
                "intercepted" => py_obj(py, f.intercept_state().is_intercepted()),
                _ => Err(no_such(name)),
            };
        }
        let f = self.http()?;
        match name {
            "id" => py_obj(py, f.id.to_string()),
            "marked" => py_obj(py, f.marked.clone()),
            "comment" => py_obj(py, f.comment.clone()),
            "live" => py_obj(py, f.live),
            "is_replay" => py_obj(py, f.is_replay.clone()),
            "timestamp_created" => py_obj(py, f.timestamp_created),
            "error" => py_obj(py, f.error.as_ref().map(|e| e.msg.clone())),
            "error_timestamp" => py_obj(py, f.error.as_ref().map(|e| e.timestamp)),
            "killable" => py_obj(py, f.killable()),
            "intercepted" => py_obj(py, f.intercepted()),
            "has_response" => py_obj(py, f.response.is_some()),
            "has_websocket" => py_obj(py, f.websocket.is_some()),
            _ => Err(no_such(name)),
        }
    }

    fn fset(&mut self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let (marked, comment, error) = match &mut self.data {
            Data::Http { f, live: true, .. } => {
                let f = &mut **f;
                (&mut f.marked, &mut f.comment, &mut f.error)
            }
            Data::Tcp { f, live: true, .. } => (&mut f.marked, &mut f.comment, &mut f.error),
            _ => return Err(detached()),
        };
        match name {
            "marked" => {
                *marked = if let Ok(b) = value.extract::<bool>() {
                    if b { ":default:".into() } else { String::new() }
                } else {
                    value.extract()?
                }
            }
            "comment" => *comment = value.extract()?,
            "error" => {
                // `(msg, timestamp)` from an `Error` object (one put back keeps its time).
                *error = if value.is_none() {
                    None
                } else if let Ok((msg, timestamp)) = value.extract::<(String, f64)>() {
                    Some(FlowError { msg, timestamp })
                } else {
                    Some(FlowError::new(value.extract::<String>()?))
                };
            }
            "is_replay" => self.http()?.is_replay = value.extract()?,
            _ => return Err(no_such(name)),
        }
        Ok(())
    }

    /// Whether the flow has a response (`flow.response`, read on most response hooks: a
    /// method of its own rather than a name matched in `fget`).
    pub(super) fn has_response(&mut self) -> PyResult<bool> {
        Ok(self.http()?.response.is_some())
    }

    fn kill(&mut self) -> PyResult<()> {
        match &mut self.data {
            Data::Http {
                f,
                live: true,
                kept: false,
            } => f.kill(),
            Data::Tcp {
                f,
                live: true,
                kept: false,
            } => f.kill(),
            _ => match &self.intercept {
                Some(h) => h.kill(),
                None => return Err(detached()),
            },
        }
        Ok(())
    }

    fn intercept(&mut self) -> PyResult<()> {
        let h = match &mut self.data {
            Data::Http {
                f,
                live: true,
                kept: false,
            } => f.intercept(),
            Data::Tcp {
                f,
                live: true,
                kept: false,
            } => f.intercept_state().intercept(),
            _ => return Err(detached()),
        };
        self.intercept = Some(h);
        Ok(())
    }

    fn resume(&mut self) -> PyResult<()> {
        match &mut self.data {
            Data::Http {
                f,
                live: true,
                kept: false,
            } => f.resume(),
            Data::Tcp {
                f,
                live: true,
                kept: false,
            } => f.intercept_state().resume(),
            _ => {}
        }
        if let Some(h) = self.intercept.take() {
            h.resume();
        }
        Ok(())
    }

    // ---- request / response scalars ----

    fn mget(&mut self, py: Python<'_>, side: u8, name: &str) -> PyResult<Py<PyAny>> {
        match name {
            "http_version" => return py_obj(py, self.msg(side)?.http_version.as_str()),
            "timestamp_start" => return py_obj(py, self.msg(side)?.timestamp_start),
            "timestamp_end" => return py_obj(py, self.msg(side)?.timestamp_end),
            "stream" => {
                let m = self.msg(side)?;
                // The function a script set, as it set it (mitmproxy keeps the callable).
                if let Some(f) = m
                    .stream_fn
                    .as_ref()
                    .and_then(|f| f.downcast_ref::<PyStreamFn>())
                {
                    return Ok(f.callable.clone_ref(py));
                }
                return py_obj(py, m.stream);
            }
            _ => {}
        }
        if side == 0 {
            let r = self.request()?;
            match name {
                "method" => py_obj(py, r.method.as_str()),
                "scheme" => py_obj(py, r.scheme.as_str()),
                "authority" => py_obj(py, r.authority.as_str()),
                "host" => py_obj(py, r.host.as_str()),
                "port" => py_obj(py, r.port),
                "path" => py_obj(py, r.path.as_str()),
                "url" => py_obj(py, r.url()),
                "pretty_host" => py_obj(py, r.pretty_host()),
                "pretty_url" => py_obj(py, r.pretty_url()),
                _ => Err(no_such(name)),
            }
        } else {
            let r = self.response()?;
            match name {
                "status_code" => py_obj(py, r.status_code),
                "reason" => py_obj(py, r.reason.as_str()),
                _ => Err(no_such(name)),
            }
        }
    }

    fn mset(&mut self, side: u8, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        match name {
            "http_version" => {
                self.msg(side)?.http_version = version_of(&value.extract::<String>()?)?;
                return Ok(());
            }
            "timestamp_start" => {
                self.msg(side)?.timestamp_start = value.extract()?;
                return Ok(());
            }
            "timestamp_end" => {
                self.msg(side)?.timestamp_end = value.extract()?;
                return Ok(());
            }
            "stream" => {
                let m = self.msg(side)?;
                if value.is_callable() {
                    // mitmproxy's `stream = function`: each chunk goes through it.
                    m.stream = true;
                    m.stream_fn = Some(StreamFn::new(PyStreamFn {
                        callable: value.clone().unbind(),
                    }));
                } else {
                    m.stream = value.extract()?;
                    m.stream_fn = None;
                }
                return Ok(());
            }
            _ => {}
        }
        if side == 0 {
            let r = self.request()?;
            match name {
                "method" => r.method = value.extract::<String>()?.into(),
                "scheme" => r.scheme = value.extract::<String>()?.into(),
                "authority" => r.authority = value.extract::<String>()?.into(),
                "host" => r.host = value.extract::<String>()?.into(),
                "port" => r.port = value.extract()?,
                "path" => r.path = value.extract::<String>()?.into(),
                _ => return Err(no_such(name)),
            }
        } else {
            let r = self.response()?;
            match name {
                "status_code" => r.status_code = value.extract()?,
                "reason" => r.reason = value.extract::<String>()?.into(),
                _ => return Err(no_such(name)),
            }
        }
        Ok(())
    }

    // ---- headers ----

    fn h_first(&mut self, side: u8, name: &str) -> PyResult<Option<String>> {
        Ok(self
            .hdrs(side)?
            .get_bytes(name)
            .map(|v| String::from_utf8_lossy(v).into_owned()))
    }

    fn h_get_all(&mut self, side: u8, name: &str) -> PyResult<Vec<String>> {
        Ok(self
            .hdrs(side)?
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect())
    }

    fn h_contains(&mut self, side: u8, name: &str) -> PyResult<bool> {
        Ok(self.hdrs(side)?.contains(name))
    }

    fn h_insert(&mut self, side: u8, name: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = to_bytes(value)?;
        self.hdrs(side)?.insert(name, v);
        Ok(())
    }

    fn h_append(&mut self, side: u8, name: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = to_bytes(value)?;
        self.hdrs(side)?.append(name, v);
        Ok(())
    }

    fn h_del(&mut self, side: u8, name: &str) -> PyResult<usize> {
        Ok(self.hdrs(side)?.remove(name))
    }

    fn h_fields<'py>(&mut self, py: Python<'py>, side: u8) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<Bound<'py, PyTuple>> = self
            .hdrs(side)?
            .iter()
            .map(|(n, v)| {
                PyTuple::new(
                    py,
                    [
                        PyBytes::new(py, n.as_bytes()).into_any(),
                        PyBytes::new(py, v).into_any(),
                    ],
                )
            })
            .collect::<PyResult<_>>()?;
        PyList::new(py, items)
    }

    fn h_set_fields(&mut self, side: u8, fields: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut out = Vec::new();
        for item in fields.try_iter()? {
            let (n, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let n = String::from_utf8_lossy(&to_bytes(&n)?).into_owned();
            out.push((n, to_bytes(&v)?));
        }
        *self.hdrs(side)? = out.into_iter().collect();
        Ok(())
    }

    fn h_len(&mut self, side: u8) -> PyResult<usize> {
        Ok(self.hdrs(side)?.len())
    }

    fn has_trailers(&mut self, side: u8) -> PyResult<bool> {
        Ok(self.msg(side)?.trailers.is_some())
    }

    fn clear_trailers(&mut self, side: u8) -> PyResult<()> {
        self.msg(side)?.trailers = None;
        Ok(())
    }

    // ---- bodies ----

    fn raw<'py>(&mut self, py: Python<'py>, side: u8) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self
            .msg(side)?
            .raw_content
            .as_ref()
            .map(|b| PyBytes::new(py, b)))
    }

    #[pyo3(signature = (side, data))]
    fn set_raw(&mut self, side: u8, data: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let m = self.msg(side)?;
        match data {
            None => m.raw_content = None,
            Some(d) => m.set_raw_content(to_bytes(d)?),
        }
        Ok(())
    }

    fn content<'py>(&mut self, py: Python<'py>, side: u8) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let m = self.msg(side)?;
        if m.raw_content.is_none() {
            return Ok(None);
        }
        let c = m.content().map_err(body_err)?;
        Ok(Some(PyBytes::new(py, &c)))
    }

    fn set_content(&mut self, side: u8, data: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let m = self.msg(side)?;
        match data {
            None => m.raw_content = None,
            Some(d) => m.set_content(to_bytes(d)?),
        }
        Ok(())
    }

    fn decode(&mut self, side: u8) -> PyResult<()> {
        self.msg(side)?.decode().map_err(body_err)
    }

    fn encode(&mut self, side: u8, encoding: &str) -> PyResult<()> {
        self.msg(side)?.encode(encoding).map_err(body_err)
    }

    /// `Response.refresh(now)` ([`Response::refresh`]; `None`: the current time).
    #[pyo3(signature = (now = None))]
    fn refresh(&mut self, now: Option<f64>) -> PyResult<()> {
        let now = now.unwrap_or_else(waylay_core::flow::now);
        self.response()?.refresh(now);
        Ok(())
    }

    // ---- replacing the request or response of a flow ----

    /// Moves the standalone request/response of `other` into this flow (side 0: request,
    /// 1: response; `None` removes the response) and returns the one it displaced, standalone:
    /// a script's object that viewed it keeps it (in mitmproxy a message is an object of its
    /// own, so one taken out of a flow can be put back).
    #[pyo3(signature = (side, other))]
    fn adopt(&mut self, side: u8, other: Option<&Bound<'_, Core>>) -> PyResult<Option<Core>> {
        let used = || PyValueError::new_err("that request/response was already used");
        let wrong = || {
            PyValueError::new_err("expected a Request/Response (made with .make(), or of a flow)")
        };
        let f = self.http()?;
        let displaced = match (side, other) {
            (1, None) => f.response.take().map(|r| Data::Resp(Some(Box::new(r)))),
            (0, Some(o)) => {
                let r = match &mut o.try_borrow_mut()?.data {
                    Data::Req(r) => r.take().ok_or_else(used)?,
                    // Another flow's request (a kept flow, a copy): copied.
                    Data::Http { f, live: true, .. } => Box::new(f.request.clone()),
                    Data::Http { .. } => return Err(detached()),
                    _ => return Err(wrong()),
                };
                let old = std::mem::replace(&mut f.request, *r);
                Some(Data::Req(Some(Box::new(old))))
            }
            (_, Some(o)) => {
                let r = match &mut o.try_borrow_mut()?.data {
                    Data::Resp(r) => r.take().ok_or_else(used)?,
                    Data::Http { f, live: true, .. } => match &f.response {
                        Some(r) => Box::new(r.clone()),
                        None => return Err(PyValueError::new_err("that flow has no response")),
                    },
                    Data::Http { .. } => return Err(detached()),
                    _ => return Err(wrong()),
                };
                f.response
                    .replace(*r)
                    .map(|old| Data::Resp(Some(Box::new(old))))
            }
            (_, None) => return Err(wrong()),
        };
        Ok(displaced.map(Core::standalone))
    }

    /// A standalone copy of this flow's request/response (to keep or to give to another
    /// flow).
    fn copy_msg(&mut self, side: u8) -> PyResult<Core> {
        let data = if side == 0 {
            Data::Req(Some(Box::new(self.request()?.clone())))
        } else {
            Data::Resp(Some(Box::new(self.response()?.clone())))
        };
        Ok(Core::standalone(data))
    }

    /// A copy of the whole flow (mitmproxy's `flow.copy()`): a new id, not live, not
    /// intercepted, readable and writable on its own whether or not a hook runs.
    fn copy_flow(&mut self) -> PyResult<Core> {
        let data = match &mut self.data {
            Data::Http { f, live: true, .. } => {
                let mut c = Box::new((**f).clone());
                c.id = FlowId::new();
                c.live = false;
                *c.intercept_state() = Intercept::default();
                Data::Http {
                    f: Held::new(c),
                    live: true,
                    kept: false,
                }
            }
            Data::Tcp { f, live: true, .. } => {
                let mut c = f.clone();
                c.id = FlowId::new();
                c.live = false;
                *c.intercept_state() = Intercept::default();
                Data::Tcp {
                    f: c,
                    live: true,
                    kept: false,
                }
            }
            _ => return Err(detached()),
        };
        Ok(Core::standalone(data))
    }

    /// `replay.client` for this flow: its request sent again through the proxy it came
    /// through, as a new flow marked a replay. `None` when it was sent; mitmproxy's reason
    /// when it cannot be replayed (a live flow: replay a `flow.copy()`).
    fn replay(&mut self) -> PyResult<Option<String>> {
        let f = match &mut self.data {
            Data::Http { f, live: true, .. } => &mut **f,
            Data::Tcp { live: true, .. } => return Ok(Some("Can only replay HTTP flows.".into())),
            _ => return Err(detached()),
        };
        if f.live {
            return Ok(Some("Can't replay live flow.".into()));
        }
        if f.intercepted() {
            return Ok(Some("Can't replay intercepted flow.".into()));
        }
        if let Err(e) = waylay_core::replay::check(f) {
            return Ok(Some(e.to_string()));
        }
        super::control::replay(f.clone())
            .map(|()| None)
            .map_err(PyRuntimeError::new_err)
    }

    /// The flow as a flow file's bytes (what `mitmproxy.io.FlowWriter.add` writes).
    fn flowfile_bytes<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let flow = match &mut self.data {
            Data::Http { f, live: true, .. } => Flow::Http(Box::new((**f).clone())),
            Data::Tcp { f, live: true, .. } => Flow::Tcp(f.clone()),
            _ => return Err(detached()),
        };
        let mut w = FlowWriter::new(Vec::new());
        w.add(&flow)
            .map_err(|e| PyRuntimeError::new_err(format!("cannot write the flow: {e}")))?;
        Ok(PyBytes::new(py, &w.into_inner()))
    }

    /// The flows of a flow file's bytes (`mitmproxy.io.FlowReader`), each as its kind
    /// (`"http"`, `"tcp"`), a script's copy of it and its metadata as JSON; then the error
    /// that ended the reading early, if one did.
    #[staticmethod]
    fn from_flowfile(data: &[u8]) -> (Vec<(&'static str, Core, String)>, Option<String>) {
        let mut flows = Vec::new();
        for flow in FlowReader::new(data) {
            let flow = match flow {
                Ok(f) => f,
                Err(e) => return (flows, Some(e.to_string())),
            };
            let (kind, metadata, data) = match flow {
                Flow::Http(f) => (
                    "http",
                    serde_json::to_string(&f.metadata).unwrap_or_default(),
                    Data::Http {
                        f: Held::new(f),
                        live: true,
                        kept: false,
                    },
                ),
                Flow::Tcp(f) => (
                    "tcp",
                    serde_json::to_string(&f.metadata).unwrap_or_default(),
                    Data::Tcp {
                        f,
                        live: true,
                        kept: false,
                    },
                ),
            };
            flows.push((kind, Core::standalone(data), metadata));
        }
        (flows, None)
    }

    // ---- connections ----

    fn conn(&mut self, py: Python<'_>, which: &str, name: &str) -> PyResult<Py<PyAny>> {
        let (client, server) = match &mut self.data {
            Data::Http { f, live: true, .. } => (f.client.clone(), f.server.clone()),
            Data::Tcp { f, live: true, .. } => (f.client.clone(), f.server.clone()),
            _ => return Err(detached()),
        };
        let addr = |a: std::net::SocketAddr| (a.ip().to_string(), a.port());
        let tls = self.tls_of(which)?;
        let tls_field = |n: &str| -> PyResult<Py<PyAny>> {
            let t = tls.as_ref();
            match n {
                "sni" => py_obj(py, t.and_then(|t| t.sni.clone())),
                "alpn" => py_obj(py, t.and_then(|t| t.alpn.clone()).map(String::into_bytes)),
                "tls_version" => py_obj(py, t.and_then(|t| t.version.clone())),
                "cipher" => py_obj(py, t.and_then(|t| t.cipher.clone())),
                "tls_established" => py_obj(py, t.is_some()),
                _ => Err(no_such(n)),
            }
        };
        if which == "client" {
            match name {
                "id" => py_obj(py, client.id.to_string()),
                "peername" => py_obj(py, addr(client.peername)),
                "sockname" => py_obj(py, addr(client.sockname)),
                "timestamp_start" => py_obj(py, client.timestamp_start),
                "timestamp_end" => py_obj(py, client.timestamp_end),
                "timestamp_tls_setup" => py_obj(py, client.timestamp_tls_setup),
                "proxy_mode" => py_obj(py, client.proxy_mode.clone()),
                "error" => py_obj(py, client.error.clone()),
                "sni" if client.tls.is_none() => py_obj(py, Option::<String>::None),
                n => tls_field(n),
            }
        } else {
            let Some(s) = server else {
                return match name {
                    "address"
                    | "peername"
                    | "sockname"
                    | "sni"
                    | "alpn"
                    | "tls_version"
                    | "cipher"
                    | "timestamp_start"
                    | "timestamp_end"
                    | "timestamp_tcp_setup"
                    | "timestamp_tls_setup"
                    | "error" => py_obj(py, Option::<String>::None),
                    "tls_established" | "tls" => py_obj(py, false),
                    "id" => py_obj(py, ""),
                    "via" => py_obj(py, via_of(None, &client)),
                    _ => Err(no_such(name)),
                };
            };
            match name {
                "via" => py_obj(py, via_of(Some(&s), &client)),
                "id" => py_obj(py, s.id.to_string()),
                "address" => py_obj(py, (s.address.host.clone(), s.address.port)),
                "peername" => py_obj(py, s.peername.map(addr)),
                "sockname" => py_obj(py, s.sockname.map(addr)),
                "tls" => py_obj(py, s.tls),
                "sni" => py_obj(py, s.sni.clone()),
                "timestamp_start" => py_obj(py, s.timestamp_start),
                "timestamp_tcp_setup" => py_obj(py, s.timestamp_tcp_setup),
                "timestamp_tls_setup" => py_obj(py, s.timestamp_tls_setup),
                "timestamp_end" => py_obj(py, s.timestamp_end),
                "error" => py_obj(py, s.error.clone()),
                n => tls_field(n),
            }
        }
    }

    /// `flow.server_conn.via = ServerSpec(...)` (`None`: straight to the server): the
    /// upstream proxy this flow's request goes through, whatever the mode's. A connection
    /// already open is left to others: the flow gets a server of its own.
    fn set_via(&mut self, spec: Option<(String, (String, u16))>) -> PyResult<()> {
        let via = match spec {
            None => Via::Direct,
            Some((scheme, (host, port))) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => ProxyScheme::Http,
                    "https" => ProxyScheme::Https,
                    "socks5" => ProxyScheme::Socks5,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "waylay reaches upstream proxies over http, https or socks5, not {other}"
                        )));
                    }
                };
                Via::Proxy(UpstreamProxy {
                    scheme,
                    address: Address::new(host, port),
                    credentials: None,
                })
            }
        };
        let f = self.http()?;
        let mut server = match &f.server {
            Some(s) => Server::clone(s),
            None => Server::new(Address::new(f.request.host.to_string(), f.request.port)),
        };
        server.via = Some(via);
        f.server = Some(Arc::new(server));
        Ok(())
    }

    /// `flow.server_conn = Server(address=...)`: a server connection not open yet, to
    /// `address` (`None`: the request's).
    fn new_server(&mut self, address: Option<(String, u16)>) -> PyResult<()> {
        let f = self.http()?;
        let (host, port) = address.unwrap_or_else(|| (f.request.host.to_string(), f.request.port));
        f.server = Some(Arc::new(Server::new(Address::new(host, port))));
        Ok(())
    }

    // ---- WebSocket and TCP messages ----

    /// Number of messages (WebSocket for an HTTP flow, else TCP).
    fn msg_count(&mut self) -> PyResult<usize> {
        if let Data::Tcp { .. } = self.data {
            return Ok(self.tcp()?.messages.len());
        }
        Ok(self
            .http()?
            .websocket
            .as_ref()
            .map_or(0, |w| w.messages.len()))
    }

    fn msg_get(&mut self, py: Python<'_>, i: usize, name: &str) -> PyResult<Py<PyAny>> {
        if let Data::Tcp { .. } = self.data {
            let m = tcp_msg(self.tcp()?, i)?;
            return match name {
                "content" => py_obj(py, PyBytes::new(py, &m.content)),
                "from_client" => py_obj(py, m.from_client),
                "timestamp" => py_obj(py, m.timestamp),
                "injected" => py_obj(py, m.injected),
                _ => Err(no_such(name)),
            };
        }
        let m = ws_msg(self.http()?, i)?;
        match name {
            "content" => py_obj(py, PyBytes::new(py, &m.content)),
            "from_client" => py_obj(py, m.from_client),
            "is_text" => py_obj(py, m.kind == WebSocketMessageKind::Text),
            "timestamp" => py_obj(py, m.timestamp),
            "dropped" => py_obj(py, m.dropped),
            "injected" => py_obj(py, m.injected),
            _ => Err(no_such(name)),
        }
    }

    fn msg_set(&mut self, i: usize, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Data::Tcp { .. } = self.data {
            let m = tcp_msg(self.tcp()?, i)?;
            return match name {
                "content" => {
                    m.content = to_bytes(value)?;
                    Ok(())
                }
                _ => Err(no_such(name)),
            };
        }
        let m = ws_msg(self.http()?, i)?;
        match name {
            "content" => m.content = to_bytes(value)?,
            "is_text" => {
                m.kind = if value.extract()? {
                    WebSocketMessageKind::Text
                } else {
                    WebSocketMessageKind::Binary
                }
            }
            "dropped" => m.dropped = value.extract()?,
            _ => return Err(no_such(name)),
        }
        Ok(())
    }

    fn ws_get(&mut self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        let f = self.http()?;
        let Some(w) = f.websocket.as_ref() else {
            return py_obj(py, Option::<String>::None);
        };
        match name {
            "close_code" => py_obj(py, w.close_code),
            "close_reason" => py_obj(py, w.close_reason.clone()),
            "closed_by_client" => py_obj(py, w.closed_by_client),
            "timestamp_end" => py_obj(py, w.timestamp_end),
            _ => Err(no_such(name)),
        }
    }

    /// Sends a message into the live connection (mitmproxy's `inject.websocket` /
    /// `inject.tcp`): inside a hook it goes out after the hook, at any other time at once.
    #[pyo3(signature = (to_client, content, is_text = true))]
    fn inject(
        &mut self,
        to_client: bool,
        content: &Bound<'_, PyAny>,
        is_text: bool,
    ) -> PyResult<()> {
        let content = to_bytes(content)?;
        let kind = if is_text {
            WebSocketMessageKind::Text
        } else {
            WebSocketMessageKind::Binary
        };
        match &mut self.data {
            Data::Tcp {
                f,
                live: true,
                kept: false,
            } => {
                f.inject(to_client, content);
                Ok(())
            }
            Data::Tcp { .. } => match &self.tcp_injector {
                Some(i) => i.inject(to_client, content).map_err(body_err),
                None => Err(PyRuntimeError::new_err("the TCP connection is not live")),
            },
            Data::Http {
                f,
                live: true,
                kept: false,
            } => match f.websocket.as_mut() {
                Some(w) => {
                    w.inject(to_client, WebSocketMessage::new(kind, !to_client, content));
                    Ok(())
                }
                None => Err(PyRuntimeError::new_err("the flow has no WebSocket")),
            },
            _ => match &self.ws_injector {
                Some(i) => {
                    let mut m = WebSocketMessage::new(kind, !to_client, content);
                    m.injected = true;
                    i.inject(to_client, m).map_err(body_err)
                }
                None => Err(PyRuntimeError::new_err(
                    "the WebSocket connection is not live",
                )),
            },
        }
    }
}

impl Core {
    /// Stores the Python metadata dict (as JSON) on the flow, for other addons.
    pub(crate) fn set_metadata_json(&mut self, json: &str) -> PyResult<()> {
        let v: Metadata = serde_json::from_str(json).map_err(body_err)?;
        let (now, seen) = self.live_metadata().ok_or_else(detached)?;
        seen.clone_from(&v);
        *now = v;
        Ok(())
    }

    /// The live flow's metadata and [`Core::seen`] (`None` outside a hook).
    pub(crate) fn live_metadata(&mut self) -> Option<(&mut Metadata, &mut Metadata)> {
        let m = match &mut self.data {
            Data::Http {
                f,
                live: true,
                kept: false,
            } => &mut f.metadata,
            Data::Tcp {
                f,
                live: true,
                kept: false,
            } => &mut f.metadata,
            _ => return None,
        };
        Some((m, &mut self.seen))
    }
}

fn ws_msg(f: &mut HttpFlow, i: usize) -> PyResult<&mut WebSocketMessage> {
    f.websocket
        .as_mut()
        .and_then(|w| w.messages.get_mut(i))
        .ok_or_else(|| PyIndexError::new_err("no such WebSocket message"))
}

fn tcp_msg(f: &mut TcpFlow, i: usize) -> PyResult<&mut TcpMessage> {
    f.messages
        .get_mut(i)
        .ok_or_else(|| PyIndexError::new_err("no such TCP message"))
}

/// `mitmproxy.flowfilter`'s compiled filter: waylay's [`waylay_core::Filter`].
#[pyclass(module = "mitmproxy._waylay", name = "Filter")]
#[derive(Debug)]
pub(crate) struct PyFilter {
    filter: waylay_core::Filter,
    spec: String,
}

#[pymethods]
impl PyFilter {
    #[new]
    fn new(spec: &str) -> PyResult<Self> {
        let filter = waylay_core::Filter::parse(spec)
            .map_err(|e| PyValueError::new_err(format!("Invalid filter expression: {e}")))?;
        Ok(Self {
            filter,
            spec: spec.to_owned(),
        })
    }

    /// Whether the flow behind `core` matches.
    fn matches(&self, core: &Bound<'_, Core>) -> PyResult<bool> {
        let c = core.try_borrow()?;
        match &c.data {
            Data::Http { f, live: true, .. } => Ok(self.filter.matches(&**f)),
            Data::Tcp { f, live: true, .. } => Ok(self.filter.matches(&**f)),
            _ => Err(detached()),
        }
    }

    #[getter]
    fn pattern(&self) -> &str {
        &self.spec
    }

    fn __repr__(&self) -> String {
        format!("<Filter {}>", self.filter)
    }
}

/// A script's function set as `flow.request.stream` / `flow.response.stream`: each chunk of
/// the body goes through it on the way (with the GIL, on the connection's thread). It returns
/// `bytes` or an iterable of `bytes`; an exception is logged with its traceback and the chunk
/// goes on unchanged.
pub(crate) struct PyStreamFn {
    pub(crate) callable: Py<PyAny>,
}

impl waylay_core::flow::ChunkTransform for PyStreamFn {
    fn transform(&self, chunk: Bytes) -> Vec<Bytes> {
        super::host::keep_thread_state();
        Python::attach(|py| {
            let out = self
                .callable
                .call1(py, (PyBytes::new(py, &chunk),))
                .and_then(|r| {
                    let r = r.bind(py);
                    if let Ok(b) = r.cast::<PyBytes>() {
                        return Ok(vec![Bytes::copy_from_slice(b.as_bytes())]);
                    }
                    r.try_iter()?
                        .map(|c| c.and_then(|c| Ok(Bytes::from(c.extract::<Vec<u8>>()?))))
                        .collect()
                });
            out.unwrap_or_else(|e| {
                tracing::error!(
                    target: "script",
                    "error in a stream function:\n{}",
                    super::host::traceback(py, &e)
                );
                vec![chunk]
            })
        })
    }
}

/// `server_conn.via` as mitmproxy gives it, `(scheme, (host, port))`: the upstream proxy of
/// the flow's server, else of the mode the client came in by; `None` straight to the server.
fn via_of(server: Option<&Server>, client: &Client) -> Option<(String, (String, u16))> {
    let via = match server.and_then(|s| s.via.clone()) {
        Some(v) => v,
        None => match ModeSpec::parse(&client.proxy_mode).ok()?.mode {
            Mode::Upstream(p) => Via::Proxy(p),
            _ => return None,
        },
    };
    via.proxy().map(|p| {
        (
            p.scheme.as_str().to_owned(),
            (p.address.host.clone(), p.address.port),
        )
    })
}
