//! TLS interception inside a CONNECT tunnel: read the ClientHello, connect to the server
//! first (so the client is offered only what the server accepted), mint a certificate, and
//! serve what the client speaks inside the TLS: HTTP/1, HTTP/2, or raw TCP over the two TLS
//! connections (see [`inner_layer`]).

use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use waylay_core::HookKind;
use waylay_core::flow::{Address, Client, TlsInfo, now};
use waylay_core::hooks::{ClientHelloData, Layer, NextLayer, Side, TlsData};

use crate::context::{ConnCtx, PoolKey, Target};
use crate::error::ServerError;
use crate::io::{BoxIo, Io, PrefixedIo};
use crate::proto::client_hello::parse_client_hello;
use crate::proto::detect::{Detected, detect};
use crate::server_conn::{DialSpec, ServerStream, connect_stream, handshake, sni_for};
use crate::tcp::{Mode, ServerSide};
use crate::tunnel::{DETECT_TIMEOUT, MAX_DETECT};

/// DNS names and IP addresses of a server certificate (for `upstream_cert`).
fn cert_names(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => out.push((*d).to_owned()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => out.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(ip);
                        out.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    out
}

/// Intercepts the TLS connection in `io` (whose first bytes, `hello`, are a ClientHello).
pub(crate) async fn intercept(
    ctx: Rc<ConnCtx>,
    io: BoxIo,
    hello: bytes::Bytes,
    host: String,
    port: u16,
) {
    let cfg = ctx.shared.config();
    let parsed = parse_client_hello(&hello).unwrap_or_default();
    // The bytes read during detection (a 4 KiB buffer) are not kept for the connection's life.
    drop(hello);
    let sni_host = parsed.sni.clone().unwrap_or_else(|| host.clone());
    let mut names = vec![Address::new(host.clone(), port).to_string()];
    if let Some(sni) = &parsed.sni {
        names.push(Address::new(sni.clone(), port).to_string());
    }
    let ignore = cfg.has_host_filters() && cfg.ignores(&names);
    let mut ch = Box::new(ClientHelloData {
        client: ctx.client(),
        server: Some(Address::new(host.clone(), port)),
        sni: parsed.sni.clone(),
        alpn_protocols: parsed
            .alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect(),
        ignore_connection: ignore,
        establish_server_tls_first: true,
    });
    match ctx.fire(HookKind::TlsClienthello, ch).await {
        Some(c) => ch = c,
        None => return,
    }
    if ch.ignore_connection {
        let address = Address::new(host, port);
        crate::tcp::serve(
            ctx,
            io,
            crate::tcp::ServerSide::Dial(address),
            crate::tcp::Mode::Passthrough,
        )
        .await;
        return;
    }

    // Offer the server what the client offered and waylay can speak: HTTP, and with `rawtcp`
    // any other protocol (relayed as raw TCP inside the TLS).
    let offers: Vec<Vec<u8>> = parsed
        .alpn
        .iter()
        .filter(|p| match p.as_slice() {
            b"h2" => cfg.http2,
            b"http/1.1" | b"http/1.0" => true,
            _ => cfg.rawtcp,
        })
        .cloned()
        .collect();
    let key = PoolKey {
        tls: true,
        host: host.clone(),
        port,
    };
    let spec = DialSpec {
        address: Address::new(host.clone(), port),
        tls: Some((ch.sni.clone().or_else(|| sni_for(&host)), offers.clone())),
    };
    let mut names = vec![sni_host.clone()];
    // The raw stream: the HTTP handshake waits until the client's protocol is known.
    let server = connect_stream(&ctx, &spec).await;
    let client_alpn: Vec<Vec<u8>> = match &server {
        Ok(stream) => {
            let info = stream.server.tls_info.clone().unwrap_or_default();
            if cfg.upstream_cert
                && let Some(leaf) = info.certificate_list.first()
            {
                for n in cert_names(leaf) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            match info.alpn {
                Some(p) => vec![p.into_bytes()],
                None if offers.iter().any(|p| p == b"http/1.1") => vec![b"http/1.1".to_vec()],
                None => Vec::new(),
            }
        }
        Err(e) => {
            // Finish the client's handshake anyway and answer its requests with a 502 that
            // names the reason, as a browser user can read it. Each of those (or the TCP
            // flow's error) is logged at info with its URL; this line would say it twice.
            tracing::debug!(client.addr = %ctx.client().peername, server.addr = %format!("{host}:{port}"), "{e}");
            ctx.failed.borrow_mut().insert(key.clone(), e.to_string());
            if offers.iter().any(|p| p == b"http/1.1") || offers.is_empty() {
                offers
                    .iter()
                    .filter(|p| p.as_slice() == b"http/1.1")
                    .cloned()
                    .collect()
            } else {
                offers.clone()
            }
        }
    };

    let mut data = Box::new(TlsData {
        side: Side::Client,
        client: ctx.client(),
        server: None,
        sni: ch.sni.clone(),
        alpn_offers: ch.alpn_protocols.clone(),
        alpn: None,
        error: None,
    });
    match ctx.fire(HookKind::TlsStartClient, data).await {
        Some(d) => data = d,
        None => return,
    }
    ctx.shared.certs.set_tls13_only(cfg.client_tls13_only);
    let config = match ctx.shared.certs.server_config(&names, &client_alpn) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(client.addr = %ctx.client().peername, "cannot mint a certificate for {names:?}: {e}");
            if let Ok(stream) = server {
                stream.close(&ctx).await;
            }
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match acceptor.accept(io).await {
        Ok(t) => t,
        Err(e) => {
            if let Ok(stream) = server {
                stream.close(&ctx).await;
            }
            let reason = crate::tls::describe_tls_error(&e);
            tracing::info!(client.addr = %ctx.client().peername, sni = ?ch.sni, "client TLS handshake failed (does the client trust the waylay CA?): {reason}");
            data.error = Some(reason);
            let _ = ctx.fire(HookKind::TlsFailedClient, data).await;
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut client = Client::clone(&ctx.client());
    client.tls = Some(TlsInfo {
        sni: ch.sni.clone(),
        alpn: alpn.clone(),
        alpn_offers: ch.alpn_protocols.clone(),
        version: crate::server_conn::tls_version_name(conn.protocol_version()),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite())),
        certificate_list: Vec::new(),
    });
    client.timestamp_tls_setup = Some(now());
    *ctx.client.borrow_mut() = Arc::new(client);
    data.client = ctx.client();
    data.alpn = alpn.clone();
    let _ = ctx.fire(HookKind::TlsEstablishedClient, data).await;
    let target = Target {
        scheme: "https",
        host,
        port,
    };
    serve_inner(ctx, tls, alpn, server, key, target).await;
}

/// The layer inside an intercepted TLS connection, from the ALPN protocol the client and
/// waylay agreed on and, without one, what the first decrypted bytes look like (`first`:
/// `Other` also when the client sent nothing in time or the server spoke first).
///
/// As mitmproxy's `next_layer`: an HTTP ALPN decides at once; otherwise HTTP/1 and HTTP/2
/// are recognised by their first bytes and anything else is raw TCP when `rawtcp` is on.
/// Without `rawtcp` it is served as HTTP/1, as before raw TCP existed.
pub(crate) fn inner_layer(alpn: Option<&[u8]>, first: Detected, rawtcp: bool) -> Layer {
    let not_http = if rawtcp { Layer::Tcp } else { Layer::Http1 };
    match alpn {
        Some(b"h2") => Layer::Http2,
        Some(b"http/1.1" | b"http/1.0") => Layer::Http1,
        Some(_) => not_http,
        None => match first {
            Detected::Http1 => Layer::Http1,
            Detected::Http2 => Layer::Http2,
            Detected::Tls | Detected::Other | Detected::NeedMore => not_http,
        },
    }
}

/// Who spoke first inside the TLS, while the client's protocol is not known yet.
#[derive(Debug)]
enum First {
    /// The client sent bytes (they are in the client buffer) or sent nothing in time.
    Client(Detected),
    /// The server sent bytes first (they are in the server buffer): not HTTP.
    Server,
    /// The client closed (or failed) before sending anything.
    Closed,
}

/// Reads the first decrypted bytes of `client` into `buf` until [`detect`] can tell (or
/// [`DETECT_TIMEOUT`] passes without a byte), and meanwhile the first bytes of `server`
/// (when given) into `server_buf`: a server that speaks first decides at once.
async fn first_bytes<C: Io, S: Io>(
    client: &mut C,
    buf: &mut BytesMut,
    mut server: Option<&mut S>,
    server_buf: &mut BytesMut,
) -> First {
    buf.reserve(4096);
    loop {
        let server_read = async {
            match server.as_deref_mut() {
                Some(s) => {
                    server_buf.reserve(4096);
                    s.read_buf(server_buf).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = tokio::time::timeout(DETECT_TIMEOUT, client.read_buf(buf)) => match r {
                // The client waits for the server (or paused mid-message).
                Err(_) => return First::Client(Detected::Other),
                Ok(Ok(0) | Err(_)) if buf.is_empty() => return First::Closed,
                Ok(Ok(0) | Err(_)) => return First::Client(Detected::Other),
                Ok(Ok(_)) => match detect(buf) {
                    Detected::NeedMore if buf.len() < MAX_DETECT => {}
                    d => return First::Client(d),
                },
            },
            r = server_read => match r {
                Ok(n) if n > 0 => return First::Server,
                // The server closed or failed first: let the client's bytes decide.
                Ok(_) | Err(_) => server = None,
            },
        }
    }
}

/// Chooses and serves the layer inside the client's TLS (`next_layer` may override it);
/// `server` is the connection dialed for it (or why that failed).
async fn serve_inner<C: Io>(
    ctx: Rc<ConnCtx>,
    mut client: C,
    alpn: Option<String>,
    server: Result<ServerStream, ServerError>,
    key: PoolKey,
    target: Target,
) {
    let cfg = ctx.shared.config();
    let mut server = server;
    let mut data = BytesMut::new();
    let mut server_data = BytesMut::new();
    let detected = if alpn.is_some() {
        inner_layer(
            alpn.as_deref().map(str::as_bytes),
            Detected::NeedMore,
            cfg.rawtcp,
        )
    } else {
        // Only a raw TCP layer could relay what a server says first.
        let watch = match (&mut server, cfg.rawtcp) {
            (Ok(s), true) => Some(&mut s.io),
            _ => None,
        };
        match first_bytes(&mut client, &mut data, watch, &mut server_data).await {
            First::Client(d) => inner_layer(None, d, cfg.rawtcp),
            First::Server => inner_layer(None, Detected::Other, cfg.rawtcp),
            First::Closed => {
                if let Ok(stream) = server {
                    stream.close(&ctx).await;
                }
                return;
            }
        }
    };
    let data = data.freeze();
    let server_data = server_data.freeze();
    let mut layer = detected;
    if ctx.manager().handles(HookKind::NextLayer) {
        let nl = Box::new(NextLayer {
            client: ctx.client(),
            server: Some(Address::new(target.host.clone(), target.port)),
            data_client: data.clone(),
            detected,
            layer,
        });
        match ctx.fire(HookKind::NextLayer, nl).await {
            Some(nl) => layer = nl.layer,
            None => {
                if let Ok(stream) = server {
                    stream.close(&ctx).await;
                }
                return;
            }
        }
    }
    if layer == Layer::Http1 && detect(&data) == Detected::Other {
        // HTTP/1 chosen for bytes that are not HTTP (`rawtcp` off): one clear line, as on
        // the proxy port.
        let reason = "waylay: malformed request line";
        tracing::info!(client.addr = %ctx.client().peername, "bad request inside TLS: {reason}");
        crate::http::bad_request(client, reason).await;
        if let Ok(stream) = server {
            stream.close(&ctx).await;
        }
        return;
    }
    let client = PrefixedIo::new(data, client);
    let mode = match layer {
        Layer::Http1 | Layer::Http2 => {
            // A failed dial is already in `ctx.failed`: requests are answered 502.
            if let Ok(mut stream) = server {
                if !server_data.is_empty() {
                    stream.io = Box::new(PrefixedIo::new(server_data, stream.io));
                }
                match handshake(&ctx, stream).await {
                    Ok(entry) => ctx.pool.borrow_mut().entry(key).or_default().push(entry),
                    Err(e) => {
                        tracing::info!(client.addr = %ctx.client().peername, "{e}");
                        ctx.failed.borrow_mut().insert(key, e.to_string());
                    }
                }
            }
            if layer == Layer::Http2 {
                crate::http::serve_h2(ctx, client, Some(target)).await;
            } else {
                crate::http::serve_h1(ctx, client, Some(target)).await;
            }
            return;
        }
        Layer::Tcp => Mode::Tcp,
        Layer::Passthrough => Mode::Passthrough,
        Layer::Tls => {
            tracing::info!(client.addr = %ctx.client().peername, "TLS inside intercepted TLS is not intercepted again: relayed as raw TCP");
            Mode::Tcp
        }
    };
    let server_side = match server {
        Ok(stream) => ServerSide::Connected {
            stream: Box::new(stream),
            prefix: server_data,
        },
        Err(e) => ServerSide::Failed {
            address: Address::new(target.host, target.port),
            error: e.to_string(),
        },
    };
    crate::tcp::serve(ctx, Box::new(client), server_side, mode).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_alpn_decides_without_bytes() {
        for rawtcp in [true, false] {
            assert_eq!(
                inner_layer(Some(b"h2"), Detected::Other, rawtcp),
                Layer::Http2
            );
            assert_eq!(
                inner_layer(Some(b"http/1.1"), Detected::Other, rawtcp),
                Layer::Http1
            );
        }
    }

    #[test]
    fn without_alpn_the_first_bytes_decide() {
        assert_eq!(inner_layer(None, Detected::Http1, true), Layer::Http1);
        assert_eq!(inner_layer(None, Detected::Http2, true), Layer::Http2);
        assert_eq!(inner_layer(None, Detected::Other, true), Layer::Tcp);
        assert_eq!(inner_layer(None, Detected::Tls, true), Layer::Tcp);
        assert_eq!(
            inner_layer(Some(b"imap"), Detected::Other, true),
            Layer::Tcp
        );
    }

    #[test]
    fn without_rawtcp_what_is_not_http_stays_http1() {
        assert_eq!(inner_layer(None, Detected::Other, false), Layer::Http1);
        assert_eq!(inner_layer(None, Detected::Http2, false), Layer::Http2);
        assert_eq!(
            inner_layer(Some(b"imap"), Detected::Other, false),
            Layer::Http1
        );
    }
}
