//! # waylay-layers
//!
//! The proxy itself: listeners and worker arbiters, the `ClientConnection` and
//! `ServerConnection` actors, protocol detection, TLS interception, HTTP/1 and HTTP/2 (hyper),
//! CONNECT tunnels and raw relays. Addons never depend on this crate; they see only the flows
//! and hooks of `waylay-core`.
//!
//! ```no_run
//! # fn main() -> Result<(), waylay_layers::ProxyError> {
//! waylay_layers::Proxy::builder().listen("127.0.0.1:8080").run()
//! # }
//! ```

mod config;
mod conn;
mod context;
mod error;
pub mod front;
mod http;
mod intercept;
mod io;
mod modes;
mod next_layer;
mod pooled;
mod proto;
mod proxy;
mod relay;
mod rt;
pub mod tls;
pub mod via;

pub use config::check_options;
pub use error::{ProxyError, ServerError, Side};
pub use proto::{proxy_protocol, socks5};
pub use proxy::{Listening, Proxy, ProxyBuilder, RunningProxy};
