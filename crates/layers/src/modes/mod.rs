//! The fronts, one per proxy mode: each learns where its client wants to go and ends in the
//! next-layer step. This is the only place a fresh connection is routed.

pub(crate) mod mode;
mod regular;
pub(crate) mod reverse;
mod socks5;
#[cfg(target_os = "linux")]
mod transparent;

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::context::ConnCtx;
pub(crate) use mode::Mode;

/// Serves a fresh client connection (after `client_connect`) by its listener's mode.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream) {
    match &ctx.mode.spec.mode {
        // Upstream mode's front is regular's (only the route of server connections differs).
        waylay_core::Mode::Regular | waylay_core::Mode::Upstream(_) => {
            regular::serve(ctx.clone(), tcp).await;
        }
        // The other fronts are boxed: this future lives as long as the connection (inside
        // its actor), and the fronts that go straight to the next-layer step would size it
        // for a tunnel's setup (TLS, dialing) even on regular mode's proxy port.
        waylay_core::Mode::Reverse(target) => {
            let target = target.clone();
            Box::pin(reverse::serve(ctx.clone(), tcp, target)).await;
        }
        waylay_core::Mode::Socks5 => Box::pin(socks5::serve(ctx.clone(), tcp)).await,
        #[cfg(target_os = "linux")]
        waylay_core::Mode::Transparent => Box::pin(transparent::serve(ctx.clone(), tcp)).await,
        // Refused by the config on other platforms.
        #[cfg(not(target_os = "linux"))]
        waylay_core::Mode::Transparent => {}
    }
}
