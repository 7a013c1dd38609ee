//! TLS interception inside a CONNECT tunnel: read the ClientHello, connect to the server
//! first (so the client is offered only what the server accepted), mint a certificate, and
//! serve HTTP over the client's TLS.

use std::rc::Rc;
use std::sync::Arc;

use waylay_core::HookKind;
use waylay_core::flow::{Address, Client, TlsInfo, now};
use waylay_core::hooks::{ClientHelloData, Side, TlsData};

use crate::context::{ConnCtx, PoolKey, Target};
use crate::io::BoxIo;
use crate::server_conn::{DialSpec, dial, sni_for};

/// What the ClientHello offered.
#[derive(Debug, Default)]
pub(crate) struct Hello {
    pub(crate) sni: Option<String>,
    pub(crate) alpn: Vec<Vec<u8>>,
}

/// Parses a ClientHello from the first bytes of a connection; `None` while incomplete or
/// not a ClientHello.
pub(crate) fn parse_client_hello(buf: &[u8]) -> Option<Hello> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = buf;
    while !rd.is_empty() {
        if acceptor.read_tls(&mut rd).is_err() {
            return None;
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let ch = accepted.client_hello();
            Some(Hello {
                sni: ch.server_name().map(str::to_owned),
                alpn: ch
                    .alpn()
                    .map(|it| it.map(<[u8]>::to_vec).collect())
                    .unwrap_or_default(),
            })
        }
        _ => None,
    }
}

/// Whether `buf` holds a whole ClientHello.
pub(crate) fn client_hello_complete(buf: &[u8]) -> bool {
    crate::detect::tls_record_len(buf).is_some() && parse_client_hello(buf).is_some()
}

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
pub(crate) async fn intercept(ctx: Rc<ConnCtx>, io: BoxIo, hello: &[u8], host: String, port: u16) {
    let cfg = ctx.shared.config();
    let parsed = parse_client_hello(hello).unwrap_or_default();
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
        crate::tcp::serve(ctx, io, address, crate::tcp::Mode::Passthrough).await;
        return;
    }

    // Offer the server what the client offered and waylay can speak.
    let offers: Vec<Vec<u8>> = parsed
        .alpn
        .iter()
        .filter(|p| (p.as_slice() == b"h2" && cfg.http2) || p.as_slice() == b"http/1.1")
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
    let client_alpn: Vec<Vec<u8>> = match dial(&ctx, spec).await {
        Ok(entry) => {
            let info = entry.server.tls_info.clone().unwrap_or_default();
            if cfg.upstream_cert
                && let Some(leaf) = info.certificate_list.first()
            {
                for n in cert_names(leaf) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            ctx.pool.borrow_mut().entry(key).or_default().push(entry);
            match info.alpn {
                Some(p) => vec![p.into_bytes()],
                None if offers.iter().any(|p| p == b"http/1.1") => vec![b"http/1.1".to_vec()],
                None => Vec::new(),
            }
        }
        Err(e) => {
            // Finish the client's handshake anyway and answer its requests with a 502 that
            // names the reason, as a browser user can read it.
            tracing::info!(client.addr = %ctx.client().peername, server.addr = %format!("{host}:{port}"), "{e}");
            ctx.failed.borrow_mut().insert(key, e.to_string());
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
    let config = match ctx.shared.certs.server_config(&names, &client_alpn) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(client.addr = %ctx.client().peername, "cannot mint a certificate for {names:?}: {e}");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match acceptor.accept(io).await {
        Ok(t) => t,
        Err(e) => {
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
    if alpn.as_deref() == Some("h2") {
        crate::http::serve_h2(ctx, tls, Some(target)).await;
    } else {
        crate::http::serve_h1(ctx, tls, Some(target)).await;
    }
}
