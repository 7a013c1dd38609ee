//! Transparent mode (mitmproxy's `transparent`, Linux): the OS redirected the connection to
//! waylay (an nftables / iptables `redirect` or `dnat` rule), so the client does not know
//! about the proxy; where it wanted to go is read from the accepted socket
//! (`SO_ORIGINAL_DST`, IPv4 and IPv6). From there the connection is served as a CONNECT
//! tunnel to that address: TLS intercepted with a leaf for the SNI, HTTP, raw TCP,
//! passthrough for ignored hosts.

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::context::ConnCtx;
use crate::io::{IdleTimeout, LingeringClose};
use crate::proto::target::Scheme;

/// Serves a redirected client connection.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream) {
    let peer = ctx.client().peername;
    let destination = match crate::front::original_destination(&tcp) {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(client.addr = %peer, "transparent mode: no original destination ({e}), closed");
            return;
        }
    };
    // Not redirected: a client talking to the listener itself would make waylay dial
    // itself, again and again.
    if tcp.local_addr().is_ok_and(|local| local == destination) {
        tracing::info!(client.addr = %peer, "transparent mode: connection addressed to waylay itself (not redirected), closed");
        return;
    }
    let cfg = ctx.shared.config();
    let io = LingeringClose::new(IdleTimeout::new(tcp, cfg.idle_timeout));
    let host = destination.ip().to_string();
    crate::next_layer::serve_tunnel(ctx, Box::new(io), host, destination.port(), Scheme::Http)
        .await;
}
