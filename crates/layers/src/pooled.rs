//! Per-request futures in recycled blocks.
//!
//! Every request a client sends is served by a future of a few KiB (the observed path's is
//! about 3.5 KiB in a release build), boxed once per request so that the future hyper keeps
//! per connection stays small while the connection idles (S5 in `BENCHMARKS.md`). glibc's
//! per-thread cache serves only allocations up to 1032 bytes; a larger one goes through the
//! general bins, which cost about 1,500 instructions per allocate-and-free pair in
//! `benches/count_requests.sh` (the observed path's 9 % over the plain one, the unobserved
//! path's 1 %). [`Pooled`] puts such a future into a fixed-size block taken from a per-thread
//! free list of at most [`KEEP`] blocks, and gives the block back when the future is dropped:
//! the same idea as the allocator's own cache, for the one size it does not cache.
//!
//! A future larger than a block, or more strictly aligned, is boxed as usual.

#![expect(
    unsafe_code,
    reason = "a block outlives the futures placed in it; see each SAFETY comment"
)]

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// The size of a block: the largest request future in a release build fits with room to
/// spare.
pub(crate) const BLOCK_SIZE: usize = 4096;
const BLOCK_ALIGN: usize = 16;
/// Blocks kept per thread when their futures end (more are freed): as many as requests in
/// flight at once on one worker in the usual loads; 128 KiB at most.
pub(crate) const KEEP: usize = 32;

/// A block's layout (checked when compiling: a non-zero size, a power-of-two alignment).
const BLOCK: Layout = match Layout::from_size_align(BLOCK_SIZE, BLOCK_ALIGN) {
    Ok(l) => l,
    Err(_) => panic!("invalid block layout"),
};

fn block_layout() -> Layout {
    BLOCK
}

/// A thread's free blocks; freed when the thread ends.
struct FreeBlocks(Vec<NonNull<u8>>);

impl Drop for FreeBlocks {
    fn drop(&mut self) {
        for b in self.0.drain(..) {
            // SAFETY: every pointer in the list was allocated with `block_layout()` and is
            // owned by the list alone (a block is in the list or under one `Pooled`).
            unsafe { dealloc(b.as_ptr(), block_layout()) };
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeBlocks> = const { RefCell::new(FreeBlocks(Vec::new())) };
}

/// A block from this thread's free list, or a new one.
fn take_block() -> NonNull<u8> {
    let reused = FREE
        .try_with(|f| f.try_borrow_mut().ok().and_then(|mut f| f.0.pop()))
        .ok()
        .flatten();
    reused.unwrap_or_else(|| {
        let layout = block_layout();
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) };
        NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout))
    })
}

/// Gives a block back: kept for the next future when the list has room, freed otherwise
/// (or when the thread is ending).
fn give_block(b: NonNull<u8>) {
    let kept = FREE
        .try_with(|f| match f.try_borrow_mut() {
            Ok(mut f) if f.0.len() < KEEP => {
                f.0.push(b);
                true
            }
            _ => false,
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `b` was allocated with `block_layout()` and nothing else refers to it.
        unsafe { dealloc(b.as_ptr(), block_layout()) };
    }
}

/// Whether a `F` fits a block.
const fn fits<F>() -> bool {
    size_of::<F>() <= BLOCK_SIZE && align_of::<F>() <= BLOCK_ALIGN
}

/// A future in a recycled block (or its own box when it does not fit one): polled in
/// place, dropped in place, the block given back.
pub(crate) struct Pooled<F: Future> {
    ptr: NonNull<F>,
    _owns: PhantomData<F>,
}

impl<F: Future> Pooled<F> {
    /// Makes the future in its block: `make` (an `async fn` called with its arguments)
    /// writes them into the block directly; a future passed by value would be built on the
    /// stack and copied whole (a few KiB, though only the arguments are set before its first
    /// poll).
    #[inline(always)]
    pub(crate) fn with(make: impl FnOnce() -> F) -> Self {
        let ptr = if fits::<F>() {
            let p = take_block().cast::<F>();
            // SAFETY: the block is large and aligned enough for `F` (`fits`), and
            // unused: it was just taken from the free list or allocated.
            unsafe { p.as_ptr().write(make()) };
            p
        } else {
            NonNull::from(Box::leak(Box::new(make())))
        };
        Self {
            ptr,
            _owns: PhantomData,
        }
    }
}

// The future never moves (it stays in its block); only the pointer to it does, as with `Box`.
impl<F: Future> Unpin for Pooled<F> {}

impl<F: Future> Future for Pooled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future was written at `ptr` when made and stays there until `drop`
        // (it is never moved out, nor is the block reused before then), so pinning it is
        // sound; `&mut self` makes this the only reference to it.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F: Future> Drop for Pooled<F> {
    fn drop(&mut self) {
        if fits::<F>() {
            // SAFETY: the future at `ptr` is initialised and dropped exactly once, here; the
            // block is then unused and goes back to the list.
            unsafe { self.ptr.as_ptr().drop_in_place() };
            give_block(self.ptr.cast());
        } else {
            // SAFETY: `ptr` came from `Box::leak` in `new` and is reclaimed once.
            drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    /// Records its drop.
    struct Probe(Rc<std::cell::Cell<u32>>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    fn free_len() -> usize {
        FREE.with(|f| f.borrow().0.len())
    }

    #[test]
    fn futures_run_and_drop_once_and_blocks_are_reused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let drops = Rc::new(std::cell::Cell::new(0));
        let before = free_len();
        let p = Probe(drops.clone());
        let big = [7u8; 2000];
        let out = rt.block_on(Pooled::with(|| async move {
            tokio::task::yield_now().await;
            let _p = p;
            big.iter().map(|b| u32::from(*b)).sum::<u32>()
        }));
        assert_eq!(out, 14_000);
        assert_eq!(drops.get(), 1);
        assert_eq!(free_len(), before.max(1), "the block went back to the list");
        // The next future takes that block: the list does not grow.
        let addr_before = FREE.with(|f| f.borrow().0.last().copied());
        let fut = Pooled::with(|| async { 1 });
        assert_eq!(Some(fut.ptr.cast::<u8>()), addr_before);
        drop(fut);
        // Dropped before it ran: its captures are dropped too.
        let p = Probe(drops.clone());
        drop(Pooled::with(|| async move {
            let _p = p;
        }));
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn the_list_keeps_at_most_keep_blocks() {
        let many: Vec<_> = (0..KEEP + 8)
            .map(|i| Pooled::with(|| async move { i }))
            .collect();
        drop(many);
        assert_eq!(free_len(), KEEP);
    }

    #[test]
    fn futures_larger_than_a_block_are_boxed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!fits::<[u8; BLOCK_SIZE + 1]>());
        let big = [1u8; BLOCK_SIZE + 1];
        let before = free_len();
        let n = rt.block_on(Pooled::with(|| async move {
            tokio::task::yield_now().await;
            big.len()
        }));
        assert_eq!(n, BLOCK_SIZE + 1);
        assert_eq!(free_len(), before, "a boxed future gives no block back");
    }
}
