//! `flow.metadata`: one dict shared by the script and the Rust addons, as mitmproxy's is
//! shared by all its addons.
//!
//! The script's dict is a Python dict of its own (a script may keep Python objects in it);
//! the flow's metadata is JSON values. When a hook starts, what the Rust addons changed since
//! the script's last hook (per key: set, changed or removed, against [`Core::seen`]) is
//! written into the dict; when it returns, the dict is the flow's metadata. So a key holds
//! its last write, whichever side made it, and a key neither side touched keeps its Python
//! object. A dict the script reassigned (`flow.metadata = {...}`) is followed, and replaces
//! the flow's metadata as a whole, as the reassignment does in mitmproxy.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use serde_json::Value;

use super::core::Core;
use super::host;

/// Brings what Rust addons wrote in the flow's metadata since the script's last hook into
/// the script's dict `dict`, key by key.
pub(super) fn merge_in(py: Python<'_>, core: &Py<Core>, dict: &Bound<'_, PyDict>) {
    let mut c = super::borrow_waiting(py, core);
    let Some((now, seen)) = c.live_metadata() else {
        return;
    };
    if now == seen {
        return;
    }
    for (k, v) in now.iter() {
        if seen.get(k) == Some(v) {
            continue;
        }
        if let Err(e) = to_py(py, v).and_then(|o| dict.set_item(k, o)) {
            tracing::warn!(target: "script", "flow.metadata[{k:?}]: {}", host::one_line(py, &e));
        }
    }
    for k in seen.keys() {
        if !now.contains_key(k) {
            // Absent from the dict already (the script removed it too): nothing to do.
            let _ = dict.del_item(k);
        }
    }
    seen.clone_from(now);
}

/// Makes the script's dict (the one `flow.metadata` holds now, which `meta` then follows)
/// the flow's metadata, for the Rust addons after the script.
pub(super) fn sync_out(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    core: &Py<Core>,
    meta: &mut Py<PyDict>,
) {
    let replaced = follow(obj, meta);
    let dict = meta.bind(py);
    if dict.is_empty() {
        let mut c = super::borrow_waiting(py, core);
        if let Some((now, seen)) = c.live_metadata()
            && (replaced || !seen.is_empty())
        {
            now.clear();
            seen.clear();
        }
        return;
    }
    // No borrow of the core while Python runs (a value's `repr` may read the flow).
    let json = host::fns(py)
        .and_then(|f| f.metadata_json.bind(py).call1((dict,)))
        .and_then(|s| s.extract::<String>());
    match json {
        Ok(json) => {
            if let Err(e) = super::borrow_waiting(py, core).set_metadata_json(&json) {
                tracing::warn!(target: "script", "flow.metadata: {}", host::one_line(py, &e));
            }
        }
        Err(e) => {
            tracing::warn!(target: "script", "flow.metadata: {}", host::one_line(py, &e));
        }
    }
}

/// The dict `flow.metadata` holds now, if the script replaced the one `meta` is (a script
/// may reassign `flow.metadata = {...}`, as mitmproxy allows); `meta` then becomes it.
pub(super) fn follow(obj: &Bound<'_, PyAny>, meta: &mut Py<PyDict>) -> bool {
    let py = obj.py();
    // `obj` is a flow object the shim made: its slots may be read.
    let Some(now) = super::slots::slots(py)
        .ok()
        .and_then(|s| s.metadata.get(obj))
    else {
        return false;
    };
    if now.is(meta.bind(py)) {
        return false;
    }
    match now.cast_into::<PyDict>() {
        Ok(d) => {
            *meta = d.unbind();
            true
        }
        Err(_) => {
            tracing::warn!(target: "script", "flow.metadata is not a dict; the last dict is kept");
            false
        }
    }
}

/// A JSON value as Python's `json.loads` gives it.
fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(to_py(py, x)?)?;
            }
            l.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}
