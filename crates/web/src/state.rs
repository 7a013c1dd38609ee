//! What the UI knows, shared by the addon (on the proxy's thread) and the server (on the
//! UI's thread): a bounded ring of recent flows, the intercepted ones, the event log, and
//! the numbered stream of changes browsers follow.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use waylay_core::flow::{FlowId, InterceptHandle};
use waylay_core::{Flow, ManagerHandle};

use crate::auth::Auth;
use crate::config::WebConfig;
use crate::json::{BodyLens, flow_json, write_flow_json};
use crate::store::{Store, StoreError, split_bodies};

/// A flow's two bodies (request, response), shared.
pub(crate) type Bodies = Arc<[Option<Bytes>; 2]>;

/// Bodies up to this size travel with an update to the browsers' connections (for body
/// filters); larger ones stay out of the update queue, whose memory is then bounded by
/// `client_queue` times this.
const UPDATE_BODY_MAX: usize = 16 * 1024;

/// A flow as the list shows it, shared with the browsers' connections.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Position in the flow list (increasing, never reused).
    pub(crate) seq: u64,
    /// The flow without its bodies (`raw_content` is `None`; `lens` has their sizes).
    pub(crate) flow: Arc<Flow>,
    pub(crate) intercepted: bool,
    pub(crate) modified: bool,
    pub(crate) lens: BodyLens,
    /// The bodies, when held in memory.
    pub(crate) bodies: Option<Bodies>,
}

impl Snapshot {
    /// A snapshot of `flow`, its bodies taken out.
    pub(crate) fn new(seq: u64, mut flow: Flow, intercepted: bool, modified: bool) -> Self {
        let mut bodies = split_bodies(&mut flow);
        compact(&mut flow, &mut bodies);
        let lens = BodyLens {
            request: bodies[0].as_ref().map(Bytes::len),
            response: bodies[1].as_ref().map(Bytes::len),
        };
        let bodies = bodies.iter().any(Option::is_some).then(|| Arc::new(bodies));
        Self {
            seq,
            flow: Arc::new(flow),
            intercepted,
            modified,
            lens,
            bodies,
        }
    }

    pub(crate) fn json(&self) -> Value {
        flow_json(
            &self.flow,
            self.seq,
            self.intercepted,
            self.modified,
            self.lens,
        )
    }

    /// The same JSON as [`Snapshot::json`], written straight into `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        write_flow_json(
            out,
            &self.flow,
            self.seq,
            self.intercepted,
            self.modified,
            self.lens,
        );
    }

    /// Body bytes held.
    fn body_bytes(&self) -> usize {
        self.bodies
            .as_ref()
            .map_or(0, |b| b.iter().flatten().map(Bytes::len).sum())
    }

    /// The flow with its bodies put back (those held).
    pub(crate) fn full_flow(&self) -> Flow {
        let mut f = Flow::clone(&self.flow);
        if let (Some(b), Flow::Http(h)) = (&self.bodies, &mut f) {
            h.request.raw_content = b[0].clone();
            if let Some(r) = h.response.as_mut() {
                r.raw_content = b[1].clone();
            }
        }
        f
    }

    /// Whether bodies exist that this snapshot does not hold.
    fn lacks_bodies(&self) -> bool {
        self.bodies.is_none() && (self.lens.request.is_some() || self.lens.response.is_some())
    }

    /// The copy that goes into the update queue: small bodies only.
    fn for_update(&self) -> Self {
        let mut s = self.clone();
        if s.body_bytes() > UPDATE_BODY_MAX {
            s.bodies = None;
        }
        s
    }
}

/// One change, numbered (`n`) so a browser can order it against the snapshot it fetched.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) n: u64,
    pub(crate) change: Change,
    /// The flow's JSON for an added or updated flow, written by the first browser
    /// connection that sends it and shared by the others.
    pub(crate) flow_json: std::sync::OnceLock<Box<[u8]>>,
}

#[derive(Debug)]
pub(crate) enum Change {
    Add(Snapshot),
    Update(Snapshot),
    Remove(FlowId),
    Reset,
    Event(Value),
    Options(Value),
}

#[derive(Debug)]
struct Entry {
    snap: Snapshot,
    /// Body bytes this entry holds in memory.
    bytes: usize,
    held: Option<InterceptHandle>,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    /// The number of the last change.
    n: u64,
    ring: VecDeque<Entry>,
    index: HashMap<FlowId, u64>,
    ring_bytes: usize,
    backups: HashMap<FlowId, Arc<Flow>>,
    events: VecDeque<Value>,
    next_event: u64,
    /// Live flows the UI asked to kill that were not intercepted: killed at their next hook.
    kill_next: std::collections::HashSet<FlowId>,
    /// The kill switches of live flows: tripped by a kill, they stop a flow between hooks
    /// (a streamed body, a WebSocket or TCP relay) at once.
    switches: HashMap<FlowId, waylay_core::flow::KillSwitch>,
    drops_reported: (u64, u64),
    last_drop_report: Option<Instant>,
}

/// Why an API call failed: an HTTP status and one line.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) u16, pub(crate) String);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(500, e.to_string())
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError(404, format!("no flow {id}"))
}

/// Everything shared by the addon and the server.
#[derive(Debug)]
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) updates: broadcast::Sender<Arc<Update>>,
    pub(crate) store: Store,
    pub(crate) auth: Auth,
    pub(crate) config: WebConfig,
    pub(crate) ui_addr: SocketAddr,
    /// The options as the addon last saw them (`configure`), as mitmweb's `/options` JSON.
    pub(crate) options: Mutex<Value>,
    /// The proxy's addon manager, once attached: options are set through it.
    pub(crate) manager: std::sync::OnceLock<ManagerHandle>,
    /// How many kills wait in `Inner::kill_next`: every hook looks for a pending kill, and
    /// almost always there is none, so it reads this instead of taking the lock.
    pending_kills: AtomicUsize,
}

const MAX_EVENTS: usize = 1000;

impl Shared {
    pub(crate) fn new(config: WebConfig, store: Store, auth: Auth, ui_addr: SocketAddr) -> Self {
        let (updates, _) = broadcast::channel(config.client_queue.max(1));
        let inner = Inner {
            next_seq: 1,
            ..Inner::default()
        };
        Self {
            inner: Mutex::new(inner),
            updates,
            store,
            auth,
            config,
            ui_addr,
            options: Mutex::new(json!({})),
            manager: std::sync::OnceLock::new(),
            pending_kills: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &mut Inner, change: Change) {
        inner.n += 1;
        // No receiver is not an error: nobody has the page open.
        // Nobody listening: nothing to build.
        if self.updates.receiver_count() == 0 {
            return;
        }
        let _ = self.updates.send(Arc::new(Update {
            n: inner.n,
            change,
            flow_json: std::sync::OnceLock::new(),
        }));
    }

    /// The number of the last change (for a snapshot taken now).
    pub(crate) fn seq_now(&self) -> u64 {
        self.lock().n
    }

    /// Keeps the options the addon was configured with, and tells the browsers.
    pub(crate) fn options_changed(&self, all: Value) {
        *self.options.lock().unwrap_or_else(|p| p.into_inner()) = all.clone();
        let mut inner = self.lock();
        self.publish(&mut inner, Change::Options(all));
    }

    /// Whether the UI asked to kill flow `id` (kept until [`Shared::take_kill`]).
    pub(crate) fn kill_pending(&self, id: FlowId) -> bool {
        if self.pending_kills.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.lock().kill_next.contains(&id)
    }

    /// Whether the UI asked to kill flow `id` (then forgotten: it is killed now).
    pub(crate) fn take_kill(&self, id: FlowId) -> bool {
        if self.pending_kills.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut inner = self.lock();
        let taken = inner.kill_next.remove(&id);
        self.pending_kills
            .store(inner.kill_next.len(), Ordering::Release);
        taken
    }

    /// Keeps the kill switch of live flow `id` until the flow is recorded finished.
    pub(crate) fn watch_kill(&self, id: FlowId, switch: waylay_core::flow::KillSwitch) {
        self.lock().switches.insert(id, switch);
    }

    /// Records the current state of a flow seen by the addon; `held` when it was
    /// intercepted; `finished` writes it to the store.
    pub(crate) fn record(&self, flow: Flow, held: Option<InterceptHandle>, finished: bool) {
        self.record_as(flow, held, finished, false);
    }

    /// Adds a flow read from a flow file (not live; a new id if its own is taken). Waits
    /// for room in the store's queue instead of dropping anything.
    pub(crate) fn import(&self, mut flow: Flow) -> Result<(), ApiError> {
        let known = self.seq_of(&flow.id().to_string())?.is_some();
        match &mut flow {
            Flow::Http(f) => {
                f.live = false;
                if known {
                    f.id = FlowId::new();
                }
            }
            Flow::Tcp(f) => {
                f.live = false;
                if known {
                    f.id = FlowId::new();
                }
            }
        }
        self.record_as(flow, None, true, true);
        Ok(())
    }

    fn record_as(&self, flow: Flow, held: Option<InterceptHandle>, finished: bool, wait: bool) {
        let id = flow.id();
        let intercepted = held.is_some();
        let mut snap = Snapshot::new(0, flow, intercepted, false);
        let bytes = snap.body_bytes();
        let mut inner = self.lock();
        if finished && !inner.switches.is_empty() {
            inner.switches.remove(&id);
        }
        let change = match inner.index.get(&id).copied() {
            Some(seq) => {
                let Some(e) = find(&mut inner.ring, seq) else {
                    return;
                };
                snap.seq = seq;
                snap.modified = e.snap.modified;
                let old = e.bytes;
                e.snap = snap.clone();
                e.bytes = bytes;
                e.held = held;
                inner.ring_bytes = inner.ring_bytes - old + bytes;
                Change::Update(snap.for_update())
            }
            None => {
                snap.seq = inner.next_seq;
                inner.next_seq += 1;
                inner.ring.push_back(Entry {
                    snap: snap.clone(),
                    bytes,
                    held,
                });
                inner.index.insert(id, snap.seq);
                inner.ring_bytes += bytes;
                self.evict(&mut inner);
                Change::Add(snap.for_update())
            }
        };
        self.publish(&mut inner, change);
        drop(inner);
        if finished {
            self.store_put(&snap, wait);
        }
    }

    fn store_put(&self, snap: &Snapshot, wait: bool) {
        let (bodies, whole) = self.store.put(
            snap.seq,
            snap.flow.clone(),
            snap.bodies.clone(),
            snap.lens,
            wait,
        );
        if bodies || whole {
            self.report_drops();
        }
    }

    /// Says in the event log (at most once a second) what the store dropped.
    fn report_drops(&self) {
        let mut inner = self.lock();
        if inner
            .last_drop_report
            .is_some_and(|t| t.elapsed().as_secs() < 1)
        {
            return;
        }
        let b = self.store.drops.bodies.load(Ordering::Relaxed);
        let f = self.store.drops.flows.load(Ordering::Relaxed);
        let (pb, pf) = inner.drops_reported;
        inner.drops_reported = (b, f);
        inner.last_drop_report = Some(Instant::now());
        let msg = format!(
            "flow store overloaded: {} more flows stored without bodies, {} more not stored (totals {b}, {f}); the proxy was not slowed",
            b - pb,
            f - pf
        );
        self.push_event(&mut inner, "warn", msg);
    }

    /// Drops the oldest flows past the ring's size, and the oldest bodies past its byte
    /// budget (they stay in the store). Intercepted flows are kept whole.
    fn evict(&self, inner: &mut Inner) {
        while inner.ring.len() > self.config.ring.max(1) {
            let Some(pos) = inner.ring.iter().position(|e| e.held.is_none()) else {
                break;
            };
            if let Some(e) = inner.ring.remove(pos) {
                inner.ring_bytes -= e.bytes;
                inner.index.remove(&e.snap.flow.id());
            }
        }
        let budget = self.config.ring_body_bytes;
        let mut i = 0;
        while inner.ring_bytes > budget && i < inner.ring.len() {
            let e = &mut inner.ring[i];
            i += 1;
            if e.held.is_some() || e.bytes == 0 {
                continue;
            }
            e.snap.bodies = None;
            let freed = e.bytes;
            e.bytes = 0;
            inner.ring_bytes -= freed;
        }
    }

    fn push_event(&self, inner: &mut Inner, level: &str, message: String) {
        inner.next_event += 1;
        let ev = json!({"id": inner.next_event.to_string(), "level": level, "message": message});
        inner.events.push_back(ev.clone());
        while inner.events.len() > MAX_EVENTS {
            inner.events.pop_front();
        }
        self.publish(inner, Change::Event(ev));
    }

    /// Adds an entry to the event log.
    pub(crate) fn event(&self, level: &str, message: String) {
        let mut inner = self.lock();
        self.push_event(&mut inner, level, message);
    }

    /// The event log.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.lock().events.iter().cloned().collect()
    }

    /// A page of flows, ascending: with `after`, the oldest ones after it; else the newest
    /// ones before `before` (or the newest of all). Also the change number it is current to.
    pub(crate) fn page(
        &self,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Snapshot>, u64), ApiError> {
        let limit = limit.clamp(1, 10_000);
        let (mut from_ring, ring_front, n) = {
            let inner = self.lock();
            let front = inner.ring.front().map_or(inner.next_seq, |e| e.snap.seq);
            let it = inner.ring.iter().map(|e| e.snap.clone());
            let v: Vec<Snapshot> = match after {
                Some(a) => it.filter(|s| s.seq > a).take(limit).collect(),
                None => {
                    let b = before.unwrap_or(u64::MAX);
                    let mut v: Vec<Snapshot> = inner
                        .ring
                        .iter()
                        .rev()
                        .filter(|e| e.snap.seq < b)
                        .take(limit)
                        .map(|e| e.snap.clone())
                        .collect();
                    v.reverse();
                    v
                }
            };
            (v, front, inner.n)
        };
        // Older flows than the ring holds come from the store.
        let stored = |after: u64, before: u64, limit: usize, newest: bool| {
            self.store.page(after, before, limit, newest).map(|rows| {
                rows.into_iter()
                    .map(|(seq, flow, lens)| Snapshot {
                        seq,
                        flow: Arc::new(flow),
                        intercepted: false,
                        modified: false,
                        lens,
                        bodies: None,
                    })
                    .collect::<Vec<_>>()
            })
        };
        match after {
            Some(a) if a + 1 < ring_front => {
                let mut older = stored(a, ring_front, limit, false)?;
                older.extend(from_ring);
                older.truncate(limit);
                from_ring = older;
            }
            None if from_ring.len() < limit => {
                let b = before.unwrap_or(u64::MAX).min(ring_front);
                let mut older = stored(0, b, limit - from_ring.len(), true)?;
                older.extend(from_ring);
                from_ring = older;
            }
            _ => {}
        }
        Ok((from_ring, n))
    }

    /// The seq of flow `id`, in memory or stored.
    fn seq_of(&self, id: &str) -> Result<Option<u64>, ApiError> {
        let Ok(fid) = id.parse::<FlowId>() else {
            return Ok(None);
        };
        if let Some(seq) = self.lock().index.get(&fid).copied() {
            return Ok(Some(seq));
        }
        Ok(self.store.seq_of(id)?)
    }

    /// Flow `id` as the list shows it.
    pub(crate) fn snapshot(&self, id: &str) -> Result<Snapshot, ApiError> {
        let seq = self.seq_of(id)?.ok_or_else(|| not_found(id))?;
        if let Some(e) = find(&mut self.lock().ring, seq) {
            return Ok(e.snap.clone());
        }
        let flow = self.store.get(seq)?.ok_or_else(|| not_found(id))?;
        Ok(Snapshot::new(seq, flow, false, false))
    }

    /// Flow `id` with its bodies (from memory, or the store for what memory dropped).
    pub(crate) fn full(&self, id: &str) -> Result<(Snapshot, Flow), ApiError> {
        let snap = self.snapshot(id)?;
        if snap.lacks_bodies()
            && let Some(stored) = self.store.get(snap.seq)?
        {
            return Ok((snap, stored));
        }
        let flow = snap.full_flow();
        Ok((snap, flow))
    }

    /// The flow of `snap` with its bodies (from memory, or the store).
    pub(crate) fn full_of(&self, snap: &Snapshot) -> Result<Flow, ApiError> {
        if snap.lacks_bodies()
            && let Some(stored) = self.store.get(snap.seq)?
        {
            return Ok(stored);
        }
        Ok(snap.full_flow())
    }

    /// Changes flow `id` with `edit`, keeping a backup for `revert`. A flow still travelling
    /// through the proxy can only be edited while it is intercepted.
    pub(crate) fn edit(
        &self,
        id: &str,
        edit: impl FnOnce(&mut Flow) -> Result<(), ApiError>,
    ) -> Result<Snapshot, ApiError> {
        let (snap, mut flow) = self.full(id)?;
        let live = match &flow {
            Flow::Http(f) => f.live,
            Flow::Tcp(f) => f.live,
        };
        if live && !snap.intercepted {
            return Err(ApiError(
                409,
                "the flow is still travelling through the proxy: intercept it to edit it".into(),
            ));
        }
        let before = flow.clone();
        edit(&mut flow)?;
        self.replace(snap, before, flow, true)
    }

    fn replace(
        &self,
        old: Snapshot,
        before: Flow,
        flow: Flow,
        modified: bool,
    ) -> Result<Snapshot, ApiError> {
        let id = flow.id();
        let mut snap = Snapshot::new(old.seq, flow, old.intercepted, modified);
        let bytes = snap.body_bytes();
        let mut inner = self.lock();
        if modified {
            inner.backups.entry(id).or_insert_with(|| Arc::new(before));
        } else {
            inner.backups.remove(&id);
        }
        if let Some(e) = find(&mut inner.ring, old.seq) {
            snap.intercepted = e.snap.intercepted;
            let was = e.bytes;
            e.snap = snap.clone();
            e.bytes = bytes;
            inner.ring_bytes = inner.ring_bytes - was + bytes;
        }
        self.publish(&mut inner, Change::Update(snap.for_update()));
        drop(inner);
        if !snap.intercepted {
            self.store_put(&snap, false);
        }
        Ok(snap)
    }

    /// Restores a flow as it was before its first edit.
    pub(crate) fn revert(&self, id: &str) -> Result<Snapshot, ApiError> {
        let (snap, flow) = self.full(id)?;
        let backup = self.lock().backups.get(&snap.flow.id()).cloned();
        match backup {
            Some(b) => self.replace(snap, flow, Flow::clone(&b), false),
            None => Ok(snap),
        }
    }

    /// Lets an intercepted flow go on (with the edits made to it) or kills it.
    pub(crate) fn release(&self, id: &str, kill: bool) -> Result<Snapshot, ApiError> {
        let seq = self.seq_of(id)?.ok_or_else(|| not_found(id))?;
        let mut inner = self.lock();
        let Some(e) = find(&mut inner.ring, seq) else {
            return Err(ApiError(409, format!("flow {id} is not intercepted")));
        };
        let Some(handle) = e.held.take() else {
            return Err(ApiError(409, format!("flow {id} is not intercepted")));
        };
        e.snap.intercepted = false;
        if kill {
            handle.kill();
        } else if e.snap.modified {
            if let Flow::Tcp(edited) = e.snap.full_flow() {
                // Held at a TCP message: only that (the last) message can have been edited.
                handle.resume_with::<waylay_core::flow::TcpEdit>(Box::new(
                    move |f: &mut waylay_core::TcpFlow| {
                        f.marked = edited.marked;
                        f.comment = edited.comment;
                        if let (Some(m), Some(last)) =
                            (edited.messages.last(), f.messages.last_mut())
                        {
                            last.content = m.content.clone();
                        }
                    },
                ));
            } else if let Flow::Http(edited) = e.snap.full_flow() {
                handle.resume_with::<waylay_core::flow::HttpEdit>(Box::new(
                    move |f: &mut waylay_core::HttpFlow| {
                        f.marked = edited.marked;
                        f.comment = edited.comment;
                        // Held at a WebSocket message: only that (the last) message can
                        // have been edited; the handshake is long gone.
                        let held_message =
                            edited.websocket.as_ref().and_then(|w| w.messages.last());
                        if let Some(m) = held_message {
                            if let Some(last) =
                                f.websocket.as_mut().and_then(|w| w.messages.last_mut())
                            {
                                last.content = m.content.clone();
                            }
                            return;
                        }
                        f.request = edited.request;
                        f.response = edited.response;
                    },
                ));
            } else {
                handle.resume();
            }
        } else {
            handle.resume();
        }
        let snap = e.snap.clone();
        self.publish(&mut inner, Change::Update(snap.for_update()));
        Ok(snap)
    }

    /// Kills flow `id`: at once when it is intercepted; when it is live but not
    /// intercepted, at once too while it waits for its server, streams a response body or
    /// relays WebSocket or TCP messages (its kill switch), else at its next hook.
    pub(crate) fn kill(&self, id: &str) -> Result<Snapshot, ApiError> {
        match self.release(id, true) {
            Err(ApiError(409, _)) => {}
            other => return other,
        }
        let snap = self.snapshot(id)?;
        let live = match &*snap.flow {
            Flow::Http(f) => f.live,
            Flow::Tcp(f) => f.live,
        };
        if !live {
            return Err(ApiError(
                409,
                format!("flow {id} is finished: nothing to kill"),
            ));
        }
        let mut inner = self.lock();
        inner.kill_next.insert(snap.flow.id());
        self.pending_kills
            .store(inner.kill_next.len(), Ordering::Release);
        // Between hooks (streaming, relaying): the layer closes both sides at once.
        if let Some(s) = inner.switches.get(&snap.flow.id()) {
            s.kill();
        }
        drop(inner);
        Ok(snap)
    }

    /// Releases every intercepted flow; `kill` also kills every live one (at its next hook).
    pub(crate) fn release_all(&self, kill: bool) -> usize {
        let ids: Vec<String> = self
            .lock()
            .ring
            .iter()
            .filter(|e| {
                e.held.is_some()
                    || (kill
                        && match &*e.snap.flow {
                            Flow::Http(f) => f.live,
                            Flow::Tcp(f) => f.live,
                        })
            })
            .map(|e| e.snap.flow.id().to_string())
            .collect();
        ids.iter()
            .filter(|id| {
                if kill {
                    self.kill(id).is_ok()
                } else {
                    self.release(id, false).is_ok()
                }
            })
            .count()
    }

    /// A copy of flow `id` under a new id, appended to the list (not live).
    pub(crate) fn duplicate(&self, id: &str) -> Result<Snapshot, ApiError> {
        let (_, mut flow) = self.full(id)?;
        match &mut flow {
            Flow::Http(f) => {
                f.id = FlowId::new();
                f.live = false;
            }
            Flow::Tcp(f) => {
                f.id = FlowId::new();
                f.live = false;
            }
        }
        let new_id = flow.id().to_string();
        self.record(flow, None, true);
        self.snapshot(&new_id)
    }

    /// Removes flow `id` (killing it first if intercepted).
    pub(crate) fn delete(&self, id: &str) -> Result<(), ApiError> {
        let seq = self.seq_of(id)?.ok_or_else(|| not_found(id))?;
        let mut inner = self.lock();
        if let Ok(pos) = inner.ring.binary_search_by_key(&seq, |e| e.snap.seq)
            && let Some(e) = inner.ring.remove(pos)
        {
            if let Some(h) = &e.held {
                h.kill();
            }
            inner.ring_bytes -= e.bytes;
            inner.index.remove(&e.snap.flow.id());
            inner.backups.remove(&e.snap.flow.id());
        }
        if let Ok(fid) = id.parse() {
            self.publish(&mut inner, Change::Remove(fid));
        }
        drop(inner);
        self.store.delete(seq);
        Ok(())
    }

    /// Removes every flow and event (intercepted flows are killed).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        for e in &inner.ring {
            if let Some(h) = &e.held {
                h.kill();
            }
        }
        inner.ring.clear();
        inner.index.clear();
        inner.backups.clear();
        inner.ring_bytes = 0;
        inner.events.clear();
        self.publish(&mut inner, Change::Reset);
        drop(inner);
        self.store.clear();
    }

    /// How many flows the ring holds and their body bytes.
    pub(crate) fn ring_stats(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.ring.len(), inner.ring_bytes)
    }
}

/// Copies header values and bodies out of the buffers they were parsed from: a `Bytes`
/// slice keeps its connection's whole read buffer alive, so a ring of 10k flows would hold
/// 10k read buffers (measured: about 13 KiB per flow instead of 2).
fn compact(flow: &mut Flow, bodies: &mut [Option<Bytes>; 2]) {
    fn own(h: &mut waylay_core::Headers) {
        *h = waylay_core::Headers::from_pairs(
            h.iter()
                .map(|(k, v)| (k.to_owned(), Bytes::copy_from_slice(v))),
        );
    }
    if let Flow::Http(f) = flow {
        own(&mut f.request.headers);
        if let Some(r) = f.response.as_mut() {
            own(&mut r.headers);
        }
    }
    // Small bodies only: a large one is mostly its own buffer, and copying it costs.
    for b in bodies.iter_mut().flatten().filter(|b| b.len() <= 64 * 1024) {
        *b = Bytes::copy_from_slice(b);
    }
}

fn find(ring: &mut VecDeque<Entry>, seq: u64) -> Option<&mut Entry> {
    let pos = ring.binary_search_by_key(&seq, |e| e.snap.seq).ok()?;
    ring.get_mut(pos)
}
