//! Raw TCP throughput: a bulk upload from a client to a sink on 127.0.0.1, directly and
//! through the proxy (CONNECT, raw TCP) with no addon (plain copy) and with an addon handling
//! `tcp_message` (a message and a hook per chunk), beside a minimal forwarder (the floor).
//!
//! `cargo bench -p waylay-benches --bench tcp` (`WAYLAY_TCP_MIB=256` by default,
//! `WAYLAY_TCP_REPS=3`). The proxy runs on its own thread (one worker); the client and the
//! sink share the bench's main thread. Prints MB/s (best and median of the repetitions) and
//! the process CPU time per GiB (all threads).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waylay_core::{Addon, HookKind, HookSet, TcpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, connect_tunnel};

/// Handles `tcp_message` and does nothing with it.
struct NoopTcp;

impl Addon for NoopTcp {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::TcpMessage])
    }
    async fn tcp_message(&mut self, flow: &mut TcpFlow) {
        std::hint::black_box(flow.messages.last().map(|m| m.content.len()));
    }
}

/// A sink: reads to EOF, answers the byte count (8 bytes, big-endian), closes.
async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Starts a proxy on its own thread; returns its address.
fn proxy_thread(with_addon: bool) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let builder = Proxy::builder().set("rawtcp=true");
            let builder = if with_addon {
                builder.addon(NoopTcp)
            } else {
                builder
            };
            let proxy = TestProxy::start(builder).await;
            let _ = tx.send(proxy.addr());
            futures::future::pending::<()>().await;
        });
    });
    rx.recv().expect("proxy started")
}

/// A minimal forwarder on its own thread (the "floor"): every connection is relayed to
/// `to` with `tokio::io::copy_bidirectional`, no CONNECT, no detection, no actors.
fn floor_thread(to: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind floor");
            let _ = tx.send(l.local_addr().expect("addr"));
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut s) = TcpStream::connect(to).await {
                        let _ = c.set_nodelay(true);
                        let _ = s.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                    }
                });
            }
        });
    });
    rx.recv().expect("floor started")
}

/// Process CPU time (user + system, all threads) from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Uploads `total` bytes over `s` and waits for the sink's count.
async fn upload(mut s: TcpStream, total: u64) -> Duration {
    let _ = s.set_nodelay(true);
    // Starts with 0x00: not TLS or HTTP, so the proxy decides raw TCP at once.
    let chunk = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = chunk
            .len()
            .min(usize::try_from(total - sent).unwrap_or(usize::MAX));
        s.write_all(chunk.get(..n).unwrap_or_default())
            .await
            .expect("write");
        sent += n as u64;
    }
    s.shutdown().await.expect("shutdown");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.expect("sink count");
    let took = start.elapsed();
    assert_eq!(u64::from_be_bytes(count), total, "bytes lost");
    took
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let mib: u64 = std::env::var("WAYLAY_TCP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let reps: usize = std::env::var("WAYLAY_TCP_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let total = mib * 1024 * 1024;
    let plain = proxy_thread(false);
    let hooked = proxy_thread(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sink = sink().await;
        let floor = floor_thread(sink);
        println!("raw TCP upload of {mib} MiB, {reps} repetitions");
        println!(
            "{:<38} {:>10} {:>10} {:>12}",
            "path", "best MB/s", "median", "CPU s/GiB"
        );
        for (name, via) in [
            ("direct", None),
            ("floor forwarder (copy_bidirectional)", Some((floor, false))),
            ("proxy, no addon (copy)", Some((plain, true))),
            ("proxy, tcp_message addon", Some((hooked, true))),
        ] {
            let mut rates = Vec::new();
            let cpu0 = cpu_seconds();
            for _ in 0..reps {
                let s = match via {
                    None => TcpStream::connect(sink).await.expect("connect"),
                    Some((f, false)) => TcpStream::connect(f).await.expect("connect"),
                    Some((p, true)) => connect_tunnel(p, &sink.to_string()).await.expect("tunnel"),
                };
                let took = upload(s, total).await;
                rates.push(total as f64 / 1e6 / took.as_secs_f64());
            }
            let cpu = (cpu_seconds() - cpu0) / (reps as f64 * mib as f64 / 1024.0);
            rates.sort_by(f64::total_cmp);
            let best = rates.last().copied().unwrap_or(0.0);
            let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
            println!("{name:<38} {best:>10.0} {median:>10.0} {cpu:>12.2}");
        }
    });
}
