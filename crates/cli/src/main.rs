//! `waylay`: the mitmdump of waylay. Parses mitmdump's flags, validates every option before
//! anything starts, runs the proxy with the dumper, and maps failures to one line on stderr
//! and an exit code: 2 for a bad flag or option value, 1 for a failure at run time.

mod args;
mod logging;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use waylay::web::{WebAddon, WebConfig, WebUi};
use waylay::{AddError, Dumper, Options, OptionsError, Proxy, ProxyError};

use crate::args::{Cli, WebCli};

/// How `waylay` failed.
enum Failure {
    /// A bad flag or option value (exit code 2).
    Usage(String),
    /// The proxy could not start or failed while running (exit code 1).
    Runtime(anyhow::Error),
}

impl From<OptionsError> for Failure {
    fn from(e: OptionsError) -> Self {
        Self::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `waylay web ...`: the proxy with its web UI (a subcommand only in name: `waylay`'s
    // trailing filter expression would swallow a clap subcommand).
    let web = argv.get(1).is_some_and(|a| a == "web");
    let result = if web {
        argv.remove(0);
        argv[0] = "waylay web".into();
        match WebCli::try_parse_from(argv) {
            Ok(cli) => run_web(&cli),
            Err(e) if !e.use_stderr() => {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(&args::one_line(&e), 2),
        }
    } else {
        match Cli::try_parse_from(argv) {
            Ok(cli) => run(&cli),
            Err(e) if !e.use_stderr() => {
                // --help and --version.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(&args::one_line(&e), 2),
        }
    };
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => fail(&msg, 2),
        Err(Failure::Runtime(e)) => fail(&chain(&e), 1),
    }
}

/// Prints `waylay: error: <msg>` as one line on stderr.
fn fail(msg: &str, code: u8) -> ExitCode {
    let msg = msg.replace(['\n', '\r'], " ");
    let _ = writeln!(std::io::stderr().lock(), "waylay: error: {msg}");
    ExitCode::from(code)
}

/// The error and its causes on one line, `a: b: c`, skipping a cause whose text the
/// message before it already includes (many errors print their source themselves).
fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The options the flags ask for, checked as the proxy and the dumper will check them.
fn options(cli: &Cli) -> Result<Options, Failure> {
    options_from(&cli.option_specs(), false)
}

fn options_from(specs: &[String], web: bool) -> Result<Options, Failure> {
    let mut opts = Options::new();
    for spec in Dumper::option_specs() {
        opts.add(spec)?;
    }
    if web {
        for spec in WebConfig::option_specs() {
            opts.add(spec)?;
        }
    }
    opts.set_specs(specs)?;
    let port = opts.int("listen_port");
    if !(0..=65535).contains(&port) {
        return Err(Failure::Usage(format!(
            "option listen_port: expected 0 to 65535, got {port}"
        )));
    }
    Dumper::check_options(&opts)?;
    Ok(opts)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let opts = options(cli)?;
    if cli.options {
        print!("{}", opts.listing());
        return Ok(());
    }
    logging::init(logging::level_of(
        opts.str("termlog_verbosity").unwrap_or("info"),
        cli.verbose,
    ));
    run_proxy(opts, None)
}

/// `waylay web`: binds the UI, prints its URL (with the token), and runs the proxy with the
/// UI's addon registered last.
fn run_web(cli: &WebCli) -> Result<(), Failure> {
    let opts = options_from(&cli.option_specs(), true)?;
    if cli.proxy.options {
        print!("{}", opts.listing());
        return Ok(());
    }
    logging::init(logging::level_of(
        opts.str("termlog_verbosity").unwrap_or("info"),
        cli.proxy.verbose,
    ));
    let port = opts.int("web_port");
    if !(0..=65535).contains(&port) {
        return Err(Failure::Usage(format!(
            "option web_port: expected 0 to 65535, got {port}"
        )));
    }
    let (addon, ui) = WebUi::bind(WebConfig::from_options(&opts))
        .map_err(|e| Failure::Runtime(anyhow::Error::new(e)))?;
    println!("Web server listening at {}", ui.url());
    let _ = std::io::stdout().flush();
    if opts.bool("web_open_browser") {
        // Best effort, as mitmweb: no browser is not an error.
        let _ = std::process::Command::new("xdg-open").arg(ui.url()).spawn();
    }
    let result = run_proxy(opts, Some(addon));
    drop(ui);
    result
}

fn run_proxy(opts: Options, web: Option<WebAddon>) -> Result<(), Failure> {
    let host = opts.str("listen_host").unwrap_or("127.0.0.1");
    let listen = if host.contains(':') {
        format!("[{host}]:{}", opts.int("listen_port"))
    } else {
        format!("{host}:{}", opts.int("listen_port"))
    };
    let mut builder = Proxy::builder().options(opts.clone()).listen(&listen);
    // With nothing to print the dumper is not registered at all, so `-q` costs no hook.
    if opts.int("flow_detail") > 0 {
        builder = builder.addon(Dumper::stdout());
    }
    if let Some(web) = web {
        builder = builder.addon(web);
    }
    builder.run().map_err(|e| match e {
        ProxyError::Options(e) => Failure::Usage(e.to_string()),
        ProxyError::Addon(e @ AddError::Options { .. }) => Failure::Usage(e.to_string()),
        other => Failure::Runtime(anyhow::Error::new(other)),
    })
}
