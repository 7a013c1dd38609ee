//! `modify_body` (`-B`): regex replacements in request and response bodies, as mitmproxy's
//! modifybody.

use regex::bytes::{NoExpand, Regex};
use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError};

use crate::matcher::FlowMatcher;
use crate::spec::{regex_error, split_spec, unescape};
use crate::value::Replacement;

const OPTION: &str = "modify_body";

/// One `[/filter]/regex/[@]replacement` rule.
#[derive(Debug, Clone)]
struct Rule {
    matcher: FlowMatcher,
    regex: Regex,
    replacement: Replacement,
}

fn parse_rule(option: &str) -> Result<Rule, String> {
    let raw = split_spec(option)?;
    let matcher = FlowMatcher::parse_opt(raw.filter)?;
    let pattern = String::from_utf8(unescape(raw.subject)?)
        .map_err(|_| format!("regex {:?} is not UTF-8 once unescaped", raw.subject))?;
    // mitmproxy matches with re.DOTALL.
    let regex = Regex::new(&format!("(?s){pattern}")).map_err(|e| {
        format!(
            "invalid regular expression {:?} ({})",
            raw.subject,
            regex_error(&e)
        )
    })?;
    let replacement = Replacement::parse(raw.replacement)?;
    Ok(Rule {
        matcher,
        regex,
        replacement,
    })
}

/// mitmproxy's `modify_body` addon: each rule `[SEP filter] SEP regex SEP [@]replacement`
/// (any separator character) replaces every match of `regex` in the decoded body of matching
/// requests (at `request`) and responses (at `response`) with `replacement`, taken
/// literally (`@path` reads it from a file each time). `.` matches newlines, as mitmproxy's
/// `re.DOTALL`. The body is re-encoded with its `Content-Encoding`. Streamed bodies (larger
/// than `stream_large_bodies`) are never in memory and are not modified.
///
/// Patterns use Rust's `regex` syntax, which is Python's without look-around and
/// backreferences.
#[derive(Debug, Default)]
pub struct ModifyBody {
    rules: Vec<Rule>,
}

impl ModifyBody {
    /// The addon, with no rules until `modify_body` is set.
    pub fn new() -> Self {
        Self::default()
    }

    async fn run(&self, flow: &mut HttpFlow) {
        for rule in &self.rules {
            if !rule.matcher.matches(flow) {
                continue;
            }
            let replacement = match rule.replacement.read().await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!("modify_body: {e}");
                    continue;
                }
            };
            let message = match flow.response.as_mut() {
                Some(r) => &mut r.message,
                None => &mut flow.request.message,
            };
            if message.raw_content.is_none() {
                continue;
            }
            let Ok(content) = message.content() else {
                tracing::warn!("modify_body: cannot decode the body; left as it is");
                continue;
            };
            let new = rule
                .regex
                .replace_all(&content, NoExpand(&replacement))
                .into_owned();
            if new != content {
                message.set_content(new);
            }
        }
    }
}

impl Addon for ModifyBody {
    fn name(&self) -> String {
        OPTION.into()
    }

    /// The flow hooks only while it has rules: without, a proxy keeps its fast path (no
    /// flow is built for requests nobody observes); the manager reads this again after every
    /// `configure`, so setting the option at run time takes effect from the next request.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if !self.rules.is_empty() {
            LIFE.union(HookSet::of(&[HookKind::Request, HookKind::Response]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        loader.add_option(OptionSpec::new(
            OPTION,
            OptionValue::Seq(Vec::new()),
            "Replacement pattern of the form \"[/flow-filter]/regex/[@]replacement\", where the separator can be any character. The @ reads the replacement from a file.",
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
        self.run(flow).await;
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        if flow.error.is_some() || !flow.live {
            return;
        }
        self.run(flow).await;
    }
}
