//! Raw TCP flows: bytes relayed between client and server.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Client, FlowError, FlowId, Intercept, KILLED_MESSAGE, Metadata, Server, now};

/// A chunk of bytes read from one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpMessage {
    /// Read from the client (else from the server).
    pub from_client: bool,
    /// The bytes; an addon may replace them (empty: nothing is sent for this chunk).
    pub content: Bytes,
    /// When they were read.
    pub timestamp: f64,
    /// Injected by an addon.
    #[serde(default)]
    pub injected: bool,
}

impl TcpMessage {
    /// A chunk read now.
    pub fn new(from_client: bool, content: impl Into<Bytes>) -> Self {
        Self {
            from_client,
            content: content.into(),
            timestamp: now(),
            injected: false,
        }
    }
}

/// Sends bytes into a live TCP connection at any time: `inject(to_client, bytes)`.
pub type TcpInjector = super::Injector<Bytes>;

/// An edit applied to an intercepted TCP flow when it is resumed
/// ([`InterceptHandle::resume_with`](super::InterceptHandle::resume_with)), by the relay
/// holding the flow (the web UI replaces the held message's content with one).
pub type TcpEdit = Box<dyn FnOnce(&mut TcpFlow) + Send>;

/// A raw TCP conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TcpFlow {
    /// Unique id.
    pub id: FlowId,
    /// The client connection.
    pub client: Arc<Client>,
    /// The server connection.
    pub server: Option<Arc<Server>>,
    /// Chunks so far, oldest first (as sent on, after the addons' changes, injected ones
    /// included); in `tcp_message` the newest is `messages.last()`.
    ///
    /// Unlike mitmproxy, which keeps every message, the proxy keeps only the newest: at most
    /// 4 MiB of content and 4096 messages per flow (the oldest are dropped beyond that), so
    /// a long-lived connection costs bounded memory.
    pub messages: Vec<TcpMessage>,
    /// A connection error.
    pub error: Option<FlowError>,
    /// A user's mark.
    #[serde(default)]
    pub marked: String,
    /// A free-text comment.
    #[serde(default)]
    pub comment: String,
    /// Free-form data addons attach to the flow.
    #[serde(default)]
    pub metadata: super::Metadata,
    /// Whether the connection is still open.
    #[serde(default)]
    pub live: bool,
    /// When the flow was created.
    pub timestamp_created: f64,
    #[serde(skip)]
    pending: Vec<TcpMessage>,
    /// Injects into the live connection at any time (set by the layer at the start).
    #[serde(skip)]
    injector: Option<TcpInjector>,
    #[serde(skip)]
    intercept: Intercept,
    /// Made on demand ([`Self::kill_switch`]); the layer watches it between hooks.
    #[serde(skip)]
    kill_switch: Option<super::KillSwitch>,
}

impl PartialEq for TcpFlow {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id
            && self.client == o.client
            && self.server == o.server
            && self.messages == o.messages
            && self.error == o.error
            && self.marked == o.marked
            && self.comment == o.comment
            && self.metadata == o.metadata
            && self.live == o.live
            && self.timestamp_created == o.timestamp_created
    }
}

impl TcpFlow {
    /// A live TCP flow between `client` and `server`.
    pub fn new(client: Arc<Client>, server: Option<Arc<Server>>) -> Self {
        Self {
            id: FlowId::new(),
            client,
            server,
            messages: Vec::new(),
            error: None,
            marked: String::new(),
            comment: String::new(),
            metadata: Metadata::new(),
            live: true,
            timestamp_created: now(),
            pending: Vec::new(),
            injector: None,
            intercept: Intercept::default(),
            kill_switch: None,
        }
    }

    /// Kills the flow: both connections are closed.
    pub fn kill(&mut self) {
        self.error = Some(FlowError::new(KILLED_MESSAGE));
        self.intercept.resume();
    }

    /// Whether the flow was killed.
    pub fn killed(&self) -> bool {
        self.error.as_ref().is_some_and(FlowError::is_killed)
    }

    /// Sends `content` to the client (`to_client`) or the server after the current hook
    /// (after the current message). It is recorded in `messages` with `injected` set; it does
    /// not go through `tcp_message` itself.
    pub fn inject(&mut self, to_client: bool, content: impl Into<Bytes>) {
        let mut m = TcpMessage::new(!to_client, content);
        m.injected = true;
        self.pending.push(m);
    }

    /// Takes the chunks injected by addons, for the layer to send.
    pub fn take_injected(&mut self) -> Vec<TcpMessage> {
        std::mem::take(&mut self.pending)
    }

    /// An injector for this connection, usable at any time while it lives (from `tcp_start`
    /// on); `None` for a flow without a live connection. See [`Injector`](super::Injector).
    pub fn injector(&self) -> Option<TcpInjector> {
        self.injector.clone()
    }

    /// Gives the flow its connection's injector (done by the layer serving it).
    pub fn set_injector(&mut self, injector: TcpInjector) {
        self.injector = Some(injector);
    }

    /// Waits while the flow is intercepted, then applies the [`TcpEdit`] it was resumed
    /// with, if any. Returns at once when the flow is not intercepted.
    pub async fn wait_released(&mut self) -> super::Release {
        let released = self.intercept.wait().await;
        if released == super::Release::Resumed
            && let Some(edit) = self.intercept.take_edit::<TcpEdit>()
        {
            edit(self);
        }
        released
    }

    /// The flow's [`KillSwitch`](super::KillSwitch), made now if it has none: trip it at
    /// any time to kill the flow while it streams or relays (not only in a hook).
    pub fn kill_switch(&mut self) -> super::KillSwitch {
        self.kill_switch
            .get_or_insert_with(super::KillSwitch::new)
            .clone()
    }

    /// The kill switch, if someone asked for one (for the layer serving the flow).
    pub fn existing_kill_switch(&self) -> Option<super::KillSwitch> {
        self.kill_switch.clone()
    }

    /// The intercept state, for layers that wait on it.
    pub fn intercept_state(&mut self) -> &mut Intercept {
        &mut self.intercept
    }
}
