//! # waylay-web
//!
//! The web UI of waylay (`waylay web`, the mitmweb of the project): an addon that records
//! flows and takes the intercept handle of every flow an earlier addon held (the `intercept`
//! filter and the `breakpoints` rules are addons of `waylay-addons`, which
//! `waylay::Proxy::builder()` registers; register them before this one in a bare
//! `waylay_layers` proxy), and an HTTP/WebSocket server
//! (hyper and tokio-tungstenite, on a thread of its own) serving mitmweb's REST paths and
//! an embedded Preact page.
//!
//! Memory does not grow with traffic: the UI keeps a bounded ring of recent flows (and a
//! byte budget for their bodies); every finished flow goes to a SQLite store written by its
//! own thread through a bounded channel. Under overload the store drops bodies, then flows,
//! says so in the event log, and never slows the proxy. Browsers page through it by keyset
//! (`GET /flows?after=<seq>&limit=N`, `?before=<seq>`).
//!
//! Security as mitmweb >= 11.1.2 has it: a random token printed in the URL (or
//! `Authorization: Bearer`), or `web_password` (plain, or an argon2 hash), then an HttpOnly
//! `SameSite=Strict` cookie; an XSRF token and a `Sec-Fetch-Site` check on every request
//! that changes state; CSP `default-src 'self'`; `X-Frame-Options: DENY`; and a request
//! sent *through the proxy* to the UI's address is refused by the addon (CVE-2025-23217).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (addon, ui) = waylay_web::WebUi::bind(waylay_web::WebConfig::default())?;
//! println!("web UI at {}", ui.url());
//! // Register `addon` (last) on the proxy: `Proxy::builder().addon(addon)...`.
//! # drop(addon); Ok(()) }
//! ```

mod addon;
mod assets;
mod auth;
mod config;
mod files;
mod filter;
mod guard;
mod json;
mod server;
mod state;
mod store;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

pub use addon::WebAddon;
pub use config::WebConfig;
pub use store::StoreError;

use crate::state::Shared;

/// Why the UI could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address could not be bound.
    #[error("web UI: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The flow store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server thread could not start.
    #[error("web UI: {0}")]
    Io(#[from] std::io::Error),
    /// A flow file could not be loaded.
    #[error("web UI: reading flows: {0}")]
    Load(String),
}

/// Starting the UI.
#[derive(Debug)]
pub struct WebUi;

/// The running UI: its address and URL. Dropping it stops the server.
#[derive(Debug)]
pub struct WebHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl WebUi {
    /// Binds the UI's port, opens the store and starts the server on its own thread;
    /// returns the addon to register on the proxy and the handle.
    pub fn bind(config: WebConfig) -> Result<(WebAddon, WebHandle), WebError> {
        let addr_text = if config.host.contains(':') {
            format!("[{}]:{}", config.host, config.port)
        } else {
            format!("{}:{}", config.host, config.port)
        };
        let listener =
            std::net::TcpListener::bind(&addr_text).map_err(|source| WebError::Bind {
                addr: addr_text.clone(),
                source,
            })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let store = store::Store::open(
            config.store_path.clone(),
            config.store_queue,
            config.store_queue_bytes,
        )?;
        let auth = auth::Auth::new(config.token.clone(), config.password.clone(), addr.port());
        let shared = Arc::new(Shared::new(config, store, auth, addr));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let s = shared.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("waylay-web".into())
            .spawn(move || rt.block_on(serve(listener, s, stopped)))?;
        Ok((
            WebAddon {
                shared: shared.clone(),
            },
            WebHandle {
                shared,
                addr,
                stop: Some(stop),
            },
        ))
    }
}

impl WebHandle {
    /// Where the UI listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token (`None` when `web_password` is set).
    pub fn token(&self) -> Option<&str> {
        self.shared.auth.token()
    }

    /// The URL to open, with the token when there is one.
    pub fn url(&self) -> String {
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        match self.token() {
            Some(t) => format!("http://{host}:{}/?token={t}", self.addr.port()),
            None => format!("http://{host}:{}/", self.addr.port()),
        }
    }

    /// Connects the UI to the proxy's addon manager: options changed in the UI (the options
    /// editor, the intercept box) are set through it, so every addon's `configure` sees
    /// them, and replays are marked on it. Adding the UI's addon to a manager does this
    /// too; the first manager wins.
    pub fn attach(&self, manager: waylay_core::ManagerHandle) {
        let _ = self.shared.manager.set(manager);
    }

    /// Something that loads flow files into this UI from another thread.
    pub fn loader(&self) -> FlowLoader {
        FlowLoader {
            shared: self.shared.clone(),
        }
    }

    /// The SQLite file holding the flows.
    pub fn store_path(&self) -> std::path::PathBuf {
        self.shared.store.path().to_owned()
    }

    /// How many flows the store holds now (written ones; the writer may lag behind).
    pub fn stored_flows(&self) -> Result<u64, StoreError> {
        self.shared.store.count()
    }
}

/// Loads flow files into a running UI ([`WebHandle::loader`]); cheap to clone, usable from
/// any thread.
#[derive(Debug, Clone)]
pub struct FlowLoader {
    shared: Arc<Shared>,
}

impl FlowLoader {
    /// Loads the flows of a flow file (or a HAR file) into the UI, as the page's Open does
    /// (`waylay web -r FILE`); returns how many. Reads flow by flow: call it from a thread
    /// of its own for a large file.
    pub fn load_file(&self, path: &std::path::Path) -> Result<usize, WebError> {
        let f = std::fs::File::open(path)
            .map_err(|e| WebError::Load(format!("{}: {e}", path.display())))?;
        let mut n = 0;
        for flow in waylay_core::flowfile::FlowReader::new(f) {
            let flow = flow.map_err(|e| WebError::Load(format!("{}: {e}", path.display())))?;
            self.shared.import(flow).map_err(|e| WebError::Load(e.1))?;
            n += 1;
        }
        self.shared
            .event("info", format!("loaded {n} flows from {}", path.display()));
        Ok(n)
    }
}

impl Drop for WebHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("web UI: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| server::handle(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
}
