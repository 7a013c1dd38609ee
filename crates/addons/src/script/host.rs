//! The embedded interpreter: started once per process, with the `mitmproxy` shim and the
//! native `_waylay` module installed, and a Python thread state kept alive on every thread
//! that calls into it.

use std::cell::Cell;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::core::Core;

/// The Python source of the `mitmproxy` shim, embedded in the binary.
const SHIM: &str = include_str!("shim/mitmproxy_shim.py");

thread_local! {
    static THREAD_STATE_KEPT: Cell<bool> = const { Cell::new(false) };
}

static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

/// Starts the interpreter and installs the shim (once per process); the error is the
/// Python exception, on one line.
pub(crate) fn ensure_started() -> Result<(), String> {
    STARTED
        .get_or_init(|| {
            Python::initialize();
            keep_thread_state();
            Python::attach(|py| install(py).map_err(|e| one_line(py, &e)))
        })
        .clone()
}

/// Keeps a Python thread state alive on this thread for the thread's life.
///
/// Attaching to the interpreter from a thread without one creates and destroys a thread
/// state on every call (~7 µs, `../shared/research/python-scripting.md`); with one kept,
/// attaching is taking the GIL (~0.2 µs). Must be called while this thread is not attached.
pub(crate) fn keep_thread_state() {
    if THREAD_STATE_KEPT.with(Cell::get) {
        return;
    }
    #[expect(
        unsafe_code,
        reason = "CPython's thread-state API has no safe wrapper in PyO3"
    )]
    // SAFETY: the interpreter is initialised (ensure_started runs first) and this thread is
    // not attached (callers never call this inside `Python::attach`). `PyGILState_Ensure`
    // creates this thread's state and takes the GIL; `PyEval_SaveThread` releases the GIL
    // while leaving the state (and the GILState counter at 1) in place, so later
    // Ensure/Release pairs on this thread, PyO3's among them, reuse it. It is never freed:
    // one small state per thread that runs hooks.
    unsafe {
        let _state = pyo3::ffi::PyGILState_Ensure();
        pyo3::ffi::PyEval_SaveThread();
    }
    THREAD_STATE_KEPT.with(|c| c.set(true));
}

fn install(py: Python<'_>) -> PyResult<()> {
    let native = PyModule::new(py, "_waylay")?;
    native.add_class::<Core>()?;
    native.add_class::<super::core::PyFilter>()?;
    native.add_class::<super::headers::HeadersView>()?;
    native.add_class::<super::attrs::HeadersAttr>()?;
    native.add_class::<super::attrs::ResponseAttr>()?;
    native.add_class::<super::Waker>()?;
    native.add_function(wrap_pyfunction!(log, &native)?)?;
    native.add_function(wrap_pyfunction!(super::control::set_options, &native)?)?;
    native.add_function(wrap_pyfunction!(super::control::set_specs, &native)?)?;
    native.add_function(wrap_pyfunction!(super::control::shutdown, &native)?)?;
    let sys = py.import("sys")?;
    sys.getattr("modules")?.set_item("_waylay", &native)?;
    let globals = PyDict::new(py);
    globals.set_item("__name__", "_waylay_shim")?;
    let code = std::ffi::CString::new(SHIM)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    py.run(&code, Some(&globals), None)?;
    Ok(())
}

/// `_waylay.log(level, logger, message)`: a record from a script (Python `logging` or
/// `ctx.log`), emitted as a `tracing` event of target `script`.
#[pyfunction]
fn log(level: i32, logger: &str, message: &str) {
    // Python's levels: DEBUG 10, INFO 20, WARNING 30, ERROR 40, CRITICAL 50.
    match level {
        ..=10 => tracing::debug!(target: "script", script = logger, "{message}"),
        11..=20 => tracing::info!(target: "script", script = logger, "{message}"),
        21..=30 => tracing::warn!(target: "script", script = logger, "{message}"),
        _ => tracing::error!(target: "script", script = logger, "{message}"),
    }
}

/// The exception as one line: `Type: message`.
pub(crate) fn one_line(py: Python<'_>, e: &PyErr) -> String {
    let ty = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let msg = e.value(py).to_string();
    format!("{ty}: {msg}").replace(['\n', '\r'], " ")
}

/// The exception with its traceback, as Python prints it.
pub(crate) fn traceback(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let lines = tb.call_method1(
            "format_exception",
            (e.get_type(py), e.value(py), e.traceback(py)),
        )?;
        let s: Vec<String> = lines.extract()?;
        Ok(s.concat())
    });
    formatted
        .unwrap_or_else(|_| one_line(py, e))
        .trim_end()
        .to_owned()
}

/// The shim module (`_waylay_shim` globals are reachable through `mitmproxy._host`).
pub(crate) fn shim(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("mitmproxy._host")
}

/// The shim functions a hook calls, looked up once (an import per hook would cost more than
/// the hook).
#[derive(Debug)]
pub(crate) struct ShimFns {
    pub(crate) wrap_http: Py<PyAny>,
    pub(crate) wrap_tcp: Py<PyAny>,
    pub(crate) metadata_json: Py<PyAny>,
    pub(crate) run_async: Py<PyAny>,
    pub(crate) conn_hook_arg: Py<PyAny>,
}

static SHIM_FNS: pyo3::sync::PyOnceLock<ShimFns> = pyo3::sync::PyOnceLock::new();

pub(crate) fn fns(py: Python<'_>) -> PyResult<&ShimFns> {
    SHIM_FNS.get_or_try_init(py, || {
        let m = shim(py)?;
        Ok(ShimFns {
            wrap_http: m.getattr("wrap_http")?.unbind(),
            wrap_tcp: m.getattr("wrap_tcp")?.unbind(),
            metadata_json: m.getattr("metadata_json")?.unbind(),
            run_async: m.getattr("run_async")?.unbind(),
            conn_hook_arg: m.getattr("conn_hook_arg")?.unbind(),
        })
    })
}
