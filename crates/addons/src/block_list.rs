//! `block_list`: answer matching requests with an empty response, as mitmproxy's blocklist.

use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError, Response};

use crate::matcher::FlowMatcher;

const OPTION: &str = "block_list";

/// mitmproxy's non-standard status meaning "close the connection without a response".
pub const NO_RESPONSE: u16 = 444;

/// One `/filter/status` rule.
#[derive(Debug, Clone)]
struct Rule {
    matcher: FlowMatcher,
    status: u16,
}

fn parse_rule(option: &str) -> Result<Rule, String> {
    let mut chars = option.chars();
    let Some(sep) = chars.next() else {
        return Err("empty; expected SEP filter SEP status".into());
    };
    let parts: Vec<&str> = chars.as_str().splitn(3, sep).collect();
    let [filter, status] = parts.as_slice() else {
        return Err(format!(
            "expected 2 parts separated by {sep:?} (the first character), found {}",
            parts.len()
        ));
    };
    let status = status
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| format!("invalid HTTP status code {status:?}"))?;
    Ok(Rule {
        matcher: FlowMatcher::parse(filter)?,
        status,
    })
}

/// mitmproxy's `block_list` addon: each rule `SEP filter SEP status` (any separator
/// character) answers matching requests at `request` with an empty response of that status,
/// never forwarding them; status 444 closes the connection without any response. Blocked
/// flows carry `blocklisted: true` in their metadata.
///
/// ```text
/// waylay --set block_list=':~d ads.example:404' --set block_list='|~u /track|444'
/// ```
#[derive(Debug, Default)]
pub struct BlockList {
    rules: Vec<Rule>,
}

impl BlockList {
    /// The addon, with no rules until `block_list` is set.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Addon for BlockList {
    fn name(&self) -> String {
        OPTION.into()
    }

    /// The flow hooks only while it has rules: without, a proxy keeps its fast path (no
    /// flow is built for requests nobody observes); the manager reads this again after every
    /// `configure`, so setting the option at run time takes effect from the next request.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if !self.rules.is_empty() {
            LIFE.union(HookSet::of(&[HookKind::Request]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        loader.add_option(OptionSpec::new(
            OPTION,
            OptionValue::Seq(Vec::new()),
            "Block matching requests and return an empty response with the given status: \"/flow-filter/status-code\", where the separator can be any character; 444 closes the connection without a response.",
        ));
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if let Some(rules) = crate::spec::parse_rules(cfg, OPTION, parse_rule)? {
            self.rules = rules;
        }
        Ok(())
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        if flow.response.is_some() || flow.error.is_some() || !flow.live {
            return;
        }
        // As mitmproxy, the last matching rule decides.
        let Some(rule) = self.rules.iter().rev().find(|r| r.matcher.matches(flow)) else {
            return;
        };
        flow.metadata
            .insert("blocklisted".into(), serde_json::Value::Bool(true));
        if rule.status == NO_RESPONSE {
            flow.kill();
        } else {
            flow.response = Some(Response::make(rule.status, "", [("server", "waylay")]));
        }
    }
}
