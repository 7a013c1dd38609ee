//! The save addon (`-w`) through the real addon manager: when flows are written, open flows
//! at shutdown, appending, bad paths, and a writer that falls behind (flows wait, none lost).

use std::time::Duration;

use waylay_addons::{SAVE_QUEUE, Save};
use waylay_core::flow::WebSocketMessage;
use waylay_core::flowfile::FlowReader;
use waylay_core::{Flow, HookKind, HttpFlow};
use waylay_testkit::{
    AddonHarness, FlowExt, TempDir, tflow, tresp, ttcpflow, twebsocketflow, within,
};

fn read(path: &std::path::Path) -> Vec<Flow> {
    let f = std::fs::File::open(path).expect("the flow file exists");
    FlowReader::new(f)
        .collect::<Result<_, _>>()
        .expect("the flow file reads")
}

fn http(f: &Flow) -> &HttpFlow {
    match f {
        Flow::Http(h) => h,
        Flow::Tcp(_) => panic!("expected an HTTP flow"),
    }
}

async fn harness(path: &str) -> AddonHarness {
    let mut h = AddonHarness::new(Save::new()).await;
    h.set_options(&[format!("save_stream_file={path}")])
        .await
        .expect("save_stream_file accepted");
    h
}

#[actix_rt::test]
async fn flows_are_written_when_they_complete_and_open_ones_at_shutdown() {
    let dir = TempDir::new("save");
    let path = dir.path().join("sub/dir/out.flows");
    let mut h = harness(&path.display().to_string()).await;

    // Complete: request then response; an error flow.
    let done = h.request(tflow()).await;
    let done_id = done.id;
    h.response(done.with_response(tresp())).await;
    let failed = h.error(tflow().with_error("connection refused")).await;
    // The writer flushes once its queue is empty: the finished flows are in the file
    // before shutdown.
    within("the finished flows reach the file", async {
        // Counted leniently: the file may be caught mid-write.
        while std::fs::File::open(&path)
            .map(|f| FlowReader::new(f).filter_map(Result::ok).count())
            .unwrap_or(0)
            < 2
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Still open at shutdown: a request without response, a WebSocket mid-conversation
    // and a TCP connection.
    let open = h.request(tflow()).await;
    let mut ws = twebsocketflow();
    ws.websocket.as_mut().expect("ws").messages.clear();
    let mut ws = h.request(ws).await;
    ws = h.response(ws).await;
    for text in ["one", "two"] {
        ws.websocket
            .as_mut()
            .expect("ws")
            .messages
            .push(WebSocketMessage::text(true, text));
        ws = h.websocket_message(ws).await;
    }
    let mut tcp = h.tcp_start(ttcpflow()).await;
    tcp.messages.truncate(1);
    let tcp = h.tcp_message(tcp).await;
    h.shutdown().await;

    let flows = read(&path);
    assert_eq!(flows.len(), 5);
    assert_eq!(flows[0].id(), done_id);
    assert_eq!(
        http(&flows[0])
            .response
            .as_ref()
            .expect("response")
            .status_code,
        200
    );
    assert_eq!(flows[1].id(), failed.id);
    assert_eq!(
        http(&flows[1]).error.as_ref().expect("error").msg,
        "connection refused"
    );
    let mut rest: Vec<&Flow> = flows[2..].iter().collect();
    rest.sort_by_key(|f| f.id());
    let mut ids = vec![open.id, ws.id, tcp.id];
    ids.sort();
    assert_eq!(rest.iter().map(|f| f.id()).collect::<Vec<_>>(), ids);
    for f in rest {
        match f {
            Flow::Http(h) if h.id == ws.id => {
                let msgs = &h.websocket.as_ref().expect("ws").messages;
                let texts: Vec<_> = msgs.iter().filter_map(|m| m.as_text()).collect();
                assert_eq!(texts, ["one", "two"]);
            }
            Flow::Http(h) => assert!(h.response.is_none()),
            Flow::Tcp(t) => assert_eq!(&t.messages[0].content[..], b"hello"),
        }
    }
}

#[actix_rt::test]
async fn websocket_and_tcp_flows_are_written_at_their_end() {
    let dir = TempDir::new("save");
    let path = dir.path().join("out.flows");
    let mut h = harness(&path.display().to_string()).await;
    let ws = h.response(twebsocketflow()).await;
    let ws = h.websocket_end(ws).await;
    let tcp = h.tcp_start(ttcpflow()).await;
    let tcp = h.tcp_error(tcp).await;
    h.shutdown().await;
    let flows = read(&path);
    assert_eq!(
        flows.len(),
        2,
        "the 101 response alone does not write the flow"
    );
    assert_eq!(flows[0].id(), ws.id);
    assert_eq!(
        http(&flows[0])
            .websocket
            .as_ref()
            .expect("ws")
            .messages
            .len(),
        3
    );
    assert_eq!(flows[1].id(), tcp.id);
}

#[actix_rt::test]
async fn a_leading_plus_appends() {
    let dir = TempDir::new("save");
    let path = dir.path().join("out.flows");
    for spec in [path.display().to_string(), format!("+{}", path.display())] {
        let mut h = harness(&spec).await;
        h.response(tflow().with_response(tresp())).await;
        h.shutdown().await;
    }
    assert_eq!(read(&path).len(), 2);
    // Without the plus the file starts over.
    let mut h = harness(&path.display().to_string()).await;
    h.response(tflow().with_response(tresp())).await;
    h.shutdown().await;
    assert_eq!(read(&path).len(), 1);
}

#[actix_rt::test]
async fn an_unwritable_path_is_a_clear_option_error() {
    let dir = TempDir::new("save");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write");
    let mut h = AddonHarness::new(Save::new()).await;
    let e = h
        .set_options(&[format!(
            "save_stream_file={}/sub/out.flows",
            blocker.display()
        )])
        .await
        .expect_err("a path under a file is refused");
    let msg = e.to_string();
    assert!(
        msg.starts_with("option save_stream_file: cannot create"),
        "{msg}"
    );
    // The proxy goes on without a stream.
    h.response(tflow().with_response(tresp())).await;
}

/// A writer that cannot write (a FIFO nobody reads yet) fills the queue; the hooks then
/// wait, the wait is logged, and once the reader starts every flow arrives.
#[actix_rt::test]
async fn a_slow_writer_makes_flows_wait_and_none_is_dropped() {
    let dir = TempDir::new("save");
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader_path = fifo.clone();
    // Opening a FIFO's read side blocks until the writer opens it: do it on a thread.
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(&reader_path).expect("open the FIFO");
        go_rx.recv().expect("go");
        FlowReader::new(f)
            .collect::<Result<Vec<_>, _>>()
            .expect("reads")
    });
    let mut h = harness(&fifo.display().to_string()).await;
    let total = SAVE_QUEUE + 200;
    let manager = h.manager().clone();
    let firing = actix::spawn(async move {
        for _ in 0..total {
            let f = tflow().with_response(tresp());
            manager
                .fire(HookKind::Response, Box::new(f))
                .await
                .expect("the hook runs");
        }
    });
    within("the writer falls behind", async {
        while !h.has_log("flows wait for it") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    go_tx.send(()).expect("reader waits");
    within("every flow goes through", firing)
        .await
        .expect("no panic");
    h.shutdown().await;
    let flows = reader.join().expect("reader thread");
    assert_eq!(flows.len(), total);
    assert!(
        h.has_log("waited for the flow file writer"),
        "{:?}",
        h.logs()
    );
}

#[actix_rt::test]
async fn save_stream_filter_limits_what_is_written() {
    let dir = TempDir::new("save");
    let path = dir.path().join("out.flows");
    let mut h = AddonHarness::new(Save::new()).await;
    h.set_options(&[
        format!("save_stream_file={}", path.display()),
        "save_stream_filter=~c 404 | ~tcp".to_owned(),
    ])
    .await
    .expect("accepted");
    h.response(tflow().with_response(tresp())).await;
    let mut nf = tresp();
    nf.status_code = 404;
    let kept = h.response(tflow().with_response(nf)).await;
    let tcp = h.tcp_start(ttcpflow()).await;
    h.shutdown().await;
    let ids: Vec<_> = read(&path).iter().map(Flow::id).collect();
    assert_eq!(ids, [kept.id, tcp.id], "the 404 and the open TCP flow");

    let mut h = AddonHarness::new(Save::new()).await;
    let e = h
        .set_options(&["save_stream_filter=~c"])
        .await
        .expect_err("a bad filter is refused");
    assert!(
        e.to_string().starts_with("option save_stream_filter: "),
        "{e}"
    );
}

/// Set, changed and cleared while running, as mitmproxy's `save`: a flow still open when the
/// file changes goes to the next file when it completes; clearing the option writes the open
/// flows, flushes and closes the file at once; idle, the addon handles no flow hook.
#[actix_rt::test]
async fn save_stream_file_changed_and_cleared_at_run_time() {
    let dir = TempDir::new("save-runtime");
    let first = dir.path().join("first.flows");
    let second = dir.path().join("second.flows");
    let mut h = AddonHarness::new(Save::new()).await;
    assert!(!h.handles(HookKind::Request));
    assert!(!h.handles(HookKind::Response));

    h.set_options(&[format!("save_stream_file={}", first.display())])
        .await
        .expect("set");
    assert!(h.handles(HookKind::Request));
    assert!(h.handles(HookKind::TcpEnd));
    let done = h.request(tflow()).await;
    let done = h.response(done.with_response(tresp())).await;
    let moved = h.request(tflow()).await;

    h.set_options(&[format!("save_stream_file={}", second.display())])
        .await
        .expect("changed");
    let ids: Vec<_> = read(&first).iter().map(Flow::id).collect();
    assert_eq!(ids, [done.id]);
    let moved = h.response(moved.with_response(tresp())).await;
    let open = h.request(tflow()).await;

    h.set_options(&["save_stream_file="])
        .await
        .expect("cleared");
    assert!(!h.handles(HookKind::Request));
    assert!(!h.handles(HookKind::Response));
    let flows = read(&second);
    let ids: Vec<_> = flows.iter().map(Flow::id).collect();
    assert_eq!(ids, [moved.id, open.id]);
    assert!(http(&flows[1]).response.is_none());
    h.shutdown().await;
    assert_eq!(read(&second).len(), 2);
}
