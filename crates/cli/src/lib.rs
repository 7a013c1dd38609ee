//! # waylay
//!
//! An intercepting proxy framework in the model of mitmproxy, and its `waylay` binary (the
//! mitmdump of the project). This crate is the one a custom proxy depends on: it re-exports
//! the flow model, the [`Addon`] trait and the options from `waylay-core`, the proxy from
//! `waylay-layers`, and the bundled addons from `waylay-addons`.
//!
//! A custom proxy is a `main` that registers its addons and runs:
//!
//! ```no_run
//! use waylay::{Addon, Dumper, HttpFlow, Proxy};
//!
//! /// Adds a `count` header to every response.
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
//! fn main() -> Result<(), waylay::ProxyError> {
//!     Proxy::builder()
//!         .listen("127.0.0.1:8080")
//!         .set("ssl_insecure=true")
//!         .addon(AddHeader::default())
//!         .addon(Dumper::stdout())
//!         .run() // until Ctrl-C or SIGTERM; then every addon gets `done`
//! }
//! ```
//!
//! Addons are tested without a network with `waylay-testkit`'s `AddonHarness`.

pub use waylay_core::{
    AddError, Addon, AddonActor, AddonId, AddonManager, Fault, Filter, FilterError, Flow,
    FlowError, FlowId, FlowRef, Headers, Hook, HookError, HookKind, HookSet, HttpFlow,
    ManagerHandle, OptionSpec, OptionValue, Options, OptionsError, Request, Response, TcpFlow,
    filter, flow, flowfile, hooks, log, options,
};
pub use waylay_layers::{ProxyBuilder, ProxyError, RunningProxy, check_options};

/// Entry point of the proxy API: `Proxy::builder()`.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// A builder with the default options and waylay's default addons, as mitmproxy loads
    /// its own: [`Block`](addons::Block) (`block_global`, `block_private`),
    /// [`AntiCache`](addons::AntiCache), [`AntiComp`](addons::AntiComp),
    /// [`ProxyAuth`](addons::ProxyAuth), [`Breakpoints`](addons::Breakpoints) (`breakpoints`)
    /// and [`Intercept`](addons::Intercept) (`intercept`: matching flows wait until resumed
    /// through their intercept handle, which the web UI's addon takes). Each handles its hooks only while its option is on,
    /// so a proxy without them keeps its fast path; an option set at run time takes effect
    /// from the next connection or request. The addons added with `addon` come after them.
    pub fn builder() -> ProxyBuilder {
        waylay_layers::Proxy::builder()
            .addon_with(waylay_addons::Block::from_options)
            .addon_with(waylay_addons::AntiCache::from_options)
            .addon_with(waylay_addons::AntiComp::from_options)
            .addon_with(waylay_addons::ProxyAuth::from_options)
            .addon_with(waylay_addons::Breakpoints::from_options)
            .addon_with(waylay_addons::Intercept::from_options)
    }
}

pub mod client_replay;

/// The addons bundled with waylay.
pub mod addons {
    pub use waylay_addons::*;
}
pub use waylay_addons::Dumper;

/// The web UI (`waylay web`): its addon, configuration and server handle.
pub mod web {
    pub use waylay_web::*;
}
