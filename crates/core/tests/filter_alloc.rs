//! Matching the common operators does not allocate: a counting allocator watches this
//! thread while filters run over flows (after one warm-up match, which may size the
//! per-thread scratch buffer).

#![expect(
    unsafe_code,
    reason = "a counting global allocator is the way to observe allocations; it only forwards to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use waylay_core::Filter;
use waylay_testkit::{FlowExt, tflow, tresp, ttcpflow, twebsocketflow};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread-local `Cell`, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn common_operators_match_without_allocating() {
    let exprs = [
        "~d example.com",
        "~u example.com/path",
        "example",
        "~m get",
        "~c 200",
        "~h user-agent",
        "~hq accept",
        "~hs content-type",
        "~q",
        "~s",
        "~t text",
        "~all",
        "~http",
        "~tcp",
        "~websocket",
        "~marked",
        "~src 127.0.0.1",
        "~dst example",
        "~d example.com & (~c 200 | ~c 404) & !~m post",
        "~b content",
    ];
    let filters: Vec<Filter> = exprs.iter().map(|e| Filter::parse(e).unwrap()).collect();
    let mut h2 = tflow().with_response(tresp());
    h2.request.headers.remove("host");
    h2.request.http_version = waylay_core::flow::HttpVersion::Http2;
    h2.request.authority = "example.com:8443".into();
    let http = [
        tflow(),
        tflow().with_response(tresp()),
        twebsocketflow(),
        h2,
    ];
    let tcp = ttcpflow();
    let run = || {
        let mut n = 0;
        for f in &filters {
            for flow in &http {
                n += usize::from(f.matches(flow));
            }
            n += usize::from(f.matches(&tcp));
        }
        n
    };
    let warm = run();
    let before = allocations();
    for _ in 0..50 {
        assert_eq!(run(), warm);
    }
    let used = allocations() - before;
    assert_eq!(used, 0, "{used} allocations while matching");
    assert!(warm > 20, "the filters match something ({warm})");
}
