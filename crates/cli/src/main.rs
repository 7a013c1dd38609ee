//! `waylay`: the mitmdump of waylay. Parses mitmdump's flags, validates every option before
//! anything starts, runs the proxy with the dumper, and maps failures to one line on stderr
//! and an exit code: 2 for a bad flag or option value, 1 for a failure at run time.

mod args;
mod bundle;
mod config_file;
mod export_cmd;
mod logging;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use waylay::addons::{HarDump, Save, ServerReplay};
use waylay::client_replay::{self, ClientPlayback};
use waylay::{
    AddError, AddonManager, Dumper, Filter, ManagerHandle, OptionSpec, OptionValue, Options,
    OptionsError, Proxy, ProxyBuilder, ProxyError,
};

use waylay::web::{WebConfig, WebUi};

use crate::args::{Cli, WebCli};
use crate::bundle::{Bundle, Slot};

/// See the `mimalloc` feature in Cargo.toml.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // `waylay export FORMAT FILE [FILTER]` (mitmproxy's export formats for recorded flows).
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "export") {
        let rest: Vec<String> = argv[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return match export_cmd::run(&rest) {
            Ok(()) => ExitCode::SUCCESS,
            Err((msg, true)) => fail(&msg, 2),
            Err((msg, false)) => fail(&msg, 1),
        };
    }
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
fn load_scripts(
    cli: &Cli,
    specs: &[String],
    web: bool,
) -> Result<Vec<waylay::addons::ScriptAddon>, Failure> {
    let paths = cli.scripts();
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let options = before_scripts(specs, web);
    paths
        .iter()
        .map(|p| {
            waylay::addons::ScriptAddon::load_with(p, &options)
                .map_err(|e| Failure::Usage(e.to_string()))
        })
        .collect()
}

/// Without the `python` feature, `-s` says how to get a build that has it.
#[cfg(not(feature = "python"))]
fn load_scripts(
    cli: &Cli,
    _specs: &[String],
    _web: bool,
) -> Result<Vec<std::convert::Infallible>, Failure> {
    if cli.scripts().is_empty() {
        return Ok(Vec::new());
    }
    Err(Failure::Usage(
        "this waylay was built without Python scripting; build one with it: cargo run --release -p waylay --features python -- -s script.py".into(),
    ))
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

/// What scripts see in `ctx.options` while they load: the options as far as they can be
/// known before the scripts declare theirs (the declarations of [`options_from`], the config
/// file's and the flags' values for them). What is refused here is refused again, with its
/// error, by [`options_from`] once the scripts' options are known.
#[cfg(feature = "python")]
fn before_scripts(specs: &[String], web: bool) -> Options {
    let Ok(mut opts) = declarations(web, &mut Bundle::new(), Vec::new()) else {
        return Options::empty();
    };
    let known: Vec<&String> = specs
        .iter()
        .filter(|s| opts.contains(s.split_once('=').map_or(s.as_str(), |(n, _)| n).trim()))
        .collect();
    let mut probe = opts.clone();
    let _ = probe.set_specs(&known);
    let confdir = expand_home(probe.str("confdir").unwrap_or("~/.waylay"));
    for (name, value) in config_file::read_known(&confdir, &opts) {
        let _ = opts.set(&name, value);
    }
    if opts.set_specs(&known).is_err() {
        for spec in known {
            let _ = opts.set_specs(&[spec]);
        }
    }
    opts
}

/// Every option declared, at its default: the proxy's, the bundled addons' (and the web
/// UI's for `waylay web`), the binary's own and the scripts'.
fn declarations(
    web: bool,
    bundle: &mut Bundle,
    script_specs: Vec<OptionSpec>,
) -> Result<Options, Failure> {
    let mut opts = Options::new();
    bundle.declare(&mut opts)?;
    if web {
        for spec in WebConfig::option_specs() {
            opts.add(spec)?;
        }
    }
    for spec in Dumper::option_specs()
        .into_iter()
        .chain(Save::option_specs())
        .chain(HarDump::option_specs())
        .chain(ServerReplay::option_specs())
        .chain(ClientPlayback::option_specs())
    {
        opts.add(spec)?;
    }
    opts.add(scripts_spec())?;
    for spec in script_specs {
        opts.add(spec)?;
    }
    opts.add(OptionSpec::new(
        "keepserving",
        OptionValue::Bool(false),
        "Continue serving after reading a file (rfile) or replaying; without a proxy server, wait for Ctrl-C.",
    ))?;
    Ok(opts)
}

/// The options: their [`declarations`], then `confdir/config.yaml`, then the flags `specs`
/// (which win), checked as the proxy and every addon will check them.
fn options_from(
    specs: &[String],
    web: bool,
    bundle: &mut Bundle,
    script_specs: Vec<OptionSpec>,
) -> Result<Options, Failure> {
    let mut opts = declarations(web, bundle, script_specs)?;
    let flags = specs.to_vec();
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
    // The trailing filter sets dumper_filter first: its error names that option.
    Dumper::check_options(&opts)?;

    if !matches!(opts.int("client_replay_concurrency"), 1 | -1) {
        return Err(Failure::Usage(format!(
            "option client_replay_concurrency: expected 1 or -1 (no limit), got {}",
            opts.int("client_replay_concurrency")
        )));
    }
    let port = opts.int("listen_port");
    if !(0..=65535).contains(&port) {
        return Err(Failure::Usage(format!(
            "option listen_port: expected 0 to 65535, got {port}"
        )));
    }
    // proxyauth is registered by the builder, not the bundle: its value (an htpasswd file
    // read now) is checked here, before the CA or the listener.
    let checked = bundle.check(&opts).and_then(|()| {
        opts.str("proxyauth")
            .map(waylay::addons::Credentials::parse)
            .transpose()
            .map(drop)
    });
    if let Err(e) = checked {
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
    // Intercepted flows wait until someone resumes them: only the web UI can.
    if !web && opts.str("intercept").is_some_and(|s| !s.is_empty()) {
        return Err(Failure::Usage(
            "option intercept: intercepted flows wait until resumed in the web UI: use `waylay web`".into(),
        ));
    }
    for rule in opts.seq(waylay::addons::BREAKPOINTS_OPTION) {
        waylay::addons::check_breakpoint_rule(rule).map_err(|e| {
            Failure::Usage(format!("option breakpoints: cannot parse {rule:?}: {e}"))
        })?;
    }
    if !web && waylay::addons::Breakpoints::from_options(&opts).holds() {
        return Err(Failure::Usage(
            "option breakpoints: a hold rule makes flows wait until resumed in the web UI: use `waylay web`".into(),
        ));
    }
    // After the dumper's check: the trailing filter sets both, and the error names the
    // dumper's option.
    if let Some(f) = opts.str("readfile_filter") {
        Filter::parse(f).map_err(|e| Failure::Usage(format!("option readfile_filter: {e}")))?;
    }
    Save::check_options(&opts)?;
    // The proxy's own options, checked here rather than when the listener starts, so that
    // `-n` (no listener) refuses a bad value with the same error.
    waylay::check_options(&opts)?;
    Ok(opts)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let (scripts, early) = logging::held(|| load_scripts(cli, &cli.option_specs(), false));
    let scripts = scripts?;
    #[cfg(feature = "python")]
    let specs: Vec<OptionSpec> = scripts.iter().flat_map(|s| s.option_specs()).collect();
    #[cfg(not(feature = "python"))]
    let specs: Vec<OptionSpec> = Vec::new();
    let mut bundle = Bundle::new();
    let opts = options_from(&cli.option_specs(), false, &mut bundle, specs)?;
    if cli.options {
        print!("{}", opts.listing());
        return Ok(());
    }
    logging::init(logging::level_of(
        opts.str("termlog_verbosity").unwrap_or("info"),
        cli.verbose,
    ));
    early.write();
    let usage = |e: ProxyError| match e {
        ProxyError::Options(e) => Failure::Usage(e.to_string()),
        ProxyError::Addon(e @ AddError::Options { .. }) => Failure::Usage(e.to_string()),
        other => Failure::Runtime(anyhow::Error::new(other)),
    };
    // Without `-r` waylay is the proxy; `-n` runs the addons with no listener.
    let replaying = !opts.seq("client_replay").is_empty();
    if opts.bool("server") && opts.str("rfile").is_none() && !replaying {
        return with_addons(Proxy::builder().options(opts.clone()), bundle, scripts)
            .run()
            .map_err(usage);
    }
    let sys = actix::System::new();
    sys.block_on(async move {
        let (manager, proxy) = if opts.bool("server") || replaying {
            // Client replay sends its requests through a proxy listener; with `-n` it gets a
            // private one on loopback (an ephemeral port), closed when the replay ends.
            // The options hold where the proxy listens (`listen_port` counts as given
            // only when the user gave it: a mode keeps its own default port otherwise).
            let proxy_opts = if opts.bool("server") {
                opts.clone()
            } else {
                let mut o = opts.clone();
                o.set("server", OptionValue::Bool(true))?;
                o.set("listen_host", OptionValue::Str("127.0.0.1".into()))?;
                o.set("listen_port", OptionValue::Int(0))?;
                o
            };
            let builder = with_addons(Proxy::builder().options(proxy_opts), bundle, scripts);
            let proxy = builder.start().await.map_err(usage)?;
            (proxy.manager().clone(), Some(proxy))
        } else {
            let manager = AddonManager::start(opts.clone());
            add_offline(&manager, bundle, scripts)
                .await
                .map_err(|e| match e {
                    e @ AddError::Options { .. } => Failure::Usage(e.to_string()),
                    other => Failure::Runtime(anyhow::Error::new(other)),
                })?;
            manager.running().await;
            (manager, None)
        };
        let mut result = Ok(());
        if let Some(path) = opts.str("rfile") {
            result = read_and_play(&manager, path, opts.str("readfile_filter")).await;
        }
        if result.is_ok()
            && let Some(p) = &proxy
            && replaying
        {
            result = replay_clients(p, &opts).await;
        }
        if opts.bool("keepserving") || (opts.str("rfile").is_none() && !replaying) {
            // A signal, or a script's `ctx.master.shutdown()`.
            tokio::select! {
                () = wait_for_signal() => {}
                () = manager.shutdown_requested() => {}
            }
        }
        match proxy {
            Some(p) => p.shutdown().await,
            None => manager.shutdown().await,
        }
        result
    })
}

/// `waylay web`: binds the UI, prints its URL (with the token), and runs the proxy with the
/// UI's addon registered last (after the bundled ones the options ask for).
fn run_web(cli: &WebCli) -> Result<(), Failure> {
    let (scripts, early) = logging::held(|| load_scripts(&cli.proxy, &cli.option_specs(), true));
    let scripts = scripts?;
    #[cfg(feature = "python")]
    let specs: Vec<OptionSpec> = scripts.iter().flat_map(|s| s.option_specs()).collect();
    #[cfg(not(feature = "python"))]
    let specs: Vec<OptionSpec> = Vec::new();
    let mut bundle = Bundle::new();
    let opts = options_from(&cli.option_specs(), true, &mut bundle, specs)?;
    if cli.proxy.options {
        print!("{}", opts.listing());
        return Ok(());
    }
    logging::init(logging::level_of(
        opts.str("termlog_verbosity").unwrap_or("info"),
        cli.proxy.verbose,
    ));
    early.write();
    let port = opts.int("web_port");
    if !(0..=65535).contains(&port) {
        return Err(Failure::Usage(format!(
            "option web_port: expected 0 to 65535, got {port}"
        )));
    }
    if !opts.seq("client_replay").is_empty() || !opts.bool("server") {
        return Err(Failure::Usage(
            "waylay web does not replay clients or run without a proxy yet (-C, -n)".into(),
        ));
    }
    let (addon, ui) = WebUi::bind(WebConfig::from_options(&opts))
        .map_err(|e| Failure::Runtime(anyhow::Error::new(e)))?;
    // `-r FILE`: the flows are loaded into the UI (as mitmweb shows them), checked first
    // so that a missing file is a usage error, then read in the background.
    if let Some(path) = opts.str("rfile") {
        let path = PathBuf::from(path);
        std::fs::metadata(&path)
            .map_err(|e| Failure::Usage(format!("option rfile: {}: {e}", path.display())))?;
        let loader = ui.loader();
        std::thread::spawn(move || match loader.load_file(&path) {
            Ok(n) => tracing::info!("loaded {n} flows from {}", path.display()),
            Err(e) => tracing::error!("{e}"),
        });
    }
    println!("Web server listening at {}", ui.url());
    let _ = std::io::stdout().flush();
    if opts.bool("web_open_browser") {
        // Best effort, as mitmweb: no browser is not an error.
        let _ = std::process::Command::new("xdg-open").arg(ui.url()).spawn();
    }
    let builder = with_addons(Proxy::builder().options(opts.clone()), bundle, scripts).addon(addon);
    let usage = |e: ProxyError| match e {
        ProxyError::Options(e) => Failure::Usage(e.to_string()),
        ProxyError::Addon(e @ AddError::Options { .. }) => Failure::Usage(e.to_string()),
        other => Failure::Runtime(anyhow::Error::new(other)),
    };
    let sys = actix::System::new();
    let result = sys.block_on(async {
        // Signal handlers while the proxy starts (the task runs at the start's first await):
        // a SIGTERM right after the port opens must shut down gracefully.
        let signal = actix::spawn(wait_for_signal());
        let proxy = builder.start().await.map_err(usage)?;
        // Options changed in the UI are set through the manager (every addon sees them).
        ui.attach(proxy.manager().clone());
        let _ = signal.await;
        tracing::info!("shutting down");
        proxy.shutdown().await;
        Ok(())
    });
    drop(ui);
    result
}

/// Reads every `client_replay` file and replays its requests through the proxy.
async fn replay_clients(proxy: &waylay::RunningProxy, opts: &Options) -> Result<(), Failure> {
    let mut flows = Vec::new();
    for path in opts.seq("client_replay") {
        flows.extend(waylay::flowfile::read_file(path).map_err(|e| {
            Failure::Runtime(anyhow::Error::new(e).context(format!("reading {path}")))
        })?);
    }
    let total = flows.len();
    tracing::debug!(total, "client replay: read");
    let concurrency = (opts.int("client_replay_concurrency") == 1).then_some(1);
    let sent =
        client_replay::replay_all(proxy.manager(), proxy.local_addr(), &flows, concurrency).await;
    tracing::info!("client replay: {sent} of {total} flows replayed");
    Ok(())
}

/// The scripts given with `-s`, loaded.
#[cfg(feature = "python")]
type Scripts = Vec<waylay::addons::ScriptAddon>;
/// Without the `python` feature there are never any (`-s` is refused).
#[cfg(not(feature = "python"))]
type Scripts = Vec<std::convert::Infallible>;

#[cfg(feature = "python")]
fn add_scripts(builder: ProxyBuilder, scripts: Scripts) -> ProxyBuilder {
    scripts.into_iter().fold(builder, ProxyBuilder::addon)
}

#[cfg(not(feature = "python"))]
fn add_scripts(builder: ProxyBuilder, scripts: Scripts) -> ProxyBuilder {
    let _ = scripts;
    builder
}

#[cfg(feature = "python")]
async fn add_scripts_offline(m: &ManagerHandle, scripts: Scripts) -> Result<(), AddError> {
    for s in scripts {
        m.add(s).await?;
    }
    Ok(())
}

#[cfg(not(feature = "python"))]
async fn add_scripts_offline(m: &ManagerHandle, scripts: Scripts) -> Result<(), AddError> {
    let _ = (m, scripts);
    Ok(())
}

/// The bundled addons, in mitmdump's order: replay answers before the flow is saved or
/// printed.
fn with_addons(mut builder: ProxyBuilder, mut bundle: Bundle, scripts: Scripts) -> ProxyBuilder {
    // Declares client replay's options; it handles no flow hook (a replayed flow is marked
    // by the proxy itself).
    builder = builder.addon(ClientPlayback);
    // block_list and onboarding, then the scripts, as mitmproxy's script loader sits after
    // them and before replay, the rules, save and the dumper (which then prints flows as the
    // scripts left them).
    builder = bundle.register(builder, Slot::Early);
    builder = add_scripts(builder, scripts);
    // Replay, the rewriting rules, save, hardump and the dumper are always there: an idle
    // one (its option unset, or `flow_detail=0`) handles no flow hook, so it costs nothing
    // per request, and an option set at run time (the web UI, a script) takes effect.
    builder = builder.addon(ServerReplay::new());
    builder = bundle.register(builder, Slot::Rules);
    builder
        .addon(Save::new())
        .addon(HarDump::new())
        .addon(Dumper::stdout())
}

async fn add_offline(
    m: &ManagerHandle,
    mut bundle: Bundle,
    scripts: Scripts,
) -> Result<(), AddError> {
    // As with a proxy (`with_addons`): flows read with `-r` go through the rules too.
    bundle.add(m, Slot::Early).await?;
    add_scripts_offline(m, scripts).await?;
    m.add(ServerReplay::new()).await?;
    bundle.add(m, Slot::Rules).await?;
    m.add(Save::new()).await?;
    m.add(HarDump::new()).await?;
    m.add(Dumper::stdout()).await?;
    Ok(())
}

/// Reads `path` (`-` for stdin) on a thread and plays each flow (matching `filter`) through
/// the addons as if live. The flows before a damaged part are played, then the error is
/// returned.
async fn read_and_play(m: &ManagerHandle, path: &str, filter: Option<&str>) -> Result<(), Failure> {
    let filter = filter
        .map(Filter::parse)
        .transpose()
        .map_err(|e| Failure::Usage(format!("option readfile_filter: {e}")))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("waylay-rfile".into())
        .spawn(move || {
            let send = |item| tx.blocking_send(item).is_ok();
            if owned == "-" {
                for item in waylay::flowfile::FlowReader::new(std::io::stdin().lock()) {
                    if !send(item) {
                        break;
                    }
                }
                return;
            }
            match std::fs::File::open(&owned) {
                Ok(f) => {
                    for item in waylay::flowfile::FlowReader::new(f) {
                        if !send(item) {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = send(Err(waylay::flowfile::FlowFileError::Io(e)));
                }
            }
        })
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot start the reader thread: {e}")))?;
    let mut played = 0usize;
    while let Some(item) = rx.recv().await {
        let flow = item.map_err(|e| {
            Failure::Runtime(anyhow::Error::new(e).context(format!("reading {path}")))
        })?;
        if filter.as_ref().is_some_and(|f| !f.matches(&flow)) {
            continue;
        }
        waylay::flowfile::play(m, flow)
            .await
            .map_err(|e| Failure::Runtime(anyhow::Error::new(e)))?;
        played += 1;
    }
    tracing::debug!(played, "read {path}");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
