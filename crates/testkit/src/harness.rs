//! `AddonHarness`: addons running in the real addon manager, driven hook by hook.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;
use waylay_core::flow::{Client, Flow};
use waylay_core::hooks::{
    ClientHelloData, Flows, LogEntry, LogLevel, NextLayer, ServerConnectionHookData,
    Socks5AuthData, TlsData,
};
use waylay_core::log::AddonLogLayer;
use waylay_core::{
    AddError, Addon, AddonId, AddonManager, Hook, HookKind, HttpFlow, ManagerHandle, Options,
    OptionsError, TcpFlow,
};

use crate::capture::Captured;

/// One or more addons running in the **real** [`AddonManager`], with a typed method per hook.
///
/// Each hook method moves the payload through every addon that handles the hook, in
/// registration order, exactly as the proxy does, and returns it with their changes. Log
/// records emitted while the harness lives are captured ([`AddonHarness::logs`]) and
/// delivered to the addons' `log` hook.
///
/// **Use it on the test's thread, inside an actix system**: write the test with
/// `#[actix_rt::test]` (or `#[actix::test]`). The manager and the addons run on that
/// thread's arbiter, and the log capture is a `tracing` subscriber set as the thread's
/// default for as long as the harness lives.
///
/// ```
/// use waylay_core::{Addon, HttpFlow};
/// use waylay_testkit::{AddonHarness, FlowExt, tflow, tresp};
///
/// #[derive(Default)]
/// struct Teapot;
///
/// impl Addon for Teapot {
///     async fn response(&mut self, flow: &mut HttpFlow) {
///         if let Some(r) = flow.response.as_mut() {
///             r.status_code = 418;
///         }
///     }
/// }
///
/// # actix_rt::System::new().block_on(async {
/// let mut addons = AddonHarness::new(Teapot).await;
/// let flow = addons.response(tflow().with_response(tresp())).await;
/// assert_eq!(flow.response.unwrap().status_code, 418);
/// # });
/// ```
#[derive(Debug)]
pub struct AddonHarness {
    manager: ManagerHandle,
    ids: Vec<AddonId>,
    logs: Captured,
    // Dropped last: the addons may log until the very end.
    _subscriber: DefaultGuard,
}

impl AddonHarness {
    /// A harness with no addons, the core options at their defaults, and log capture on.
    pub async fn empty() -> Self {
        Self::with_options(Options::new()).await
    }

    /// A harness with no addons and the given options.
    pub async fn with_options(options: Options) -> Self {
        let manager = AddonManager::start(options);
        let logs = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(logs.clone())
            .with(AddonLogLayer::new(manager.clone(), tracing::Level::DEBUG));
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            manager,
            ids: Vec::new(),
            logs,
            _subscriber: guard,
        }
    }

    /// A harness running `addon` (loaded and configured, as the proxy would).
    ///
    /// # Panics
    ///
    /// When the addon cannot be added (its options clash or its `configure` rejects the
    /// defaults); use [`AddonHarness::try_add`] to test that.
    pub async fn new<A: Addon>(addon: A) -> Self {
        let mut h = Self::empty().await;
        h.add(addon).await;
        h
    }

    /// A harness running the mitmproxy addon script at `path` (loaded as `waylay -s` loads
    /// it), so a script is unit-tested from Rust without a network. Needs the testkit's
    /// `python` feature.
    ///
    /// # Panics
    ///
    /// When the script cannot be loaded (the message is the one-line load error).
    #[cfg(feature = "python")]
    pub async fn script(path: impl AsRef<std::path::Path>) -> Self {
        let mut h = Self::empty().await;
        // The script's `load` sees the harness's options in `ctx.options`, as in the proxy.
        match waylay_addons::ScriptAddon::load_with(path, &h.manager.options()) {
            Ok(addon) => h.add(addon).await,
            Err(e) => panic!("AddonHarness: {e}"),
        };
        h
    }

    /// A harness running several addons, in this order: `with_addons((first, second))`.
    ///
    /// # Panics
    ///
    /// When one of them cannot be added (see [`AddonHarness::new`]).
    pub async fn with_addons(addons: impl AddonList) -> Self {
        let mut h = Self::empty().await;
        addons.add_to(&mut h).await;
        h
    }

    /// Adds `addon` after the others (`load`, `configure`, and `running` if
    /// [`AddonHarness::running`] was called); returns its id.
    ///
    /// # Panics
    ///
    /// When the addon cannot be added (see [`AddonHarness::new`]).
    pub async fn add<A: Addon>(&mut self, addon: A) -> AddonId {
        match self.try_add(addon).await {
            Ok(id) => id,
            Err(e) => panic!("AddonHarness: {e}"),
        }
    }

    /// Adds `addon` after the others; the error says why it could not be added.
    pub async fn try_add<A: Addon>(&mut self, addon: A) -> Result<AddonId, AddError> {
        let id = self.manager.add(addon).await?;
        self.ids.push(id);
        Ok(id)
    }

    /// Removes an addon: it gets `done` and no more hooks. False if it was not registered.
    pub async fn remove(&mut self, id: AddonId) -> bool {
        self.ids.retain(|i| *i != id);
        self.manager.remove(id).await
    }

    /// The ids of the addons added through the harness, in order.
    pub fn ids(&self) -> &[AddonId] {
        &self.ids
    }

    /// The manager's handle, to fire hooks concurrently (it is `Clone` and `Send`).
    pub fn manager(&self) -> &ManagerHandle {
        &self.manager
    }

    /// Fires hook `kind` with `payload` (an [`HttpFlow`], a [`TcpFlow`], a [`Client`], ...)
    /// through the addons and returns it.
    ///
    /// # Panics
    ///
    /// When `payload` is not the type `kind` carries, or the manager stopped.
    pub async fn fire<P: Any + Send>(&mut self, kind: HookKind, payload: P) -> P {
        match self.manager.fire(kind, Box::new(payload)).await {
            Ok(p) => *p,
            Err(e) => panic!("AddonHarness: hook {}: {e}", kind.name()),
        }
    }

    /// Fires a ready-made [`Hook`] (any hook, including those without payload) and returns it.
    ///
    /// # Panics
    ///
    /// When the manager stopped.
    pub async fn call(&mut self, hook: Hook) -> Hook {
        let kind = hook.kind();
        match self.manager.call(hook).await {
            Ok(h) => h,
            Err(e) => panic!("AddonHarness: hook {}: {e}", kind.name()),
        }
    }

    /// Whether some addon may handle `kind` (the manager's fast-path bit).
    pub fn handles(&self, kind: HookKind) -> bool {
        self.manager.handles(kind)
    }

    /// Waits until the manager has processed every message sent to it so far (such as what
    /// it learned about unhandled hooks during the last hook).
    pub async fn sync(&self) {
        let _ = self.manager.addons().await;
    }

    /// Sets options from `name=value` specs; every addon's `configure` sees the change.
    /// Returns the names that changed, or why nothing was set.
    pub async fn set_options<S: AsRef<str>>(
        &mut self,
        specs: &[S],
    ) -> Result<BTreeSet<String>, OptionsError> {
        self.manager.set(specs).await
    }

    /// The current options.
    pub fn options(&self) -> Arc<Options> {
        self.manager.options()
    }

    /// Fires `running` on every addon, as the proxy does once it listens.
    pub async fn running(&mut self) {
        self.manager.running().await;
    }

    /// Fires `done` on every addon (their last event) and removes them.
    pub async fn shutdown(&mut self) {
        self.ids.clear();
        self.manager.shutdown().await;
    }

    /// Fires `update` with `flows`, as another addon changing flows would.
    pub async fn update(&mut self, flows: Vec<Flow>) -> Flows {
        self.fire(HookKind::Update, flows).await
    }

    /// Runs a command an addon declared in `load`.
    pub async fn command(&mut self, name: &str, args: &[&str]) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.manager.command(name, &args).await
    }

    /// Every log record emitted on this thread while the harness lived (by the addons, the
    /// manager and the test), oldest first.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.logs.snapshot()
    }

    /// Whether a captured log record's message contains `needle`.
    pub fn has_log(&self, needle: &str) -> bool {
        self.logs
            .snapshot()
            .iter()
            .any(|e| e.message.contains(needle))
    }

    /// Whether a captured record of `level` or more severe contains `needle`.
    pub fn has_log_at(&self, level: LogLevel, needle: &str) -> bool {
        self.logs
            .snapshot()
            .iter()
            .any(|e| e.level >= level && e.message.contains(needle))
    }

    /// Forgets the captured log records.
    pub fn clear_logs(&self) {
        self.logs.clear();
    }
}

macro_rules! typed_hooks {
    ($($method:ident => $kind:ident($payload:ty);)*) => {
        impl AddonHarness {
            $(
                #[doc = concat!(
                    "Fires `", stringify!($method), "` with `payload` through the addons and ",
                    "returns it (see [`HookKind::", stringify!($kind), "`])."
                )]
                ///
                /// # Panics
                ///
                /// When the manager stopped.
                pub async fn $method(&mut self, payload: $payload) -> $payload {
                    self.fire(HookKind::$kind, payload).await
                }
            )*
        }
    };
}

typed_hooks! {
    client_connect => ClientConnect(Client);
    client_disconnect => ClientDisconnect(Client);
    server_connect => ServerConnect(ServerConnectionHookData);
    server_disconnect => ServerDisconnect(ServerConnectionHookData);
    server_connected => ServerConnected(ServerConnectionHookData);
    server_connect_error => ServerConnectError(ServerConnectionHookData);
    next_layer => NextLayer(NextLayer);
    log_entry => Log(LogEntry);
    http_connect => HttpConnect(HttpFlow);
    http_connect_upstream => HttpConnectUpstream(HttpFlow);
    request_headers => RequestHeaders(HttpFlow);
    request => Request(HttpFlow);
    response_headers => ResponseHeaders(HttpFlow);
    response => Response(HttpFlow);
    error => Error(HttpFlow);
    websocket_handshake => WebsocketHandshake(HttpFlow);
    websocket_start => WebsocketStart(HttpFlow);
    websocket_message => WebsocketMessage(HttpFlow);
    websocket_error => WebsocketError(HttpFlow);
    websocket_end => WebsocketEnd(HttpFlow);
    tcp_start => TcpStart(TcpFlow);
    tcp_message => TcpMessage(TcpFlow);
    tcp_error => TcpError(TcpFlow);
    tcp_end => TcpEnd(TcpFlow);
    tls_clienthello => TlsClienthello(ClientHelloData);
    tls_start_client => TlsStartClient(TlsData);
    tls_start_server => TlsStartServer(TlsData);
    tls_established_client => TlsEstablishedClient(TlsData);
    tls_established_server => TlsEstablishedServer(TlsData);
    tls_failed_client => TlsFailedClient(TlsData);
    tls_failed_server => TlsFailedServer(TlsData);
    socks5_auth => Socks5Auth(Socks5AuthData);
}

/// Addons to start a harness with, in order: a tuple of up to eight addons
/// (`AddonHarness::with_addons((first, second))`).
pub trait AddonList {
    /// Adds the addons to `harness`, in order.
    #[expect(
        async_fn_in_trait,
        reason = "the harness runs on one thread; no Send needed"
    )]
    async fn add_to(self, harness: &mut AddonHarness);
}

macro_rules! addon_tuples {
    ($(($($a:ident),+);)*) => {
        $(
            impl<$($a: Addon),+> AddonList for ($($a,)+) {
                #[expect(non_snake_case, reason = "the type names double as bindings")]
                async fn add_to(self, harness: &mut AddonHarness) {
                    let ($($a,)+) = self;
                    $( harness.add($a).await; )+
                }
            }
        )*
    };
}

addon_tuples! {
    (A);
    (A, B);
    (A, B, C);
    (A, B, C, D);
    (A, B, C, D, E);
    (A, B, C, D, E, F);
    (A, B, C, D, E, F, G);
    (A, B, C, D, E, F, G, H);
}
