//! The filter part of an addon's option, parsed once in `configure`.

use waylay_core::{Filter, HttpFlow};

/// Which flows a rule applies to: a filter expression, or every flow when the option has
/// none.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowMatcher(Option<Filter>);

impl FlowMatcher {
    /// Every flow.
    pub(crate) fn all() -> Self {
        Self(None)
    }

    /// Parses the filter text of an option; the error is one line quoting it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Filter::parse(text).map(|f| Self(Some(f))).map_err(|e| {
            format!("invalid filter expression {text:?}: {e}").replace(['\n', '\r'], " ")
        })
    }

    /// `parse` for an optional filter part.
    pub(crate) fn parse_opt(text: Option<&str>) -> Result<Self, String> {
        text.map_or_else(|| Ok(Self::all()), Self::parse)
    }

    /// Whether the rule applies to `flow`.
    pub(crate) fn matches(&self, flow: &HttpFlow) -> bool {
        self.0.as_ref().is_none_or(|f| f.matches(flow))
    }
}
