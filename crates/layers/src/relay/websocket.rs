//! WebSocket (RFC 6455): the upgrade handshake's special cases, and the message relay
//! between the client and the server once both sides switched protocols.
//!
//! The handshake is an HTTP/1.1 flow like any other (`websocket_handshake`, then
//! `request_headers` … `response`); a 101 hands both connections to [`run`], which fires
//! `websocket_start`, `websocket_message` per message and `websocket_end` (a close frame was
//! exchanged) or `websocket_error` (a side went away without one).
//!
//! Choices worth knowing:
//! - **Extensions are negotiated away**: `Sec-WebSocket-Extensions` is removed from the
//!   request after `websocket_handshake`, so the server never agrees to permessage-deflate
//!   (which tungstenite does not speak) and frames pass as they are.
//! - **Messages are recorded only when some addon handles `websocket_message`**. Without
//!   such an addon a message is forwarded as it was received, with no copy and no hook.
//! - **The history is bounded**: mitmproxy keeps every message, so a long-lived connection
//!   grows without limit. waylay keeps the newest messages whose contents add up to at most
//!   [`HISTORY_BYTES`] (the newest one always); older ones are removed from the front of
//!   `messages` and counted in `flow.metadata["websocket_messages_forgotten"]`.
//! - **Pings and pongs pass through.** tungstenite answers a ping by itself, so the peer's
//!   own pong to a forwarded ping is swallowed (matched by payload) and each side sees exactly
//!   one pong per ping; unsolicited pongs are forwarded.
//! - **Backpressure**: each direction reads one message, runs the hook and writes it to the
//!   other side before it reads the next, so a slow reader stops the proxy reading from its
//!   peer; nothing is queued beyond one message per direction.
//! - **A message can be intercepted**: when `websocket_message` leaves the flow intercepted,
//!   the message is held (and the other direction with it, as the hook's flow is shared)
//!   until it is resumed, with an edit of the message or not, or killed (the connection
//!   then ends as `websocket_error`), as mitmproxy does.
//! - Messages injected by an addon are recorded in `messages` (`injected` set) and sent after
//!   the hook's own message; they do not fire `websocket_message` themselves.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::lock::Mutex as AsyncMutex;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use waylay_core::flow::{
    HttpFlow, KILLED_MESSAGE, Release, Server, WebSocketData, WebSocketInjector, WebSocketMessage,
    WebSocketMessageKind, now,
};
use waylay_core::hooks::ServerConnectionHookData;
use waylay_core::{FlowError, HookKind, ManagerHandle};

use crate::context::{ConnCtx, fire};
use crate::relay::session::{FlowSlot, History, Stop, StopSignal};

/// Largest message (and frame) accepted from either side: 16 MiB messages must pass, with
/// room to spare, while one peer still cannot make waylay buffer without limit.
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Initial read buffer per side.
const READ_BUFFER: usize = 16 << 10;

/// Content bytes of recorded messages kept per connection (see the module docs).
const HISTORY_BYTES: usize = 32 << 20;

/// How long the second side gets to answer a close frame before both connections are
/// dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Pings forwarded and not yet answered, per side; older ones are forgotten (their pong
/// would then be forwarded, a harmless unsolicited pong).
const MAX_PENDING_PINGS: usize = 16;

type Ws = WebSocketStream<TokioIo<Upgraded>>;
type Sink = Rc<Peer>;

/// The writing half of one side's WebSocket.
struct Peer {
    sink: AsyncMutex<SplitSink<Ws, WsMessage>>,
    /// `client` or `server`, for error messages.
    name: &'static str,
}

/// Fires `server_disconnect` for an upgraded server connection (its IO driver does not).
pub(crate) async fn server_gone(manager: &ManagerHandle, ctx: &ConnCtx, server: &Arc<Server>) {
    let mut s = Server::clone(server);
    s.timestamp_end = Some(now());
    let data = Box::new(ServerConnectionHookData {
        client: ctx.client(),
        server: s,
    });
    let _ = fire(manager, HookKind::ServerDisconnect, data).await;
}

/// How one direction of the relay ended.
#[derive(Debug)]
enum End {
    /// A close frame passed (or answered one that did).
    Closed,
    /// A side failed or went away without a close frame.
    Failed(String),
    /// Told to stop because the other direction ended.
    Stopped,
    /// The addon manager is gone (shutdown); the flow went with it.
    Shutdown,
}

/// What both directions share.
struct Shared {
    manager: ManagerHandle,
    flow: FlowSlot<HttpFlow>,
    /// A close frame was forwarded: the next close from the other side is its answer.
    closing: Cell<bool>,
    /// Bounds the recorded messages (see [`forget_old_messages`]).
    history: History,
    /// Payloads of pings forwarded to the server (index 1) or the client (index 0) whose
    /// pong tungstenite already sent back: that side's own pong is swallowed.
    pings: [RefCell<VecDeque<Bytes>>; 2],
}

impl Shared {
    fn expect_pong(&self, from_client: bool, payload: Bytes) {
        let mut q = self.pings[usize::from(from_client)].borrow_mut();
        if q.len() >= MAX_PENDING_PINGS {
            q.pop_front();
        }
        q.push_back(payload);
    }

    fn swallow_pong(&self, from_client: bool, payload: &[u8]) -> bool {
        let mut q = self.pings[usize::from(from_client)].borrow_mut();
        match q.iter().position(|p| p.as_ref() == payload) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

fn side(from_client: bool) -> &'static str {
    if from_client { "client" } else { "server" }
}

/// Relays messages between the upgraded client and server connections until a close
/// handshake or a failure, firing the WebSocket hooks.
pub(crate) async fn run(
    ctx: Rc<ConnCtx>,
    flow: Box<HttpFlow>,
    client: Upgraded,
    server_io: Upgraded,
    server: Arc<Server>,
) {
    let manager = ctx.manager().clone();
    if flow.websocket.is_none() {
        relay_untouched(&ctx, client, server_io, &server).await;
        return;
    }
    // Addons may inject at any time from here on (see `WebSocketData::injector`).
    let (injector, queues) = WebSocketInjector::channel();
    let mut flow = flow;
    if let Some(ws) = flow.websocket.as_mut() {
        ws.set_injector(injector);
    }
    let Some(flow) = fire(&manager, HookKind::WebsocketStart, flow).await else {
        return;
    };
    // Someone may kill the flow at any time while it relays (the web UI does).
    let switch = flow.existing_kill_switch();
    let (client_sink, client_stream) = open(client, Role::Server, "client").await;
    let (server_sink, server_stream) = open(server_io, Role::Client, "server").await;
    let sh = Rc::new(Shared {
        manager: manager.clone(),
        flow: FlowSlot::new(Some(flow)),
        closing: Cell::new(false),
        history: History::new(HISTORY_BYTES, usize::MAX),
        pings: Default::default(),
    });
    let stop = Stop::new();
    let ends = match send_start_injections(&sh, &client_sink, &server_sink, stop.signal()).await {
        Some(end) => vec![end],
        None => {
            let client = (client_stream, client_sink.clone());
            let server = (server_stream, server_sink.clone());
            let relay = both_directions(sh.clone(), client, server, queues, &stop);
            match switch {
                None => relay.await,
                Some(switch) => {
                    let killed = Cell::new(false);
                    // Trips: both directions stop at their next read or write (never inside a
                    // hook, which holds the flow), and the flow ends with the kill.
                    let watch = async {
                        switch.killed().await;
                        killed.set(true);
                        stop.stop();
                        std::future::pending::<()>().await;
                    };
                    let mut ends = tokio::select! {
                        ends = relay => ends,
                        () = watch => Vec::new(),
                    };
                    if killed.get() {
                        ends.push(End::Failed(KILLED_MESSAGE.to_owned()));
                    }
                    ends
                }
            }
        }
    };
    // Both connections close here.
    drop((client_sink, server_sink));
    if finish(&ctx, &sh, ends).await {
        server_gone(&manager, &ctx, &server).await;
    }
}

/// With the `websocket` option off: the bytes pass untouched, without hooks.
async fn relay_untouched(
    ctx: &ConnCtx,
    client: Upgraded,
    server_io: Upgraded,
    server: &Arc<Server>,
) {
    let mut c = TokioIo::new(client);
    let mut s = TokioIo::new(server_io);
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
        tracing::debug!(server.addr = %server.address, "upgraded relay ended: {e}");
    }
    server_gone(ctx.manager(), ctx, server).await;
}

/// One side's WebSocket over its upgraded connection (`role`: waylay's part on it), split.
async fn open(io: Upgraded, role: Role, name: &'static str) -> (Sink, SplitStream<Ws>) {
    // Small read buffers: each side preallocates one, and most WebSockets idle; larger
    // frames grow it as needed.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), role, Some(config)).await;
    let (sink, stream) = ws.split();
    let peer = Rc::new(Peer {
        sink: AsyncMutex::new(sink),
        name,
    });
    (peer, stream)
}

/// Sends the messages injected in `websocket_start`; how the relay ended if that failed.
async fn send_start_injections(
    sh: &Shared,
    client_sink: &Sink,
    server_sink: &Sink,
    mut stop: StopSignal,
) -> Option<End> {
    let injected = {
        let mut g = sh.flow.lock().await;
        g.as_mut().map(|f| take_injected(f)).unwrap_or_default()
    };
    for m in injected {
        let to = if m.from_client {
            server_sink
        } else {
            client_sink
        };
        if let Err(end) = send(to, to_ws(&m), &mut stop).await {
            return Some(end);
        }
    }
    None
}

/// Fires `websocket_end`, or `websocket_error` when a side failed before a close handshake
/// began; answers whether `server_disconnect` should follow (not when the addon manager
/// went away while a hook held the flow: the proxy is shutting down).
async fn finish(ctx: &ConnCtx, sh: &Shared, ends: Vec<End>) -> bool {
    let Some(mut flow) = sh.flow.lock().await.take() else {
        return true;
    };
    if ends.iter().any(|e| matches!(e, End::Shutdown)) {
        return false;
    }
    flow.live = false;
    if let Some(ws) = flow.websocket.as_mut() {
        ws.timestamp_end = Some(now());
    }
    let failure = ends.into_iter().find_map(|e| match e {
        End::Failed(msg) => Some(msg),
        End::Closed | End::Stopped | End::Shutdown => None,
    });
    let manager = ctx.manager();
    match failure {
        Some(msg) if !sh.closing.get() => {
            tracing::info!(client.addr = %flow.client.peername, url = %flow.request.url(), "WebSocket failed: {msg}");
            // A killed flow keeps the kill's own error (mitmproxy's text), not what the relay
            // saw of the connections closing after it.
            if !flow.killed() {
                flow.error = Some(FlowError::new(msg));
            }
            let _ = fire(manager, HookKind::WebsocketError, flow).await;
        }
        _ => {
            let _ = fire(manager, HookKind::WebsocketEnd, flow).await;
        }
    }
    true
}

/// Relays both directions until one ends, then gives the other [`CLOSE_WAIT`] after a close
/// frame (none after a failure) before stopping it; how each ended.
async fn both_directions(
    sh: Rc<Shared>,
    (client_stream, client_sink): (SplitStream<Ws>, Sink),
    (server_stream, server_sink): (SplitStream<Ws>, Sink),
    queues: waylay_core::flow::InjectQueues<WebSocketMessage>,
    stop: &Stop,
) -> Vec<End> {
    let c2s = direction(
        sh.clone(),
        true,
        client_stream,
        server_sink.clone(),
        client_sink.clone(),
        queues.to_server,
        stop.signal(),
    );
    let s2c = direction(
        sh.clone(),
        false,
        server_stream,
        client_sink.clone(),
        server_sink.clone(),
        queues.to_client,
        stop.signal(),
    );
    let c2s = std::pin::pin!(c2s);
    let s2c = std::pin::pin!(s2c);
    let (first, mut other) = match futures::future::select(c2s, s2c).await {
        futures::future::Either::Left((e, other)) => (e, futures::future::Either::Left(other)),
        futures::future::Either::Right((e, other)) => (e, futures::future::Either::Right(other)),
    };
    let wait = if matches!(first, End::Closed) {
        CLOSE_WAIT
    } else {
        Duration::ZERO
    };
    let second = match tokio::time::timeout(wait, &mut other).await {
        Ok(e) => e,
        Err(_) => {
            // Stop the other direction at its next read or write (never inside a
            // hook, which holds the flow).
            stop.stop();
            other.await
        }
    };
    vec![first, second]
}

/// One direction: reads a message from `src`, runs the hook, writes to `dst` (`back` is the
/// source side's own sink, for injected messages and close answers). Messages injected
/// towards `dst` at any time (`injected`) are recorded and sent between reads.
#[allow(clippy::too_many_arguments)]
async fn direction(
    sh: Rc<Shared>,
    from_client: bool,
    mut src: SplitStream<Ws>,
    dst: Sink,
    back: Sink,
    mut injected: tokio::sync::mpsc::Receiver<WebSocketMessage>,
    mut stop: StopSignal,
) -> End {
    let who = side(from_client);
    let mut inject_open = true;
    loop {
        let read = async {
            tokio::select! {
                biased;
                m = src.next() => Ok(m),
                m = injected.recv(), if inject_open => Err(m),
            }
        };
        let Some(next) = stop.unless_stopped(read).await else {
            return End::Stopped;
        };
        let next = match next {
            Ok(m) => m,
            Err(Some(m)) => {
                if let Err(end) = send_injected(&sh, from_client, m, &dst, &mut stop).await {
                    return end;
                }
                continue;
            }
            Err(None) => {
                inject_open = false;
                continue;
            }
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) if sh.closing.get() => {
                tracing::debug!("WebSocket {who} ended after close: {e}");
                return End::Closed;
            }
            Some(Err(e)) => return End::Failed(format!("{who} connection failed: {e}")),
            None if sh.closing.get() => return End::Closed,
            None => {
                return End::Failed(format!("{who} closed the connection without a close frame"));
            }
        };
        let result = match msg {
            WsMessage::Text(_) | WsMessage::Binary(_) => {
                if sh.manager.handles(HookKind::WebsocketMessage) {
                    on_message(&sh, from_client, msg, &dst, &back, &mut stop).await
                } else {
                    send(&dst, msg, &mut stop).await
                }
            }
            WsMessage::Ping(p) => {
                // tungstenite already queued the pong to this side.
                sh.expect_pong(!from_client, p.clone());
                send(&dst, WsMessage::Ping(p), &mut stop).await
            }
            WsMessage::Pong(p) => {
                if sh.swallow_pong(from_client, &p) {
                    Ok(())
                } else {
                    send(&dst, WsMessage::Pong(p), &mut stop).await
                }
            }
            WsMessage::Close(frame) => {
                if sh.closing.replace(true) {
                    // The answer to the close frame forwarded the other way.
                    return End::Closed;
                }
                {
                    let mut g = sh.flow.lock().await;
                    if let Some(ws) = g.as_mut().and_then(|f| f.websocket.as_mut()) {
                        ws.closed_by_client = Some(from_client);
                        ws.close_code = frame.as_ref().map(|f| u16::from(f.code));
                        ws.close_reason = frame
                            .as_ref()
                            .map(|f| f.reason.as_str().to_owned())
                            .unwrap_or_default();
                    }
                }
                if let Err(e) = dst.sink.lock().await.send(WsMessage::Close(frame)).await {
                    tracing::debug!("forwarding a WebSocket close from the {who}: {e}");
                }
                // Sends the answer tungstenite queued towards this side.
                let _ = back.sink.lock().await.flush().await;
                return End::Closed;
            }
            // Reads never yield raw frames.
            WsMessage::Frame(_) => Ok(()),
        };
        if let Err(end) = result {
            return end;
        }
    }
}

/// Records a message, fires `websocket_message` (waiting while an addon holds the flow
/// intercepted), forwards it unless dropped, and sends what the addons injected.
async fn on_message(
    sh: &Shared,
    from_client: bool,
    msg: WsMessage,
    dst: &Sink,
    back: &Sink,
    stop: &mut StopSignal,
) -> Result<(), End> {
    // The recorded content gets its own allocation: a payload from tungstenite shares its
    // read buffer, which the history would otherwise pin (measured: every later read then
    // allocates and faults in fresh pages, 3× slower for 64 KiB messages).
    let (kind, content) = match &msg {
        WsMessage::Text(t) => (
            WebSocketMessageKind::Text,
            Bytes::copy_from_slice(t.as_bytes()),
        ),
        WsMessage::Binary(b) => (WebSocketMessageKind::Binary, Bytes::copy_from_slice(b)),
        WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Close(_) | WsMessage::Frame(_) => {
            return Ok(());
        }
    };
    let (out, injected) = {
        let mut g = sh.flow.lock().await;
        let Some(mut flow) = g.take() else {
            return Err(End::Shutdown);
        };
        flow.websocket
            .get_or_insert_with(WebSocketData::default)
            .messages
            .push(WebSocketMessage::new(kind, from_client, content));
        let Some(mut flow) = fire(&sh.manager, HookKind::WebsocketMessage, flow).await else {
            return Err(End::Shutdown);
        };
        // An addon (the web UI) may hold the message: wait for its release, which may hand
        // over an edit of the held (last) message; the other direction waits meanwhile.
        if flow.intercepted() && flow.wait_released().await == Release::Killed {
            flow.kill();
        }
        flow.intercept_state().reset();
        let out = flow
            .websocket
            .as_ref()
            .and_then(|ws| ws.messages.last())
            .filter(|m| !m.dropped && !m.injected)
            .map(to_ws);
        let own = flow
            .websocket
            .as_ref()
            .and_then(|ws| ws.messages.last())
            .map_or(0, |m| m.content.len());
        let injected = take_injected(&mut flow);
        let added = own + injected.iter().map(|m| m.content.len()).sum::<usize>();
        forget_old_messages(&mut flow, &sh.history, added);
        let is_killed = flow.killed();
        *g = Some(flow);
        if is_killed {
            return Err(End::Failed(KILLED_MESSAGE.to_owned()));
        }
        (out, injected)
    };
    if let Some(m) = out {
        send(dst, m, stop).await?;
    }
    for m in injected {
        let to = if m.from_client == from_client {
            dst
        } else {
            back
        };
        send(to, to_ws(&m), stop).await?;
    }
    Ok(())
}

/// Sends a message injected outside a hook towards `dst`, recording it in the flow.
async fn send_injected(
    sh: &Shared,
    from_client: bool,
    mut m: WebSocketMessage,
    dst: &Sink,
    stop: &mut StopSignal,
) -> Result<(), End> {
    m.from_client = from_client;
    m.injected = true;
    m.timestamp = now();
    let out = to_ws(&m);
    {
        let mut g = sh.flow.lock().await;
        let Some(flow) = g.as_mut() else {
            return Err(End::Shutdown);
        };
        let added = m.content.len();
        flow.websocket
            .get_or_insert_with(WebSocketData::default)
            .messages
            .push(m);
        forget_old_messages(flow, &sh.history, added);
    }
    send(dst, out, stop).await
}

/// Records `added` content bytes in the history and removes the oldest messages once it
/// holds more than [`HISTORY_BYTES`], down to half of it (so the work is amortised),
/// keeping at least the newest; counts them in `websocket_messages_forgotten`.
fn forget_old_messages(flow: &mut HttpFlow, history: &History, added: usize) {
    let Some(ws) = flow.websocket.as_mut() else {
        return;
    };
    history.add(added);
    let Some(forgotten) = history.trim(&mut ws.messages) else {
        return;
    };
    let key = "websocket_messages_forgotten";
    let before = flow.metadata.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    flow.metadata
        .insert(key.into(), (before + forgotten as u64).into());
}

/// Drains the messages addons injected, recording them in the flow.
fn take_injected(flow: &mut HttpFlow) -> Vec<WebSocketMessage> {
    let Some(ws) = flow.websocket.as_mut() else {
        return Vec::new();
    };
    let injected = ws.take_injected();
    ws.messages.extend(injected.iter().cloned());
    injected
}

/// A flow message as a frame to send (text that is no longer UTF-8 is sent lossily).
fn to_ws(m: &WebSocketMessage) -> WsMessage {
    match m.kind {
        WebSocketMessageKind::Binary => WsMessage::Binary(m.content.clone()),
        WebSocketMessageKind::Text => match Utf8Bytes::try_from(m.content.clone()) {
            Ok(t) => WsMessage::Text(t),
            Err(_) => WsMessage::Text(String::from_utf8_lossy(&m.content).into_owned().into()),
        },
    }
}

/// Writes one message, waiting while the peer does not read (backpressure); gives up when
/// told to stop.
async fn send(dst: &Sink, msg: WsMessage, stop: &mut StopSignal) -> Result<(), End> {
    match stop
        .unless_stopped(async { dst.sink.lock().await.send(msg).await })
        .await
    {
        None => Err(End::Stopped),
        Some(r) => r.map_err(|e| End::Failed(format!("sending to the {} failed: {e}", dst.name))),
    }
}
