//! Killing a live flow from outside its hooks: a flow streaming a response body, or a
//! WebSocket or TCP connection relaying, is between hooks for as long as it likes; the
//! layer watches the flow's [`KillSwitch`] meanwhile and closes both sides when it trips.

use std::sync::Arc;

use tokio::sync::watch;

/// Kills the live flow it belongs to from anywhere, at any time: the layer serving the flow
/// closes both connections at once and records the error
/// [`KILLED_MESSAGE`](super::KILLED_MESSAGE). Cheap to clone.
///
/// A flow has none until someone asks for it ([`HttpFlow::kill_switch`](super::HttpFlow::kill_switch),
/// [`TcpFlow::kill_switch`](super::TcpFlow::kill_switch), in a hook), so a proxy that
/// never kills flows this way pays nothing for it. The layer reads it when the flow starts
/// waiting, streaming or relaying: take it by `request` for a request waiting for its server,
/// by `response_headers` for a streamed response body, by `websocket_start` for a WebSocket,
/// by `tcp_start` for raw TCP. At other times kill the flow in its next hook instead.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for KillSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for KillSwitch {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.tx, &o.tx)
    }
}

impl KillSwitch {
    /// An untripped switch.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Trips the switch: the flow is killed.
    pub fn kill(&self) {
        self.tx.send_replace(true);
    }

    /// Whether it was tripped.
    pub fn is_killed(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes when the switch trips (at once if it has); owns what it needs, so it can
    /// be kept in a body or a task.
    pub fn killed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means every clone of the switch is gone: nothing can trip it any more.
            if rx.wait_for(|k| *k).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
