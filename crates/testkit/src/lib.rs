//! # waylay-testkit
//!
//! What addon authors test with: ready-made flows ([`tflow`], [`tresp`],
//! [`twebsocketflow`], [`ttcpflow`]) and [`AddonHarness`], which runs addons in the real
//! addon manager, without a network, so that an addon's test is a few lines.
//!
//! A complete addon test (the seed's `AddHeader`, which counts responses):
//!
//! ```
//! use waylay_core::{Addon, HttpFlow};
//! use waylay_testkit::{AddonHarness, FlowExt, tflow, tresp};
//!
//! #[derive(Default)]
//! struct AddHeader {
//!     num: u64,
//! }
//!
//! impl Addon for AddHeader {
//!     async fn response(&mut self, flow: &mut HttpFlow) {
//!         self.num += 1;
//!         if let Some(resp) = flow.response.as_mut() {
//!             resp.headers.insert("count", self.num.to_string());
//!         }
//!     }
//! }
//!
//! // In a test file: `#[actix_rt::test] async fn counts_responses() { ... }`.
//! # actix_rt::System::new().block_on(async {
//! let mut addons = AddonHarness::new(AddHeader::default()).await;
//! let flow = addons.response(tflow().with_response(tresp())).await;
//! assert_eq!(flow.response.unwrap().headers.get("count"), Some("1"));
//! let flow = addons.response(tflow().with_response(tresp())).await;
//! assert_eq!(flow.response.unwrap().headers.get("count"), Some("2"));
//! # });
//! ```
//!
//! The harness must be used on the test's own thread inside an actix system, which
//! `#[actix_rt::test]` provides: the manager and the addons run on that thread, and log
//! records are captured by a `tracing` subscriber set as that thread's default while the
//! harness lives ([`AddonHarness::logs`]); the addons' `log` hook receives them too.
//!
//! Tests that use the testkit live in a crate's `tests/` folder, not in `#[cfg(test)]`
//! modules (there the crate under test would exist twice and its types would not match).

mod capture;
mod flows;
mod harness;
mod netns;
pub mod peers;
mod process;
mod proxy;
mod proxy_peers;
mod tcp_origin;
mod ws_origin;

pub use flows::{FlowExt, tclient, tflow, treq, tresp, tserver, ttcpflow, twebsocketflow};
pub use harness::{AddonHarness, AddonList};
pub use netns::{rerun_in_netns, run_program};
pub use process::{KillOnDrop, Lines, WaylayWeb, free_port, terminate, wait_listening};
pub use proxy::{
    Observe, TempDir, TestProxy, connect_tls, connect_tls_socks5, http_origin, http_origin_v6,
    https_origin, https_origin_h2, proxy_get, raw_request, raw_request_bytes, read_n,
    read_sized_response, read_to_close, scripted_origin, socks5_tunnel, test_tls_acceptor, within,
};
pub use proxy_peers::{
    PeerProxy, Socks5Server, danted, haproxy, socks5_server, tinyproxy, tls_front,
};
pub use tcp_origin::{
    TcpOrigin, connect_tunnel, tcp_banner_origin, tcp_binary_origin, tcp_line_origin,
    tcp_reset_origin, tcp_stalled_origin, tls_banner_origin, tls_line_origin, tls_reset_origin,
};
pub use ws_origin::{
    HeaderList, TestIo, WsClient, WsOrigin, WsRecord, ws_config, ws_in_connect, ws_next,
    ws_through_proxy, wss_in_connect,
};
