//! The PROXY protocol parser against a real sender: HAProxy (v1 and v2) in front of an
//! in-process server that reads the header with waylay's parser.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use waylay_layers::proxy_protocol::{Parsed, ProxyHeader, Version, parse};
use waylay_testkit::{haproxy, within};

/// A backend that parses the header, then reads `hello`, answers `ok`, and reports both
/// (or the parser's error).
async fn backend() -> (
    SocketAddr,
    mpsc::Receiver<Result<(ProxyHeader, Vec<u8>), String>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(4);
    actix::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            actix::spawn(async move {
                let mut buf = Vec::new();
                let (header, len) = loop {
                    match parse(&buf) {
                        Ok(Parsed::Done { value, len }) => break (value, len),
                        Ok(Parsed::Incomplete) => {}
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e}: {buf:?}"))).await;
                            return;
                        }
                    }
                    let mut chunk = [0u8; 256];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let mut payload = buf[len..].to_vec();
                while payload.len() < 5 {
                    let mut chunk = [0u8; 16];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => payload.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(b"ok").await;
                let _ = tx.send(Ok((header, payload))).await;
            });
        }
    });
    (addr, rx)
}

async fn check(version: u8) {
    let (back, mut seen) = backend().await;
    let Some(lb) = haproxy(back, version).await else {
        return;
    };
    let mut c = within("connect", TcpStream::connect(lb.addr))
        .await
        .expect("connect");
    let client = c.local_addr().expect("local addr");
    c.write_all(b"hello").await.expect("write");
    let mut ok = [0u8; 2];
    within("answer", c.read_exact(&mut ok)).await.expect("read");
    assert_eq!(&ok, b"ok");
    let (header, payload) = within("backend", seen.recv())
        .await
        .expect("reported")
        .unwrap_or_else(|e| panic!("haproxy sent a header waylay refuses: {e}"));
    let expected_version = if version == 2 {
        Version::V2
    } else {
        Version::V1
    };
    assert_eq!(
        header,
        ProxyHeader::Proxied {
            version: expected_version,
            source: client,
            destination: lb.addr,
        }
    );
    assert_eq!(payload, b"hello");
}

#[actix_rt::test]
async fn haproxy_v1_header_gives_the_real_client() {
    check(1).await;
}

#[actix_rt::test]
async fn haproxy_v2_header_gives_the_real_client() {
    check(2).await;
}
