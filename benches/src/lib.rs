//! Shared pieces of waylay's benchmarks: the flow every hook benchmark moves around, the
//! no-op and AddHeader addons (in Rust and as mitmproxy scripts), and for the benches that run
//! the proxy in its own process ([`child`], [`procfs`], [`http1`]) the child's start-up, its
//! `/proc` figures, the load's HTTP/1.1 reading and its 1 KiB origin ([`origin_1k`]).
//!
//! Run the hook-dispatch benchmark with
//! `cargo bench -p waylay-benches --bench hooks`; `BENCHMARKS.md` has the figures.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

pub mod child;
pub mod http1;
mod origin;
pub mod procfs;

pub use origin::origin_1k;
use waylay_core::flow::{Client, Request};
use waylay_core::{Addon, AddonManager, HookKind, HookSet, HttpFlow, ManagerHandle, Options};

/// A flow as DESIGN.md measured: a request with 20 headers and a 1 KiB body.
pub fn bench_flow() -> HttpFlow {
    let client = Arc::new(Client::new(
        ([127, 0, 0, 1], 50_000).into(),
        ([127, 0, 0, 1], 8080).into(),
    ));
    let mut req = Request::new("GET", "http://", "example.com", 80, "/index.html?q=1");
    req.headers.append("Host", "example.com");
    for i in 1..20 {
        req.headers
            .append(format!("X-Header-{i}"), format!("value number {i}"));
    }
    req.set_raw_content(Bytes::from(vec![b'x'; 1024]));
    HttpFlow::new(client, req)
}

/// An addon that handles `request` with trivial work (it counts), and declares exactly
/// that, so the only cost measured is the dispatch.
#[derive(Debug, Default)]
pub struct Noop {
    seen: u64,
}

impl Addon for Noop {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.seen += 1;
        black_box(flow);
    }
}

/// The `request` hook as a dyn-compatible trait: what calling addons as trait objects costs
/// (one boxed future per call).
pub trait DynRequest {
    /// Runs the addon's `request` hook.
    fn request_dyn<'a>(
        &'a mut self,
        flow: &'a mut HttpFlow,
    ) -> Pin<Box<dyn Future<Output = ()> + 'a>>;
}

impl<A: Addon> DynRequest for A {
    fn request_dyn<'a>(
        &'a mut self,
        flow: &'a mut HttpFlow,
    ) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
        Box::pin(self.request(flow))
    }
}

/// Starts a manager on the current arbiter with `n` [`Noop`] addons.
///
/// # Panics
///
/// When an addon cannot be added (never, for `Noop`).
pub async fn manager_with(n: usize) -> ManagerHandle {
    let manager = AddonManager::start(Options::new());
    for _ in 0..n {
        if let Err(e) = manager.add(Noop::default()).await {
            panic!("adding a no-op addon: {e}");
        }
    }
    manager
}

/// Handles every HTTP hook a plain request/response fires, and does nothing with it (the
/// "4 no-op addons" of the load benches and the soak).
#[derive(Debug, Default)]
pub struct NoopHttp;

impl Addon for NoopHttp {
    async fn request_headers(&mut self, _flow: &mut HttpFlow) {}
    async fn request(&mut self, _flow: &mut HttpFlow) {}
    async fn response_headers(&mut self, _flow: &mut HttpFlow) {}
    async fn response(&mut self, _flow: &mut HttpFlow) {}
}

/// The seed's AddHeader: counts responses in a `count` header.
#[derive(Debug, Default)]
pub struct AddHeader {
    num: u64,
}

impl Addon for AddHeader {
    async fn response(&mut self, flow: &mut HttpFlow) {
        self.num += 1;
        if let Some(r) = flow.response.as_mut() {
            r.headers.insert("count", self.num.to_string());
        }
    }
}

/// The seed's AddHeader as a mitmproxy script (the same addon as [`AddHeader`]).
pub const PY_ADDHEADER: &str = "class AddHeader:\n    def __init__(self):\n        self.num = 0\n\n    def response(self, flow):\n        self.num = self.num + 1\n        flow.response.headers[\"count\"] = str(self.num)\n\naddons = [AddHeader()]\n";

/// A mitmproxy script whose `response` hook does nothing.
pub const PY_NOOP: &str = "def response(flow):\n    pass\n";
