//! `HeadersView`: the native base of the shim's `_FlowHeaders`, the headers (or trailers) of
//! a request or response inside waylay. The operations a hook uses most (`h[k]`, `h[k] = v`,
//! `del h[k]`, `k in h`, `get`, `get_all`, `add`) are type slots and methods of this class,
//! so they run without a Python frame: a Python `__setitem__` calling into Rust cost a frame
//! and a method lookup more than the header edit itself. The rest of mitmproxy's multidict
//! API comes from the shim's Python classes, over `h_fields`/`h_set_fields`.

use std::borrow::Cow;

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::core::{Core, to_bytes};

/// A live view of one header map of a [`Core`]: side 0/1 the request's/response's headers,
/// 2/3 their trailers.
#[pyclass(module = "mitmproxy._waylay", subclass)]
#[derive(Debug)]
pub(crate) struct HeadersView {
    core: Py<Core>,
    side: u8,
}

#[pymethods]
impl HeadersView {
    #[new]
    #[pyo3(signature = (core, side, *_rest))]
    fn new(core: Py<Core>, side: u8, _rest: &Bound<'_, pyo3::types::PyTuple>) -> Self {
        Self { core, side }
    }

    #[getter]
    fn _c(&self, py: Python<'_>) -> Py<Core> {
        self.core.clone_ref(py)
    }

    #[getter]
    fn _side(&self) -> u8 {
        self.side
    }

    /// Follows its message to another core (a message moved into or out of a flow).
    fn _rebind(&mut self, core: Py<Core>) {
        self.core = core;
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let key = name(key)?;
        let mut c = self.core.bind(py).try_borrow_mut()?;
        match c.hdrs(self.side)?.get_bytes(&key) {
            Some(v) => text(py, v),
            None => Err(PyKeyError::new_err(key.into_owned())),
        }
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = name(key)?;
        let v = to_bytes(value)?;
        let mut c = self.core.bind(py).try_borrow_mut()?;
        c.hdrs(self.side)?.insert(key.into_owned(), v);
        Ok(())
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = name(key)?;
        let mut c = self.core.bind(py).try_borrow_mut()?;
        if c.hdrs(self.side)?.remove(&key) == 0 {
            return Err(PyKeyError::new_err(key.into_owned()));
        }
        Ok(())
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        // A bytes key is looked up as its text, as mitmproxy does; any other key is in no
        // header map (as a dict answers, no error).
        let key = if let Ok(k) = key.cast::<pyo3::types::PyBytes>() {
            String::from_utf8_lossy(k.as_bytes()).into_owned()
        } else if let Ok(k) = key.extract::<String>() {
            k
        } else {
            return Ok(false);
        };
        let mut c = self.core.bind(py).try_borrow_mut()?;
        Ok(c.hdrs(self.side)?.contains(&key))
    }

    #[pyo3(signature = (key, default = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let key = name(key)?;
        let mut c = self.core.bind(py).try_borrow_mut()?;
        match c.hdrs(self.side)?.get_bytes(&key) {
            Some(v) => text(py, v),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    fn get_all(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyAny>>> {
        let key = name(key)?;
        let mut c = self.core.bind(py).try_borrow_mut()?;
        c.hdrs(self.side)?
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&key))
            .map(|(_, v)| text(py, v))
            .collect()
    }

    fn add(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = name(key)?;
        let v = to_bytes(value)?;
        let mut c = self.core.bind(py).try_borrow_mut()?;
        c.hdrs(self.side)?.append(key.into_owned(), v);
        Ok(())
    }
}

/// A header name as a script gives it: `str`, or `bytes` read as UTF-8 (mitmproxy takes
/// both, and finds the same field with either).
fn name<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, str>> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(Cow::Borrowed(s.to_str()?));
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(Cow::Owned(
            String::from_utf8_lossy(b.as_bytes()).into_owned(),
        ));
    }
    Err(PyTypeError::new_err(format!(
        "header names are str or bytes, not {}",
        key.get_type().name()?
    )))
}

/// A header value as text, as mitmproxy reads it: UTF-8, any other byte kept as a surrogate
/// escape (so writing the text back gives the same bytes).
fn text(py: Python<'_>, v: &[u8]) -> PyResult<Py<PyAny>> {
    match std::str::from_utf8(v) {
        Ok(s) => Ok(PyString::new(py, s).into_any().unbind()),
        Err(_) => Ok(PyBytes::new(py, v)
            .call_method1("decode", ("utf-8", "surrogateescape"))?
            .unbind()),
    }
}
