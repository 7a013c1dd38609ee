//! Running one hook on one addon: learning whether it is handled, and keeping `log` from
//! recursing.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

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

/// What a hook method returned, as the manager carries it back: `configure`'s rejection,
/// boxed (every other hook returns nothing), so that a hook's reply stays small (it is moved
/// several times per addon per hook).
#[derive(Debug, Default)]
pub(crate) struct Verdict(pub(crate) Option<Box<OptionsError>>);

impl From<()> for Verdict {
    fn from(_: ()) -> Self {
        Self(None)
    }
}

impl From<Result<(), OptionsError>> for Verdict {
    fn from(r: Result<(), OptionsError>) -> Self {
        Self(r.err().map(Box::new))
    }
}

/// The thread-local flags around one poll of a hook: entering clears "not handled" and sets
/// the no-recursion flag for `log`; leaving (also by a panic) restores what was there.
struct PollFlags {
    prev_log: bool,
    prev_unhandled: bool,
    left: bool,
}

impl PollFlags {
    fn enter(is_log: bool) -> Self {
        Self {
            prev_log: IN_LOG.with(|c| c.replace(is_log)),
            prev_unhandled: UNHANDLED.with(|c| c.replace(false)),
            left: false,
        }
    }

    /// Restores the flags; answers whether the hook hit its default body during the poll.
    fn leave(mut self) -> bool {
        self.left = true;
        let hit = UNHANDLED.with(|c| c.replace(self.prev_unhandled));
        IN_LOG.with(|c| c.set(self.prev_log));
        hit
    }
}

impl Drop for PollFlags {
    fn drop(&mut self) {
        if !self.left {
            UNHANDLED.with(|c| c.set(self.prev_unhandled));
            IN_LOG.with(|c| c.set(self.prev_log));
        }
    }
}

/// Runs a hook future: around every poll it clears the "not handled" flag and reads it back,
/// so hooks of other addons polled in between on the same thread cannot be confused with this
/// one; during a `log` hook it also sets the no-recursion flag. Answers the hook's output and
/// whether it was not handled. The future is pinned by the caller (no allocation, and no
/// second copy of it inside this one).
pub(crate) async fn track_unhandled<F: Future>(
    mut inner: Pin<&mut F>,
    is_log: bool,
) -> (F::Output, bool) {
    let mut unhandled = false;
    let out = std::future::poll_fn(|cx| {
        let flags = PollFlags::enter(is_log);
        let r = inner.as_mut().poll(cx);
        unhandled |= flags.leave();
        r
    })
    .await;
    (out, unhandled)
}

/// Runs `f` with delivery of log records to addons turned off on this thread (for records
/// about a failing `log` hook, which would otherwise feed themselves back).
pub fn with_log_suppressed<R>(f: impl FnOnce() -> R) -> R {
    let prev = IN_LOG.with(|c| c.replace(true));
    let r = f();
    IN_LOG.with(|c| c.set(prev));
    r
}
