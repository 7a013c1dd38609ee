//! `map_remote` (`-M`): send matching requests to another URL, as mitmproxy's mapremote.

use regex::Regex;
use waylay_core::flow::split_host_port;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError, Request};

use crate::matcher::FlowMatcher;
use crate::spec::{Template, regex_error, split_spec};

const OPTION: &str = "map_remote";

/// One `[/filter]/url-regex/replacement` rule.
#[derive(Debug, Clone)]
struct Rule {
    matcher: FlowMatcher,
    regex: Regex,
    template: Template,
}

fn parse_rule(option: &str) -> Result<Rule, String> {
    let raw = split_spec(option)?;
    let matcher = FlowMatcher::parse_opt(raw.filter)?;
    let regex = Regex::new(raw.subject).map_err(|e| {
        format!(
            "invalid regular expression {:?} ({})",
            raw.subject,
            regex_error(&e)
        )
    })?;
    let template = Template::parse(raw.replacement, &regex)?;
    Ok(Rule {
        matcher,
        regex,
        template,
    })
}

/// Points `r` at `url` (scheme, host, port, path), keeping the `Host` header true.
fn set_url(r: &mut Request, url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{url:?}: scheme must be http or https"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if scheme == "https" { 443 } else { 80 };
    let (host, port) =
        split_host_port(authority, default).ok_or_else(|| format!("{url:?}: bad host or port"))?;
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let host_header = if port == default {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        }
    } else {
        authority.to_owned()
    };
    r.scheme = scheme.into();
    r.host = host;
    r.port = port;
    r.path = path.into();
    if !r.authority.is_empty() {
        r.authority = host_header.as_str().into();
    }
    if r.headers.contains("host") {
        r.headers.insert("host", host_header.clone());
    }
    if r.headers.contains(":authority") {
        r.headers.insert(":authority", host_header);
    }
    Ok(())
}

/// mitmproxy's `map_remote` addon: for each rule `[SEP filter] SEP url-regex SEP
/// replacement` (any separator character) whose filter matches, every match of `url-regex`
/// in the request's URL (built from the `Host` header, as mitmproxy's `pretty_url`) is
/// replaced, and the request goes to the resulting URL: scheme, host, port and path, with
/// the `Host` header following. Replacements take Python's group references: `\1`,
/// `\g<1>`, `\g<name>`. Runs at `request`; rules apply in order, each to the URL the
/// previous left.
///
/// ```text
/// waylay -M "|https://example.com/(.*)|http://127.0.0.1:8000/\1"
/// ```
#[derive(Debug, Default)]
pub struct MapRemote {
    rules: Vec<Rule>,
}

impl MapRemote {
    /// The addon, with no rules until `map_remote` is set.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Addon for MapRemote {
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
            "Map remote resources to another remote URL using a pattern of the form \"[/flow-filter]/url-regex/replacement\", where the separator can be any character; \\1 and \\g<name> in the replacement refer to groups.",
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
        for rule in &self.rules {
            if !rule.matcher.matches(flow) {
                continue;
            }
            let url = flow.request.pretty_url();
            let new = rule.template.replace_all(&rule.regex, &url);
            if new != url
                && let Err(e) = set_url(&mut flow.request, &new)
            {
                tracing::warn!("map_remote: {e}; {url} left as it is");
            }
        }
    }
}
