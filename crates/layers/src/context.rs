//! What a proxy instance shares with all its connections, and what one client connection
//! shares with its requests.

use std::cell::RefCell;
use std::sync::Arc;

use arc_swap::ArcSwap;
use waylay_core::flow::{Address, Client};
use waylay_core::{Called, HookKind, ManagerHandle};

use crate::config::ProxyConfig;
use crate::conn::pool::Pool;
use crate::modes::mode::Mode;
use crate::tls::{CertCache, UpstreamTls};

/// The hooks that observe server connections: while an addon handles one of them, each
/// client connection keeps its own server connections (see [`crate::conn::pool::SharedPool`]).
pub(crate) const SERVER_CONNECTION_HOOKS: &[HookKind] = &[
    HookKind::ServerConnect,
    HookKind::ServerConnected,
    HookKind::ServerConnectError,
    HookKind::ServerDisconnect,
    HookKind::TlsStartServer,
    HookKind::TlsEstablishedServer,
    HookKind::TlsFailedServer,
];

/// Per proxy instance, shared by every worker (thread-safe).
#[derive(Debug)]
pub(crate) struct ProxyShared {
    pub(crate) manager: ManagerHandle,
    pub(crate) config: Arc<ArcSwap<ProxyConfig>>,
    pub(crate) certs: Arc<CertCache>,
    /// Client configs for dialing servers, by how servers are verified (see [`UpstreamKey`]).
    /// Each holds rustls' TLS session cache, so a session is resumed only under the
    /// verification settings that made it.
    pub(crate) client_tls: dashmap::DashMap<UpstreamKey, Arc<rustls::ClientConfig>>,
    /// Live client connections, for shutdown.
    pub(crate) connections:
        dashmap::DashMap<waylay_core::flow::ConnectionId, actix::Recipient<Close>>,
}

/// Stops a client connection (proxy shutdown).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Close;

/// Which upstream TLS configuration to use: the operator's options only, never what a client
/// sent (the ALPN offer, which a client chooses, is given per connection), so there are as
/// many as option combinations used, not one per client offer.
///
/// A configuration's session cache (rustls': 256 server names) resumes a session only for
/// the server name it was verified against and only under the same key: a session made with
/// `ssl_insecure` is never offered once verification is on. Anything that changes how a
/// server is verified or how waylay authenticates to it (client certificates, when they
/// exist) belongs in this key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct UpstreamKey {
    pub(crate) insecure: bool,
    pub(crate) trusted_ca: Option<std::path::PathBuf>,
    pub(crate) trusted_dir: Option<std::path::PathBuf>,
    pub(crate) tls13_only: bool,
}

impl ProxyShared {
    pub(crate) fn config(&self) -> Arc<ProxyConfig> {
        self.config.load_full()
    }

    /// The rustls client configuration for dialing a server under the current options (the
    /// ALPN offer is the connection's: `TlsConnector::with_alpn`).
    pub(crate) fn client_tls(&self) -> Result<Arc<rustls::ClientConfig>, crate::tls::TlsError> {
        let cfg = self.config();
        let key = UpstreamKey {
            insecure: cfg.ssl_insecure,
            trusted_ca: cfg.trusted_ca.clone(),
            trusted_dir: cfg.trusted_dir.clone(),
            tls13_only: cfg.server_tls13_only,
        };
        if let Some(c) = self.client_tls.get(&key) {
            return Ok(c.clone());
        }
        let c = crate::tls::client_config(&UpstreamTls {
            insecure: key.insecure,
            extra_ca_pem: key.trusted_ca.clone(),
            alpn: Vec::new(),
            extra_ca_dir: key.trusted_dir.clone(),
            tls13_only: key.tls13_only,
        })?;
        self.client_tls.insert(key, c.clone());
        Ok(c)
    }
}

/// One client connection's state, shared by the futures serving it (all on one worker
/// thread, hence `Rc`/`RefCell`; no borrow is held across an await).
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<ProxyShared>,
    /// The mode of the listener that accepted the connection.
    pub(crate) mode: Arc<Mode>,
    client: RefCell<Arc<Client>>,
    /// Server connections of this client connection, by destination.
    pub(crate) pool: Pool,
    /// WebSocket relays still running: hyper's connection ends when it hands the upgraded
    /// streams over, and the client connection ends (`client_disconnect`) only after them.
    pub(crate) relays: RefCell<Vec<tokio::task::JoinHandle<()>>>,
    /// CONNECT tunnels answered by the HTTP layer, for the next-layer step to serve (a
    /// queue and a wake-up: a channel would allocate its first block of 32 slots up front,
    /// per connection).
    tunnels: RefCell<std::collections::VecDeque<Box<Tunnel>>>,
    tunnel_opened: tokio::sync::Notify,
    tunnels_taken: std::cell::Cell<bool>,
    /// A server connection a front opened before the next-layer step (SOCKS5 answers its
    /// client only once the server is reached), for the first dial to that address to use.
    predialed: RefCell<Option<(Address, tokio::net::TcpStream)>>,
}

/// A CONNECT tunnel the HTTP layer answered; the next-layer step serves it once hyper hands
/// the stream over.
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub(crate) upgrade: hyper::upgrade::OnUpgrade,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The route `http_connect` set on the flow's server (`None`: the mode's).
    pub(crate) via: Option<waylay_core::Via>,
}

impl ConnCtx {
    pub(crate) fn new(shared: Arc<ProxyShared>, mode: Arc<Mode>, client: Arc<Client>) -> Self {
        // Server connections are the client connection's own (mitmproxy's model) unless
        // `share_server_connections` is on and no addon observes them: then idle ones are
        // shared on the worker.
        let pool = if shared.config().share_server_connections
            && !shared.manager.handles_any(SERVER_CONNECTION_HOOKS)
        {
            Pool::shared(&shared)
        } else {
            Pool::own()
        };
        Self {
            shared,
            mode,
            client: RefCell::new(client),
            pool,
            relays: RefCell::default(),
            tunnels: RefCell::default(),
            tunnel_opened: tokio::sync::Notify::new(),
            tunnels_taken: std::cell::Cell::new(false),
            predialed: RefCell::new(None),
        }
    }

    /// Queues a tunnel for the next-layer step (before its CONNECT is answered, so the step
    /// cannot finish without it).
    pub(crate) fn open_tunnel(&self, tunnel: Tunnel) {
        self.tunnels.borrow_mut().push_back(Box::new(tunnel));
        self.tunnel_opened.notify_one();
    }

    /// Whether the caller is the one serving the connection's tunnels: only the
    /// connection's front takes them, once.
    pub(crate) fn take_tunnels(&self) -> bool {
        !self.tunnels_taken.replace(true)
    }

    /// The next tunnel opened, when there is one.
    pub(crate) fn try_next_tunnel(&self) -> Option<Box<Tunnel>> {
        self.tunnels.borrow_mut().pop_front()
    }

    /// Waits for the next tunnel opened.
    pub(crate) async fn next_tunnel(&self) -> Box<Tunnel> {
        loop {
            if let Some(t) = self.try_next_tunnel() {
                return t;
            }
            self.tunnel_opened.notified().await;
        }
    }

    /// Keeps a server connection the front opened to `address` for the first dial.
    pub(crate) fn set_predialed(&self, address: Address, tcp: tokio::net::TcpStream) {
        *self.predialed.borrow_mut() = Some((address, tcp));
    }

    /// The connection the front opened, when the first direct dial goes to its address;
    /// once any dial happened it is dropped (closed), an addon having sent that one elsewhere.
    pub(crate) fn take_predialed(&self, address: &Address) -> Option<tokio::net::TcpStream> {
        let (a, tcp) = self.predialed.borrow_mut().take()?;
        (a == *address).then_some(tcp)
    }

    pub(crate) fn client(&self) -> Arc<Client> {
        self.client.borrow().clone()
    }

    /// Replaces what is known of the client (its TLS, once established).
    pub(crate) fn set_client(&self, client: Client) {
        *self.client.borrow_mut() = Arc::new(client);
    }

    pub(crate) fn manager(&self) -> &ManagerHandle {
        &self.shared.manager
    }

    /// Fires `kind` with `payload` when some addon handles it; gives the payload back
    /// (unchanged when nobody handles it). `None` only when the addon manager is gone
    /// (shutdown): the caller then gives up on the connection.
    pub(crate) fn fire<P: std::any::Any + Send>(
        &self,
        kind: HookKind,
        payload: Box<P>,
    ) -> impl Future<Output = Option<Box<P>>> + '_ {
        fire(&self.shared.manager, kind, payload)
    }
}

/// See [`ConnCtx::fire`]. The walk's first step runs in this future's first poll
/// ([`ManagerHandle::fire_in`]): one future per hook, not one per layer of calls.
pub(crate) async fn fire<P: std::any::Any + Send>(
    manager: &ManagerHandle,
    kind: HookKind,
    payload: Box<P>,
) -> Option<Box<P>> {
    if !manager.handles(kind) {
        return Some(payload);
    }
    let mut payload = Some(payload);
    let fired = std::future::poll_fn(|cx| match payload.take() {
        Some(p) => std::task::Poll::Ready(manager.fire_in(kind, p, cx)),
        None => std::task::Poll::Pending,
    })
    .await;
    let walked = match fired {
        Called::Done(r) => r,
        Called::Later(rest) => rest.await,
    };
    match walked {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(hook = kind.name(), error = %e, "hook not delivered");
            None
        }
    }
}
