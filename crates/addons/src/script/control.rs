//! What a script changes in the proxy through `ctx`: options (`ctx.options.x = v`,
//! `ctx.options.update(...)`, `ctx.options.set("x=v")`) and `ctx.master.shutdown()`.
//!
//! A set is checked at once, in the script's call, against the current options (an unknown
//! name raises `KeyError`, a value of the wrong type `TypeError`, a bad value mitmproxy's
//! `OptionsError`), and the script reads the new value back at once. It is then applied
//! through the addon manager's `set`, as `--set` is: every addon's `configure` sees it
//! (this script's own too), right after the current hook. An addon that rejects the value
//! there makes the manager restore the old one; that is logged, and the script's view of
//! the options goes back to the old value.
//!
//! The manager comes from the script's `load` ([`Loader::manager`]): kept per thread (the
//! manager's, where sync hooks run) and process-wide (for `async def` hooks, which run on
//! the asyncio thread). A set made while the module is first imported, before any manager
//! exists, is applied when the script is added to one.
//!
//! [`Loader::manager`]: waylay_core::hooks::Loader::manager

use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use waylay_core::options::OptionType;
use waylay_core::{ManagerHandle, OptionValue, Options, OptionsError};

/// The manager a script talks to, and the thread it lives on.
#[derive(Debug, Clone)]
struct Control {
    manager: ManagerHandle,
    arbiter: actix::ArbiterHandle,
}

thread_local! {
    static HERE: RefCell<Option<Control>> = const { RefCell::new(None) };
}

/// The manager of the last script added anywhere (for the asyncio thread).
static LAST: Mutex<Option<Control>> = Mutex::new(None);

/// Sets asked for before any manager existed (while the module was first run).
static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `ctx.master.shutdown()` called before any manager existed.
static PENDING_SHUTDOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes `manager` the one scripts on this thread (and the asyncio thread) talk to; applies
/// what was asked before there was one. Call on the manager's thread.
pub(crate) fn attach(manager: &ManagerHandle) {
    let c = Control {
        manager: manager.clone(),
        arbiter: actix::Arbiter::current(),
    };
    HERE.with(|h| *h.borrow_mut() = Some(c.clone()));
    *locked(&LAST) = Some(c.clone());
    let pending = std::mem::take(&mut *locked(&PENDING));
    if !pending.is_empty() {
        apply(&c, pending);
    }
    if PENDING_SHUTDOWN.swap(false, std::sync::atomic::Ordering::AcqRel) {
        c.manager.request_shutdown();
    }
}

/// Forgets the manager (the script's `done`): the handle must not keep it alive.
pub(crate) fn detach() {
    HERE.with(|h| *h.borrow_mut() = None);
    *locked(&LAST) = None;
}

fn current() -> Option<Control> {
    HERE.with(|h| h.borrow().clone())
        .or_else(|| locked(&LAST).clone())
}

/// Sends `flow`'s request again through the proxy it came through, as a new flow marked a
/// replay (`replay.client`), in the background on the manager's thread; a failure is logged.
pub(crate) fn replay(flow: waylay_core::HttpFlow) -> Result<(), String> {
    let Some(c) = current() else {
        return Err("replay.client: the script is not running in a proxy".into());
    };
    let url = flow.request.url();
    tracing::debug!(target: "script", %url, "replay.client");
    c.arbiter.spawn(async move {
        let proxy = waylay_core::replay::proxy_addr(&flow);
        if let Err(e) = waylay_core::replay::replay(&c.manager, &flow, proxy).await {
            tracing::warn!(target: "script", "replay.client: {e}");
        }
    });
    Ok(())
}

/// Applies `specs` through the manager's `set` on its thread, after the current hook.
fn apply(c: &Control, specs: Vec<String>) {
    let manager = c.manager.clone();
    c.arbiter.spawn_fn(move || {
        actix::spawn(async move {
            if let Err(e) = manager.set(&specs).await {
                tracing::error!(target: "script", "ctx.options: {e}");
                // The script saw the new value at once: show it the restored one.
                super::host::keep_thread_state();
                Python::attach(|py| {
                    let r = values_dict(py, &manager.options()).and_then(|v| {
                        super::host::shim(py)?
                            .getattr("options_configured")?
                            .call1((v,))
                            .map(drop)
                    });
                    if let Err(e) = r {
                        tracing::error!(target: "script", "{}", super::host::one_line(py, &e));
                    }
                });
            }
        });
    });
}

/// A Python value of an option.
pub(crate) fn option_value(py: Python<'_>, v: &OptionValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        OptionValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        OptionValue::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        OptionValue::Str(s) => s.into_pyobject(py)?.into_any().unbind(),
        OptionValue::OptStr(s) => s.into_pyobject(py)?.into_any().unbind(),
        OptionValue::OptInt(i) => i.into_pyobject(py)?.into_any().unbind(),
        OptionValue::Seq(s) => PyTuple::new(py, s)?.into_any().unbind(),
    })
}

/// Every option's current value, by name (what `ctx.options` reads).
pub(crate) fn values_dict<'py>(py: Python<'py>, options: &Options) -> PyResult<Bound<'py, PyDict>> {
    let values = PyDict::new(py);
    for spec in options.specs() {
        if let Some(v) = options.get(&spec.name) {
            values.set_item(&spec.name, option_value(py, v)?)?;
        }
    }
    Ok(values)
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `name=value` specs for a Python value of an option of type `typ` (`None`: not known yet,
/// any plain value is taken as its text).
fn specs_for(name: &str, typ: Option<OptionType>, v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let wrong = |expected: &str| {
        PyTypeError::new_err(format!(
            "Expected {expected} for option {name}, but got {}",
            type_name(v)
        ))
    };
    let seq = |v: &Bound<'_, PyAny>| -> PyResult<Vec<String>> {
        let items: Vec<String> = if let Ok(l) = v.cast::<PyList>() {
            l.extract()
        } else if let Ok(t) = v.cast::<PyTuple>() {
            t.extract()
        } else {
            Err(wrong("a sequence of str"))
        }
        .map_err(|_| wrong("a sequence of str"))?;
        if items.is_empty() {
            return Ok(vec![format!("{name}=")]);
        }
        Ok(items.into_iter().map(|i| format!("{name}={i}")).collect())
    };
    let one = |s: String| Ok(vec![format!("{name}={s}")]);
    match typ {
        Some(OptionType::Bool) => match v.cast::<PyBool>() {
            Ok(b) => one(b.is_true().to_string()),
            Err(_) => Err(wrong("bool")),
        },
        Some(OptionType::Int) if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() => {
            one(v.extract::<i64>()?.to_string())
        }
        Some(OptionType::Int) => Err(wrong("int")),
        Some(OptionType::Str) => match v.cast::<PyString>() {
            Ok(s) => one(s.to_str()?.to_owned()),
            Err(_) => Err(wrong("str")),
        },
        Some(OptionType::OptStr) if v.is_none() => one(String::new()),
        Some(OptionType::OptStr) => match v.cast::<PyString>() {
            Ok(s) => one(s.to_str()?.to_owned()),
            Err(_) => Err(wrong("Optional[str]")),
        },
        Some(OptionType::OptInt) if v.is_none() => one(String::new()),
        Some(OptionType::OptInt)
            if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() =>
        {
            one(v.extract::<i64>()?.to_string())
        }
        Some(OptionType::OptInt) => Err(wrong("Optional[int]")),
        Some(OptionType::Seq) => seq(v),
        None if v.is_none() => one(String::new()),
        None if v.is_instance_of::<PyBool>() => one(v.extract::<bool>()?.to_string()),
        None if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() => seq(v),
        None => one(v.str()?.to_str()?.to_owned()),
    }
}

/// What a set came to, for the shim: `("ok", new values)` or `(error kind, message)`.
fn error(py: Python<'_>, e: &OptionsError) -> PyResult<Py<PyAny>> {
    let kind = match e {
        OptionsError::Unknown { name, .. } => {
            return Err(PyKeyError::new_err(format!("Unknown options: {name}")));
        }
        _ => "OptionsError",
    };
    Ok(PyTuple::new(py, [kind.to_owned(), e.to_string()])?
        .into_any()
        .unbind())
}

/// Checks `specs` against the current options and applies them; the values that changed,
/// or why not.
fn check_and_apply(py: Python<'_>, specs: Vec<String>) -> PyResult<Py<PyAny>> {
    let Some(c) = current() else {
        locked(&PENDING).extend(specs);
        return Ok(PyTuple::new(py, ["pending"])?.into_any().unbind());
    };
    let now = c.manager.options();
    let mut next = Options::clone(&now);
    let changed = match next.set_specs(&specs) {
        Ok(ch) => ch,
        Err(e) => return error(py, &e),
    };
    let values = PyDict::new(py);
    for name in &changed {
        if let Some(v) = next.get(name) {
            values.set_item(name, option_value(py, v)?)?;
        }
    }
    if !changed.is_empty() {
        apply(&c, specs);
    }
    Ok(
        PyTuple::new(py, [PyString::new(py, "ok").into_any(), values.into_any()])?
            .into_any()
            .unbind(),
    )
}

/// `_waylay.set_options([(name, value), ...])`: `ctx.options.name = value` and
/// `ctx.options.update(...)`.
#[pyfunction]
pub(crate) fn set_options(
    py: Python<'_>,
    pairs: Vec<(String, Bound<'_, PyAny>)>,
) -> PyResult<Py<PyAny>> {
    let known = current().map(|c| c.manager.options());
    let mut specs = Vec::new();
    let mut unknown = Vec::new();
    for (name, v) in &pairs {
        let typ = match &known {
            Some(o) => match o.specs().find(|s| &s.name == name) {
                Some(s) => Some(s.typ),
                None => {
                    unknown.push(name.clone());
                    continue;
                }
            },
            None => None,
        };
        specs.extend(specs_for(name, typ, v)?);
    }
    if !unknown.is_empty() {
        return Err(PyKeyError::new_err(format!(
            "Unknown options: {}",
            unknown.join(", ")
        )));
    }
    check_and_apply(py, specs)
}

/// `_waylay.set_specs(["name=value", ...])`: `ctx.options.set(...)`, as `--set` takes them.
#[pyfunction]
pub(crate) fn set_specs(py: Python<'_>, specs: Vec<String>) -> PyResult<Py<PyAny>> {
    check_and_apply(py, specs)
}

/// `_waylay.shutdown()`: `ctx.master.shutdown()`.
#[pyfunction]
pub(crate) fn shutdown() {
    match current() {
        Some(c) => c.manager.request_shutdown(),
        None => PENDING_SHUTDOWN.store(true, std::sync::atomic::Ordering::Release),
    }
}
