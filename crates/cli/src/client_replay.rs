//! Client replay (`-C`): recorded requests sent again to the live servers, through waylay's
//! own proxy listener ([`waylay_core::replay`]), so every replayed flow goes through the
//! addon chain like live traffic and is marked as a replay (`is_replay == "request"`,
//! `~replay` matches it). [`ClientPlayback`] declares the options (mitmproxy's
//! `clientplayback` addon); it handles no flow hook.

use waylay_core::hooks::Loader;
use waylay_core::options::OptionValue;
use waylay_core::{Addon, HookKind, HookSet, OptionSpec};

pub use waylay_core::replay::{ReplayError, replay_all};

/// Declares the client replay options (mitmproxy's `clientplayback` addon).
#[derive(Debug, Default)]
pub struct ClientPlayback;

impl ClientPlayback {
    /// The options of client replay (mitmproxy's names).
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new(
                "client_replay",
                OptionValue::Seq(Vec::new()),
                "Replay client requests from a saved file (through the proxy, so addons see them).",
            ),
            OptionSpec::new(
                "client_replay_concurrency",
                OptionValue::Int(1),
                "Concurrency limit on in-flight client replay requests: 1, or -1 for no limit.",
            ),
        ]
    }
}

impl Addon for ClientPlayback {
    fn name(&self) -> String {
        "clientplayback".into()
    }

    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Load])
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }
}
