//! The addon manager: an actor owning the ordered addon registry, the options and the
//! lifecycle, and publishing, per hook, the route of the addons handling it. A hook fired on
//! the manager's own arbiter is walked along its route by the caller
//! ([`ManagerHandle::call`]): the flow carries its cursor, and the manager's mailbox is not
//! on the path of the event. At each addon the walk runs the hook in the caller's task when
//! the addon is idle (its state taken from its [`slot`] and put back, no message), and sends
//! it into the addon actor's mailbox when the addon is busy. A hook fired on another worker
//! goes to the manager in one message and is walked there, so it crosses threads twice
//! rather than twice per addon (both measured, see `BENCHMARKS.md`).

mod addon_actor;
mod handle;
mod slot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix::WeakAddr;
use actix::prelude::*;
use arc_swap::ArcSwap;

pub use addon_actor::{AddonActor, Fault};
pub(crate) use addon_actor::{CommandCall, HookCall, HookReply, MAILBOX_CAPACITY, Retire};
pub use handle::{AddError, AddonId, Called, HookError, ManagerHandle, ReplayMark};
pub(crate) use slot::SlotKey;

use crate::hooks::{CommandSpec, Hook, HookKind, HookSet, LIFECYCLE, with_log_suppressed};
use crate::options::Options;

/// The hooks of an HTTP exchange: an addon handling any of them makes the layers build flows.
const HTTP_HOOKS: [HookKind; 5] = [
    HookKind::RequestHeaders,
    HookKind::Request,
    HookKind::ResponseHeaders,
    HookKind::Response,
    HookKind::Error,
];

/// State shared between the manager and every handle, readable without a message.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The fast path: bit `k` is set when some addon may handle hook `k`.
    pub(crate) handled: AtomicU64,
    /// The current options snapshot.
    pub(crate) options: ArcSwap<Options>,
    /// `Some(hosts)` when every addon handling an HTTP hook acts only on these hosts
    /// (lowercase; see [`Addon::http_hosts`](crate::Addon::http_hosts)); `None`: any host.
    pub(crate) http_scope: arc_swap::ArcSwapOption<Vec<String>>,
    /// Whether `http_scope` is `None` (some HTTP-hook addon acts on any host): the common
    /// case, answered with one atomic load instead of a guarded load of the scope per request.
    pub(crate) http_any_host: AtomicBool,
    /// `addon_timeout` in milliseconds (0: no deadline).
    pub(crate) timeout_ms: AtomicU64,
    /// Serialises option changes and registrations (both walk `configure`).
    pub(crate) config_lock: tokio::sync::Mutex<()>,
    /// The published routes, one per hook kind: the addons handling it, in registration
    /// order. The manager owns and rebuilds them; a hook's walk reads its route here and
    /// moves the payload from addon to addon itself, without a message to the manager.
    pub(crate) routes: Box<[ArcSwap<Vec<RouteEntry>>]>,
    /// The thread of the manager's arbiter, where the addon actors live too.
    pub(crate) home: std::thread::ThreadId,
    /// Whether walks may run a hook in the caller's task when its addon is idle (on by
    /// default; off, every hook goes through the addon actors' mailboxes).
    pub(crate) inline: AtomicBool,
    /// Set when an addon asked the proxy to stop ([`ManagerHandle::request_shutdown`]).
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Connections a replayer made to the proxy, as the proxy sees them (client address,
    /// proxy address): their flows are replays ([`ManagerHandle::mark_replay`]).
    pub(crate) replays: std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>>,
    /// How many are in `replays`: the check per flow is this load when it is zero.
    pub(crate) replaying: std::sync::atomic::AtomicUsize,
}

impl Shared {
    pub(crate) fn timeout(&self) -> Duration {
        match self.timeout_ms.load(Ordering::Relaxed) {
            // No deadline: a hook may legitimately wait for a user; a day is "forever".
            0 => Duration::from_secs(86_400),
            ms => Duration::from_millis(ms),
        }
    }

    pub(crate) fn publish_options(&self, opts: Arc<Options>) {
        let secs = u64::try_from(opts.int("addon_timeout").max(0)).unwrap_or(0);
        self.timeout_ms
            .store(secs.saturating_mul(1000), Ordering::Relaxed);
        self.options.store(opts);
    }
}

/// One addon on a route.
#[derive(Debug, Clone)]
pub(crate) struct RouteEntry {
    pub(crate) id: AddonId,
    pub(crate) name: Arc<str>,
    pub(crate) recipient: Recipient<HookCall>,
    /// The addon's state slot on the manager's thread.
    pub(crate) slot: SlotKey,
}

type Route = Arc<[RouteEntry]>;

#[derive(Debug)]
struct Entry {
    route: RouteEntry,
    commands: Recipient<CommandCall>,
    retire: Recipient<Retire>,
    command_specs: Vec<CommandSpec>,
    declared: HookSet,
    unhandled: HookSet,
    http_hosts: HttpHosts,
    active: bool,
    gave_up: bool,
}

impl Entry {
    fn routes(&self) -> HookSet {
        if !self.active || self.gave_up {
            return HookSet::EMPTY;
        }
        HookSet::from_bits(self.declared.bits() & !self.unhandled.bits())
    }
}

/// The addon-manager actor. Create it with [`AddonManager::start`] and talk to it through
/// the returned [`ManagerHandle`].
///
/// For each hook it keeps a route: the addons handling that hook, in registration order,
/// published for callers to walk. A walk runs in the caller's task (the manager never awaits
/// one), so a slow addon delays only the flow it holds.
#[derive(Debug)]
pub struct AddonManager {
    entries: Vec<Entry>,
    routes: Vec<Route>,
    shared: Arc<Shared>,
    running: bool,
    /// Our own address, weak so it does not keep the manager alive, for walks to report what
    /// they learn: `ctx.address()` per walk would allocate a new sender every hook.
    me: Option<WeakAddr<Self>>,
}

impl Actor for AddonManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.me = Some(ctx.address().downgrade());
    }
}

impl AddonManager {
    /// Starts a manager on the current arbiter with `options`; returns its handle.
    pub fn start(options: Options) -> ManagerHandle {
        let shared = Arc::new(Shared {
            handled: AtomicU64::new(0),
            options: ArcSwap::from_pointee(Options::empty()),
            http_scope: arc_swap::ArcSwapOption::empty(),
            http_any_host: AtomicBool::new(true),
            timeout_ms: AtomicU64::new(0),
            config_lock: tokio::sync::Mutex::new(()),
            routes: (0..HookKind::COUNT)
                .map(|_| ArcSwap::from_pointee(Vec::new()))
                .collect(),
            home: std::thread::current().id(),
            inline: AtomicBool::new(true),
            shutdown: tokio::sync::watch::Sender::new(false),
            replays: std::sync::Mutex::new(Vec::new()),
            replaying: std::sync::atomic::AtomicUsize::new(0),
        });
        shared.publish_options(Arc::new(options));
        let mgr = Self {
            entries: Vec::new(),
            routes: vec![Route::from(Vec::new()); HookKind::COUNT],
            shared: shared.clone(),
            running: false,
            me: None,
        };
        let addr = mgr.start();
        ManagerHandle::new(addr, shared, actix::Arbiter::current())
    }

    fn rebuild_routes(&mut self) {
        let mut bits = 0u64;
        for kind in HookKind::ALL.iter().copied() {
            let route: Vec<RouteEntry> = self
                .entries
                .iter()
                .filter(|e| e.routes().contains(kind))
                .map(|e| e.route.clone())
                .collect();
            if !route.is_empty() {
                bits |= HookSet::EMPTY.with(kind).bits();
            }
            if let Some(published) = self.shared.routes.get(kind as usize) {
                published.store(Arc::new(route.clone()));
            }
            self.routes[kind as usize] = route.into();
        }
        self.shared.handled.store(bits, Ordering::Release);
        self.publish_http_scope();
    }

    /// Publishes which hosts the HTTP-hook addons act on (see [`Shared::http_scope`]).
    fn publish_http_scope(&self) {
        let options = self.shared.options.load();
        let mut hosts: Vec<String> = Vec::new();
        let mut scoped = true;
        for e in &self.entries {
            if !HTTP_HOOKS.iter().any(|k| e.routes().contains(*k)) {
                continue;
            }
            match (e.http_hosts)(&options) {
                Some(h) => hosts.extend(h.into_iter().map(|h| h.to_ascii_lowercase())),
                None => {
                    scoped = false;
                    break;
                }
            }
        }
        // The scope first: a reader that sees the flag cleared finds the new hosts.
        self.shared
            .http_scope
            .store(scoped.then(|| Arc::new(hosts)));
        self.shared.http_any_host.store(!scoped, Ordering::Release);
    }

    fn entry_mut(&mut self, id: AddonId) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.route.id == id)
    }
}

/// What the inline pass of a walk came to.
pub(crate) enum Pass {
    /// Every addon on the route ran the hook in the caller's poll.
    Done(Hook),
    /// The addon at this index could not run it there (busy, waiting, or no slot on this
    /// thread): the rest of the walk ([`finish`]) awaits this attempt.
    Stopped(usize, slot::Attempt),
}

/// The inline pass of a walk: runs `hook` on each addon of `route` in registration order, in
/// this one poll of the caller, for as long as each addon is idle and finishes in its first
/// poll (the common case: no future is kept, nothing is allocated). Stops at the first addon
/// that cannot, for [`finish`]. Runs on the manager's thread.
pub(crate) fn inline_pass(
    route: &[RouteEntry],
    mut hook: Hook,
    timeout: Duration,
    cx: &mut std::task::Context<'_>,
    report: &impl Fn(Learned),
) -> Pass {
    for (i, entry) in route.iter().enumerate() {
        match slot::try_inline(entry.slot, hook, timeout, cx) {
            slot::Attempt::Done(reply) => hook = learn(entry, reply, report),
            other => return Pass::Stopped(i, other),
        }
    }
    Pass::Done(hook)
}

/// Walks `hook` through `route`, moving the payload through each addon in turn; what it
/// learns (an addon not handling the hook, or failing too often) goes to `report`, for the
/// manager. Runs on the manager's thread. With `inline`, an idle addon's hook runs right here
/// in the caller's task (see [`slot`]); a busy addon's goes to its actor's mailbox.
pub(crate) async fn walk(
    route: &[RouteEntry],
    hook: Hook,
    timeout: Duration,
    inline: bool,
    report: impl Fn(Learned),
) -> Result<Hook, HookError> {
    if !inline {
        return finish(
            route,
            0,
            slot::Attempt::NoSlot(hook),
            timeout,
            false,
            &report,
        )
        .await;
    }
    let mut hook = Some(hook);
    let pass = std::future::poll_fn(|cx| match hook.take() {
        Some(h) => std::task::Poll::Ready(inline_pass(route, h, timeout, cx, &report)),
        None => std::task::Poll::Pending,
    })
    .await;
    match pass {
        Pass::Done(h) => Ok(h),
        Pass::Stopped(i, first) => finish(route, i, first, timeout, true, &report).await,
    }
}

/// The rest of a walk from the addon at `from`, whose attempt is `first`: a hook handed
/// over to its own task is awaited, a busy addon's (or one without a slot here) goes to its
/// actor's mailbox; the addons after it are tried inline again when `inline`.
pub(crate) async fn finish(
    route: &[RouteEntry],
    from: usize,
    first: slot::Attempt,
    timeout: Duration,
    inline: bool,
    report: &impl Fn(Learned),
) -> Result<Hook, HookError> {
    let mut attempt = first;
    let mut entries = route.iter().skip(from).peekable();
    while let Some(entry) = entries.next() {
        let stopped = || HookError::AddonStopped(entry.name.to_string());
        let reply = match attempt {
            slot::Attempt::Done(reply) => reply,
            slot::Attempt::HandedOver(rx) => rx.await.map_err(|_| stopped())?,
            slot::Attempt::Busy(hook, queued) => entry
                .recipient
                .send(HookCall {
                    hook,
                    timeout,
                    queued: Some(queued),
                })
                .await
                .map_err(|_| stopped())?,
            slot::Attempt::NoSlot(hook) => entry
                .recipient
                .send(HookCall::new(hook, timeout))
                .await
                .map_err(|_| stopped())?,
        };
        let hook = learn(entry, reply, report);
        attempt = match entries.peek() {
            None => return Ok(hook),
            Some(next) if inline => slot::attempt(next.slot, hook, timeout).await,
            Some(_) => slot::Attempt::NoSlot(hook),
        };
    }
    // Only for `from` past the route's end, which no caller does.
    match attempt {
        slot::Attempt::Busy(hook, _) | slot::Attempt::NoSlot(hook) => Ok(hook),
        slot::Attempt::Done(reply) => Ok(reply.hook),
        slot::Attempt::HandedOver(rx) => rx
            .await
            .map(|r| r.hook)
            .map_err(|_| HookError::ManagerStopped),
    }
}

/// Takes what one addon's reply says: the hook back, and for the manager whether the addon
/// does not handle it or keeps failing.
fn learn(entry: &RouteEntry, reply: HookReply, report: &impl Fn(Learned)) -> Hook {
    let kind = reply.hook.kind();
    if reply.unhandled && !LIFECYCLE.contains(kind) {
        report(Learned {
            id: entry.id,
            kind,
            give_up: false,
        });
    }
    if let Some(fault) = &reply.fault {
        report_fault(&entry.name, kind, fault);
    }
    if reply.give_up {
        with_log_suppressed(|| {
            tracing::error!(addon = %entry.name, "addon keeps failing; it is removed from every hook");
        });
        report(Learned {
            id: entry.id,
            kind,
            give_up: true,
        });
    }
    reply.hook
}

pub(crate) fn report_fault(name: &str, kind: HookKind, fault: &Fault) {
    // A fault inside `log` must not be fed back into `log`.
    let f = || tracing::error!(addon = %name, hook = kind.name(), "addon {fault}");
    if kind == HookKind::Log {
        with_log_suppressed(f)
    } else {
        f()
    }
}

/// Walk this hook through its route, on the manager's arbiter: for senders that cannot
/// wait (log records from a tracing layer). Layers walk hooks themselves
/// ([`ManagerHandle::call`]).
#[derive(Debug)]
pub(crate) struct Walk(pub(crate) Hook);

impl Message for Walk {
    type Result = Result<Hook, HookError>;
}

impl Handler<Walk> for AddonManager {
    type Result = ResponseFuture<Result<Hook, HookError>>;

    fn handle(&mut self, Walk(hook): Walk, _ctx: &mut Self::Context) -> Self::Result {
        let route = self.routes[hook.kind() as usize].clone();
        let me = self.me.clone();
        let timeout = self.shared.timeout();
        let inline = self.shared.inline.load(Ordering::Relaxed);
        Box::pin(async move {
            walk(&route, hook, timeout, inline, |msg| {
                if let Some(addr) = me.as_ref().and_then(WeakAddr::upgrade) {
                    addr.do_send(msg);
                }
            })
            .await
        })
    }
}

/// Sent by a walk: an addon turned out not to handle a hook, or failed too often.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Learned {
    id: AddonId,
    kind: HookKind,
    give_up: bool,
}

impl Handler<Learned> for AddonManager {
    type Result = ();

    fn handle(&mut self, msg: Learned, _ctx: &mut Self::Context) {
        if let Some(e) = self.entry_mut(msg.id) {
            if msg.give_up {
                e.gave_up = true;
            } else {
                e.unhandled = e.unhandled.with(msg.kind);
            }
            self.rebuild_routes();
        }
    }
}

/// Registers an addon actor (not yet on any route).
pub(crate) struct Register {
    pub(crate) route: RouteEntry,
    pub(crate) commands: Recipient<CommandCall>,
    pub(crate) retire: Recipient<Retire>,
    pub(crate) command_specs: Vec<CommandSpec>,
    pub(crate) declared: HookSet,
    pub(crate) options: Vec<crate::options::OptionSpec>,
    /// The addon type's [`Addon::http_hosts`](crate::Addon::http_hosts).
    pub(crate) http_hosts: HttpHosts,
}

/// An addon type's [`Addon::http_hosts`](crate::Addon::http_hosts).
pub(crate) type HttpHosts = fn(&Options) -> Option<Vec<String>>;

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register")
            .field("name", &self.route.name)
            .finish()
    }
}

impl Message for Register {
    type Result = Result<Arc<Options>, crate::options::OptionsError>;
}

impl Handler<Register> for AddonManager {
    type Result = Result<Arc<Options>, crate::options::OptionsError>;

    fn handle(&mut self, msg: Register, _ctx: &mut Self::Context) -> Self::Result {
        let mut opts = Options::clone(&self.shared.options.load());
        for spec in msg.options {
            opts.add(spec)?;
        }
        let opts = Arc::new(opts);
        self.shared.publish_options(opts.clone());
        self.entries.push(Entry {
            route: msg.route,
            commands: msg.commands,
            retire: msg.retire,
            command_specs: msg.command_specs,
            declared: msg.declared,
            unhandled: HookSet::EMPTY,
            http_hosts: msg.http_hosts,
            active: false,
            gave_up: false,
        });
        Ok(opts)
    }
}

/// An addon's hooks changed while it runs ([`ManagerHandle::declare_hooks`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct DeclareHooks {
    pub(crate) id: AddonId,
    pub(crate) hooks: HookSet,
}

impl Handler<DeclareHooks> for AddonManager {
    type Result = ();

    fn handle(&mut self, msg: DeclareHooks, _ctx: &mut Self::Context) {
        let Some(e) = self.entry_mut(msg.id) else {
            return;
        };
        let added = msg.hooks.bits() & !e.declared.bits();
        e.unhandled = HookSet::from_bits(e.unhandled.bits() & !added);
        e.declared = msg.hooks;
        self.rebuild_routes();
    }
}

/// Puts a registered addon on its routes; answers whether the proxy is already running.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub(crate) struct Activate {
    pub(crate) id: AddonId,
    /// The hooks it declared after its first `configure` (they may depend on the options).
    pub(crate) declared: Option<HookSet>,
}

impl Handler<Activate> for AddonManager {
    type Result = bool;

    fn handle(&mut self, msg: Activate, _ctx: &mut Self::Context) -> bool {
        if let Some(e) = self.entry_mut(msg.id) {
            e.active = true;
            if let Some(d) = msg.declared {
                e.declared = d;
            }
        }
        self.rebuild_routes();
        self.running
    }
}

/// An addon declared these hooks after a `configure` ([`Addon::hooks`](crate::Addon::hooks)
/// read again): its routes are rebuilt when they changed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Redeclare {
    pub(crate) id: AddonId,
    pub(crate) hooks: HookSet,
}

impl Handler<Redeclare> for AddonManager {
    type Result = ();

    fn handle(&mut self, msg: Redeclare, _ctx: &mut Self::Context) {
        let Some(e) = self.entry_mut(msg.id) else {
            return;
        };
        if e.declared != msg.hooks {
            e.declared = msg.hooks;
            self.rebuild_routes();
        }
    }
}

/// Takes an addon off every route and out of the registry; answers its recipient so the
/// caller can send it `done`.
#[derive(Debug, Message)]
#[rtype(result = "Option<(RouteEntry, Recipient<Retire>)>")]
pub(crate) struct Unregister(pub(crate) AddonId);

impl Handler<Unregister> for AddonManager {
    type Result = Option<(RouteEntry, Recipient<Retire>)>;

    fn handle(&mut self, Unregister(id): Unregister, _ctx: &mut Self::Context) -> Self::Result {
        let pos = self.entries.iter().position(|e| e.route.id == id)?;
        let e = self.entries.remove(pos);
        self.rebuild_routes();
        Some((e.route, e.retire))
    }
}

/// Lists the registered addons (active ones, in registration order).
#[derive(Debug, Message)]
#[rtype(result = "Vec<RouteEntry>")]
pub(crate) struct ListAddons;

impl Handler<ListAddons> for AddonManager {
    type Result = Vec<RouteEntry>;

    fn handle(&mut self, _: ListAddons, _ctx: &mut Self::Context) -> Self::Result {
        self.entries
            .iter()
            .filter(|e| e.active)
            .map(|e| e.route.clone())
            .collect()
    }
}

/// Publishes a new options snapshot.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct PublishOptions(pub(crate) Arc<Options>);

impl Handler<PublishOptions> for AddonManager {
    type Result = ();

    fn handle(&mut self, PublishOptions(o): PublishOptions, _ctx: &mut Self::Context) {
        self.shared.publish_options(o);
        self.publish_http_scope();
    }
}

/// Marks the proxy running (or not); answers the active addons for the broadcast.
#[derive(Debug, Message)]
#[rtype(result = "Vec<RouteEntry>")]
pub(crate) struct SetRunning(pub(crate) bool);

impl Handler<SetRunning> for AddonManager {
    type Result = Vec<RouteEntry>;

    fn handle(&mut self, SetRunning(r): SetRunning, _ctx: &mut Self::Context) -> Self::Result {
        self.running = r;
        self.entries
            .iter()
            .filter(|e| e.active)
            .map(|e| e.route.clone())
            .collect()
    }
}

/// Finds the addon that declared a command.
#[derive(Debug, Message)]
#[rtype(result = "Option<Recipient<CommandCall>>")]
pub(crate) struct FindCommand(pub(crate) String);

impl Handler<FindCommand> for AddonManager {
    type Result = Option<Recipient<CommandCall>>;

    fn handle(&mut self, FindCommand(n): FindCommand, _ctx: &mut Self::Context) -> Self::Result {
        self.entries
            .iter()
            .find(|e| e.active && e.command_specs.iter().any(|c| c.name == n))
            .map(|e| e.commands.clone())
    }
}

/// Lists every command declared by active addons.
#[derive(Debug, Message)]
#[rtype(result = "Vec<CommandSpec>")]
pub(crate) struct ListCommands;

impl Handler<ListCommands> for AddonManager {
    type Result = Vec<CommandSpec>;

    fn handle(&mut self, _: ListCommands, _ctx: &mut Self::Context) -> Self::Result {
        self.entries
            .iter()
            .filter(|e| e.active)
            .flat_map(|e| e.command_specs.clone())
            .collect()
    }
}
