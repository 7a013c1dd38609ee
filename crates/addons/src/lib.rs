//! # waylay-addons
//!
//! The addons bundled with waylay, each a plain [`waylay_core::Addon`]:
//!
//! - [`Dumper`]: mitmdump's flow output, one line per flow by default, more with
//!   `flow_detail`.
//! - [`ProxyAuth`] (`proxyauth`), [`Block`] (`block_global`, `block_private`),
//!   [`AntiCache`] (`anticache`), [`AntiComp`] (`anticomp`): the proxy's policy options, as
//!   mitmproxy's addons of the same names. `waylay::Proxy::builder()` registers them; each is
//!   made with `from_options` and handles its flow hooks only while its option is on (set at
//!   start or later: the manager re-reads an addon's hooks after every `configure`).
//! - The rule addons, each with mitmproxy's option and syntax (`[SEP filter] SEP subject SEP
//!   replacement`, any separator): [`ModifyHeaders`] (`modify_headers`), [`ModifyBody`]
//!   (`modify_body`), [`MapRemote`] (`map_remote`), [`MapLocal`] (`map_local`),
//!   [`BlockList`] (`block_list`), and the filter-taking [`StickyCookie`] and [`StickyAuth`].
//! - [`Onboarding`]: `http://mitm.it/` answered by waylay with the CA certificate.
//! - [`export`]: mitmproxy's export formats (curl, httpie, raw) as functions over a flow.
//! - [`HarDump`]: `hardump`, a HAR 1.2 file of the HTTP flows at shutdown.
//! - [`ServerReplay`]: `server_replay` (`-S`), requests answered from a recording.
//! - [`Save`]: `save_stream_file` (`-w`), flows written to a mitmproxy-format flow file.
//!
//! Each declares its options in `load` and refuses a bad value in `configure` with one line
//! naming the option and quoting the offending part. Options set with
//! `ProxyBuilder::set` are applied before addons load, so set an addon's options on the
//! running proxy (`proxy.manager().set(...)`) or declare them first (the `waylay` binary does).
//! The rule addons, [`Dumper`], [`ServerReplay`], [`Save`] and [`HarDump`] handle flow hooks
//! only while their options give them something to do (the manager reads an addon's hooks
//! again after each `configure`), so an idle one costs a proxy nothing per request and one set
//! at run time acts from the next request.
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
mod block_list;
mod breakpoints;
mod contentview;
mod dumper;
pub mod export;
mod hardump;
mod htpasswd;
mod human;
mod intercept;
mod map_local;
mod map_remote;
mod matcher;
mod modify_body;
mod modify_headers;
mod onboarding;
mod proxyauth;
mod save;
#[cfg(feature = "python")]
mod script;
mod server_replay;
mod spec;
mod stickyauth;
mod stickycookie;
mod value;

pub use anticache::AntiCache;
pub use anticomp::AntiComp;
pub use block::{Block, is_private};
pub use block_list::{BlockList, NO_RESPONSE};
pub use breakpoints::{
    BREAKPOINT_METADATA, BREAKPOINTS_OPTION, Breakpoints, RuleError, check_breakpoint_rule,
};
pub use dumper::{Dumper, MAX_FLOW_DETAIL};
pub use hardump::HarDump;
pub use htpasswd::Htpasswd;
pub use intercept::Intercept;
pub use map_local::MapLocal;
pub use map_remote::MapRemote;
pub use modify_body::ModifyBody;
pub use modify_headers::ModifyHeaders;
pub use onboarding::{ONBOARDING_HOST, Onboarding, p12_of};
pub use proxyauth::{Credentials, ProxyAuth, parse_basic};
pub use save::{SAVE_QUEUE, Save};
#[cfg(feature = "python")]
pub use script::{ScriptAddon, ScriptError};
pub use server_replay::ServerReplay;
pub use stickyauth::StickyAuth;
pub use stickycookie::StickyCookie;
