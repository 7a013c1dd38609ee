//! Log output: `tracing` records to stderr, at the level `-q`, `-v` and `termlog_verbosity`
//! ask for (`RUST_LOG`, when set, wins).

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// The level for a `termlog_verbosity` value (mitmproxy's names; `alert` is shown as info).
pub(crate) fn level_of(verbosity: &str, verbose: u8) -> LevelFilter {
    if verbose >= 2 {
        return LevelFilter::TRACE;
    }
    match verbosity {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        _ => LevelFilter::INFO,
    }
}

/// Installs the stderr subscriber. Records are written by the thread that emits them, one
/// line each.
pub(crate) fn init(level: LevelFilter) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::default().add_directive(level.into()),
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // Addons' `log` hook gets the records stderr gets (from the proxy's start on).
    let addons = waylay_core::log::GlobalAddonLogLayer::new(tracing::Level::TRACE);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(addons)
        .try_init();
}

/// A record made before the subscriber was installed: level, message, and the `script` it
/// came from.
type Held = (tracing::Level, String, Option<String>);

/// Records made while `held` ran, to be written once the subscriber is installed
/// ([`Early::write`]).
#[derive(Debug, Default)]
pub(crate) struct Early(std::sync::Arc<std::sync::Mutex<Vec<Held>>>);

impl Early {
    /// Writes the held records through the installed subscriber, in order (its level
    /// filter applies as to any record).
    pub(crate) fn write(self) {
        let records = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for (level, message, script) in records {
            let script = script.as_deref().unwrap_or("");
            match level {
                tracing::Level::ERROR => tracing::error!(target: "script", script, "{message}"),
                tracing::Level::WARN => tracing::warn!(target: "script", script, "{message}"),
                tracing::Level::INFO => tracing::info!(target: "script", script, "{message}"),
                tracing::Level::DEBUG => tracing::debug!(target: "script", script, "{message}"),
                tracing::Level::TRACE => tracing::trace!(target: "script", script, "{message}"),
            }
        }
    }
}

/// Runs `f` with its log records held rather than lost: scripts run their module and
/// `load` before the options that choose the log level are known, and mitmproxy shows what
/// they log then.
pub(crate) fn held<T>(f: impl FnOnce() -> T) -> (T, Early) {
    use tracing_subscriber::layer::SubscriberExt;
    let early = Early::default();
    let layer = HoldLayer(early.0.clone());
    let out = tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
    (out, early)
}

struct HoldLayer(std::sync::Arc<std::sync::Mutex<Vec<Held>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HoldLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            script: Option<String>,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                match field.name() {
                    "message" => self.message = value.to_owned(),
                    "script" => self.script = Some(value.to_owned()),
                    _ => {}
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "script" => self.script = Some(format!("{value:?}")),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Ok(mut held) = self.0.lock() {
            held.push((*event.metadata().level(), fields.message, fields.script));
        }
    }
}
