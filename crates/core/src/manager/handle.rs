//! `ManagerHandle`: what layers, the CLI and tests hold to talk to the addon manager.

use std::any::Any;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use actix::prelude::*;

use super::{
    Activate, AddonActor, AddonManager, CommandCall, FindCommand, HookCall, ListAddons,
    ListCommands, PublishOptions, Redeclare, Register, RouteEntry, SetRunning, Shared, SlotKey,
    Unregister, Walk, report_fault,
};
use crate::hooks::{
    Addon, CommandSpec, Configure, Flows, Hook, HookKind, HookSet, Loader, LogEntry, in_log_hook,
};
use crate::options::{Options, OptionsError};

/// Identifies a registered addon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddonId(u64);

static NEXT_ADDON: AtomicU64 = AtomicU64::new(1);

/// Why a hook could not be walked. The payload is lost in these cases, which only happen
/// when the actor system is shutting down.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    /// The manager's mailbox is closed.
    #[error("the addon manager is not running")]
    ManagerStopped,
    /// An addon's actor stopped while holding the hook.
    #[error("addon {0} stopped")]
    AddonStopped(String),
    /// The payload's type does not fit the hook (a bug in the caller).
    #[error("payload of the wrong type for hook {0}")]
    WrongPayload(&'static str),
}

/// Why an addon could not be added.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    /// Its options clash with existing ones, or it rejected the current values.
    #[error("addon {addon}: {source}")]
    Options {
        /// The addon's name.
        addon: String,
        /// What was wrong.
        source: OptionsError,
    },
    /// The manager or the addon's actor is gone.
    #[error("addon {0}: the addon manager is not running")]
    Stopped(String),
}

/// A replayer's connection, marked while this lives ([`ManagerHandle::mark_replay`]).
#[derive(Debug)]
#[must_use = "the connection is a replay's only while the mark lives"]
pub struct ReplayMark {
    shared: Arc<Shared>,
    key: (SocketAddr, SocketAddr),
}

impl Drop for ReplayMark {
    fn drop(&mut self) {
        let mut replays = self
            .shared
            .replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = replays.iter().position(|k| *k == self.key) {
            replays.swap_remove(i);
        }
        self.shared
            .replaying
            .store(replays.len(), Ordering::Release);
    }
}

/// A cheap, cloneable handle to the addon manager, usable from any thread.
///
/// [`ManagerHandle::handles`] is the fast path: a layer asks it before building a hook
/// message and sends nothing when no addon handles the hook.
#[derive(Debug, Clone)]
pub struct ManagerHandle {
    addr: Addr<AddonManager>,
    shared: Arc<Shared>,
    arbiter: ArbiterHandle,
}

impl ManagerHandle {
    pub(crate) fn new(
        addr: Addr<AddonManager>,
        shared: Arc<Shared>,
        arbiter: ArbiterHandle,
    ) -> Self {
        Self {
            addr,
            shared,
            arbiter,
        }
    }

    /// Whether some addon may handle `kind` (an atomic load; no message).
    #[inline]
    pub fn handles(&self, kind: HookKind) -> bool {
        self.shared.handled.load(Ordering::Acquire) & (1 << kind as u8) != 0
    }

    /// Whether an HTTP request to `host` needs a flow for the addons handling HTTP hooks:
    /// one of them acts on any host, or names this one ([`Addon::http_hosts`](crate::Addon::http_hosts)).
    /// Meaningful when some addon handles an HTTP hook ([`ManagerHandle::handles_any`]).
    pub fn observes_http_host(&self, host: &str) -> bool {
        if self.shared.http_any_host.load(Ordering::Acquire) {
            return true;
        }
        match &*self.shared.http_scope.load() {
            None => true,
            Some(hosts) => hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }

    /// Whether at least one addon handles any of `kinds` (one atomic load).
    pub fn handles_any(&self, kinds: &[HookKind]) -> bool {
        let handled = self.shared.handled.load(Ordering::Acquire);
        kinds.iter().any(|k| handled & (1 << *k as u8) != 0)
    }

    /// Marks the connection a replayer made from `client` to the proxy's address `proxy`
    /// (its socket's local and peer addresses): the flows the proxy makes of it are replays
    /// (`is_replay == "request"`) from their first hook, until the mark is dropped. Mark
    /// before sending the request. [`crate::replay`] does this for you.
    pub fn mark_replay(&self, client: SocketAddr, proxy: SocketAddr) -> ReplayMark {
        let mut replays = self
            .shared
            .replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        replays.push((client, proxy));
        self.shared
            .replaying
            .store(replays.len(), Ordering::Release);
        ReplayMark {
            shared: self.shared.clone(),
            key: (client, proxy),
        }
    }

    /// Whether the connection from `peer` to the proxy's `local` address is a replayer's
    /// ([`ManagerHandle::mark_replay`]); one atomic load when no replay is under way.
    #[inline]
    pub fn is_replay(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        self.shared.replaying.load(Ordering::Acquire) != 0
            && self
                .shared
                .replays
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&(peer, local))
    }

    /// The current options snapshot (no message).
    pub fn options(&self) -> Arc<Options> {
        self.shared.options.load_full()
    }

    /// Walks `hook` through the addons that handle it, in registration order, and returns
    /// it with their changes. Sends no message when none handles it.
    pub async fn call(&self, hook: Hook) -> Result<Hook, HookError> {
        let mut hook = Some(hook);
        let called = std::future::poll_fn(|cx| match hook.take() {
            Some(h) => std::task::Poll::Ready(self.call_in(h, cx)),
            None => std::task::Poll::Pending,
        })
        .await;
        match called {
            Called::Done(r) => r,
            Called::Later(rest) => rest.await,
        }
    }

    /// [`ManagerHandle::call`] begun within a poll the caller is in (`cx`): on the
    /// manager's thread the addons that are idle and finish in their first poll run right
    /// here, one after the other ([`Called::Done`]); the rest of the walk, if any, is the
    /// boxed future of [`Called::Later`]. What `call` and [`ManagerHandle::fire`] are made
    /// of; a layer polls it itself to save the nested futures of an `async fn` per hook.
    pub fn call_in(&self, hook: Hook, cx: &mut std::task::Context<'_>) -> Called<'_, Hook> {
        let kind = hook.kind();
        if !self.handles(kind) {
            return Called::Done(Ok(hook));
        }
        if this_thread() != self.shared.home {
            // From another worker: one hop to the manager's thread, where the walk runs next
            // to the addons (walking from here would cross threads twice per addon).
            return Called::Later(Box::pin(async move {
                self.addr
                    .send(Walk(hook))
                    .await
                    .map_err(|_| HookError::ManagerStopped)?
            }));
        }
        // On the manager's thread the flow carries its own cursor: the route the manager
        // published is walked here, in the caller's task, with no hop through the manager's
        // mailbox (DESIGN.md §2's measured alternative; the manager keeps the order, the
        // routes and the lifecycle).
        let Some(routes) = self.shared.routes.get(kind as usize) else {
            return Called::Done(Ok(hook));
        };
        let timeout = self.shared.timeout();
        if !self.shared.inline.load(Ordering::Relaxed) {
            let route = routes.load_full();
            return Called::Later(Box::pin(async move {
                let report = |msg| self.addr.do_send(msg);
                super::walk(&route, hook, timeout, false, report).await
            }));
        }
        // The inline pass, in this one poll: idle addons that finish in their first poll run
        // here one after the other, reading the route without taking a reference count.
        // Anything else (a busy addon, a hook that waits) continues in a boxed future.
        let route = routes.load();
        let report = |msg| self.addr.do_send(msg);
        match super::inline_pass(&route, hook, timeout, cx, &report) {
            super::Pass::Done(h) => Called::Done(Ok(h)),
            super::Pass::Stopped(i, first) => {
                let route = arc_swap::Guard::into_inner(route);
                Called::Later(Box::pin(async move {
                    let report = |msg| self.addr.do_send(msg);
                    super::finish(&route, i, first, timeout, true, &report).await
                }))
            }
        }
    }

    /// Typed form of [`ManagerHandle::call_in`] (see [`ManagerHandle::fire`]).
    pub fn fire_in<P: Any + Send>(
        &self,
        kind: HookKind,
        payload: Box<P>,
        cx: &mut std::task::Context<'_>,
    ) -> Called<'_, Box<P>> {
        if !self.handles(kind) {
            return Called::Done(Ok(payload));
        }
        let hook = match Hook::from_payload(kind, payload) {
            Ok(h) => h,
            Err(_) => return Called::Done(Err(HookError::WrongPayload(kind.name()))),
        };
        match self.call_in(hook, cx) {
            Called::Done(r) => Called::Done(r.and_then(|h| typed(kind, h))),
            Called::Later(rest) => Called::Later(Box::pin(async move { typed(kind, rest.await?) })),
        }
    }

    /// Turns running hooks inline (in the caller's task, when the addon is idle; the
    /// default) on or off; off, every hook goes through the addon actors' mailboxes. For
    /// benchmarks and tests comparing the two paths.
    #[doc(hidden)]
    pub fn set_inline_hooks(&self, on: bool) {
        self.shared.inline.store(on, Ordering::Relaxed);
    }

    /// Typed form of [`ManagerHandle::call`]: fires hook `kind` with `payload` (a
    /// `Box<HttpFlow>`, `Box<TcpFlow>`, ...) and gives the payload back.
    pub async fn fire<P: Any + Send>(
        &self,
        kind: HookKind,
        payload: Box<P>,
    ) -> Result<Box<P>, HookError> {
        let mut payload = Some(payload);
        let fired = std::future::poll_fn(|cx| match payload.take() {
            Some(p) => std::task::Poll::Ready(self.fire_in(kind, p, cx)),
            None => std::task::Poll::Pending,
        })
        .await;
        match fired {
            Called::Done(r) => r,
            Called::Later(rest) => rest.await,
        }
    }

    /// Adds an addon at the end of the order: starts its actor on the manager's arbiter,
    /// runs `load` (its options and commands are registered), `configure` with every option
    /// name, and `running` if the proxy is already running. An addon whose `configure`
    /// rejects the current options is not added.
    pub async fn add<A: Addon>(&self, addon: A) -> Result<AddonId, AddError> {
        let name: Arc<str> = addon.name().into();
        let declared = addon.hooks();
        let stopped = || AddError::Stopped(name.to_string());
        let slot = SlotKey::next();
        let addr =
            AddonActor::start_in_arbiter(&self.arbiter, move |_| AddonActor::new(addon, slot));
        let _guard = self.shared.config_lock.lock().await;
        let timeout = self.shared.timeout();

        let id = AddonId(NEXT_ADDON.fetch_add(1, Ordering::Relaxed));
        let loader = Loader {
            manager: Some(self.clone()),
            addon: Some(id),
            ..Loader::default()
        };
        let reply = addr
            .send(HookCall::new(Hook::Load(Box::new(loader)), timeout))
            .await
            .map_err(|_| stopped())?;
        if let Some(f) = &reply.fault {
            report_fault(&name, HookKind::Load, f);
        }
        let mut loader = match reply.hook {
            Hook::Load(l) => *l,
            _ => Loader::new(),
        };
        loader.manager = None;
        let route = RouteEntry {
            id,
            name: name.clone(),
            recipient: addr.clone().recipient(),
            slot,
        };
        let options = self
            .addr
            .send(Register {
                route: route.clone(),
                commands: addr.clone().recipient(),
                retire: addr.clone().recipient(),
                command_specs: loader.commands,
                declared,
                options: loader.options,
                http_hosts: A::http_hosts,
            })
            .await
            .map_err(|_| stopped())?
            .map_err(|source| AddError::Options {
                addon: name.to_string(),
                source,
            })?;

        let all = options.names();
        let declared = match configure_one(&route, all, options, timeout).await {
            Ok(d) => d,
            Err(source) => {
                let _ = self.addr.send(Unregister(id)).await;
                return Err(AddError::Options {
                    addon: name.to_string(),
                    source,
                });
            }
        };
        let running = self
            .addr
            .send(Activate { id, declared })
            .await
            .map_err(|_| stopped())?;
        if running {
            let _ = route
                .recipient
                .send(HookCall::new(Hook::Running, timeout))
                .await;
        }
        Ok(id)
    }

    /// Removes an addon: it leaves every route at once and receives `done` as its last
    /// event. Returns false when no such addon is registered.
    pub async fn remove(&self, id: AddonId) -> bool {
        let Ok(Some((route, retire))) = self.addr.send(Unregister(id)).await else {
            return false;
        };
        let timeout = self.shared.timeout();
        if let Ok(reply) = route
            .recipient
            .send(HookCall::new(Hook::Done, timeout))
            .await
            && let Some(f) = &reply.fault
        {
            report_fault(&route.name, HookKind::Done, f);
        }
        let _ = retire.send(super::Retire).await;
        true
    }

    /// The active addons' names and ids, in registration order.
    pub async fn addons(&self) -> Vec<(AddonId, String)> {
        self.addr
            .send(ListAddons)
            .await
            .map(|v| v.into_iter().map(|e| (e.id, e.name.to_string())).collect())
            .unwrap_or_default()
    }

    /// Sets options from `name=value` specs (as `--set` takes them). Every addon's
    /// `configure` sees the changed names; if one rejects them, the old values are restored
    /// (addons that had accepted are configured again with them) and its error returned.
    /// After its `configure` each addon's [`Addon::hooks`] is read again, so an addon that
    /// handles a hook only while an option is on joins (or leaves) that hook's route now.
    pub async fn set<S: AsRef<str>>(&self, specs: &[S]) -> Result<BTreeSet<String>, OptionsError> {
        let _guard = self.shared.config_lock.lock().await;
        let old = self.shared.options.load_full();
        let mut next = Options::clone(&old);
        let changed = next.set_specs(specs)?;
        if changed.is_empty() {
            return Ok(changed);
        }
        let next = Arc::new(next);
        self.publish(next.clone()).await;
        let addons = self.addr.send(ListAddons).await.unwrap_or_default();
        let timeout = self.shared.timeout();
        for (i, route) in addons.iter().enumerate() {
            match configure_one(route, changed.clone(), next.clone(), timeout).await {
                Ok(declared) => self.redeclare(route, declared).await,
                Err(e) => {
                    self.publish(old.clone()).await;
                    for earlier in &addons[..i] {
                        if let Ok(declared) =
                            configure_one(earlier, changed.clone(), old.clone(), timeout).await
                        {
                            self.redeclare(earlier, declared).await;
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(changed)
    }

    /// Tells the manager which hooks `route`'s addon declared after its `configure`.
    async fn redeclare(&self, route: &RouteEntry, declared: Option<HookSet>) {
        if let Some(hooks) = declared {
            let _ = self
                .addr
                .send(Redeclare {
                    id: route.id,
                    hooks,
                })
                .await;
        }
    }

    async fn publish(&self, o: Arc<Options>) {
        if self.addr.send(PublishOptions(o.clone())).await.is_err() {
            self.shared.publish_options(o);
        }
    }

    /// Asks whoever runs the proxy to shut it down, as a signal would (mitmproxy's
    /// `ctx.master.shutdown()`): [`ManagerHandle::shutdown_requested`] completes. Returns at
    /// once; the shutdown itself (`done` on every addon) follows from the runner.
    pub fn request_shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Completes once [`ManagerHandle::request_shutdown`] was called (at once if it was
    /// already). The proxy's runner waits for it beside the signals.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shared.shutdown.subscribe();
        let _ = rx.wait_for(|asked| *asked).await;
    }

    /// Tells every addon that the proxy is up (`running`).
    pub async fn running(&self) {
        let addons = self.addr.send(SetRunning(true)).await.unwrap_or_default();
        self.broadcast(&addons, || Hook::Running).await;
    }

    /// Shuts the addons down: each gets `done`, in registration order, as its last event.
    pub async fn shutdown(&self) {
        let addons = self.addr.send(SetRunning(false)).await.unwrap_or_default();
        for a in &addons {
            if let Ok(Some((route, retire))) = self.addr.send(Unregister(a.id)).await {
                let timeout = self.shared.timeout();
                let _ = route
                    .recipient
                    .send(HookCall::new(Hook::Done, timeout))
                    .await;
                let _ = retire.send(super::Retire).await;
            }
        }
    }

    async fn broadcast(&self, addons: &[RouteEntry], hook: impl Fn() -> Hook) {
        let timeout = self.shared.timeout();
        for a in addons {
            if let Ok(reply) = a.recipient.send(HookCall::new(hook(), timeout)).await
                && let Some(f) = &reply.fault
            {
                report_fault(&a.name, reply.hook.kind(), f);
            }
        }
    }

    /// Tells the addons handling `update` that these flows changed.
    pub async fn update(&self, flows: Flows) -> Result<Flows, HookError> {
        self.fire(HookKind::Update, Box::new(flows))
            .await
            .map(|b| *b)
    }

    /// Delivers a log record to the addons handling `log`, without waiting; dropped when
    /// the manager's mailbox is full or the record comes from inside a `log` hook.
    pub fn log(&self, entry: LogEntry) {
        if !self.handles(HookKind::Log) || in_log_hook() {
            return;
        }
        let _ = self.addr.try_send(Walk(Hook::Log(Box::new(entry))));
    }

    /// Runs a command declared by an addon in `load`.
    pub async fn command(&self, name: &str, args: &[String]) -> Result<String, String> {
        let target = self
            .addr
            .send(FindCommand(name.to_owned()))
            .await
            .map_err(|_| "the addon manager is not running".to_owned())?
            .ok_or_else(|| format!("unknown command {name}"))?;
        target
            .send(CommandCall {
                name: name.to_owned(),
                args: args.to_vec(),
            })
            .await
            .map_err(|_| format!("the addon serving {name} stopped"))?
    }

    /// Replaces the hooks addon `id` declared ([`Addon::hooks`]) and rebuilds its routes at
    /// once, what it had reported unhandled for the newly declared hooks forgotten: for an
    /// addon whose hooks change while it runs (a script edited to implement another hook).
    pub async fn declare_hooks(&self, id: AddonId, hooks: HookSet) {
        let _ = self.addr.send(super::DeclareHooks { id, hooks }).await;
    }

    /// Every command declared by the active addons.
    pub async fn commands(&self) -> Vec<CommandSpec> {
        self.addr.send(ListCommands).await.unwrap_or_default()
    }
}

/// Runs `configure` on one addon; answers the hooks it declares afterwards.
async fn configure_one(
    route: &RouteEntry,
    updated: BTreeSet<String>,
    options: Arc<Options>,
    timeout: std::time::Duration,
) -> Result<Option<HookSet>, OptionsError> {
    let hook = Hook::Configure(Box::new(Configure { updated, options }));
    let reply = route
        .recipient
        .send(HookCall::new(hook, timeout))
        .await
        .map_err(|_| OptionsError::rejected("*", format!("addon {} stopped", route.name)))?;
    if let Some(f) = &reply.fault {
        report_fault(&route.name, HookKind::Configure, f);
        return Err(OptionsError::rejected(
            "*",
            format!("addon {} {f} in configure", route.name),
        ));
    }
    match reply.output.0 {
        Some(rejected) => Err(*rejected),
        None => Ok(reply.declared),
    }
}

/// What [`ManagerHandle::call_in`] (or [`ManagerHandle::fire_in`]) came to in the
/// caller's poll.
#[must_use = "a hook that did not finish in this poll goes on only when `Later` is awaited"]
pub enum Called<'a, T> {
    /// The walk is over: the hook (payload) back with the addons' changes, or why not.
    Done(Result<T, HookError>),
    /// An addon could not finish in this poll (busy, waiting, or another thread's): the
    /// rest of the walk. `Send`, as [`ManagerHandle::fire`]'s future is.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, HookError>> + Send + 'a>>),
}

impl<T> std::fmt::Debug for Called<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(r) => f.write_str(if r.is_ok() {
                "Done(Ok(..))"
            } else {
                "Done(Err(..))"
            }),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// A walked hook's payload as the type it was fired with.
fn typed<P: Any + Send>(kind: HookKind, hook: Hook) -> Result<Box<P>, HookError> {
    hook.into_payload()
        .and_then(|p| p.downcast::<P>().ok())
        .ok_or(HookError::WrongPayload(kind.name()))
}

thread_local! {
    /// This thread's id, read once (`std::thread::current()` clones a handle per call).
    static THREAD_ID: std::thread::ThreadId = std::thread::current().id();
}

/// The calling thread's id.
fn this_thread() -> std::thread::ThreadId {
    THREAD_ID.with(|id| *id)
}
