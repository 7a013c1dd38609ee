//! `AddonActor<A>`: one addon, its mailbox serialising its hooks, with panics and overruns
//! contained so the flow always comes back.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;

use crate::hooks::{Addon, Hook, HookKind, HookOutput, TrackUnhandled};

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

/// Sent by the manager (or the handle, for lifecycle hooks): run `hook` on this addon.
#[derive(Debug)]
pub(crate) struct HookCall {
    pub(crate) hook: Hook,
    pub(crate) timeout: Duration,
}

/// The addon's answer: the payload back, what the method returned, and what was learned.
#[derive(Debug)]
pub(crate) struct HookReply {
    pub(crate) hook: Hook,
    pub(crate) output: HookOutput,
    /// The addon does not implement this hook (its default body ran).
    pub(crate) unhandled: bool,
    pub(crate) fault: Option<Fault>,
    /// The addon failed too often in a row and should leave every route.
    pub(crate) give_up: bool,
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
/// Its mailbox serialises the addon's hooks (as mitmproxy runs an addon's events one at a
/// time). The addon is moved into each hook's future and back, so an `async` hook can hold
/// `&mut self` across awaits.
pub struct AddonActor<A: Addon> {
    addon: Option<Box<A>>,
    retired: bool,
    /// Consecutive faults per hook kind: a hook that keeps failing is not excused by other
    /// hooks succeeding (the `log` record of each fault would otherwise reset the count).
    faults_in_a_row: [u32; HookKind::COUNT],
}

impl<A: Addon> std::fmt::Debug for AddonActor<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddonActor")
            .field("addon", &std::any::type_name::<A>())
            .field("retired", &self.retired)
            .finish()
    }
}

impl<A: Addon> AddonActor<A> {
    pub(crate) fn new(addon: A) -> Self {
        Self {
            addon: Some(Box::new(addon)),
            retired: false,
            faults_in_a_row: [0; HookKind::COUNT],
        }
    }
}

impl<A: Addon> Actor for AddonActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
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
async fn run_hook<A: Addon>(addon: &mut A, mut hook: Hook, timeout: Duration) -> HookReply {
    let is_log = hook.kind() == HookKind::Log;
    let res = {
        let tracked = TrackUnhandled::new(hook.dispatch(addon), is_log);
        let mut guarded = std::pin::pin!(AssertUnwindSafe(tracked).catch_unwind());
        // Most hooks finish in their first poll: arm the deadline only for those that wait,
        // since a timer costs more than the whole hook (benches/benches/hooks.rs).
        match futures::poll!(guarded.as_mut()) {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::time::timeout(timeout, guarded).await,
        }
    };
    let (output, unhandled, fault) = match res {
        Ok(Ok((output, unhandled))) => (output, unhandled, None),
        Ok(Err(panic)) => (
            HookOutput::Unit,
            false,
            Some(Fault::Panic(panic_message(&*panic))),
        ),
        Err(_) => (HookOutput::Unit, false, Some(Fault::Timeout(timeout))),
    };
    HookReply {
        hook,
        output,
        unhandled,
        fault,
        give_up: false,
    }
}

/// The answer to a [`HookCall`]: a hook run through the addon's method holds the actor until
/// it ends (one hook at a time); a detached one runs beside the actor's next messages.
pub(crate) enum HookResponse<A: Addon> {
    Atomic(AtomicResponse<AddonActor<A>, HookReply>),
    Detached(std::pin::Pin<Box<dyn std::future::Future<Output = HookReply>>>),
}

impl<A: Addon> actix::dev::MessageResponse<AddonActor<A>, HookCall> for HookResponse<A> {
    fn handle(
        self,
        ctx: &mut Context<AddonActor<A>>,
        tx: Option<actix::dev::OneshotSender<HookReply>>,
    ) {
        match self {
            Self::Atomic(r) => {
                actix::dev::MessageResponse::<AddonActor<A>, HookCall>::handle(r, ctx, tx)
            }
            Self::Detached(f) => {
                ctx.spawn(
                    actix::fut::wrap_future::<_, AddonActor<A>>(f).map(|reply, _, _| {
                        if let Some(tx) = tx {
                            let _ = tx.send(reply);
                        }
                    }),
                );
            }
        }
    }
}

impl<A: Addon> Handler<HookCall> for AddonActor<A> {
    type Result = HookResponse<A>;

    fn handle(&mut self, msg: HookCall, _ctx: &mut Self::Context) -> Self::Result {
        let msg = match (self.retired, self.addon.as_mut()) {
            (false, Some(a)) => match a.begin(msg.hook, msg.timeout) {
                crate::hooks::Begin::Method(hook) => HookCall {
                    hook,
                    timeout: msg.timeout,
                },
                crate::hooks::Begin::Detached(f) => {
                    return HookResponse::Detached(Box::pin(async move {
                        let (hook, fault) = f.await;
                        HookReply {
                            hook,
                            output: HookOutput::Unit,
                            unhandled: false,
                            fault,
                            give_up: false,
                        }
                    }));
                }
            },
            _ => msg,
        };
        let passthrough = |hook| HookReply {
            hook,
            output: HookOutput::Unit,
            unhandled: false,
            fault: None,
            give_up: false,
        };
        let addon = match (self.retired, self.addon.take()) {
            (false, Some(a)) => a,
            (_, other) => {
                self.addon = other;
                let reply = passthrough(msg.hook);
                return HookResponse::Atomic(AtomicResponse::new(Box::pin(fut::ready(reply))));
            }
        };
        let kind = msg.hook.kind() as usize;
        let fut = async move {
            let mut addon = addon;
            let reply = run_hook(&mut *addon, msg.hook, msg.timeout).await;
            (addon, reply)
        };
        HookResponse::Atomic(AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |(addon, mut reply), act, _| {
                act.addon = Some(addon);
                if reply.fault.is_some() {
                    act.faults_in_a_row[kind] += 1;
                    reply.give_up = act.faults_in_a_row[kind] >= MAX_CONSECUTIVE_FAULTS;
                } else {
                    act.faults_in_a_row[kind] = 0;
                }
                reply
            },
        ))))
    }
}

impl<A: Addon> Handler<CommandCall> for AddonActor<A> {
    type Result = AtomicResponse<Self, Result<String, String>>;

    fn handle(&mut self, msg: CommandCall, _ctx: &mut Self::Context) -> Self::Result {
        let Some(addon) = self.addon.take() else {
            let r = Err(format!(
                "addon is busy or gone; command {} not run",
                msg.name
            ));
            return AtomicResponse::new(Box::pin(fut::ready(r)));
        };
        let fut = async move {
            let mut addon = addon;
            let r = AssertUnwindSafe(addon.command(&msg.name, &msg.args))
                .catch_unwind()
                .await;
            let r = r.unwrap_or_else(|p| Err(format!("command panicked: {}", panic_message(&*p))));
            (addon, r)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(|(addon, r), act, _| {
            act.addon = Some(addon);
            r
        })))
    }
}

impl<A: Addon> Handler<Retire> for AddonActor<A> {
    type Result = ();

    fn handle(&mut self, _: Retire, _ctx: &mut Self::Context) {
        self.retired = true;
    }
}
