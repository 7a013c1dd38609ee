//! Reverse mode (mitmproxy's `reverse:SCHEME://HOST:PORT`): every client connection goes to
//! one fixed target. The client side detects TLS on its own (intercepted with a leaf for the
//! SNI or the target's name) whatever the target's scheme, as mitmproxy's layer stacks:
//!
//! | target | client sends TLS | client sends plain |
//! |---|---|---|
//! | `http://` | TLS terminated, HTTP/1 or HTTP/2 (ALPN) inside, plain HTTP/1.1 to the target | HTTP/1.1 or h2c (prior knowledge) |
//! | `https://` | the same, TLS to the target | the same, TLS to the target |
//! | `tcp://` | TLS terminated, raw TCP (`tcp_*` hooks) to the target | raw TCP |
//! | `tls://` | TLS terminated, raw TCP inside TLS to the target | raw TCP, TLS added towards the target |
//!
//! A `tcp://` target is dialed as the client connects, so a server that speaks first decides
//! raw TCP at once (`next_layer::detect_client_or_server`); the others once the client spoke.
//!
//! Each HTTP request's `Host` / `:authority` is rewritten to the target
//! (`http::upstream::rewrite_host`), and the server's SNI is the target's name, unless
//! `keep_host_header`.

use std::rc::Rc;

use tokio::net::TcpStream;
use waylay_core::ReverseTarget;

use crate::context::ConnCtx;
use crate::io::{IdleTimeout, LingeringClose};
use crate::next_layer::TunnelTo;

/// Serves a reverse-mode client connection: a tunnel to `target`.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream, target: ReverseTarget) {
    let cfg = ctx.shared.config();
    let tcp = LingeringClose::new(IdleTimeout::new(tcp, cfg.idle_timeout));
    let to = TunnelTo::Reverse(target.scheme);
    crate::next_layer::serve_tunnel_to(ctx, Box::new(tcp), target.address, to, None).await;
}
