//! Where a server connection goes: one type for a request's or a tunnel's destination and
//! the key of pooled server connections.

use waylay_core::Via;
use waylay_core::flow::{Address, CompactString};

use crate::proto::target::Scheme;

/// Where a request or a tunnel goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Destination {
    /// `https`: TLS to the server.
    pub(crate) scheme: Scheme,
    pub(crate) host: CompactString,
    pub(crate) port: u16,
    /// The route an addon set on the flow's server (`via`); `None`: the mode's (direct, or
    /// the upstream proxy). Part of the pool key: a connection made through one route never
    /// serves a request meant for another.
    pub(crate) route: Option<Via>,
}

impl Destination {
    /// A destination reached by the mode's route.
    pub(crate) fn direct(scheme: Scheme, host: impl Into<CompactString>, port: u16) -> Self {
        Self {
            scheme,
            host: host.into(),
            port,
            route: None,
        }
    }

    pub(crate) fn address(&self) -> Address {
        Address::new(self.host.as_str(), self.port)
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }
}
