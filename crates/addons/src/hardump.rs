//! `hardump`: a HAR 1.2 file of the HTTP flows, written at shutdown (mitmproxy's `savehar`).

use std::io::Write;

use waylay_core::flowfile::har;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::{Addon, Filter, Flow, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError};

/// mitmproxy's `hardump` option as an addon: with `hardump=PATH` it keeps every finished
/// HTTP flow (at `response` or `error`; a WebSocket flow at its end) and writes them as one
/// HAR 1.2 document in `done`: to standard output for `-`, zlib-compressed for a path
/// ending in `.zhar`. `save_stream_filter` limits which flows are kept. As in mitmproxy, the flows are held in memory until then.
#[derive(Debug, Default)]
pub struct HarDump {
    path: Option<String>,
    filter: Option<Filter>,
    flows: Vec<Flow>,
}

impl HarDump {
    /// A HAR dumper; it keeps nothing until `hardump` is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The option it declares.
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::optional(
                "save_stream_filter",
                "Filter which flows are written to file.",
            ),
            OptionSpec::optional(
                "hardump",
                "Save a HAR file of all HTTP flows on exit (- for stdout; a .zhar path is \
             zlib-compressed). The flows are kept in memory until then.",
            ),
        ]
    }

    fn keep(&mut self, f: &HttpFlow) {
        if self.path.is_some() && self.filter.as_ref().is_none_or(|flt| flt.matches(f)) {
            self.flows.push(Flow::Http(Box::new(f.clone())));
        }
    }

    fn write(&mut self) -> Result<(), String> {
        let Some(path) = self.path.as_deref() else {
            return Ok(());
        };
        let doc = har::document(&self.flows);
        let mut text = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
        text.push(b'\n');
        if path == "-" {
            let mut out = std::io::stdout().lock();
            return out
                .write_all(&text)
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing the HAR to stdout: {e}"));
        }
        let data = if path.ends_with(".zhar") {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&text)
                .and_then(|()| z.finish())
                .map_err(|e| format!("compressing the HAR: {e}"))?
        } else {
            text
        };
        std::fs::write(path, &data).map_err(|e| format!("writing {path}: {e}"))?;
        tracing::info!(
            path,
            entries = self.flows.len(),
            "HAR file saved ({} bytes)",
            data.len()
        );
        Ok(())
    }
}

impl Addon for HarDump {
    fn name(&self) -> String {
        "savehar".into()
    }

    /// The flow hooks only while `hardump` is set: without it, a proxy keeps its flowless
    /// path. `done` always, so a path set at run time is written at shutdown. The manager
    /// reads this again after every `configure`.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if self.path.is_none() {
            return LIFE;
        }
        LIFE.union(HookSet::of(&[
            HookKind::Response,
            HookKind::Error,
            HookKind::WebsocketEnd,
            HookKind::WebsocketError,
        ]))
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if cfg.changed("save_stream_filter") {
            self.filter = cfg
                .options
                .str("save_stream_filter")
                .map(Filter::parse)
                .transpose()
                .map_err(|e| OptionsError::rejected("save_stream_filter", e.to_string()))?;
        }
        if cfg.changed("hardump") {
            self.path = cfg
                .options
                .str("hardump")
                .filter(|p| !p.is_empty())
                .map(str::to_owned);
            if self.path.is_none() {
                self.flows.clear();
            }
        }
        Ok(())
    }

    async fn done(&mut self) {
        if let Err(e) = self.write() {
            tracing::error!("hardump: {e}");
        }
        self.flows.clear();
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        if flow.websocket.is_none() {
            self.keep(flow);
        }
    }

    async fn error(&mut self, flow: &mut HttpFlow) {
        if flow.websocket.is_none() {
            self.keep(flow);
        }
    }

    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        self.keep(flow);
    }

    async fn websocket_error(&mut self, flow: &mut HttpFlow) {
        self.keep(flow);
    }
}
