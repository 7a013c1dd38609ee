//! `stickyauth`: replay a host's last `Authorization` header, as mitmproxy's stickyauth.

use std::collections::HashMap;

use bytes::Bytes;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError};

use crate::matcher::FlowMatcher;

const OPTION: &str = "stickyauth";

/// mitmproxy's `stickyauth` addon: with a filter set, the `Authorization` header of every
/// request is remembered per host, and a matching request to that host without one gets the
/// remembered header added.
#[derive(Debug, Default)]
pub struct StickyAuth {
    matcher: Option<FlowMatcher>,
    hosts: HashMap<String, Bytes>,
}

impl StickyAuth {
    /// The addon, inactive until `stickyauth` is set.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Addon for StickyAuth {
    fn name(&self) -> String {
        OPTION.into()
    }

    /// The flow hooks only while it has a filter: without, a proxy keeps its fast path (no
    /// flow is built for requests nobody observes); the manager reads this again after every
    /// `configure`, so setting the option at run time takes effect from the next request.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if self.matcher.is_some() {
            LIFE.union(HookSet::of(&[HookKind::Request]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        loader.add_option(OptionSpec::optional(
            OPTION,
            "Set sticky auth filter. Matched against requests.",
        ));
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if !cfg.changed(OPTION) {
            return Ok(());
        }
        self.matcher = match cfg.options.str(OPTION) {
            None => None,
            Some(f) => Some(FlowMatcher::parse(f).map_err(|e| OptionsError::rejected(OPTION, e))?),
        };
        Ok(())
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        let Some(matcher) = &self.matcher else {
            return;
        };
        let host = flow.request.host.clone();
        if let Some(auth) = flow.request.headers.get_bytes("authorization") {
            self.hosts
                .insert(host.to_string(), Bytes::copy_from_slice(auth));
        } else if matcher.matches(flow)
            && let Some(auth) = self.hosts.get(host.as_str())
        {
            flow.request.headers.insert("authorization", auth.clone());
        }
    }
}
