//! # waylay-core
//!
//! The heart of waylay, an intercepting proxy framework in the model of mitmproxy: the flow
//! model, the typed hooks, the [`Addon`] trait, the addon-manager actor and the options.
//!
//! ## Writing an addon
//!
//! An addon is a value implementing [`Addon`]. Every hook has a no-op default, so an addon
//! implements only what it needs; hooks may be `async`. Changing the flow it is handed
//! changes the traffic: edit the request and it goes to the server changed, set
//! `flow.response` in `request` and the server is never contacted, call `flow.kill()` to
//! drop the connection.
//!
//! ```
//! use waylay_core::{Addon, AddonManager, HookKind, HttpFlow, Options};
//! use waylay_core::flow::{Client, Request, Response};
//!
//! /// Adds a `count` header to every response (mitmproxy's classic example).
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
//! # fn main() {
//! actix::System::new().block_on(async {
//!     let manager = AddonManager::start(Options::new());
//!     manager.add(AddHeader::default()).await.unwrap();
//!
//!     let client = std::sync::Arc::new(Client::new(
//!         "127.0.0.1:50000".parse().unwrap(),
//!         "127.0.0.1:8080".parse().unwrap(),
//!     ));
//!     let mut flow = HttpFlow::new(client, Request::from_url("GET", "http://example.com/").unwrap());
//!     flow.response = Some(Response::make(200, "hello", [("content-type", "text/plain")]));
//!
//!     let flow = manager.fire(HookKind::Response, Box::new(flow)).await.unwrap();
//!     assert_eq!(flow.response.unwrap().headers.get("count"), Some("1"));
//! });
//! # }
//! ```
//!
//! Addon authors test addons with `waylay-testkit`'s `AddonHarness`, which runs them in this
//! same manager without a network.
//!
//! ## How hooks travel
//!
//! Every addon has its own actor ([`AddonActor`]); the [`AddonManager`] actor keeps them in
//! registration order and publishes, per hook, the route of the addons handling it. A hook
//! walks its route: the payload moves into the first handling addon, comes back, moves into
//! the next, and is returned. When an addon is idle and the hook is fired on the addons'
//! thread, its hook runs right in the caller's task: the addon's state is taken from its
//! slot and put back, with no message. When it is busy, or the hook comes from another
//! thread, the hook goes through the addon actor's mailbox. Either way an addon runs one
//! hook at a time (its state needs no lock), and a slow addon delays only the flows it
//! holds: a hook that waits is handed to a task of its own. A panicking addon is logged with
//! its name and the flow continues with what the addon left; so is a hook that overruns
//! `addon_timeout`.
//!
//! Hooks nobody handles cost one atomic load ([`ManagerHandle::handles`]): see
//! [`Addon`] for how waylay learns which hooks an addon implements.
//!
//! ## Filters
//!
//! [`Filter`] is mitmproxy's filter language (`~d example.com & ~c 200`), parsed once and
//! matched against any flow through [`FlowRef`]: addons that take a filter in an option
//! parse it in `configure` and call [`Filter::matches`] in their hooks. See [`filter`].
//!
//! Hooks must not block the thread: hand blocking work to a thread pool (for example a
//! `crossbeam-channel` to a writer thread).

pub mod filter;
pub mod flow;
pub mod flowfile;
pub mod hooks;
pub mod log;
mod manager;
pub mod mode;
pub mod options;
pub mod replay;

pub use filter::{Filter, FilterError, FlowRef};
pub use flow::{Flow, FlowError, FlowId, Headers, HttpFlow, Request, Response, TcpFlow};
pub use hooks::{Addon, Hook, HookKind, HookSet};
pub use manager::{
    AddError, AddonActor, AddonId, AddonManager, Called, Fault, HookError, ManagerHandle,
    ReplayMark,
};
pub use mode::{
    Credentials, Mode, ModeSpec, ModeSpecError, ProxyScheme, ReverseScheme, ReverseTarget,
    UpstreamProxy, Via, parse_modes,
};
pub use options::{OptionSpec, OptionValue, Options, OptionsError};
