//! Differential test of the filter language against mitmproxy itself.
//!
//! `scripts/gen_filter_fixtures.py` builds the flows described in
//! `tests/data/filter_flows.json` with mitmproxy's classes, evaluates a corpus of
//! expressions (hand-written and random) with `mitmproxy.flowfilter`, and commits the
//! answers to `tests/data/filter_corpus.json`. Here waylay builds the same flows from the
//! same description and must give the same answer for every (expression, flow) pair, and
//! refuse exactly the expressions mitmproxy refuses, apart from the divergences the script
//! lists (regex features the `regex` crate lacks).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on malformed fixtures"
)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use waylay_core::flow::{
    Address, Client, FlowError, HttpVersion, Message, Request, Response, Server, TcpMessage,
    WebSocketData, WebSocketMessage, encoding,
};
use waylay_core::{Filter, Flow, Headers, HttpFlow, TcpFlow};

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn headers(v: &Value) -> Headers {
    Headers::from_pairs(v.as_array().unwrap().iter().map(|p| {
        (
            p[0].as_str().unwrap().to_owned(),
            Bytes::from(p[1].as_str().unwrap().to_owned()),
        )
    }))
}

fn version(v: &Value) -> HttpVersion {
    match v["http_version"].as_str() {
        Some("HTTP/2.0") => HttpVersion::Http2,
        _ => HttpVersion::Http11,
    }
}

fn body(v: &Value) -> Bytes {
    let plain = match v["body_hex"].as_str() {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
        None => s(v, "body").as_bytes().to_vec(),
    };
    match v["encoding"].as_str() {
        Some(enc) => encoding::encode_all(enc, &plain).unwrap().into(),
        None => plain.into(),
    }
}

fn message(v: &Value) -> Message {
    let mut m = Message::new(version(v), headers(&v["headers"]));
    m.raw_content = Some(body(v));
    m
}

fn hex_or_text(m: &Value) -> Bytes {
    match m["hex"].as_str() {
        Some(hex) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .into(),
        None => Bytes::from(s(m, "text").to_owned()),
    }
}

fn build(d: &Value) -> Flow {
    let client = Arc::new(Client::new(
        s(d, "client").parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
    ));
    let server = d["server"].as_array().map(|a| {
        Arc::new(Server::new(Address::new(
            a[0].as_str().unwrap(),
            a[1].as_u64().unwrap() as u16,
        )))
    });
    let error = d["error"].as_str().map(FlowError::new);
    let marked = s(d, "marked").to_owned();
    let comment = s(d, "comment").to_owned();
    let metadata = d["metadata"].as_object().cloned().unwrap_or_default();
    if s(d, "type") == "tcp" {
        let mut f = TcpFlow::new(client, server);
        for m in d["messages"].as_array().unwrap() {
            f.messages.push(TcpMessage::new(
                m["from_client"].as_bool().unwrap(),
                hex_or_text(m),
            ));
        }
        f.error = error;
        f.marked = marked;
        f.comment = comment;
        f.metadata = metadata;
        return Flow::Tcp(Box::new(f));
    }
    let r = &d["request"];
    let mut req = Request::new(
        s(r, "method"),
        s(r, "scheme"),
        s(r, "host"),
        r["port"].as_u64().unwrap() as u16,
        s(r, "path"),
    );
    req.authority = s(r, "authority").into();
    req.message = message(r);
    let mut f = HttpFlow::new(client, req);
    f.server = server;
    if d["response"].is_object() {
        let v = &d["response"];
        let code = v["status"].as_u64().unwrap() as u16;
        f.response = Some(Response {
            status_code: code,
            reason: waylay_core::flow::reason_phrase(code).into(),
            message: message(v),
        });
    }
    if let Some(msgs) = d["websocket"].as_array() {
        let mut ws = WebSocketData::default();
        for m in msgs {
            let from_client = m["from_client"].as_bool().unwrap();
            ws.messages.push(if m["hex"].is_string() {
                WebSocketMessage::binary(from_client, hex_or_text(m))
            } else {
                WebSocketMessage::text(from_client, s(m, "text"))
            });
        }
        f.websocket = Some(ws);
    }
    f.is_replay = d["is_replay"].as_str().map(str::to_owned);
    f.error = error;
    f.marked = marked;
    f.comment = comment;
    f.metadata = metadata;
    Flow::Http(Box::new(f))
}

#[test]
fn waylay_agrees_with_mitmproxy_on_the_corpus() {
    let desc = data("filter_flows.json");
    let flows: Vec<Flow> = desc["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(build)
        .collect();
    let corpus = data("filter_corpus.json");
    let names: Vec<&str> = corpus["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), flows.len(), "regenerate the corpus");
    let records = corpus["expressions"].as_array().unwrap();
    assert!(records.len() > 1000);
    let mut failures = Vec::new();
    let mut pairs = 0;
    for rec in records {
        let expr = s(rec, "expr");
        let divergence = rec["divergence"].as_str();
        let want_ok = rec["waylay_ok"]
            .as_bool()
            .unwrap_or(rec["ok"].as_bool().unwrap());
        let want = rec["waylay_results"]
            .as_str()
            .or(rec["results"].as_str())
            .unwrap_or("");
        match (Filter::parse(expr), want_ok) {
            (Ok(f), true) => {
                let printed = f.to_string();
                if Filter::parse(&printed).ok().as_ref() != Some(&f) {
                    failures.push(format!(
                        "{expr:?}: printed as {printed:?}, which parses differently"
                    ));
                }
                let got: String = flows
                    .iter()
                    .map(|fl| if f.matches(fl) { '1' } else { '0' })
                    .collect();
                pairs += flows.len();
                if got != want {
                    let which: Vec<&str> = got
                        .chars()
                        .zip(want.chars())
                        .zip(&names)
                        .filter(|((g, w), _)| g != w)
                        .map(|(_, n)| *n)
                        .collect();
                    failures.push(format!("{expr:?}: differs on {which:?} (parsed as {f})"));
                }
            }
            (Ok(f), false) => failures.push(format!(
                "{expr:?}: waylay accepts ({f}), mitmproxy refuses{}",
                divergence.map(|d| format!(" [{d}]")).unwrap_or_default()
            )),
            (Err(e), true) => {
                failures.push(format!("{expr:?}: waylay refuses ({e}), mitmproxy accepts"))
            }
            (Err(e), false) => {
                if divergence.is_some() {
                    // A divergence must be refused for the documented reason.
                    let m = e.to_string();
                    if !m.contains("not supported") {
                        failures.push(format!(
                            "{expr:?}: refused with {m:?}, expected 'not supported'"
                        ));
                    }
                }
            }
        }
    }
    assert!(pairs > 10_000, "only {pairs} pairs compared");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A filter-language quoted string whose content unquotes to `s`.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Regex semantics: random Python regexes on random subjects, as text (`~comment`,
/// multiline) and as bytes (`~bq`, dotall), against mitmproxy's answers.
#[test]
fn python_regexes_mean_the_same_in_waylay() {
    let corpus = data("filter_corpus.json");
    let cases = corpus["regex_cases"].as_array().unwrap();
    assert!(cases.len() >= 1000);
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in cases {
        let regex = s(case, "regex");
        let subjects: Vec<&str> = case["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for op in ["~comment", "~bq"] {
            let expr = format!("{op} {}", quote(regex));
            let want = case[op].as_str();
            match (Filter::parse(&expr), want) {
                (Ok(f), Some(want)) => {
                    let got: String = subjects
                        .iter()
                        .map(|subject| {
                            let mut flow = waylay_testkit::tflow();
                            flow.comment = (*subject).to_owned();
                            flow.request.headers.remove("content-encoding");
                            flow.request
                                .set_raw_content(Bytes::from(subject.to_string()));
                            if f.matches(&flow) { '1' } else { '0' }
                        })
                        .collect();
                    compared += subjects.len();
                    if got != want {
                        failures.push(format!(
                            "{expr}: got {got}, mitmproxy {want} on {subjects:?}"
                        ));
                    }
                }
                (Ok(f), None) if case["divergence"].is_null() => {
                    failures.push(format!("{expr}: waylay accepts ({f}), mitmproxy refuses"));
                }
                (Ok(_), None) => failures.push(format!("{expr}: should be refused (divergence)")),
                (Err(e), Some(_)) => {
                    failures.push(format!("{expr}: waylay refuses ({e}), mitmproxy accepts"))
                }
                (Err(_), None) => {}
            }
        }
    }
    assert!(compared > 10_000, "only {compared} compared");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The committed fixture is what mitmproxy answers today: with the mitmproxy peer
/// installed, the script regenerates it and the result must be identical.
#[test]
fn the_fixture_is_what_mitmproxy_answers() {
    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out =
        std::env::temp_dir().join(format!("waylay-filter-corpus-{}.json", std::process::id()));
    let status = std::process::Command::new(python)
        .arg("-W")
        .arg("ignore")
        .arg(root.join("scripts/gen_filter_fixtures.py"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/gen_filter_fixtures.py failed");
    let fresh: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(
        fresh == data("filter_corpus.json"),
        "tests/data/filter_corpus.json is stale: run scripts/gen_filter_fixtures.py"
    );
}
