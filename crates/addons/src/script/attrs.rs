//! Native descriptors for the two attributes nearly every HTTP hook reads on its way to a
//! header: `flow.response` and `message.headers`. As Python properties each cost a Python
//! frame per read; as descriptors written in Rust they read the object's slots directly.
//! The slots are read at their offsets ([`super::slots`]), not through `getattr`.
//! What they return is the shim's (its `Response` and `_FlowHeaders` views, made once per
//! flow object and kept in its slots), and assigning goes to the shim's setters.

use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;

use super::core::Core;
use super::slots::{is_a, slots};

/// `Message.headers`: the message's `_FlowHeaders` view, made on first use and kept in the
/// `_headers` slot; assigning calls the shim's setter (headers replaced in the flow).
#[pyclass(module = "mitmproxy._waylay", frozen)]
#[derive(Debug)]
pub(crate) struct HeadersAttr {
    /// `_FlowHeaders(core, side)`.
    make: Py<PyAny>,
    /// `set(message, value)`.
    set: Py<PyAny>,
}

#[pymethods]
impl HeadersAttr {
    #[new]
    fn new(make: Py<PyAny>, set: Py<PyAny>) -> Self {
        Self { make, set }
    }

    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(slf.clone().into_any().unbind());
        };
        let s = slots(py)?;
        if !is_a(obj, &s.message) {
            return Err(PyTypeError::new_err("headers: not a Request or Response"));
        }
        if let Some(h) = s.headers.get(obj).filter(|h| !h.is_none()) {
            return Ok(h.unbind());
        }
        let (Some(core), Some(side)) = (s.msg_core.get(obj), s.msg_side.get(obj)) else {
            return Err(PyAttributeError::new_err(
                "headers: the message is not bound",
            ));
        };
        let h = slf.get().make.bind(py).call1((core, side))?;
        s.headers.set(obj, h.clone());
        Ok(h.unbind())
    }

    fn __set__(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.set.bind(py).call1((obj, value))?;
        Ok(())
    }
}

/// `HTTPFlow.response`: `None` when the flow has no response, else its `Response` view,
/// made on first use and kept in the `_resp` slot; assigning calls the shim's setter.
#[pyclass(module = "mitmproxy._waylay", frozen)]
#[derive(Debug)]
pub(crate) struct ResponseAttr {
    /// `Response._wrap(core, 1)`.
    make: Py<PyAny>,
    /// `set(flow, value)`.
    set: Py<PyAny>,
}

#[pymethods]
impl ResponseAttr {
    #[new]
    fn new(make: Py<PyAny>, set: Py<PyAny>) -> Self {
        Self { make, set }
    }

    fn __get__(
        slf: &Bound<'_, Self>,
        obj: Option<&Bound<'_, PyAny>>,
        _owner: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(slf.clone().into_any().unbind());
        };
        let s = slots(py)?;
        if !is_a(obj, &s.http_flow) {
            return Err(PyTypeError::new_err("response: not an HTTPFlow"));
        }
        let Some(core) = s.flow_core.get(obj) else {
            return Err(PyAttributeError::new_err("response: the flow is not bound"));
        };
        let has = core.cast::<Core>()?.try_borrow_mut()?.has_response()?;
        if !has {
            return Ok(py.None());
        }
        if let Some(r) = s.resp.get(obj).filter(|r| !r.is_none()) {
            return Ok(r.unbind());
        }
        let r = slf.get().make.bind(py).call1((core, 1))?;
        s.resp.set(obj, r.clone());
        Ok(r.unbind())
    }

    fn __set__(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.set.bind(py).call1((obj, value))?;
        Ok(())
    }
}
