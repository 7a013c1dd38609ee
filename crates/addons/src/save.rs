//! `save_stream_file` (`-w`): every flow written to a mitmproxy-format flow file as it
//! completes, by a writer thread, never on a connection's path.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use waylay_core::flowfile::FlowWriter;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::{
    Addon, Filter, Flow, FlowId, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError, TcpFlow,
};

/// How many flows may wait for the writer thread before hooks wait for it.
pub const SAVE_QUEUE: usize = 1024;

enum Msg {
    /// One flow to append; the permit returns to the queue once it is written.
    Flow(Box<Flow>, OwnedSemaphorePermit),
    /// Flush and stop; answered when the file is closed.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// The writer thread of one open file.
struct Stream {
    tx: Sender<Msg>,
    slots: Arc<Semaphore>,
    path: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn open(spec: &str) -> Result<Self, String> {
        let (append, path) = match spec.strip_prefix('+') {
            Some(p) => (true, p),
            None => (false, spec),
        };
        let path = expand_home(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let shown = path.display().to_string();
        let (tx, rx) = crossbeam_channel::bounded(SAVE_QUEUE);
        let name = shown.clone();
        let thread = std::thread::Builder::new()
            .name("waylay-save".into())
            .spawn(move || {
                write_loop(
                    &rx,
                    FlowWriter::new(BufWriter::with_capacity(256 * 1024, file)),
                    &name,
                )
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Self {
            tx,
            slots: Arc::new(Semaphore::new(SAVE_QUEUE)),
            path: shown,
            thread: Some(thread),
        })
    }

    /// Queues `flow`; waits (without blocking the thread) while the queue is full.
    async fn send(&self, flow: Flow, waits: &mut u64) {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                *waits += 1;
                if *waits == 1 {
                    tracing::warn!(
                        path = %self.path,
                        "save: the flow file writer is behind; flows wait for it (none is dropped)"
                    );
                }
                match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        // The semaphore bounds the channel, so this never blocks.
        let _ = self.tx.send(Msg::Flow(Box::new(flow), permit));
    }

    async fn close(mut self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Some(t) = self.thread.take() {
            // The thread has answered and is returning.
            let _ = t.join();
        }
    }
}

fn write_loop(rx: &Receiver<Msg>, mut w: FlowWriter<BufWriter<std::fs::File>>, path: &str) {
    let failed = AtomicBool::new(false);
    let fail = |e: std::io::Error| {
        if !failed.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path,
                "save: writing the flow file failed, flows are no longer saved: {e}"
            );
        }
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Flow(flow, permit) => {
                if !failed.load(Ordering::Relaxed)
                    && let Err(e) = w.add(&flow)
                {
                    fail(e);
                }
                drop(permit);
                // Flush whenever the queue runs dry, so the file is current when idle.
                if rx.is_empty()
                    && !failed.load(Ordering::Relaxed)
                    && let Err(e) = w.flush()
                {
                    fail(e);
                }
            }
            Msg::Close(done) => {
                if !failed.load(Ordering::Relaxed)
                    && let Err(e) = w.flush()
                {
                    fail(e);
                }
                drop(w);
                let _ = done.send(());
                return;
            }
        }
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// mitmproxy's `save` addon: with `save_stream_file` set (`-w PATH`, `+PATH` appends), each
/// flow is written when it completes (an HTTP flow at `response` or `error`, a WebSocket
/// flow at `websocket_end`/`websocket_error`, a TCP flow at `tcp_end`/`tcp_error`); flows
/// still open at shutdown are written in `done` as they are then.
///
/// Writing happens on a writer thread fed by a bounded queue ([`SAVE_QUEUE`] flows). When
/// the queue is full the hook waits for room (the flow's connection waits with it): no flow
/// is ever dropped. How often that happened is logged at shutdown.
///
/// `save_stream_filter` (mitmproxy's filter language) limits which flows are written.
///
/// The option may be set, changed or cleared while the proxy runs: setting it opens the file
/// (flow hooks are declared only while one is open); changing it closes the old file, and
/// flows still open are written to the new one when they finish; clearing it writes the open
/// flows, then flushes and closes the file before `configure` returns.
///
/// A streamed body (above `stream_large_bodies`) is not stored, as in mitmproxy: it is
/// written as missing (`None`).
#[derive(Debug, Default)]
pub struct Save {
    stream: Option<StreamSlot>,
    spec: Option<String>,
    /// Flows seen but not finished, written at shutdown: a copy taken at `request` (or
    /// `tcp_start`), kept up to date with each WebSocket/TCP message.
    active: HashMap<FlowId, Flow>,
    /// `save_stream_filter`: only matching flows are written.
    filter: Option<Filter>,
    waits: u64,
}

/// The open stream (a newtype so `Save` can derive `Debug`).
struct StreamSlot(Stream);

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("path", &self.0.path)
            .finish()
    }
}

impl Save {
    /// A save addon; it writes nothing until `save_stream_file` is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options it declares (also in the core options, under mitmproxy's names).
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::optional(
                "save_stream_file",
                "Stream flows to file as they complete; prefix the path with + to append.",
            ),
            OptionSpec::optional(
                "save_stream_filter",
                "Filter which flows are written to file.",
            ),
        ]
    }

    /// Checks the options as `configure` will (a bad `save_stream_filter`), without opening
    /// any file.
    pub fn check_options(options: &waylay_core::Options) -> Result<(), OptionsError> {
        parse_filter(options).map(drop)
    }

    async fn write(&mut self, id: FlowId, flow: Flow) {
        self.active.remove(&id);
        if let Some(s) = &self.stream
            && self.filter.as_ref().is_none_or(|f| f.matches(&flow))
        {
            s.0.send(flow, &mut self.waits).await;
        }
    }

    /// Flushes and closes the open file. With `unfinished`, the flows not yet finished are
    /// written to it first as they are now (at shutdown, or when `save_stream_file` is
    /// cleared); without (the file changes), they stay and go to the next file when they
    /// finish, as in mitmproxy.
    async fn close(&mut self, unfinished: bool) {
        if let Some(s) = self.stream.take() {
            if unfinished {
                let open: Vec<Flow> = self.active.drain().map(|(_, f)| f).collect();
                for f in open {
                    if self.filter.as_ref().is_none_or(|flt| flt.matches(&f)) {
                        s.0.send(f, &mut self.waits).await;
                    }
                }
            }
            if self.waits > 0 {
                tracing::warn!(
                    path = %s.0.path,
                    waits = self.waits,
                    "save: flows waited for the flow file writer {} times (none was dropped)",
                    self.waits
                );
            }
            self.waits = 0;
            s.0.close().await;
        }
        if unfinished {
            self.active.clear();
        }
    }
}

fn parse_filter(options: &waylay_core::Options) -> Result<Option<Filter>, OptionsError> {
    options
        .str("save_stream_filter")
        .map(Filter::parse)
        .transpose()
        .map_err(|e| OptionsError::rejected("save_stream_filter", e.to_string()))
}

fn http(f: &HttpFlow) -> Flow {
    Flow::Http(Box::new(f.clone()))
}

fn tcp(f: &TcpFlow) -> Flow {
    Flow::Tcp(Box::new(f.clone()))
}

impl Addon for Save {
    fn name(&self) -> String {
        "save".into()
    }

    /// The flow hooks only while a file is open: without one, a proxy keeps its flowless
    /// path. The manager reads this again after every `configure`, so setting
    /// `save_stream_file` at run time starts writing from the next flow, and clearing it
    /// (after the file is flushed and closed) takes the addon off the flow routes.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if self.stream.is_none() {
            return LIFE;
        }
        LIFE.union(HookSet::of(&[
            HookKind::Request,
            HookKind::Response,
            HookKind::Error,
            HookKind::WebsocketMessage,
            HookKind::WebsocketEnd,
            HookKind::WebsocketError,
            HookKind::TcpStart,
            HookKind::TcpMessage,
            HookKind::TcpEnd,
            HookKind::TcpError,
        ]))
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if !cfg.changed("save_stream_file") && !cfg.changed("save_stream_filter") {
            return Ok(());
        }
        self.filter = parse_filter(&cfg.options)?;
        let spec = cfg.options.str("save_stream_file").map(str::to_owned);
        if spec == self.spec {
            return Ok(());
        }
        let new = match spec.as_deref() {
            Some(s) => {
                Some(Stream::open(s).map_err(|e| OptionsError::rejected("save_stream_file", e))?)
            }
            None => None,
        };
        let unfinished = new.is_none();
        self.close(unfinished).await;
        self.stream = new.map(StreamSlot);
        self.spec = spec;
        Ok(())
    }

    async fn done(&mut self) {
        self.close(true).await;
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        if self.stream.is_some() {
            self.active.insert(flow.id, http(flow));
        }
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        // A WebSocket flow is written at its end, with its messages.
        if flow.websocket.is_none() {
            self.write(flow.id, http(flow)).await;
        } else if self.stream.is_some() {
            self.active.insert(flow.id, http(flow));
        }
    }

    async fn error(&mut self, flow: &mut HttpFlow) {
        if flow.websocket.is_none() {
            self.write(flow.id, http(flow)).await;
        }
    }

    async fn websocket_message(&mut self, flow: &mut HttpFlow) {
        // Keep the copy current without cloning the whole conversation per message.
        let (Some(Flow::Http(copy)), Some(ws)) = (self.active.get_mut(&flow.id), &flow.websocket)
        else {
            return;
        };
        if let (Some(mine), Some(last)) = (copy.websocket.as_mut(), ws.messages.last()) {
            mine.messages.push(last.clone());
        }
    }

    async fn websocket_end(&mut self, flow: &mut HttpFlow) {
        self.write(flow.id, http(flow)).await;
    }

    async fn websocket_error(&mut self, flow: &mut HttpFlow) {
        self.write(flow.id, http(flow)).await;
    }

    async fn tcp_start(&mut self, flow: &mut TcpFlow) {
        if self.stream.is_some() {
            self.active.insert(flow.id, tcp(flow));
        }
    }

    async fn tcp_message(&mut self, flow: &mut TcpFlow) {
        let Some(Flow::Tcp(copy)) = self.active.get_mut(&flow.id) else {
            return;
        };
        if let Some(last) = flow.messages.last() {
            copy.messages.push(last.clone());
        }
        // The proxy keeps a bounded window of messages per flow; so does the copy.
        let excess = copy.messages.len().saturating_sub(flow.messages.len());
        copy.messages.drain(..excess);
    }

    async fn tcp_end(&mut self, flow: &mut TcpFlow) {
        self.write(flow.id, tcp(flow)).await;
    }

    async fn tcp_error(&mut self, flow: &mut TcpFlow) {
        self.write(flow.id, tcp(flow)).await;
    }
}
