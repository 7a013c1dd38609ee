//! Header rules of a proxy: what is hop-by-hop and never forwarded, and which responses
//! have no body.

use http::header::{HeaderMap, HeaderValue};

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

/// Whether `name` (lowercase, as a header map holds it) is in [`HOP_BY_HOP`].
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those named by `Connection`. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (WebSocket handshakes).
pub(crate) fn strip_hop_by_hop(map: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none or one: one look at the names present (no name parsed or
    // hashed) instead of a removal per listed name.
    if !keep_upgrade && !map.keys().any(|n| is_hop_by_hop(n.as_str())) {
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        m
    }

    fn names(m: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = m.keys().map(http::HeaderName::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_go() {
        let mut m = map(&[
            ("host", "a"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("trailer", "x-sum"),
            ("x-end", "2"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(names(&m), ["host", "trailer", "x-end"]);
    }

    #[test]
    fn the_fast_check_knows_every_hop_by_hop_name() {
        for n in HOP_BY_HOP {
            assert!(is_hop_by_hop(n), "{n}");
        }
        assert!(!is_hop_by_hop("host"));
        let mut m = map(&[("host", "a"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(names(&m), ["accept", "host"]);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut m = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(names(&m), ["te"]);
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_connection_upgrade() {
        let mut m = map(&[
            ("connection", "Upgrade, x-private"),
            ("upgrade", "websocket"),
            ("x-private", "1"),
        ]);
        strip_hop_by_hop(&mut m, true);
        assert_eq!(names(&m), ["connection", "upgrade"]);
        assert_eq!(
            m.get("connection").map(HeaderValue::as_bytes),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn bodiless_responses() {
        assert!(bodiless("HEAD", 200));
        assert!(bodiless("GET", 204));
        assert!(bodiless("GET", 304));
        assert!(bodiless("GET", 101));
        assert!(!bodiless("GET", 200));
        assert!(!bodiless("POST", 404));
    }

    proptest! {
        #[test]
        fn random_connection_values_never_panic_and_leave_no_hop_by_hop(v in "[ -~]{0,64}", upgrade in any::<bool>()) {
            let Ok(value) = HeaderValue::from_str(&v) else { return Ok(()) };
            let mut m = HeaderMap::new();
            m.insert(http::header::CONNECTION, value);
            m.insert(http::header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            strip_hop_by_hop(&mut m, upgrade);
            prop_assert!(!m.contains_key(http::header::TRANSFER_ENCODING));
            prop_assert_eq!(m.contains_key(http::header::CONNECTION), upgrade);
        }
    }
}
