//! `modify_headers` (`-H`): set, replace or remove headers, as mitmproxy's modifyheaders.

use bytes::Bytes;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{Addon, Headers, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError};

use crate::matcher::FlowMatcher;
use crate::spec::{split_spec, unescape};
use crate::value::Replacement;

const OPTION: &str = "modify_headers";

/// One `[/filter]/name/[@]value` rule.
#[derive(Debug, Clone)]
struct Rule {
    matcher: FlowMatcher,
    name: String,
    value: Replacement,
}

fn parse_rule(option: &str) -> Result<Rule, String> {
    let raw = split_spec(option)?;
    let matcher = FlowMatcher::parse_opt(raw.filter)?;
    let name = unescape(raw.subject)?;
    let name = String::from_utf8(name)
        .ok()
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;\\\"/[]?={}".contains(&b))
        })
        .ok_or_else(|| format!("{:?} is not a header name", raw.subject))?;
    let value = Replacement::parse(raw.replacement)?;
    Ok(Rule {
        matcher,
        name,
        value,
    })
}

/// mitmproxy's `modify_headers` addon: each rule `[SEP filter] SEP name SEP [@]value` (any
/// separator character) removes the header `name` from matching requests and responses and,
/// when the value is not empty, sets it to `value` (`@path` reads the value from a file,
/// each time it is used). Rules run at the *headers* hooks (`requestheaders` and
/// `responseheaders`), so they apply to streamed messages too; all filters are matched
/// against the unmodified flow before any rule changes it.
///
/// ```text
/// waylay -H "/~q/Host/example.org" -H "|User-Agent|" -H ":~s:X-Token:@token.txt"
/// ```
#[derive(Debug, Default)]
pub struct ModifyHeaders {
    rules: Vec<Rule>,
}

impl ModifyHeaders {
    /// The addon, with no rules until `modify_headers` is set.
    pub fn new() -> Self {
        Self::default()
    }

    async fn run(&self, flow: &mut HttpFlow, response: bool) {
        let matched: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.matcher.matches(flow))
            .collect();
        if matched.is_empty() {
            return;
        }
        let mut values: Vec<(&str, Bytes)> = Vec::with_capacity(matched.len());
        for r in &matched {
            match r.value.read().await {
                Ok(v) => values.push((&r.name, v)),
                Err(e) => tracing::warn!("modify_headers: {e}"),
            }
        }
        let headers: &mut Headers = if response {
            match flow.response.as_mut() {
                Some(r) => &mut r.headers,
                None => return,
            }
        } else {
            &mut flow.request.headers
        };
        for r in &matched {
            headers.remove(&r.name);
        }
        for (name, v) in values {
            if !v.is_empty() {
                headers.append(name, v);
            }
        }
    }
}

impl Addon for ModifyHeaders {
    fn name(&self) -> String {
        OPTION.into()
    }

    /// The flow hooks only while it has rules: without, a proxy keeps its fast path (no
    /// flow is built for requests nobody observes); the manager reads this again after every
    /// `configure`, so setting the option at run time takes effect from the next request.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if !self.rules.is_empty() {
            LIFE.union(HookSet::of(&[
                HookKind::RequestHeaders,
                HookKind::ResponseHeaders,
            ]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        loader.add_option(OptionSpec::new(
            OPTION,
            OptionValue::Seq(Vec::new()),
            "Header modify pattern of the form \"[/flow-filter]/header-name/[@]header-value\", where the separator can be any character. The @ reads the value from a file; an empty value removes the header.",
        ));
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if let Some(rules) = crate::spec::parse_rules(cfg, OPTION, parse_rule)? {
            self.rules = rules;
        }
        Ok(())
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if flow.response.is_some() || flow.error.is_some() || !flow.live {
            return;
        }
        self.run(flow, false).await;
    }

    async fn response_headers(&mut self, flow: &mut HttpFlow) {
        if flow.error.is_some() || !flow.live {
            return;
        }
        self.run(flow, true).await;
    }
}
