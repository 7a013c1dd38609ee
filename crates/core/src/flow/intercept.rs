//! Intercepting a flow: it waits, outside the addons, until it is resumed or killed.

use std::any::Any;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

const RUNNING: u8 = 0;
const INTERCEPTED: u8 = 1;
const RESUMED: u8 = 2;
const KILLED: u8 = 3;

/// The intercept state shared between a flow and the handles given out for it.
///
/// A flow marked intercepted in a hook does not go on when the hook returns: the layer waits
/// (only that flow's stream waits) until someone holding an [`InterceptHandle`] resumes or
/// kills it.
#[derive(Debug, Clone, Default)]
pub struct Intercept {
    /// `None` until the flow is first intercepted (most never are: no allocation per flow).
    inner: Option<Arc<Inner>>,
}

#[derive(Default)]
struct Inner {
    state: AtomicU8,
    wake: Notify,
    /// An edit handed over with the release, applied by the flow's owner when it wakes
    /// (the UI edits an intercepted flow's copy; the layer holds the flow itself).
    edit: Mutex<Option<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A handle that resumes or kills an intercepted flow from anywhere (another addon, a
/// command, a UI).
#[derive(Debug, Clone)]
pub struct InterceptHandle {
    inner: Arc<Inner>,
}

/// How an intercepted flow was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// It goes on.
    Resumed,
    /// It is killed.
    Killed,
}

impl Intercept {
    /// The live state, if the flow was ever intercepted.
    fn live(&self) -> Option<&Inner> {
        self.inner.as_deref()
    }

    fn state(&self) -> u8 {
        self.live()
            .map_or(RUNNING, |i| i.state.load(Ordering::Acquire))
    }

    /// Marks the flow intercepted; returns a handle to release it later.
    pub fn intercept(&mut self) -> InterceptHandle {
        // A flow may be intercepted again after a resume: start from a fresh cell so an old
        // handle cannot release the new interception.
        let inner = match &self.inner {
            Some(i) if i.state.load(Ordering::Acquire) == RUNNING => i.clone(),
            _ => {
                let i = Arc::new(Inner::default());
                self.inner = Some(i.clone());
                i
            }
        };
        inner.state.store(INTERCEPTED, Ordering::Release);
        InterceptHandle { inner }
    }

    /// A handle for the current interception, if the flow is intercepted.
    pub fn handle(&self) -> Option<InterceptHandle> {
        match &self.inner {
            Some(i) if self.is_intercepted() => Some(InterceptHandle { inner: i.clone() }),
            _ => None,
        }
    }

    /// Whether the flow waits to be released.
    pub fn is_intercepted(&self) -> bool {
        self.state() == INTERCEPTED
    }

    /// Releases the flow (same as a handle's `resume`).
    pub fn resume(&self) {
        if let Some(i) = &self.inner {
            InterceptHandle { inner: i.clone() }.resume();
        }
    }

    /// Waits until the flow is released; returns at once when it is not intercepted.
    pub async fn wait(&self) -> Release {
        let Some(inner) = self.live() else {
            return Release::Resumed;
        };
        loop {
            let notified = inner.wake.notified();
            match inner.state.load(Ordering::Acquire) {
                INTERCEPTED => notified.await,
                KILLED => return Release::Killed,
                _ => return Release::Resumed,
            }
        }
    }

    /// Takes the edit a [`InterceptHandle::resume_with`] left, if it is of type `T`.
    pub fn take_edit<T: Any>(&self) -> Option<T> {
        let mut slot = self.live()?.edit.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take()?.downcast::<T>() {
            Ok(edit) => Some(*edit),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }

    /// Forgets a finished interception so the flow can be intercepted again.
    pub fn reset(&mut self) {
        if !matches!(self.state(), RUNNING | INTERCEPTED) {
            self.inner = None;
        }
    }
}

impl InterceptHandle {
    /// Lets the flow go on.
    pub fn resume(&self) {
        self.release(RESUMED);
    }

    /// Lets the flow go on after applying `edit` to it: the flow's owner takes the edit
    /// when it wakes (see `HttpFlow::wait_released`). Does nothing when the flow is no
    /// longer intercepted.
    pub fn resume_with<T: Any + Send>(&self, edit: T) {
        if self.inner.state.load(Ordering::Acquire) != INTERCEPTED {
            return;
        }
        *self.inner.edit.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(edit));
        self.release(RESUMED);
    }

    /// Whether the flow still waits for this handle.
    pub fn is_waiting(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == INTERCEPTED
    }

    /// Kills the flow.
    pub fn kill(&self) {
        self.release(KILLED);
    }

    fn release(&self, to: u8) {
        if self
            .inner
            .state
            .compare_exchange(INTERCEPTED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.inner.wake.notify_waiters();
        }
    }
}
