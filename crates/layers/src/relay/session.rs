//! What the TCP and WebSocket relays share: the flow slot both directions take turns on, the
//! bounded message history, the queues of injected messages, and the stop signal that ends
//! one direction when the other failed.

use std::cell::Cell;

use tokio::sync::{Mutex, MutexGuard, watch};
use waylay_core::flow::{InjectQueues, TcpMessage, WebSocketMessage};

/// The flow of a relay, shared by its two directions. It is out (`None`) only while a hook
/// holds it, and the lock orders the two directions' hooks, so messages are recorded in the
/// order the hooks saw them.
#[derive(Debug)]
pub(crate) struct FlowSlot<F> {
    flow: Mutex<Option<Box<F>>>,
}

impl<F> FlowSlot<F> {
    pub(crate) fn new(flow: Option<Box<F>>) -> Self {
        Self {
            flow: Mutex::new(flow),
        }
    }

    /// Locks the slot; the guard holds `None` when the flow is gone (the proxy shut down).
    pub(crate) async fn lock(&self) -> MutexGuard<'_, Option<Box<F>>> {
        self.flow.lock().await
    }

    /// The flow back once both directions are done.
    pub(crate) fn into_inner(self) -> Option<Box<F>> {
        self.flow.into_inner()
    }
}

/// A recorded message whose content counts towards the [`History`] bound.
pub(crate) trait Recorded {
    /// Content bytes.
    fn size(&self) -> usize;
}

impl Recorded for TcpMessage {
    fn size(&self) -> usize {
        self.content.len()
    }
}

impl Recorded for WebSocketMessage {
    fn size(&self) -> usize {
        self.content.len()
    }
}

/// Bounds the messages a flow records: once they hold more than `max_bytes` of content (or
/// more than `max_messages`), the oldest are dropped until both are within half, so the
/// work is amortised; the newest message always stays. A long-lived connection thus costs
/// bounded memory even when an addon handles its messages (mitmproxy keeps every message).
#[derive(Debug)]
pub(crate) struct History {
    /// Content bytes recorded, counted as messages are added and recounted exactly when
    /// trimming (addons may change contents).
    bytes: Cell<usize>,
    max_bytes: usize,
    max_messages: usize,
}

impl History {
    pub(crate) fn new(max_bytes: usize, max_messages: usize) -> Self {
        Self {
            bytes: Cell::new(0),
            max_bytes,
            max_messages,
        }
    }

    /// Counts `n` more content bytes recorded.
    pub(crate) fn add(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n);
    }

    /// Drops the oldest `messages` when over a bound: how many were dropped, `None` when
    /// within both bounds.
    pub(crate) fn trim<M: Recorded>(&self, messages: &mut Vec<M>) -> Option<usize> {
        if self.bytes.get() <= self.max_bytes && messages.len() <= self.max_messages {
            return None;
        }
        let mut bytes: usize = messages.iter().map(Recorded::size).sum();
        let mut drop_n = 0;
        while drop_n + 1 < messages.len()
            && (bytes > self.max_bytes / 2 || messages.len() - drop_n > self.max_messages / 2)
        {
            bytes -= messages.get(drop_n).map_or(0, Recorded::size);
            drop_n += 1;
        }
        messages.drain(..drop_n);
        self.bytes.set(bytes);
        Some(drop_n)
    }
}

/// Stops both directions of a relay at their next read or write (never inside a hook,
/// which holds the flow and would lose it).
#[derive(Debug)]
pub(crate) struct Stop(watch::Sender<bool>);

impl Stop {
    pub(crate) fn new() -> Self {
        Self(watch::channel(false).0)
    }

    /// Tells every [`StopSignal`] to stop.
    pub(crate) fn stop(&self) {
        self.0.send_replace(true);
    }

    /// A receiver for one direction.
    pub(crate) fn signal(&self) -> StopSignal {
        StopSignal(self.0.subscribe())
    }
}

/// One direction's end of a [`Stop`].
#[derive(Debug, Clone)]
pub(crate) struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Runs `work` unless told to stop first (`None` then; a stop wins a tie).
    pub(crate) async fn unless_stopped<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.0.wait_for(|s| *s) => None,
            r = work => Some(r),
        }
    }
}

/// The next message addons injected, towards the client (`true`) or the server; `None` once
/// both queues are closed. `open` remembers which still are.
pub(crate) async fn next_injected<M>(
    q: &mut InjectQueues<M>,
    open: &mut [bool; 2],
) -> Option<(bool, M)> {
    while open[0] || open[1] {
        tokio::select! {
            m = q.to_client.recv(), if open[0] => match m {
                Some(d) => return Some((true, d)),
                None => open[0] = false,
            },
            m = q.to_server.recv(), if open[1] => match m {
                Some(d) => return Some((false, d)),
                None => open[1] = false,
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msgs(sizes: &[usize]) -> Vec<TcpMessage> {
        sizes
            .iter()
            .map(|n| TcpMessage::new(true, Bytes::from(vec![b'x'; *n])))
            .collect()
    }

    fn sizes(m: &[TcpMessage]) -> Vec<usize> {
        m.iter().map(Recorded::size).collect()
    }

    #[test]
    fn within_bounds_nothing_is_dropped() {
        let h = History::new(100, 10);
        let mut m = msgs(&[30, 30, 40]);
        h.add(100);
        assert_eq!(h.trim(&mut m), None);
        assert_eq!(sizes(&m), [30, 30, 40]);
    }

    #[test]
    fn over_the_byte_bound_the_oldest_go_down_to_half() {
        let h = History::new(100, usize::MAX);
        let mut m = msgs(&[40, 30, 20, 20]);
        h.add(110);
        assert_eq!(h.trim(&mut m), Some(2));
        assert_eq!(sizes(&m), [20, 20]);
        // Recounted exactly: 40 more stays within the bound.
        h.add(40);
        m.extend(msgs(&[40]));
        assert_eq!(h.trim(&mut m), None);
    }

    #[test]
    fn over_the_message_bound_the_oldest_go_down_to_half() {
        let h = History::new(usize::MAX, 4);
        let mut m = msgs(&[1, 1, 1, 1, 1]);
        h.add(5);
        assert_eq!(h.trim(&mut m), Some(3));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn the_newest_message_always_stays() {
        let h = History::new(10, usize::MAX);
        let mut m = msgs(&[5, 50]);
        h.add(55);
        assert_eq!(h.trim(&mut m), Some(1));
        assert_eq!(sizes(&m), [50]);
    }
}
