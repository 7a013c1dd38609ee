//! The listeners, one per mode: bound before anything else starts (so a port in use fails
//! the start with one line naming it, before the CA is touched), listening only once the CA
//! and the addons are ready (so a client that connects finds the CA files written), then an
//! accept loop each, handing every connection to a worker arbiter round-robin.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use waylay_core::ModeSpec;

use crate::conn::client::{Accepted, ClientConnection};
use crate::context::ProxyShared;
use crate::error::ProxyError;
use crate::modes::Mode;

/// The accept queue's length (what the standard library's `TcpListener::bind` asks for).
const LISTEN_BACKLOG: i32 = 1024;

/// A listener a running proxy accepts connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// The mode it serves, as a flow's `client.proxy_mode` says it (`regular`,
    /// `socks5@1080`, ...).
    pub mode: String,
    /// The address it is bound to (the real port when port 0 was asked for).
    pub addr: SocketAddr,
}

/// A bound socket, not yet listening (no client can connect to it yet).
pub(super) struct Bound {
    listener: socket2::Socket,
    pub(super) mode: Arc<Mode>,
    pub(super) addr: SocketAddr,
}

/// Binds every mode's listener: its `@host:port`, else `listen_host` and the `listen_port`
/// option (`None`: left at its default), else the mode's default port.
pub(super) fn bind_all(
    modes: &[ModeSpec],
    listen_host: &str,
    listen_port: Option<u16>,
) -> Result<Vec<Bound>, ProxyError> {
    modes
        .iter()
        .map(|spec| {
            let host = spec.listen_host_or(listen_host);
            // `@:PORT` (empty host) is every interface, as in mitmproxy.
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            let port = spec.listen_port_or(listen_port);
            bind(host, port, Mode::new(spec.clone()))
        })
        .collect()
}

fn bind(host: &str, port: u16, mode: Mode) -> Result<Bound, ProxyError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let io = |source| ProxyError::Io {
        context: format!("listener {addr} ({})", mode.full_spec),
        source,
    };
    let listener = bind_socket(&addr).map_err(|source| ProxyError::Bind {
        addr: format!("{addr} ({} mode)", mode.full_spec),
        source,
    })?;
    listener.set_nonblocking(true).map_err(io)?;
    let local = listener
        .local_addr()
        .map_err(io)?
        .as_socket()
        .ok_or_else(|| io(std::io::Error::other("not an IP socket")))?;
    Ok(Bound {
        listener,
        mode: Arc::new(mode),
        addr: local,
    })
}

/// Binds a socket to `addr` (each address it resolves to in turn, as `TcpListener::bind`
/// does, with its `SO_REUSEADDR`) without listening yet: a port in use fails here, and no
/// client can connect before [`Bound::accept`].
fn bind_socket(addr: &str) -> std::io::Result<socket2::Socket> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        let attempt = (|| {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(a),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            s.set_reuse_address(true)?;
            s.bind(&a.into())?;
            Ok(s)
        })();
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

impl Bound {
    /// What [`RunningProxy::listeners`](super::RunningProxy::listeners) reports.
    pub(super) fn listening(&self) -> Listening {
        Listening {
            mode: self.mode.full_spec.clone(),
            addr: self.addr,
        }
    }

    /// Accepts connections until `stop` turns true, each started as a `ClientConnection`
    /// on the next of `arbiters` (shared by all listeners through `next`).
    pub(super) fn accept(
        self,
        shared: Arc<ProxyShared>,
        arbiters: Rc<Vec<ArbiterHandle>>,
        next: Rc<Cell<usize>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProxyError> {
        // Listening is what opens the port to clients: only now, with the CA and the addons
        // ready. Another socket that bound the same address meanwhile makes this fail.
        self.listener
            .listen(LISTEN_BACKLOG)
            .map_err(|source| ProxyError::Bind {
                addr: format!("{} ({} mode)", self.addr, self.mode.full_spec),
                source,
            })?;
        let listener =
            tokio::net::TcpListener::from_std(self.listener.into()).map_err(|source| {
                ProxyError::Io {
                    context: format!("listener {}", self.addr),
                    source,
                }
            })?;
        let mode = self.mode;
        actix::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((sock, peer)) => {
                            let (s, m) = (shared.clone(), mode.clone());
                            let i = next.get();
                            next.set(i.wrapping_add(1));
                            let w = i % arbiters.len();
                            if w == 0 {
                                // Worker 0 is this thread (see `start_workers`).
                                ClientConnection::new(Accepted::Here(sock), peer, s, m).start();
                                continue;
                            }
                            let Ok(std_sock) = sock.into_std() else { continue };
                            ClientConnection::start_in_arbiter(&arbiters[w], move |_| {
                                ClientConnection::new(Accepted::Moved(std_sock), peer, s, m)
                            });
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
        Ok(())
    }
}

/// The startup line of one listener, as mitmproxy words it.
pub(super) fn log_listening(mode: &Mode, addr: SocketAddr) {
    let spec = &mode.full_spec;
    match &mode.spec.mode {
        waylay_core::Mode::Regular => {
            tracing::info!(mode = %spec, "HTTP(S) proxy listening at http://{addr}");
        }
        waylay_core::Mode::Upstream(p) => tracing::info!(
            mode = %spec,
            "HTTP(S) proxy (upstream mode, via {}) listening at http://{addr}",
            p.address
        ),
        waylay_core::Mode::Socks5 => {
            tracing::info!(mode = %spec, "SOCKS v5 proxy listening at {addr}");
        }
        waylay_core::Mode::Transparent => {
            tracing::info!(mode = %spec, "Transparent proxy listening at {addr}");
        }
        waylay_core::Mode::Reverse(t) => tracing::info!(
            mode = %spec,
            "Reverse proxy to {}://{} listening at {addr}",
            t.scheme.as_str(),
            t.address
        ),
    }
}
