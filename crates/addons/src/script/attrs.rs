//! Native descriptors for the two attributes nearly every HTTP hook reads on its way to a
//! header: `flow.response` and `message.headers`. As Python properties each cost a Python
//! frame per read; as descriptors written in Rust they read the object's slots directly.
//! What they return is the shim's (its `Response` and `_FlowHeaders` views, made once per
//! flow object and kept in its slots), and assigning goes to the shim's setters.

use pyo3::prelude::*;

use super::core::Core;

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
        let slot = pyo3::intern!(py, "_headers");
        let h = obj.getattr(slot)?;
        if !h.is_none() {
            return Ok(h.unbind());
        }
        let core = obj.getattr(pyo3::intern!(py, "_c"))?;
        let side = obj.getattr(pyo3::intern!(py, "_side"))?;
        let h = slf.get().make.bind(py).call1((core, side))?;
        obj.setattr(slot, &h)?;
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
        let core = obj.getattr(pyo3::intern!(py, "_c"))?;
        let has = core.cast::<Core>()?.try_borrow_mut()?.has_response()?;
        if !has {
            return Ok(py.None());
        }
        let slot = pyo3::intern!(py, "_resp");
        let r = obj.getattr(slot)?;
        if !r.is_none() {
            return Ok(r.unbind());
        }
        let r = slf.get().make.bind(py).call1((core, 1))?;
        obj.setattr(slot, &r)?;
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
