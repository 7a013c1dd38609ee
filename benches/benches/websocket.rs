//! WebSocket messages per second: a client sends N messages to an echo origin and reads the
//! N echoes (up to `WINDOW` in flight), directly and through the proxy (no addons: the fast
//! path; and one no-op `websocket_message` addon: every message through the hook).
//!
//! Client, origin and proxy (one worker) share one thread, so the run is CPU-bound on one
//! core and the proxy's cost per message is `1/rate(proxy) - 1/rate(direct)`.
//!
//! `cargo bench -p waylay-benches --bench websocket` (optional argument: a scale factor for
//! the message counts, default 1).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use waylay_core::{Addon, HttpFlow};
use waylay_layers::Proxy;
use waylay_testkit::{TestIo, TestProxy, WsClient, WsOrigin, ws_config, ws_through_proxy};

/// Messages in flight at most (the writer waits for echoes beyond that).
const WINDOW: usize = 64;

/// Handles `websocket_message` and does nothing.
struct NoopMessage;

impl Addon for NoopMessage {
    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        let _ = flow;
    }
}

async fn direct(origin: &WsOrigin) -> WsClient {
    let tcp = tokio::net::TcpStream::connect(origin.addr)
        .await
        .expect("connect");
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn TestIo> = Box::new(tcp);
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        format!("ws://{}/", origin.addr),
        io,
        Some(ws_config()),
    )
    .await
    .expect("handshake");
    ws
}

/// Sends `n` messages of `size` bytes and reads the echoes; the elapsed time.
async fn run(ws: WsClient, n: usize, size: usize) -> Duration {
    let payload = Bytes::from(vec![0x5au8; size]);
    let (mut tx, mut rx) = ws.split();
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(WINDOW);
    for _ in 0..WINDOW {
        credit_tx.try_send(()).expect("window");
    }
    let start = Instant::now();
    let writer = async {
        for _ in 0..n {
            credit_rx.recv().await.expect("credit");
            tx.send(Message::Binary(payload.clone()))
                .await
                .expect("send");
        }
        tx
    };
    let reader = async {
        for _ in 0..n {
            match rx.next().await {
                Some(Ok(Message::Binary(b))) => assert_eq!(b.len(), size),
                other => panic!("unexpected {other:?}"),
            }
            let _ = credit_tx.try_send(());
        }
    };
    let (mut tx, ()) = futures::join!(writer, reader);
    let elapsed = start.elapsed();
    let _ = tx.close().await;
    elapsed
}

fn main() {
    let scale: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1.0);
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let origin = WsOrigin::start().await;
        let plain = TestProxy::start(Proxy::builder()).await;
        let hooked = TestProxy::start(Proxy::builder().addon(NoopMessage)).await;
        println!("| message size | path | messages/s | µs/message (one core) |");
        println!("|---|---|---|---|");
        for (size, base_n) in [(64usize, 100_000usize), (64 << 10, 10_000)] {
            let n = ((base_n as f64) * scale).max(100.0) as usize;
            for path in [
                "direct",
                "proxy, no addons",
                "proxy, no-op websocket_message",
            ] {
                // Best of 3 runs (the machine is shared).
                let mut best = Duration::MAX;
                for _ in 0..3 {
                    let ws = match path {
                        "direct" => direct(&origin).await,
                        "proxy, no addons" => {
                            ws_through_proxy(plain.addr(), origin.addr, "/", &[])
                                .await
                                .expect("upgrade")
                                .0
                        }
                        _ => {
                            ws_through_proxy(hooked.addr(), origin.addr, "/", &[])
                                .await
                                .expect("upgrade")
                                .0
                        }
                    };
                    best = best.min(run(ws, n, size).await);
                }
                let rate = n as f64 / best.as_secs_f64();
                let label = if size < 1024 {
                    format!("{size} B")
                } else {
                    format!("{} KiB", size >> 10)
                };
                println!(
                    "| {label} | {path} | {rate:.0} | {:.2} |",
                    1e6 * best.as_secs_f64() / n as f64
                );
            }
        }
        plain.shutdown().await;
        hooked.shutdown().await;
    });
}
