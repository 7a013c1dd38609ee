//! The command line: mitmdump's flags, mapped onto `name=value` option specs.

use clap::{ArgAction, Parser};

/// waylay: an intercepting HTTP(S) proxy that prints the flows it sees (like mitmdump).
///
/// Every option can be set with `--set name=value`; `--options` lists them all with their
/// types, defaults and help.
#[derive(Debug, Parser)]
#[command(
    name = "waylay",
    version,
    after_help = "Examples:\n  waylay                          listen on 127.0.0.1:8080, one line per flow\n  waylay -p 9000 --flow-detail 2  also print headers\n  waylay --set ssl_insecure=true  do not verify server certificates\n  waylay --options                list every option"
)]
pub(crate) struct Cli {
    /// Address to bind the proxy to (listen_host).
    #[arg(long, value_name = "HOST")]
    pub(crate) listen_host: Option<String>,

    /// Proxy service port (listen_port).
    #[arg(short = 'p', long, value_name = "PORT")]
    pub(crate) listen_port: Option<u16>,

    /// The proxy server mode; repeat for several (mode).
    #[arg(short = 'm', long, value_name = "MODE")]
    pub(crate) mode: Vec<String>,

    /// Set an option: `--set name=value`; repeat for several, and for every value of a
    /// sequence option. See --options.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub(crate) set: Vec<String>,

    /// Do not verify upstream server TLS certificates (ssl_insecure).
    #[arg(short = 'k', long)]
    pub(crate) ssl_insecure: bool,

    /// Quiet: print no flows, and log warnings and errors only.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,

    /// Increase log verbosity (-v: debug, -vv: trace).
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub(crate) verbose: u8,

    /// The display detail level for flows: 0 (quiet) to 4 (flow_detail).
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=4))]
    pub(crate) flow_detail: Option<u8>,

    /// Header modify pattern "[/flow-filter]/header-name/[@]header-value"; repeat for
    /// several (modify_headers).
    #[arg(short = 'H', long, value_name = "PATTERN")]
    pub(crate) modify_headers: Vec<String>,

    /// Body replacement pattern "[/flow-filter]/regex/[@]replacement"; repeat for several
    /// (modify_body).
    #[arg(short = 'B', long, value_name = "PATTERN")]
    pub(crate) modify_body: Vec<String>,

    /// Map remote resources to another URL: "[/flow-filter]/url-regex/replacement"
    /// (map_remote).
    #[arg(short = 'M', long, value_name = "PATTERN")]
    pub(crate) map_remote: Vec<String>,

    /// Map remote resources to a local file or directory:
    /// "[/flow-filter]/url-regex/file-or-directory-path" (map_local).
    #[arg(long, value_name = "PATTERN")]
    pub(crate) map_local: Vec<String>,

    /// Set sticky cookie filter (stickycookie).
    #[arg(long, value_name = "FILTER")]
    pub(crate) stickycookie: Option<String>,

    /// Set sticky auth filter (stickyauth).
    #[arg(long, value_name = "FILTER")]
    pub(crate) stickyauth: Option<String>,

    /// Require proxy authentication: "username:pass", "any" to accept any user/pass
    /// combination, or "@path" to an htpasswd file (bcrypt or {SHA}) (proxyauth).
    #[arg(long, value_name = "SPEC")]
    pub(crate) proxyauth: Option<String>,

    /// Use the Host header to construct URLs for display (showhost).
    #[arg(long)]
    pub(crate) showhost: bool,

    /// Run a mitmproxy addon script; repeat for several, each an addon at its position
    /// (scripts). Needs a build with the `python` feature.
    #[arg(short = 's', long = "scripts", value_name = "SCRIPT")]
    pub(crate) scripts: Vec<String>,

    /// Stream flows to a file (mitmproxy's format) as they complete; +PATH appends
    /// (save_stream_file).
    #[arg(short = 'w', long = "save-stream-file", value_name = "PATH")]
    pub(crate) save_stream_file: Option<String>,

    /// Read flows from a flow file or a HAR file (- for stdin) and play them through the
    /// addons, then exit unless --keepserving (rfile).
    #[arg(short = 'r', long = "rfile", value_name = "PATH")]
    pub(crate) rfile: Option<String>,

    /// Start no proxy server (server=false), e.g. to only read a file with -r.
    #[arg(short = 'n', long = "no-server")]
    pub(crate) no_server: bool,

    /// Keep serving after reading a file (-r) or replaying (keepserving).
    #[arg(long)]
    pub(crate) keepserving: bool,

    /// Answer requests with the responses recorded in this file (server_replay); repeat
    /// for several files.
    #[arg(short = 'S', long = "server-replay", value_name = "PATH")]
    pub(crate) server_replay: Vec<String>,

    /// Replay the requests recorded in this file through the proxy, then exit unless
    /// --keepserving (client_replay); repeat for several files.
    #[arg(short = 'C', long = "client-replay", value_name = "PATH")]
    pub(crate) client_replay: Vec<String>,

    /// Print every option with its type, default and help, and exit.
    #[arg(long)]
    pub(crate) options: bool,

    /// Only print, save and read flows matching this filter expression (dumper_filter,
    /// save_stream_filter, readfile_filter).
    #[arg(value_name = "FILTER", trailing_var_arg = true)]
    pub(crate) filter: Vec<String>,
}

impl Cli {
    /// The option specs the flags stand for, in the order they are applied: the flags
    /// first, then every `--set` (so an explicit `--set` wins over a flag).
    pub(crate) fn option_specs(&self) -> Vec<String> {
        let mut specs = Vec::new();
        if self.quiet {
            specs.push("flow_detail=0".to_owned());
            specs.push("termlog_verbosity=warn".to_owned());
        }
        if let Some(h) = &self.listen_host {
            specs.push(format!("listen_host={h}"));
        }
        if let Some(p) = self.listen_port {
            specs.push(format!("listen_port={p}"));
        }
        specs.extend(self.mode.iter().map(|m| format!("mode={m}")));
        if self.ssl_insecure {
            specs.push("ssl_insecure=true".to_owned());
        }
        if let Some(d) = self.flow_detail {
            specs.push(format!("flow_detail={d}"));
        }
        if self.verbose > 0 {
            specs.push("termlog_verbosity=debug".to_owned());
        }
        for (name, values) in [
            ("modify_headers", &self.modify_headers),
            ("modify_body", &self.modify_body),
            ("map_remote", &self.map_remote),
            ("map_local", &self.map_local),
        ] {
            specs.extend(values.iter().map(|v| format!("{name}={v}")));
        }
        if let Some(f) = &self.stickycookie {
            specs.push(format!("stickycookie={f}"));
        }
        if let Some(f) = &self.stickyauth {
            specs.push(format!("stickyauth={f}"));
        }
        if let Some(v) = &self.proxyauth {
            specs.push(format!("proxyauth={v}"));
        }
        if self.showhost {
            specs.push("showhost=true".to_owned());
        }
        if let Some(w) = &self.save_stream_file {
            specs.push(format!("save_stream_file={w}"));
        }
        if let Some(r) = &self.rfile {
            specs.push(format!("rfile={r}"));
        }
        if self.no_server {
            specs.push("server=false".to_owned());
        }
        if self.keepserving {
            specs.push("keepserving=true".to_owned());
        }
        specs.extend(
            self.server_replay
                .iter()
                .map(|p| format!("server_replay={p}")),
        );
        specs.extend(
            self.client_replay
                .iter()
                .map(|p| format!("client_replay={p}")),
        );
        if !self.filter.is_empty() {
            // As mitmdump: the trailing filter limits what is printed, saved and read.
            let f = self.filter.join(" ");
            specs.push(format!("dumper_filter={f}"));
            specs.push(format!("save_stream_filter={f}"));
            specs.push(format!("readfile_filter={f}"));
        }
        // `ctx.options.scripts` lists them, as mitmdump's does.
        specs.extend(self.scripts.iter().map(|s| format!("scripts={s}")));
        specs.extend(self.set.iter().cloned());
        specs
    }

    /// The scripts to run, in order: every `-s`, then every `--set scripts=...`.
    pub(crate) fn scripts(&self) -> Vec<String> {
        let mut out = self.scripts.clone();
        out.extend(
            self.set
                .iter()
                .filter_map(|s| s.strip_prefix("scripts="))
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned),
        );
        out
    }
}

/// `waylay web`: the proxy with its web UI (mitmweb's flags, plus every proxy flag).
#[derive(Debug, Parser)]
#[command(
    name = "waylay web",
    version,
    after_help = "Examples:\n  waylay web                              proxy on 127.0.0.1:8080, UI on 127.0.0.1:8081 (URL with token printed)\n  waylay web --web-port 9090 -p 9000\n  waylay web --set web_password=secret    a password instead of the random token\n  waylay web --set web_store=flows.sqlite keep the flows after exit"
)]
pub(crate) struct WebCli {
    /// Web UI host (web_host).
    #[arg(long, value_name = "HOST")]
    pub(crate) web_host: Option<String>,

    /// Web UI port (web_port).
    #[arg(long, value_name = "PORT")]
    pub(crate) web_port: Option<u16>,

    /// Start a browser on the UI (web_open_browser; off by default).
    #[arg(long)]
    pub(crate) web_open_browser: bool,

    /// The proxy's flags.
    #[command(flatten)]
    pub(crate) proxy: Cli,
}

impl WebCli {
    /// The option specs: the web flags, then the proxy's (whose `--set` come last and win).
    /// The dumper is off unless `--flow-detail` asks for it: the flows are in the browser.
    pub(crate) fn option_specs(&self) -> Vec<String> {
        let mut specs = Vec::new();
        if let Some(h) = &self.web_host {
            specs.push(format!("web_host={h}"));
        }
        if let Some(p) = self.web_port {
            specs.push(format!("web_port={p}"));
        }
        if self.web_open_browser {
            specs.push("web_open_browser=true".to_owned());
        }
        if self.proxy.flow_detail.is_none() {
            specs.push("flow_detail=0".to_owned());
        }
        specs.extend(self.proxy.option_specs());
        specs
    }
}

/// Turns a clap error into one line: its first line, with clap's tip (a similar flag)
/// appended, without the `error: ` prefix and without the usage block.
pub(crate) fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error:")
        .trim()
        .to_owned();
    let tip = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("tip:"))
        .map(str::trim);
    match tip {
        Some(t) => format!("{first} ({t})"),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("waylay").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_bench_line_parses() {
        let cli = parse(&[
            "-q",
            "--listen-host",
            "127.0.0.1",
            "-p",
            "41234",
            "--set",
            "confdir=/tmp/x",
            "-k",
        ]);
        assert_eq!(
            cli.option_specs(),
            [
                "flow_detail=0",
                "termlog_verbosity=warn",
                "listen_host=127.0.0.1",
                "listen_port=41234",
                "ssl_insecure=true",
                "confdir=/tmp/x",
            ]
        );
    }

    #[test]
    fn flags_map_to_options() {
        let cli = parse(&[
            "-m",
            "regular",
            "-m",
            "upstream:http://u:1",
            "--flow-detail",
            "3",
            "-vv",
            "~d",
            "example.com",
        ]);
        assert_eq!(cli.verbose, 2);
        assert_eq!(
            cli.option_specs(),
            [
                "mode=regular",
                "mode=upstream:http://u:1",
                "flow_detail=3",
                "termlog_verbosity=debug",
                "dumper_filter=~d example.com",
                "save_stream_filter=~d example.com",
                "readfile_filter=~d example.com",
            ]
        );
    }

    #[test]
    fn flow_file_flags_map_to_options() {
        let cli = parse(&[
            "-n",
            "-r",
            "in.flows",
            "-w",
            "+out.flows",
            "--keepserving",
            "-S",
            "a",
            "-S",
            "b",
        ]);
        assert_eq!(
            cli.option_specs(),
            [
                "save_stream_file=+out.flows",
                "rfile=in.flows",
                "server=false",
                "keepserving=true",
                "server_replay=a",
                "server_replay=b",
            ]
        );
    }

    #[test]
    fn web_flags_map_to_options() {
        let cli = WebCli::try_parse_from([
            "waylay web",
            "--web-port",
            "9090",
            "-p",
            "9000",
            "--set",
            "web_password=x",
        ])
        .unwrap();
        assert_eq!(
            cli.option_specs(),
            [
                "web_port=9090",
                "flow_detail=0",
                "listen_port=9000",
                "web_password=x"
            ]
        );
    }

    #[test]
    fn flow_detail_is_range_checked() {
        let e = Cli::try_parse_from(["waylay", "--flow-detail", "5"]).unwrap_err();
        assert_eq!(
            one_line(&e),
            "invalid value '5' for '--flow-detail <LEVEL>': 5 is not in 0..=4"
        );
    }

    #[test]
    fn unknown_flags_are_one_line_with_a_tip() {
        let e = Cli::try_parse_from(["waylay", "--listen-prt", "1"]).unwrap_err();
        let line = one_line(&e);
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("unexpected argument '--listen-prt' found"),
            "{line}"
        );
        assert!(line.contains("--listen-port"), "{line}");
    }
}
