//! The addon: records flows for the UI, takes the intercept handle of every flow an earlier
//! addon intercepted (the `intercept` filter and breakpoint rules are addons of
//! `waylay-addons`: [`waylay_addons::Intercept`], [`waylay_addons::Breakpoints`]), and
//! refuses requests sent through the proxy to the UI itself.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use waylay_addons::BREAKPOINT_METADATA;
use waylay_core::hooks::{Configure, Loader, LogEntry, LogLevel, ServerConnectionHookData};
use waylay_core::{
    Addon, Flow, HookKind, HookSet, HttpFlow, OptionValue, OptionsError, Response, TcpFlow,
};

use crate::config::WebConfig;
use crate::guard::targets_ui;
use crate::state::Shared;

/// The web UI's addon. Made by [`crate::WebUi::bind`]; register it last, so that the UI shows
/// flows as the other addons left them.
#[derive(Debug)]
pub struct WebAddon {
    pub(crate) shared: Arc<Shared>,
}

const HOOKS: HookSet = HookSet::of(&[
    HookKind::Configure,
    HookKind::Log,
    HookKind::HttpConnect,
    HookKind::RequestHeaders,
    HookKind::Request,
    HookKind::Response,
    HookKind::Error,
    HookKind::ServerConnect,
    HookKind::WebsocketStart,
    HookKind::WebsocketMessage,
    HookKind::WebsocketEnd,
    HookKind::WebsocketError,
    HookKind::TcpStart,
    HookKind::TcpMessage,
    HookKind::TcpEnd,
    HookKind::TcpError,
]);

fn refusal() -> Response {
    Response::make(
        403,
        "waylay: the web UI cannot be reached through the proxy\n",
        [("content-type", "text/plain; charset=utf-8")],
    )
}

impl WebAddon {
    /// Refuses `flow` when it is addressed to the UI; `true` if it did.
    fn guard(&self, flow: &mut HttpFlow) -> bool {
        if targets_ui(&flow.request.host, flow.request.port, self.shared.ui_addr) {
            tracing::warn!(client.addr = %flow.client.peername, "refused a request through the proxy to the web UI ({}:{})", flow.request.host, flow.request.port);
            flow.response = Some(refusal());
            return true;
        }
        false
    }

    fn record_http(&self, flow: &mut HttpFlow, may_intercept: bool, finished: bool) {
        if self.shared.take_kill(flow.id) && !finished {
            flow.kill();
        }
        if !finished && flow.live && flow.existing_kill_switch().is_none() {
            self.shared.watch_kill(flow.id, flow.kill_switch());
        }
        let held = if may_intercept && !flow.killed() {
            flow.intercept_state().handle()
        } else {
            None
        };
        let mut copy = Box::new(flow.clone());
        if finished {
            // The layer clears `live` after the last hook; the UI's copy is final now.
            copy.live = false;
        }
        self.shared.record(Flow::Http(copy), held, finished);
    }

    /// Says in the event log that a breakpoint rule edited `flow` at `phase` (the
    /// `breakpoints` addon leaves the rule in the flow's metadata).
    fn rule_event(&self, flow: &HttpFlow, phase: &str) {
        let Some(rule) = flow
            .metadata
            .get(BREAKPOINT_METADATA)
            .and_then(|m| m.get(phase))
            .and_then(Value::as_str)
        else {
            return;
        };
        let held = if flow.intercepted() { ", held" } else { "" };
        self.shared.event(
            "info",
            format!(
                "breakpoint rule {rule} applied to the {phase} of {} {}{held}",
                flow.request.method,
                flow.request.pretty_url()
            ),
        );
    }

    fn record_tcp(&self, flow: &mut TcpFlow, may_intercept: bool, finished: bool) {
        if self.shared.take_kill(flow.id) && !finished {
            flow.kill();
        }
        if !finished && flow.live && flow.existing_kill_switch().is_none() {
            self.shared.watch_kill(flow.id, flow.kill_switch());
        }
        let held = if may_intercept && !flow.killed() {
            flow.intercept_state().handle()
        } else {
            None
        };
        let mut copy = Box::new(flow.clone());
        if finished {
            copy.live = false;
        }
        self.shared.record(Flow::Tcp(copy), held, finished);
    }
}

/// Whether the UI's copy is refreshed at the `n`th message of a connection: each of the
/// first 64, then at powers of two. Every refresh copies the messages so far, so refreshing
/// on each message would cost the square of a long connection's length; the end of the
/// connection records them all.
fn sample(n: usize) -> bool {
    n <= 64 || n.is_power_of_two()
}

fn option_json(v: &OptionValue) -> (&'static str, Value) {
    match v {
        OptionValue::Bool(b) => ("bool", json!(b)),
        OptionValue::Int(i) => ("int", json!(i)),
        OptionValue::Str(s) => ("str", json!(s)),
        OptionValue::OptStr(s) => ("optional str", json!(s)),
        OptionValue::OptInt(i) => ("optional int", json!(i)),
        OptionValue::Seq(v) => ("sequence of str", json!(v)),
    }
}

impl Addon for WebAddon {
    fn name(&self) -> String {
        "web".into()
    }

    fn hooks(&self) -> HookSet {
        HOOKS
    }

    async fn load(&mut self, loader: &mut Loader) {
        // The manager the addon is added to: options set in the UI and replays go through it.
        if let Some(m) = loader.manager() {
            let _ = self.shared.manager.set(m.clone());
        }
        for spec in WebConfig::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        // Shown as the `intercept` addon applies it: setting `intercept` turns
        // `intercept_active` on (or off when cleared); `intercept_active` alone toggles it.
        let expr = cfg.options.str("intercept").unwrap_or("");
        let active = if cfg.updated.contains("intercept") {
            !expr.trim().is_empty()
        } else {
            cfg.options.bool("intercept_active")
        };
        let mut all = Map::new();
        for spec in cfg.options.specs() {
            let value = cfg.options.get(&spec.name).unwrap_or(&spec.default);
            let (ty, mut value) = option_json(value);
            // The UI's own secret is never sent back to a browser.
            if spec.name == "web_password" && value != json!("") {
                value = json!("(set)");
            }
            if spec.name == "intercept_active" {
                value = json!(active);
            }
            all.insert(
                spec.name.clone(),
                json!({"type": ty, "value": value, "default": option_json(&spec.default).1, "help": spec.help, "choices": spec.choices}),
            );
        }
        let all = Value::Object(all);
        self.shared.options_changed(all);
        Ok(())
    }

    async fn log(&mut self, entry: &mut LogEntry) {
        let level = match entry.level {
            LogLevel::Trace | LogLevel::Debug => return,
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        self.shared.event(level, entry.message.clone());
    }

    async fn http_connect(&mut self, flow: &mut HttpFlow) {
        self.guard(flow);
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        self.guard(flow);
    }

    async fn server_connect(&mut self, data: &mut ServerConnectionHookData) {
        let a = &data.server.address;
        if targets_ui(&a.host, a.port, self.shared.ui_addr) {
            data.server.error = Some("the web UI cannot be reached through the proxy".into());
        }
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.rule_event(flow, "request");
        let answered = flow.response.is_some();
        self.record_http(flow, !answered, answered && !flow.live);
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        // Killed here (asked while the flow waited for its server): the client gets no answer.
        if self.shared.take_kill(flow.id) {
            flow.kill();
        }
        self.rule_event(flow, "response");
        self.record_http(flow, true, true);
    }

    async fn error(&mut self, flow: &mut HttpFlow) {
        self.shared.take_kill(flow.id);
        self.record_http(flow, false, true);
    }

    async fn websocket_start(&mut self, flow: &mut HttpFlow) {
        // The upgrade's `response` recorded the exchange as finished (its switch forgotten):
        // the relay that starts now is killable again.
        self.shared.watch_kill(flow.id, flow.kill_switch());
        self.record_http(flow, false, false);
    }

    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        let n = flow.websocket.as_ref().map_or(0, |w| w.messages.len());
        // A message an earlier addon intercepted is held (the relay waits for its release,
        // which may carry an edit of it); one to kill ends the connection. Both are always
        // recorded.
        let due = sample(n) || flow.intercepted() || self.shared.kill_pending(flow.id);
        if due {
            self.record_http(flow, true, false);
        }
    }

    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        self.shared.take_kill(flow.id);
        self.record_http(flow, false, true);
    }

    async fn websocket_error(&mut self, flow: &mut HttpFlow) {
        self.shared.take_kill(flow.id);
        self.record_http(flow, false, true);
    }

    async fn tcp_start(&mut self, flow: &mut TcpFlow) {
        self.record_tcp(flow, false, false);
    }

    async fn tcp_message(&mut self, flow: &mut TcpFlow) {
        // A message held (by the `intercept` addon), or one to kill, is always recorded.
        let due = sample(flow.messages.len())
            || flow.intercept_state().is_intercepted()
            || self.shared.kill_pending(flow.id);
        if due {
            self.record_tcp(flow, true, false);
        }
    }

    async fn tcp_end(&mut self, flow: &mut TcpFlow) {
        self.shared.take_kill(flow.id);
        self.record_tcp(flow, false, true);
    }

    async fn tcp_error(&mut self, flow: &mut TcpFlow) {
        self.shared.take_kill(flow.id);
        self.record_tcp(flow, false, true);
    }
}
