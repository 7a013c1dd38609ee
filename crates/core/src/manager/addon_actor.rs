//! `AddonActor<A>`: one addon's mailbox. The addon's state lives in its [`Slot`], which the
//! actor and inline callers take turns owning; the actor runs the hooks sent to it (when the
//! addon was busy, from lifecycle calls) with panics and overruns contained, so the flow
//! always comes back.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;

use super::slot::{ActorSlot, Queued, SlotKey};
use crate::hooks::{Addon, Hook, HookKind, HookSet, Verdict, track_unhandled};

/// Capacity of the manager's and the addon actors' mailboxes: actix's default of 16 costs
/// 30–40% under load; `send` still applies backpressure beyond this.
pub(crate) const MAILBOX_CAPACITY: usize = 1024;

/// After this many faults in a row in one hook an addon is dropped from every route.
pub(crate) const MAX_CONSECUTIVE_FAULTS: u32 = 3;

/// What went wrong while an addon ran a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The hook panicked with this message.
    Panic(String),
    /// The hook ran longer than `addon_timeout` and was abandoned.
    Timeout(Duration),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Panic(m) => write!(f, "panicked: {m}"),
            Self::Timeout(d) => write!(f, "timed out after {:.3}s", d.as_secs_f64()),
        }
    }
}

/// Sent by a walk (the addon was busy) or by the handle (lifecycle hooks): run `hook` on
/// this addon.
#[derive(Debug)]
pub(crate) struct HookCall {
    pub(crate) hook: Hook,
    pub(crate) timeout: Duration,
    /// The slot counted this hook as queued (see `slot::Attempt::Busy`): uncounted when
    /// dropped, run or not.
    pub(crate) queued: Option<Queued>,
}

impl HookCall {
    /// A hook the slot did not count (lifecycle hooks, walks that found no slot).
    pub(crate) fn new(hook: Hook, timeout: Duration) -> Self {
        Self {
            hook,
            timeout,
            queued: None,
        }
    }
}

/// The addon's answer: the payload back, what the method returned, and what was learned.
#[derive(Debug)]
pub(crate) struct HookReply {
    pub(crate) hook: Hook,
    pub(crate) output: Verdict,
    /// The addon does not implement this hook (its default body ran).
    pub(crate) unhandled: bool,
    /// Boxed: replies are moved several times per addon per hook, and faults are rare.
    pub(crate) fault: Option<Box<Fault>>,
    /// The addon failed too often in a row and should leave every route.
    pub(crate) give_up: bool,
    /// After `configure`: the hooks the addon declares now ([`Addon::hooks`]), which may
    /// depend on the options it was just given; the manager re-learns its routes from it.
    pub(crate) declared: Option<HookSet>,
}

impl HookReply {
    /// The hook back untouched (a retired addon).
    pub(crate) fn passthrough(hook: Hook) -> Self {
        Self {
            hook,
            output: Verdict::default(),
            unhandled: false,
            fault: None,
            give_up: false,
            declared: None,
        }
    }

    /// The reply of a hook the addon ran detached ([`crate::hooks::Begin::Detached`]).
    pub(crate) fn detached(hook: Hook, fault: Option<Fault>) -> Self {
        Self {
            hook,
            output: Verdict::default(),
            unhandled: false,
            fault: fault.map(Box::new),
            give_up: false,
            declared: None,
        }
    }
}

impl Message for HookCall {
    type Result = HookReply;
}

/// Sent by the handle: run one of the commands the addon declared in `load`.
#[derive(Debug)]
pub(crate) struct CommandCall {
    pub(crate) name: String,
    pub(crate) args: Vec<String>,
}

impl Message for CommandCall {
    type Result = Result<String, String>;
}

/// Sent by the manager when the addon was removed: from now on hooks pass through untouched.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// The actor wrapping one addon.
///
/// Its mailbox serialises the hooks sent to it (as mitmproxy runs an addon's events one at
/// a time); hooks run inline by callers take the same state from the same slot, so the
/// addon still sees one hook at a time. An `async` hook may hold `&mut self` across awaits.
pub struct AddonActor<A: Addon> {
    slot: Rc<dyn ActorSlot>,
    addon: std::marker::PhantomData<fn() -> A>,
}

impl<A: Addon> std::fmt::Debug for AddonActor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddonActor")
            .field("addon", &std::any::type_name::<A>())
            .finish()
    }
}

impl<A: Addon> AddonActor<A> {
    /// The actor for `addon`, its slot registered on this thread under `key`.
    pub(crate) fn new(addon: A, key: SlotKey) -> Self {
        Self {
            slot: super::slot::register(addon, key),
            addon: std::marker::PhantomData,
        }
    }
}

impl<A: Addon> Actor for AddonActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.slot.unregister();
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Runs `hook` on `addon` with the panic guard and the deadline *inside*, so the payload
/// always comes back even when the addon fails.
pub(crate) async fn run_hook<A: Addon>(
    addon: &mut A,
    mut hook: Hook,
    timeout: Duration,
) -> HookReply {
    let is_log = hook.kind() == HookKind::Log;
    let res = {
        // Each future pinned once, where it is made: every named intermediate (and every
        // future moved into another) would take its own room in this future, which is
        // moved into the slot's heap place for every hook.
        let mut dispatch = std::pin::pin!(hook.dispatch(addon));
        let mut guarded = std::pin::pin!(
            AssertUnwindSafe(track_unhandled(dispatch.as_mut(), is_log)).catch_unwind()
        );
        // Most hooks finish in their first poll: the deadline is armed (and boxed, keeping it
        // out of this future's size) only for those that wait, since a timer costs more than
        // the whole hook (benches/benches/hooks.rs).
        let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = guarded.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            let d = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            d.as_mut().poll(cx).map(|()| None)
        })
        .await
    };
    let (output, unhandled, fault) = match res {
        Some(Ok((output, unhandled))) => (output, unhandled, None),
        Some(Err(panic)) => (
            Verdict::default(),
            false,
            Some(Box::new(Fault::Panic(panic_message(&*panic)))),
        ),
        None => (
            Verdict::default(),
            false,
            Some(Box::new(Fault::Timeout(timeout))),
        ),
    };
    let declared = (hook.kind() == HookKind::Configure).then(|| addon.hooks());
    HookReply {
        hook,
        output,
        unhandled,
        fault,
        give_up: false,
        declared,
    }
}

impl<A: Addon> Handler<HookCall> for AddonActor<A> {
    type Result = AtomicResponse<Self, HookReply>;

    fn handle(&mut self, msg: HookCall, _ctx: &mut Self::Context) -> Self::Result {
        let fut = self.slot.clone().serve(msg.hook, msg.timeout, msg.queued);
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

impl<A: Addon> Handler<CommandCall> for AddonActor<A> {
    type Result = AtomicResponse<Self, Result<String, String>>;

    fn handle(&mut self, msg: CommandCall, _ctx: &mut Self::Context) -> Self::Result {
        let fut = self.slot.clone().command(msg.name, msg.args);
        AtomicResponse::new(Box::pin(fut.into_actor(self)))
    }
}

impl<A: Addon> Handler<Retire> for AddonActor<A> {
    type Result = ();

    fn handle(&mut self, _: Retire, _ctx: &mut Self::Context) {
        self.slot.retire();
    }
}
