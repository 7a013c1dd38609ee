//! The `ClientConnection` actor: owns one client socket for its life: `client_connect`,
//! the mode's front (see `modes`), and `client_disconnect` once everything it started is done.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use waylay_core::HookKind;
use waylay_core::flow::{Client, ConnectionId, now};

use crate::context::{Close, ConnCtx, ProxyShared, fire};
use crate::modes::mode::Mode;

/// One client connection. It is started on a worker arbiter with the accepted socket and
/// lives until the client or waylay closes the connection.
pub(crate) struct ClientConnection {
    socket: Option<Accepted>,
    /// The client's address, as `accept` gave it.
    peer: SocketAddr,
    shared: Arc<ProxyShared>,
    mode: Arc<Mode>,
    id: ConnectionId,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// An accepted socket on its way to its worker.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// The worker is the accepting thread: the socket stays registered with its runtime.
    Here(tokio::net::TcpStream),
    /// Another worker: a tokio socket belongs to the runtime that made it, so it travels as
    /// a std socket and is registered again there (two system calls more).
    Moved(std::net::TcpStream),
}

impl ClientConnection {
    pub(crate) fn new(
        socket: Accepted,
        peer: SocketAddr,
        shared: Arc<ProxyShared>,
        mode: Arc<Mode>,
    ) -> Self {
        Self {
            socket: Some(socket),
            peer,
            shared,
            mode,
            id: ConnectionId::new(),
        }
    }
}

impl Actor for ClientConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(socket) = self.socket.take() else {
            ctx.stop();
            return;
        };
        self.shared
            .connections
            .insert(self.id, ctx.address().recipient());
        let shared = self.shared.clone();
        ctx.spawn(
            serve(shared, self.mode.clone(), socket, self.peer)
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shared.connections.remove(&self.id);
    }
}

impl Handler<Close> for ClientConnection {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

pub(crate) async fn serve(
    shared: Arc<ProxyShared>,
    mode: Arc<Mode>,
    socket: Accepted,
    mut peer: SocketAddr,
) {
    let mut tcp = match socket {
        Accepted::Here(s) => s,
        Accepted::Moved(s) => match tokio::net::TcpStream::from_std(s) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot adopt an accepted socket: {e}");
                return;
            }
        },
    };
    let _ = tcp.set_nodelay(true);
    let Ok(local) = tcp.local_addr() else {
        return;
    };
    if shared.config().proxy_protocol {
        // Behind a load balancer: the real client is the one its header names. Boxed: this
        // future is kept for the connection's life (160 bytes less per connection, debug).
        match Box::pin(crate::front::accept_proxy_header(
            &mut tcp,
            shared.config().header_timeout,
        ))
        .await
        {
            Ok(header) => peer = header.source().unwrap_or(peer),
            Err(e) => {
                tracing::info!(client.addr = %peer, "connection without a valid PROXY protocol header (proxy_protocol is on), closed: {e}");
                return;
            }
        }
    }
    let manager = shared.manager.clone();
    let mut client = Client::new(peer, local);
    client.proxy_mode = mode.full_spec.clone();
    let Some(client) = fire(&manager, HookKind::ClientConnect, Box::new(client)).await else {
        return;
    };
    if let Some(reason) = &client.error {
        tracing::info!(client.addr = %peer, "connection refused by an addon: {reason}");
        return;
    }
    tracing::debug!(client.addr = %peer, "client connected");
    let ctx = Rc::new(ConnCtx::new(shared, mode, Arc::new(*client)));
    let _stop_streams = AbortOnDrop(ctx.clone());
    crate::modes::serve(ctx.clone(), tcp).await;
    // A WebSocket outlives hyper's connection, which ends when it hands the streams over.
    loop {
        let next = ctx.relays.borrow_mut().pop();
        match next {
            Some(t) => {
                let _ = t.await;
            }
            None => break,
        }
    }
    let mut client = Client::clone(&ctx.client());
    client.timestamp_end = Some(now());
    tracing::debug!(client.addr = %peer, "client disconnected");
    let _ = fire(&manager, HookKind::ClientDisconnect, Box::new(client)).await;
}

/// Ends the connection's WebSocket relays when its service stops before them (proxy
/// shutdown stops the actor, which drops the service future).
struct AbortOnDrop(Rc<ConnCtx>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in self.0.relays.borrow_mut().drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    fn own2<A, B, F>(_: fn(A, B) -> F) -> usize {
        size_of::<F>()
    }
    fn own4<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    /// The future a client connection's actor keeps for the connection's life (S5): it was
    /// sized for the SOCKS5, reverse and transparent fronts' whole setup (~15 KiB) until they
    /// were boxed. Sizes print with `--nocapture`; the bound holds in debug builds.
    #[test]
    fn a_client_connections_serve_future_stays_small() {
        let client = own4(super::serve);
        let modes = own2(crate::modes::serve);
        eprintln!("client::serve: {client} bytes, modes::serve: {modes} bytes");
        assert!(client <= 4096, "client::serve {client}");
        assert!(modes <= 4096, "modes::serve {modes}");
    }
}
