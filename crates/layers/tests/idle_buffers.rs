//! Idle HTTP/1 connections hold no read or write buffer (issue 13, S5): waylay builds hyper
//! with a patch (vendor/hyper/WAYLAY-PATCH.md) that releases them while a connection waits for
//! its next message. An intercepted connection holds a hyper server connection towards its
//! client and a hyper client connection towards its server; upstream hyper keeps 8 KiB of
//! read and 8 KiB of write buffer in each, 32 KiB per pair.
//!
//! Measured with a counting global allocator (this test binary only): the heap bytes still
//! allocated once `CONNS` keep-alive pairs (hyper client and server on loopback, one request
//! each, answered with 1 KiB) are idle, per pair. No timing: the runtime is current-thread and
//! the tasks run until the count stops moving (bounded).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Bytes currently allocated by the whole process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`; the counter is only bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Keep-alive pairs held idle.
const CONNS: usize = 50;

/// Upper bound on what an idle pair may hold. Measured (debug build): 4.2 KiB with the patch
/// (the two connections' states, task cells, the sockets' registrations), 44.7 KiB with
/// upstream hyper 1.12.0 (its four 8 KiB buffers and the client's 8.5 KiB dispatch channel
/// block on top).
const MAX_PER_PAIR: isize = 16 * 1024;

/// Lets the spawned tasks run until the allocation count is unchanged for a while (each
/// connection reaches its idle read), at most a bounded number of turns.
async fn settle() -> isize {
    let mut last = LIVE.load(Ordering::SeqCst);
    let mut stable = 0;
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
        let now = LIVE.load(Ordering::SeqCst);
        if now == last {
            stable += 1;
            if stable >= 50 {
                break;
            }
        } else {
            stable = 0;
            last = now;
        }
    }
    last
}

/// Opens a keep-alive connection, sends one `GET` and reads the whole answer; returns what
/// keeps the connection open (the request sender; the connection runs in its own task).
async fn one_request(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(format!("http://{addr}/1k"))
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), 1024);
    sender
}

#[tokio::test(flavor = "current_thread")]
async fn idle_http1_connections_hold_no_buffers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(&[b'x'; 1024]),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });

    // One pair first, so that what is allocated once (runtime, lazily initialised state) is in
    // the baseline.
    let _warm = one_request(addr).await;
    let before = settle().await;

    let mut held = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        held.push(one_request(addr).await);
    }
    let after = settle().await;

    let per_pair = (after - before) / CONNS as isize;
    println!("{per_pair} bytes held per idle HTTP/1 connection pair (client and server)");
    assert!(
        per_pair < MAX_PER_PAIR,
        "an idle pair holds {per_pair} bytes (at most {MAX_PER_PAIR}): hyper's buffers are kept"
    );
    drop(held);
}
