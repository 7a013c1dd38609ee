#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]
//! The web UI's API over real sockets: authentication, flows listed and paged, edits,
//! actions, intercept, the UI refused through the proxy, and a slow browser reset.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, http_origin, proxy_get, raw_request, scripted_origin, within};
use waylay_web::{WebConfig, WebHandle, WebUi};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`) and its answer.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let text = raw_request(addr, req.as_bytes()).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

const BEARER: (&str, &str) = ("Authorization", "Bearer 0123456789abcdef0123456789abcdef");

fn config() -> WebConfig {
    WebConfig {
        port: 0,
        token: Some(TOKEN.into()),
        ..WebConfig::default()
    }
}

/// The proxy with the addons `waylay::Proxy::builder()` gives a custom proxy for
/// interception: breakpoint rules, then the intercept filter (the web addon goes last).
fn builder() -> waylay_layers::ProxyBuilder {
    Proxy::builder()
        .addon_with(waylay_addons::Breakpoints::from_options)
        .addon_with(waylay_addons::Intercept::from_options)
}

async fn start(cfg: WebConfig) -> (TestProxy, WebHandle) {
    let (addon, ui) = WebUi::bind(cfg).expect("web UI binds");
    let proxy = TestProxy::start(builder().addon(addon)).await;
    ui.attach(proxy.running().manager().clone());
    (proxy, ui)
}

/// One HTTP/1.0 request: the answer's status and raw body (a streamed body ends at close,
/// with no chunked framing to undo).
async fn call_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let answer = waylay_testkit::raw_request_bytes(addr, &req).await;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, answer[end + 4..].to_vec())
}

/// Polls `GET /flows` until `done` holds (within 20 s; the last listing is printed if not).
async fn flows_until(ui: SocketAddr, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let a = call(ui, "GET", "/flows", &[BEARER], "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json().as_array().cloned().unwrap_or_default();
        if done(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for flows; last listing: {}",
            serde_json::to_string_pretty(&v).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session: the cookies a browser would hold after opening the printed URL.
async fn login(ui: SocketAddr) -> (String, String) {
    let a = call(ui, "GET", &format!("/?token={TOKEN}"), &[], "").await;
    assert_eq!(a.status, 302);
    assert_eq!(a.header("location"), Some("/"));
    let cookies = a.cookies();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("waylay-auth-"))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let xsrf = cookies
        .iter()
        .find(|c| c.starts_with("waylay-xsrf-"))
        .expect("xsrf cookie");
    let pair = |c: &str| c.split(';').next().unwrap().to_owned();
    let xsrf_value = pair(xsrf).split_once('=').unwrap().1.to_owned();
    (format!("{}; {}", pair(session), pair(xsrf)), xsrf_value)
}

#[actix_rt::test]
async fn no_token_gets_the_login_page_and_403() {
    let (_proxy, ui) = start(config()).await;
    let a = call(ui.addr(), "GET", "/", &[], "").await;
    assert_eq!(a.status, 403);
    assert!(
        a.body.contains("<form method=post action=/login"),
        "{}",
        a.body
    );
    let a = call(ui.addr(), "GET", "/flows", &[], "").await;
    assert_eq!(a.status, 403);
    let a = call(ui.addr(), "GET", "/flows?token=wrong", &[], "").await;
    assert_eq!(a.status, 403);
    let a = call(
        ui.addr(),
        "GET",
        "/flows",
        &[("Authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
    let a = call(
        ui.addr(),
        "GET",
        "/flows",
        &[(
            "Cookie",
            &format!("waylay-auth-{}=forged", ui.addr().port()),
        )],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
    // Every answer forbids framing and foreign scripts.
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert!(
        a.header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert!(ui.url().ends_with(&format!("/?token={TOKEN}")));
}

#[actix_rt::test]
async fn token_bearer_and_cookie_are_accepted() {
    let (_proxy, ui) = start(config()).await;
    let a = call(ui.addr(), "GET", "/flows", &[BEARER], "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!([]));
    let a = call(ui.addr(), "GET", &format!("/flows?token={TOKEN}"), &[], "").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.cookies().len(), 2);
    let (cookie, _) = login(ui.addr()).await;
    let a = call(ui.addr(), "GET", "/", &[("Cookie", &cookie)], "").await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("/static/app.js"));
    let a = call(
        ui.addr(),
        "GET",
        "/static/app.js",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(
        a.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[actix_rt::test]
async fn a_password_replaces_the_token_plain_or_argon2() {
    use argon2::password_hash::PasswordHasher;
    let hash = argon2::Argon2::default()
        .hash_password(b"s3cret")
        .unwrap()
        .to_string();
    for pw in ["s3cret".to_owned(), hash] {
        let (_proxy, ui) = start(WebConfig {
            password: Some(pw),
            ..config()
        })
        .await;
        assert!(ui.token().is_none());
        assert!(!ui.url().contains("token="));
        // The token no longer opens it.
        let a = call(ui.addr(), "GET", &format!("/flows?token={TOKEN}"), &[], "").await;
        assert_eq!(a.status, 403);
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let a = call(ui.addr(), "POST", "/login", &form, "token=wrong").await;
        assert_eq!(a.status, 403);
        let a = call(ui.addr(), "POST", "/login", &form, "token=s3cret").await;
        assert_eq!(a.status, 303, "{}", a.body);
        let session = a.cookies()[0].split(';').next().unwrap().to_owned();
        let a = call(ui.addr(), "GET", "/flows", &[("Cookie", &session)], "").await;
        assert_eq!(a.status, 200);
        let a = call(
            ui.addr(),
            "GET",
            "/flows",
            &[("Authorization", "Bearer s3cret")],
            "",
        )
        .await;
        assert_eq!(a.status, 200);
    }
}

#[actix_rt::test]
async fn state_changes_need_the_xsrf_token_and_a_same_site_request() {
    let (_proxy, ui) = start(config()).await;
    let (cookie, xsrf) = login(ui.addr()).await;
    let a = call(ui.addr(), "POST", "/clear", &[("Cookie", &cookie)], "").await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("X-XSRFToken"), "{}", a.body);
    let a = call(
        ui.addr(),
        "POST",
        "/clear",
        &[("Cookie", &cookie), ("X-XSRFToken", "nope")],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
    let a = call(
        ui.addr(),
        "POST",
        "/clear",
        &[
            ("Cookie", &cookie),
            ("X-XSRFToken", &xsrf),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("cross-site"), "{}", a.body);
    let a = call(
        ui.addr(),
        "POST",
        "/clear",
        &[
            ("Cookie", &cookie),
            ("X-XSRFToken", &xsrf),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Another site may link to the UI (a GET changes nothing).
    let a = call(
        ui.addr(),
        "GET",
        &format!("/?token={TOKEN}"),
        &[("Sec-Fetch-Site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(a.status, 302);
    // A script with the bearer token needs no XSRF token, but a cross-site one is refused.
    let a = call(ui.addr(), "POST", "/clear", &[BEARER], "").await;
    assert_eq!(a.status, 200);
    let a = call(
        ui.addr(),
        "POST",
        "/clear",
        &[BEARER, ("Sec-Fetch-Site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(a.status, 403);
}

#[actix_rt::test]
async fn flows_are_listed_and_paged_from_the_ring_and_the_store() {
    // A ring of 3: the older flows come back from SQLite.
    let (proxy, ui) = start(WebConfig {
        ring: 3,
        ..config()
    })
    .await;
    let origin = http_origin().await;
    for i in 0..8 {
        let r = proxy_get(proxy.addr(), &format!("http://{origin}/p{i}")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    within("the store to hold 8 flows", async {
        while ui.stored_flows().unwrap() < 8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let all = flows_until(ui.addr(), |v| v.len() == 8).await;
    let paths: Vec<&str> = all
        .iter()
        .map(|f| f["request"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["/p0", "/p1", "/p2", "/p3", "/p4", "/p5", "/p6", "/p7"]
    );
    let seqs: Vec<u64> = all.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(all[0]["response"]["status_code"], 200);
    assert_eq!(all[0]["type"], "http");
    assert!(all[0]["request"]["headers"].is_array());

    let uia = ui.addr();
    let page = |q: String| async move {
        let a = call(uia, "GET", &format!("/flows?{q}"), &[BEARER], "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.header("x-waylay-seq").is_some());
        a.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["request"]["path"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        page(format!("after={}&limit=3", seqs[1])).await,
        ["/p2", "/p3", "/p4"]
    );
    assert_eq!(
        page(format!("after={}&limit=3", seqs[5])).await,
        ["/p6", "/p7"]
    );
    assert_eq!(
        page(format!("before={}&limit=2", seqs[3])).await,
        ["/p1", "/p2"]
    );
    assert_eq!(page("limit=2".into()).await, ["/p6", "/p7"]);
    let a = call(ui.addr(), "GET", "/flows?after=x", &[BEARER], "").await;
    assert_eq!(a.status, 400);

    // A flow and its body, from the ring and from the store.
    for f in [&all[7], &all[0]] {
        let id = f["id"].as_str().unwrap();
        let a = call(ui.addr(), "GET", &format!("/flows/{id}"), &[BEARER], "").await;
        assert_eq!(a.json()["request"]["path"], f["request"]["path"]);
        let a = call(
            ui.addr(),
            "GET",
            &format!("/flows/{id}/response/content.data"),
            &[BEARER],
            "",
        )
        .await;
        assert_eq!(a.status, 200);
        assert!(a.body.starts_with("origin GET /p"), "{}", a.body);
        let a = call(
            ui.addr(),
            "GET",
            &format!("/flows/{id}/response/content/auto.json"),
            &[BEARER],
            "",
        )
        .await;
        assert_eq!(a.json()["view_name"], "Text");
        let a = call(
            ui.addr(),
            "GET",
            &format!("/flows/{id}/response/content/hex.json?lines=1"),
            &[BEARER],
            "",
        )
        .await;
        assert_eq!(a.json()["truncated"], true);
    }
    let a = call(ui.addr(), "GET", "/flows/nope", &[BEARER], "").await;
    assert_eq!(a.status, 404);
    let a = call(ui.addr(), "GET", "/state", &[BEARER], "").await;
    assert_eq!(a.json()["ring"]["flows"], 3);
}

#[actix_rt::test]
async fn edits_revert_duplicate_delete_and_clear() {
    let (proxy, ui) = start(config()).await;
    let origin = http_origin().await;
    proxy_get(proxy.addr(), &format!("http://{origin}/edit")).await;
    let flows = flows_until(ui.addr(), |v| v.len() == 1 && v[0]["response"].is_object()).await;
    let id = flows[0]["id"].as_str().unwrap().to_owned();
    let uia = ui.addr();
    let put = |body: Value| {
        let id = id.clone();
        async move {
            call(
                uia,
                "PUT",
                &format!("/flows/{id}"),
                &[BEARER],
                &body.to_string(),
            )
            .await
        }
    };
    let a = put(json!({"comment": "looked at", "marked": true, "response": {"code": 418, "headers": [["x-a", "1"]]}, "request": {"path": "/edited"}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let f = a.json();
    assert_eq!(f["comment"], "looked at");
    assert_eq!(f["marked"], "🔴");
    assert_eq!(f["modified"], true);
    assert_eq!(f["response"]["status_code"], 418);
    assert_eq!(f["response"]["headers"], json!([["x-a", "1"]]));
    assert_eq!(f["request"]["path"], "/edited");
    // Bad edits are refused with a reason, and the next request works.
    for bad in [
        json!({"response": {"code": 42}}),
        json!({"request": {"headers": [["bad name", "x"]]}}),
        json!({"nope": 1}),
        json!([1]),
    ] {
        let a = put(bad).await;
        assert_eq!(a.status, 400, "{}", a.body);
    }
    let a = call(
        ui.addr(),
        "PUT",
        &format!("/flows/{id}"),
        &[BEARER],
        "{not json",
    )
    .await;
    assert_eq!(a.status, 400);
    // The body is replaced by an upload.
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/response/content.data"),
        &[BEARER],
        "new body",
    )
    .await;
    assert_eq!(a.status, 200);
    let a = call(
        ui.addr(),
        "GET",
        &format!("/flows/{id}/response/content.data"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.body, "new body");
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/revert"),
        &[BEARER],
        "",
    )
    .await;
    let f = a.json();
    assert_eq!(f["response"]["status_code"], 200);
    assert_eq!(f["request"]["path"], "/edit");
    assert_eq!(f["modified"], false);
    assert_eq!(f["comment"], "");

    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/duplicate"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    let dup = a.json()["id"].as_str().unwrap().to_owned();
    assert_ne!(dup, id);
    flows_until(ui.addr(), |v| v.len() == 2).await;
    let a = call(ui.addr(), "DELETE", &format!("/flows/{dup}"), &[BEARER], "").await;
    assert_eq!(a.status, 200);
    flows_until(ui.addr(), |v| v.len() == 1).await;
    let a = call(ui.addr(), "POST", "/clear", &[BEARER], "").await;
    assert_eq!(a.status, 200);
    flows_until(ui.addr(), |v| v.is_empty()).await;
}

fn ok_answer(_: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

#[actix_rt::test]
async fn intercept_edit_resume_reaches_the_origin_and_kill_drops_it() {
    let (proxy, ui) = start(config()).await;
    let (origin, seen) = scripted_origin(ok_answer).await;
    // A bad filter is refused with its position.
    let a = put_options(ui.addr(), json!({"intercept": "~q ~zz"})).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["position"], 3);
    set_intercept(ui.addr(), "~q ~u /hold").await;

    let p = proxy.addr();
    let client = actix::spawn(async move { proxy_get(p, &format!("http://{origin}/hold")).await });
    let flows = flows_until(ui.addr(), |v| v.iter().any(|f| f["intercepted"] == true)).await;
    let id = flows[0]["id"].as_str().unwrap().to_owned();
    assert!(
        seen.lock().unwrap().is_empty(),
        "the origin saw nothing yet"
    );
    let mut headers = flows[0]["request"]["headers"].as_array().unwrap().clone();
    headers.push(json!(["x-edited", "in the UI"]));
    let a = call(
        ui.addr(),
        "PUT",
        &format!("/flows/{id}"),
        &[BEARER],
        &json!({"request": {"headers": headers}}).to_string(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/resume"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let answer = within("the client's answer", client).await.unwrap();
    assert!(answer.ends_with("ok"), "{answer}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].to_ascii_lowercase().contains("x-edited: in the ui"),
        "{}",
        seen[0]
    );

    // Kill: the client gets no answer.
    let client =
        actix::spawn(async move { proxy_get(p, &format!("http://{origin}/hold/kill")).await });
    let flows = flows_until(ui.addr(), |v| {
        v.iter()
            .any(|f| f["intercepted"] == true && f["request"]["path"] == "/hold/kill")
    })
    .await;
    let id = flows
        .iter()
        .find(|f| f["request"]["path"] == "/hold/kill")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/kill"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200);
    let answer = within("the killed client", client).await.unwrap();
    assert!(!answer.contains("200 OK"), "{answer}");
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/resume"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 409, "resuming twice is refused");
}

#[actix_rt::test]
async fn the_ui_is_not_reachable_through_the_proxy() {
    let (proxy, ui) = start(config()).await;
    let port = ui.addr().port();
    for host in ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "127.0.0.2"] {
        let r = proxy_get(
            proxy.addr(),
            &format!("http://{host}:{port}/flows?token={TOKEN}"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 403"), "{host}: {r}");
        assert!(r.contains("cannot be reached through the proxy"), "{r}");
    }
    let r = raw_request(
        proxy.addr(),
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // Other ports on the same host still work.
    let origin = http_origin().await;
    let r = proxy_get(
        proxy.addr(),
        &format!("http://127.0.0.1:{}/x", origin.port()),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

async fn ws_connect(ui: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = format!("ws://{ui}/updates").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let s = TcpStream::connect(ui).await.unwrap();
    let (ws, _) = within("ws connect", tokio_tungstenite::client_async(req, s))
        .await
        .unwrap();
    ws
}

async fn next_batch(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Vec<Value> {
    loop {
        match within("a WebSocket message", ws.next()).await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str::<Value>(t.as_str())
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .clone();
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn updates_are_numbered_and_filters_answer_with_errors_positions() {
    let (proxy, ui) = start(config()).await;
    let a = call(ui.addr(), "GET", "/updates", &[], "").await;
    assert_eq!(a.status, 403, "no token, no socket");
    let a = call(
        ui.addr(),
        "GET",
        "/updates",
        &[BEARER, ("Sec-Fetch-Site", "cross-site")],
        "",
    )
    .await;
    assert_eq!(a.status, 403, "no socket for another site");
    let mut ws = ws_connect(ui.addr()).await;
    let hello = next_batch(&mut ws).await;
    assert_eq!(hello[0]["type"], "hello");
    let origin = http_origin().await;
    proxy_get(proxy.addr(), &format!("http://{origin}/live")).await;
    let mut seen = Vec::new();
    // A flow added and updated within one batch is sent once, as added, in its latest state.
    while !seen.iter().any(|m: &Value| {
        (m["type"] == "flows/update" || m["type"] == "flows/add")
            && m["payload"]["flow"]["response"].is_object()
    }) {
        seen.extend(next_batch(&mut ws).await);
    }
    let adds: Vec<&Value> = seen.iter().filter(|m| m["type"] == "flows/add").collect();
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0]["payload"]["flow"]["request"]["path"], "/live");
    // The update's JSON (written straight into the frame) is the REST API's, once the flow
    // has finished (an earlier update may show it before its response).
    let id = adds[0]["payload"]["flow"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let last_of = |seen: &[Value]| {
        seen.iter()
            .rev()
            .find(|m| m["payload"]["flow"]["id"] == id.as_str())
            .map(|m| m["payload"]["flow"].clone())
    };
    for _ in 0..50 {
        if last_of(&seen).is_some_and(|f| f["live"] == false) {
            break;
        }
        seen.extend(next_batch(&mut ws).await);
    }
    let sent = last_of(&seen).unwrap();
    assert_eq!(sent["live"], false, "{sent}");
    let rest = call(ui.addr(), "GET", &format!("/flows/{id}"), &[BEARER], "").await;
    assert_eq!(rest.json(), sent);
    assert!(sent["response"]["headers"].is_array(), "{sent}");
    let ns: Vec<u64> = seen.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "{ns:?}");

    ws.send(Message::text(
        json!({"type": "flows/updateFilter", "payload": {"name": "search", "expr": "~d ("}})
            .to_string(),
    ))
    .await
    .unwrap();
    let m = next_batch(&mut ws).await;
    assert_eq!(m[0]["type"], "flows/filterUpdate");
    assert_eq!(m[0]["payload"]["error"]["position"], 3);
    ws.send(Message::text(
        json!({"type": "flows/updateFilter", "payload": {"name": "search", "expr": "~u /live"}})
            .to_string(),
    ))
    .await
    .unwrap();
    let m = next_batch(&mut ws).await;
    assert_eq!(
        m[0]["payload"]["matching_flow_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    proxy_get(proxy.addr(), &format!("http://{origin}/other")).await;
    let mut other = None;
    while other.is_none() {
        other = next_batch(&mut ws)
            .await
            .into_iter()
            .find(|m| m["type"] == "flows/add");
    }
    assert_eq!(
        other.unwrap()["payload"]["matching_filters"]["search"],
        false
    );
}

#[actix_rt::test]
async fn a_slow_browser_gets_a_reset_instead_of_a_growing_buffer() {
    let (proxy, ui) = start(WebConfig {
        client_queue: 16,
        ..config()
    })
    .await;
    let mut ws = ws_connect(ui.addr()).await;
    let origin = http_origin().await;
    // 60 KiB of header per flow: 300 flows' updates (36 MiB of JSON) cannot all sit in the
    // socket buffers while the browser reads nothing.
    let big = "x".repeat(60 * 1024);
    for i in 0..300 {
        let req = format!(
            "GET http://{origin}/f{i} HTTP/1.1\r\nHost: {origin}\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        );
        let r = raw_request(proxy.addr(), req.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    let mut flow_messages = 0;
    let mut reset = false;
    within("a reset", async {
        while !reset {
            for m in next_batch(&mut ws).await {
                match m["type"].as_str() {
                    Some("flows/reset") => reset = true,
                    Some("flows/add" | "flows/update") => flow_messages += 1,
                    _ => {}
                }
            }
        }
    })
    .await;
    assert!(
        flow_messages < 600,
        "the browser got everything ({flow_messages}) instead of a reset"
    );
    // After the reset the browser refetches; the server still answers.
    let a = call(ui.addr(), "GET", "/flows?limit=5", &[BEARER], "").await;
    assert_eq!(a.json().as_array().unwrap().len(), 5);
}

#[actix_rt::test]
async fn an_overloaded_store_drops_bodies_and_says_so() {
    // Room for 4 body bytes in the writer's queue: every body is dropped from the store.
    let (proxy, ui) = start(WebConfig {
        store_queue_bytes: 4,
        ring: 1,
        ..config()
    })
    .await;
    let origin = http_origin().await;
    proxy_get(proxy.addr(), &format!("http://{origin}/bytes/100")).await;
    proxy_get(proxy.addr(), &format!("http://{origin}/bytes/50")).await;
    within("both flows stored", async {
        while ui.stored_flows().unwrap() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let a = call(ui.addr(), "GET", "/events", &[BEARER], "").await;
    let events = a.json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["level"] == "warn"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains("flow store overloaded")),
        "{events}"
    );
    let state = call(ui.addr(), "GET", "/state", &[BEARER], "").await.json();
    assert_eq!(state["store"]["dropped_bodies"], 2, "{state}");
    let all = flows_until(ui.addr(), |v| v.len() == 2).await;
    // The newest flow's body is still in memory; the older one's was not stored.
    let body = |id: &str| {
        let id = id.to_owned();
        let uia = ui.addr();
        async move {
            call(
                uia,
                "GET",
                &format!("/flows/{id}/response/content.data"),
                &[BEARER],
                "",
            )
            .await
        }
    };
    let a = body(all[1]["id"].as_str().unwrap()).await;
    assert_eq!((a.status, a.body.len()), (200, 50));
    let a = body(all[0]["id"].as_str().unwrap()).await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("not stored under overload"), "{}", a.body);
    // The listing still knows how big it was.
    assert_eq!(all[0]["response"]["contentLength"], 100);
}

#[actix_rt::test]
async fn replay_sends_the_request_again_through_the_proxy_http_and_https() {
    use waylay_testkit::{TempDir, connect_tls, https_origin};
    let dir = TempDir::new("replay");
    let (tls_origin, ca_file) = https_origin(&dir).await;
    let (addon, ui) = WebUi::bind(config()).expect("web UI binds");
    let proxy = TestProxy::start(
        builder()
            .set(format!(
                "ssl_verify_upstream_trusted_ca={}",
                ca_file.display()
            ))
            .addon(addon),
    )
    .await;
    let (origin, seen) = scripted_origin(ok_answer).await;
    let req = format!(
        "POST http://{origin}/again HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
    );
    let r = raw_request(proxy.addr(), req.as_bytes()).await;
    assert!(r.ends_with("ok"), "{r}");
    let flows = flows_until(ui.addr(), |v| v.len() == 1 && v[0]["response"].is_object()).await;
    let id = flows[0]["id"].as_str().unwrap();
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/replay"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let flows = flows_until(ui.addr(), |v| v.len() == 2 && v[1]["response"].is_object()).await;
    assert_eq!(flows[1]["is_replay"], "request");
    assert_eq!(flows[0]["is_replay"], Value::Null);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].starts_with("POST /again HTTP/1.1\r\n") && seen[1].ends_with("body"),
        "{}",
        seen[1]
    );

    // HTTPS: through a CONNECT tunnel and TLS trusting the proxy's CA.
    let mut tls = connect_tls(
        proxy.addr(),
        &format!("localhost:{}", tls_origin.port()),
        "localhost",
        &proxy.ca_pem,
        &[b"http/1.1"],
    )
    .await
    .expect("TLS through the proxy");
    use tokio::io::AsyncWriteExt;
    tls.write_all(b"GET /secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = waylay_testkit::read_to_close(&mut tls).await;
    assert!(String::from_utf8_lossy(&answer).contains("origin GET /secure"));
    let flows = flows_until(ui.addr(), |v| v.len() == 3 && v[2]["response"].is_object()).await;
    let id = flows[2]["id"].as_str().unwrap();
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/replay"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let flows = flows_until(ui.addr(), |v| v.len() == 4 && v[3]["response"].is_object()).await;
    assert_eq!(flows[3]["is_replay"], "request");
    assert_eq!(flows[3]["request"]["scheme"], "https");
    assert_eq!(flows[3]["response"]["status_code"], 200);
    let events = call(ui.addr(), "GET", "/events", &[BEARER], "").await.body;
    assert!(!events.contains("replay:"), "{events}");
}

#[actix_rt::test]
async fn websocket_and_tcp_messages_are_shown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use waylay_testkit::{WsOrigin, connect_tunnel, tcp_line_origin, ws_next, ws_through_proxy};
    let (proxy, ui) = start(config()).await;
    let origin = WsOrigin::start().await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), origin.addr, "/chat", &[])
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let echo = ws_next(&mut ws).await;
    assert!(echo.is_some(), "the origin answers");
    ws.close(None).await.unwrap();
    let flows = flows_until(ui.addr(), |v| {
        v.iter()
            .any(|f| f["websocket"]["timestamp_end"].is_number())
    })
    .await;
    let f = flows.iter().find(|f| f["websocket"].is_object()).unwrap();
    assert!(
        f["websocket"]["messages_meta"]["count"].as_u64().unwrap() >= 2,
        "{f}"
    );
    let id = f["id"].as_str().unwrap();
    let msgs = call(
        ui.addr(),
        "GET",
        &format!("/flows/{id}/messages/content/auto.json"),
        &[BEARER],
        "",
    )
    .await
    .json();
    assert_eq!(msgs[0]["from_client"], true);
    assert_eq!(msgs[0]["text"], "hello");

    let tcp = tcp_line_origin().await;
    let mut s = connect_tunnel(proxy.addr(), &tcp.addr.to_string())
        .await
        .unwrap();
    s.write_all(b"ping\n").await.unwrap();
    let mut buf = vec![0u8; 11];
    within("echo", s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(buf, b"echo: ping\n");
    drop(s);
    let flows = flows_until(ui.addr(), |v| {
        v.iter().any(|f| f["type"] == "tcp" && f["live"] == false)
    })
    .await;
    let f = flows.iter().find(|f| f["type"] == "tcp").unwrap();
    assert_eq!(f["messages_meta"]["count"], 2, "{f}");
    let id = f["id"].as_str().unwrap();
    let msgs = call(
        ui.addr(),
        "GET",
        &format!("/flows/{id}/messages/content/auto.json"),
        &[BEARER],
        "",
    )
    .await
    .json();
    assert_eq!(
        msgs,
        json!([
            {"from_client": true, "timestamp": msgs[0]["timestamp"], "text": "ping\n"},
            {"from_client": false, "timestamp": msgs[1]["timestamp"], "text": "echo: ping\n"},
        ])
    );
}

#[actix_rt::test]
async fn flows_are_saved_and_loaded_as_flow_files_and_har() {
    let (proxy, ui) = start(WebConfig {
        ring: 2,
        ..config()
    })
    .await;
    let origin = http_origin().await;
    for p in ["/a", "/b", "/c"] {
        proxy_get(proxy.addr(), &format!("http://{origin}{p}")).await;
    }
    within("the store to hold 3 flows", async {
        while ui.stored_flows().unwrap() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Saved: mitmproxy's format, oldest first, with bodies (the oldest from the store).
    let (status, file) = call_bytes(ui.addr(), "GET", "/flows/dump", &[BEARER], b"").await;
    assert_eq!(status, 200);
    let flows: Vec<waylay_core::Flow> = waylay_core::flowfile::FlowReader::new(&file[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let paths: Vec<String> = flows
        .iter()
        .map(|f| match f {
            waylay_core::Flow::Http(h) => h.request.path.to_string(),
            waylay_core::Flow::Tcp(_) => panic!("a TCP flow"),
        })
        .collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    match &flows[0] {
        waylay_core::Flow::Http(h) => assert_eq!(
            h.response.as_ref().unwrap().raw_content.as_deref(),
            Some(&format!("origin GET /a host={origin}").into_bytes()[..])
        ),
        waylay_core::Flow::Tcp(_) => unreachable!(),
    }
    // mitmproxy reads it too.
    if let Some(py) = waylay_testkit::peers::mitmproxy_python() {
        let dir = waylay_testkit::TempDir::new("web-dump");
        let path = dir.path().join("saved.flows");
        std::fs::write(&path, &file).unwrap();
        let out = std::process::Command::new(py)
            .arg("-c")
            .arg("import sys; from mitmproxy import io\nfor f in io.FlowReader(open(sys.argv[1], 'rb')).stream(): print(f.request.path, f.response.status_code, len(f.response.content))")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("/a 200 "), "{text}");
    }
    // A filter narrows what is saved; a bad one says where it is wrong.
    let (_, some) = call_bytes(
        ui.addr(),
        "GET",
        "/flows/dump?filter=~u%20/b",
        &[BEARER],
        b"",
    )
    .await;
    assert_eq!(waylay_core::flowfile::FlowReader::new(&some[..]).count(), 1);
    let a = call(ui.addr(), "GET", "/flows/dump?filter=~zz", &[BEARER], "").await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("~zz"), "{}", a.body);
    // HAR: one document with every HTTP flow.
    let (status, har) = call_bytes(ui.addr(), "GET", "/flows/har", &[BEARER], b"").await;
    assert_eq!(status, 200);
    let har: Value = serde_json::from_slice(&har).unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(
        entries[2]["request"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/c")
    );

    // Loaded into another UI: the same flows, not live, bodies readable.
    let (_proxy2, ui2) = start(config()).await;
    let (status, answer) = call_bytes(ui2.addr(), "POST", "/flows/dump", &[BEARER], &file).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap()["count"],
        3
    );
    let loaded = flows_until(ui2.addr(), |v| v.len() == 3).await;
    assert_eq!(loaded[0]["request"]["path"], "/a");
    assert_eq!(loaded[0]["live"], false);
    let id = loaded[0]["id"].as_str().unwrap();
    let a = call(
        ui2.addr(),
        "GET",
        &format!("/flows/{id}/response/content.data"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.body, format!("origin GET /a host={origin}"));
    // Loading the same file again adds copies under new ids.
    let (status, _) = call_bytes(ui2.addr(), "POST", "/flows/dump", &[BEARER], &file).await;
    assert_eq!(status, 200);
    let twice = flows_until(ui2.addr(), |v| v.len() == 6).await;
    assert_ne!(twice[0]["id"], twice[3]["id"]);
    // A HAR file loads as well.
    let (_, har_bytes) = call_bytes(ui.addr(), "GET", "/flows/har", &[BEARER], b"").await;
    let (status, answer) =
        call_bytes(ui2.addr(), "POST", "/flows/dump", &[BEARER], &har_bytes).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    flows_until(ui2.addr(), |v| v.len() == 9).await;
    // Garbage is refused with the reason; the next request works.
    let (status, answer) = call_bytes(
        ui2.addr(),
        "POST",
        "/flows/dump",
        &[BEARER],
        b"12:not a flow!",
    )
    .await;
    assert_eq!(status, 400);
    let err: Value = serde_json::from_slice(&answer).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("not a flow file"),
        "{err}"
    );
    let (status, _) = call_bytes(ui2.addr(), "POST", "/flows/dump", &[BEARER], b"").await;
    assert_eq!(status, 400);
    // Uploading needs the XSRF token like every change.
    let (cookie, _) = login(ui2.addr()).await;
    let (status, _) = call_bytes(
        ui2.addr(),
        "POST",
        "/flows/dump",
        &[("Cookie", &cookie)],
        &file,
    )
    .await;
    assert_eq!(status, 403);
    flows_until(ui2.addr(), |v| v.len() == 9).await;
}

#[actix_rt::test]
async fn a_flow_is_exported_as_curl_httpie_raw_and_har() {
    let (proxy, ui) = start(config()).await;
    let (origin, _) = scripted_origin(ok_answer).await;
    let req = format!(
        "POST http://{origin}/x?q=1 HTTP/1.1\r\nHost: {origin}\r\nX-A: it's\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
    );
    raw_request(proxy.addr(), req.as_bytes()).await;
    let flows = flows_until(ui.addr(), |v| v.len() == 1 && v[0]["response"].is_object()).await;
    let id = flows[0]["id"].as_str().unwrap();
    let export = |format: &str| {
        let path = format!("/flows/{id}/export/{format}");
        let uia = ui.addr();
        async move { call(uia, "GET", &path, &[BEARER], "").await }
    };
    let a = export("curl").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body,
        format!(
            "curl -H 'host: {origin}' -H 'x-a: it'\"'\"'s' -H 'connection: close' -X POST 'http://{origin}/x?q=1' -d body"
        )
    );
    let a = export("httpie").await;
    assert!(a.body.starts_with("http POST "), "{}", a.body);
    let a = export("raw_request").await;
    assert!(a.body.starts_with("POST /x?q=1 HTTP/1.1\r\n"), "{}", a.body);
    assert!(a.body.ends_with("\r\n\r\nbody"), "{}", a.body);
    let a = export("raw_response").await;
    assert!(a.body.starts_with("HTTP/1.1 200 OK\r\n"), "{}", a.body);
    let a = export("raw").await;
    assert!(
        a.body.contains("body") && a.body.contains("200 OK"),
        "{}",
        a.body
    );
    let a = export("har").await;
    assert!(
        a.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(a.json()["log"]["entries"][0]["request"]["method"], "POST");
    let a = export("bogus").await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("no such export format"), "{}", a.body);
    let a = call(ui.addr(), "GET", "/flows/nope/export/curl", &[BEARER], "").await;
    assert_eq!(a.status, 404);
}

/// An origin that reads one request and answers only when `go` fires.
async fn held_origin() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    actix::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = wait.await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            .await;
    });
    (addr, go)
}

#[actix_rt::test]
async fn a_live_flow_that_is_not_intercepted_can_be_killed() {
    let (proxy, ui) = start(config()).await;
    let (origin, go) = held_origin().await;
    let p = proxy.addr();
    let client = actix::spawn(async move { proxy_get(p, &format!("http://{origin}/slow")).await });
    // The request went to the server; the flow waits for its answer.
    let flows = flows_until(ui.addr(), |v| v.len() == 1 && v[0]["live"] == true).await;
    let id = flows[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(flows[0]["intercepted"], false);
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/kill"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Dropped at once, while the server still holds its answer back.
    let answer = within("the killed client", client).await.unwrap();
    assert!(
        !answer.contains("late"),
        "the client got the answer: {answer}"
    );
    let _ = go.send(());
    let flows = flows_until(ui.addr(), |v| v[0]["error"].is_object()).await;
    assert_eq!(flows[0]["error"]["msg"], "Connection killed.");
    assert_eq!(flows[0]["live"], false);
    // A finished flow cannot be killed.
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/kill"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 409, "{}", a.body);
    // Kill all: every live flow, intercepted or not.
    let (origin, go) = held_origin().await;
    let client = actix::spawn(async move { proxy_get(p, &format!("http://{origin}/slow2")).await });
    flows_until(ui.addr(), |v| v.len() == 2 && v[1]["live"] == true).await;
    let a = call(ui.addr(), "POST", "/flows/kill", &[BEARER], "").await;
    assert_eq!(a.json()["count"], 1, "{}", a.body);
    let answer = within("the second killed client", client).await.unwrap();
    let _ = go.send(());
    assert!(
        !answer.contains("late"),
        "the client got the answer: {answer}"
    );
    flows_until(ui.addr(), |v| v[1]["error"]["msg"] == "Connection killed.").await;
}

/// The UI's kill of a flow whose server had sent its head and half its body (read whole
/// for the UI's `response` hook) left the client and the server connection open until the
/// server finished the body. Both close at once now, and the next request goes through.
#[actix_rt::test]
async fn a_kill_while_the_server_sends_its_body_closes_both_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, ui) = start(config()).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    let (half_sent, half) = tokio::sync::oneshot::channel::<()>();
    let origin_side = actix::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed before its request");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            .await
            .unwrap();
        let _ = half_sent.send(());
        // Closed by the proxy within 10 s (the rest of the body never comes)?
        tokio::time::timeout(Duration::from_secs(10), async {
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await
        .is_ok()
    });
    let p = proxy.addr();
    let client = actix::spawn(async move {
        let mut s = TcpStream::connect(p).await.unwrap();
        let req = format!("GET http://{origin}/half HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .is_ok();
        (closed, out)
    });
    within("half the body sent", half).await.unwrap();
    let flows = flows_until(ui.addr(), |v| v.len() == 1 && v[0]["live"] == true).await;
    let id = flows[0]["id"].as_str().unwrap().to_owned();
    let a = post(ui.addr(), &format!("/flows/{id}/kill"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (closed, out) = within("the killed client", client).await.unwrap();
    assert!(closed, "the client's connection was left open");
    assert!(out.is_empty(), "the client got an answer: {out:?}");
    let server_closed = within("the origin", origin_side).await.unwrap();
    assert!(server_closed, "the server connection was left open");
    flows_until(ui.addr(), |v| v[0]["error"]["msg"] == "Connection killed.").await;
    let origin = http_origin().await;
    let out = within(
        "after the kill",
        proxy_get(p, &format!("http://{origin}/after")),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[actix_rt::test]
async fn options_are_listed_and_set_through_the_addon_manager() {
    let (proxy, ui) = start(config()).await;
    let opts = call(ui.addr(), "GET", "/options", &[BEARER], "")
        .await
        .json();
    assert_eq!(opts["anticache"]["type"], "bool");
    assert_eq!(opts["anticache"]["default"], false);
    assert_eq!(opts["anticache"]["value"], false);
    assert!(opts["anticache"]["help"].as_str().unwrap().len() > 10);
    assert_eq!(opts["intercept"]["type"], "optional str");
    assert_eq!(
        opts["tls_version_client_min"]["choices"],
        json!(["TLS1_2", "TLS1_3"])
    );
    let put = |body: Value| put_options(ui.addr(), body);
    let a = put(
        json!({"connect_timeout": 7, "ignore_hosts": ["^example\\.com:443$"], "anticache": true}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Set in the proxy itself (every addon saw it), and the UI's listing follows.
    let o = proxy.running().manager().options();
    assert_eq!(o.int("connect_timeout"), 7);
    assert!(o.bool("anticache"));
    assert_eq!(o.seq("ignore_hosts"), ["^example\\.com:443$"]);
    let opts = call(ui.addr(), "GET", "/options", &[BEARER], "")
        .await
        .json();
    assert_eq!(opts["connect_timeout"]["value"], 7);
    assert_eq!(
        opts["ignore_hosts"]["value"],
        json!(["^example\\.com:443$"])
    );
    // Refused values say why, and nothing of the request is applied.
    for (bad, option, why) in [
        (
            json!({"connect_timeout": "soon"}),
            "connect_timeout",
            "soon",
        ),
        (json!({"nope": 1}), "nope", "unknown option"),
        (
            json!({"tls_version_client_min": "SSL3"}),
            "tls_version_client_min",
            "TLS1_2",
        ),
        (
            json!({"ignore_hosts": ["("], "anticache": false}),
            "ignore_hosts",
            "ignore_hosts",
        ),
        (json!({"web_port": 1}), "web_port", "only at start"),
        (json!({"intercept": "~q ~zz"}), "intercept", "~zz"),
        (
            json!({"ignore_hosts": [1]}),
            "ignore_hosts",
            "list of strings",
        ),
    ] {
        let a = put(bad.clone()).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        let e = a.json();
        assert_eq!(e["error"]["option"], option, "{bad}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(why),
            "{bad}: {e}"
        );
    }
    assert!(proxy.running().manager().options().bool("anticache"));
    // Setting intercept turns intercept_active on; clearing it turns it off.
    let a = put(json!({"intercept": "~q"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let o = proxy.running().manager().options();
    assert_eq!(o.str("intercept"), Some("~q"));
    assert!(o.bool("intercept_active"));
    let a = put(json!({"intercept": ""})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!proxy.running().manager().options().bool("intercept_active"));
    // The options editor's changes reach the browsers' sockets.
    let mut ws = ws_connect(ui.addr()).await;
    next_batch(&mut ws).await;
    put(json!({"connect_timeout": 9})).await;
    let mut seen = false;
    while !seen {
        seen = next_batch(&mut ws).await.iter().any(|m| {
            m["type"] == "options/update" && m["payload"]["connect_timeout"]["value"] == 9
        });
    }
}

#[actix_rt::test]
async fn the_intercept_option_set_at_start_holds_matching_flows_and_tcp_messages() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use waylay_testkit::{connect_tunnel, tcp_line_origin};
    let (addon, ui) = WebUi::bind(config()).expect("web UI binds");
    let proxy = TestProxy::start(builder().set("intercept=~tcp | ~u /hold").addon(addon)).await;
    ui.attach(proxy.running().manager().clone());
    let opts = call(ui.addr(), "GET", "/options", &[BEARER], "")
        .await
        .json();
    assert_eq!(opts["intercept"]["value"], "~tcp | ~u /hold");
    assert_eq!(opts["intercept_active"]["value"], true);
    // An HTTP request that does not match goes through.
    let origin = http_origin().await;
    let r = proxy_get(proxy.addr(), &format!("http://{origin}/free")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A TCP message is held until resumed.
    let tcp = tcp_line_origin().await;
    let mut s = connect_tunnel(proxy.addr(), &tcp.addr.to_string())
        .await
        .unwrap();
    s.write_all(b"ping\n").await.unwrap();
    let flows = flows_until(ui.addr(), |v| {
        v.iter()
            .any(|f| f["type"] == "tcp" && f["intercepted"] == true)
    })
    .await;
    let id = flows.iter().find(|f| f["type"] == "tcp").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = call(
        ui.addr(),
        "POST",
        &format!("/flows/{id}/resume"),
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The echo is a message from the server: held too, and resumed by "resume all".
    let resumed = async {
        let mut buf = vec![0u8; 11];
        s.read_exact(&mut buf).await.map(|_| buf)
    };
    let ui_addr = ui.addr();
    let resume_all = async {
        flows_until(ui_addr, |v| {
            v.iter().any(|f| {
                f["type"] == "tcp" && f["intercepted"] == true && f["messages_meta"]["count"] == 2
            })
        })
        .await;
        let a = call(ui_addr, "POST", "/flows/resume", &[BEARER], "").await;
        assert_eq!(a.json()["count"], 1);
    };
    let (buf, ()) = within("the echo", async { tokio::join!(resumed, resume_all) }).await;
    assert_eq!(buf.unwrap(), b"echo: ping\n");
}

/// Waits for a WebSocket flow held with `count` messages recorded; its id.
async fn held_ws(ui: SocketAddr, path: &str, count: u64) -> String {
    let is_it = |f: &Value| {
        f["intercepted"] == true
            && f["request"]["path"] == path
            && f["websocket"]["messages_meta"]["count"]
                .as_u64()
                .unwrap_or(0)
                == count
    };
    let flows = flows_until(ui, |v| v.iter().any(is_it)).await;
    flows.iter().find(|f| is_it(f)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn post(ui: SocketAddr, path: &str, body: &str) -> Answer {
    call(ui, "POST", path, &[BEARER], body).await
}

/// `PUT /options` with `body`, as the UI's options editor sends it.
async fn put_options(ui: SocketAddr, body: Value) -> Answer {
    call(ui, "PUT", "/options", &[BEARER], &body.to_string()).await
}

/// Sets the `intercept` filter through the API; it must be accepted.
async fn set_intercept(ui: SocketAddr, filter: &str) {
    let a = put_options(ui, json!({ "intercept": filter })).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[actix_rt::test]
async fn intercepted_websocket_messages_are_edited_resumed_and_killed() {
    use waylay_testkit::{WsOrigin, ws_next, ws_through_proxy};
    let (proxy, ui) = start(config()).await;
    let ui = ui.addr();
    let origin = WsOrigin::start().await;
    set_intercept(ui, "~websocket").await;
    let (p, o) = (proxy.addr(), origin.addr);
    let client = actix::spawn(async move {
        let (mut ws, _) = ws_through_proxy(p, o, "/edit", &[]).await.unwrap();
        ws.send(Message::text("hold me")).await.unwrap();
        let echo = ws_next(&mut ws).await;
        let _ = ws.close(None).await;
        echo
    });
    // The handshake's response matches `~websocket` first (as in mitmproxy).
    let id = held_ws(ui, "/edit", 0).await;
    assert_eq!(
        post(ui, &format!("/flows/{id}/resume"), "").await.status,
        200
    );
    // The client's message is held: the origin has not seen it.
    let id = held_ws(ui, "/edit", 1).await;
    assert!(
        origin.record.received().is_empty(),
        "a held message went on"
    );
    let a = post(
        ui,
        &format!("/flows/{id}/messages/content.data"),
        "edited in the UI",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["modified"], true);
    let msgs = call(
        ui,
        "GET",
        &format!("/flows/{id}/messages/content/auto.json"),
        &[BEARER],
        "",
    )
    .await
    .json();
    assert_eq!(msgs[0]["text"], "edited in the UI");
    assert_eq!(
        post(ui, &format!("/flows/{id}/resume"), "").await.status,
        200
    );
    // The origin's echo is a message too, held in turn.
    held_ws(ui, "/edit", 2).await;
    assert_eq!(post(ui, "/flows/resume", "").await.json()["count"], 1);
    let echo = within("the edited echo", client).await.unwrap();
    assert_eq!(echo, Some(Ok(Message::text("edited in the UI"))));
    let texts: Vec<String> = origin
        .record
        .received()
        .into_iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["edited in the UI"]);

    // Killed while held: the message never arrives, the client's connection ends.
    let client = actix::spawn(async move {
        let (mut ws, _) = ws_through_proxy(p, o, "/kill", &[]).await.unwrap();
        ws.send(Message::text("never")).await.unwrap();
        ws_next(&mut ws).await
    });
    let id = held_ws(ui, "/kill", 0).await;
    assert_eq!(
        post(ui, &format!("/flows/{id}/resume"), "").await.status,
        200
    );
    let id = held_ws(ui, "/kill", 1).await;
    assert_eq!(post(ui, &format!("/flows/{id}/kill"), "").await.status, 200);
    match within("the killed client", client).await.unwrap() {
        None | Some(Err(_)) => {}
        Some(Ok(m)) => panic!("expected the connection to end, got {m:?}"),
    }
    let flows = flows_until(ui, |v| {
        v.iter()
            .any(|f| f["request"]["path"] == "/kill" && f["error"].is_object())
    })
    .await;
    let f = flows
        .iter()
        .find(|f| f["request"]["path"] == "/kill")
        .unwrap();
    // The kill's own error, as mitmproxy says it (not the relay's words for the end).
    assert_eq!(f["error"]["msg"], "Connection killed.", "{f}");
    assert!(
        !origin
            .record
            .received()
            .iter()
            .any(|m| m.is_text() && m.to_text().ok() == Some("never"))
    );

    // A finished flow's message is edited in the record only; a live one needs holding; a
    // TCP flow's or a flow without messages is refused.
    let a = post(ui, &format!("/flows/{id}/messages/content.data"), "after").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let plain = http_origin().await;
    let r = proxy_get(p, &format!("http://{plain}/plain")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let flows = flows_until(ui, |v| v.iter().any(|f| f["request"]["path"] == "/plain")).await;
    let plain_id = flows
        .iter()
        .find(|f| f["request"]["path"] == "/plain")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = post(ui, &format!("/flows/{plain_id}/messages/content.data"), "x").await;
    assert_eq!(a.status, 400, "{}", a.body);
}

/// Answers `/status...` with a 200 the breakpoint rule turns into a 418; everything else ok.
fn rule_answer(_: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\norigin".to_vec()
}

#[actix_rt::test]
async fn breakpoint_rules_edit_flows_and_resume_or_hold_them() {
    let (proxy, ui) = start(config()).await;
    let (origin, seen) = scripted_origin(rule_answer).await;
    let put = |body: Value| put_options(ui.addr(), body);
    // A rule that does not parse is refused with its index and the position in it.
    let a =
        put(json!({"breakpoints": ["|~q|request|resume", "|~q|request|resume|status:404"]})).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let e = &a.json()["error"];
    assert_eq!(e["index"], 1);
    assert_eq!(e["position"], 19);
    assert!(
        e["message"].as_str().unwrap().contains("response phase"),
        "{e}"
    );
    let a = put(json!({"breakpoints": [
        "|~u /edit|request|resume|header:X-Rule=applied|remove-header:X-Drop",
        "|~u /status|response|resume|status:418|header:X-Answer=rule|body:teapot",
        "#|~u /free|request|resume|header:X-Disabled=1",
        "|~u /hold|request|hold|header:X-Held=yes",
    ]}))
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let p = proxy.addr();

    // A request-phase edit reaches the origin with no resume.
    let req = format!(
        "GET http://{origin}/edit HTTP/1.1\r\nHost: {origin}\r\nX-Drop: secret\r\nConnection: close\r\n\r\n"
    );
    let answer = within("the edited request", raw_request(p, req.as_bytes())).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
        .to_ascii_lowercase();
    assert!(got.contains("x-rule: applied"), "{got}");
    assert!(!got.contains("x-drop"), "{got}");

    // A response-phase rule sets the status the client sees.
    let answer = within(
        "the edited response",
        proxy_get(p, &format!("http://{origin}/status")),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-answer: rule"),
        "{answer}"
    );
    assert!(answer.ends_with("teapot"), "{answer}");

    // A flow no enabled rule matches is untouched.
    let answer = within(
        "the free request",
        proxy_get(p, &format!("http://{origin}/free")),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("origin"), "{answer}");
    let got = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
        .to_ascii_lowercase();
    assert!(got.starts_with("get /free"), "{got}");
    assert!(
        !got.contains("x-disabled") && !got.contains("x-rule"),
        "{got}"
    );

    // The flows say which rule edited them, and the event log says it happened.
    let flows = flows_until(ui.addr(), |v| {
        v.len() == 3 && v.iter().all(|f| f["live"] == false)
    })
    .await;
    let by_path = |p: &str| {
        flows
            .iter()
            .find(|f| f["request"]["path"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_path("/edit")["breakpoint_rule"]["request"],
        "|~u /edit|request|resume|header:X-Rule=applied|remove-header:X-Drop"
    );
    assert_eq!(by_path("/status")["response"]["status_code"], 418);
    assert!(by_path("/status")["breakpoint_rule"]["response"].is_string());
    assert!(by_path("/free")["breakpoint_rule"].is_null());
    let events = call(ui.addr(), "GET", "/events", &[BEARER], "")
        .await
        .json();
    let lines: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("breakpoint rule"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("request of GET") && lines[0].contains("/edit"),
        "{lines:?}"
    );

    // A hold rule edits, then holds the flow until it is resumed.
    let before = seen.lock().unwrap().len();
    let client = actix::spawn(async move { proxy_get(p, &format!("http://{origin}/hold")).await });
    let flows = flows_until(ui.addr(), |v| {
        v.iter()
            .any(|f| f["intercepted"] == true && f["request"]["path"] == "/hold")
    })
    .await;
    let held = flows
        .iter()
        .find(|f| f["request"]["path"] == "/hold")
        .unwrap();
    assert!(
        held["request"]["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["X-Held", "yes"])),
        "{held}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "the origin saw nothing yet"
    );
    let id = held["id"].as_str().unwrap();
    let a = post(ui.addr(), &format!("/flows/{id}/resume"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let answer = within("the held client", client).await.unwrap();
    assert!(answer.ends_with("origin"), "{answer}");
    let got = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
        .to_ascii_lowercase();
    assert!(got.contains("x-held: yes"), "{got}");

    // Disabling every rule (the UI's toggle) leaves flows alone again.
    let a = put(json!({"breakpoints": ["#|~u /edit|request|resume|header:X-Rule=applied"]})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    within(
        "a request after",
        proxy_get(p, &format!("http://{origin}/edit")),
    )
    .await;
    let got = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
        .to_ascii_lowercase();
    assert!(!got.contains("x-rule"), "{got}");
}

/// Waits for a held TCP flow with `count` messages; its id.
async fn held_tcp(ui: SocketAddr, count: u64) -> String {
    let flows = flows_until(ui, |v| {
        v.iter().any(|f| {
            f["type"] == "tcp" && f["intercepted"] == true && f["messages_meta"]["count"] == count
        })
    })
    .await;
    flows.iter().find(|f| f["type"] == "tcp").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn held_tcp_messages_are_edited_before_they_reach_the_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use waylay_testkit::{connect_tunnel, tcp_line_origin};
    let (proxy, ui) = start(config()).await;
    let ui = ui.addr();
    set_intercept(ui, "~tcp").await;
    let tcp = tcp_line_origin().await;
    let mut s = connect_tunnel(proxy.addr(), &tcp.addr.to_string())
        .await
        .unwrap();
    s.write_all(b"ping\n").await.unwrap();
    // The client's message, held: edited, then resumed; the origin echoes the edit.
    let id = held_tcp(ui, 1).await;
    let a = post(ui, &format!("/flows/{id}/messages/content.data"), "pong\n").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post(ui, &format!("/flows/{id}/resume"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    // The server's answer, held too: edited on its way to the client.
    let id = held_tcp(ui, 2).await;
    let msgs = call(
        ui,
        "GET",
        &format!("/flows/{id}/messages/content/auto.json"),
        &[BEARER],
        "",
    )
    .await
    .json();
    assert_eq!(msgs[0]["text"], "pong\n", "{msgs}");
    assert_eq!(
        msgs[1]["text"], "echo: pong\n",
        "the origin got the edit: {msgs}"
    );
    let a = post(
        ui,
        &format!("/flows/{id}/messages/content.data"),
        "edited answer\n",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = post(ui, &format!("/flows/{id}/resume"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut buf = vec![0u8; 14];
    within("the edited answer", s.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, b"edited answer\n");
    // A flow that is not held cannot be edited.
    let a = post(ui, &format!("/flows/{id}/messages/content.data"), "late\n").await;
    assert_eq!(a.status, 409, "{}", a.body);
}

/// An origin answering with a 16 MiB body of which it sends 2 MiB, then waits; tells when
/// the proxy closed its side (its read ends).
async fn stalled_origin() -> (SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (closed, on_close) = tokio::sync::oneshot::channel();
    actix::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n")
            .await;
        let _ = s.write_all(&vec![b'x'; 2 << 20]).await;
        // Nothing more: only the proxy closing its side ends this read.
        let _ = s.read(&mut buf).await;
        let _ = closed.send(());
    });
    (addr, on_close)
}

/// The id of the one flow `pick` matches, once it is listed live.
async fn live_flow(ui: SocketAddr, pick: impl Fn(&Value) -> bool) -> String {
    let flows = flows_until(ui, |v| v.iter().any(|f| pick(f) && f["live"] == true)).await;
    flows.iter().find(|f| pick(f)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until flow `id` is finished with the error "killed".
async fn killed_flow(ui: SocketAddr, id: &str) {
    flows_until(ui, |v| {
        v.iter().any(|f| {
            f["id"] == id && f["live"] == false && f["error"]["msg"] == "Connection killed."
        })
    })
    .await;
}

#[actix_rt::test]
async fn kill_stops_a_streaming_response_and_live_websocket_and_tcp_relays_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use waylay_testkit::{WsOrigin, connect_tunnel, tcp_line_origin, ws_next, ws_through_proxy};
    let (proxy, ui) = start(config()).await;
    let ui = ui.addr();

    // A response body streamed (larger than stream_large_bodies) that stalls midway: the
    // kill closes the client's and the server's connections without waiting for more.
    let (origin, origin_closed) = stalled_origin().await;
    let mut c = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(format!("GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < (3 << 20) / 2 {
        let n = within("the streamed start", c.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "the body stopped after {got} bytes");
        got += n;
    }
    let id = live_flow(ui, |f| f["request"]["path"] == "/big").await;
    let a = post(ui, &format!("/flows/{id}/kill"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    loop {
        let n = within("the client's connection closes", c.read(&mut buf))
            .await
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got += n;
    }
    assert!(got < 16 << 20, "the whole body arrived");
    within("the server's connection closes", origin_closed)
        .await
        .unwrap();
    killed_flow(ui, &id).await;

    // A live WebSocket, between messages.
    let ws_origin = WsOrigin::start().await;
    let (mut ws, _) = ws_through_proxy(proxy.addr(), ws_origin.addr, "/live", &[])
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert!(matches!(ws_next(&mut ws).await, Some(Ok(_))));
    let id = live_flow(ui, |f| f["request"]["path"] == "/live").await;
    let a = post(ui, &format!("/flows/{id}/kill"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    loop {
        match ws_next(&mut ws).await {
            None | Some(Err(_)) => break,
            Some(Ok(Message::Close(_))) => {}
            Some(Ok(m)) => panic!("a message after the kill: {m:?}"),
        }
    }
    killed_flow(ui, &id).await;

    // A live TCP relay, between messages.
    let tcp = tcp_line_origin().await;
    let mut s = connect_tunnel(proxy.addr(), &tcp.addr.to_string())
        .await
        .unwrap();
    s.write_all(b"ping\n").await.unwrap();
    let mut echo = vec![0u8; 11];
    within("the echo", s.read_exact(&mut echo)).await.unwrap();
    let id = live_flow(ui, |f| f["type"] == "tcp").await;
    let a = post(ui, &format!("/flows/{id}/kill"), "").await;
    assert_eq!(a.status, 200, "{}", a.body);
    let n = within("the tunnel closes", s.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);
    killed_flow(ui, &id).await;
}
