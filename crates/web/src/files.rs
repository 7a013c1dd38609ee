//! Flow files through the UI: `GET /flows/dump` saves every flow (or those a filter matches)
//! in mitmproxy's format, `GET /flows/har` the same as HAR 1.2, `POST /flows/dump` loads a
//! flow file (or a HAR file). Both directions stream through the store a page at a time,
//! so neither a large download nor a large upload is held in memory (mitmproxy#5609).
#![expect(
    clippy::result_large_err,
    reason = "handlers answer Err(response) on the UI's own thread; boxing buys nothing"
)]

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use waylay_core::Flow;
use waylay_core::flowfile::{FlowReader, FlowWriter, har};

use crate::filter::WebFilter;
use crate::server::{Body, Resp, error, json_resp, respond};
use crate::state::Shared;

/// Flows read from the store per step.
const PAGE: usize = 200;
/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 64 * 1024;
/// The largest flow file accepted by `POST /flows/dump`.
const MAX_UPLOAD: u64 = 4 << 30;

/// `GET /flows/dump[?filter=]` (`har`: `GET /flows/har[?filter=]`): streams the flows,
/// oldest first, from a blocking task that reads the store page by page.
pub(crate) fn dump(shared: &Arc<Shared>, query: &str, har: bool) -> Result<Resp, Resp> {
    let filter = match crate::auth::query_param(query, "filter").filter(|f| !f.trim().is_empty()) {
        Some(expr) => Some(WebFilter::parse(&expr).map_err(|e| {
            error(
                400,
                &format!("filter {expr:?}: {} (at {})", e.message, e.position),
            )
        })?),
        None => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write_all(&shared, filter.as_ref(), har, &tx) {
            tracing::warn!("web UI: saving flows failed: {e}");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    let body: Body = StreamBody::new(stream).boxed_unsync();
    let mut r = hyper::Response::new(body);
    let (ct, name) = if har {
        ("application/json", "attachment; filename=\"flows.har\"")
    } else {
        ("application/octet-stream", "attachment; filename=\"flows\"")
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(name));
    Ok(r)
}

type Chunks = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends `buf` on when it is large enough (or `last`); `Ok(false)` when the browser left.
fn flush(buf: &mut Vec<u8>, tx: &Chunks, last: bool) -> bool {
    if (buf.len() < CHUNK && !last) || buf.is_empty() {
        return true;
    }
    tx.blocking_send(Ok(Bytes::from(std::mem::take(buf))))
        .is_ok()
}

fn write_all(
    shared: &Shared,
    filter: Option<&WebFilter>,
    har: bool,
    tx: &Chunks,
) -> Result<(), String> {
    let mut buf = Vec::with_capacity(CHUNK);
    let mut servers = Vec::new();
    let mut first = true;
    if har {
        let head = json!({"version": "1.2", "creator": {"name": "waylay", "version": env!("CARGO_PKG_VERSION"), "comment": ""}, "pages": []}).to_string();
        // `{"log":{...,"entries":[` written by hand: the entries stream in after it.
        buf.extend_from_slice(b"{\"log\":");
        buf.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        buf.extend_from_slice(b",\"entries\":[");
    }
    let mut after = 0;
    loop {
        let (page, _) = shared.page(Some(after), None, PAGE).map_err(|e| e.1)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for snap in &page {
            let flow = shared.full_of(snap).map_err(|e| e.1)?;
            if filter.is_some_and(|f| !f.matches(&flow)) {
                continue;
            }
            if har {
                let Flow::Http(h) = &flow else { continue };
                if !first {
                    buf.push(b',');
                }
                first = false;
                serde_json::to_writer(&mut buf, &har::entry(h, &mut servers))
                    .map_err(|e| e.to_string())?;
            } else {
                FlowWriter::new(&mut buf)
                    .add(&flow)
                    .map_err(|e| e.to_string())?;
            }
            if !flush(&mut buf, tx, false) {
                return Ok(());
            }
        }
    }
    if har {
        buf.extend_from_slice(b"]}}");
    }
    flush(&mut buf, tx, true);
    Ok(())
}

/// Removes the spooled upload when done with it.
struct Spool(std::path::PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `POST /flows/dump`: the body is a flow file (or a HAR file). It is spooled to a
/// temporary file as it arrives, then read flow by flow into the list and the store (added
/// after the flows already there; mitmweb replaces them). Answers how many were loaded; a
/// bad file is refused with the reason, the flows before the bad one are kept.
pub(crate) async fn load(
    req: hyper::Request<Incoming>,
    shared: &Arc<Shared>,
) -> Result<Resp, Resp> {
    let path = std::env::temp_dir().join(format!(
        "waylay-web-upload-{}-{}.flows",
        std::process::id(),
        crate::auth::random_hex()
    ));
    let spool = Spool(path);
    let mut file = std::fs::File::create(&spool.0)
        .map_err(|e| error(500, &format!("cannot spool the upload: {e}")))?;
    let mut body = req.into_body();
    let mut size: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error(400, &format!("reading the upload: {e}")))?;
        if let Some(data) = frame.data_ref() {
            size += data.len() as u64;
            if size > MAX_UPLOAD {
                return Err(error(413, "flow file larger than 4 GiB refused"));
            }
            file.write_all(data)
                .map_err(|e| error(500, &format!("cannot spool the upload: {e}")))?;
        }
    }
    drop(file);
    if size == 0 {
        return Err(error(400, "empty upload: expected a flow file"));
    }
    let shared = shared.clone();
    let result = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&spool.0).map_err(|e| (0, e.to_string()))?;
        let mut n = 0usize;
        for flow in FlowReader::new(f) {
            let flow = flow.map_err(|e| (n, e.to_string()))?;
            shared.import(flow).map_err(|e| (n, e.1))?;
            n += 1;
        }
        if n > 0 {
            shared.event("info", format!("loaded {n} flows from a flow file"));
        }
        Ok::<usize, (usize, String)>(n)
    })
    .await
    .map_err(|e| error(500, &format!("loading the flow file: {e}")))?;
    match result {
        Ok(n) => Ok(json_resp(&json!({"count": n}))),
        Err((n, e)) => Err(respond(
            400,
            "application/json",
            json!({"error": {"message": format!("not a flow file: {e}"), "loaded": n}}).to_string(),
        )),
    }
}
