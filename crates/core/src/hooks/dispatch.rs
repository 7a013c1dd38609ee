//! Running one hook on one addon: learning whether it is handled, and keeping `log` from
//! recursing.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::options::OptionsError;

thread_local! {
    static UNHANDLED: Cell<bool> = const { Cell::new(false) };
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
}

/// Called by the default hook bodies: marks the running hook as not handled by this addon.
///
/// Addon authors never call it; it is public so the generated defaults can.
#[doc(hidden)]
pub fn not_handled() {
    UNHANDLED.with(|c| c.set(true));
}

/// Whether the current thread is inside an addon's `log` hook (records emitted there are not
/// delivered to addons, so logging from `log` cannot recurse).
pub fn in_log_hook() -> bool {
    IN_LOG.with(Cell::get)
}

/// How an addon runs one hook, as chosen by [`Addon::begin`](crate::Addon::begin).
pub enum Begin {
    /// Through the addon's method, one hook at a time (every addon's default).
    Method(crate::hooks::Hook),
    /// In a future that no longer holds the addon, so the addon's next hook may start while
    /// this one waits (a scripting host whose hooks await I/O). It must give the payload
    /// back in every case, its own deadline included: on the deadline it returns the hook
    /// with [`Fault::Timeout`](crate::Fault::Timeout).
    Detached(Pin<Box<dyn Future<Output = (crate::hooks::Hook, Option<crate::Fault>)>>>),
}

impl std::fmt::Debug for Begin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Method(h) => f.debug_tuple("Method").field(&h.kind()).finish(),
            Self::Detached(_) => f.write_str("Detached"),
        }
    }
}

/// What a hook method returned.
#[derive(Debug)]
pub enum HookOutput {
    /// Most hooks return nothing.
    Unit,
    /// `configure`'s verdict.
    Configure(Result<(), OptionsError>),
}

impl From<()> for HookOutput {
    fn from(_: ()) -> Self {
        Self::Unit
    }
}

impl From<Result<(), OptionsError>> for HookOutput {
    fn from(r: Result<(), OptionsError>) -> Self {
        Self::Configure(r)
    }
}

/// Wraps a hook future: around every poll it clears the "not handled" flag and reads it back,
/// so hooks of other addons polled in between on the same thread cannot be confused with this
/// one; during a `log` hook it also sets the no-recursion flag.
pub(crate) struct TrackUnhandled<F> {
    inner: Pin<Box<F>>,
    is_log: bool,
    pub(crate) unhandled: bool,
}

impl<F: Future> TrackUnhandled<F> {
    pub(crate) fn new(inner: F, is_log: bool) -> Self {
        Self {
            inner: Box::pin(inner),
            is_log,
            unhandled: false,
        }
    }
}

impl<F: Future> Future for TrackUnhandled<F> {
    type Output = (F::Output, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let prev_log = IN_LOG.with(|c| c.replace(self.is_log));
        let prev = UNHANDLED.with(|c| c.replace(false));
        let r = self.inner.as_mut().poll(cx);
        let hit = UNHANDLED.with(|c| c.replace(prev));
        IN_LOG.with(|c| c.set(prev_log));
        self.unhandled |= hit;
        match r {
            Poll::Ready(v) => Poll::Ready((v, self.unhandled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `f` with delivery of log records to addons turned off on this thread (for records
/// about a failing `log` hook, which would otherwise feed themselves back).
pub fn with_log_suppressed<R>(f: impl FnOnce() -> R) -> R {
    let prev = IN_LOG.with(|c| c.replace(true));
    let r = f();
    IN_LOG.with(|c| c.set(prev));
    r
}
