//! Where a server connection goes: one type for a request's or a tunnel's destination and
//! the key of pooled server connections.

use waylay_core::flow::Address;

use crate::proto::target::Scheme;

/// How waylay reaches a destination. Part of the pool key: a connection made through one
/// route never serves a request meant for another.
///
/// Only direct connections exist yet; the upstream mode will add a route through an HTTP
/// proxy and the SOCKS5 support one through a SOCKS5 proxy, set by the mode's front and
/// changeable by an addon.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    /// Straight to the destination's address.
    Direct,
}

/// Where a request or a tunnel goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Destination {
    /// `https`: TLS to the server.
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) route: Route,
}

impl Destination {
    /// A destination reached directly.
    pub(crate) fn direct(scheme: Scheme, host: impl Into<String>, port: u16) -> Self {
        Self {
            scheme,
            host: host.into(),
            port,
            route: Route::Direct,
        }
    }

    pub(crate) fn address(&self) -> Address {
        Address::new(self.host.clone(), self.port)
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }
}
