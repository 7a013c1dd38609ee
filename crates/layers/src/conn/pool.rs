//! The server connections of one client connection, by destination: reused for later
//! requests, taken out for a WebSocket upgrade, evicted when they fail. Its state changes
//! only through [`Pool`]'s methods.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use actix::Addr;
use waylay_core::flow::Server;

use super::dest::Destination;
use super::server::{SenderSlot, ServerConnection};
use crate::error::ServerError;

/// A pooled server connection of a client connection.
#[derive(Debug, Clone)]
pub(crate) struct PoolEntry {
    /// Shared, not cloned, with each request that takes the entry: an `Addr` clone is two
    /// allocations in actix (its sender's task and parked flag), every request's cost.
    pub(crate) addr: Rc<Addr<ServerConnection>>,
    /// The actor's request sender, lent for an exchange while the actor is idle.
    pub(crate) slot: Rc<SenderSlot>,
    pub(crate) server: Arc<Server>,
    pub(crate) h2: bool,
    /// Where it is in its life, shared with its IO driver and with the response body that
    /// ends its exchange.
    pub(crate) state: Arc<EntryState>,
    /// A connection to an HTTP(S) proxy itself (plain HTTP through an upstream proxy): its
    /// requests go absolute-form, with this `Proxy-Authorization` when set.
    pub(crate) proxy_form: Option<Arc<ProxyForm>>,
}

/// How requests go on a connection to an HTTP(S) proxy itself.
#[derive(Debug)]
pub(crate) struct ProxyForm {
    /// The proxy's `host:port`, named when it refuses.
    pub(crate) proxy: String,
    /// The `Proxy-Authorization` sent with each request (the proxy URL's credentials, else
    /// `upstream_auth`); the client's own is never forwarded.
    pub(crate) authorization: Option<http::HeaderValue>,
}

impl PoolEntry {
    pub(crate) fn usable(&self) -> bool {
        matches!(self.state.get(), ConnState::Fresh | ConnState::Idle)
    }
}

/// Where a server connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Ready; no request was sent on it yet.
    Fresh,
    /// Ready; it carried requests before (a failure now may be a stale keep-alive).
    Idle,
    /// An HTTP/1 exchange is in flight, until its response body ends.
    Busy,
    /// It carries a WebSocket upgrade (`used`: it carried requests before): after a 101 the
    /// WebSocket layer owns it and reports its `server_disconnect`, not the IO driver.
    Upgrading { used: bool },
    /// The connection ended.
    Closed,
}

impl ConnState {
    fn to_u8(self) -> u8 {
        match self {
            Self::Fresh => 0,
            Self::Idle => 1,
            Self::Busy => 2,
            Self::Upgrading { used: false } => 3,
            Self::Upgrading { used: true } => 4,
            Self::Closed => 5,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Fresh,
            1 => Self::Idle,
            2 => Self::Busy,
            3 => Self::Upgrading { used: false },
            4 => Self::Upgrading { used: true },
            _ => Self::Closed,
        }
    }

    /// Whether a request was sent on it before.
    pub(crate) fn used(self) -> bool {
        match self {
            Self::Fresh | Self::Upgrading { used: false } => false,
            Self::Idle | Self::Busy | Self::Upgrading { used: true } | Self::Closed => true,
        }
    }
}

/// A [`ConnState`] shared across threads (a response body may end on another thread's
/// schedule); each transition is one atomic step.
#[derive(Debug)]
pub(crate) struct EntryState(AtomicU8);

impl Default for EntryState {
    fn default() -> Self {
        Self(AtomicU8::new(ConnState::Fresh.to_u8()))
    }
}

impl EntryState {
    pub(crate) fn get(&self) -> ConnState {
        ConnState::from_u8(self.0.load(Ordering::Acquire))
    }

    fn update(&self, f: impl Fn(ConnState) -> Option<ConnState>) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                f(ConnState::from_u8(v)).map(ConnState::to_u8)
            });
    }

    /// A request is sent on it: HTTP/1 is busy until its response ends, HTTP/2 multiplexes.
    pub(crate) fn send(&self, h2: bool) {
        self.update(|s| match s {
            ConnState::Fresh | ConnState::Idle | ConnState::Busy if h2 => Some(ConnState::Idle),
            ConnState::Fresh | ConnState::Idle | ConnState::Busy => Some(ConnState::Busy),
            ConnState::Upgrading { .. } => Some(ConnState::Upgrading { used: true }),
            ConnState::Closed => None,
        });
    }

    /// The exchange in flight ended (its response body was passed on or dropped).
    pub(crate) fn release(&self) {
        self.update(|s| (s == ConnState::Busy).then_some(ConnState::Idle));
    }

    /// The exchange in flight ended with its response body unread to its end (failed, over
    /// `body_size_limit`, killed, the client gone): hyper closes such an HTTP/1 connection,
    /// so it is never lent again (until then it would look idle, and the next request to
    /// take it would fail). An HTTP/2 connection (never busy) is left as it is: one stream
    /// ending early does not end it.
    pub(crate) fn release_unread(&self) {
        self.update(|s| (s == ConnState::Busy).then_some(ConnState::Closed));
    }

    /// [`EntryState::release`] if the response body was read to its end (`read_all`), else
    /// [`EntryState::release_unread`].
    pub(crate) fn end_exchange(&self, read_all: bool) {
        if read_all {
            self.release();
        } else {
            self.release_unread();
        }
    }

    /// Taken for a WebSocket upgrade (`true`), or the server refused it (`false`).
    pub(crate) fn upgrading(&self, on: bool) {
        self.update(|s| match (s, on) {
            (ConnState::Closed, _) => None,
            (s, true) => Some(ConnState::Upgrading { used: s.used() }),
            (ConnState::Upgrading { .. }, false) => Some(ConnState::Busy),
            (_, false) => None,
        });
    }

    /// The connection ended; gives the state it was in.
    pub(crate) fn close(&self) -> ConnState {
        ConnState::from_u8(self.0.swap(ConnState::Closed.to_u8(), Ordering::AcqRel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_connection_is_busy_until_its_response_ends() {
        let s = EntryState::default();
        assert_eq!(s.get(), ConnState::Fresh);
        s.send(false);
        assert_eq!(s.get(), ConnState::Busy);
        s.release();
        assert_eq!(s.get(), ConnState::Idle);
        assert!(s.get().used());
    }

    #[test]
    fn an_http1_connection_whose_response_was_not_read_to_its_end_is_never_lent_again() {
        let s = EntryState::default();
        s.send(false);
        s.end_exchange(false);
        assert_eq!(s.get(), ConnState::Closed);
        s.send(false);
        s.release();
        assert_eq!(s.get(), ConnState::Closed);
        // HTTP/2: a stream ending early leaves the connection usable.
        let h2 = EntryState::default();
        h2.send(true);
        h2.end_exchange(false);
        assert_eq!(h2.get(), ConnState::Idle);
        let ok = EntryState::default();
        ok.send(false);
        ok.end_exchange(true);
        assert_eq!(ok.get(), ConnState::Idle);
    }

    #[test]
    fn an_http2_connection_is_never_busy() {
        let s = EntryState::default();
        s.send(true);
        assert_eq!(s.get(), ConnState::Idle);
    }

    #[test]
    fn closed_stays_closed() {
        let s = EntryState::default();
        s.send(false);
        assert_eq!(s.close(), ConnState::Busy);
        s.release();
        s.send(false);
        s.upgrading(true);
        assert_eq!(s.get(), ConnState::Closed);
    }

    #[test]
    fn an_upgrade_remembers_whether_the_connection_was_used() {
        let s = EntryState::default();
        s.send(false);
        s.release();
        s.upgrading(true);
        assert_eq!(s.get(), ConnState::Upgrading { used: true });
        s.send(false);
        assert_eq!(s.close(), ConnState::Upgrading { used: true });
        let fresh = EntryState::default();
        fresh.upgrading(true);
        assert!(!fresh.get().used());
        // Refused: an ordinary exchange, released when its response ends.
        fresh.upgrading(false);
        fresh.release();
        assert_eq!(fresh.get(), ConnState::Idle);
    }
}

/// Server connections by destination. A client connection's own (mitmproxy's model: its
/// server connections live and die with it), or, when no addon observes server connections,
/// one per worker and proxy shared by the client connections on that worker (see
/// [`SharedPool`]).
type Entries = RefCell<HashMap<Destination, Vec<PoolEntry>, DestHasher>>;

/// The pools' hasher: every request looks its destination up, and SipHash (std's default)
/// cost ~400 instructions of it; foldhash, seeded per process, ~60.
type DestHasher = foldhash::fast::RandomState;

/// The server connections a worker's client connections share, when no addon observes
/// server connections (no `server_connect`, `server_connected`, `server_disconnect`,
/// `server_connect_error` or `tls_*_server` handler): an idle server connection then serves
/// any client of the worker, as hyper-util's and hudsucker's pools do, so an idle client
/// connection holds no server connection of its own (S5 in BENCHMARKS.md). It keeps at most
/// one idle connection per live client connection sharing it: when a client connection
/// ends, idle connections beyond that are closed, and all of them once no client is left.
#[derive(Debug, Default)]
pub(crate) struct SharedPool {
    entries: Entries,
    /// Live client connections using it.
    clients: Cell<usize>,
}

impl SharedPool {
    /// Closes idle connections beyond one per live client (after a client left).
    fn trim(&self) {
        let mut keep = self.clients.get();
        let mut pool = self.entries.borrow_mut();
        pool.retain(|_, list| {
            list.retain(|e| match e.state.get() {
                ConnState::Closed => false,
                ConnState::Fresh | ConnState::Idle if keep == 0 => false,
                ConnState::Fresh | ConnState::Idle => {
                    keep -= 1;
                    true
                }
                _ => true,
            });
            !list.is_empty()
        });
    }
}

thread_local! {
    /// The shared pools of this worker thread, one per proxy instance (several may run in
    /// one process, e.g. in tests: their connections are never mixed).
    static SHARED: RefCell<Vec<(Weak<crate::context::ProxyShared>, Rc<SharedPool>)>> =
        const { RefCell::new(Vec::new()) };
}

/// The shared pool of `proxy` on this worker thread.
fn shared_for(proxy: &Arc<crate::context::ProxyShared>) -> Rc<SharedPool> {
    SHARED.with(|pools| {
        let mut pools = pools.borrow_mut();
        pools.retain(|(p, _)| p.strong_count() > 0);
        if let Some((_, pool)) = pools
            .iter()
            .find(|(p, _)| std::ptr::eq(p.as_ptr(), Arc::as_ptr(proxy)))
        {
            return pool.clone();
        }
        let pool = Rc::new(SharedPool::default());
        pools.push((Arc::downgrade(proxy), pool.clone()));
        pool
    })
}

/// The pool of one client connection (all on one worker thread, hence `RefCell`; no borrow
/// is held across an await): its own server connections, or the worker's shared ones.
#[derive(Debug)]
pub(crate) struct Pool {
    entries: Rc<SharedPool>,
    shared: bool,
    /// A server connection that failed during the TLS tunnel setup: requests in that tunnel
    /// are answered 502 with this reason (always the client connection's own).
    failed: RefCell<HashMap<Destination, ServerError, DestHasher>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::own()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let n = self.entries.clients.get().saturating_sub(1);
        self.entries.clients.set(n);
        if self.shared {
            self.entries.trim();
        }
    }
}

impl Pool {
    /// A client connection's own pool.
    pub(crate) fn own() -> Self {
        let entries = Rc::new(SharedPool::default());
        entries.clients.set(1);
        Self {
            entries,
            shared: false,
            failed: RefCell::default(),
        }
    }

    /// The worker's pool shared with the other client connections of `proxy` on this thread.
    pub(crate) fn shared(proxy: &Arc<crate::context::ProxyShared>) -> Self {
        let entries = shared_for(proxy);
        entries.clients.set(entries.clients.get() + 1);
        Self {
            entries,
            shared: true,
            failed: RefCell::default(),
        }
    }

    /// Whether this is the worker's shared pool.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// Why the server connection for `key` failed earlier, if it did.
    pub(crate) fn failure(&self, key: &Destination) -> Option<ServerError> {
        self.failed.borrow().get(key).cloned()
    }

    /// Records that the server connection for `key` failed (requests for it get a 502).
    pub(crate) fn fail(&self, key: Destination, error: ServerError) {
        self.failed.borrow_mut().insert(key, error);
    }

    /// A connection for `key` that can take a request now.
    pub(crate) fn usable(&self, key: &Destination) -> Option<PoolEntry> {
        let mut pool = self.entries.entries.borrow_mut();
        let list = pool.get_mut(key)?;
        list.retain(|e| e.state.get() != ConnState::Closed);
        list.iter().find(|e| e.usable()).cloned()
    }

    /// The server of a connection for `key` that can take a request now, if there is one
    /// (what a flow's hooks see as its server before the request goes out: the connection
    /// dialed for an intercepted tunnel, and its later requests').
    pub(crate) fn server_for(&self, key: &Destination) -> Option<Arc<Server>> {
        let pool = self.entries.entries.borrow();
        let list = pool.get(key)?;
        list.iter().find(|e| e.usable()).map(|e| e.server.clone())
    }

    /// Takes an idle HTTP/1 connection for `key` out of the pool (for an upgrade).
    pub(crate) fn take_idle_h1(&self, key: &Destination) -> Option<PoolEntry> {
        let mut pool = self.entries.entries.borrow_mut();
        let list = pool.get_mut(key)?;
        list.retain(|e| e.state.get() != ConnState::Closed);
        // Upgrades go by CONNECT, never on a connection to a proxy itself.
        let i = list
            .iter()
            .position(|e| !e.h2 && e.usable() && e.proxy_form.is_none())?;
        Some(list.remove(i))
    }

    pub(crate) fn insert(&self, key: Destination, entry: PoolEntry) {
        self.entries
            .entries
            .borrow_mut()
            .entry(key)
            .or_default()
            .push(entry);
    }

    /// Removes `entry` from the pool (after a failure on it).
    pub(crate) fn evict(&self, key: &Destination, entry: &PoolEntry) {
        if let Some(list) = self.entries.entries.borrow_mut().get_mut(key) {
            list.retain(|e| e.addr != entry.addr);
        }
    }
}
