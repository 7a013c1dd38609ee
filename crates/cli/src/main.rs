//! `waylay`: the mitmdump of waylay. Parses mitmdump's flags, validates every option before
//! anything starts, runs the proxy with the dumper, and maps failures to one line on stderr
//! and an exit code: 2 for a bad flag or option value, 1 for a failure at run time.

mod args;
mod logging;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use waylay::{AddError, Dumper, OptionSpec, OptionValue, Options, OptionsError, Proxy, ProxyError};

use crate::args::Cli;

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return fail(&args::one_line(&e), 2),
    };
    let result = run(&cli);
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

/// The `scripts` option (`-s`), as mitmdump names it.
fn scripts_spec() -> OptionSpec {
    OptionSpec::new(
        "scripts",
        OptionValue::Seq(Vec::new()),
        "Execute a script (a mitmproxy addon script). May be passed multiple times.",
    )
}

/// The scripts asked for, loaded (their modules run and `load` called) so their options are
/// known before the others are parsed.
#[cfg(feature = "python")]
fn load_scripts(cli: &Cli) -> Result<Vec<waylay::addons::ScriptAddon>, Failure> {
    cli.scripts()
        .iter()
        .map(|p| waylay::addons::ScriptAddon::load(p).map_err(|e| Failure::Usage(e.to_string())))
        .collect()
}

/// Without the `python` feature, `-s` says how to get a build that has it.
#[cfg(not(feature = "python"))]
fn load_scripts(cli: &Cli) -> Result<Vec<std::convert::Infallible>, Failure> {
    if cli.scripts().is_empty() {
        return Ok(Vec::new());
    }
    Err(Failure::Usage(
        "this waylay was built without Python scripting; build one with it: cargo run --release -p waylay --features python -- -s script.py".into(),
    ))
}

/// The options the flags ask for, checked as the proxy and the dumper will check them.
fn options(cli: &Cli, script_specs: Vec<OptionSpec>) -> Result<Options, Failure> {
    let mut opts = Options::new();
    for spec in Dumper::option_specs() {
        opts.add(spec)?;
    }
    opts.add(scripts_spec())?;
    for spec in script_specs {
        opts.add(spec)?;
    }
    opts.set_specs(&cli.option_specs())?;
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
    let scripts = load_scripts(cli)?;
    #[cfg(feature = "python")]
    let specs: Vec<OptionSpec> = scripts.iter().flat_map(|s| s.option_specs()).collect();
    #[cfg(not(feature = "python"))]
    let specs: Vec<OptionSpec> = Vec::new();
    let opts = options(cli, specs)?;
    if cli.options {
        print!("{}", opts.listing());
        return Ok(());
    }
    logging::init(logging::level_of(
        opts.str("termlog_verbosity").unwrap_or("info"),
        cli.verbose,
    ));

    let host = opts.str("listen_host").unwrap_or("127.0.0.1");
    let listen = if host.contains(':') {
        format!("[{host}]:{}", opts.int("listen_port"))
    } else {
        format!("{host}:{}", opts.int("listen_port"))
    };
    let mut builder = Proxy::builder().options(opts.clone()).listen(&listen);
    // Scripts come before the dumper, so it prints flows as the scripts left them (as in
    // mitmdump).
    #[cfg(feature = "python")]
    for script in scripts {
        builder = builder.addon(script);
    }
    #[cfg(not(feature = "python"))]
    let _ = scripts;
    // With nothing to print the dumper is not registered at all, so `-q` costs no hook.
    if opts.int("flow_detail") > 0 {
        builder = builder.addon(Dumper::stdout());
    }
    builder.run().map_err(|e| match e {
        ProxyError::Options(e) => Failure::Usage(e.to_string()),
        ProxyError::Addon(e @ AddError::Options { .. }) => Failure::Usage(e.to_string()),
        other => Failure::Runtime(anyhow::Error::new(other)),
    })
}
