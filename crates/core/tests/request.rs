//! Request and response accessors a mitmproxy user expects.

use waylay_core::flow::{reason_phrase, split_host_port};
use waylay_core::{Request, Response};
use waylay_testkit::treq;

#[test]
fn from_url_and_url() {
    let r = Request::from_url("GET", "https://example.com:8443/a/b?c=d").unwrap();
    assert_eq!(
        (r.scheme.as_str(), r.host.as_str(), r.port),
        ("https", "example.com", 8443)
    );
    assert_eq!(r.path, "/a/b?c=d");
    assert_eq!(r.headers.get("host"), Some("example.com:8443"));
    assert_eq!(r.url(), "https://example.com:8443/a/b?c=d");

    let r = Request::from_url("GET", "HTTP://example.com").unwrap();
    assert_eq!(
        (r.scheme.as_str(), r.port, r.path.as_str()),
        ("http", 80, "/")
    );
    assert_eq!(r.url(), "http://example.com/");

    let r = Request::from_url("GET", "http://example.com?q=1").unwrap();
    assert_eq!(r.path, "/?q=1");

    let r = Request::from_url("GET", "http://[::1]:8080/x").unwrap();
    assert_eq!((r.host.as_str(), r.port), ("::1", 8080));
    assert_eq!(r.url(), "http://[::1]:8080/x");

    assert!(Request::from_url("GET", "example.com/x").is_err());
    assert!(Request::from_url("GET", "http://example.com:notaport/").is_err());
}

#[test]
fn pretty_url_uses_the_host_header() {
    let mut r = treq();
    r.host = "93.184.215.14".into();
    assert_eq!(r.url(), "http://93.184.215.14/path");
    assert_eq!(r.pretty_host(), "example.com");
    assert_eq!(r.pretty_url(), "http://example.com/path");

    r.headers.insert("Host", "other.test:8080");
    assert_eq!(r.pretty_host(), "other.test");
    r.headers.remove("host");
    r.authority = "auth.test:80".into();
    assert_eq!(r.pretty_host(), "auth.test");
    r.authority.clear();
    assert_eq!(r.pretty_host(), "93.184.215.14");
}

#[test]
fn query_and_set_query() {
    let mut r = Request::from_url("GET", "http://e.test/p?a=1&b=x%20y&c=&d&e=1+2").unwrap();
    assert_eq!(r.path_only(), "/p");
    assert_eq!(
        r.query(),
        [
            ("a".into(), "1".into()),
            ("b".into(), "x y".into()),
            ("c".into(), String::new()),
            ("d".into(), String::new()),
            ("e".into(), "1 2".into()),
        ]
    );
    r.set_query(&[("k", "v w"), ("ü", "&=")]);
    assert_eq!(r.path, "/p?k=v%20w&%C3%BC=%26%3D");
    assert_eq!(
        r.query(),
        [("k".into(), "v w".into()), ("ü".into(), "&=".into())]
    );
    r.set_query::<&str, &str>(&[]);
    assert_eq!(r.path, "/p");
    assert!(r.query().is_empty());
}

#[test]
fn cookies_and_set_cookies() {
    let mut r = treq();
    r.headers.append("Cookie", "a=1; b=2");
    r.headers.append("cookie", " c = 3 ;;flag");
    assert_eq!(
        r.cookies(),
        [
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("c".into(), "3".into()),
            ("flag".into(), String::new()),
        ]
    );
    r.set_cookies(&[("x", "y"), ("z", "w")]);
    assert_eq!(
        r.headers.get_all("cookie").collect::<Vec<_>>(),
        ["x=y; z=w"]
    );
    r.set_cookies::<&str, &str>(&[]);
    assert!(!r.headers.contains("cookie"));

    // Quoted values, as mitmproxy reads and writes them.
    r.set_cookies(&[("q", "a b;\"c\\"), ("plain", "v")]);
    assert_eq!(r.headers.get("cookie"), Some(r#"q="a b;\"c\\"; plain=v"#));
    assert_eq!(
        r.cookies(),
        [
            ("q".into(), "a b;\"c\\".into()),
            ("plain".into(), "v".into())
        ]
    );
}

#[test]
fn split_host_port_handles_names_ipv4_and_ipv6() {
    let s = |a| split_host_port(a, 80);
    assert_eq!(s("example.com"), Some(("example.com".into(), 80)));
    assert_eq!(s("example.com:8080"), Some(("example.com".into(), 8080)));
    assert_eq!(s("10.0.0.1:443"), Some(("10.0.0.1".into(), 443)));
    assert_eq!(s("[::1]:8443"), Some(("::1".into(), 8443)));
    assert_eq!(s("[::1]"), Some(("::1".into(), 80)));
    assert_eq!(
        s("2001:db8::1"),
        Some(("2001:db8::1".into(), 80)),
        "bare IPv6"
    );
    assert_eq!(s(" example.com:1 "), Some(("example.com".into(), 1)));
    // As `u16::from_str` reads a port: a leading `+` is allowed.
    assert_eq!(s("[a]:+0"), Some(("a".into(), 0)));
    assert_eq!(s("host:+8080"), Some(("host".into(), 8080)));
    assert_eq!(s("host:65535"), Some(("host".into(), 65535)));
    for bad in [
        "",
        "   ",
        ":80",
        "host:",
        "host:65536",
        "host:x",
        "host:+",
        "host:++1",
        "host:1+",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[]",
        "[]:80",
    ] {
        assert_eq!(s(bad), None, "{bad:?}");
    }
}

#[test]
fn response_make_and_reason_phrases() {
    let r = Response::make(404, "nope", [("Content-Type", "text/plain")]);
    assert_eq!((r.status_code, r.reason.as_str()), (404, "Not Found"));
    assert_eq!(r.headers.get("content-length"), Some("4"));
    assert_eq!(r.text().unwrap(), "nope");
    let empty = Response::make::<&str, &str>(204, "", []);
    assert_eq!(empty.headers.get("content-length"), Some("0"));
    assert_eq!(reason_phrase(418), "I'm a teapot");
    assert_eq!(reason_phrase(599), "");
}

#[test]
fn a_connect_request_is_authority_form() {
    let mut r = treq();
    r.method = "CONNECT".into();
    r.scheme = Default::default();
    r.host = "example.com".into();
    r.port = 443;
    r.path = Default::default();
    assert_eq!(r.url(), "example.com:443");
    r.host = "::1".into();
    assert_eq!(r.url(), "[::1]:443");
}
