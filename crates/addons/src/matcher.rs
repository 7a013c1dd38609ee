//! The filter part of an addon's option, parsed once in `configure`.

use waylay_core::HttpFlow;

/// Which flows a rule applies to: a filter expression, or every flow when the option has
/// none. Filter expressions are refused until the filter language lands, never ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct FlowMatcher;

impl FlowMatcher {
    /// Every flow.
    pub(crate) fn all() -> Self {
        Self
    }

    /// Parses the filter text of an option; the error is one line quoting it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Err(format!(
            "filter expressions are not supported yet, cannot use {text:?}"
        ))
    }

    /// `parse` for an optional filter part.
    pub(crate) fn parse_opt(text: Option<&str>) -> Result<Self, String> {
        text.map_or_else(|| Ok(Self::all()), Self::parse)
    }

    /// Whether the rule applies to `flow`.
    pub(crate) fn matches(&self, flow: &HttpFlow) -> bool {
        let _ = flow;
        true
    }
}
