//! `Headers` keep order, case and duplicates; lookups ignore case.

use bytes::Bytes;
use waylay_core::Headers;

fn names(h: &Headers) -> Vec<&str> {
    h.iter().map(|(n, _)| n).collect()
}

fn sample() -> Headers {
    Headers::from_pairs([
        ("Host", "example.com"),
        ("X-Dup", "1"),
        ("accept", "*/*"),
        ("x-dup", "2"),
        ("Set-Cookie", "a=1"),
    ])
}

#[test]
fn order_case_and_duplicates_are_kept() {
    let h = sample();
    assert_eq!(
        names(&h),
        ["Host", "X-Dup", "accept", "x-dup", "Set-Cookie"]
    );
    assert_eq!(h.len(), 5);
    assert_eq!(h.get_all("X-DUP").collect::<Vec<_>>(), ["1", "2"]);
}

#[test]
fn lookups_ignore_case() {
    let h = sample();
    assert_eq!(h.get("host"), Some("example.com"));
    assert_eq!(h.get("HOST"), Some("example.com"));
    assert_eq!(h.get("x-dup"), Some("1"), "the first of several");
    assert!(h.contains("ACCEPT"));
    assert!(!h.contains("missing"));
    assert_eq!(h.get("missing"), None);
}

#[test]
fn insert_keeps_the_first_fields_place_and_case_and_drops_duplicates() {
    let mut h = sample();
    h.insert("X-DUP", "3");
    assert_eq!(names(&h), ["Host", "X-Dup", "accept", "Set-Cookie"]);
    assert_eq!(h.get_all("x-dup").collect::<Vec<_>>(), ["3"]);

    h.insert("New", "v");
    assert_eq!(names(&h).last(), Some(&"New"));
}

#[test]
fn append_remove_retain_and_tokens() {
    let mut h = sample();
    h.append("set-cookie", "b=2");
    assert_eq!(h.get_all("Set-Cookie").collect::<Vec<_>>(), ["a=1", "b=2"]);
    assert_eq!(h.remove("SET-COOKIE"), 2);
    assert_eq!(h.remove("set-cookie"), 0);

    h.retain(|n, _| !n.eq_ignore_ascii_case("x-dup"));
    assert_eq!(names(&h), ["Host", "accept"]);

    h.append("Connection", "keep-alive, Upgrade");
    h.append("connection", " close ,");
    assert_eq!(h.tokens("connection"), ["keep-alive", "upgrade", "close"]);

    h.clear();
    assert!(h.is_empty());
}

#[test]
fn non_utf8_values_are_kept_as_bytes() {
    let mut h = Headers::new();
    h.append("X-Raw", Bytes::from_static(b"\xff\x00"));
    h.append("x-raw", "text");
    assert_eq!(h.get("x-raw"), None, "the first value is not UTF-8");
    assert_eq!(h.get_bytes("X-RAW"), Some(&b"\xff\x00"[..]));
    assert_eq!(h.get_all("x-raw").collect::<Vec<_>>(), ["text"]);
    assert_eq!(h.fields()[0].1, Bytes::from_static(b"\xff\x00"));
}

/// A parsed map as hyper gives one: lowercase names, a name's later values grouped after
/// its first.
fn parsed() -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (n, v) in [
        ("host", "example.com"),
        ("x-dup", "1"),
        ("accept", "*/*"),
        ("x-dup", "2"),
        ("content-length", "3"),
    ] {
        m.append(
            http::HeaderName::from_static(n),
            http::HeaderValue::from_static(v),
        );
    }
    m
}

fn owned(h: &Headers) -> Vec<(String, Vec<u8>)> {
    h.iter().map(|(n, v)| (n.to_owned(), v.to_vec())).collect()
}

/// Headers as parsed are edited in the parsed map when that gives what the list form
/// gives (an addon setting one header); every other edit takes the list form. Either way
/// the result is the same as editing the list form.
#[test]
fn edits_of_parsed_headers_match_edits_of_the_list_form() {
    type Edit = fn(&mut Headers);
    let edits: [(&str, Edit); 8] = [
        ("insert a new lowercase name", |h| h.insert("count", "1")),
        ("insert a present name", |h| h.insert("x-dup", "3")),
        ("insert a present name with capitals", |h| {
            h.insert("X-Dup", "3")
        }),
        ("insert a new name with capitals", |h| {
            h.insert("Count", "1")
        }),
        ("append a new name", |h| h.append("x-new", "v")),
        ("append a present name", |h| h.append("accept", "text/html")),
        ("insert an invalid value", |h| h.insert("x-bad", "a\nb")),
        ("insert an invalid name", |h| h.insert("bad name", "v")),
    ];
    for (what, edit) in edits {
        let mut wire = Headers::from_http(parsed());
        let mut list: Headers = wire.fields().iter().cloned().collect();
        edit(&mut wire);
        edit(&mut list);
        assert_eq!(owned(&wire), owned(&list), "{what}");
        assert_eq!(wire.fields(), list.fields(), "{what}");
        let mut dropped = (Vec::new(), Vec::new());
        let (a, b) = (
            wire.to_http(|n| dropped.0.push(n.to_owned())),
            list.to_http(|n| dropped.1.push(n.to_owned())),
        );
        assert_eq!(a, b, "{what}");
        assert_eq!(
            dropped.0, dropped.1,
            "{what}: the same fields reported invalid"
        );
        // Several edits in a row, reading in between (the cached list form is refreshed).
        edit(&mut wire);
        edit(&mut list);
        wire.insert("count", "2");
        list.insert("count", "2");
        assert_eq!(owned(&wire), owned(&list), "{what}, then more");
        assert_eq!(wire.get("count"), Some("2"));
    }
}
