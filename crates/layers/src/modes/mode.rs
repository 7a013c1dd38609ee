//! The mode a listener serves (mitmproxy's `--mode`), as the connections it accepts see it.

use waylay_core::{ModeSpec, Via};

/// One listener's mode: how its clients reach waylay (and so which front learns where they
/// want to go), and where its server connections go by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mode {
    /// The spec as parsed (`regular`, `socks5@1080`, `reverse:https://example.com`...).
    pub(crate) spec: ModeSpec,
    /// `client.proxy_mode` of the connections it accepts: the canonical spec.
    pub(crate) full_spec: String,
    /// Where server connections go unless an addon sets a server's `via`: the upstream proxy
    /// in upstream mode, else direct.
    pub(crate) default_route: Via,
}

impl Mode {
    pub(crate) fn new(spec: ModeSpec) -> Self {
        let default_route = match &spec.mode {
            waylay_core::Mode::Upstream(proxy) => Via::Proxy(proxy.clone()),
            _ => Via::Direct,
        };
        Self {
            full_spec: spec.to_string(),
            spec,
            default_route,
        }
    }
}
