//! `anticache`: removes the request headers that let a server answer `304 Not Modified`, so
//! every response carries its content (mitmproxy's `anticache` addon).

use waylay_core::hooks::Configure;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, Options, OptionsError};

/// Strips `If-None-Match` and `If-Modified-Since` from requests while `anticache` is on.
#[derive(Debug, Default)]
pub struct AntiCache {
    enabled: bool,
}

impl AntiCache {
    /// The addon for `options`. It handles requests only while `anticache` is on (the manager
    /// reads [`Addon::hooks`] again after every `configure`), so a proxy without it keeps its
    /// fast path (no flow is built for requests nobody observes).
    pub fn from_options(options: &Options) -> Self {
        Self {
            enabled: options.bool("anticache"),
        }
    }
}

impl Addon for AntiCache {
    fn name(&self) -> String {
        "anticache".into()
    }

    fn hooks(&self) -> HookSet {
        if self.enabled {
            HookSet::of(&[HookKind::Configure, HookKind::RequestHeaders])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.enabled = cfg.options.bool("anticache");
        Ok(())
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if self.enabled {
            flow.request.headers.remove("if-none-match");
            flow.request.headers.remove("if-modified-since");
        }
    }
}
