//! Between hyper's types and waylay's flow model, and the hop-by-hop rules of a proxy.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use waylay_core::flow::{Headers, HttpVersion};

/// Hop-by-hop headers a proxy never forwards (RFC 9110 §7.6.1), plus `Proxy-*` headers meant
/// for waylay itself. `Trailer` is end to end (it names the trailer fields, and hyper sends
/// only the trailers it names).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "transfer-encoding",
    "upgrade",
];

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

/// Removes hop-by-hop headers, including those named by `Connection`. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (WebSocket handshakes).
pub(crate) fn strip_hop_by_hop(map: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<String> = map
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for t in listed {
        if keep_upgrade && t == "upgrade" {
            continue;
        }
        map.remove(t.as_str());
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (*name == "upgrade" || *name == "connection") {
            continue;
        }
        if *name == "te" {
            // `TE: trailers` is the one value HTTP/2 allows and gRPC needs.
            let trailers_only = map.get_all("te").iter().all(|v| {
                v.to_str()
                    .is_ok_and(|s| s.trim().eq_ignore_ascii_case("trailers"))
            });
            if trailers_only {
                continue;
            }
        }
        map.remove(*name);
    }
    if keep_upgrade {
        map.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
}

/// Whether a response to `method` with `status` has no body by definition.
pub(crate) fn bodiless(method: &str, status: u16) -> bool {
    method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
}
