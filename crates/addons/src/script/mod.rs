//! `ScriptAddon`: a mitmproxy addon script (`waylay -s script.py`) run unchanged in an
//! embedded CPython, as mitmproxy's own `script` addon runs it.
//!
//! Loading is mitmproxy's: the module's `addons` list, or the module itself, with nested
//! `addons`; `load(loader)` declares options (`loader.add_option`) that `--set` sets and
//! `--options` lists, `@command.command` functions become commands; then `configure`,
//! `running`, and `done` last. A script whose file changes is reloaded before the next event
//! (`done` on the old module, `load`/`configure`/`running` on the new one); a script that
//! fails to load on reload is logged with its line and the proxy keeps going without it.
//!
//! Python runs on the addon's own thread (the addon manager's arbiter), which keeps its
//! Python thread state for its life, so a hook costs taking the GIL, not creating a thread
//! state. Each live flow has one Python flow object, so attributes and `flow.metadata` set in
//! `request` are there in `response`. During a hook the flow's data is moved (not copied)
//! into that object and moved back when the hook returns; the `mitmproxy` classes the script
//! sees are thin Python wrappers reading and writing waylay's flow in place.
//!
//! `async def` hooks run on an asyncio loop in a Python thread of their own; while one
//! awaits, the addon goes on with other flows (a hook awaiting I/O holds only its flow).
//!
//! The connection and TLS hooks are offered under mitmproxy's names with its objects
//! (`conn.rs`); `ctx.options` sets and `ctx.master.shutdown()` go through the manager the
//! script was added to (`control.rs`). A hook a script gains when edited is routed to it from
//! the reload on: the file watcher puts the script on every script hook's route until the
//! reload declares the exact set ([`ManagerHandle::declare_hooks`]).

mod attrs;
mod conn;
mod control;
mod core;
mod headers;
mod host;
mod metadata;
mod slots;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyTuple};
use waylay_core::flow::{Client, FlowId};
use waylay_core::hooks::{
    Begin, ClientHelloData, Configure, Loader, ServerConnectionHookData, TlsData,
};
use waylay_core::{
    Addon, AddonId, Fault, Hook, HookKind, HookSet, HttpFlow, ManagerHandle, OptionSpec,
    OptionValue, Options, OptionsError, TcpFlow,
};

use self::conn::ConnPayload;
use self::core::Core;

/// Why a script could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The file cannot be read.
    #[error("script {path}: {reason}")]
    Unreadable {
        /// The script's path.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// Python failed to start.
    #[error("python: {0}")]
    Interpreter(String),
    /// The script raised while loading (a syntax error, a missing import, an exception in
    /// `load`); the message is one line naming the file and line.
    #[error("script {path}: {reason}")]
    Load {
        /// The script's path.
        path: String,
        /// The error, on one line.
        reason: String,
    },
}

/// Flow objects kept at most; beyond it the oldest are forgotten (a flow whose last hook
/// never fired must not keep its Python object forever).
const MAX_LIVE_FLOWS: usize = 100_000;

/// How often the script file is checked for changes.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The flow hooks a script can implement (under their mitmproxy names; the connection and
/// TLS hooks are in [`conn::CONN_HOOKS`]).
const FLOW_HOOKS: &[HookKind] = &[
    HookKind::HttpConnect,
    HookKind::RequestHeaders,
    HookKind::Request,
    HookKind::ResponseHeaders,
    HookKind::Response,
    HookKind::Error,
    HookKind::WebsocketHandshake,
    HookKind::WebsocketStart,
    HookKind::WebsocketMessage,
    HookKind::WebsocketError,
    HookKind::WebsocketEnd,
    HookKind::TcpStart,
    HookKind::TcpMessage,
    HookKind::TcpError,
    HookKind::TcpEnd,
];

/// The hooks that may still follow `kind` on the same flow.
fn later(kind: HookKind) -> HookSet {
    use HookKind as K;
    let ws = HookSet::of(&[
        K::WebsocketStart,
        K::WebsocketMessage,
        K::WebsocketEnd,
        K::WebsocketError,
    ]);
    let tail = |ks: &[K]| HookSet::of(ks).union(ws).with(K::Error);
    match kind {
        K::WebsocketHandshake => tail(&[
            K::RequestHeaders,
            K::Request,
            K::ResponseHeaders,
            K::Response,
        ]),
        K::RequestHeaders => tail(&[K::Request, K::ResponseHeaders, K::Response]),
        K::Request => tail(&[K::ResponseHeaders, K::Response]),
        K::ResponseHeaders => tail(&[K::Response]),
        K::Response => ws,
        K::WebsocketStart | K::WebsocketMessage => {
            HookSet::of(&[K::WebsocketMessage, K::WebsocketEnd, K::WebsocketError])
        }
        K::TcpStart | K::TcpMessage => HookSet::of(&[K::TcpMessage, K::TcpEnd, K::TcpError]),
        _ => HookSet::EMPTY,
    }
}

/// The hooks the addon is routed for when the script implements `handled`.
fn declared_for(handled: HookSet) -> HookSet {
    let mut declared = waylay_core::hooks::LIFECYCLE;
    for k in handled.iter() {
        declared = declared.with(k);
        // The last hook of a flow frees its Python object, so it is routed here even
        // when the script does not implement it.
        if later(k).contains(HookKind::Error) {
            declared = declared.with(HookKind::Error);
        }
        if matches!(k, HookKind::WebsocketStart | HookKind::WebsocketMessage)
            || (k != HookKind::Response && later(k).contains(HookKind::WebsocketEnd))
        {
            declared = declared
                .with(HookKind::WebsocketEnd)
                .with(HookKind::WebsocketError);
        }
        if matches!(k, HookKind::TcpStart | HookKind::TcpMessage) {
            declared = declared.with(HookKind::TcpEnd).with(HookKind::TcpError);
        }
    }
    declared
}

/// Every hook a script can implement: the routes the addon joins while its changed file is
/// not reloaded yet, so that the first event of a hook the new version gained reaches it.
fn any_script_hook() -> HookSet {
    let all = FLOW_HOOKS
        .iter()
        .chain(conn::CONN_HOOKS.iter().map(|(k, _)| k))
        .fold(HookSet::EMPTY, |s, k| s.with(*k));
    declared_for(all)
}

/// The methods one hook calls, in order: each callable and whether it is `async def`.
type Calls = Vec<(Py<PyAny>, bool)>;

/// One hook method of the script: the bound callable and whether it is `async def`.
#[derive(Debug)]
struct Method {
    call: Py<PyAny>,
    is_async: bool,
}

/// A loaded module: the Python host object and its hook methods by kind.
#[derive(Debug)]
struct Loaded {
    host: Py<PyAny>,
    methods: Vec<Vec<Method>>,
    handled: HookSet,
    /// Hooks with at least one `async def` method: these run detached from the addon.
    asynchronous: HookSet,
    options: Vec<OptionSpec>,
    commands: Vec<(String, String)>,
}

/// The Python object of one live flow.
#[derive(Debug)]
struct FlowEntry {
    obj: Py<PyAny>,
    core: Py<Core>,
    meta: Py<PyDict>,
}

impl FlowEntry {
    /// Follows a `flow.metadata` the script reassigned during a detached hook.
    fn refresh_meta(&mut self) {
        Python::attach(|py| {
            metadata::follow(self.obj.bind(py), &mut self.meta);
        });
    }
}

/// A mitmproxy addon script as a waylay addon.
#[derive(Debug)]
pub struct ScriptAddon {
    path: PathBuf,
    name: String,
    loaded: Option<Loaded>,
    declared: HookSet,
    table: Arc<Mutex<FlowTable>>,
    /// Python objects of finished HTTP flows, ready for the next flows.
    pool: Vec<FlowEntry>,
    options: Arc<Options>,
    changed: Arc<AtomicBool>,
    watching: bool,
    mtime: Option<SystemTime>,
    running: bool,
    /// The manager the script was added to (`ctx.options` sets, `ctx.master.shutdown()`,
    /// and the routes of hooks a reloaded script gains), and the script's id there.
    manager: Option<ManagerHandle>,
    id: Option<AddonId>,
    /// Tells the file watcher to stop (the script is done).
    stop: Arc<AtomicBool>,
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ScriptAddon {
    /// Loads the script at `path` now (runs the module and its `load`), so that its options
    /// are known before the proxy starts (`--set`, `--options`). While it loads,
    /// `ctx.options` holds only the options the script declares; use
    /// [`ScriptAddon::load_with`] to show it the others.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScriptError> {
        Self::load_with(path, &Options::empty())
    }

    /// Loads the script at `path` with `ctx.options` holding `options` while its module and
    /// `load` run, as mitmproxy's do: a script reads the other addons' options (the dumper's
    /// filter, `listen_port`) in `load`, before its first `configure`. Its own options read
    /// their defaults there; values given for them arrive with `configure`.
    pub fn load_with(path: impl AsRef<Path>, options: &Options) -> Result<Self, ScriptError> {
        let path = path.as_ref().to_path_buf();
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        std::fs::metadata(&path).map_err(|e| ScriptError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        host::ensure_started().map_err(ScriptError::Interpreter)?;
        host::keep_thread_state();
        let mtime = mtime(&path);
        let loaded = load_module(&path, options).map_err(|reason| ScriptError::Load {
            path: path.display().to_string(),
            reason,
        })?;
        let declared = declared_for(loaded.handled);
        Ok(Self {
            path,
            name,
            loaded: Some(loaded),
            declared,
            table: Arc::default(),
            pool: Vec::new(),
            options: Arc::new(Options::empty()),
            changed: Arc::new(AtomicBool::new(false)),
            watching: false,
            mtime,
            running: false,
            manager: None,
            id: None,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The options the script declared in `load`, to register before options are parsed.
    pub fn option_specs(&self) -> Vec<OptionSpec> {
        self.loaded
            .as_ref()
            .map(|l| l.options.clone())
            .unwrap_or_default()
    }

    /// The script's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn start_watching(&mut self) {
        if self.watching {
            return;
        }
        self.watching = true;
        let changed = self.changed.clone();
        let stop = self.stop.clone();
        let path = self.path.clone();
        let mut last = self.mtime;
        let routes = self.manager.clone().zip(self.id);
        actix::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            loop {
                tick.tick().await;
                if Arc::strong_count(&changed) == 1 || stop.load(Ordering::Acquire) {
                    // The addon is gone.
                    break;
                }
                let now = mtime(&path);
                if now != last && now.is_some() {
                    last = now;
                    changed.store(true, Ordering::Release);
                    // The script is reloaded on its next event; until then it is on every
                    // hook's route, so the first event of a hook the new version gained
                    // reaches it (the reload then declares the exact set).
                    if let Some((m, id)) = &routes {
                        m.declare_hooks(*id, any_script_hook()).await;
                    }
                }
            }
        });
    }

    /// Reloads the script if its file changed: `done` on the old module, then the new one
    /// is loaded, configured and told it is running. A new module that fails to load is
    /// logged with its line, and the script does nothing until the file changes again.
    fn reload_if_changed(&mut self) {
        // A plain load first: this runs twice per hook, and a locked swap costs tens of
        // cycles where the load costs one.
        if !self.changed.load(Ordering::Acquire) || !self.changed.swap(false, Ordering::AcqRel) {
            return;
        }
        tracing::info!(target: "script", script = %self.name, "reloading script");
        if let Some(old) = self.loaded.take() {
            host::keep_thread_state();
            Python::attach(|py| lifecycle(py, &old.host, "done"));
        }
        lock(&self.table).clear();
        self.pool.clear();
        let loaded = load_module(&self.path, &self.options);
        let declared = match &loaded {
            Ok(new) => declared_for(new.handled),
            Err(_) => waylay_core::hooks::LIFECYCLE,
        };
        self.declared = declared;
        if let Some((m, id)) = self.manager.clone().zip(self.id) {
            // Called inside a hook: the manager learns the routes right after it.
            actix::spawn(async move { m.declare_hooks(id, declared).await });
        }
        match loaded {
            Ok(new) => {
                let options = self.options.clone();
                let all = options.names();
                host::keep_thread_state();
                let r = Python::attach(|py| configure(py, &new.host, &all, &options));
                if let Err(e) = r {
                    tracing::error!(target: "script", script = %self.name, "{e}");
                }
                if self.running {
                    Python::attach(|py| lifecycle(py, &new.host, "running"));
                }
                self.loaded = Some(new);
            }
            Err(e) => {
                tracing::error!(target: "script", script = %self.name, "{}: {e}", self.path.display());
            }
        }
    }

    /// Whether the flow's Python object is still needed after hook `kind`.
    fn keep_after(&self, kind: HookKind, upgraded: bool) -> bool {
        if kind == HookKind::Response && !upgraded {
            return false;
        }
        let handled = self.loaded.as_ref().map_or(HookSet::EMPTY, |l| l.handled);
        // One AND of bit sets (iterating the kinds cost more than the rest of a no-op hook).
        later(kind).bits() & handled.bits() != 0
    }

    /// What a flow hook needs: the methods to call, and whether the flow's object is kept
    /// afterwards; `None` when the script has nothing to run for it.
    fn prepare(&mut self, kind: HookKind, id: FlowId, upgraded: bool) -> Option<(Calls, bool)> {
        self.reload_if_changed();
        let loaded = self.loaded.as_ref()?;
        let calls = host_methods(loaded, kind);
        let keep = self.keep_after(kind, upgraded);
        if calls.is_empty() {
            if !keep {
                lock(&self.table).flows.remove(&id);
            }
            return None;
        }
        host::keep_thread_state();
        Some((calls, keep))
    }

    /// A hook whose methods are all plain functions (hooks with an `async def` method go
    /// through [`Addon::begin`]): one GIL acquisition for the whole hook, and the flow's
    /// Python object reused from a finished flow when nothing else holds it.
    async fn http_hook(&mut self, kind: HookKind, flow: &mut HttpFlow) {
        self.reload_if_changed();
        let keep = self.keep_after(kind, upgraded(flow));
        let Some(loaded) = self.loaded.as_ref() else {
            return;
        };
        let methods = loaded
            .methods
            .get(kind as usize)
            .map_or(&[][..], Vec::as_slice);
        if methods.is_empty() {
            if !keep {
                lock(&self.table).flows.remove(&flow.id);
            }
            return;
        }
        host::keep_thread_state();
        let (name, table, pool) = (&self.name, &self.table, &mut self.pool);
        Python::attach(|py| {
            let known = {
                let mut t = lock(table);
                // Most flows are not kept between hooks: no hashing when none is.
                if t.flows.is_empty() {
                    None
                } else {
                    t.flows.remove(&flow.id)
                }
            };
            let entry = match known {
                Some(e) => Ok(e),
                // A pooled object's metadata dict is empty: the flow's comes in with the
                // merge below.
                None => match pool.pop() {
                    Some(e) => Ok(e),
                    None => new_http_entry(py, flow),
                },
            };
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(target: "script", script = %name, "{e}");
                    return;
                }
            };
            let id = flow.id;
            // After `response` (not a WebSocket's) a flow is over; a copy the script keeps
            // says so (`flow.live` False, as mitmproxy sets it once the response is sent).
            // Before `error` the layer has set it already.
            let over = kind == HookKind::Response && !upgraded(flow);
            with_lent(py, &entry.core, &entry.obj, flow, over, || {
                metadata::merge_in(py, &entry.core, entry.meta.bind(py));
                let obj = entry.obj.bind(py);
                for m in methods {
                    if let Err(e) = m.call.bind(py).call1((obj,)) {
                        hook_error(name, kind, &host::traceback(py, &e));
                    }
                }
                metadata::sync_out(py, obj, &entry.core, &mut entry.meta);
            });
            if keep {
                lock(table).remember(id, entry);
            } else {
                recycle(py, pool, entry);
            }
        });
    }

    /// A connection or TLS hook: the script gets mitmproxy's object for it, and what it may
    /// change is read back (see [`conn`]).
    async fn conn_hook(&mut self, kind: HookKind, mut payload: conn::ConnPayload<'_>) {
        self.reload_if_changed();
        let Some(loaded) = self.loaded.as_ref() else {
            return;
        };
        if loaded.methods.get(kind as usize).is_none_or(Vec::is_empty) {
            return;
        }
        host::keep_thread_state();
        let calls = host_methods(loaded, kind);
        let obj = Python::attach(|py| {
            conn::make(py, kind, &payload).map_err(|e| host::traceback(py, &e))
        });
        let obj = match obj {
            Ok(o) => o,
            Err(e) => {
                hook_error(&self.name, kind, &e);
                return;
            }
        };
        run_calls(&self.name, kind, &obj, &calls).await;
        Python::attach(|py| {
            if let Err(e) = conn::read_back(obj.bind(py), &mut payload) {
                hook_error(&self.name, kind, &host::traceback(py, &e));
            }
        });
    }

    async fn tcp_hook(&mut self, kind: HookKind, flow: &mut TcpFlow) {
        let Some((calls, keep)) = self.prepare(kind, flow.id, false) else {
            return;
        };
        run_tcp(
            self.name.clone(),
            kind,
            flow,
            calls,
            keep,
            self.table.clone(),
        )
        .await;
    }
}

/// Runs `run` with `flow` lent to `core` ([`Core::lend_http`]), and takes it back after,
/// whether `run` returns or unwinds. If the script then holds the flow object `obj` (or one of
/// its views), the core keeps a copy of the flow for it to read (not live when the hook was
/// the flow's last: `over`).
fn with_lent<R>(
    py: Python<'_>,
    core: &Py<Core>,
    obj: &Py<PyAny>,
    flow: &mut HttpFlow,
    over: bool,
    run: impl FnOnce() -> R,
) -> R {
    struct Back<'a, 'py>(Python<'py>, &'a Py<Core>, &'a Py<PyAny>, bool);
    impl Drop for Back<'_, '_> {
        fn drop(&mut self) {
            let py = self.0;
            // Only the entry refers to the flow object and its core once the hook's call
            // is over.
            let keep = script_holds(self.2.bind(py), self.1.bind(py).as_any(), 1);
            // The flow must not stay lent past this point.
            borrow_waiting(py, self.1).end_lend(keep, self.3);
        }
    }
    #[expect(unsafe_code, reason = "lends the hook's flow to the core")]
    // SAFETY: `flow` is borrowed mutably for this whole function, so nothing else reads or
    // writes it; `Back` ends the lend before the function returns or unwinds.
    unsafe {
        borrow_waiting(py, core).lend_http(flow);
    }
    let back = Back(py, core, obj, over);
    let r = run();
    drop(back);
    r
}

/// Whether the script holds, after a hook, the flow object, one of its request, response,
/// headers or WebSocket views, or anything else made on its core (a WebSocket message, a
/// thread still running with the flow): `base` is how many references waylay itself holds
/// to the flow object, and to its core besides `flow._c`. A few reference counts, read where a copy of the whole flow is the
/// alternative; a script that keeps nothing pays only these.
fn script_holds(obj: &Bound<'_, PyAny>, core: &Bound<'_, PyAny>, base: isize) -> bool {
    if refcount(obj) != base {
        return true;
    }
    let Ok(s) = slots::slots(obj.py()) else {
        return true;
    };
    // Waylay's and `flow._c`.
    let mut expected = base + 1;
    // A TCP flow has no such views (and no such slots: they are read only from an HTTP
    // flow object); what the script made on its core counts below.
    if !slots::is_a(obj, &s.http_flow) {
        return refcount(core) != expected;
    }
    for slot in [s.req, s.resp] {
        let Some(m) = slot.get(obj).filter(|m| !m.is_none()) else {
            continue;
        };
        // The flow's slot and `m`; its `_c` is the core.
        if refcount(&m) != 2 || !slots::is_a(&m, &s.message) {
            return true;
        }
        expected += 1;
        if let Some(h) = s.headers.get(&m).filter(|h| !h.is_none()) {
            if refcount(&h) != 2 {
                return true;
            }
            expected += 1;
        }
    }
    if let Some(w) = s.ws.get(obj).filter(|w| !w.is_none()) {
        if refcount(&w) != 2 {
            return true;
        }
        expected += 1;
    }
    refcount(core) != expected
}

/// The core, borrowed mutably once no other thread is inside one of its methods: another
/// thread of the script may hold the flow object too, and be in a method of its core when
/// Python handed this thread the GIL; it returns shortly.
pub(super) fn borrow_waiting<'py>(py: Python<'py>, core: &Py<Core>) -> PyRefMut<'py, Core> {
    loop {
        if let Ok(c) = core.bind(py).try_borrow_mut() {
            return c;
        }
        py.detach(std::thread::yield_now);
    }
}

fn upgraded(flow: &HttpFlow) -> bool {
    flow.websocket.is_some() || flow.response.as_ref().is_some_and(|r| r.status_code == 101)
}

/// The Python objects of the live flows the script has seen.
#[derive(Debug, Default)]
struct FlowTable {
    flows: HashMap<FlowId, FlowEntry>,
    order: VecDeque<FlowId>,
}

impl FlowTable {
    fn remember(&mut self, id: FlowId, entry: FlowEntry) {
        if self.flows.len() >= MAX_LIVE_FLOWS {
            while self.flows.len() >= MAX_LIVE_FLOWS / 2 {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.flows.remove(&old);
            }
        }
        self.order.push_back(id);
        self.flows.insert(id, entry);
    }

    fn clear(&mut self) {
        self.flows.clear();
        self.order.clear();
    }
}

fn lock(t: &Mutex<FlowTable>) -> std::sync::MutexGuard<'_, FlowTable> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs an HTTP flow hook's methods with the flow attached to its Python object.
async fn run_http(
    name: String,
    kind: HookKind,
    flow: &mut HttpFlow,
    calls: Calls,
    keep: bool,
    table: Arc<Mutex<FlowTable>>,
) {
    let id = flow.id;
    let known = lock(&table).flows.remove(&id);
    let entry = match known {
        Some(e) => Ok(e),
        None => Python::attach(|py| new_http_entry(py, flow)),
    };
    let mut entry = match entry {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(target: "script", script = %name, "{e}");
            return;
        }
    };
    let guard = Attached::http(&entry, flow);
    run_calls(&name, kind, &entry.obj, &calls).await;
    guard.detach();
    entry.refresh_meta();
    if keep {
        lock(&table).remember(id, entry);
    }
}

/// Runs a TCP flow hook's methods with the flow attached to its Python object.
async fn run_tcp(
    name: String,
    kind: HookKind,
    flow: &mut TcpFlow,
    calls: Calls,
    keep: bool,
    table: Arc<Mutex<FlowTable>>,
) {
    let id = flow.id;
    let known = lock(&table).flows.remove(&id);
    let entry = match known {
        Some(e) => Ok(e),
        None => Python::attach(|py| new_tcp_entry(py, flow)),
    };
    let mut entry = match entry {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(target: "script", script = %name, "{e}");
            return;
        }
    };
    let guard = Attached::tcp(&entry, flow);
    run_calls(&name, kind, &entry.obj, &calls).await;
    guard.detach();
    entry.refresh_meta();
    if keep {
        lock(&table).remember(id, entry);
    }
}

/// A hook with an `async def` method, run detached from the addon under `timeout`: the flow
/// comes back when the methods are done, or at the deadline with what they did so far.
async fn detached(
    name: String,
    mut hook: Hook,
    calls: Calls,
    keep: bool,
    table: Arc<Mutex<FlowTable>>,
    timeout: Duration,
) -> (Hook, Option<Fault>) {
    let kind = hook.kind();
    let run = async {
        if let Some(flow) = http_of(&mut hook) {
            run_http(name, kind, flow, calls, keep, table).await;
        } else if let Some(flow) = tcp_of(&mut hook) {
            run_tcp(name, kind, flow, calls, keep, table).await;
        }
    };
    // On the deadline the run is dropped, and its guard moves the flow's data back.
    let fault = match tokio::time::timeout(timeout, run).await {
        Ok(()) => None,
        Err(_) => Some(Fault::Timeout(timeout)),
    };
    (hook, fault)
}

fn http_of(hook: &mut Hook) -> Option<&mut HttpFlow> {
    match hook {
        Hook::HttpConnect(f)
        | Hook::RequestHeaders(f)
        | Hook::Request(f)
        | Hook::ResponseHeaders(f)
        | Hook::Response(f)
        | Hook::Error(f)
        | Hook::WebsocketHandshake(f)
        | Hook::WebsocketStart(f)
        | Hook::WebsocketMessage(f)
        | Hook::WebsocketError(f)
        | Hook::WebsocketEnd(f) => Some(f),
        _ => None,
    }
}

fn tcp_of(hook: &mut Hook) -> Option<&mut TcpFlow> {
    match hook {
        Hook::TcpStart(f) | Hook::TcpMessage(f) | Hook::TcpError(f) | Hook::TcpEnd(f) => Some(f),
        _ => None,
    }
}

fn host_methods(loaded: &Loaded, kind: HookKind) -> Calls {
    let Some(ms) = loaded.methods.get(kind as usize) else {
        return Vec::new();
    };
    if ms.is_empty() {
        return Vec::new();
    }
    Python::attach(|py| {
        ms.iter()
            .map(|m| (m.call.clone_ref(py), m.is_async))
            .collect()
    })
}

/// A flow's data moved into its Python object for the length of a hook; moved back on
/// [`Attached::detach`] or, if the hook's future is dropped (an `addon_timeout`), on drop, so
/// the flow always goes on with what the script did.
struct Attached<'a>(Option<Swapped<'a>>);

enum Swapped<'a> {
    Http(&'a mut HttpFlow, Py<Core>, Py<PyAny>, Py<PyDict>),
    Tcp(&'a mut TcpFlow, Py<Core>, Py<PyAny>, Py<PyDict>),
}

impl<'a> Attached<'a> {
    fn http(entry: &FlowEntry, flow: &'a mut HttpFlow) -> Self {
        Python::attach(|py| {
            borrow_waiting(py, &entry.core).swap_http(flow, true, false);
            metadata::merge_in(py, &entry.core, entry.meta.bind(py));
            Self(Some(Swapped::Http(
                flow,
                entry.core.clone_ref(py),
                entry.obj.clone_ref(py),
                entry.meta.clone_ref(py),
            )))
        })
    }

    fn tcp(entry: &FlowEntry, flow: &'a mut TcpFlow) -> Self {
        Python::attach(|py| {
            borrow_waiting(py, &entry.core).swap_tcp(flow, true, false);
            metadata::merge_in(py, &entry.core, entry.meta.bind(py));
            Self(Some(Swapped::Tcp(
                flow,
                entry.core.clone_ref(py),
                entry.obj.clone_ref(py),
                entry.meta.clone_ref(py),
            )))
        })
    }

    fn detach(mut self) {
        self.release();
    }

    fn release(&mut self) {
        let Some(this) = self.0.take() else { return };
        Python::attach(|py| match this {
            Swapped::Http(flow, core, obj, mut meta) => {
                metadata::sync_out(py, obj.bind(py), &core, &mut meta);
                // The entry's references and these.
                let keep = script_holds(obj.bind(py), core.bind(py).as_any(), 2);
                borrow_waiting(py, &core).swap_http(flow, false, keep);
            }
            Swapped::Tcp(flow, core, obj, mut meta) => {
                metadata::sync_out(py, obj.bind(py), &core, &mut meta);
                let keep = script_holds(obj.bind(py), core.bind(py).as_any(), 2);
                borrow_waiting(py, &core).swap_tcp(flow, false, keep);
            }
        });
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Finished flow objects kept for reuse at most.
const POOL_MAX: usize = 256;

/// How many references an object has (to know that only waylay holds it).
fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    #[expect(
        unsafe_code,
        reason = "PyO3 deprecated its wrapper in favour of the FFI call"
    )]
    // SAFETY: a `Bound` proves this thread is attached and the object alive.
    unsafe {
        pyo3::ffi::Py_REFCNT(obj.as_ptr())
    }
}

/// Keeps a finished flow's Python object for the next flow, if nothing but waylay holds it
/// (a script that kept the flow, its request or its headers keeps them as they were).
/// Done here rather than in Python: it runs after every hook of a flow's last hook, and a
/// Python function call costs more than the checks themselves.
fn recycle(py: Python<'_>, pool: &mut Vec<FlowEntry>, mut entry: FlowEntry) {
    let obj = entry.obj.bind(py);
    if pool.len() >= POOL_MAX || refcount(obj) != 1 {
        return;
    }
    // A script may have given the object another class (`flow.__class__ = ...`): the next
    // flow gets a plain `HTTPFlow`.
    if !slots::slots(py).is_ok_and(|s| obj.is_exact_instance(s.http_flow.bind(py))) {
        return;
    }
    let Ok(expected) = reset_views(obj) else {
        return;
    };
    // `flow.metadata` starts empty: a used dict (or one the script kept) is replaced.
    let meta = entry.meta.bind(py);
    if !meta.is_empty() || refcount(meta.as_any()) != 2 {
        let fresh = PyDict::new(py);
        if obj.setattr(pyo3::intern!(py, "metadata"), &fresh).is_err() {
            return;
        }
        entry.meta = fresh.unbind();
    }
    // Only the entry, the flow object and its own views refer to the core: no request,
    // response or headers object of the finished flow is held by the script.
    if refcount(entry.core.bind(py).as_any()) != expected {
        return;
    }
    entry.core.borrow_mut(py).reset();
    pool.push(entry);
}

/// Readies a finished flow object's views for the next flow: its request/response views and
/// their headers views are kept when nothing else holds them (they are views of the same
/// core), attributes a script set are dropped. Returns how many references the core must
/// then have for the object to be reused.
fn reset_views(obj: &Bound<'_, PyAny>) -> PyResult<isize> {
    let py = obj.py();
    let s = slots::slots(py)?;
    let none = || py.None().into_bound(py);
    // The pool entry and `f._c`.
    let mut n = 2;
    for slot in [s.req, s.resp] {
        let Some(m) = slot.get(obj).filter(|m| !m.is_none()) else {
            continue;
        };
        // The flow's slot and `m`.
        if refcount(&m) == 2 && slots::is_a(&m, &s.message) {
            n += 1;
            clear_instance_dict(&m);
            if let Some(h) = s.headers.get(&m).filter(|h| !h.is_none()) {
                if refcount(&h) == 2 {
                    n += 1;
                } else {
                    s.headers.set(&m, none());
                }
            }
        } else {
            slot.set(obj, none());
        }
    }
    if !s.ws.is_none(obj) {
        s.ws.set(obj, none());
    }
    clear_instance_dict(obj);
    Ok(n)
}

/// Drops the attributes a script set on a flow object or one of its views.
fn clear_instance_dict(obj: &Bound<'_, PyAny>) {
    if let Some(d) = slots::instance_dict(obj)
        && let Ok(d) = d.cast::<PyDict>()
        && !d.is_empty()
    {
        d.clear();
    }
}

/// A new Python object for `flow`; its metadata dict starts empty (the flow's comes in when
/// the hook starts, [`metadata::merge_in`]).
fn new_http_entry(py: Python<'_>, flow: &HttpFlow) -> Result<FlowEntry, String> {
    let core = Py::new(py, Core::http_placeholder(flow)).map_err(|e| host::one_line(py, &e))?;
    new_entry(py, core, |f| &f.wrap_http)
}

fn new_tcp_entry(py: Python<'_>, flow: &TcpFlow) -> Result<FlowEntry, String> {
    let core = Py::new(py, Core::tcp_placeholder(flow)).map_err(|e| host::one_line(py, &e))?;
    new_entry(py, core, |f| &f.wrap_tcp)
}

fn new_entry(
    py: Python<'_>,
    core: Py<Core>,
    wrap: impl FnOnce(&host::ShimFns) -> &Py<PyAny>,
) -> Result<FlowEntry, String> {
    let r = (|| -> PyResult<FlowEntry> {
        let wrap = wrap(host::fns(py)?);
        let obj = wrap.bind(py).call1((core.clone_ref(py), py.None()))?;
        let meta = obj.getattr("metadata")?.cast_into::<PyDict>()?.unbind();
        Ok(FlowEntry {
            obj: obj.unbind(),
            core,
            meta,
        })
    })();
    r.map_err(|e| host::one_line(py, &e))
}

/// Runs the hook's methods in order (an `async def` one to completion before the next, as
/// mitmproxy does); an exception is logged with its traceback and the next method runs.
async fn run_calls(name: &str, kind: HookKind, obj: &Py<PyAny>, calls: &[(Py<PyAny>, bool)]) {
    for (call, is_async) in calls {
        let waiting = Python::attach(|py| {
            let obj = obj.bind(py);
            match call.bind(py).call1((obj,)) {
                Ok(coro) if *is_async => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let waker = Waker {
                        tx: Mutex::new(Some(tx)),
                    };
                    let started =
                        host::fns(py).and_then(|f| f.run_async.bind(py).call1((coro, waker)));
                    match started {
                        Ok(_) => Some(rx),
                        Err(e) => {
                            hook_error(name, kind, &host::traceback(py, &e));
                            None
                        }
                    }
                }
                Ok(_) => None,
                Err(e) => {
                    hook_error(name, kind, &host::traceback(py, &e));
                    None
                }
            }
        });
        if let Some(rx) = waiting
            && let Ok(Some(tb)) = rx.await
        {
            hook_error(name, kind, &tb);
        }
    }
}

fn hook_error(name: &str, kind: HookKind, traceback: &str) {
    tracing::error!(target: "script", script = name, "{name}: error in hook {}:\n{traceback}", kind.name());
}

/// Called from the asyncio thread when an `async def` hook finished: `None`, or the
/// traceback of its exception.
#[pyclass(module = "mitmproxy._waylay")]
#[derive(Debug)]
pub(crate) struct Waker {
    tx: Mutex<Option<tokio::sync::oneshot::Sender<Option<String>>>>,
}

#[pymethods]
impl Waker {
    #[pyo3(signature = (error = None))]
    fn __call__(&self, error: Option<String>) {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(error);
        }
    }
}

/// Runs the module at `path` and its `load`, with `ctx.options` holding `options` (unless
/// empty); collects hooks, options and commands.
fn load_module(path: &Path, options: &Options) -> Result<Loaded, String> {
    host::keep_thread_state();
    Python::attach(|py| {
        let r = (|| -> PyResult<Loaded> {
            let shim = host::shim(py)?;
            if options.specs().next().is_some() {
                shim.call_method1("options_configured", (control::values_dict(py, options)?,))?;
            }
            let host = shim.call_method1("ScriptHost", (path.to_string_lossy().into_owned(),))?;
            host.call_method0("load")?;
            let mut methods: Vec<Vec<Method>> = (0..HookKind::COUNT).map(|_| Vec::new()).collect();
            let mut handled = HookSet::EMPTY;
            let mut asynchronous = HookSet::EMPTY;
            let conn_hooks = conn::CONN_HOOKS.iter().map(|(k, _)| k);
            for kind in FLOW_HOOKS.iter().chain(conn_hooks) {
                let ms = host.call_method1("methods", (conn::script_name(*kind),))?;
                for m in ms.cast::<PyList>()?.iter() {
                    let (call, is_async): (Bound<'_, PyAny>, bool) = m.extract()?;
                    if is_async {
                        asynchronous = asynchronous.with(*kind);
                    }
                    methods[*kind as usize].push(Method {
                        call: call.unbind(),
                        is_async,
                    });
                    handled = handled.with(*kind);
                }
            }
            let mut options = Vec::new();
            for o in host.getattr("option_specs")?.cast::<PyList>()?.iter() {
                let t = o.cast::<PyTuple>()?;
                options.push(option_spec(t)?);
            }
            let mut commands = Vec::new();
            for c in host.getattr("command_specs")?.cast::<PyList>()?.iter() {
                commands.push(c.extract::<(String, String)>()?);
            }
            Ok(Loaded {
                host: host.unbind(),
                methods,
                handled,
                asynchronous,
                options,
                commands,
            })
        })();
        r.map_err(|e| {
            // The shim formats load errors as one line naming the file and line.
            host::one_line(py, &e)
                .trim_start_matches("ScriptLoadError: ")
                .to_owned()
        })
    })
}

fn option_spec(t: &Bound<'_, PyTuple>) -> PyResult<OptionSpec> {
    let (name, kind, default, help, choices): (
        String,
        String,
        Bound<'_, PyAny>,
        String,
        Option<Vec<String>>,
    ) = t.extract()?;
    let value = match kind.as_str() {
        "bool" => OptionValue::Bool(default.extract()?),
        "int" => OptionValue::Int(default.extract()?),
        "str" => OptionValue::Str(default.extract()?),
        "optional str" => OptionValue::OptStr(default.extract()?),
        "optional int" => OptionValue::OptInt(default.extract()?),
        "sequence of str" => OptionValue::Seq(default.extract()?),
        other => {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "option {name}: type {other} is not supported"
            )));
        }
    };
    let mut spec = OptionSpec::new(name, value, help);
    if let Some(c) = choices {
        spec = spec.with_choices(c);
    }
    Ok(spec)
}

/// `configure(updated)` on the script, with `ctx.options` holding every current value.
fn configure(
    py: Python<'_>,
    host: &Py<PyAny>,
    updated: &BTreeSet<String>,
    options: &Options,
) -> Result<(), String> {
    let r = (|| -> PyResult<()> {
        let values = control::values_dict(py, options)?;
        let updated = PySet::new(py, updated)?;
        host.bind(py).call_method1("configure", (updated, values))?;
        Ok(())
    })();
    r.map_err(|e| host::traceback(py, &e))
}

fn lifecycle(py: Python<'_>, host: &Py<PyAny>, name: &str) {
    if let Err(e) = host.bind(py).call_method1("lifecycle", (name,)) {
        tracing::error!(target: "script", "{}", host::traceback(py, &e));
    }
}

impl Addon for ScriptAddon {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn hooks(&self) -> HookSet {
        if self.changed.load(Ordering::Acquire) {
            // Changed, not reloaded yet: stay on every route until the reload (the manager
            // reads this after each `configure`, which must not undo the watcher's set).
            return any_script_hook();
        }
        self.declared
    }

    fn begin(&mut self, hook: Hook, timeout: Duration) -> Begin {
        // Reloaded first: whether the hook is `async def` is the new version's answer.
        self.reload_if_changed();
        let kind = hook.kind();
        if !self
            .loaded
            .as_ref()
            .is_some_and(|l| l.asynchronous.contains(kind))
        {
            return Begin::Method(hook);
        }
        let mut hook = hook;
        let (id, up) = if let Some(f) = http_of(&mut hook) {
            (f.id, upgraded(f))
        } else if let Some(f) = tcp_of(&mut hook) {
            (f.id, false)
        } else {
            return Begin::Method(hook);
        };
        let Some((calls, keep)) = self.prepare(kind, id, up) else {
            return Begin::Method(hook);
        };
        Begin::Detached(Box::pin(detached(
            self.name.clone(),
            hook,
            calls,
            keep,
            self.table.clone(),
            timeout,
        )))
    }

    async fn load(&mut self, loader: &mut Loader) {
        if let Some(m) = loader.manager() {
            control::attach(m);
            self.manager = Some(m.clone());
        }
        self.id = loader.addon_id();
        if let Some(l) = &self.loaded {
            for spec in &l.options {
                loader.add_option(spec.clone());
            }
            for (name, help) in &l.commands {
                loader.add_command(name.clone(), help.clone());
            }
        }
        self.start_watching();
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.options = cfg.options.clone();
        if let Some(m) = &self.manager {
            // Another script's `done` may have forgotten the manager this one still uses.
            control::attach(m);
        }
        self.reload_if_changed();
        let Some(l) = &self.loaded else { return Ok(()) };
        host::keep_thread_state();
        Python::attach(|py| configure(py, &l.host, &cfg.updated, &cfg.options))
            .map_err(|e| OptionsError::rejected("*", format!("{}: {e}", self.name)))
    }

    async fn running(&mut self) {
        self.running = true;
        self.reload_if_changed();
        if let Some(l) = &self.loaded {
            host::keep_thread_state();
            Python::attach(|py| lifecycle(py, &l.host, "running"));
        }
    }

    async fn done(&mut self) {
        if let Some(l) = self.loaded.take() {
            host::keep_thread_state();
            Python::attach(|py| lifecycle(py, &l.host, "done"));
        }
        control::detach();
        self.manager = None;
        self.stop.store(true, Ordering::Release);
        lock(&self.table).clear();
        self.pool.clear();
    }

    async fn command(&mut self, name: &str, args: &[String]) -> Result<String, String> {
        self.reload_if_changed();
        let Some(l) = &self.loaded else {
            return Err(format!("{}: the script is not loaded", self.name));
        };
        host::keep_thread_state();
        Python::attach(|py| {
            l.host
                .bind(py)
                .call_method1("command", (name, args.to_vec()))
                .and_then(|r| r.extract::<String>())
                .map_err(|e| host::one_line(py, &e))
        })
    }

    async fn http_connect(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::HttpConnect, flow).await;
    }
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::RequestHeaders, flow).await;
    }
    async fn request(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::Request, flow).await;
    }
    async fn response_headers(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::ResponseHeaders, flow).await;
    }
    async fn response(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::Response, flow).await;
    }
    async fn error(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::Error, flow).await;
    }
    async fn websocket_handshake(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::WebsocketHandshake, flow).await;
    }
    async fn websocket_start(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::WebsocketStart, flow).await;
    }
    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::WebsocketMessage, flow).await;
    }
    async fn websocket_error(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::WebsocketError, flow).await;
    }
    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        self.http_hook(HookKind::WebsocketEnd, flow).await;
    }
    async fn tcp_start(&mut self, flow: &mut TcpFlow) {
        self.tcp_hook(HookKind::TcpStart, flow).await;
    }
    async fn tcp_message(&mut self, flow: &mut TcpFlow) {
        self.tcp_hook(HookKind::TcpMessage, flow).await;
    }
    async fn tcp_error(&mut self, flow: &mut TcpFlow) {
        self.tcp_hook(HookKind::TcpError, flow).await;
    }
    async fn tcp_end(&mut self, flow: &mut TcpFlow) {
        self.tcp_hook(HookKind::TcpEnd, flow).await;
    }
    async fn client_connect(&mut self, client: &mut Client) {
        self.conn_hook(HookKind::ClientConnect, ConnPayload::Client(client))
            .await;
    }
    async fn client_disconnect(&mut self, client: &mut Client) {
        self.conn_hook(HookKind::ClientDisconnect, ConnPayload::Client(client))
            .await;
    }
    async fn server_connect(&mut self, data: &mut ServerConnectionHookData) {
        self.conn_hook(HookKind::ServerConnect, ConnPayload::Server(data))
            .await;
    }
    async fn server_connected(&mut self, data: &mut ServerConnectionHookData) {
        self.conn_hook(HookKind::ServerConnected, ConnPayload::Server(data))
            .await;
    }
    async fn server_disconnect(&mut self, data: &mut ServerConnectionHookData) {
        self.conn_hook(HookKind::ServerDisconnect, ConnPayload::Server(data))
            .await;
    }
    async fn server_connect_error(&mut self, data: &mut ServerConnectionHookData) {
        self.conn_hook(HookKind::ServerConnectError, ConnPayload::Server(data))
            .await;
    }
    async fn tls_clienthello(&mut self, data: &mut ClientHelloData) {
        self.conn_hook(HookKind::TlsClienthello, ConnPayload::Hello(data))
            .await;
    }
    async fn tls_start_client(&mut self, data: &mut TlsData) {
        self.conn_hook(HookKind::TlsStartClient, ConnPayload::Tls(data))
            .await;
    }
    async fn tls_start_server(&mut self, data: &mut TlsData) {
        self.conn_hook(HookKind::TlsStartServer, ConnPayload::Tls(data))
            .await;
    }
    async fn tls_established_client(&mut self, data: &mut TlsData) {
        self.conn_hook(HookKind::TlsEstablishedClient, ConnPayload::Tls(data))
            .await;
    }
    async fn tls_established_server(&mut self, data: &mut TlsData) {
        self.conn_hook(HookKind::TlsEstablishedServer, ConnPayload::Tls(data))
            .await;
    }
    async fn tls_failed_client(&mut self, data: &mut TlsData) {
        self.conn_hook(HookKind::TlsFailedClient, ConnPayload::Tls(data))
            .await;
    }
    async fn tls_failed_server(&mut self, data: &mut TlsData) {
        self.conn_hook(HookKind::TlsFailedServer, ConnPayload::Tls(data))
            .await;
    }
}
