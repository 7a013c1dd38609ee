//! The proxy: builder, workers, listeners (one per mode), and graceful shutdown.

mod listen;
mod signals;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;
use waylay_core::hooks::Configure;
use waylay_core::{AddError, Addon, AddonId, AddonManager, ManagerHandle, Options, OptionsError};

pub use listen::Listening;
use signals::Signals;

use crate::config::{ProxyConfig, expand_home, listen_port_option};
use crate::context::Close;
use crate::context::ProxyShared;
use crate::error::ProxyError;
use crate::tls::{CertCache, CertificateAuthority};

type AddonThunk = Box<
    dyn FnOnce(ManagerHandle, &Options) -> Pin<Box<dyn Future<Output = Result<AddonId, AddError>>>>
        + Send,
>;

/// Splits `name=value` specs into those naming an option `options` has and the others.
fn split_known(options: &Options, specs: Vec<String>) -> (Vec<String>, Vec<String>) {
    specs.into_iter().partition(|s| {
        let name = s.split_once('=').map_or(s.as_str(), |(n, _)| n);
        options.contains(name.trim())
    })
}

/// Adds the builder's addons in order. `pending` are specs of options no one had declared
/// at start: each is set as soon as an added addon declares it in `load` (so the addons
/// after it are made with it, and the addon itself sees it in `configure`); one that no
/// addon declares is refused, as an unknown option at start is.
async fn add_addons(
    manager: &ManagerHandle,
    addons: Vec<AddonThunk>,
    mut pending: Vec<String>,
) -> Result<(), ProxyError> {
    for add in addons {
        add(manager.clone(), &manager.options()).await?;
        if pending.is_empty() {
            continue;
        }
        let (now, later) = split_known(&manager.options(), pending);
        pending = later;
        if !now.is_empty() {
            manager.set(&now).await?;
        }
    }
    match manager.options().parse_specs(&pending) {
        Ok(_) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Entry point of the proxy API: `Proxy::builder()`.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// A builder with the default options and no addons.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            options: Options::new(),
            specs: Vec::new(),
            addons: Vec::new(),
        }
    }
}

/// Configures and starts a proxy.
pub struct ProxyBuilder {
    options: Options,
    specs: Vec<String>,
    addons: Vec<AddonThunk>,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("specs", &self.specs)
            .field("addons", &self.addons.len())
            .finish()
    }
}

/// Reads the proxy's typed config on every option change; rejects values it cannot use.
struct ConfigWatcher {
    config: Arc<ArcSwap<ProxyConfig>>,
}

impl ConfigWatcher {
    /// The listeners were bound for the modes the proxy started with: another set is refused
    /// rather than silently not applied.
    fn check_modes(&self, next: &ProxyConfig) -> Result<(), OptionsError> {
        let started = &self.config.load().modes;
        if *started == next.modes {
            return Ok(());
        }
        Err(OptionsError::rejected(
            "mode",
            "the modes cannot change while the proxy runs (each has its listener): restart it",
        ))
    }
}

impl Addon for ConfigWatcher {
    fn name(&self) -> String {
        "proxyserver".into()
    }

    fn hooks(&self) -> waylay_core::HookSet {
        waylay_core::HookSet::of(&[waylay_core::HookKind::Configure])
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        let next = ProxyConfig::from_options(&cfg.options)?;
        self.check_modes(&next)?;
        self.config.store(Arc::new(next));
        Ok(())
    }
}

impl ProxyBuilder {
    /// Starts from these options.
    pub fn options(mut self, o: Options) -> Self {
        self.options = o;
        self
    }

    /// Sets an option from `name=value` at start. An option an addon declares in `load` may
    /// be set before that addon is added: it is set when the addon is (mitmproxy defers
    /// such options the same way); one that no addon declares stops the start.
    pub fn set(mut self, spec: impl Into<String>) -> Self {
        self.specs.push(spec.into());
        self
    }

    /// Listens on `host:port`, or on `host` at each mode's default port.
    pub fn listen(mut self, addr: &str) -> Self {
        use waylay_core::flow::split_host_port;
        match (split_host_port(addr, 0), split_host_port(addr, 1)) {
            // The same port whatever the default: `addr` names one.
            (Some((h, p)), Some((_, q))) if p == q => {
                self.specs.push(format!("listen_host={h}"));
                self.specs.push(format!("listen_port={p}"));
            }
            (Some((h, _)), _) => self.specs.push(format!("listen_host={h}")),
            _ => self.specs.push(format!("listen_host={addr}")),
        }
        self
    }

    /// Adds an addon; addons see events in the order they were added.
    pub fn addon<A: Addon>(mut self, addon: A) -> Self {
        self.addons
            .push(Box::new(move |m: ManagerHandle, _: &Options| {
                Box::pin(async move { m.add(addon).await })
            }));
        self
    }

    /// Adds an addon made from the options the proxy starts with (after every `set`), in
    /// order with [`addon`](Self::addon). For addons whose hooks depend on an option: one
    /// that handles no request hook while its option is off keeps a proxy's fast path.
    pub fn addon_with<A: Addon>(
        mut self,
        make: impl FnOnce(&Options) -> A + Send + 'static,
    ) -> Self {
        self.addons
            .push(Box::new(move |m: ManagerHandle, o: &Options| {
                let addon = make(o);
                Box::pin(async move { m.add(addon).await })
            }));
        self
    }

    /// Runs the proxy in a new actix system until SIGINT or SIGTERM (or an addon's
    /// [`ManagerHandle::request_shutdown`]), then shuts down gracefully (every addon gets
    /// `done`).
    pub fn run(self) -> Result<(), ProxyError> {
        let sys = actix::System::new();
        sys.block_on(async move {
            // Signal handlers first: a SIGTERM right after the port opens must already shut
            // down gracefully rather than kill the process.
            let signals = Signals::install();
            let proxy = self.start().await?;
            // A signal, or an addon asking (mitmproxy's `ctx.master.shutdown()`).
            tokio::select! {
                () = signals.wait() => {}
                () = proxy.manager().shutdown_requested() => {}
            }
            tracing::info!("shutting down");
            proxy.shutdown().await;
            Ok(())
        })
    }

    /// Starts the proxy inside the current actix system; returns once every mode's listener
    /// listens.
    pub async fn start(self) -> Result<RunningProxy, ProxyError> {
        let mut options = self.options;
        // Options an addon declares in `load` are set once it is added (`add_addons`).
        let (known, declared_later) = split_known(&options, self.specs);
        options.set_specs(&known)?;
        let cfg = ProxyConfig::from_options(&options)?;
        let host = options.str("listen_host").unwrap_or("127.0.0.1").to_owned();
        if u16::try_from(options.int("listen_port")).is_err() {
            return Err(OptionsError::BadValue {
                name: "listen_port".into(),
                value: options.int("listen_port").to_string(),
                expected: "a port number (0-65535)".into(),
            }
            .into());
        }
        let workers = match usize::try_from(options.int("workers")).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        // Every port bound first (not listening yet): one in use fails the start before the
        // CA or an addon is touched.
        let bound = listen::bind_all(&cfg.modes, &host, listen_port_option(&options))?;
        // The CA before any port listens: a client that reads the CA files as soon as the
        // port accepts (a test harness, a provisioning script) finds them at first start.
        let confdir = expand_home(options.str("confdir").unwrap_or("~/.waylay"));
        let ca = CertificateAuthority::load_or_create(&confdir)?;
        let certs = Arc::new(CertCache::new(Arc::new(ca))?);
        let manager = AddonManager::start(options);
        let config = Arc::new(ArcSwap::from_pointee(cfg));
        manager
            .add(ConfigWatcher {
                config: config.clone(),
            })
            .await?;
        add_addons(&manager, self.addons, declared_later).await?;
        let shared = Arc::new(ProxyShared {
            manager: manager.clone(),
            config,
            certs,
            client_tls: dashmap::DashMap::new(),
            connections: dashmap::DashMap::new(),
        });
        let (arbiters, extra) = start_workers(workers);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let listeners = bound.iter().map(listen::Bound::listening).collect();
        let startup: Vec<_> = bound.iter().map(|b| (b.mode.clone(), b.addr)).collect();
        let next = Rc::new(Cell::new(0));
        for b in bound {
            b.accept(
                shared.clone(),
                arbiters.clone(),
                next.clone(),
                stop_rx.clone(),
            )?;
        }
        waylay_core::log::attach_global(&manager);
        manager.running().await;
        for (mode, addr) in startup {
            listen::log_listening(&mode, addr);
        }
        Ok(RunningProxy {
            listeners,
            manager,
            shared,
            stop: stop_tx,
            extra,
        })
    }
}

/// The worker arbiters: worker 0 is the current one, where the manager and the addons live;
/// the others are started here (and stopped by [`RunningProxy::shutdown`]).
fn start_workers(workers: usize) -> (Rc<Vec<ArbiterHandle>>, Vec<Arbiter>) {
    let mut extra = Vec::new();
    let mut arbiters = vec![Arbiter::current()];
    for _ in 1..workers {
        let a = Arbiter::new();
        arbiters.push(a.handle());
        extra.push(a);
    }
    (Rc::new(arbiters), extra)
}

/// A proxy that is listening.
pub struct RunningProxy {
    listeners: Vec<Listening>,
    manager: ManagerHandle,
    shared: Arc<ProxyShared>,
    stop: tokio::sync::watch::Sender<bool>,
    extra: Vec<Arbiter>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl RunningProxy {
    /// The address of the first mode's listener (the only one unless several modes were
    /// given).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// Every listener, in the order the modes were given.
    pub fn listeners(&self) -> &[Listening] {
        &self.listeners
    }

    /// The address of the listener of the mode `mode` (a mode's name, `socks5`, or its full
    /// spec, `socks5@1080`): the first one that matches.
    pub fn addr_of(&self, mode: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| {
                l.mode == mode
                    || l.mode
                        .split([':', '@'])
                        .next()
                        .is_some_and(|name| name == mode)
            })
            .map(|l| l.addr)
    }

    /// The addon manager.
    pub fn manager(&self) -> &ManagerHandle {
        &self.manager
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_cert_pem(&self) -> String {
        self.shared.certs.ca().cert_pem().to_owned()
    }

    /// Stops listening, closes client connections, and fires `done` on every addon.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let conns: Vec<_> = self
            .shared
            .connections
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for c in conns {
            let _ = c.send(Close).await;
        }
        self.manager.shutdown().await;
        for a in self.extra.drain(..) {
            a.stop();
        }
    }
}
