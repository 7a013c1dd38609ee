//! Between hyper's types and waylay's flow model.

use http::header::HeaderMap;
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

/// A header map as flow headers (order of first appearance, duplicates kept): kept as hyper
/// parsed it, no field is copied until an addon changes one.
pub(crate) fn headers_from(map: HeaderMap) -> Headers {
    Headers::from_http(map)
}

/// Builds a header map from flow headers (a clone of hyper's when nobody changed them);
/// fields that are not valid HTTP are skipped with a debug log (an addon wrote them).
pub(crate) fn headers_to(h: &Headers) -> HeaderMap {
    h.to_http(|name| tracing::debug!(header = name, "dropping invalid header field"))
}

/// [`headers_to`] for flow headers that are not needed afterwards (moved, not cloned, when
/// nobody changed them).
pub(crate) fn headers_into(h: Headers) -> HeaderMap {
    h.into_http(|name| tracing::debug!(header = name, "dropping invalid header field"))
}
