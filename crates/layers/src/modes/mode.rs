//! The proxy modes waylay knows (mitmproxy's `--mode`).

/// How a listener's clients reach waylay, and so how the front learns where they want to
/// go. Only `regular` exists yet; `reverse:URL`, `upstream:URL`, `socks5` and `transparent`
/// are next, each with its front in `modes/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An HTTP proxy: absolute-form requests and CONNECT.
    Regular,
}

impl Mode {
    /// The mode's name, as in mitmproxy's mode specs and `Client::proxy_mode`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Regular => "regular",
        }
    }
}
