//! HTTP/1 and HTTP/2 towards clients (hyper's server side) and servers (its client side).

pub(crate) mod body;
mod connect;
pub(crate) mod convert;
mod exchange;
pub(crate) mod response;
mod upgrade;
mod upstream;
pub(crate) mod walk;

use std::rc::Rc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::conn::dest::Destination;
use crate::context::ConnCtx;
use crate::io::{Io, ReadLatch};
use crate::rt::{CoarseTimer, LocalExec};

/// Serves HTTP/1.x requests from a client stream until it closes. `target` is the tunnel's
/// destination (after CONNECT), `None` for the proxy's own port (absolute-form requests).
pub(crate) async fn serve_h1<I: Io>(ctx: Rc<ConnCtx>, io: I, target: Option<Destination>) {
    let cfg = ctx.shared.config();
    let target = Rc::new(target);
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| exchange::handle(svc_ctx.clone(), target.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        // Armed per request: a tick count, not a tokio timer each time (see `CoarseTimer`).
        .timer(CoarseTimer::new(cfg.header_timeout / 4))
        .header_read_timeout(cfg.header_timeout)
        .max_buf_size(cfg.max_header_size)
        // Not `pipeline_flush`: hyper 1.x then holds a response back while more requests
        // are buffered, and when it closes instead of reading them (a request it will not
        // keep alive after, such as one with both Content-Length and Transfer-Encoding) it
        // shuts the socket with the response still in its buffer: the client got nothing.
        .half_close(false)
        .serve_connection(TokioIo::new(ReadLatch::new(io)), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        log_conn_error(&ctx, &e);
    }
}

/// Answers a client whose first bytes are no HTTP request line with a 400 naming `reason`
/// (hyper would close without a word), then closes.
pub(crate) async fn bad_request<I: Io>(mut io: I, reason: &str) {
    let msg = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    );
    let _ = tokio::io::AsyncWriteExt::write_all(&mut io, msg.as_bytes()).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
}

/// Serves HTTP/2 requests from a client stream until it closes.
pub(crate) async fn serve_h2<I: Io>(ctx: Rc<ConnCtx>, io: I, target: Option<Destination>) {
    let target = Rc::new(target);
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| exchange::handle(svc_ctx.clone(), target.clone(), req));
    let conn = hyper::server::conn::http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        log_conn_error(&ctx, &e);
    }
}

fn log_conn_error(ctx: &ConnCtx, e: &hyper::Error) {
    let client = ctx.client();
    // A client going away between requests is normal; a malformed request is worth a line.
    if e.is_incomplete_message() || e.is_canceled() {
        tracing::debug!(client.addr = %client.peername, error = %e, "client connection ended");
    } else if e.is_parse() || e.is_parse_too_large() || e.is_timeout() {
        tracing::info!(client.addr = %client.peername, "client error: {}", crate::conn::server::describe(e));
    } else {
        tracing::debug!(client.addr = %client.peername, "client connection ended: {}", crate::conn::server::describe(e));
    }
}
