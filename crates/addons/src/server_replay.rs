//! Server replay (`-S`): requests answered from recorded flows, the server never contacted
//! (mitmproxy's `serverplayback`).

use std::collections::HashMap;

use waylay_core::flow::Response;
use waylay_core::flowfile;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{Addon, Flow, HookKind, HookSet, HttpFlow, OptionSpec, Options, OptionsError};

/// The options that change how requests are matched.
const HASH_OPTIONS: &[&str] = &[
    "server_replay_ignore_content",
    "server_replay_ignore_host",
    "server_replay_ignore_params",
    "server_replay_ignore_payload_params",
    "server_replay_ignore_port",
    "server_replay_use_headers",
];

/// What to do with a request no recorded flow matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    Forward,
    Kill,
    Status(u16),
}

/// How requests are matched (a snapshot of the `server_replay_*` options).
#[derive(Debug, Clone, Default)]
struct Matching {
    ignore_content: bool,
    ignore_host: bool,
    ignore_port: bool,
    ignore_params: Vec<String>,
    ignore_payload_params: Vec<String>,
    use_headers: Vec<String>,
}

impl Matching {
    fn from_options(o: &Options) -> Self {
        Self {
            ignore_content: o.bool("server_replay_ignore_content"),
            ignore_host: o.bool("server_replay_ignore_host"),
            ignore_port: o.bool("server_replay_ignore_port"),
            ignore_params: o.seq("server_replay_ignore_params").to_vec(),
            ignore_payload_params: o.seq("server_replay_ignore_payload_params").to_vec(),
            use_headers: o.seq("server_replay_use_headers").to_vec(),
        }
    }

    /// The loose key of a request, as mitmproxy's `_hash`: scheme, method, path, body (or
    /// its form fields minus the ignored ones), host, port, query minus the ignored
    /// parameters, and the chosen headers.
    fn key(&self, f: &HttpFlow) -> String {
        let r = &f.request;
        let mut key: Vec<String> = vec![
            r.scheme.to_string(),
            r.method.to_string(),
            r.path_only().to_owned(),
        ];
        if !self.ignore_content {
            let form = r.headers.get("content-type").is_some_and(|ct| {
                ct.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
            match (
                &r.raw_content,
                form && !self.ignore_payload_params.is_empty(),
            ) {
                (Some(body), true) => {
                    let text = String::from_utf8_lossy(body);
                    let mut q = waylay_core::Request::new("GET", "http", "h", 80, "/");
                    q.path = waylay_core::flow::format_compact!("/?{text}");
                    for (k, v) in q.query() {
                        if !self.ignore_payload_params.contains(&k) {
                            key.push(format!("{k:?}={v:?}"));
                        }
                    }
                }
                (Some(body), false) => key.push(format!("{:?}", &body[..])),
                (None, _) => key.push("None".into()),
            }
        }
        if !self.ignore_host {
            key.push(r.pretty_host());
        }
        if !self.ignore_port {
            key.push(r.port.to_string());
        }
        for (k, v) in r.query() {
            if !self.ignore_params.contains(&k) {
                key.push(k);
                key.push(v);
            }
        }
        for h in &self.use_headers {
            key.push(format!("{h:?}:{:?}", r.headers.get(h)));
        }
        format!("{key:?}")
    }
}

/// mitmproxy's server replay as an addon: with `server_replay` (`-S PATH`) set, every
/// request matching a recorded flow (see the `server_replay_*` options for what must match)
/// is answered in `request` with that flow's response (`is_replay` is `response`), and the
/// server is never contacted. Each recorded response answers once, in recording order,
/// unless `server_replay_reuse`. Requests nothing matches are handled by
/// `server_replay_extra`: forwarded to the server, killed, or answered with an empty 204,
/// 400, 404 or 500.
///
/// `server_replay_refresh` moves the `Date`, `Expires` and `Last-Modified` headers forward
/// by the age of the recording, as mitmproxy does (cookie expiry dates are left as
/// recorded). `server_replay_ignore_payload_params` applies to URL-encoded forms
/// (mitmproxy also looks into multipart forms; waylay matches those by their whole body).
#[derive(Debug, Default)]
pub struct ServerReplay {
    flows: HashMap<String, Vec<HttpFlow>>,
    loaded: Vec<String>,
    matching: Matching,
    extra: Option<Extra>,
    reuse: bool,
    refresh: bool,
}

impl ServerReplay {
    /// A server replay addon; it answers nothing until `server_replay` is set.
    pub fn new() -> Self {
        Self {
            extra: Some(Extra::Forward),
            refresh: true,
            ..Self::default()
        }
    }

    /// The options it declares (mitmproxy's names and defaults).
    pub fn option_specs() -> Vec<OptionSpec> {
        let b = |n: &str, v: bool, h: &str| OptionSpec::new(n, OptionValue::Bool(v), h);
        let q = |n: &str, h: &str| OptionSpec::new(n, OptionValue::Seq(Vec::new()), h);
        vec![
            q("server_replay", "Replay server responses from a saved file (a flow file or a HAR file)."),
            OptionSpec::new("server_replay_extra", OptionValue::Str("forward".into()), "Behaviour for extra requests during replay for which no replayable response was found: forward them, kill them, or answer with an empty response of that status.")
                .with_choices(["forward", "kill", "204", "400", "404", "500"]),
            b("server_replay_kill_extra", false, "Kill extra requests during replay (deprecated, prefer server_replay_extra=kill)."),
            b("server_replay_reuse", false, "Do not remove flows from the replay state after use, so a response can be replayed several times."),
            b("server_replay_nopop", false, "Deprecated alias for server_replay_reuse."),
            b("server_replay_refresh", true, "Refresh replayed responses: move the Date, Expires and Last-Modified headers forward by the age of the recording."),
            q("server_replay_use_headers", "Request headers that must match while searching for a saved flow to replay."),
            b("server_replay_ignore_content", false, "Ignore request content while searching for a saved flow to replay."),
            q("server_replay_ignore_params", "Request query parameters to ignore while searching for a saved flow to replay."),
            q("server_replay_ignore_payload_params", "Request payload parameters (application/x-www-form-urlencoded) to ignore while searching for a saved flow to replay."),
            b("server_replay_ignore_host", false, "Ignore the request's destination host while searching for a saved flow to replay."),
            b("server_replay_ignore_port", false, "Ignore the request's destination port while searching for a saved flow to replay."),
        ]
    }

    /// Replaces the recording with `flows` (HTTP flows with a response are kept).
    pub fn load_flows(&mut self, flows: impl IntoIterator<Item = Flow>) {
        self.flows.clear();
        for f in flows {
            if let Flow::Http(h) = f {
                let key = self.matching.key(&h);
                self.flows.entry(key).or_default().push(*h);
            }
        }
    }

    /// How many recorded flows are left to replay.
    pub fn count(&self) -> usize {
        self.flows.values().map(Vec::len).sum()
    }

    /// Whether requests are answered (or handled as extra): a recording is loaded.
    fn active(&self) -> bool {
        !self.flows.is_empty() || !self.loaded.is_empty()
    }

    fn next_response(&mut self, f: &HttpFlow) -> Option<Response> {
        let key = self.matching.key(f);
        let list = self.flows.get_mut(&key)?;
        let found = if self.reuse {
            list.iter().find_map(|r| r.response.clone())
        } else {
            let mut found = None;
            while !list.is_empty() {
                if let Some(r) = list.remove(0).response {
                    found = Some(r);
                    break;
                }
            }
            found
        };
        if list.is_empty() {
            self.flows.remove(&key);
        }
        found
    }
}

fn refresh(r: &mut Response) {
    let now = waylay_core::flow::now();
    r.refresh(now);
    let took = r.timestamp_end.map(|e| e - r.timestamp_start);
    r.timestamp_start = now;
    r.timestamp_end = took.map(|t| now + t);
}

impl Addon for ServerReplay {
    fn name(&self) -> String {
        "serverplayback".into()
    }

    /// `request` only while a recording is loaded (`server_replay` set, or
    /// [`load_flows`](Self::load_flows) called): without one, a proxy keeps its flowless
    /// path. The manager reads this again after every `configure`, so setting
    /// `server_replay` at run time answers from the next request, and clearing it forgets
    /// the recording and forwards again.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure]);
        if self.active() {
            LIFE.union(HookSet::of(&[HookKind::Request]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        let o = &cfg.options;
        if o.bool("server_replay_kill_extra") {
            tracing::warn!("server_replay_kill_extra is deprecated, use server_replay_extra=kill");
        }
        self.extra = Some(if o.bool("server_replay_kill_extra") {
            Extra::Kill
        } else {
            match o.str("server_replay_extra").unwrap_or("forward") {
                "kill" => Extra::Kill,
                "forward" => Extra::Forward,
                code => Extra::Status(code.parse().map_err(|_| {
                    OptionsError::rejected("server_replay_extra", format!("bad choice {code:?}"))
                })?),
            }
        });
        self.reuse = o.bool("server_replay_reuse") || o.bool("server_replay_nopop");
        self.refresh = o.bool("server_replay_refresh");
        let rehash = HASH_OPTIONS.iter().any(|n| cfg.changed(n));
        self.matching = Matching::from_options(o);
        let paths = o.seq("server_replay").to_vec();
        if paths != self.loaded {
            let mut flows = Vec::new();
            for p in &paths {
                flows.extend(
                    flowfile::read_file(p).map_err(|e| {
                        OptionsError::rejected("server_replay", format!("{p}: {e}"))
                    })?,
                );
            }
            self.load_flows(flows);
            self.loaded = paths;
        } else if rehash {
            let flows: Vec<Flow> = self
                .flows
                .drain()
                .flat_map(|(_, v)| v)
                .map(|f| Flow::Http(Box::new(f)))
                .collect();
            self.load_flows(flows);
        }
        Ok(())
    }

    async fn request(&mut self, f: &mut HttpFlow) {
        if !self.active() {
            return;
        }
        if let Some(mut resp) = self.next_response(f) {
            if self.refresh {
                refresh(&mut resp);
            }
            f.response = Some(resp);
            f.is_replay = Some("response".into());
            return;
        }
        match self.extra.unwrap_or(Extra::Forward) {
            Extra::Forward => {}
            Extra::Kill => {
                tracing::warn!(url = %f.request.url(), "server_playback: killed non-replay request");
                f.kill();
            }
            Extra::Status(code) => {
                tracing::warn!(url = %f.request.url(), "server_playback: returned {code} to a non-replay request");
                f.response = Some(Response::make(code, "", Vec::<(String, String)>::new()));
                f.is_replay = Some("response".into());
            }
        }
    }
}
