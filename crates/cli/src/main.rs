//! `waylay`: the mitmdump of waylay. Parses mitmdump's flags, validates every option before
//! anything starts, runs the proxy with the dumper, and maps failures to one line on stderr
//! and an exit code: 2 for a bad flag or option value, 1 for a failure at run time.

mod args;
mod bundle;
mod config_file;
mod logging;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use waylay::{AddError, Options, OptionsError, Proxy, ProxyError};

use crate::args::Cli;
use crate::bundle::Bundle;

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

/// Expands a leading `~/` to the home directory.
fn expand_home(p: &str) -> PathBuf {
    let rest = if p == "~" {
        Some("")
    } else {
        p.strip_prefix("~/")
    };
    match (rest, std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The options: the bundled addons' declarations, then `confdir/config.yaml`, then the
/// flags (which win), checked as the proxy and every addon will check them.
fn options(cli: &Cli, bundle: &mut Bundle) -> Result<Options, Failure> {
    let mut opts = Options::new();
    bundle.declare(&mut opts)?;
    let flags = cli.option_specs();
    // The flags alone first: a bad flag is refused before any file is read, and they say
    // where confdir is.
    let mut probe = opts.clone();
    probe.set_specs(&flags)?;
    let confdir = expand_home(probe.str("confdir").unwrap_or("~/.waylay"));

    let mut file = None;
    if let Some((path, values)) = config_file::read(&confdir, &opts).map_err(Failure::Usage)? {
        let mut names = BTreeSet::new();
        for (name, value) in values {
            opts.set(&name, value)
                .map_err(|e| Failure::Usage(format!("config file {}: {e}", path.display())))?;
            names.insert(name);
        }
        file = Some((path, names));
    }
    let from_flags: BTreeSet<String> = opts
        .parse_specs(&flags)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    opts.set_specs(&flags)?;

    let port = opts.int("listen_port");
    if !(0..=65535).contains(&port) {
        return Err(Failure::Usage(format!(
            "option listen_port: expected 0 to 65535, got {port}"
        )));
    }
    if let Err(e) = bundle.check(&opts) {
        // Say so when the refused value came from the config file.
        if let (Some((path, names)), OptionsError::Rejected { name, .. }) = (&file, &e)
            && names.contains(name)
            && !from_flags.contains(name)
        {
            return Err(Failure::Usage(format!(
                "config file {}: {e}",
                path.display()
            )));
        }
        return Err(e.into());
    }
    Ok(opts)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let mut bundle = Bundle::new();
    let opts = options(cli, &mut bundle)?;
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
    let builder = Proxy::builder().options(opts.clone()).listen(&listen);
    // With nothing to print the dumper is not registered at all, so `-q` costs no hook; the
    // same holds for every bundled addon whose options leave it nothing to do.
    let builder = bundle.register(builder, &opts);
    builder.run().map_err(|e| match e {
        ProxyError::Options(e) => Failure::Usage(e.to_string()),
        ProxyError::Addon(e @ AddError::Options { .. }) => Failure::Usage(e.to_string()),
        other => Failure::Runtime(anyhow::Error::new(other)),
    })
}
