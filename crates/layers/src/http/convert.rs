//! Between hyper's types and waylay's flow model.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use waylay_core::flow::{Headers, HttpVersion};

/// The version of a hyper message in flow terms.
pub(crate) fn version_of(v: http::Version) -> HttpVersion {
    match v {
        http::Version::HTTP_10 | http::Version::HTTP_09 => HttpVersion::Http10,
        http::Version::HTTP_2 => HttpVersion::Http2,
        http::Version::HTTP_3 => HttpVersion::Http3,
        _ => HttpVersion::Http11,
    }
}

/// Copies a header map into flow headers (order of first appearance, duplicates kept).
pub(crate) fn headers_from(map: &HeaderMap) -> Headers {
    let mut h = Headers::with_capacity(map.len());
    for (name, value) in map {
        h.append(name.as_str(), Bytes::copy_from_slice(value.as_bytes()));
    }
    h
}

/// Builds a header map from flow headers; fields that are not valid HTTP are skipped with
/// a debug log (an addon wrote them).
pub(crate) fn headers_to(h: &Headers) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(h.len());
    for (name, value) in h.iter() {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => tracing::debug!(header = name, "dropping invalid header field"),
        }
    }
    map
}
