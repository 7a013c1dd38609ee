//! The PROXY protocol parser against a real sender: HAProxy (v1 and v2) in front of an
//! in-process server that reads the header with waylay's parser.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use waylay_layers::proxy_protocol::{Parsed, ProxyHeader, Version, parse};
use waylay_testkit::{haproxy, within};

/// What the backend saw on each connection, in order: shown when a check fails.
type Seen = Arc<Mutex<Vec<String>>>;

/// A backend that parses the header, then reads `hello`, answers `ok`, and reports both
/// (or the parser's error). HAProxy also opens connections of its own (for the readiness
/// probe's connection); those end without a payload and are only noted in `seen`.
async fn backend() -> (
    SocketAddr,
    mpsc::Receiver<Result<(ProxyHeader, Vec<u8>), String>>,
    Seen,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(4);
    let seen = Seen::default();
    let log = seen.clone();
    let note = move |what: String| log.lock().expect("seen").push(what);
    actix::spawn(async move {
        for _ in 0..64 {
            let mut s = match l.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    note(format!("accept: {e}"));
                    continue;
                }
            };
            let (tx, note) = (tx.clone(), note.clone());
            actix::spawn(async move {
                let mut buf = Vec::new();
                let (header, len) = loop {
                    match parse(&buf) {
                        Ok(Parsed::Done { value, len }) => break (value, len),
                        Ok(Parsed::Incomplete) => {}
                        Err(e) => {
                            note(format!("refused: {e}"));
                            let _ = tx.send(Err(format!("{e}: {buf:?}"))).await;
                            return;
                        }
                    }
                    let mut chunk = [0u8; 256];
                    match s.read(&mut chunk).await {
                        Ok(0) => return note(format!("closed after {buf:?}")),
                        Err(e) => return note(format!("read: {e} after {buf:?}")),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let mut payload = buf[len..].to_vec();
                while payload.len() < 5 {
                    let mut chunk = [0u8; 16];
                    match s.read(&mut chunk).await {
                        Ok(0) => return note(format!("{header:?}, closed after {payload:?}")),
                        Err(e) => return note(format!("{header:?}, read: {e}")),
                        Ok(n) => payload.extend_from_slice(&chunk[..n]),
                    }
                }
                note(format!("{header:?}, {payload:?}"));
                let _ = s.write_all(b"ok").await;
                let _ = tx.send(Ok((header, payload))).await;
            });
        }
    });
    (addr, rx, seen)
}

async fn check(version: u8) {
    let (back, mut reported, seen) = backend().await;
    let Some(lb) = haproxy(back, version).await else {
        return;
    };
    // What to show when the exchange fails: what the backend saw and what HAProxy said.
    let why = |e: std::io::Error| {
        format!(
            "{e}; the backend saw {:?}; haproxy said: {}",
            seen.lock().expect("seen"),
            lb.log()
        )
    };
    let mut c = within("connect", TcpStream::connect(lb.addr))
        .await
        .unwrap_or_else(|e| panic!("{}", why(e)));
    let client = c.local_addr().expect("local addr");
    c.write_all(b"hello")
        .await
        .unwrap_or_else(|e| panic!("{}", why(e)));
    let mut ok = [0u8; 2];
    within("answer", c.read_exact(&mut ok))
        .await
        .unwrap_or_else(|e| panic!("{}", why(e)));
    assert_eq!(&ok, b"ok");
    let (header, payload) = within("backend", reported.recv())
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
