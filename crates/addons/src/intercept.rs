//! `intercept`: flows the intercept filter matches wait until they are resumed or killed, as
//! mitmproxy's default `intercept` addon.

use waylay_core::hooks::Configure;
use waylay_core::{
    Addon, Filter, FlowRef, HookKind, HookSet, HttpFlow, Options, OptionsError, TcpFlow,
};

/// mitmproxy's `intercept` addon: while `intercept_active` is on, every flow the
/// `intercept` filter matches is marked intercepted at `request`, `response`,
/// `websocket_message` and `tcp_message` (replays never), and the layer holds it after the
/// hook until someone resumes or kills it: the web UI, or any code holding the flow's
/// [`InterceptHandle`](waylay_core::flow::InterceptHandle) (take it in a later addon with
/// `flow.intercept_state().handle()`). Setting `intercept` turns `intercept_active` on (or
/// off when cleared); setting `intercept_active` alone toggles it.
///
/// `waylay::Proxy::builder()` registers it, so a custom proxy gets it; it handles flow hooks
/// only while an active filter is set.
#[derive(Debug, Default)]
pub struct Intercept {
    filter: Option<Filter>,
    active: bool,
}

impl Intercept {
    /// The addon for `options`.
    pub fn from_options(options: &Options) -> Self {
        let expr = options.str("intercept").unwrap_or("");
        let filter = (!expr.trim().is_empty())
            .then(|| Filter::parse(expr).ok())
            .flatten();
        // As `configure` at start: a filter set turns interception on.
        Self {
            active: filter.is_some(),
            filter,
        }
    }

    fn wants<'a>(&self, flow: impl Into<FlowRef<'a>>) -> bool {
        self.active && self.filter.as_ref().is_some_and(|f| f.matches(flow))
    }

    fn http(&self, flow: &mut HttpFlow) {
        if flow.is_replay.is_none() && !flow.killed() && !flow.intercepted() && self.wants(&*flow) {
            flow.intercept();
        }
    }
}

impl Addon for Intercept {
    fn name(&self) -> String {
        "intercept".into()
    }

    fn hooks(&self) -> HookSet {
        if self.active && self.filter.is_some() {
            HookSet::of(&[
                HookKind::Configure,
                HookKind::Request,
                HookKind::Response,
                HookKind::WebsocketMessage,
                HookKind::TcpMessage,
            ])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        let expr = cfg.options.str("intercept").unwrap_or("").to_owned();
        if cfg.changed("intercept") {
            self.filter = if expr.trim().is_empty() {
                None
            } else {
                Some(Filter::parse(&expr).map_err(|e| {
                    OptionsError::rejected(
                        "intercept",
                        format!("invalid filter expression {expr:?}: {e}")
                            .replace(['\n', '\r'], " "),
                    )
                })?)
            };
        }
        // mitmproxy sets `intercept_active` when `intercept` changes (at start too); setting
        // `intercept_active` alone toggles it.
        self.active = if cfg.changed("intercept") {
            self.filter.is_some()
        } else {
            cfg.options.bool("intercept_active")
        };
        Ok(())
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        // An answer set by an earlier addon: nothing to hold before a server.
        if flow.response.is_none() {
            self.http(flow);
        }
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        self.http(flow);
    }

    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        self.http(flow);
    }

    async fn tcp_message(&mut self, flow: &mut TcpFlow) {
        if !flow.killed() && !flow.intercept_state().is_intercepted() && self.wants(&*flow) {
            flow.intercept_state().intercept();
        }
    }
}
