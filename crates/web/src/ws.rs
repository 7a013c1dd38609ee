//! The `/updates` WebSocket: numbered changes in batches, per-browser search and highlight
//! filters, and a bounded queue: a browser that falls behind gets `flows/reset` (and
//! refetches) instead of growing the proxy's memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::TryRecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use waylay_core::FlowId;

use crate::filter::WebFilter;
use crate::server::Resp;
use crate::state::{Change, Shared, Snapshot, Update};

/// How often queued changes are sent.
const BATCH_EVERY: Duration = Duration::from_millis(100);

/// Answers the upgrade and serves the socket.
pub(crate) fn upgrade(mut req: hyper::Request<Incoming>, shared: Arc<Shared>) -> Resp {
    let h = req.headers();
    let is_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = h.get("sec-websocket-key").filter(|_| is_ws).cloned() else {
        let mut r = hyper::Response::new(crate::server::full(bytes::Bytes::from_static(
            b"a WebSocket upgrade is expected here\n",
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
                serve(ws, shared).await;
            }
            Err(e) => tracing::debug!("web UI: WebSocket upgrade failed: {e}"),
        }
    });
    let mut r = hyper::Response::new(crate::server::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hm = r.headers_mut();
    hm.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hm.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hm.insert("sec-websocket-accept", v);
    }
    r
}

fn matching(filters: &HashMap<String, WebFilter>, snap: &Snapshot) -> Value {
    let mut m = serde_json::Map::new();
    if filters.is_empty() {
        return Value::Object(m);
    }
    // Body filters see the bodies an update carries (small ones).
    let full = snap.bodies.as_ref().map(|_| snap.full_flow());
    let flow = full.as_ref().unwrap_or(&snap.flow);
    for (name, f) in filters {
        m.insert(name.clone(), json!(f.matches(flow)));
    }
    Value::Object(m)
}

/// What waits for the next batch: changes (turned into JSON only when sent, and only the
/// latest state of each flow), and replies to this browser.
enum Pending {
    Change(Arc<Update>),
    Reply(Value),
}

/// The batch as one frame: a flow added and updated within it is sent once, as added, in
/// its latest state.
fn frame(batch: &[Pending], filters: &HashMap<String, WebFilter>) -> String {
    let mut last: HashMap<FlowId, usize> = HashMap::new();
    let mut added: HashSet<FlowId> = HashSet::new();
    for (i, p) in batch.iter().enumerate() {
        if let Pending::Change(u) = p {
            match &u.change {
                Change::Add(s) => {
                    added.insert(s.flow.id());
                    last.insert(s.flow.id(), i);
                }
                Change::Update(s) => {
                    last.insert(s.flow.id(), i);
                }
                Change::Remove(id) => {
                    last.insert(*id, i);
                }
                Change::Reset | Change::Event(_) | Change::Options(_) => {}
            }
        }
    }
    let mut out = Vec::with_capacity(1024 * batch.len().min(1024));
    out.push(b'[');
    for (i, p) in batch.iter().enumerate() {
        let at = out.len();
        match p {
            Pending::Reply(v) => write_value(&mut out, v),
            Pending::Change(u) => match &u.change {
                Change::Add(s) | Change::Update(s) => {
                    let id = s.flow.id();
                    if last.get(&id) == Some(&i) {
                        let add = matches!(u.change, Change::Add(_)) || added.contains(&id);
                        write_flow(&mut out, u, s, filters, add);
                    }
                }
                _ => write_value(&mut out, &message(u)),
            },
        }
        if out.len() > at && at > 1 {
            out.insert(at, b',');
        }
    }
    out.push(b']');
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    // Writing into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, v);
}

/// `{"type": "flows/add" or "flows/update", "payload": {"flow": ..., "matching_filters":
/// ...}, "seq": n}`, the flow's JSON written once per update and shared by every browser.
fn write_flow(
    out: &mut Vec<u8>,
    u: &Update,
    s: &Snapshot,
    filters: &HashMap<String, WebFilter>,
    add: bool,
) {
    let flow = u.flow_json.get_or_init(|| {
        let mut v = Vec::with_capacity(1024);
        s.write_json(&mut v);
        v.into_boxed_slice()
    });
    let ty: &[u8] = if add {
        b"{\"type\":\"flows/add\",\"payload\":{\"flow\":"
    } else {
        b"{\"type\":\"flows/update\",\"payload\":{\"flow\":"
    };
    out.extend_from_slice(ty);
    out.extend_from_slice(flow);
    out.extend_from_slice(b",\"matching_filters\":");
    write_value(out, &matching(filters, s));
    out.extend_from_slice(b"},\"seq\":");
    out.extend_from_slice(u.n.to_string().as_bytes());
    out.push(b'}');
}

/// A change that is not a flow's state, as its message.
fn message(u: &Update) -> Value {
    let (ty, payload) = match &u.change {
        Change::Remove(id) => ("flows/remove", json!(id.to_string())),
        Change::Reset => ("flows/reset", Value::Null),
        Change::Event(e) => ("events/add", e.clone()),
        Change::Options(o) => ("options/update", o.clone()),
        // Written by `write_flow`.
        Change::Add(_) | Change::Update(_) => ("flows/update", Value::Null),
    };
    json!({"type": ty, "payload": payload, "seq": u.n})
}

async fn serve<S>(ws: WebSocketStream<S>, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, rx) = ws.split();
    let mut updates = shared.updates.subscribe();
    let max = shared.config.client_queue.max(1);
    let mut batch: Vec<Pending> = Vec::new();
    let mut filters: HashMap<String, WebFilter> = HashMap::new();
    let mut tick = tokio::time::interval(BATCH_EVERY);
    // The first message says which change the socket starts after.
    let hello =
        json!([{"type": "hello", "payload": {"seq": shared.seq_now()}, "seq": shared.seq_now()}]);
    if tx.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    // The browser's messages are read by a task of their own: polling the socket in the
    // loop below would try a read (and clear tungstenite's read buffer) at every wake-up.
    let (said, mut heard) = tokio::sync::mpsc::channel::<String>(16);
    let reader = tokio::spawn(read_client(rx, said));
    // Changes are taken from the queue once per batch, not as each arrives: the proxy's
    // threads then wake this one ten times a second, not twice per request.
    'serve: loop {
        tokio::select! {
            m = heard.recv() => match m {
                Some(t) => {
                    if let Some(reply) = client_message(&shared, &mut filters, &t) {
                        batch.push(Pending::Reply(reply));
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                loop {
                    match updates.try_recv() {
                        Ok(u) => {
                            batch.push(Pending::Change(u));
                            if batch.len() >= max {
                                // Behind by a whole queue: start over rather than buffer more.
                                batch.clear();
                                updates = updates.resubscribe();
                                batch.push(Pending::Reply(json!({"type": "flows/reset", "payload": {"reason": "too far behind"}, "seq": shared.seq_now()})));
                                break;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Lagged(n)) => {
                            tracing::debug!("web UI: a browser fell {n} updates behind; it gets a reset");
                            batch.clear();
                            batch.push(Pending::Reply(json!({"type": "flows/reset", "payload": {"reason": "too far behind", "missed": n}, "seq": shared.seq_now()})));
                        }
                        Err(TryRecvError::Closed) => break 'serve,
                    }
                }
                if !batch.is_empty() {
                    let text = frame(&std::mem::take(&mut batch), &filters);
                    if tx.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
    reader.abort();
}

/// Hands the browser's text messages to [`serve`]; ends when the socket does.
async fn read_client<S>(
    mut rx: futures::stream::SplitStream<WebSocketStream<S>>,
    said: tokio::sync::mpsc::Sender<String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(m) = rx.next().await {
        match m {
            Ok(Message::Text(t)) => {
                if said.send(t.as_str().to_owned()).await.is_err() {
                    break;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// `flows/updateFilter {name, expr}`: answers `flows/filterUpdate` with the matching ids
/// among the recent flows, or the parse error and its position.
fn client_message(
    shared: &Shared,
    filters: &mut HashMap<String, WebFilter>,
    text: &str,
) -> Option<Value> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("type").and_then(Value::as_str) != Some("flows/updateFilter") {
        return Some(json!({"type": "error", "payload": "unknown message type"}));
    }
    let p = v.get("payload")?;
    let name = p.get("name").and_then(Value::as_str)?.to_owned();
    let expr = p.get("expr").and_then(Value::as_str).unwrap_or("");
    if expr.trim().is_empty() {
        filters.remove(&name);
        return Some(
            json!({"type": "flows/filterUpdate", "payload": {"name": name, "matching_flow_ids": null}}),
        );
    }
    match WebFilter::parse(expr) {
        Ok(f) => {
            let ids: Vec<String> = shared
                .page(None, None, shared.config.ring)
                .map(|(snaps, _)| {
                    snaps
                        .iter()
                        .filter(|s| f.matches(&s.full_flow()))
                        .map(|s| s.flow.id().to_string())
                        .collect()
                })
                .unwrap_or_default();
            filters.insert(name.clone(), f);
            Some(
                json!({"type": "flows/filterUpdate", "payload": {"name": name, "expr": expr, "matching_flow_ids": ids}}),
            )
        }
        Err(e) => Some(
            json!({"type": "flows/filterUpdate", "payload": {"name": name, "expr": expr, "error": {"message": e.message, "position": e.position}}}),
        ),
    }
}
