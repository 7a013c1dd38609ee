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

mod client_conn;
mod config;
mod context;
mod detect;
mod error;
pub mod front;
mod http;
mod intercept;
mod io;
mod proto;
mod proxy;
mod rt;
mod server_conn;
mod tcp;
pub mod tls;
mod tunnel;
pub mod via;
mod websocket;

pub use error::{ProxyError, ServerError};
pub use proto::{proxy_protocol, socks5};
pub use proxy::{Proxy, ProxyBuilder, RunningProxy};
