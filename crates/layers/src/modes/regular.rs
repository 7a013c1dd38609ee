//! Regular mode (an HTTP proxy, as mitmproxy's `regular`): the client sends absolute-form
//! requests (`GET http://host/path`) and CONNECT; where each goes is in the request.

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::context::ConnCtx;
use crate::io::{IdleTimeout, LingeringClose};

/// Serves a regular-mode client connection until it and its tunnels are done.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream) {
    let peer = ctx.client().peername;
    let cfg = ctx.shared.config();
    let mut first = [0u8; 24];
    // A client that connects and says nothing is a slow header: `header_timeout`.
    let n = match tokio::time::timeout(cfg.header_timeout, tcp.peek(&mut first)).await {
        Ok(r) => r.unwrap_or(0),
        Err(_) => {
            tracing::info!(client.addr = %peer, "client sent nothing for {}s (header_timeout)", cfg.header_timeout.as_secs());
            0
        }
    };
    let tcp = LingeringClose::new(IdleTimeout::new(tcp, cfg.idle_timeout));
    if n > 0 {
        crate::next_layer::serve_proxy_port(ctx.clone(), Box::new(tcp), &first[..n]).await;
    }
}
