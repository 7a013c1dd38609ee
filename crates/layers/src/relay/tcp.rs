//! Raw TCP: bytes relayed between the client and a server, with the `tcp_*` events, and
//! passthrough (the same relay with no flow and no `tcp_*` events).
//!
//! Events of one raw TCP connection, in order (as mitmproxy's `TCPLayer` with a lazily opened
//! server connection):
//!
//! ```text
//! tcp_start ─ server_connect ─ tcp_message* ─ server_disconnect ─ tcp_end | tcp_error
//! ```
//!
//! Every flow gets `tcp_start` and then exactly one of `tcp_end` (both directions closed
//! cleanly) or `tcp_error` (the server could not be reached, a side failed, or the flow was
//! killed; `flow.error` says which). A passthrough connection fires only `server_connect` and
//! `server_disconnect`.
//!
//! Inside an intercepted TLS tunnel the server connection already exists when the layer
//! starts (waylay connects to the server, TLS included, before answering the client's
//! handshake), so `server_connect` came earlier and the layer's events are
//!
//! ```text
//! tcp_start ─ tcp_message* ─ server_disconnect ─ tcp_end | tcp_error
//! ```
//!
//! When no addon handles `tcp_message`, the two directions are plain copies (no message per
//! chunk). Otherwise each chunk read becomes a [`TcpMessage`], goes through `tcp_message`, and
//! its possibly changed content (empty: nothing) is written before the next chunk of that
//! direction is read. Either way a direction reads again only once its last chunk is written,
//! so a slow reader on one side stops the proxy reading from the other and a connection holds
//! at most one chunk per direction in flight.
//!
//! A FIN from one side is forwarded as a shutdown of the other side's write; the other
//! direction goes on until it ends too.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use waylay_core::flow::{
    Address, FlowError, InjectQueues, KILLED_MESSAGE, KillSwitch, Server, TcpInjector, TcpMessage,
    now,
};
use waylay_core::hooks::ServerConnectionHookData;
use waylay_core::{HookKind, TcpFlow, Via};

use crate::conn::dial::{DialSpec, ServerStream, connect_stream};
use crate::context::ConnCtx;
use crate::io::{BoxIo, PrefixedIo};
use crate::relay::session::{FlowSlot, History, Stop, StopSignal, next_injected};

/// Most bytes read from one side at a time (and so the most one direction holds in flight).
pub(crate) const CHUNK: usize = 64 * 1024;

/// `flow.messages` keeps the newest messages within these bounds; when a connection exceeds
/// either, the oldest are dropped until it is within half of both. A long-lived connection
/// thus costs bounded memory even when an addon handles `tcp_message` (mitmproxy keeps
/// every message).
pub(crate) const RETAIN_BYTES: usize = 4 * 1024 * 1024;
/// See [`RETAIN_BYTES`].
pub(crate) const RETAIN_MESSAGES: usize = 4096;

/// What the relay does besides moving bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Raw TCP with the `tcp_*` events.
    Tcp,
    /// Untouched, with no `tcp_*` events (`ignore_hosts`, `allow_hosts`, `ignore_connection`).
    Passthrough,
}

/// Why a relay ended before both directions closed cleanly.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("client connection failed: {0}")]
    Client(io::Error),
    #[error("server connection failed: {0}")]
    Server(io::Error),
    #[error("{}", KILLED_MESSAGE)]
    Killed,
    #[error("proxy is shutting down")]
    Shutdown,
}

impl RelayError {
    fn side(client: bool) -> impl FnOnce(io::Error) -> Self {
        move |e| {
            if client {
                Self::Client(e)
            } else {
                Self::Server(e)
            }
        }
    }
}

/// The server side of a TCP layer.
pub(crate) enum ServerSide {
    /// Dial this address over plain TCP after `tcp_start` (`server_connect` fires then),
    /// through this route (`None`: the mode's).
    Dial(Address, Option<Via>),
    /// Already connected (inside an intercepted TLS tunnel: the server's TLS is set up and
    /// `server_connect` fired before the layer was chosen). `prefix` holds bytes already read
    /// from the server (it spoke first while the client's protocol was being detected).
    Connected {
        stream: Box<ServerStream>,
        prefix: Bytes,
    },
    /// Connecting failed before the layer started: `tcp_start`, then `tcp_error` with this.
    Failed { address: Address, error: String },
}

impl std::fmt::Debug for ServerSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dial(a, via) => f.debug_tuple("Dial").field(a).field(via).finish(),
            Self::Connected { stream, prefix } => f
                .debug_struct("Connected")
                .field("stream", stream)
                .field("prefix", &prefix.len())
                .finish(),
            Self::Failed { address, error } => f
                .debug_struct("Failed")
                .field("address", address)
                .field("error", error)
                .finish(),
        }
    }
}

impl ServerSide {
    fn address(&self) -> Address {
        match self {
            Self::Dial(a, _) | Self::Failed { address: a, .. } => a.clone(),
            Self::Connected { stream, .. } => stream.server.address.clone(),
        }
    }
}

/// Serves a raw TCP (or passthrough) connection from `client` to the server until both sides
/// are done or one fails.
pub(crate) async fn serve(ctx: Rc<ConnCtx>, client: BoxIo, server_side: ServerSide, mode: Mode) {
    let address = server_side.address();
    let manager = ctx.manager();
    let wants_flow = mode == Mode::Tcp
        && [
            HookKind::TcpStart,
            HookKind::TcpMessage,
            HookKind::TcpError,
            HookKind::TcpEnd,
        ]
        .into_iter()
        .any(|k| manager.handles(k));
    let hooked = wants_flow && manager.handles(HookKind::TcpMessage);
    let known = match &server_side {
        ServerSide::Connected { stream, .. } => Arc::new(stream.server.clone()),
        ServerSide::Dial(..) | ServerSide::Failed { .. } => Arc::new(Server::new(address)),
    };
    // Addons holding the flow may inject at any time (`TcpFlow::injector`).
    let mut queues = None;
    let mut flow = wants_flow.then(|| {
        let mut f = Box::new(TcpFlow::new(ctx.client(), Some(known)));
        let (injector, q) = TcpInjector::channel();
        f.set_injector(injector);
        queues = Some(q);
        f
    });

    if let Some(f) = flow.take() {
        let Some(f) = ctx.fire(HookKind::TcpStart, f).await else {
            return;
        };
        if f.killed() {
            if let ServerSide::Connected { stream, .. } = server_side {
                stream.close(&ctx).await;
            }
            finish(&ctx, f, Some(RelayError::Killed)).await;
            return;
        }
        flow = Some(f);
    }

    let (server, info) = match connect(&ctx, server_side).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(client.addr = %ctx.client().peername, "{e}");
            if let Some(mut f) = flow {
                f.error = Some(FlowError::new(e));
                f.live = false;
                let _ = ctx.fire(HookKind::TcpError, f).await;
            }
            return;
        }
    };
    if let Some(f) = flow.as_mut() {
        f.server = Some(info.clone());
    }

    // Someone may kill the flow at any time while it relays (the web UI does).
    let switch = flow.as_ref().and_then(|f| f.existing_kill_switch());
    let (result, flow) = if hooked {
        relay_hooked(&ctx, client, server, flow, queues, switch).await
    } else {
        (relay_plain(client, server, queues, switch).await, flow)
    };

    let mut s = Server::clone(&info);
    s.timestamp_end = Some(now());
    if let Err(e) = &result {
        tracing::debug!(client.addr = %ctx.client().peername, server.addr = %s.address, "relay ended: {e}");
    }
    let data = Box::new(ServerConnectionHookData {
        client: ctx.client(),
        server: s.clone(),
    });
    let _ = ctx.fire(HookKind::ServerDisconnect, data).await;
    if let Some(mut f) = flow {
        f.server = Some(Arc::new(s));
        finish(&ctx, f, result.err()).await;
    }
}

/// The server connection of `side`: dialed now (`server_connect` fires), or the one already
/// made (its early bytes put back in front); why not, as the flow's error.
async fn connect(ctx: &Rc<ConnCtx>, side: ServerSide) -> Result<(BoxIo, Arc<Server>), String> {
    match side {
        ServerSide::Dial(address, via) => {
            let spec = DialSpec {
                address,
                tls: None,
                via,
                proxy_form: false,
            };
            connect_stream(ctx, &spec)
                .await
                .map(|s| (s.io, Arc::new(s.server)))
                .map_err(|e| e.to_string())
        }
        ServerSide::Connected { stream, prefix } => {
            let io: BoxIo = if prefix.is_empty() {
                stream.io
            } else {
                Box::new(PrefixedIo::new(prefix, stream.io))
            };
            let ServerStream { server, .. } = *stream;
            Ok((io, Arc::new(server)))
        }
        ServerSide::Failed { error, .. } => Err(error),
    }
}

/// Fires `tcp_end`, or `tcp_error` with `error` recorded (a kill keeps its own message).
async fn finish(ctx: &ConnCtx, mut flow: Box<TcpFlow>, error: Option<RelayError>) {
    flow.live = false;
    match error {
        None => {
            let _ = ctx.fire(HookKind::TcpEnd, flow).await;
        }
        Some(e) => {
            if flow.error.is_none() {
                flow.error = Some(FlowError::new(e.to_string()));
            }
            let _ = ctx.fire(HookKind::TcpError, flow).await;
        }
    }
}

/// Copies `r` to `w` until `r` ends (then shuts `w`'s write side) or either fails. The
/// writer is shared with the injection loop, which writes between chunks.
async fn copy_half<R, W>(mut r: R, w: &Mutex<W>, from_client: bool) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(RelayError::side(from_client))?;
        let mut w = w.lock().await;
        if n == 0 {
            if let Err(e) = w.shutdown().await {
                tracing::debug!("forwarding a half-close failed: {e}");
            }
            return Ok(());
        }
        let chunk = buf.get(..n).unwrap_or_default();
        w.write_all(chunk)
            .await
            .map_err(RelayError::side(!from_client))?;
        w.flush().await.map_err(RelayError::side(!from_client))?;
    }
}

/// Writes what addons inject at any time, between the relay's own chunks; never ends by
/// itself (the relay's end drops it).
async fn inject_loop<C, S>(
    mut queues: InjectQueues<Bytes>,
    client: &Mutex<C>,
    server: &Mutex<S>,
    on_sent: impl Fn(bool, &Bytes),
) where
    C: AsyncWrite + Unpin,
    S: AsyncWrite + Unpin,
{
    let mut open = [true; 2];
    while let Some((towards_client, data)) = next_injected(&mut queues, &mut open).await {
        let written = if towards_client {
            write_locked(client, &data).await
        } else {
            write_locked(server, &data).await
        };
        match written {
            Ok(()) => on_sent(towards_client, &data),
            Err(e) => tracing::debug!(to_client = towards_client, "injecting failed: {e}"),
        }
    }
    futures::future::pending::<()>().await;
}

async fn write_locked<W: AsyncWrite + Unpin>(w: &Mutex<W>, data: &[u8]) -> io::Result<()> {
    let mut w = w.lock().await;
    w.write_all(data).await?;
    w.flush().await
}

/// The fast path: both directions copied concurrently, no message per chunk (injected
/// messages are sent, not recorded: there are no messages on this path).
async fn relay_plain(
    client: BoxIo,
    server: BoxIo,
    queues: Option<InjectQueues<Bytes>>,
    switch: Option<KillSwitch>,
) -> Result<(), RelayError> {
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let (cw, sw) = (Mutex::new(cw), Mutex::new(sw));
    let copy = futures::future::try_join(copy_half(cr, &sw, true), copy_half(sr, &cw, false));
    let inject = async {
        match queues {
            Some(q) => inject_loop(q, &cw, &sw, |_, _| {}).await,
            None => futures::future::pending().await,
        }
    };
    // No flow is out at an addon on this path: dropping the copies at once is safe, and
    // both sockets close when this returns.
    let killed = async {
        match switch {
            Some(s) => s.killed().await,
            None => futures::future::pending().await,
        }
    };
    tokio::select! {
        r = copy => r.map(|_| ()),
        () = inject => Ok(()),
        () = killed => Err(RelayError::Killed),
    }
}

type DynRead = Box<dyn AsyncRead + Unpin>;
type DynWrite = Box<dyn AsyncWrite + Unpin>;

/// One side's write half, and whether its write side was shut (after the other side's FIN).
struct Writer {
    w: DynWrite,
    shut: bool,
}

/// What the two directions of a hooked relay share (one task, one thread).
struct Hooked<'a> {
    ctx: &'a ConnCtx,
    flow: FlowSlot<TcpFlow>,
    client_w: Mutex<Writer>,
    server_w: Mutex<Writer>,
    /// Given when one direction fails, so the other stops at its next read or write.
    stop: Stop,
    /// The first failure.
    error: RefCell<Option<RelayError>>,
    /// Bounds `flow.messages`.
    history: History,
}

/// How a direction ended: `Ok(())` cleanly or cancelled (the error is in `Hooked::error`).
type Step<T> = Result<T, ()>;

impl Hooked<'_> {
    fn fail(&self, e: RelayError) {
        let mut slot = self.error.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
        drop(slot);
        self.stop.stop();
    }

    /// Runs `tcp_message` for `content`; answers what to send on and the injected messages.
    async fn on_message(
        &self,
        from_client: bool,
        content: Bytes,
    ) -> Result<(Bytes, Vec<TcpMessage>), RelayError> {
        let mut slot = self.flow.lock().await;
        let Some(mut flow) = slot.take() else {
            return Err(RelayError::Shutdown);
        };
        self.history.add(content.len());
        flow.messages.push(TcpMessage::new(from_client, content));
        let Some(mut flow) = self.ctx.fire(HookKind::TcpMessage, flow).await else {
            return Err(RelayError::Shutdown);
        };
        // Held: wait for the release, which may carry an edit of the held (last) message.
        if flow.intercept_state().is_intercepted()
            && flow.wait_released().await == waylay_core::flow::Release::Killed
        {
            flow.kill();
        }
        flow.intercept_state().reset();
        let out = flow
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let injected = flow.take_injected();
        for m in &injected {
            self.history.add(m.content.len());
        }
        flow.messages.extend(injected.iter().cloned());
        self.history.trim(&mut flow.messages);
        let killed = flow.killed();
        *slot = Some(flow);
        if killed {
            Err(RelayError::Killed)
        } else {
            Ok((out, injected))
        }
    }

    /// Writes `data` to the client (`to_client`) or the server; nothing when it is empty or
    /// that side's write was already shut.
    async fn write(&self, to_client: bool, data: &[u8], stop: &mut StopSignal) -> Step<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut w = if to_client {
            self.client_w.lock().await
        } else {
            self.server_w.lock().await
        };
        if w.shut {
            tracing::debug!(
                to_client,
                bytes = data.len(),
                "dropping bytes for a side already closed for writing"
            );
            return Ok(());
        }
        let write = async {
            w.w.write_all(data).await?;
            w.w.flush().await
        };
        match stop.unless_stopped(write).await {
            None => Err(()),
            Some(r) => r.map_err(|e| self.fail(RelayError::side(to_client)(e))),
        }
    }

    /// Sends what addons inject at any time, recording each as an injected message; never
    /// ends by itself.
    async fn injections(&self, mut queues: InjectQueues<Bytes>) {
        let mut stop = self.stop.signal();
        let mut open = [true; 2];
        while let Some((towards_client, data)) = next_injected(&mut queues, &mut open).await {
            {
                let mut slot = self.flow.lock().await;
                if let Some(flow) = slot.as_mut() {
                    let mut m = TcpMessage::new(!towards_client, data.clone());
                    m.injected = true;
                    self.history.add(data.len());
                    flow.messages.push(m);
                    self.history.trim(&mut flow.messages);
                }
            }
            if self.write(towards_client, &data, &mut stop).await.is_err() {
                break;
            }
        }
        futures::future::pending::<()>().await;
    }

    /// One direction: read a chunk, run `tcp_message`, write what comes back, repeat.
    async fn pump(&self, mut r: DynRead, from_client: bool) -> Step<()> {
        let mut stop = self.stop.signal();
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(CHUNK);
            let n = stop
                .unless_stopped(r.read_buf(&mut buf))
                .await
                .ok_or(())?
                .map_err(|e| self.fail(RelayError::side(from_client)(e)))?;
            if n == 0 {
                let mut w = if from_client {
                    self.server_w.lock().await
                } else {
                    self.client_w.lock().await
                };
                w.shut = true;
                if let Err(e) = w.w.shutdown().await {
                    tracing::debug!("forwarding a half-close failed: {e}");
                }
                return Ok(());
            }
            let content = buf.split().freeze();
            let (out, injected) = self
                .on_message(from_client, content)
                .await
                .map_err(|e| self.fail(e))?;
            self.write(!from_client, &out, &mut stop).await?;
            for m in injected {
                // An injected message "from the client" goes to the server.
                self.write(!m.from_client, &m.content, &mut stop).await?;
            }
        }
    }
}

/// The hooked path: both directions concurrently on this task, each chunk through
/// `tcp_message`. Gives the flow back.
async fn relay_hooked(
    ctx: &ConnCtx,
    client: BoxIo,
    server: BoxIo,
    flow: Option<Box<TcpFlow>>,
    queues: Option<InjectQueues<Bytes>>,
    switch: Option<KillSwitch>,
) -> (Result<(), RelayError>, Option<Box<TcpFlow>>) {
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let h = Hooked {
        ctx,
        flow: FlowSlot::new(flow),
        client_w: Mutex::new(Writer {
            w: Box::new(cw),
            shut: false,
        }),
        server_w: Mutex::new(Writer {
            w: Box::new(sw),
            shut: false,
        }),
        stop: Stop::new(),
        error: RefCell::new(None),
        history: History::new(RETAIN_BYTES, RETAIN_MESSAGES),
    };
    let pumps = futures::future::join(h.pump(Box::new(cr), true), h.pump(Box::new(sr), false));
    let injections = async {
        match queues {
            Some(q) => h.injections(q).await,
            None => futures::future::pending().await,
        }
    };
    // Tripped: both directions stop at their next read or write (never inside a hook,
    // which holds the flow) and the relay ends killed.
    let watch = async {
        if let Some(s) = switch {
            s.killed().await;
            h.fail(RelayError::Killed);
        }
        futures::future::pending::<()>().await;
    };
    tokio::select! {
        _ = pumps => {}
        () = injections => {}
        () = watch => {}
    }
    let result = match h.error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    (result, h.flow.into_inner())
}
