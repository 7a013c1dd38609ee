//! The load benches' origin: HTTP/1.1 keep-alive (hyper), a 1 KiB body for every request, on
//! plain TCP or TLS, on the caller's tokio runtime.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Starts the origin on `127.0.0.1:0` (TLS with `tls`, e.g. the testkit's
/// `test_tls_acceptor`) with a task per connection on the current runtime; its address.
///
/// # Panics
///
/// When no loopback port can be bound.
pub async fn origin_1k(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let (body, tls) = (body.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            serve(s, body).await;
                        }
                    }
                    None => serve(s, body).await,
                }
            });
        }
    });
    addr
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(s: S, body: Bytes) {
    let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), svc)
        .await;
}
