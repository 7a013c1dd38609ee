//! The hand-over slot: where an addon's state lives between hooks.
//!
//! Whoever runs one of the addon's hooks takes the state out of the slot and puts it back
//! when the hook is over, so the state is never shared and needs no lock: one hook at a
//! time per addon, as the actor's mailbox always guaranteed. Two parties take turns:
//!
//! - **the caller**, inline: a hook fired on the addon's own thread while the addon is
//!   idle (its state in the slot, nothing queued for its actor) runs in the caller's task,
//!   with no actor message. Most hooks finish in that first poll. One that waits is handed,
//!   with the state inside it, to a task of its own on the same thread (the caller awaits
//!   its reply), so a slow addon still holds only the flows it was given;
//! - **the actor**, for everything else: a hook fired while the addon is busy (its state
//!   out, or hooks already queued for the actor, which the caller must not overtake), the
//!   lifecycle hooks and commands. The actor waits for the state to come back if a handed
//!   over hook still holds it.
//!
//! The slots live in a thread-local registry of the addons' thread (the manager's
//! arbiter), keyed by [`SlotKey`]; a caller on another thread never finds one and sends
//! the hook to the manager as before.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;

use super::addon_actor::{HookReply, MAX_CONSECUTIVE_FAULTS, run_hook};
use crate::hooks::Begin;
use crate::hooks::{Addon, Hook, HookKind};

/// Names an addon's slot in its thread's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SlotKey(u64);

static NEXT_SLOT: AtomicU64 = AtomicU64::new(1);

impl SlotKey {
    pub(crate) fn next() -> Self {
        Self(NEXT_SLOT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Keys are sequential: spread them over the hash (Fibonacci hashing), no SipHash per hook.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Registry = HashMap<SlotKey, Rc<dyn InlineSlot>, BuildHasherDefault<KeyHasher>>;

thread_local! {
    static SLOTS: RefCell<Registry> = RefCell::new(Registry::default());
}

/// Tries to run `hook` inline on the addon whose slot is `key` (see the module docs).
pub(crate) async fn attempt(key: SlotKey, hook: Hook, timeout: Duration) -> Attempt {
    let mut hook = Some(hook);
    // One poll, here, with the caller's context: the hook's first poll is the caller's.
    std::future::poll_fn(|cx| match hook.take() {
        Some(hook) => Poll::Ready(try_inline(key, hook, timeout, cx)),
        None => Poll::Pending,
    })
    .await
}

/// [`attempt`] within a poll the caller is in: the hook's first poll uses `cx`.
pub(crate) fn try_inline(
    key: SlotKey,
    hook: Hook,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Attempt {
    // The registry's borrow ends before the hook runs (a hook may start or stop addons).
    match SLOTS.with(|s| s.borrow().get(&key).cloned()) {
        Some(slot) => slot.try_run(hook, timeout, cx),
        None => Attempt::NoSlot(hook),
    }
}

/// What an inline attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The hook ran in the caller's poll.
    Done(HookReply),
    /// The hook waited: it goes on in a task of its own, and this receives its reply.
    HandedOver(oneshot::Receiver<HookReply>),
    /// The addon is busy (or its hooks are queued at its actor): send the hook to the actor.
    /// The slot counts it as queued until the actor has run it or the hook is dropped
    /// unrun (the ticket).
    Busy(Hook, Queued),
    /// No slot on this thread (the actor is not started yet or already stopped): send the
    /// hook to the actor, uncounted.
    NoSlot(Hook),
}

/// A hook the slot counted as queued for its actor ([`Attempt::Busy`]), travelling with
/// the hook to the actor: dropping it uncounts the hook, when the actor has run it or when
/// the hook is dropped unrun. (actix drops a message whose sender stopped waiting without
/// handling it, e.g. a flow whose client hung up while it queued: counted for good, the
/// addon would have gone to its actor for every hook after.)
#[derive(Debug)]
pub(crate) struct Queued(SlotKey);

impl Drop for Queued {
    fn drop(&mut self) {
        // Dropped on the addons' thread (the actor's, or the caller's that counted it); not
        // found elsewhere, nor once the actor stopped. The registry's borrow ends first.
        let slot = SLOTS
            .try_with(|s| s.try_borrow().ok().and_then(|r| r.get(&self.0).cloned()))
            .ok()
            .flatten();
        if let Some(slot) = slot {
            slot.unqueue();
        }
    }
}

/// The type-erased face of a slot, for the walk.
pub(crate) trait InlineSlot {
    /// Runs `hook` in the caller's poll if the addon is idle (see the module docs).
    fn try_run(self: Rc<Self>, hook: Hook, timeout: Duration, cx: &mut Context<'_>) -> Attempt;
    /// One hook counted as queued has gone (see [`Queued`]).
    fn unqueue(&self);
}

/// The addon and what belongs to it alone, moved in and out of the slot as one box.
pub(crate) struct State<A> {
    pub(crate) addon: A,
    /// Consecutive faults per hook kind: a hook that keeps failing is not excused by other
    /// hooks succeeding (the `log` record of each fault would otherwise reset the count).
    faults_in_a_row: [u32; HookKind::COUNT],
}

/// Starts a hook's run: [`run`] for the addon type, as its function item (zero-sized, so
/// the call is direct and inlined, building the future in place) so that the slot can name
/// its future's type `F`.
pub(crate) trait Start<A, F>: Fn(Box<State<A>>, Hook, Duration) -> F + 'static {}

impl<A, F, S: Fn(Box<State<A>>, Hook, Duration) -> F + 'static> Start<A, F> for S {}

/// One addon's slot (see the module docs). Lives on the addons' thread only.
///
/// `F` is the future of [`run`] for `A`. Inline runs reuse one heap place for it (`runner`),
/// so a hook costs no allocation; the place moves to the task a waiting hook is handed to,
/// and comes back when it is done.
pub(crate) struct Slot<A, F, S> {
    key: SlotKey,
    state: Cell<Option<Box<State<A>>>>,
    runner: Cell<Option<Pin<Box<Option<F>>>>>,
    start: S,
    /// Removed from the manager: hooks pass through untouched.
    retired: Cell<bool>,
    /// Hooks sent to the actor because the addon was busy, not yet run: while there are
    /// any, callers queue behind them instead of overtaking them inline.
    queued: Cell<u32>,
    /// The actor is waiting for the state to come back.
    actor_waiting: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// Makes the slot for `addon`, registered on this thread under `key`; what its actor holds.
pub(crate) fn register<A: Addon>(addon: A, key: SlotKey) -> Rc<dyn ActorSlot> {
    Slot::register(addon, key, run::<A>)
}

impl<A: Addon, F: Future<Output = (Box<State<A>>, HookReply)> + 'static, S: Start<A, F>>
    Slot<A, F, S>
{
    fn register(addon: A, key: SlotKey, start: S) -> Rc<Self> {
        let slot = Rc::new(Self {
            key,
            state: Cell::new(Some(Box::new(State {
                addon,
                faults_in_a_row: [0; HookKind::COUNT],
            }))),
            runner: Cell::new(None),
            start,
            retired: Cell::new(false),
            queued: Cell::new(0),
            actor_waiting: Cell::new(false),
            waker: Cell::new(None),
        });
        let erased: Rc<dyn InlineSlot> = slot.clone();
        SLOTS.with(|s| s.borrow_mut().insert(key, erased));
        slot
    }

    fn put_back(&self, state: Box<State<A>>) {
        self.state.set(Some(state));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Waits until the state is in the slot and takes it (the actor's turn).
    async fn take_turn(&self) -> Box<State<A>> {
        self.actor_waiting.set(true);
        let state = std::future::poll_fn(|cx| match self.state.take() {
            Some(s) => Poll::Ready(s),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        self.actor_waiting.set(false);
        state
    }

    /// Runs `hook` as the actor: after the hooks queued before it, once the state is back.
    /// `queued`: the hook was counted as queued by [`InlineSlot::try_run`]; it is uncounted
    /// when the hook is done.
    pub(crate) async fn serve(
        self: Rc<Self>,
        hook: Hook,
        timeout: Duration,
        queued: Option<Queued>,
    ) -> HookReply {
        let state = self.take_turn().await;
        let reply = if self.retired.get() {
            self.put_back(state);
            HookReply::passthrough(hook)
        } else {
            let mut state = state;
            let hook = match state.addon.begin(hook, timeout) {
                Begin::Method(hook) => hook,
                Begin::Detached(f) => {
                    // The addon is free again at once; only this hook's flow waits.
                    self.put_back(state);
                    let (hook, fault) = f.await;
                    drop(queued);
                    return HookReply::detached(hook, fault);
                }
            };
            let is_done = hook.kind() == HookKind::Done;
            let (state, reply) = (self.start)(state, hook, timeout).await;
            if is_done {
                // Nothing after `done`, also not an inline hook that read an old route.
                self.retired.set(true);
            }
            self.put_back(state);
            reply
        };
        drop(queued);
        reply
    }

    /// Runs a command as the actor, once the state is back.
    pub(crate) async fn command(
        self: Rc<Self>,
        name: String,
        args: Vec<String>,
    ) -> Result<String, String> {
        let mut state = self.take_turn().await;
        let r = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            state.addon.command(&name, &args),
        ))
        .await;
        self.put_back(state);
        r.unwrap_or_else(|p| {
            Err(format!(
                "command panicked: {}",
                super::addon_actor::panic_message(&*p)
            ))
        })
    }
}

/// The actor's face of a slot (the actor path boxes its futures anyway).
pub(crate) trait ActorSlot {
    /// Runs a hook sent to the actor (see [`Slot::serve`]).
    fn serve(
        self: Rc<Self>,
        hook: Hook,
        timeout: Duration,
        queued: Option<Queued>,
    ) -> LocalFuture<HookReply>;
    /// Runs a command sent to the actor.
    fn command(
        self: Rc<Self>,
        name: String,
        args: Vec<String>,
    ) -> LocalFuture<Result<String, String>>;
    /// From now on hooks pass through untouched.
    fn retire(&self);
    /// Takes the slot out of this thread's registry (the actor stopped).
    fn unregister(&self);
}

pub(crate) type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<A: Addon, F: Future<Output = (Box<State<A>>, HookReply)> + 'static, S: Start<A, F>> ActorSlot
    for Slot<A, F, S>
{
    fn serve(
        self: Rc<Self>,
        hook: Hook,
        timeout: Duration,
        queued: Option<Queued>,
    ) -> LocalFuture<HookReply> {
        Box::pin(Slot::serve(self, hook, timeout, queued))
    }

    fn command(
        self: Rc<Self>,
        name: String,
        args: Vec<String>,
    ) -> LocalFuture<Result<String, String>> {
        Box::pin(Slot::command(self, name, args))
    }

    fn retire(&self) {
        self.retired.set(true);
    }

    fn unregister(&self) {
        SLOTS.with(|s| s.borrow_mut().remove(&self.key));
    }
}

/// Polls the hook's future in the runner's place (empty only if misused: then pending).
fn poll_runner<F: Future>(
    runner: &mut Pin<Box<Option<F>>>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    match runner.as_mut().as_pin_mut() {
        Some(f) => f.poll(cx),
        None => Poll::Pending,
    }
}

impl<A: Addon, F: Future<Output = (Box<State<A>>, HookReply)> + 'static, S: Start<A, F>> InlineSlot
    for Slot<A, F, S>
{
    fn try_run(self: Rc<Self>, hook: Hook, timeout: Duration, cx: &mut Context<'_>) -> Attempt {
        if self.retired.get() {
            return Attempt::Done(HookReply::passthrough(hook));
        }
        let state = if self.queued.get() == 0 && !self.actor_waiting.get() {
            self.state.take()
        } else {
            None
        };
        let Some(mut state) = state else {
            self.queued.set(self.queued.get() + 1);
            return Attempt::Busy(hook, Queued(self.key));
        };
        let hook = match state.addon.begin(hook, timeout) {
            Begin::Method(hook) => hook,
            Begin::Detached(mut f) => {
                // The addon is free again at once; only this hook's flow waits for `f`.
                self.put_back(state);
                if let Poll::Ready((hook, fault)) = f.as_mut().poll(cx) {
                    return Attempt::Done(HookReply::detached(hook, fault));
                }
                let (tx, rx) = oneshot::channel();
                actix::spawn(async move {
                    let (hook, fault) = f.await;
                    let _ = tx.send(HookReply::detached(hook, fault));
                });
                return Attempt::HandedOver(rx);
            }
        };
        // The hook's future goes into the runner's heap place (reused from the last hook), so
        // that it can move to a task of its own if it waits after this first poll.
        let mut runner = self.runner.take().unwrap_or_else(|| Box::pin(None));
        runner
            .as_mut()
            .set(Some((self.start)(state, hook, timeout)));
        match poll_runner(&mut runner, cx) {
            Poll::Ready((state, reply)) => {
                runner.as_mut().set(None);
                self.runner.set(Some(runner));
                self.put_back(state);
                Attempt::Done(reply)
            }
            Poll::Pending => {
                let (tx, rx) = oneshot::channel();
                actix::spawn(async move {
                    let (state, reply) =
                        std::future::poll_fn(|cx| poll_runner(&mut runner, cx)).await;
                    runner.as_mut().set(None);
                    self.runner.set(Some(runner));
                    self.put_back(state);
                    let _ = tx.send(reply);
                });
                Attempt::HandedOver(rx)
            }
        }
    }

    fn unqueue(&self) {
        self.queued.set(self.queued.get().saturating_sub(1));
    }
}

/// Runs `hook` on the state's addon, with the panic guard and the deadline inside, and
/// counts its faults.
async fn run<A: Addon>(
    mut state: Box<State<A>>,
    hook: Hook,
    timeout: Duration,
) -> (Box<State<A>>, HookReply) {
    let kind = hook.kind() as usize;
    let mut reply = run_hook(&mut state.addon, hook, timeout).await;
    if let Some(n) = state.faults_in_a_row.get_mut(kind) {
        if reply.fault.is_some() {
            *n += 1;
            reply.give_up = *n >= MAX_CONSECUTIVE_FAULTS;
        } else {
            *n = 0;
        }
    }
    (state, reply)
}
