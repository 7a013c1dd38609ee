//! The dumper: mitmdump's flow output, one line per flow by default.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use waylay_core::flow::{Address, HttpVersion, Message, TcpFlow};
use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{
    Addon, Filter, FlowRef, HookKind, HookSet, HttpFlow, OptionSpec, Options, OptionsError,
};

use crate::contentview::{self, Cutoff, DETAIL3_CUTOFF};
use crate::human::{escape_bytes, escape_control, format_address, pretty_duration, pretty_size};

/// The highest `flow_detail` level.
pub const MAX_FLOW_DETAIL: i64 = 4;

/// ANSI styles (SGR parameters), as mitmdump colours its output.
mod sgr {
    pub(super) const BOLD: &str = "1";
    pub(super) const DIM: &str = "2";
    pub(super) const GREEN: &str = "1;32";
    pub(super) const RED: &str = "1;31";
    pub(super) const MAGENTA: &str = "1;35";
    pub(super) const YELLOW: &str = "1;33";
    pub(super) const BLUE: &str = "34";
    pub(super) const PLAIN_RED: &str = "31";
}

/// What the options say about the output.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    detail: u8,
    showhost: bool,
    raw_bodies: bool,
    /// `dumper_filter`, parsed once: only matching flows are printed.
    filter: Option<Filter>,
    /// Several modes listen (`--mode` repeated): each client address says which accepted it.
    several_modes: bool,
}

impl Settings {
    fn from_options(o: &Options) -> Result<Self, OptionsError> {
        let detail = match o.get("flow_detail") {
            Some(OptionValue::Int(d)) => *d,
            _ => 1,
        };
        let detail = u8::try_from(detail)
            .ok()
            .filter(|d| i64::from(*d) <= MAX_FLOW_DETAIL)
            .ok_or_else(|| {
                OptionsError::rejected(
                    "flow_detail",
                    format!("expected 0 to {MAX_FLOW_DETAIL}, got {detail}"),
                )
            })?;
        let filter = match o.str("dumper_filter") {
            None | Some("") => None,
            Some(text) => Some(
                Filter::parse(text)
                    .map_err(|e| OptionsError::rejected("dumper_filter", e.to_string()))?,
            ),
        };
        Ok(Self {
            detail,
            showhost: o.bool("showhost"),
            raw_bodies: o.bool("dumper_default_contentview"),
            filter,
            several_modes: o.seq("mode").len() > 1,
        })
    }
}

/// mitmdump's flow output as an addon: writes each finished flow to a writer (stdout by
/// default).
///
/// What is printed follows mitmproxy's `addons/dumper.py`, level by level (`flow_detail`):
///
/// | level | HTTP flows (on `response` and `error`) | WebSocket and TCP |
/// |---|---|---|
/// | 0 | nothing | nothing |
/// | 1 | one line: client, method, URL, status, reason, response size, duration | one line per message; the end of a WebSocket; errors |
/// | 2 | request line and headers, response line and headers, trailers | as 1 |
/// | 3 | 2 + bodies, cut after 512 lines or 64 KiB | 1 + message contents, cut the same way |
/// | 4 | 3, nothing cut | 3, nothing cut |
///
/// ```text
/// 127.0.0.1:53222: GET http://example.com/ << 200 OK 1.2k 12ms
/// 127.0.0.1:53224: GET http://example.org/ << error: server unreachable: connection refused
/// ```
///
/// As in mitmdump, `CONNECT` requests are not printed (the requests inside the tunnel are)
/// unless they fail, and client connects and disconnects are log records of the proxy, not
/// dumper output. The URL is the request's destination (`showhost` uses the `Host` header
/// instead). Bodies are shown decoded (`Content-Encoding` undone): JSON re-indented (unless
/// `dumper_default_contentview` asks for raw bodies), text as text, binary as a hex dump.
/// Control characters from the traffic are always escaped, so a flow cannot drive the
/// terminal.
///
/// Each flow's text is written with one `write_all` and flushed, so flows never interleave
/// and a reader of a pipe sees every flow as soon as it is done. A write error (the reader
/// went away) is logged once and output stops; the proxy goes on.
///
/// `dumper_filter` (mitmdump's trailing filter argument) limits the output to the flows a
/// filter expression matches (`~d example.com & ~c 500`); an invalid expression is an
/// option error that names the position.
///
/// ```
/// use waylay_addons::Dumper;
///
/// let to_stdout = Dumper::stdout();
/// let to_nowhere = Dumper::new(std::io::sink());
/// # drop((to_stdout, to_nowhere));
/// ```
pub struct Dumper {
    out: Box<dyn Write + Send>,
    settings: Settings,
    color: bool,
    failed: bool,
}

impl std::fmt::Debug for Dumper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dumper")
            .field("settings", &self.settings)
            .field("color", &self.color)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Dumper {
    /// A dumper writing to `out`, without colours.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Box::new(out),
            settings: Settings {
                detail: 1,
                showhost: false,
                raw_bodies: false,
                filter: None,
                several_modes: false,
            },
            color: false,
            failed: false,
        }
    }

    /// A dumper writing to standard output, coloured when it is a terminal and `NO_COLOR`
    /// is not set.
    pub fn stdout() -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Self::new(std::io::stdout()).with_color(color)
    }

    /// Turns ANSI colours on or off.
    #[must_use]
    pub fn with_color(mut self, on: bool) -> Self {
        self.color = on;
        self
    }

    /// The options the dumper reads and declares in `load`: `flow_detail`, `dumper_filter`
    /// and `dumper_default_contentview` (it also reads the core's `showhost`).
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new(
                "flow_detail",
                OptionValue::Int(1),
                "The display detail level for flows in mitmdump-style output: 0 (quiet) to 4. \
                 0: no output; 1: one line per flow; 2: 1 + HTTP headers; 3: 2 + bodies and \
                 WebSocket/TCP message contents, cut off; 4: 3, nothing cut off.",
            ),
            OptionSpec::optional("dumper_filter", "Limit which flows are dumped."),
            OptionSpec::new(
                "dumper_default_contentview",
                OptionValue::Bool(false),
                "Show bodies raw rather than through a content view.",
            ),
        ]
    }

    /// Checks option values the way the dumper's `configure` will, so a front end can report
    /// a bad value before starting the proxy.
    pub fn check_options(options: &Options) -> Result<(), OptionsError> {
        Settings::from_options(options).map(drop)
    }

    fn paint(&self, text: &str, style: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{style}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn emit(&mut self, text: &str) {
        if self.failed || text.is_empty() {
            return;
        }
        let r = self
            .out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush());
        if let Err(e) = r {
            self.failed = true;
            tracing::warn!(error = %e, "cannot write flow output; the dumper stops printing");
        }
    }

    fn client(&self, f: &HttpFlow) -> String {
        if f.is_replay.as_deref() == Some("request") {
            self.paint("[replay]", sgr::YELLOW)
        } else {
            self.client_addr(&f.client)
        }
    }

    /// The client's address, after the mode that accepted it when several listen (waylay
    /// only: mitmdump never shows the mode).
    fn client_addr(&self, c: &waylay_core::flow::Client) -> String {
        if self.settings.several_modes {
            format!("[{}] {}", c.proxy_mode, format_address(&c.peername))
        } else {
            format_address(&c.peername)
        }
    }

    fn url(&self, f: &HttpFlow) -> String {
        let r = &f.request;
        if r.method.eq_ignore_ascii_case("CONNECT") {
            if r.authority.is_empty() {
                Address::new(r.host.clone(), r.port).to_string()
            } else {
                r.authority.to_string()
            }
        } else if self.settings.showhost {
            r.pretty_url()
        } else {
            r.url()
        }
    }

    fn request_line(&self, f: &HttpFlow) -> String {
        let pushed = if f.metadata.contains_key("h2-pushed-stream") {
            " PUSH_PROMISE"
        } else {
            ""
        };
        let method = format!("{}{pushed}", f.request.method);
        let method_style = match method.to_ascii_uppercase().as_str() {
            "GET" => sgr::GREEN,
            "DELETE" => sgr::RED,
            _ => sgr::MAGENTA,
        };
        let req_v = f.request.http_version;
        let resp_v = f
            .response
            .as_ref()
            .map_or(HttpVersion::Http11, |r| r.http_version);
        let version = if !is_h1(req_v) || req_v != resp_v {
            format!(" {req_v}")
        } else {
            String::new()
        };
        format!(
            "{}: {} {}{version}",
            self.client(f),
            self.paint(&escape_control(&method, false), method_style),
            self.paint(&escape_control(&self.url(f), false), sgr::BOLD),
        )
    }

    /// `<< 200 OK 1.2k 12ms`, with the leading arrows.
    fn response_part(&self, f: &HttpFlow) -> Option<String> {
        let resp = f.response.as_ref()?;
        let replay = if f.is_replay.as_deref() == Some("response") {
            format!("{} ", self.paint("[replay]", sgr::YELLOW))
        } else {
            String::new()
        };
        let code = resp.status_code;
        let style = match code {
            200..=299 => sgr::GREEN,
            300..=399 => sgr::MAGENTA,
            400..=599 => sgr::RED,
            _ => sgr::BOLD,
        };
        let version = if !is_h1(resp.http_version) || f.request.http_version != resp.http_version {
            format!("{} ", resp.http_version)
        } else {
            String::new()
        };
        let size = match (&resp.raw_content, resp.stream) {
            (Some(b), _) => pretty_size(b.len() as u64),
            (None, true) => match resp
                .headers
                .get("content-length")
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(n) => format!("{} (streamed)", pretty_size(n)),
                None => "(streamed)".to_owned(),
            },
            (None, false) => "(content missing)".to_owned(),
        };
        let mut s = format!(
            "{} {replay}{version}{} {} {}",
            self.paint("<<", sgr::BOLD),
            self.paint(&code.to_string(), style),
            self.paint(&escape_control(&resp.reason, false), style),
            self.paint(&size, sgr::BOLD),
        );
        let end = resp.timestamp_end.unwrap_or(resp.timestamp_start);
        let secs = end - f.request.timestamp_start;
        if secs.is_finite() && secs >= 0.0 {
            let _ = write!(s, " {}", pretty_duration(secs));
        }
        Some(s)
    }

    fn error_part(&self, f: &HttpFlow) -> Option<String> {
        let e = f.error.as_ref()?;
        Some(format!(
            "{} {}",
            self.paint("<<", sgr::BOLD),
            self.paint(
                &format!("error: {}", escape_control(&e.msg, false)),
                sgr::RED
            ),
        ))
    }

    fn headers(&self, out: &mut String, headers: &waylay_core::Headers) {
        for (name, value) in headers.iter() {
            let _ = writeln!(
                out,
                "    {}: {}",
                self.paint(&escape_control(name, false), sgr::BLUE),
                escape_bytes(value)
            );
        }
    }

    fn trailers(&self, out: &mut String, trailers: Option<&waylay_core::Headers>) {
        if let Some(t) = trailers.filter(|t| !t.is_empty()) {
            let _ = writeln!(out, "    {}", self.paint("--- HTTP Trailers", sgr::MAGENTA));
            self.headers(out, t);
        }
    }

    fn cutoff(&self) -> Option<Cutoff> {
        (self.settings.detail == 3).then_some(DETAIL3_CUTOFF)
    }

    /// Appends a rendered body as mitmdump does: a blank line, the indented content,
    /// `(cut off)` when cut, and a blank line.
    fn body_lines(&self, out: &mut String, r: &contentview::Rendered, note: Option<String>) {
        if !r.lines.is_empty() || note.is_some() {
            out.push('\n');
        }
        if let Some(n) = note {
            let _ = writeln!(out, "    {}", self.paint(&n, sgr::DIM));
        }
        for l in &r.lines {
            let _ = writeln!(out, "    {l}");
        }
        if r.cut {
            let _ = writeln!(out, "    {}", self.paint("(cut off)", sgr::DIM));
        }
        out.push('\n');
    }

    fn message_body(&self, out: &mut String, m: &Message) {
        let content_type = m.headers.get("content-type");
        let Some(raw) = &m.raw_content else {
            let note = if m.stream {
                "(body streamed, not shown)"
            } else {
                "(content missing)"
            };
            self.body_lines(
                out,
                &contentview::Rendered::default(),
                Some(note.to_owned()),
            );
            return;
        };
        let (content, note) = match m.content() {
            Ok(c) => (c, None),
            Err(e) => (
                raw.clone(),
                Some(format!("(cannot decode body: {e}; showing it as sent)")),
            ),
        };
        let latin1: Option<String> = content_type
            .filter(|ct| is_latin1(ct))
            .map(|_| content.iter().map(|&b| char::from(b)).collect());
        let r = contentview::render(
            &content,
            latin1.as_deref(),
            content_type,
            !self.settings.raw_bodies,
            self.cutoff(),
        );
        self.body_lines(out, &r, note);
    }

    /// The text for one HTTP flow at the current level (empty at level 0).
    fn echo_flow(&self, f: &HttpFlow) -> String {
        let detail = self.settings.detail;
        let mut out = String::new();
        let quiet_connect = f.request.method.eq_ignore_ascii_case("CONNECT") && f.error.is_none();
        if detail == 0 || quiet_connect {
            return out;
        }
        if detail == 1 {
            out.push_str(&self.request_line(f));
            for part in [self.response_part(f), self.error_part(f)]
                .into_iter()
                .flatten()
            {
                out.push(' ');
                out.push_str(&part);
            }
            out.push('\n');
            return out;
        }
        out.push_str(&self.request_line(f));
        out.push('\n');
        self.headers(&mut out, &f.request.headers);
        if detail >= 3 {
            self.message_body(&mut out, &f.request);
        }
        self.trailers(&mut out, f.request.trailers.as_deref());
        if let (Some(line), Some(resp)) = (self.response_part(f), f.response.as_ref()) {
            let _ = writeln!(out, " {line}");
            self.headers(&mut out, &resp.headers);
            if detail >= 3 {
                self.message_body(&mut out, resp);
            }
            self.trailers(&mut out, resp.trailers.as_deref());
        }
        if let Some(line) = self.error_part(f) {
            let _ = writeln!(out, " {line}");
        }
        out
    }

    fn server_of_http(f: &HttpFlow) -> String {
        match &f.server {
            Some(s) => s.address.to_string(),
            None => Address::new(f.request.host.clone(), f.request.port).to_string(),
        }
    }

    fn server_of_tcp(f: &TcpFlow) -> String {
        f.server
            .as_ref()
            .map_or_else(|| "(no server)".to_owned(), |s| s.address.to_string())
    }

    fn raw_body(&self, out: &mut String, content: &[u8]) {
        let r = contentview::render(content, None, None, false, self.cutoff());
        self.body_lines(out, &r, None);
    }

    fn echo_websocket_message(&self, f: &HttpFlow) -> String {
        let mut out = String::new();
        let Some(m) = f.websocket.as_ref().and_then(|ws| ws.messages.last()) else {
            return out;
        };
        let dir = if m.from_client { "->" } else { "<-" };
        let kind = if m.is_text() { "text" } else { "binary" };
        let _ = writeln!(
            out,
            "{} {dir} WebSocket {kind} message {dir} {}{}",
            self.client_addr(&f.client),
            Self::server_of_http(f),
            escape_control(&f.request.path, false),
        );
        if self.settings.detail >= 3 {
            self.raw_body(&mut out, &m.content);
        }
        out
    }

    fn echo_websocket_end(&self, f: &HttpFlow) -> String {
        let Some(ws) = &f.websocket else {
            return String::new();
        };
        let code = ws.close_code.unwrap_or(1006);
        let reason = escape_control(&ws.close_reason, false);
        if matches!(code, 1000 | 1001 | 1005) {
            let by = if ws.closed_by_client == Some(true) {
                "client"
            } else {
                "server"
            };
            format!("WebSocket connection closed by {by}: {code} {reason}\n")
        } else {
            let mut err = close_code_name(code);
            if !reason.is_empty() {
                let _ = write!(err, " (reason: {reason})");
            }
            let line = format!(
                "Error in WebSocket connection to {}: WebSocket Error: {err}",
                Self::server_of_http(f)
            );
            format!("{}\n", self.paint(&line, sgr::PLAIN_RED))
        }
    }

    fn echo_websocket_error(&self, f: &HttpFlow) -> String {
        let msg = f.error.as_ref().map_or("unknown error", |e| e.msg.as_str());
        let line = format!(
            "Error in WebSocket connection to {}: {}",
            Self::server_of_http(f),
            escape_control(msg, false)
        );
        format!("{}\n", self.paint(&line, sgr::PLAIN_RED))
    }

    fn echo_tcp_message(&self, f: &TcpFlow) -> String {
        let mut out = String::new();
        let Some(m) = f.messages.last() else {
            return out;
        };
        let dir = if m.from_client { "->" } else { "<-" };
        let _ = writeln!(
            out,
            "{} {dir} tcp {dir} {}",
            self.client_addr(&f.client),
            Self::server_of_tcp(f),
        );
        if self.settings.detail >= 3 {
            self.raw_body(&mut out, &m.content);
        }
        out
    }

    fn echo_tcp_error(&self, f: &TcpFlow) -> String {
        let msg = f.error.as_ref().map_or("unknown error", |e| e.msg.as_str());
        let line = format!(
            "Error in TCP connection to {}: {}",
            Self::server_of_tcp(f),
            escape_control(msg, false)
        );
        format!("{}\n", self.paint(&line, sgr::PLAIN_RED))
    }

    /// Whether `flow` is to be printed: output is on and the flow matches `dumper_filter`
    /// (mitmproxy's `Dumper.match`).
    fn shows<'a>(&self, flow: impl Into<FlowRef<'a>>) -> bool {
        self.settings.detail > 0
            && self
                .settings
                .filter
                .as_ref()
                .is_none_or(|filter| filter.matches(flow))
    }
}

fn is_h1(v: HttpVersion) -> bool {
    matches!(v, HttpVersion::Http10 | HttpVersion::Http11)
}

fn is_latin1(content_type: &str) -> bool {
    content_type.split(';').map(str::trim).any(|p| {
        p.strip_prefix("charset=")
            .map(|c| c.trim_matches('"').to_ascii_lowercase())
            .is_some_and(|c| matches!(c.as_str(), "iso-8859-1" | "latin-1" | "latin1"))
    })
}

/// The name RFC 6455 gives a close code (as wsproto's `CloseReason`).
fn close_code_name(code: u16) -> String {
    let name = match code {
        1000 => "NORMAL_CLOSURE",
        1001 => "GOING_AWAY",
        1002 => "PROTOCOL_ERROR",
        1003 => "UNSUPPORTED_DATA",
        1005 => "NO_STATUS_RCVD",
        1006 => "ABNORMAL_CLOSURE",
        1007 => "INVALID_FRAME_PAYLOAD_DATA",
        1008 => "POLICY_VIOLATION",
        1009 => "MESSAGE_TOO_BIG",
        1010 => "MANDATORY_EXT",
        1011 => "INTERNAL_ERROR",
        1012 => "SERVICE_RESTART",
        1013 => "TRY_AGAIN_LATER",
        1015 => "TLS_HANDSHAKE_FAILED",
        _ => return format!("UNKNOWN_ERROR={code}"),
    };
    name.to_owned()
}

impl Addon for Dumper {
    fn name(&self) -> String {
        "dumper".to_owned()
    }

    /// The flow hooks only while it prints (`flow_detail` above 0): a quiet dumper leaves
    /// a proxy on its flowless path. The manager reads this again after every `configure`,
    /// so raising `flow_detail` at run time prints from the next flow, as mitmdump does.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if self.settings.detail == 0 {
            return LIFE;
        }
        LIFE.union(HookSet::of(&[
            HookKind::Response,
            HookKind::Error,
            HookKind::WebsocketMessage,
            HookKind::WebsocketError,
            HookKind::WebsocketEnd,
            HookKind::TcpMessage,
            HookKind::TcpError,
        ]))
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.settings = Settings::from_options(&cfg.options)?;
        Ok(())
    }

    async fn done(&mut self) {
        if !self.failed {
            let _ = self.out.flush();
        }
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_flow(flow);
            self.emit(&text);
        }
    }

    async fn error(&mut self, flow: &mut HttpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_flow(flow);
            self.emit(&text);
        }
    }

    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_websocket_message(flow);
            self.emit(&text);
        }
    }

    async fn websocket_error(&mut self, flow: &mut HttpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_websocket_error(flow);
            self.emit(&text);
        }
    }

    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_websocket_end(flow);
            self.emit(&text);
        }
    }

    async fn tcp_message(&mut self, flow: &mut TcpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_tcp_message(flow);
            self.emit(&text);
        }
    }

    async fn tcp_error(&mut self, flow: &mut TcpFlow) {
        if self.shows(&*flow) {
            let text = self.echo_tcp_error(flow);
            self.emit(&text);
        }
    }
}
