//! Reverse mode (mitmproxy's `reverse:SCHEME://HOST:PORT`): every client connection goes to
//! one fixed target. The client side is detected as inside a tunnel to the target (TLS is
//! intercepted with a leaf for the SNI or the target's name; HTTP/1, HTTP/2), and each
//! request's `Host` / `:authority` is rewritten to the target (`http::upstream::rewrite_host`).

use std::rc::Rc;

use tokio::net::TcpStream;
use waylay_core::ReverseTarget;

use crate::context::ConnCtx;
use crate::io::{IdleTimeout, LingeringClose};
use crate::proto::target::Scheme;

/// Serves a reverse-mode client connection: a tunnel to `target`.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream, target: ReverseTarget) {
    let cfg = ctx.shared.config();
    let tcp = LingeringClose::new(IdleTimeout::new(tcp, cfg.idle_timeout));
    let plain = if target.scheme.tls() {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let address = target.address;
    crate::next_layer::serve_tunnel(ctx, Box::new(tcp), address.host, address.port, plain).await;
}
