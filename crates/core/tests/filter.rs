//! The filter language, operator by operator (after mitmproxy's `test_flowfilter.py`), its
//! grammar, errors and canonical printing.

use waylay_core::flow::{Address, Response, Server};
use waylay_core::{Filter, FilterError, Flow, FlowRef, HttpFlow, TcpFlow};
use waylay_testkit::{FlowExt, tflow, tresp, ttcpflow, twebsocketflow};

fn f(expr: &str) -> Filter {
    Filter::parse(expr).unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
}

fn m<'a>(expr: &str, flow: impl Into<FlowRef<'a>>) -> bool {
    f(expr).matches(flow)
}

fn err(expr: &str) -> FilterError {
    match Filter::parse(expr) {
        Ok(flt) => panic!("{expr:?} should not parse, got {flt}"),
        Err(e) => e,
    }
}

fn with_resp() -> HttpFlow {
    tflow().with_response(tresp())
}

#[test]
fn kind_operators() {
    let http = with_resp();
    let tcp = ttcpflow();
    let ws = twebsocketflow();
    assert!(m("~all", &http) && m("~all", &tcp));
    assert!(m("~http", &http) && !m("~http", &tcp));
    assert!(m("~tcp", &tcp) && !m("~tcp", &http));
    assert!(m("~websocket", &ws) && !m("~websocket", &http) && !m("~websocket", &tcp));
    for none in ["~dns", "~udp"] {
        assert!(!m(none, &http) && !m(none, &tcp) && !m(none, &ws));
    }
}

#[test]
fn request_response_and_error() {
    let q = tflow();
    let s = with_resp();
    assert!(m("~q", &q) && !m("~q", &s));
    assert!(m("~s", &s) && !m("~s", &q));
    assert!(!m("~q", &ttcpflow()) && !m("~s", &ttcpflow()));
    assert!(!m("~e", &s));
    assert!(m("~e", &tflow().with_error("boom")));
    let mut tcp = ttcpflow();
    assert!(!m("~e", &tcp));
    tcp.kill();
    assert!(m("~e", &tcp));
}

#[test]
fn status_code() {
    let s = with_resp();
    assert!(m("~c 200", &s));
    assert!(m("~c 0200", &s));
    assert!(!m("~c 201", &s));
    assert!(!m("~c 200", &tflow()));
    assert!(!m("~c 200", &ttcpflow()));
    assert!(!m("~c 99999999999999", &s));
}

#[test]
fn asset() {
    let mut s = with_resp();
    assert!(!m("~a", &s));
    for (ct, asset) in [
        ("text/javascript", true),
        ("application/x-javascript; charset=utf-8", true),
        ("text/css", true),
        ("image/png", true),
        ("font/woff2", true),
        ("application/font-woff", true),
        ("text/html", false),
        // mitmproxy compares these case-sensitively.
        ("IMAGE/PNG", false),
    ] {
        s.response
            .as_mut()
            .unwrap()
            .headers
            .insert("content-type", ct);
        assert_eq!(m("~a", &s), asset, "{ct}");
    }
    assert!(!m("~a", &tflow()));
}

#[test]
fn headers() {
    let s = with_resp();
    assert!(m("~h header", &s));
    assert!(m("~h HEADER-response", &s));
    assert!(m("~h 'header: qvalue'", &s));
    assert!(m("~h '^header-response: svalue'", &s), "multiline anchors");
    // Lines end with CRLF and `$` only matches before the LF, as in mitmproxy.
    assert!(!m("~h 'svalue$'", &s) && m("~h 'svalue\\r$'", &s));
    assert!(!m("~h nonexistent", &s));
    assert!(m("~hq header", &s) && !m("~hq header-response", &s));
    assert!(m("~hs header-response", &s) && !m("~hs qvalue", &s));
    assert!(!m("~hs header", &tflow()));
    assert!(!m("~h header", &ttcpflow()));
}

#[test]
fn content_type() {
    let mut s = with_resp();
    assert!(m("~t text/plain", &s) && m("~ts TEXT", &s) && !m("~tq text", &s));
    s.request.headers.insert("Content-Type", "application/json");
    assert!(m("~tq json", &s) && m("~t json", &s) && !m("~ts json", &s));
    assert!(!m("~t text", &ttcpflow()));
}

#[test]
fn bodies_are_decoded() {
    let mut s = with_resp();
    assert!(m("~b content", &s) && m("~b message", &s));
    assert!(m("~bq content", &s) && !m("~bq message", &s));
    assert!(m("~bs message", &s) && !m("~bs content", &s));
    s.response
        .as_mut()
        .unwrap()
        .headers
        .insert("content-encoding", "gzip");
    s.response.as_mut().unwrap().set_content("a gzipped body");
    assert!(m("~bs 'gzipped body'", &s));
    for enc in ["deflate", "br", "zstd"] {
        let resp = s.response.as_mut().unwrap();
        resp.headers.insert("content-encoding", enc);
        resp.set_content(format!("encoded with {enc}"));
        assert!(m(&format!("~bs 'with {enc}'"), &s), "{enc}");
    }
    // Undecodable: the raw bytes are searched, as mitmproxy's get_content(strict=False).
    let resp = s.response.as_mut().unwrap();
    resp.headers.insert("content-encoding", "gzip");
    resp.set_raw_content("plain after all");
    assert!(m("~bs 'after all'", &s));
    // A streamed body is not held: nothing to match.
    s.response.as_mut().unwrap().raw_content = None;
    assert!(!m("~bs after", &s));
}

#[test]
fn body_regex_spans_lines_and_bytes() {
    let mut s = with_resp();
    s.response
        .as_mut()
        .unwrap()
        .set_raw_content(&b"one\ntwo\xff\x00"[..]);
    assert!(m("~bs one.two", &s), "DOTALL");
    assert!(m("~bs '\\\\xff\\\\x00'", &s), "raw bytes");
    assert!(m("~bs [\\x80-\\xff]", &s));
}

#[test]
fn websocket_and_tcp_bodies() {
    let ws = twebsocketflow();
    assert!(m("~b 'hello binary'", &ws) && m("~b \"it's me\"", &ws));
    assert!(m("~bq 'hello text'", &ws) && !m("~bq \"it's me\"", &ws));
    assert!(m("~bs \"it's me\"", &ws) && !m("~bs hello", &ws));
    let tcp = ttcpflow();
    assert!(m("~b hello", &tcp) && m("~bq hello", &tcp) && !m("~bs hello", &tcp));
    assert!(m("~bs \"it's\"", &tcp) && !m("~bq \"it's\"", &tcp));
}

#[test]
fn method_domain_url() {
    let mut s = with_resp();
    assert!(m("~m get", &s) && m("~m ^GET$", &s) && !m("~m post", &s));
    assert!(m("~d example.com", &s) && m("~d EXAMPLE", &s) && !m("~d other", &s));
    assert!(m("~u example.com/path", &s) && m("example.com/pa", &s));
    assert!(m("~u ^http://example\\.com/path$", &s));
    // The Host header is preferred to the connection's host, also for the URL.
    s.request.host = "10.0.0.1".into();
    s.request.headers.insert("Host", "api.example.org:8080");
    assert!(m("~d 10.0.0.1", &s) && m("~d api.example.org", &s));
    assert!(m("~u ^http://api.example.org:8080/path$", &s));
    assert!(!m("~m get", &ttcpflow()) && !m("~d example", &ttcpflow()));
    assert!(!m("~u example", &ttcpflow()));
}

#[test]
fn connect_url_is_the_authority() {
    let mut s = tflow();
    s.request.method = "CONNECT".into();
    s.request.authority = "example.com:443".into();
    assert!(m("~u ^example.com:443$", &s));
}

#[test]
fn addresses() {
    let s = with_resp();
    assert!(m("~src 127.0.0.1", &s) && m("~src ^127.0.0.1:22$", &s));
    assert!(m("~dst ^example.com:80$", &s) && !m("~dst 127.0.0.1", &s));
    let tcp = ttcpflow();
    assert!(m("~src :22", &tcp) && m("~dst example", &tcp));
    let mut noserver = ttcpflow();
    noserver.server = None;
    assert!(!m("~dst .", &noserver));
    let mut v6 = tflow();
    v6.server = Some(std::sync::Arc::new(Server::new(Address::new("::1", 8080))));
    assert!(m("~dst ^::1:8080$", &v6), "no brackets, as mitmproxy");
}

#[test]
fn marks_comments_metadata_replay() {
    let mut s = with_resp();
    assert!(!m("~marked", &s) && !m("~marker .", &s));
    s.marked = ":star:".into();
    assert!(m("~marked", &s) && m("~marker star", &s) && !m("~marker heart", &s));
    s.comment = "first\nSecond line".into();
    assert!(m("~comment ^second", &s) && !m("~comment third", &s));
    s.metadata.insert("tag".into(), "auth".into());
    s.metadata.insert("n".into(), 3.into());
    s.metadata.insert("ok".into(), true.into());
    s.metadata.insert("ratio".into(), serde_json::json!(0.5));
    s.metadata
        .insert("list".into(), serde_json::json!([1, "a"]));
    assert!(m("~meta '^tag: auth$'", &s));
    assert!(m("~meta '^n: 3$'", &s) && m("~meta 'ok: True'", &s));
    assert!(m("~meta 'ratio: 0.5'", &s) && m("~meta \"list: \\\\[1, 'a'\\\\]\"", &s));
    assert!(!m("~replay", &s));
    s.is_replay = Some("request".into());
    assert!(m("~replay", &s) && m("~replayq", &s) && !m("~replays", &s));
    s.is_replay = Some("response".into());
    assert!(m("~replay", &s) && m("~replays", &s) && !m("~replayq", &s));
    let mut tcp: TcpFlow = ttcpflow();
    tcp.marked = "x".into();
    tcp.comment = "tcp note".into();
    assert!(m("~marked", &tcp) && m("~comment note", &tcp) && !m("~replay", &tcp));
}

#[test]
fn flow_enum_and_mut_refs() {
    let mut s = with_resp();
    assert!(f("~s").matches(&mut s));
    let flow = Flow::Http(Box::new(s));
    assert!(f("~s").matches(&flow));
    let tcp = Flow::Tcp(Box::new(ttcpflow()));
    assert!(f("~tcp").matches(&tcp));
}

#[test]
fn operators_combine_with_mitmproxys_precedence() {
    let s = with_resp();
    let q = tflow();
    assert!(m("~s & ~c 200", &s));
    assert!(m("~s ~c 200", &s), "juxtaposition is and");
    assert!(m("~q | ~c 200", &s) && m("~q | ~c 200", &q));
    assert!(m("!~q", &s) && !m("!~q", &q));
    assert!(m("!!~s", &s));
    // `&` binds tighter than `|`.
    assert!(m("~q & ~c 500 | ~s", &s));
    // Juxtaposition binds loosest: `~q ~s | ~e` is `~q & (~s | ~e)`.
    assert!(!m("~q ~s | ~e", &s));
    assert_eq!(f("~q ~s | ~e").to_string(), "~q & (~s | ~e )");
    assert_eq!(f("~q & (~s | ~e )"), f("~q ~s | ~e"));
    assert!(m("!(~q | ~e )", &s));
    assert!(m("( ~s )", &s));
}

#[test]
fn case_insensitive_everywhere() {
    let s = with_resp();
    assert!(m("~m GeT", &s) && m("~d EXAMPLE.COM", &s) && m("~h USER-AGENT", &s));
    assert!(m("~b CONTENT", &s) && m("~u PATH", &s));
    assert!(m("~u '(?-i:path)'", &s) && !m("~u '(?-i:PATH)'", &s));
}

#[test]
fn quoting() {
    let s = with_resp();
    assert!(m("~h \"header: qvalue\"", &s));
    assert!(m("~h 'header: qvalue'", &s));
    // In quotes a backslash escapes the next character (it is dropped), so a regex escape
    // needs two.
    assert_eq!(f("~d \"\\d+\"").to_string(), "~d d+");
    assert_eq!(f("~d '\\\\d+'").to_string(), "~d \\d+");
    assert_eq!(f("~d 'a\\'b'").to_string(), "~d \"a'b\"");
    assert_eq!(f("~d \"a\\tb\"").to_string(), "~d \"a\\tb\"");
    // A bare word runs until whitespace, a parenthesis, a quote or `~`.
    assert_eq!(f("~d foo|~d bar").to_string(), "~d foo| & ~d bar");
    assert_eq!(f("a&b").to_string(), "~u a&b");
}

#[test]
fn errors_name_the_problem_and_the_position() {
    assert_eq!(err("~d").to_string(), "expected a regex after ~d at 2");
    assert_eq!(err("~s & ~d").to_string(), "expected a regex after ~d at 7");
    assert_eq!(err("~c x").to_string(), "expected a number after ~c at 3");
    assert_eq!(err("~x").to_string(), "unknown operator ~x at 0");
    assert_eq!(err("(~q)").to_string(), "expected a space after ~q at 3");
    assert_eq!(err("~q&~s").position, 2);
    assert_eq!(err("").to_string(), "empty filter expression at 0");
    assert_eq!(
        err("~q &").to_string(),
        "expected an expression after & at 4"
    );
    assert_eq!(err("!").to_string(), "expected an expression after ! at 1");
    assert_eq!(err("(a b)").position, 3);
    assert_eq!(err("a)").position, 1);
    assert_eq!(err("\"open").to_string(), "unterminated quoted string at 0");
    let e = err("~u [a");
    assert_eq!(e.position, 3);
    assert!(e.to_string().contains("unterminated character set"), "{e}");
    let e = err("~b 'a(?=b)'");
    assert!(e.to_string().contains("not supported"), "{e}");
    // Deep nesting is refused rather than risking the stack.
    assert!(Filter::parse(&format!("{}~q", "!".repeat(150))).is_ok());
    let deep = format!("{}~q", "!".repeat(100_000));
    assert_eq!(
        err(&deep).to_string(),
        "expression nested too deeply at 201"
    );
    let parens = format!("{}~q {}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(
        err(&parens)
            .to_string()
            .starts_with("expression nested too deeply")
    );
    let e = err(&format!(
        "~u '{}a{}'",
        "(".repeat(50_000),
        ")".repeat(50_000)
    ));
    assert!(e.to_string().contains("too many nested groups"), "{e}");
    // Positions are byte offsets into the text as given, tabs included.
    assert_eq!(err("~q\t~d").position, 3 + 2);
    assert_eq!(err("é ~d").position, 5);
}

#[test]
fn python_regex_meanings_are_kept() {
    let mut s = with_resp();
    s.request.path = "/a{b}/x".into();
    // A `{` that is not a repetition is a literal in Python.
    assert!(m("~u a{b}", &s));
    // `\Z` is the end of the text; `$` also matches before a final newline.
    s.comment = "line\n".into();
    assert!(!m("~comment 'line\\\\Z'", &s));
    assert!(m("~comment line$", &s));
    // `[[:alpha:]]` is not a POSIX class in Python but `[[:alph]` followed by `]`.
    s.comment = "a]".into();
    assert!(m("~comment [[:alpha:]]", &s));
    s.comment = "alpha".into();
    assert!(!m("~comment [[:alpha:]]", &s));
    // Python's `\B` never matches an empty text (the regex crate's does).
    assert!(m("~comment \\B", &s));
    s.comment = String::new();
    assert!(!m("~comment \\B", &s));
    assert!(m("~comment '\\\\B|^$'", &s) && !m("~comment '\\\\B|a'", &s));
}

#[test]
fn filters_are_cheap_to_clone_and_compare() {
    let a = f("~d example.com & ~c 200");
    let b = a.clone();
    assert_eq!(a, b);
    assert_eq!(a, f("~d example.com ~c 200"));
    assert_ne!(a, f("~d example.org & ~c 200"));
    let _: Filter = "~q".parse().unwrap();
    fn send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    send_sync::<Filter>();
}

#[test]
fn response_make_marks_flow_as_answered() {
    let mut q = tflow();
    q.response = Some(Response::make(404, "nope", [("content-type", "text/html")]));
    assert!(m("~c 404 & ~bs nope & ~ts html", &q));
}

#[test]
fn body_operators_read_a_stored_streamed_body() {
    let dir = waylay_testkit::TempDir::new("filter-stored");
    let mut flow = with_resp();
    let (mut store, stored) = waylay_core::flow::BodyStore::create_in(dir.path()).unwrap();
    store.push(b"a large streamed ");
    store.push(b"needle body");
    let resp = flow.response.as_mut().unwrap();
    resp.raw_content = None;
    resp.stream = true;
    resp.stored_body = Some(stored);
    // Not yet complete: not held, so no match.
    assert!(!m("~bs needle", &flow));
    store.finish();
    assert!(m("~bs needle", &flow));
    assert!(m("~b 'streamed needle'", &flow));
    assert!(!m("~bq needle", &flow));
    assert!(!m("~bs haystack", &flow));
}
