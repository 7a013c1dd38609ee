//! What `waylay web` is configured with, and the options it declares under mitmweb's names.

use std::path::PathBuf;

use waylay_core::{OptionSpec, OptionValue, Options};

/// How the web UI is set up. [`WebConfig::from_options`] reads it from the `web_*` options.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Address to bind the UI to (`web_host`, default `127.0.0.1`).
    pub host: String,
    /// Port of the UI (`web_port`, default 8081; 0 picks a free one).
    pub port: u16,
    /// `web_password`: a plain password, or an argon2 PHC hash (`$argon2id$...`). When set, it
    /// replaces the random token.
    pub password: Option<String>,
    /// The access token; `None` makes a random one (tests pass a fixed one).
    pub token: Option<String>,
    /// How many recent flow summaries stay in memory.
    pub ring: usize,
    /// Body bytes the in-memory ring may hold; older bodies are then read from the store.
    pub ring_body_bytes: usize,
    /// The SQLite file; `None` makes a temporary one removed at exit.
    pub store_path: Option<PathBuf>,
    /// Flows waiting for the store's writer thread at most; beyond that a flow is not stored.
    pub store_queue: usize,
    /// Body bytes waiting for the writer at most; beyond that bodies are not stored.
    pub store_queue_bytes: usize,
    /// Updates buffered for each browser at most; a browser further behind gets
    /// `flows/reset` and refetches.
    pub client_queue: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8081,
            password: None,
            token: None,
            ring: 10_000,
            ring_body_bytes: 32 << 20,
            store_path: None,
            store_queue: 4096,
            store_queue_bytes: 64 << 20,
            client_queue: 1024,
        }
    }
}

impl WebConfig {
    /// The options `waylay web` declares (mitmweb's names, plus `web_store`).
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new(
                "web_host",
                OptionValue::Str("127.0.0.1".into()),
                "Web UI host.",
            ),
            OptionSpec::new("web_port", OptionValue::Int(8081), "Web UI port."),
            OptionSpec::new(
                "web_password",
                OptionValue::Str(String::new()),
                "Password to protect the web UI: plain, or an argon2 hash starting with $. Empty: a random token printed at start.",
            ),
            OptionSpec::new(
                "web_open_browser",
                OptionValue::Bool(false),
                "Start a browser on the web UI (off by default in waylay).",
            ),
            OptionSpec::new(
                "web_store",
                OptionValue::Str(String::new()),
                "SQLite file keeping every flow the web UI saw. Empty: a temporary file removed at exit.",
            ),
        ]
    }

    /// The configuration the `web_*` options describe.
    pub fn from_options(o: &Options) -> Self {
        let nonempty = |n: &str| o.str(n).filter(|s| !s.is_empty()).map(str::to_owned);
        Self {
            host: nonempty("web_host").unwrap_or_else(|| "127.0.0.1".into()),
            port: u16::try_from(o.int("web_port")).unwrap_or(8081),
            password: nonempty("web_password"),
            store_path: nonempty("web_store").map(PathBuf::from),
            ..Self::default()
        }
    }
}
