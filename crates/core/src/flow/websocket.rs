//! WebSocket conversations, carried inside the HTTP flow that opened them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The frame type of a WebSocket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebSocketMessageKind {
    /// A UTF-8 text message.
    Text,
    /// A binary message.
    Binary,
}

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebSocketMessage {
    /// Text or binary.
    pub kind: WebSocketMessageKind,
    /// Sent by the client (else by the server).
    pub from_client: bool,
    /// The payload.
    pub content: Bytes,
    /// When it was received.
    pub timestamp: f64,
    /// Dropped by an addon: it is not forwarded.
    #[serde(default)]
    pub dropped: bool,
    /// Injected by an addon rather than sent by a peer.
    #[serde(default)]
    pub injected: bool,
}

impl WebSocketMessage {
    /// A message received now.
    pub fn new(kind: WebSocketMessageKind, from_client: bool, content: impl Into<Bytes>) -> Self {
        Self {
            kind,
            from_client,
            content: content.into(),
            timestamp: super::now(),
            dropped: false,
            injected: false,
        }
    }

    /// A text message.
    pub fn text(from_client: bool, text: impl Into<String>) -> Self {
        Self::new(
            WebSocketMessageKind::Text,
            from_client,
            Bytes::from(text.into()),
        )
    }

    /// A binary message.
    pub fn binary(from_client: bool, data: impl Into<Bytes>) -> Self {
        Self::new(WebSocketMessageKind::Binary, from_client, data)
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        self.kind == WebSocketMessageKind::Text
    }

    /// The content as text, if it is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.content).ok()
    }

    /// Replaces the content with text (the kind becomes text).
    pub fn set_text(&mut self, text: impl Into<String>) {
        self.kind = WebSocketMessageKind::Text;
        self.content = Bytes::from(text.into());
    }

    /// Drops the message: it will not be forwarded.
    pub fn drop_message(&mut self) {
        self.dropped = true;
    }
}

/// The WebSocket part of an HTTP flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebSocketData {
    /// Messages so far, oldest first; in `websocket_message` the newest is `messages.last()`.
    pub messages: Vec<WebSocketMessage>,
    /// Who closed the connection, once closed.
    pub closed_by_client: Option<bool>,
    /// The close code, once closed.
    pub close_code: Option<u16>,
    /// The close reason, once closed.
    pub close_reason: String,
    /// When the conversation ended.
    pub timestamp_end: Option<f64>,
    /// Messages an addon asked to send, drained by the layer after each hook.
    #[serde(skip)]
    pub(crate) pending: Vec<WebSocketMessage>,
    /// Injects into the live connection at any time (set by the layer at the start).
    #[serde(skip)]
    injector: Option<WebSocketInjector>,
}

/// Sends messages into a live WebSocket at any time: `inject(to_client, message)`.
pub type WebSocketInjector = super::Injector<WebSocketMessage>;

impl WebSocketData {
    /// Sends `message` to the client (`to_client`) or the server after the current hook.
    pub fn inject(&mut self, to_client: bool, mut message: WebSocketMessage) {
        message.from_client = !to_client;
        message.injected = true;
        self.pending.push(message);
    }

    /// Takes the messages injected by addons, for the layer to send.
    pub fn take_injected(&mut self) -> Vec<WebSocketMessage> {
        std::mem::take(&mut self.pending)
    }

    /// An injector for this connection, usable at any time while it lives (from
    /// `websocket_start` on); `None` for a flow without a live connection (a test flow, a
    /// loaded one). See [`Injector`](super::Injector).
    pub fn injector(&self) -> Option<WebSocketInjector> {
        self.injector.clone()
    }

    /// Gives the flow its connection's injector (done by the layer serving it).
    pub fn set_injector(&mut self, injector: WebSocketInjector) {
        self.injector = Some(injector);
    }
}
