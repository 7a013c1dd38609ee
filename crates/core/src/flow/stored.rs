//! Streamed bodies kept on disk (`store_streamed_bodies`): the proxy hands each chunk it
//! passes on to a [`BodyStore`], which appends it to a temporary file; the flow's message
//! holds a [`StoredBody`] that reads it back (the flow-file writer copies it into the file in
//! pieces). The body is never held in memory whole.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Still being written.
const WRITING: u8 = 0;
/// Every chunk is in the file.
const COMPLETE: u8 = 1;
/// The body ended early or a write failed: the file holds only part of it.
const FAILED: u8 = 2;

struct Inner {
    path: PathBuf,
    len: AtomicU64,
    state: AtomicU8,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A streamed body on disk, shared by every copy of the flow; the file is removed when the
/// last copy is dropped.
#[derive(Clone)]
pub struct StoredBody(Arc<Inner>);

impl std::fmt::Debug for StoredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBody")
            .field("len", &self.len())
            .field("complete", &self.is_complete())
            .finish()
    }
}

impl PartialEq for StoredBody {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl StoredBody {
    /// The bytes stored so far (all of them once complete).
    pub fn len(&self) -> u64 {
        self.0.len.load(Ordering::Acquire)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the whole body is stored (it was passed on to its end).
    pub fn is_complete(&self) -> bool {
        self.0.state.load(Ordering::Acquire) == COMPLETE
    }

    /// Copies the stored bytes (exactly [`len`](Self::len) of them) to `out`, 64 KiB at a
    /// time.
    pub fn copy_to(&self, out: &mut dyn Write) -> std::io::Result<u64> {
        let want = self.len();
        let file = File::open(&self.0.path)?;
        let copied = std::io::copy(&mut file.take(want), out)?;
        if copied != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("stored body is {copied} bytes, {want} expected"),
            ));
        }
        Ok(copied)
    }

    /// The stored bytes in memory (for callers that need them whole).
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        self.copy_to(&mut v)?;
        Ok(v)
    }
}

/// The writing end: chunks are appended as they pass; [`finish`](Self::finish) marks the body
/// complete, and dropping it unfinished marks it failed (the flow then has no body, as when
/// it is not stored).
#[derive(Debug)]
pub struct BodyStore {
    file: Option<File>,
    body: StoredBody,
}

/// Temporary files get unique names within the process.
static NEXT: AtomicU64 = AtomicU64::new(0);

impl BodyStore {
    /// A new, empty store in the system's temporary directory, and the handle the flow
    /// keeps.
    pub fn create() -> std::io::Result<(Self, StoredBody)> {
        Self::create_in(&std::env::temp_dir())
    }

    /// A new, empty store in `dir`.
    pub fn create_in(dir: &std::path::Path) -> std::io::Result<(Self, StoredBody)> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("waylay-body-{}-{n}", std::process::id()));
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        // Bodies may hold secrets, and the temporary directory is shared: owner only.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let file = open.open(&path)?;
        let body = StoredBody(Arc::new(Inner {
            path,
            len: AtomicU64::new(0),
            state: AtomicU8::new(WRITING),
        }));
        Ok((
            Self {
                file: Some(file),
                body: body.clone(),
            },
            body,
        ))
    }

    /// Appends a chunk. A failed write marks the body failed and drops the rest (the body
    /// still passes through the proxy; only the copy is lost).
    pub fn push(&mut self, chunk: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(chunk) {
            Ok(()) => {
                self.body
                    .0
                    .len
                    .fetch_add(chunk.len() as u64, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(
                    "store_streamed_bodies: writing the body failed, it is not stored: {e}"
                );
                self.file = None;
                self.body.0.state.store(FAILED, Ordering::Release);
            }
        }
    }

    /// Marks the body complete (unless a write failed).
    pub fn finish(mut self) {
        if self.file.take().is_some() {
            self.body.0.state.store(COMPLETE, Ordering::Release);
        }
    }
}

impl Drop for BodyStore {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            self.body.0.state.store(FAILED, Ordering::Release);
        }
    }
}
