//! The proxy: builder, workers, listener, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;
use waylay_core::hooks::Configure;
use waylay_core::{AddError, Addon, AddonId, AddonManager, ManagerHandle, Options, OptionsError};

use crate::config::{ProxyConfig, expand_home};
use crate::conn::client::ClientConnection;
use crate::context::Close;
use crate::context::ProxyShared;
use crate::error::ProxyError;
use crate::modes::mode::Mode;
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

impl Addon for ConfigWatcher {
    fn name(&self) -> String {
        "proxyserver".into()
    }

    fn hooks(&self) -> waylay_core::HookSet {
        waylay_core::HookSet::of(&[waylay_core::HookKind::Configure])
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.config
            .store(Arc::new(ProxyConfig::from_options(&cfg.options)?));
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

    /// Listens on `host:port`.
    pub fn listen(mut self, addr: &str) -> Self {
        if let Some((h, p)) = waylay_core::flow::split_host_port(addr, 8080) {
            self.specs.push(format!("listen_host={h}"));
            self.specs.push(format!("listen_port={p}"));
        } else {
            self.specs.push(format!("listen_host={addr}"));
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

    /// Runs the proxy in a new actix system until SIGINT or SIGTERM, then shuts down
    /// gracefully (every addon gets `done`).
    pub fn run(self) -> Result<(), ProxyError> {
        let sys = actix::System::new();
        sys.block_on(async move {
            // Signal handlers first: a SIGTERM right after the port opens must already shut
            // down gracefully rather than kill the process.
            let signals = Signals::install();
            let proxy = self.start().await?;
            signals.wait().await;
            tracing::info!("shutting down");
            proxy.shutdown().await;
            Ok(())
        })
    }

    /// Starts the proxy inside the current actix system; returns once it listens.
    pub async fn start(self) -> Result<RunningProxy, ProxyError> {
        let mut options = self.options;
        // Options an addon declares in `load` are set once it is added (`add_addons`).
        let (known, declared_later) = split_known(&options, self.specs);
        options.set_specs(&known)?;
        let cfg = ProxyConfig::from_options(&options)?;
        let host = options.str("listen_host").unwrap_or("127.0.0.1").to_owned();
        let port =
            u16::try_from(options.int("listen_port")).map_err(|_| OptionsError::BadValue {
                name: "listen_port".into(),
                value: options.int("listen_port").to_string(),
                expected: "a port number (0-65535)".into(),
            })?;
        let workers = match usize::try_from(options.int("workers")).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };

        let bind = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let std_listener =
            std::net::TcpListener::bind(&bind).map_err(|source| ProxyError::Bind {
                addr: bind.clone(),
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|source| ProxyError::Io {
                context: "listener".into(),
                source,
            })?;
        let local_addr = std_listener.local_addr().map_err(|source| ProxyError::Io {
            context: "listener".into(),
            source,
        })?;
        let listener =
            tokio::net::TcpListener::from_std(std_listener).map_err(|source| ProxyError::Io {
                context: "listener".into(),
                source,
            })?;

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

        // Worker 0 is this arbiter, where the manager and the addons live.
        let mut extra = Vec::new();
        let mut arbiters = vec![Arbiter::current()];
        for _ in 1..workers {
            let a = Arbiter::new();
            arbiters.push(a.handle());
            extra.push(a);
        }
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let accept_shared = shared.clone();
        actix::spawn(async move {
            let mut next = 0usize;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok((sock, _)) => {
                            let Ok(std_sock) = sock.into_std() else { continue };
                            let s = accept_shared.clone();
                            let arb = &arbiters[next % arbiters.len()];
                            next = next.wrapping_add(1);
                            ClientConnection::start_in_arbiter(arb, move |_| ClientConnection::new(std_sock, s, Mode::Regular));
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: log and keep serving.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
        waylay_core::log::attach_global(&manager);
        manager.running().await;
        tracing::info!("proxy listening at http://{local_addr}");
        Ok(RunningProxy {
            local_addr,
            manager,
            shared,
            stop: Some(stop_tx),
            extra,
        })
    }
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => None,
            };
            Self { streams }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            match self.streams {
                Some((mut int, mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A proxy that is listening.
pub struct RunningProxy {
    local_addr: SocketAddr,
    manager: ManagerHandle,
    shared: Arc<ProxyShared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    extra: Vec<Arbiter>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningProxy {
    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
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
