//! The fronts, one per proxy mode: each learns where its client wants to go and ends in the
//! next-layer step. This is the only place a fresh connection is routed.

pub(crate) mod mode;
mod regular;

use std::rc::Rc;

use tokio::net::TcpStream;

use crate::context::ConnCtx;
pub(crate) use mode::Mode;

/// Serves a fresh client connection (after `client_connect`) by its listener's mode.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, tcp: TcpStream) {
    match ctx.mode {
        Mode::Regular => regular::serve(ctx, tcp).await,
    }
}
