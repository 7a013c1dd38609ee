//! Every flow the UI saw, in SQLite: written by one thread fed through a bounded channel
//! (never on a connection's path), read by keyset paging. Under overload it drops bodies
//! first, then whole flows, and counts what it dropped; it never makes the proxy wait.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::{Connection, OptionalExtension, params};
use waylay_core::Flow;

use crate::json::BodyLens;
use crate::state::Bodies;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("flow store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored flow does not decode.
    #[error("flow store: a stored flow does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// The writer thread could not start.
    #[error("flow store: {0}")]
    Io(#[from] std::io::Error),
}

enum Op {
    Put {
        seq: u64,
        /// Without bodies.
        flow: Arc<Flow>,
        bodies: Option<Bodies>,
        lens: BodyLens,
        bytes: usize,
    },
    Delete(u64),
    Clear,
}

/// What the store dropped under overload since it started.
#[derive(Debug, Default)]
pub(crate) struct Drops {
    pub(crate) bodies: AtomicU64,
    pub(crate) flows: AtomicU64,
}

/// The SQLite flow store.
#[derive(Debug)]
pub(crate) struct Store {
    tx: Sender<Op>,
    pending_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    pub(crate) drops: Drops,
    reader: Mutex<Connection>,
    path: PathBuf,
    temporary: bool,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put { seq, .. } => write!(f, "Put({seq})"),
            Self::Delete(s) => write!(f, "Delete({s})"),
            Self::Clear => f.write_str("Clear"),
        }
    }
}

fn open(path: &Path, temporary: bool) -> Result<Connection, StoreError> {
    let c = Connection::open(path)?;
    // A temporary store dies with the process: nothing to keep safe over a crash, so no
    // syncs at all (a store at a path keeps WAL's NORMAL: synced at checkpoints).
    c.execute_batch(if temporary {
        "PRAGMA synchronous=OFF;"
    } else {
        "PRAGMA synchronous=NORMAL;"
    })?;
    // 16 KiB pages: 2 KiB bodies waste about half of a 4 KiB page (research, measured).
    c.execute_batch(
        "PRAGMA page_size=16384; PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS flows (seq INTEGER PRIMARY KEY, id TEXT NOT NULL,
             flow TEXT NOT NULL, req_len INTEGER, resp_len INTEGER);
         CREATE INDEX IF NOT EXISTS flows_id ON flows(id);
         CREATE TABLE IF NOT EXISTS bodies (seq INTEGER NOT NULL, part INTEGER NOT NULL,
             data BLOB NOT NULL, PRIMARY KEY (seq, part));",
    )?;
    Ok(c)
}

/// Takes the bodies out of `flow` (they go to their own table).
pub(crate) fn split_bodies(flow: &mut Flow) -> [Option<Bytes>; 2] {
    match flow {
        Flow::Http(f) => [
            f.request.raw_content.take(),
            f.response.as_mut().and_then(|r| r.raw_content.take()),
        ],
        Flow::Tcp(_) => [None, None],
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, or in a temporary file removed on drop.
    pub(crate) fn open(
        path: Option<PathBuf>,
        queue: usize,
        max_bytes: usize,
    ) -> Result<Self, StoreError> {
        let temporary = path.is_none();
        let path = path.unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "waylay-web-{}-{}.sqlite",
                std::process::id(),
                crate::auth::random_hex()
            ))
        });
        let writer = open(&path, temporary)?;
        let reader = open(&path, temporary)?;
        let (tx, rx) = crossbeam_channel::bounded(queue.max(1));
        let pending_bytes = Arc::new(AtomicUsize::new(0));
        let pending = pending_bytes.clone();
        std::thread::Builder::new()
            .name("waylay-web-store".into())
            .spawn(move || write_loop(writer, rx, pending))?;
        Ok(Self {
            tx,
            pending_bytes,
            max_bytes,
            drops: Drops::default(),
            reader: Mutex::new(reader),
            path,
            temporary,
        })
    }

    /// The SQLite file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `flow` (its bodies apart, as the UI holds them) for writing. Never waits unless
    /// `wait` (a flow file being loaded, on the UI's side: nothing is dropped then).
    /// Returns what was dropped: `(bodies, whole flow)`.
    pub(crate) fn put(
        &self,
        seq: u64,
        flow: Arc<Flow>,
        mut bodies: Option<Bodies>,
        lens: BodyLens,
        wait: bool,
    ) -> (bool, bool) {
        let mut bytes: usize = bodies
            .as_ref()
            .map_or(0, |b| b.iter().flatten().map(Bytes::len).sum());
        let mut dropped_bodies = false;
        if wait {
            self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
            let op = Op::Put {
                seq,
                flow,
                bodies,
                lens,
                bytes,
            };
            if self.tx.send(op).is_err() {
                self.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.drops.flows.fetch_add(1, Ordering::Relaxed);
                return (false, true);
            }
            return (false, false);
        }
        if bytes > 0 && self.pending_bytes.load(Ordering::Relaxed) + bytes > self.max_bytes {
            bodies = None;
            bytes = 0;
            dropped_bodies = true;
            self.drops.bodies.fetch_add(1, Ordering::Relaxed);
        }
        self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
        let op = Op::Put {
            seq,
            flow,
            bodies,
            lens,
            bytes,
        };
        match self.tx.try_send(op) {
            Ok(()) => (dropped_bodies, false),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending_bytes.fetch_sub(bytes, Ordering::Relaxed);
                self.drops.flows.fetch_add(1, Ordering::Relaxed);
                (dropped_bodies, true)
            }
        }
    }

    /// Removes a flow.
    pub(crate) fn delete(&self, seq: u64) {
        // A delete must not be lost: it may wait for room (the UI's thread, never a proxy one).
        let _ = self.tx.send(Op::Delete(seq));
    }

    /// Removes every flow.
    pub(crate) fn clear(&self) {
        let _ = self.tx.send(Op::Clear);
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `limit` flows (without bodies) with `seq` in `(after, before)`: the newest ones
    /// when `newest` is set, else the oldest; returned in ascending order.
    pub(crate) fn page(
        &self,
        after: u64,
        before: u64,
        limit: usize,
        newest: bool,
    ) -> Result<Vec<(u64, Flow, BodyLens)>, StoreError> {
        let c = self.reader();
        let sql = if newest {
            "SELECT seq, flow, req_len, resp_len FROM flows WHERE seq > ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        } else {
            "SELECT seq, flow, req_len, resp_len FROM flows WHERE seq > ?1 AND seq < ?2 ORDER BY seq ASC LIMIT ?3"
        };
        let mut st = c.prepare_cached(sql)?;
        let rows = st.query_map(
            params![
                after as i64,
                before.min(i64::MAX as u64) as i64,
                limit as i64
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, text, ql, sl) = row?;
            let flow: Flow = serde_json::from_str(&text)?;
            let lens = BodyLens {
                request: ql.map(|n| n as usize),
                response: sl.map(|n| n as usize),
            };
            out.push((seq as u64, flow, lens));
        }
        if newest {
            out.reverse();
        }
        Ok(out)
    }

    /// The seq of flow `id`, if stored.
    pub(crate) fn seq_of(&self, id: &str) -> Result<Option<u64>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached("SELECT seq FROM flows WHERE id = ?1")?;
        Ok(st
            .query_row([id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64))
    }

    /// Flow `seq` with its bodies.
    pub(crate) fn get(&self, seq: u64) -> Result<Option<Flow>, StoreError> {
        let text: Option<String> = {
            let c = self.reader();
            let mut st = c.prepare_cached("SELECT flow FROM flows WHERE seq = ?1")?;
            st.query_row([seq as i64], |r| r.get(0)).optional()?
        };
        let Some(text) = text else { return Ok(None) };
        let mut flow: Flow = serde_json::from_str(&text)?;
        if let Flow::Http(f) = &mut flow {
            f.request.raw_content = self.body(seq, 0)?.map(Bytes::from);
            if let Some(r) = f.response.as_mut() {
                r.raw_content = self.body(seq, 1)?.map(Bytes::from);
            }
        }
        Ok(Some(flow))
    }

    /// Body `part` (0 request, 1 response) of flow `seq`.
    pub(crate) fn body(&self, seq: u64, part: u8) -> Result<Option<Vec<u8>>, StoreError> {
        let c = self.reader();
        let mut st = c.prepare_cached("SELECT data FROM bodies WHERE seq = ?1 AND part = ?2")?;
        Ok(st
            .query_row(params![seq as i64, part], |r| r.get(0))
            .optional()?)
    }

    /// How many flows are stored.
    pub(crate) fn count(&self) -> Result<u64, StoreError> {
        let c = self.reader();
        Ok(c.query_row("SELECT count(*) FROM flows", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.temporary {
            // The writer exits when the channel closes; the files may still be open for a
            // moment, which is fine on Unix.
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// How long the writer waits for more work before committing a batch.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

fn write_loop(mut c: Connection, rx: Receiver<Op>, pending: Arc<AtomicUsize>) {
    // Every seq above this was never written: its put needs no delete of old bodies.
    let mut written: u64 = c
        .query_row("SELECT coalesce(max(seq), 0) FROM flows", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_or(u64::MAX, |s| s as u64);
    while let Ok(first) = rx.recv() {
        // A transaction's commit (WAL frames of 16 KiB pages, their checksums) cost about as
        // much as writing 2-3 flows, so a short queue waits LINGER for company instead of
        // committing each flow of moderate traffic on its own (measured: -45k instructions
        // per flow with one request at a time). Asleep, not waiting on the channel: a
        // waiting receiver would be woken by every flow that arrives. A long queue (load)
        // is written at once.
        if rx.len() < 64 {
            std::thread::sleep(LINGER);
        }
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut freed = 0;
        if let Err(e) = write_batch(&mut c, &batch, &mut freed, &mut written) {
            tracing::warn!("web UI flow store: {e}");
        }
        pending.fetch_sub(freed, Ordering::Relaxed);
    }
}

fn write_batch(
    c: &mut Connection,
    batch: &[Op],
    freed: &mut usize,
    written: &mut u64,
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    for op in batch {
        match op {
            Op::Put {
                seq,
                flow,
                bodies,
                lens,
                bytes,
            } => {
                *freed += bytes;
                let text = serde_json::to_string(&**flow)?;
                tx.prepare_cached(
                    "INSERT INTO flows (seq, id, flow, req_len, resp_len) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(seq) DO UPDATE SET flow = excluded.flow,
                         req_len = excluded.req_len, resp_len = excluded.resp_len",
                )?
                .execute(params![
                    *seq as i64,
                    flow.id().to_string(),
                    text,
                    lens.request.map(|n| n as i64),
                    lens.response.map(|n| n as i64)
                ])?;
                // Flows are stored mostly in seq order, once: only a seq that may have been
                // written before (an edit, a flow finished out of order) can have bodies.
                if *seq <= *written {
                    tx.prepare_cached("DELETE FROM bodies WHERE seq = ?1")?
                        .execute([*seq as i64])?;
                } else {
                    *written = *seq;
                }
                for (part, b) in bodies.iter().flat_map(|b| b.iter()).enumerate() {
                    if let Some(b) = b {
                        tx.prepare_cached(
                            "INSERT INTO bodies (seq, part, data) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![
                            *seq as i64,
                            part as i64,
                            &b[..]
                        ])?;
                    }
                }
            }
            Op::Delete(seq) => {
                tx.prepare_cached("DELETE FROM flows WHERE seq = ?1")?
                    .execute([*seq as i64])?;
                tx.prepare_cached("DELETE FROM bodies WHERE seq = ?1")?
                    .execute([*seq as i64])?;
            }
            Op::Clear => {
                tx.execute_batch("DELETE FROM flows; DELETE FROM bodies;")?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
