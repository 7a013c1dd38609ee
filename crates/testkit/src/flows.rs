//! Ready-made flows for tests, as mitmproxy's `tflow`, `tresp`, `twebsocketflow`, `ttcpflow`.

use std::sync::Arc;

use waylay_core::flow::{
    Address, Client, Request, Response, Server, TcpMessage, WebSocketData, WebSocketMessage,
};
use waylay_core::{FlowError, HttpFlow, TcpFlow};

/// A client connection from `127.0.0.1:22` to the proxy at `127.0.0.1:8080`.
pub fn tclient() -> Client {
    Client::new(([127, 0, 0, 1], 22).into(), ([127, 0, 0, 1], 8080).into())
}

/// A server connection to `example.com:80`, not yet dialled.
pub fn tserver() -> Server {
    Server::new(Address::new("example.com", 80))
}

/// A request `GET http://example.com/path` with a few headers (`Host`, `User-Agent`,
/// `Accept`, `header: qvalue`) and the body `content`.
pub fn treq() -> Request {
    let mut req =
        Request::from_url("GET", "http://example.com/path").expect("a literal, well-formed URL");
    req.headers.append("User-Agent", "waylay-testkit");
    req.headers.append("Accept", "*/*");
    req.headers.append("header", "qvalue");
    req.set_raw_content("content");
    req
}

/// A `200 OK` response with headers `header-response: svalue`, `content-type: text/plain`
/// and the body `message`.
pub fn tresp() -> Response {
    Response::make(
        200,
        "message",
        [
            ("header-response", "svalue"),
            ("content-type", "text/plain"),
        ],
    )
}

/// A live HTTP flow for [`treq`] from [`tclient`] to [`tserver`], with no response yet.
/// Add one with [`FlowExt::with_response`].
pub fn tflow() -> HttpFlow {
    let mut flow = HttpFlow::new(Arc::new(tclient()), treq());
    flow.server = Some(Arc::new(tserver()));
    flow
}

/// An HTTP flow that upgraded to WebSocket: a `GET http://example.com/ws` with the
/// upgrade headers, a `101 Switching Protocols` response, and three messages: binary
/// `hello binary` and text `hello text` from the client, text `it's me` from the server.
/// The conversation is still open.
pub fn twebsocketflow() -> HttpFlow {
    let mut req =
        Request::from_url("GET", "http://example.com/ws").expect("a literal, well-formed URL");
    for (n, v) in [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ] {
        req.headers.append(n, v);
    }
    let mut flow = HttpFlow::new(Arc::new(tclient()), req);
    flow.server = Some(Arc::new(tserver()));
    flow.response = Some(Response::make(
        101,
        "",
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ],
    ));
    let mut ws = WebSocketData::default();
    ws.messages = vec![
        WebSocketMessage::binary(true, &b"hello binary"[..]),
        WebSocketMessage::text(true, "hello text"),
        WebSocketMessage::text(false, "it's me"),
    ];
    flow.websocket = Some(ws);
    flow
}

/// A live raw TCP flow from [`tclient`] to [`tserver`] with two messages: `hello` from the
/// client, `it's me` from the server.
pub fn ttcpflow() -> TcpFlow {
    let mut flow = TcpFlow::new(Arc::new(tclient()), Some(Arc::new(tserver())));
    flow.messages = vec![
        TcpMessage::new(true, &b"hello"[..]),
        TcpMessage::new(false, &b"it's me"[..]),
    ];
    flow
}

/// Builder methods for test flows: `tflow().with_response(tresp())`.
pub trait FlowExt: Sized {
    /// The flow with `response` as its response.
    fn with_response(self, response: Response) -> Self;
    /// The flow with `request` as its request.
    fn with_request(self, request: Request) -> Self;
    /// The flow with a protocol error `msg` (as the `error` hook sees it).
    fn with_error(self, msg: &str) -> Self;
    /// The flow with `websocket` as its WebSocket conversation.
    fn with_websocket(self, websocket: WebSocketData) -> Self;
}

impl FlowExt for HttpFlow {
    fn with_response(mut self, response: Response) -> Self {
        self.response = Some(response);
        self
    }

    fn with_request(mut self, request: Request) -> Self {
        self.request = request;
        self
    }

    fn with_error(mut self, msg: &str) -> Self {
        self.error = Some(FlowError::new(msg));
        self
    }

    fn with_websocket(mut self, websocket: WebSocketData) -> Self {
        self.websocket = Some(websocket);
        self
    }
}
