//! Filter expressions: parsing, and matching typical expressions against a flow (ns per
//! flow). The flow is `bench_flow()` (20 request headers, 1 KiB body) with a 200 response
//! (8 headers, 1 KiB body) and a server.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use waylay_benches::bench_flow;
use waylay_core::flow::{Address, Response, Server};
use waylay_core::{Filter, HttpFlow};

fn flow() -> HttpFlow {
    let mut f = bench_flow();
    f.request.scheme = "http".into();
    f.server = Some(Arc::new(Server::new(Address::new("example.com", 80))));
    let mut headers = vec![
        (
            "Content-Type".to_owned(),
            "text/html; charset=utf-8".to_owned(),
        ),
        ("Server".to_owned(), "nginx".to_owned()),
    ];
    for i in 1..7 {
        headers.push((format!("X-Response-{i}"), format!("value {i}")));
    }
    f.response = Some(Response::make(200, Bytes::from(vec![b'y'; 1024]), headers));
    f
}

/// Expressions as people type them, from the cheapest to the most expensive.
const EXPRESSIONS: &[(&str, &str)] = &[
    ("all", "~all"),
    ("status", "~c 200"),
    ("method", "~m POST"),
    ("domain", "~d example\\.com"),
    ("url", "~u /index\\.html"),
    ("bare-url", "example.com/index"),
    ("content-type", "~t json"),
    ("header", "~h x-header-19"),
    ("header-miss", "~h authorization"),
    ("src", "~src ^127\\.0\\.0\\.1:"),
    ("combined", "~d example.com & ~c 200 & !~m POST"),
    ("or-chain", "~c 500 | ~c 502 | ~c 503 | ~c 504 | ~s"),
    ("body-plain", "~b needle"),
];

fn matching(c: &mut Criterion) {
    let plain = flow();
    let mut g = c.benchmark_group("filter_match");
    for (name, expr) in EXPRESSIONS {
        let filter = Filter::parse(expr).expect("a valid expression");
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(&filter).matches(black_box(&plain)))
        });
    }
    // `~b` on a gzip-encoded 1 KiB response: the decoding dominates.
    let mut gz = flow();
    if let Some(r) = gz.response.as_mut() {
        r.headers.insert("content-encoding", "gzip");
        r.set_content(Bytes::from(vec![b'y'; 1024]));
    }
    let body = Filter::parse("~bs needle").expect("valid");
    g.bench_function(BenchmarkId::from_parameter("body-gzip"), |b| {
        b.iter(|| black_box(&body).matches(black_box(&gz)))
    });
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("filter_parse");
    for (name, expr) in [
        ("status", "~c 200"),
        ("combined", "~d example.com & ~c 200 & !~m POST"),
    ] {
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| Filter::parse(black_box(expr)))
        });
    }
    g.finish();
}

criterion_group!(benches, matching, parsing);
criterion_main!(benches);
