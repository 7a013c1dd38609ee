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
