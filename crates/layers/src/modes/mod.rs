//! The fronts, one per proxy mode: each learns where its client wants to go and ends in the
//! next-layer step. This is the only place a fresh connection is routed.

pub(crate) mod mode;
mod regular;
pub(crate) mod reverse;

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::context::ConnCtx;
pub(crate) use mode::Mode;

/// Serves a fresh client connection (after `client_connect`) by its listener's mode.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream) {
    // Upstream mode's front is regular's (only the route of server connections differs).
    if let waylay_core::Mode::Reverse(target) = &ctx.shared.config().mode.mode {
        return reverse::serve(ctx.clone(), tcp, target.clone()).await;
    }
    match ctx.mode {
        Mode::Regular => regular::serve(ctx, tcp).await,
    }
}
