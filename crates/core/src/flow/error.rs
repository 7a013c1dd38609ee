//! Flow errors: protocol or connection failures, not HTTP error statuses.

use serde::{Deserialize, Serialize};

/// What went wrong with a flow, as mitmproxy's `flow.error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowError {
    /// One-line reason.
    pub msg: String,
    /// When it happened (seconds since the Unix epoch).
    pub timestamp: f64,
}

/// The message of a flow killed by an addon or a user.
pub const KILLED_MESSAGE: &str = "Connection killed.";

impl FlowError {
    /// An error that happened now.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            timestamp: super::now(),
        }
    }

    /// Whether this error is the result of `kill()`.
    pub fn is_killed(&self) -> bool {
        self.msg == KILLED_MESSAGE
    }
}

impl std::fmt::Display for FlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}
