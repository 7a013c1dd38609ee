//! `anticomp`: asks servers for uncompressed content (mitmproxy's `anticomp` addon).

use waylay_core::hooks::Configure;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, Options, OptionsError};

/// Sets `Accept-Encoding: identity` on requests while `anticomp` is on.
#[derive(Debug, Default)]
pub struct AntiComp {
    enabled: bool,
}

impl AntiComp {
    /// The addon for `options`. It handles requests only while `anticomp` is on (the manager
    /// reads [`Addon::hooks`] again after every `configure`), so a proxy without it keeps its
    /// fast path.
    pub fn from_options(options: &Options) -> Self {
        Self {
            enabled: options.bool("anticomp"),
        }
    }
}

impl Addon for AntiComp {
    fn name(&self) -> String {
        "anticomp".into()
    }

    fn hooks(&self) -> HookSet {
        if self.enabled {
            HookSet::of(&[HookKind::Configure, HookKind::RequestHeaders])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.enabled = cfg.options.bool("anticomp");
        Ok(())
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if self.enabled {
            flow.request.headers.insert("accept-encoding", "identity");
        }
    }
}
