//! Playing recorded flows through the addons as if they were live (`-r`): the hooks fire in
//! the order the proxy fires them, as mitmproxy's `eventsequence` does.

use crate::flow::{Flow, HttpFlow, TcpFlow};
use crate::{HookError, HookKind, ManagerHandle};

/// The hooks a recorded flow goes through, in live order (without the message hooks, which
/// fire once per WebSocket or TCP message between the start and the end).
pub fn hook_sequence(flow: &Flow) -> Vec<HookKind> {
    let mut seq = Vec::new();
    match flow {
        Flow::Http(f) => {
            seq.extend([HookKind::RequestHeaders, HookKind::Request]);
            if f.response.is_some() {
                seq.extend([HookKind::ResponseHeaders, HookKind::Response]);
            }
            if let Some(ws) = &f.websocket {
                seq.push(HookKind::WebsocketStart);
                seq.extend(ws.messages.iter().map(|_| HookKind::WebsocketMessage));
                seq.push(if f.error.is_some() {
                    HookKind::WebsocketError
                } else {
                    HookKind::WebsocketEnd
                });
            } else if f.error.is_some() {
                seq.push(HookKind::Error);
            }
        }
        Flow::Tcp(f) => {
            seq.push(HookKind::TcpStart);
            seq.extend(f.messages.iter().map(|_| HookKind::TcpMessage));
            seq.push(if f.error.is_some() {
                HookKind::TcpError
            } else {
                HookKind::TcpEnd
            });
        }
    }
    seq
}

/// Fires the hooks of a recorded flow on `manager`, in live order: `request_headers`,
/// `request`, `response_headers`, `response` (or `error`); for a WebSocket flow then
/// `websocket_start`, one `websocket_message` per message (each appended to the flow's
/// messages before its hook, as it arrived live) and `websocket_end` (`websocket_error` if
/// the flow has an error); for a TCP flow `tcp_start`, `tcp_message` per message and
/// `tcp_end` (or `tcp_error`). Returns the flow as the addons left it.
pub async fn play(manager: &ManagerHandle, flow: Flow) -> Result<Flow, HookError> {
    match flow {
        Flow::Http(f) => play_http(manager, f).await.map(Flow::Http),
        Flow::Tcp(f) => play_tcp(manager, f).await.map(Flow::Tcp),
    }
}

async fn play_http(m: &ManagerHandle, mut f: Box<HttpFlow>) -> Result<Box<HttpFlow>, HookError> {
    let messages = f
        .websocket
        .as_mut()
        .map(|ws| std::mem::take(&mut ws.messages));
    let has_response = f.response.is_some();
    f = m.fire(HookKind::RequestHeaders, f).await?;
    f = m.fire(HookKind::Request, f).await?;
    if has_response {
        f = m.fire(HookKind::ResponseHeaders, f).await?;
        f = m.fire(HookKind::Response, f).await?;
    }
    match messages {
        Some(messages) => {
            f = m.fire(HookKind::WebsocketStart, f).await?;
            for msg in messages {
                if let Some(ws) = f.websocket.as_mut() {
                    ws.messages.push(msg);
                }
                f = m.fire(HookKind::WebsocketMessage, f).await?;
            }
            let end = if f.error.is_some() {
                HookKind::WebsocketError
            } else {
                HookKind::WebsocketEnd
            };
            f = m.fire(end, f).await?;
        }
        None if f.error.is_some() => f = m.fire(HookKind::Error, f).await?,
        None => {}
    }
    Ok(f)
}

async fn play_tcp(m: &ManagerHandle, mut f: Box<TcpFlow>) -> Result<Box<TcpFlow>, HookError> {
    let messages = std::mem::take(&mut f.messages);
    f = m.fire(HookKind::TcpStart, f).await?;
    for msg in messages {
        f.messages.push(msg);
        f = m.fire(HookKind::TcpMessage, f).await?;
    }
    let end = if f.error.is_some() {
        HookKind::TcpError
    } else {
        HookKind::TcpEnd
    };
    m.fire(end, f).await
}
