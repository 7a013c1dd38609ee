//! The filter expressions of the search and highlight boxes: mitmproxy's
//! flow-filter language from the core ([`waylay_core::Filter`]), matched on the UI's copies.

use waylay_core::{Filter, FilterError, Flow};

/// A parsed filter.
#[derive(Debug, Clone)]
pub(crate) struct WebFilter(Filter);

/// Why an expression does not parse, and where (a byte offset).
pub(crate) type FilterParseError = FilterError;

impl WebFilter {
    /// Parses `expr`.
    pub(crate) fn parse(expr: &str) -> Result<Self, FilterParseError> {
        Filter::parse(expr).map(Self)
    }

    /// Whether `flow` matches.
    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        self.0.matches(flow)
    }
}
