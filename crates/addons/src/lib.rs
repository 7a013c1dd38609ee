//! # waylay-addons
//!
//! The addons bundled with waylay, each a plain [`waylay_core::Addon`]:
//!
//! - [`Dumper`]: mitmdump's flow output, one line per flow by default, more with
//!   `flow_detail`.
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

mod contentview;
mod dumper;
mod hardump;
mod human;
mod save;
#[cfg(feature = "python")]
mod script;
mod server_replay;

pub use dumper::{Dumper, MAX_FLOW_DETAIL};
pub use hardump::HarDump;
pub use save::{SAVE_QUEUE, Save};
#[cfg(feature = "python")]
pub use script::{ScriptAddon, ScriptError};
pub use server_replay::ServerReplay;
