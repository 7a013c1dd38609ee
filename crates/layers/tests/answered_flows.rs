//! The hooks of a flow an addon answers itself, and of a request whose body an addon asks to
//! stream, in mitmproxy's order: a response set in `requestheaders` still has the request
//! body read and `request` fired; a response set in `requestheaders` or `request` gets
//! `responseheaders` before `response`; `flow.request.stream` set in `requestheaders` sends the
//! body on as it comes instead of holding it for `request`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use waylay_core::HttpFlow;
use waylay_core::flow::{Response, StreamFn};
use waylay_core::hooks::Addon;
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, http_origin, raw_request, scripted_origin, within};

/// What the addon saw, one line per hook.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answers requests under `/early` in `requestheaders` and under `/late` in `request`, asks
/// for streaming under `/stream`, and notes every hook with what the flow held then.
struct Answering(Seen);

impl Answering {
    fn note(&self, what: String) {
        self.0.lock().expect("seen").push(what);
    }
}

impl Addon for Answering {
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        self.note("requestheaders".into());
        let path = flow.request.path.clone();
        if path.starts_with("/early") {
            flow.response = Some(Response::make(200, "early", [("x-made", "requestheaders")]));
        }
        if path.starts_with("/stream") {
            flow.request.stream = true;
        }
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        // Short bodies as text, long ones by their length (a failure stays readable).
        let content = flow.request.raw_content.as_ref().map(|b| match b.len() {
            0..=16 => String::from_utf8_lossy(b).into_owned(),
            n => format!("{n} bytes"),
        });
        self.note(format!(
            "request {content:?} stream={}",
            flow.request.stream
        ));
        if flow.request.path.starts_with("/late") {
            flow.response = Some(Response::make(201, "late", [("x-made", "request")]));
        }
    }

    async fn response_headers(&mut self, flow: &mut HttpFlow) {
        let r = flow.response.as_ref().expect("a response");
        // An answer made earlier is stamped when it starts its way back.
        let stamped = r.timestamp_start >= flow.request.timestamp_start;
        self.note(format!(
            "responseheaders {} stamped={stamped}",
            r.status_code
        ));
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        let r = flow.response.as_ref().expect("a response");
        self.note(format!("response {}", r.status_code));
    }
}

fn never_asked(_: &str) -> Vec<u8> {
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec()
}

async fn hooks_for(proxy: &TestProxy, seen: &Seen, req: &str) -> (String, Vec<String>) {
    seen.lock().expect("seen").clear();
    let out = within("answer", raw_request(proxy.addr(), req.as_bytes())).await;
    (out, seen.lock().expect("seen").clone())
}

#[actix_rt::test]
async fn an_answer_set_early_still_fires_request_then_responseheaders() {
    let (origin, asked) = scripted_origin(never_asked).await;
    let seen = Seen::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Answering(seen.clone()))).await;

    let req = format!(
        "POST http://{origin}/early HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
    );
    let (out, hooks) = hooks_for(&proxy, &seen, &req).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("early"), "{out}");
    assert_eq!(
        hooks,
        [
            "requestheaders",
            "request Some(\"body\") stream=false",
            "responseheaders 200 stamped=true",
            "response 200",
        ]
    );

    let req =
        format!("GET http://{origin}/late HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let (out, hooks) = hooks_for(&proxy, &seen, &req).await;
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert_eq!(
        hooks,
        [
            "requestheaders",
            "request Some(\"\") stream=false",
            "responseheaders 201 stamped=true",
            "response 201",
        ]
    );
    assert!(
        asked.lock().expect("asked").is_empty(),
        "the origin was never contacted"
    );

    // A request the server answers: each hook once, in order.
    let origin = http_origin().await;
    let req = format!(
        "GET http://{origin}/plain HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    );
    let (out, hooks) = hooks_for(&proxy, &seen, &req).await;
    assert!(out.contains("origin GET /plain"), "{out}");
    assert_eq!(
        hooks,
        [
            "requestheaders",
            "request Some(\"\") stream=false",
            "responseheaders 200 stamped=true",
            "response 200",
        ]
    );
    proxy.shutdown().await;
}

fn ok(_: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

#[actix_rt::test]
async fn streaming_asked_for_in_requestheaders_sends_the_body_on_unheld() {
    let (origin, asked) = scripted_origin(ok).await;
    let seen = Seen::default();
    let proxy = TestProxy::start(Proxy::builder().addon(Answering(seen.clone()))).await;
    let body = "x".repeat(100_000);
    for (path, in_request) in [("/held", "Some(\"100000 bytes\")"), ("/stream", "None")] {
        asked.lock().expect("asked").clear();
        let req = format!(
            "POST http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (out, hooks) = hooks_for(&proxy, &seen, &req).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
        let stream = path == "/stream";
        assert_eq!(
            hooks,
            [
                "requestheaders".to_owned(),
                format!("request {in_request} stream={stream}"),
                "responseheaders 200 stamped=true".to_owned(),
                "response 200".to_owned(),
            ],
            "{path}"
        );
        let asked = asked.lock().expect("asked").clone();
        assert_eq!(asked.len(), 1, "{path}");
        assert!(
            asked[0].ends_with(&body),
            "{path}: the whole body reached the origin"
        );
    }
    proxy.shutdown().await;
}

/// Notes what `request` sees of the flow's server connection.
struct SeesServer(Seen);

impl Addon for SeesServer {
    async fn request(&mut self, flow: &mut HttpFlow) {
        let seen = match flow.server.as_deref() {
            None => "none".to_owned(),
            Some(s) => format!(
                "{} tls={} sni={:?} established={}",
                s.address.port,
                s.tls,
                s.sni,
                s.tls_info.is_some()
            ),
        };
        self.0.lock().expect("seen").push(seen);
    }
}

/// As in mitmproxy, `request` sees the server connection the request will go on when it
/// exists already and the destination was fixed before the request: an intercepted
/// tunnel's (dialed before the client's handshake, to learn the server's certificate). A
/// regular-mode request picks its connection after the hooks: none shown, on a kept-alive
/// client connection too.
#[actix_rt::test]
async fn request_sees_the_server_connection_that_exists_already() {
    let dir = waylay_testkit::TempDir::new("origin");
    let (origin, origin_ca) = waylay_testkit::https_origin(&dir).await;
    let seen = Seen::default();
    let proxy = TestProxy::start(
        Proxy::builder()
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                origin_ca.display()
            ))
            .addon(SeesServer(seen.clone())),
    )
    .await;
    let target = format!("localhost:{}", origin.port());
    let mut tls = within(
        "tunnel",
        waylay_testkit::connect_tls(
            proxy.addr(),
            &target,
            "localhost",
            &proxy.ca_pem,
            &[b"http/1.1"],
        ),
    )
    .await
    .expect("TLS through the proxy");
    tokio::io::AsyncWriteExt::write_all(
        &mut tls,
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let out = waylay_testkit::read_to_close(&mut tls).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        *seen.lock().expect("seen"),
        [format!(
            "{} tls=true sni=Some(\"localhost\") established=true",
            origin.port()
        )]
    );

    // Plain HTTP on one keep-alive connection: nothing before either request.
    seen.lock().expect("seen").clear();
    let origin = http_origin().await;
    let one = format!("GET http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    let two =
        format!("GET http://{origin}/b HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut s, one.as_bytes())
        .await
        .expect("write");
    // The first answer in full before the second request.
    let (_, first) = waylay_testkit::read_sized_response(&mut s).await;
    assert!(
        String::from_utf8_lossy(&first).contains("origin GET /a"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, two.as_bytes())
        .await
        .expect("write");
    let _ = waylay_testkit::read_to_close(&mut s).await;
    assert_eq!(*seen.lock().expect("seen"), ["none", "none"]);
    proxy.shutdown().await;
}

/// Streams the response of `/bytes/..` through a chunk function that doubles every byte and
/// adds `<end>` when the body ends, and streams `/echo` requests through one that
/// upper-cases them.
struct Rewrites;

impl Addon for Rewrites {
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if flow.request.path == "/echo" {
            flow.request.stream = true;
            flow.request.stream_fn = Some(StreamFn::new(|c: Bytes| {
                vec![Bytes::from(c.to_ascii_uppercase())]
            }));
        }
    }

    async fn response_headers(&mut self, flow: &mut HttpFlow) {
        let Some(r) = flow.response.as_mut() else {
            return;
        };
        if flow.request.path.starts_with("/bytes/") {
            r.stream = true;
            r.stream_fn = Some(StreamFn::new(|c: Bytes| {
                if c.is_empty() {
                    return vec![Bytes::from_static(b"<end>")];
                }
                // Two chunks out for one in, one of them empty (never sent as such).
                let doubled: Vec<u8> = c.iter().flat_map(|&b| [b, b]).collect();
                vec![Bytes::from(doubled), Bytes::new()]
            }));
        }
    }
}

/// The body of a chunked HTTP/1.1 message (`raw` after its head), bounded by its size.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..raw.len() + 1 {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).expect("size"), 16)
            .expect("hex size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

/// A chunk function on a streamed body (mitmproxy's callable `stream`): every chunk goes
/// through it, its last output is sent when the body ends, and the message goes out
/// without a `Content-Length`, since the length changed.
#[actix_rt::test]
async fn a_stream_function_rewrites_each_chunk_and_the_length_follows() {
    let origin = http_origin().await;
    let proxy = TestProxy::start(Proxy::builder().addon(Rewrites)).await;
    let n = 300_000;
    let req = format!(
        "GET http://{origin}/bytes/{n} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    );
    let out = within(
        "answer",
        waylay_testkit::raw_request_bytes(proxy.addr(), req.as_bytes()),
    )
    .await;
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let body = dechunk(&out[at..]);
    let expected: Vec<u8> = (0..n)
        .flat_map(|i| {
            let b = (i % 251) as u8;
            [b, b]
        })
        .chain(b"<end>".iter().copied())
        .collect();
    assert_eq!(body.len(), expected.len());
    assert!(body == expected, "the doubled bytes, then <end>");

    let req = format!(
        "POST http://{origin}/echo HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello there"
    );
    let out = within("echo", raw_request(proxy.addr(), req.as_bytes())).await;
    assert!(out.ends_with("HELLO THERE"), "{out}");
    proxy.shutdown().await;
}

/// Routes every server connection `direct` in `server_connect` (an addon choosing the route
/// of the connection), counts the connections, and observes requests.
struct RoutesDirect(Arc<Mutex<u32>>);

impl Addon for RoutesDirect {
    async fn server_connect(&mut self, data: &mut waylay_core::hooks::ServerConnectionHookData) {
        data.server.via = Some(waylay_core::mode::Via::Direct);
        *self.0.lock().expect("count") += 1;
    }

    async fn request(&mut self, _flow: &mut HttpFlow) {}
}

/// The server connection a request's hooks are shown is not taken for the route the request
/// asks for: a keep-alive client's requests share one server connection, also when an addon
/// routed that connection in `server_connect` (its route is the connection's, not the
/// request's).
#[actix_rt::test]
async fn a_connection_routed_in_server_connect_is_reused() {
    let origin = http_origin().await;
    let dials = Arc::new(Mutex::new(0));
    let proxy = TestProxy::start(Proxy::builder().addon(RoutesDirect(dials.clone()))).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    for i in 0..3 {
        let req = format!("GET http://{origin}/n{i} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
            .await
            .expect("write");
        let (_, body) = waylay_testkit::read_sized_response(&mut s).await;
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("origin GET /n{i}")), "{body}");
    }
    assert_eq!(
        *dials.lock().expect("count"),
        1,
        "one server connection for three requests"
    );
    proxy.shutdown().await;
}
