//! `breakpoints`: rules that match flows with a filter and edit them automatically, then
//! let them go on or hold them for the user (the web UI's rule-based breakpoints; mitmweb
//! users ask for them in mitmproxy#7878). The syntax is on [`Breakpoints`].

mod rule;

use serde_json::{Value, json};
use waylay_core::hooks::Configure;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, Options, OptionsError};

pub use rule::RuleError;
use rule::{Action, Phase, Rule};

/// The option holding the rules.
pub const BREAKPOINTS_OPTION: &str = "breakpoints";

/// The flow metadata key a rule leaves on the flows it applied to:
/// `{"request": "<rule>", "response": "<rule>"}` (the phases it applied at).
pub const BREAKPOINT_METADATA: &str = "breakpoint_rule";

/// Checks one rule of the `breakpoints` option; the error gives a byte offset in it.
pub fn check_breakpoint_rule(text: &str) -> Result<(), RuleError> {
    Rule::parse(text).map(drop)
}

/// Rule-based breakpoints (option `breakpoints`, a list of rules): each rule
/// `[#]SEP filter SEP phase SEP action [SEP edit]...` edits the flows its filter matches at
/// its phase (`request` or `response`) and then resumes them (`resume`) or holds them
/// (`hold`: the flow is intercepted and waits until resumed or killed, in the web UI or
/// through an [`InterceptHandle`](waylay_core::flow::InterceptHandle)). A leading `#`
/// disables a rule. Every matching rule applies, in order (each matched against the flow
/// as the rules before it left it); the flow's metadata
/// `breakpoint_rule` names the last one per phase. Replays are edited but never held (as
/// mitmproxy never intercepts them).
///
/// ```text
/// waylay web --set 'breakpoints=|~d example.com|request|resume|header:X-Debug=1'
/// waylay web --set 'breakpoints=/~u api & ~s/response/hold/status:503/body:down'
/// ```
///
/// Edits: `header:Name=value`, `remove-header:Name`, `body:text`, `status:CODE` (response),
/// `method:M` and `url:URL` (request). The addon handles `request` and `response` only while
/// an enabled rule exists.
#[derive(Debug, Default)]
pub struct Breakpoints {
    rules: Vec<Rule>,
}

impl Breakpoints {
    /// The addon, with the rules in `options` (none when they do not parse: `configure`
    /// refuses them at start).
    pub fn from_options(options: &Options) -> Self {
        Self {
            rules: parse_all(options.seq(BREAKPOINTS_OPTION)).unwrap_or_default(),
        }
    }

    /// Whether an enabled rule holds flows (they then wait for someone to resume them).
    pub fn holds(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.enabled && r.action == Action::Hold)
    }

    fn run(&self, flow: &mut HttpFlow, phase: Phase) {
        let mut applied = None;
        let mut hold = false;
        for r in &self.rules {
            // Each rule sees the flow as the rules before it left it.
            if r.matches(flow, phase) && r.apply(flow) {
                applied = Some(r);
                hold |= r.action == Action::Hold;
            }
        }
        let Some(rule) = applied else { return };
        let key = match phase {
            Phase::Request => "request",
            Phase::Response => "response",
        };
        let text = rule.to_string();
        tracing::debug!(flow.id = %flow.id, "breakpoint rule {text} applied at the {key}");
        match flow.metadata.get_mut(BREAKPOINT_METADATA) {
            Some(Value::Object(m)) => {
                m.insert(key.into(), json!(text));
            }
            _ => {
                flow.metadata
                    .insert(BREAKPOINT_METADATA.into(), json!({ key: text }));
            }
        }
        if hold && flow.is_replay.is_none() && !flow.killed() {
            flow.intercept();
        }
    }
}

fn parse_all(values: &[String]) -> Result<Vec<Rule>, String> {
    values
        .iter()
        .map(|v| Rule::parse(v).map_err(|e| format!("cannot parse {v:?}: {e}")))
        .collect()
}

impl Addon for Breakpoints {
    fn name(&self) -> String {
        BREAKPOINTS_OPTION.into()
    }

    fn hooks(&self) -> HookSet {
        if self.rules.iter().any(|r| r.enabled) {
            HookSet::of(&[HookKind::Configure, HookKind::Request, HookKind::Response])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if cfg.changed(BREAKPOINTS_OPTION) {
            self.rules = parse_all(cfg.options.seq(BREAKPOINTS_OPTION))
                .map_err(|e| OptionsError::rejected(BREAKPOINTS_OPTION, e))?;
        }
        Ok(())
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        // A response set by an earlier addon answers the request: nothing goes to a server.
        if flow.response.is_some() || flow.error.is_some() {
            return;
        }
        self.run(flow, Phase::Request);
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        if flow.error.is_some() {
            return;
        }
        self.run(flow, Phase::Response);
    }
}
