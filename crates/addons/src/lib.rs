//! # waylay-addons
//!
//! The addons bundled with waylay, each a plain [`waylay_core::Addon`]:
//!
//! - [`Dumper`]: mitmdump's flow output, one line per flow by default, more with
//!   `flow_detail`.
//! - [`ProxyAuth`] (`proxyauth`), [`Block`] (`block_global`, `block_private`),
//!   [`AntiCache`] (`anticache`), [`AntiComp`] (`anticomp`): the proxy's policy options, as
//!   mitmproxy's addons of the same names. `waylay::Proxy::builder()` registers them; each is
//!   made with `from_options` and handles its hooks only when its option is on at start.
//! - [`HarDump`]: `hardump`, a HAR 1.2 file of the HTTP flows at shutdown.
//! - [`ServerReplay`]: `server_replay` (`-S`), requests answered from a recording.
//! - [`Save`]: `save_stream_file` (`-w`), flows written to a mitmproxy-format flow file.
//!
//! Addons depend on `waylay-core` only; register them on a proxy with
//! `waylay::Proxy::builder().addon(...)`, or run them in a bare
//! [`waylay_core::AddonManager`] (as the tests do).
//!
//! ```
//! use waylay_addons::Dumper;
//! use waylay_core::flow::{Client, Request, Response};
//! use waylay_core::{AddonManager, HookKind, HttpFlow, Options};
//!
//! actix::System::new().block_on(async {
//!     let manager = AddonManager::start(Options::new());
//!     manager.add(Dumper::stdout()).await.unwrap();
//!
//!     let client = std::sync::Arc::new(Client::new(
//!         "127.0.0.1:50000".parse().unwrap(),
//!         "127.0.0.1:8080".parse().unwrap(),
//!     ));
//!     let mut flow = HttpFlow::new(client, Request::from_url("GET", "http://example.com/").unwrap());
//!     flow.response = Some(Response::make(200, "hello", [("content-type", "text/plain")]));
//!     // Prints `127.0.0.1:50000: GET http://example.com/ << 200 OK 5b 0ms`.
//!     manager.fire(HookKind::Response, Box::new(flow)).await.unwrap();
//! });
//! ```

mod anticache;
mod anticomp;
mod block;
mod contentview;
mod dumper;
mod hardump;
mod human;
mod proxyauth;
mod save;
mod server_replay;

pub use anticache::AntiCache;
pub use anticomp::AntiComp;
pub use block::{Block, is_private};
pub use dumper::{Dumper, MAX_FLOW_DETAIL};
pub use hardump::HarDump;
pub use proxyauth::{Credentials, ProxyAuth, parse_basic};
pub use save::{SAVE_QUEUE, Save};
pub use server_replay::ServerReplay;
