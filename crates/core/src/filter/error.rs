//! Why a filter expression was refused.

/// A filter expression that does not parse: what was expected and where (a byte offset
/// into the expression).
///
/// Displayed as one line, for example `expected a regex after ~d at 3`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at {position}")]
pub struct FilterError {
    /// Byte offset into the expression where the problem was found.
    pub position: usize,
    /// What was wrong, without the position.
    pub message: String,
}

impl FilterError {
    pub(super) fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}
