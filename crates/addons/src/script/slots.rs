//! The `__slots__` of the shim's flow and message classes, read and written from Rust at
//! their offsets, as CPython's own member descriptors do. Every hook reads a few of them
//! (the flow's `metadata`, its request/response views, their headers views); through
//! `getattr` each read is a type lookup and a descriptor call, here it is one load.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// One `__slots__` member of a class: its offset in the class's instances (and in its
/// subclasses', which extend the layout).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    offset: isize,
}

impl Slot {
    /// The slot `name` that `cls` defines (its member descriptor).
    fn of(cls: &Bound<'_, PyType>, name: &str) -> PyResult<Self> {
        let d = cls.getattr(name)?;
        #[expect(
            unsafe_code,
            reason = "a member descriptor's offset has no safe accessor in PyO3"
        )]
        // SAFETY: `d` is checked to be a member descriptor (`PyMemberDescr_Type`, exactly),
        // whose layout is `PyMemberDescrObject`, and its `d_member` points at the
        // `PyMemberDef` the type was built with, alive as long as the type.
        let (code, offset) = unsafe {
            if ffi::Py_TYPE(d.as_ptr()) != &raw mut ffi::PyMemberDescr_Type {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "{name} is not a slot"
                )));
            }
            let m = (*d.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member;
            ((*m).type_code, (*m).offset)
        };
        if code != ffi::Py_T_OBJECT_EX {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "{name} is not an object slot"
            )));
        }
        Ok(Self { offset })
    }

    /// The slot's value on `obj` (`None` when unset). `obj` must be an instance of the class
    /// the slot was read from (callers hold objects the shim made, or check the type).
    pub(crate) fn get<'py>(self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        #[expect(unsafe_code, reason = "reads an object's slot at its offset")]
        // SAFETY: `obj` is an instance of the slot's class (the caller's contract), so a
        // `PyObject*` lives at `offset`; it is null or a strong reference the object holds,
        // and the attached thread (`Bound`) keeps it alive while it is borrowed here.
        unsafe {
            let p = *obj
                .as_ptr()
                .cast::<u8>()
                .offset(self.offset)
                .cast::<*mut ffi::PyObject>();
            (!p.is_null()).then(|| Bound::from_borrowed_ptr(obj.py(), p))
        }
    }

    /// Whether the slot holds `None` or nothing.
    pub(crate) fn is_none(self, obj: &Bound<'_, PyAny>) -> bool {
        self.get(obj).is_none_or(|v| v.is_none())
    }

    /// Sets the slot on `obj` (same contract as [`Slot::get`]).
    pub(crate) fn set(self, obj: &Bound<'_, PyAny>, value: Bound<'_, PyAny>) {
        #[expect(unsafe_code, reason = "writes an object's slot at its offset")]
        // SAFETY: as in `get`; the slot takes `value`'s reference and the old value's
        // reference is released after the write, as CPython's member descriptor does.
        unsafe {
            let slot = obj
                .as_ptr()
                .cast::<u8>()
                .offset(self.offset)
                .cast::<*mut ffi::PyObject>();
            let old = std::mem::replace(&mut *slot, value.into_ptr());
            ffi::Py_XDECREF(old);
        }
    }
}

/// The slots waylay reads on every hook.
#[derive(Debug)]
pub(crate) struct Slots {
    /// `Flow`: `_c`, `metadata`.
    pub(crate) flow_core: Slot,
    pub(crate) metadata: Slot,
    /// `HTTPFlow`: `_req`, `_resp`, `_ws`.
    pub(crate) req: Slot,
    pub(crate) resp: Slot,
    pub(crate) ws: Slot,
    /// `Message`: `_c`, `_side`, `_headers`.
    pub(crate) msg_core: Slot,
    pub(crate) msg_side: Slot,
    pub(crate) headers: Slot,
    /// `HTTPFlow` and `Message`, to check what a descriptor is called on.
    pub(crate) http_flow: Py<PyType>,
    pub(crate) message: Py<PyType>,
}

static SLOTS: PyOnceLock<Slots> = PyOnceLock::new();

/// The slots, looked up in the shim once.
pub(crate) fn slots(py: Python<'_>) -> PyResult<&Slots> {
    SLOTS.get_or_try_init(py, || {
        let cls = |module: &str, n: &str| -> PyResult<Bound<'_, PyType>> {
            Ok(py.import(module)?.getattr(n)?.cast_into()?)
        };
        let flow = cls("mitmproxy.flow", "Flow")?;
        let http = cls("mitmproxy.http", "HTTPFlow")?;
        let message = cls("mitmproxy.http", "Message")?;
        Ok(Slots {
            flow_core: Slot::of(&flow, "_c")?,
            metadata: Slot::of(&flow, "metadata")?,
            req: Slot::of(&http, "_req")?,
            resp: Slot::of(&http, "_resp")?,
            ws: Slot::of(&http, "_ws")?,
            msg_core: Slot::of(&message, "_c")?,
            msg_side: Slot::of(&message, "_side")?,
            headers: Slot::of(&message, "_headers")?,
            http_flow: http.unbind(),
            message: message.unbind(),
        })
    })
}

/// Whether `obj` is an instance of `cls` (or of a subclass), whose slots may be read.
pub(crate) fn is_a(obj: &Bound<'_, PyAny>, cls: &Py<PyType>) -> bool {
    #[expect(
        unsafe_code,
        reason = "PyObject_TypeCheck is a C macro PyO3 exposes as unsafe"
    )]
    // SAFETY: both pointers are live objects (a `Bound` and a type the caller holds).
    unsafe {
        ffi::PyObject_TypeCheck(obj.as_ptr(), cls.as_ptr().cast()) != 0
    }
}

/// `obj.__dict__` (the attributes a script set on a flow object), read as its `__dict__`
/// descriptor reads it, without the attribute lookup; `None` if the object has none.
pub(crate) fn instance_dict<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    #[expect(
        unsafe_code,
        reason = "PyO3 has no safe wrapper for the generic __dict__ getter"
    )]
    // SAFETY: `obj` is a live object on an attached thread; the call returns a new reference
    // or null with an exception set, which `from_owned_ptr_or_err` takes.
    unsafe {
        let d = ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(obj.py(), d).ok()
    }
}
