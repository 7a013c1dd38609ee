//! Bodies through `Content-Encoding`: gzip, deflate, br, zstd and chains of them, plus the
//! text/JSON accessors.

use waylay_core::Response;
use waylay_core::flow::BodyError;
use waylay_core::flow::encoding::{self, EncodingError};
use waylay_testkit::tresp;

const TEXT: &str = "Hello, waylay! Ünïcödé text that compresses: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn encoded_response(enc: &str) -> Response {
    let mut r = tresp();
    r.headers.insert("content-encoding", enc.to_owned());
    r.set_text(TEXT);
    r
}

#[test]
fn each_encoding_round_trips_through_set_text_and_text() {
    for enc in [
        "gzip",
        "deflate",
        "br",
        "zstd",
        "gzip, br",
        "zstd,deflate",
        "identity",
    ] {
        let r = encoded_response(enc);
        let raw = r.raw_content.clone().unwrap();
        if enc != "identity" {
            assert_ne!(&raw[..], TEXT.as_bytes(), "{enc}: body was not encoded");
        }
        assert_eq!(
            r.headers.get("content-length"),
            Some(raw.len().to_string().as_str()),
            "{enc}"
        );
        assert_eq!(r.text().unwrap(), TEXT, "{enc}");
        assert_eq!(&r.content().unwrap()[..], TEXT.as_bytes(), "{enc}");
        assert_eq!(encoding::decode_all(enc, &raw).unwrap(), TEXT.as_bytes());
    }
}

#[test]
fn multi_token_encodings_apply_in_order() {
    let raw = encoded_response("gzip, br").raw_content.clone().unwrap();
    // br was applied last, so it is undone first.
    let gz = encoding::decode("br", &raw).unwrap();
    assert_eq!(encoding::decode("gzip", &gz).unwrap(), TEXT.as_bytes());
    assert_eq!(
        encoding::encode_all("gzip, br", TEXT.as_bytes())
            .map(|e| encoding::decode_all("gzip, br", &e).unwrap())
            .unwrap(),
        TEXT.as_bytes()
    );
}

#[test]
fn decode_removes_the_encoding_and_encode_adds_it() {
    for enc in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
        let mut r = encoded_response(enc);
        r.decode().unwrap();
        assert_eq!(r.headers.get("content-encoding"), None);
        assert_eq!(&r.raw_content.clone().unwrap()[..], TEXT.as_bytes());
        assert_eq!(
            r.headers.get("content-length"),
            Some(TEXT.len().to_string().as_str())
        );
    }
    let mut r = tresp();
    r.set_text(TEXT);
    r.encode("zstd").unwrap();
    assert_eq!(r.headers.get("content-encoding"), Some("zstd"));
    assert_eq!(r.text().unwrap(), TEXT);
}

#[test]
fn raw_deflate_without_zlib_header_is_accepted() {
    use std::io::Write;
    let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    w.write_all(TEXT.as_bytes()).unwrap();
    let raw = w.finish().unwrap();
    assert_eq!(encoding::decode("deflate", &raw).unwrap(), TEXT.as_bytes());
}

#[test]
fn bad_encodings_are_errors_not_panics() {
    assert!(matches!(
        encoding::decode("gzip", b"not gzip"),
        Err(EncodingError::Invalid { .. })
    ));
    for enc in ["deflate", "br", "zstd"] {
        assert!(encoding::decode(enc, b"\x00garbage\xff").is_err(), "{enc}");
    }
    assert_eq!(
        encoding::decode("compress", b"x"),
        Err(EncodingError::Unsupported("compress".into()))
    );
    let mut r = tresp();
    r.headers.insert("content-encoding", "gzip");
    r.set_raw_content("not gzip at all");
    assert!(matches!(r.text(), Err(BodyError::Encoding(_))));
    // Setting text with an unknown encoding drops the encoding instead of lying about it.
    r.headers.insert("content-encoding", "x-unknown");
    r.set_text("plain");
    assert_eq!(r.headers.get("content-encoding"), None);
    assert_eq!(r.text().unwrap(), "plain");
}

#[test]
fn text_json_and_charsets() {
    let mut r = tresp();
    r.headers.insert("content-type", "application/json");
    r.set_text(r#"{"a": [1, 2], "b": "c"}"#);
    assert_eq!(r.json().unwrap()["a"][1], 2);

    r.set_text("not json");
    assert!(matches!(r.json(), Err(BodyError::Json(_))));

    r.headers
        .insert("content-type", "text/plain; charset=ISO-8859-1");
    r.set_raw_content(&b"caf\xe9"[..]);
    assert_eq!(r.text().unwrap(), "café");

    r.headers
        .insert("content-type", "text/plain; charset=utf-8");
    assert!(matches!(r.text(), Err(BodyError::NotUtf8)));

    r.raw_content = None;
    assert!(matches!(r.text(), Err(BodyError::Unavailable)));
}

#[test]
fn set_content_keeps_content_length_true_unless_chunked() {
    let mut r = tresp();
    r.set_text("four");
    assert_eq!(r.headers.get("content-length"), Some("4"));
    r.headers.remove("content-length");
    r.headers.insert("transfer-encoding", "chunked");
    r.set_text("longer body");
    assert_eq!(r.headers.get("content-length"), None);
}

/// mitmproxy's `set_content`: an empty body still gets `Content-Length: 0` (a GET whose
/// content a script sets to `b""` goes out with it), and any `Transfer-Encoding`, not only
/// `chunked`, leaves the length to the framing.
#[test]
fn set_content_sets_content_length_for_an_empty_body_and_never_with_a_transfer_encoding() {
    let mut r = tresp();
    r.headers.remove("content-length");
    r.set_content(Vec::new());
    assert_eq!(r.headers.get("content-length"), Some("0"));
    r.headers.remove("content-length");
    r.headers.insert("transfer-encoding", "gzip");
    r.set_text("body");
    assert_eq!(r.headers.get("content-length"), None);
    assert_eq!(r.raw_content.as_deref(), Some(&b"body"[..]));
}
