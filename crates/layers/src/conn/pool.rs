//! The server connections of one client connection, by destination: reused for later
//! requests, taken out for a WebSocket upgrade, evicted when they fail. Its state changes
//! only through [`Pool`]'s methods.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use actix::Addr;
use waylay_core::flow::Server;

use super::dest::Destination;
use super::server::ServerConnection;
use crate::error::ServerError;

/// A pooled server connection of a client connection.
#[derive(Debug, Clone)]
pub(crate) struct PoolEntry {
    pub(crate) addr: Addr<ServerConnection>,
    pub(crate) server: Arc<Server>,
    pub(crate) h2: bool,
    /// Set by the IO driver when the connection ends.
    pub(crate) closed: Rc<Cell<bool>>,
    /// Set while an HTTP/1 exchange is in flight (until its response body ends).
    pub(crate) busy: Arc<Flag>,
    /// Set once a request was sent on it (a failure then may be a stale keep-alive).
    pub(crate) used: Rc<Cell<bool>>,
    /// Set while it carries a WebSocket upgrade: the WebSocket layer then owns the
    /// connection after a 101 and reports its `server_disconnect`, not the IO driver.
    pub(crate) upgrading: Rc<Cell<bool>>,
}

impl PoolEntry {
    pub(crate) fn usable(&self) -> bool {
        !self.closed.get() && (self.h2 || !self.busy.get())
    }
}

/// A boolean shared with a body that may be dropped on another thread's schedule.
#[derive(Debug, Default)]
pub(crate) struct Flag(std::sync::atomic::AtomicBool);

impl Flag {
    pub(crate) fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
    pub(crate) fn set(&self, v: bool) {
        self.0.store(v, std::sync::atomic::Ordering::Release);
    }
}

/// The pool of one client connection (all on one worker thread, hence `RefCell`; no borrow
/// is held across an await).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    entries: RefCell<HashMap<Destination, Vec<PoolEntry>>>,
    /// A server connection that failed during the TLS tunnel setup: requests in that tunnel
    /// are answered 502 with this reason.
    failed: RefCell<HashMap<Destination, ServerError>>,
}

impl Pool {
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
        let mut pool = self.entries.borrow_mut();
        let list = pool.get_mut(key)?;
        list.retain(|e| !e.closed.get());
        list.iter().find(|e| e.usable()).cloned()
    }

    /// Takes an idle HTTP/1 connection for `key` out of the pool (for an upgrade).
    pub(crate) fn take_idle_h1(&self, key: &Destination) -> Option<PoolEntry> {
        let mut pool = self.entries.borrow_mut();
        let list = pool.get_mut(key)?;
        list.retain(|e| !e.closed.get());
        let i = list.iter().position(|e| !e.h2 && e.usable())?;
        Some(list.remove(i))
    }

    pub(crate) fn insert(&self, key: Destination, entry: PoolEntry) {
        self.entries
            .borrow_mut()
            .entry(key)
            .or_default()
            .push(entry);
    }

    /// Removes `entry` from the pool (after a failure on it).
    pub(crate) fn evict(&self, key: &Destination, entry: &PoolEntry) {
        if let Some(list) = self.entries.borrow_mut().get_mut(key) {
            list.retain(|e| e.addr != entry.addr);
        }
    }
}
