//! Injecting messages into a live WebSocket or TCP connection at any time (mitmproxy's
//! `inject.websocket` / `inject.tcp`), not only from inside a hook.
//!
//! The layer serving the connection gives the flow an [`Injector`] when the connection
//! starts (`websocket_start`, `tcp_start`); an addon clones it out of the flow and keeps it
//! for as long as it likes, e.g. to push a message from a timer:
//!
//! ```
//! use waylay_core::flow::{HttpFlow, WebSocketInjector, WebSocketMessage};
//! use waylay_core::Addon;
//!
//! #[derive(Default)]
//! struct Greeter {
//!     live: Vec<WebSocketInjector>,
//! }
//!
//! impl Addon for Greeter {
//!     async fn websocket_start(&mut self, flow: &mut HttpFlow) {
//!         if let Some(i) = flow.websocket.as_ref().and_then(|ws| ws.injector()) {
//!             // Later, from anywhere: `i.inject(true, WebSocketMessage::text(false, "hi"))`.
//!             self.live.push(i);
//!         }
//!     }
//! }
//! ```
//!
//! An injected message goes to the chosen side as soon as that side's writer is free, is
//! recorded in the flow's `messages` with `injected` set, and does not go through the
//! message hook itself (so an addon reacting to messages does not see its own).

use tokio::sync::mpsc;

/// Messages waiting per direction before [`Injector::inject`] reports [`InjectError::Full`].
pub const INJECT_QUEUE: usize = 64;

/// Why an injection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The connection has ended (or the flow never had a live connection).
    #[error("the connection has ended")]
    Closed,
    /// [`INJECT_QUEUE`] messages are already waiting towards that side (it reads slowly);
    /// [`Injector::send`] waits instead.
    #[error("{INJECT_QUEUE} injected messages are already waiting for a slow peer")]
    Full,
}

/// Sends messages of type `M` into one live connection, towards either side. Cheap to
/// clone; valid while the connection lives.
#[derive(Debug)]
pub struct Injector<M> {
    to_client: mpsc::Sender<M>,
    to_server: mpsc::Sender<M>,
}

impl<M> Clone for Injector<M> {
    fn clone(&self) -> Self {
        Self {
            to_client: self.to_client.clone(),
            to_server: self.to_server.clone(),
        }
    }
}

impl<M> PartialEq for Injector<M> {
    fn eq(&self, other: &Self) -> bool {
        self.to_client.same_channel(&other.to_client)
    }
}

/// The layer's end of an [`Injector`]: the queued messages, one queue per direction.
#[derive(Debug)]
pub struct InjectQueues<M> {
    /// Messages for the client.
    pub to_client: mpsc::Receiver<M>,
    /// Messages for the server.
    pub to_server: mpsc::Receiver<M>,
}

impl<M> Injector<M> {
    /// A new injector and the queues the layer reads.
    pub fn channel() -> (Self, InjectQueues<M>) {
        let (tc, rc) = mpsc::channel(INJECT_QUEUE);
        let (ts, rs) = mpsc::channel(INJECT_QUEUE);
        (
            Self {
                to_client: tc,
                to_server: ts,
            },
            InjectQueues {
                to_client: rc,
                to_server: rs,
            },
        )
    }

    fn side(&self, to_client: bool) -> &mpsc::Sender<M> {
        if to_client {
            &self.to_client
        } else {
            &self.to_server
        }
    }

    /// Queues `message` for the client (`to_client`) or the server without waiting.
    pub fn inject(&self, to_client: bool, message: M) -> Result<(), InjectError> {
        self.side(to_client).try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => InjectError::Full,
            mpsc::error::TrySendError::Closed(_) => InjectError::Closed,
        })
    }

    /// Queues `message`, waiting while [`INJECT_QUEUE`] messages are already waiting.
    pub async fn send(&self, to_client: bool, message: M) -> Result<(), InjectError> {
        self.side(to_client)
            .send(message)
            .await
            .map_err(|_| InjectError::Closed)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.to_client.is_closed()
    }
}
