//! Flow objects a script's own threads hold, and junk a script writes into a flow object's
//! slots: what reaches the flow while its hook runs, and what is refused after. In a test
//! binary of their own: the threads these scripts start live as long as the process.
#![cfg(feature = "python")]

use std::path::PathBuf;

use waylay_testkit::{AddonHarness, FlowExt, TempDir, tflow, tresp};

fn write(dir: &TempDir, name: &str, src: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, src).expect("write script");
    p
}

const THREAD_READS: &str = r#"
import threading

kept = []
go = threading.Event()
back = threading.Event()
seen = []

def reader():
    while True:
        go.wait()
        go.clear()
        out = []
        # The flow in its hook (lent to its object): read and written from this thread.
        live = kept[-1]
        out.append(live.request.path)
        live.request.headers["x-from-thread"] = "1"
        # The flows before it, whose hooks returned: their objects hold copies (written here,
        # the flows that went on are not touched).
        for f in kept[:-1]:
            try:
                f.request.headers["x-late"] = "1"
                out.append("written")
            except RuntimeError:
                out.append("detached")
        seen.append(" ".join(out))
        back.set()

threading.Thread(target=reader, daemon=True).start()

def request(flow):
    kept.append(flow)
    del kept[:-3]
    go.set()
    # Waits with the GIL released: the reader runs while the flow is lent.
    back.wait()
    back.clear()
    flow.request.headers["x-seen"] = seen[-1]
    flow.request.path = "/after"
"#;

/// Another Python thread holding flow objects reaches the flow in its hook (lent to its
/// object) and only it: the objects of the flows before, whose hooks returned, hold copies,
/// and writing them does not reach those flows.
#[actix_rt::test]
async fn a_script_thread_reaches_only_the_flow_in_its_hook() {
    let dir = TempDir::new("threadreads");
    let path = write(&dir, "threadreads.py", THREAD_READS);
    let mut h = AddonHarness::script(&path).await;
    for i in 0..5 {
        let f = h.request(tflow()).await;
        let want = std::iter::once(tflow().request.path.to_string())
            .chain(std::iter::repeat_n("written".to_owned(), i.min(2)))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            f.request.headers.get("x-seen"),
            Some(want.as_str()),
            "flow {i}; logs: {:?}",
            h.logs()
        );
        assert_eq!(f.request.headers.get("x-from-thread"), Some("1"));
        assert_eq!(f.request.headers.get("x-late"), None);
        assert_eq!(f.request.path, "/after");
    }
}

const ODD_SLOTS: &str = r#"
from mitmproxy import http

class MyResponse(http.Response):
    pass

class MyFlow(http.HTTPFlow):
    pass

def kind(f):
    try:
        return repr(f())
    except Exception as e:
        return type(e).__name__

def response(flow):
    out = [type(flow).__name__, type(flow.response).__name__]
    p = flow.request.path
    if p == "/odd":
        # A subclass's instance is a response like any other.
        sub = MyResponse.make(201, b"sub", {"x-sub": "1"})
        flow.response = sub
        flow.response.headers["x-sub2"] = "2"
        out.append(str(flow.response is sub))
        # Objects that are not responses are refused.
        out.append(kind(lambda: setattr(flow, "response", object())))
        out.append(kind(lambda: setattr(flow, "response", flow.request)))
        out.append(kind(lambda: setattr(flow, "response", flow)))
        # Slots written directly: what the descriptors return, or an error, never a crash.
        resp = flow.response
        flow._resp = 42
        out.append(kind(lambda: flow.response))
        flow._resp = resp
        resp._headers = 7
        out.append(kind(lambda: resp.headers))
        resp._headers = None
        core = resp._c
        resp._c = "not a core"
        out.append(kind(lambda: resp.headers))
        del resp._c
        out.append(kind(lambda: resp.headers))
        resp._c = core
        out.append(resp.headers["x-sub"])
        flow.response.headers["x-odd"] = " ".join(map(str, out))
        # Left behind for the flow object's reuse: junk in its slots, another class.
        flow.request._headers = "junk"
        flow._resp = "junk"
        flow.metadata = 5
        flow.__class__ = MyFlow
    else:
        flow.response.headers["x-odd"] = " ".join(out) + " " + repr(flow.metadata)
"#;

/// Junk a script writes into the shim's slots (or a class it gives a flow object) does not
/// reach waylay's reads at the slots' offsets: the native descriptors return it or raise, and
/// the object is not reused for a later flow.
#[actix_rt::test]
async fn junk_in_a_flow_objects_slots_is_refused_or_returned() {
    let dir = TempDir::new("oddslots");
    let path = write(&dir, "oddslots.py", ODD_SLOTS);
    let mut h = AddonHarness::script(&path).await;
    let mut odd = tflow().with_response(tresp());
    odd.request.path = "/odd".into();
    let f = h.response(odd).await;
    let r = f.response.expect("the subclass's response");
    assert_eq!(r.status_code, 201);
    assert_eq!(r.headers.get("x-sub2"), Some("2"));
    assert_eq!(
        r.headers.get("x-odd"),
        Some(
            "HTTPFlow Response True AttributeError RuntimeError RuntimeError 42 7 TypeError \
             AttributeError 1"
        ),
        "logs: {:?}",
        h.logs()
    );
    assert!(!h.has_log("error in hook"), "{:?}", h.logs());
    for _ in 0..3 {
        let f = h.response(tflow().with_response(tresp())).await;
        let r = f.response.expect("response");
        assert_eq!(r.headers.get("x-odd"), Some("HTTPFlow Response {}"));
    }
}

const INSIDE_AT_RETURN: &str = r#"
import threading

inside = threading.Event()
never = threading.Event()

class Slow:
    def __index__(self):
        inside.set()
        # The GIL released: the hook returns while this thread is inside the core's method.
        never.wait(0.2)
        return 299

def write(flow):
    flow.response.status_code = Slow()

def response(flow):
    inside.clear()
    threading.Thread(target=write, args=(flow,)).start()
    inside.wait()
"#;

/// A hook that returns while another thread of the script is inside a method of its flow:
/// the flow is taken back once that method returned (its write lands in the flow), not
/// while the method holds it.
#[actix_rt::test]
async fn a_hook_returning_while_a_thread_writes_its_flow_waits_for_the_write() {
    let dir = TempDir::new("insideatreturn");
    let path = write(&dir, "insideatreturn.py", INSIDE_AT_RETURN);
    let mut h = AddonHarness::script(&path).await;
    for _ in 0..2 {
        let f = h.response(tflow().with_response(tresp())).await;
        assert_eq!(
            f.response.expect("response").status_code,
            299,
            "logs: {:?}",
            h.logs()
        );
    }
    assert!(!h.has_log("panic"), "{:?}", h.logs());
}
