//! SOCKS5 mode (mitmproxy's `socks5`): RFC 1928 CONNECT with IPv4, IPv6 and domain-name
//! targets, RFC 1929 username/password when `proxyauth` is set (decided by the
//! `socks5_auth` hook: the `proxyauth` addon checks the same credentials as for HTTP proxy
//! authentication). The server is dialed before the client's CONNECT is answered, so a
//! failure gets the matching SOCKS reply; then the tunnel goes through the same next-layer
//! step as an HTTP CONNECT tunnel.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::TcpStream;
use waylay_core::HookKind;
use waylay_core::flow::Address;
use waylay_core::hooks::Socks5AuthData;

use crate::conn::dial::connect_direct;
use crate::context::ConnCtx;
use crate::front::{Socks5AcceptError, Socks5Pending, socks5_accept_with};
use crate::io::{BoxIo, IdleTimeout, LingeringClose, PrefixedIo};
use crate::proto::socks5::{Reply, ServerAuth, UserPass};
use crate::proto::target::Scheme;

/// Serves a SOCKS5 client connection: the handshake, the dial, then the tunnel.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream) {
    let peer = ctx.client().peername;
    let cfg = ctx.shared.config();
    let auth = if cfg.proxyauth {
        ServerAuth::UserPass
    } else {
        ServerAuth::None
    };
    let check = |given: UserPass| check_credentials(&ctx, given);
    let pending = match socks5_accept_with(tcp, auth, check, cfg.header_timeout).await {
        Ok(p) => p,
        Err(e) => {
            log_refused(peer, &e);
            return;
        }
    };
    let address = pending.target().to_address();
    let Some((io, leftover)) = dial_and_answer(&ctx, pending, &address).await else {
        return;
    };
    let io = LingeringClose::new(IdleTimeout::new(io, cfg.idle_timeout));
    let io: BoxIo = if leftover.is_empty() {
        Box::new(io)
    } else {
        Box::new(PrefixedIo::new(leftover, io))
    };
    crate::next_layer::serve_tunnel(ctx, io, address.host, address.port, Scheme::Http).await;
}

/// The `socks5_auth` hook: whether an addon accepts `given`.
async fn check_credentials(ctx: &ConnCtx, given: UserPass) -> bool {
    let data = Box::new(Socks5AuthData {
        client: ctx.client(),
        username: given.username,
        password: given.password,
        valid: false,
    });
    if !ctx.manager().handles(HookKind::Socks5Auth) {
        tracing::info!(client.addr = %ctx.client().peername, "SOCKS5 credentials sent, but no addon checks them (socks5_auth): refused");
        return false;
    }
    ctx.fire(HookKind::Socks5Auth, data)
        .await
        .is_some_and(|d| d.valid)
}

fn log_refused(peer: SocketAddr, e: &Socks5AcceptError) {
    match e {
        // A client that is not SOCKS5 at all (an HTTP request, SOCKS4): say what it was.
        Socks5AcceptError::Protocol(_) => {
            tracing::info!(client.addr = %peer, "not a SOCKS5 client, closed: {e}");
        }
        _ => tracing::info!(client.addr = %peer, "SOCKS5 client refused: {e}"),
    }
}

/// Opens the server connection (kept for the next-layer step's first dial) and answers the
/// client: "succeeded", or the reply matching the failure, with a log line.
async fn dial_and_answer(
    ctx: &ConnCtx,
    pending: Socks5Pending<TcpStream>,
    address: &Address,
) -> Option<(TcpStream, bytes::Bytes)> {
    let peer = ctx.client().peername;
    let timeout = ctx.shared.config().via.timeout;
    let dialed = match tokio::time::timeout(timeout, connect_direct(address)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("timed out after {:.1}s", timeout.as_secs_f64()),
        )),
    };
    match dialed {
        Ok(server) => {
            let _ = server.set_nodelay(true);
            ctx.set_predialed(address.clone(), server);
            match pending.succeeded(None).await {
                Ok(answered) => Some(answered),
                Err(e) => {
                    tracing::debug!(client.addr = %peer, "SOCKS5 client went away: {e}");
                    None
                }
            }
        }
        Err(e) => {
            let reply = Reply::from_io_error(&e);
            tracing::info!(client.addr = %peer, server.addr = %address, "SOCKS5 CONNECT to {address} failed ({reply}): {e}");
            let _ = pending.failed(reply).await;
            None
        }
    }
}
