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
use tokio::sync::broadcast::error::RecvError;
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
    let mut out = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        match p {
            Pending::Reply(v) => out.push(v.clone()),
            Pending::Change(u) => {
                let id = match &u.change {
                    Change::Add(s) | Change::Update(s) => Some(s.flow.id()),
                    _ => None,
                };
                match id {
                    Some(id) if last.get(&id) != Some(&i) => {}
                    Some(id) => out.push(message(u, filters, added.contains(&id))),
                    None => out.push(message(u, filters, false)),
                }
            }
        }
    }
    Value::Array(out).to_string()
}

fn message(u: &Update, filters: &HashMap<String, WebFilter>, as_add: bool) -> Value {
    let (ty, payload) = match &u.change {
        Change::Update(s) if as_add => (
            "flows/add",
            json!({"flow": s.json(), "matching_filters": matching(filters, s)}),
        ),
        Change::Add(s) => (
            "flows/add",
            json!({"flow": s.json(), "matching_filters": matching(filters, s)}),
        ),
        Change::Update(s) => (
            "flows/update",
            json!({"flow": s.json(), "matching_filters": matching(filters, s)}),
        ),
        Change::Remove(id) => ("flows/remove", json!(id.to_string())),
        Change::Reset => ("flows/reset", Value::Null),
        Change::Event(e) => ("events/add", e.clone()),
        Change::Options(o) => ("options/update", o.clone()),
    };
    json!({"type": ty, "payload": payload, "seq": u.n})
}

async fn serve<S>(ws: WebSocketStream<S>, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
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
    loop {
        tokio::select! {
            u = updates.recv() => match u {
                Ok(u) => {
                    batch.push(Pending::Change(u));
                    if batch.len() >= max {
                        // Behind by a whole queue: start over rather than buffer more.
                        batch.clear();
                        updates = updates.resubscribe();
                        batch.push(Pending::Reply(json!({"type": "flows/reset", "payload": {"reason": "too far behind"}, "seq": shared.seq_now()})));
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!("web UI: a browser fell {n} updates behind; it gets a reset");
                    batch.clear();
                    batch.push(Pending::Reply(json!({"type": "flows/reset", "payload": {"reason": "too far behind", "missed": n}, "seq": shared.seq_now()})));
                }
                Err(RecvError::Closed) => break,
            },
            m = rx.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Some(reply) = client_message(&shared, &mut filters, t.as_str()) {
                        batch.push(Pending::Reply(reply));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = tick.tick(), if !batch.is_empty() => {
                let text = frame(&std::mem::take(&mut batch), &filters);
                if tx.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
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
