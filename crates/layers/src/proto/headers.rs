//! Header rules of a proxy: what is hop-by-hop and never forwarded, and which responses
//! have no body.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Whether `name` is a hop-by-hop header a proxy never forwards (RFC 9110 §7.6.1), or a
/// `Proxy-*` header meant for waylay itself: `Connection`, `Proxy-Connection`, `Keep-Alive`,
/// `Proxy-Authorization`, `Proxy-Authenticate`, `TE`, `Transfer-Encoding`, `Upgrade`.
/// `Trailer` is end to end (it names the trailer fields, and hyper sends only the trailers it
/// names). The names `http` knows compare as its constants (no string compare); the two it
/// does not know, by their bytes.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    use http::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
    };
    name == CONNECTION
        || name == TRANSFER_ENCODING
        || name == TE
        || name == UPGRADE
        || name == PROXY_AUTHORIZATION
        || name == PROXY_AUTHENTICATE
        || matches!(name.as_str(), "proxy-connection" | "keep-alive")
}

/// Removes hop-by-hop headers, including those named by `Connection`, keeping the others
/// in the order they came. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive
/// (WebSocket handshakes).
pub(crate) fn strip_hop_by_hop(map: &mut HeaderMap, keep_upgrade: bool) {
    let keep = if keep_upgrade {
        Keep::Upgrade
    } else {
        Keep::Nothing
    };
    strip(map, keep);
}

/// [`strip_hop_by_hop`] for a response to an HTTP/1 client, except that the `close` option
/// stays (`Connection: close`, in its place): a server that closes its connection after the
/// response has the client's closed after it too (hyper's server closes after a response
/// carrying it), as mitmproxy does.
pub(crate) fn strip_hop_by_hop_keeping_close(map: &mut HeaderMap) {
    let keep = if connection_has(map, "close") {
        Keep::Close
    } else {
        Keep::Nothing
    };
    strip(map, keep);
}

/// Which connection option survives [`strip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Nothing,
    /// `Connection: upgrade` and the `Upgrade` field.
    Upgrade,
    /// `Connection: close`.
    Close,
}

/// The options of the `Connection` fields, lowercase, but for `keep-alive` and `upgrade`:
/// the fields they name are hop-by-hop anyway, so the common kept-alive message allocates
/// nothing here.
fn connection_options(map: &HeaderMap) -> Vec<String> {
    map.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !["keep-alive", "upgrade"]
                    .iter()
                    .any(|o| t.eq_ignore_ascii_case(o))
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Whether the `Connection` fields carry `option`.
fn connection_has(map: &HeaderMap, option: &str) -> bool {
    map.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(option))
}

fn strip(map: &mut HeaderMap, keep: Keep) {
    // Most messages carry no hop-by-hop field (then no `Connection` either, so no field is
    // named by one): one pass over the names, and nothing else to do. The pass also notes
    // whether `Connection` and `TE` are there: most messages with a hop-by-hop field carry
    // neither (a client's `Proxy-Connection`), and then neither is looked up.
    let (mut any, mut connection, mut te) = (false, false, false);
    for name in map.keys().filter(|n| is_hop_by_hop(n)) {
        any = true;
        connection |= name == http::header::CONNECTION;
        te |= name == http::header::TE;
    }
    if any {
        let listed = if connection {
            connection_options(map)
        } else {
            Vec::new()
        };
        // `TE: trailers` is the one value HTTP/2 allows and gRPC needs.
        let te_trailers_only = te
            && map.get_all(http::header::TE).iter().all(|v| {
                v.to_str()
                    .is_ok_and(|s| s.trim().eq_ignore_ascii_case("trailers"))
            });
        remove_in_order(map, |name| {
            if keep == Keep::Upgrade && name == http::header::UPGRADE {
                return false;
            }
            if listed.iter().any(|t| t == name.as_str()) {
                return true;
            }
            if (keep != Keep::Nothing && name == http::header::CONNECTION)
                || (name == http::header::TE && te_trailers_only)
            {
                return false;
            }
            is_hop_by_hop(name)
        });
    }
    // In place when the field is there (`insert` keeps an existing field's position).
    let value = match keep {
        Keep::Nothing => return,
        Keep::Upgrade => "upgrade",
        Keep::Close => "close",
    };
    map.insert(http::header::CONNECTION, HeaderValue::from_static(value));
}

/// Removes every field whose name `drop` picks, keeping the others in the order they came.
/// `HeaderMap::remove` moves the last field into the removed one's place, which would send
/// the client's (or the server's) fields in another order than they were received.
pub(crate) fn remove_in_order(map: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let Some(first) = map.keys().position(&drop) else {
        return;
    };
    // Every field from the first one to drop on goes (curl's and browsers' `Proxy-Connection`
    // is their last field): removing the map's last field moves no other, so they go one by
    // one from the end.
    if map.keys().skip(first + 1).all(&drop) {
        for _ in first..map.keys_len() {
            let Some(last) = map.keys().last().cloned() else {
                break;
            };
            map.remove(&last);
        }
        return;
    }
    if map.keys_len() - first <= SHORT_TAIL {
        remove_from_tail(map, first, drop);
    } else {
        rebuild_without(map, drop);
    }
}

/// Up to this many fields from the first one to drop to the end, taking them out and putting
/// the kept ones back costs less than building the map anew (measured with callgrind: a
/// server's `Connection: keep-alive` among its last fields, as nginx sends it).
const SHORT_TAIL: usize = 3;

/// Takes out the fields from index `first` on (those before it never move) and puts the
/// kept ones back in order.
fn remove_from_tail(map: &mut HeaderMap, first: usize, drop: impl Fn(&HeaderName) -> bool) {
    let tail: Vec<HeaderName> = map.keys().skip(first).cloned().collect();
    let mut kept: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for name in tail {
        let keep = !drop(&name);
        if let http::header::Entry::Occupied(e) = map.entry(name) {
            let (name, values) = e.remove_entry_mult();
            if keep {
                kept.extend(values.map(|v| (name.clone(), v)));
            }
        }
    }
    for (name, value) in kept {
        map.append(name, value);
    }
}

/// Builds the map anew without the fields `drop` picks.
fn rebuild_without(map: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let fields = std::mem::take(map);
    map.reserve(fields.len());
    let mut current: Option<HeaderName> = None;
    for (name, value) in fields {
        // `None`: another value of the previous name.
        if let Some(n) = name {
            current = Some(n);
        }
        if let Some(n) = &current
            && !drop(n)
        {
            map.append(n.clone(), value);
        }
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

    fn in_order(m: &HeaderMap) -> Vec<(&str, &str)> {
        m.iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap_or("?")))
            .collect()
    }

    /// The usual options are matched without a lowercase copy each (in any case); the
    /// fields they and the others name still go, and `close` still names a field.
    #[test]
    fn connection_options_in_any_case_remove_what_they_name() {
        let mut m = map(&[
            ("connection", "Keep-Alive, X-Private, UPGRADE"),
            ("keep-alive", "timeout=5"),
            ("x-private", "p"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(in_order(&m), [("x-kept", "1")]);
        assert!(connection_options(&map(&[("connection", "keep-alive, Upgrade")])).is_empty());
        assert_eq!(
            connection_options(&map(&[("connection", "Close, X-A")])),
            ["close", "x-a"]
        );
    }

    #[test]
    fn stripping_keeps_the_order_of_the_other_fields() {
        let mut m = map(&[
            ("x-first", "1"),
            ("connection", "keep-alive"),
            ("x-second", "2"),
            ("keep-alive", "timeout=5"),
            ("x-third", "3a"),
            ("x-third", "3b"),
            ("x-fourth", "4"),
            ("content-length", "0"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(
            in_order(&m),
            [
                ("x-first", "1"),
                ("x-second", "2"),
                ("x-third", "3a"),
                ("x-third", "3b"),
                ("x-fourth", "4"),
                ("content-length", "0"),
            ]
        );
    }

    #[test]
    fn a_hop_by_hop_field_near_the_end_goes_without_moving_the_others() {
        // nginx's order: the fields after `connection` are taken out and put back.
        let mut m = map(&[
            ("server", "nginx"),
            ("date", "d"),
            ("content-length", "2"),
            ("connection", "keep-alive"),
            ("accept-ranges", "bytes"),
            ("x-end", "1"),
            ("x-end", "2"),
        ]);
        strip_hop_by_hop(&mut m, false);
        assert_eq!(
            in_order(&m),
            [
                ("server", "nginx"),
                ("date", "d"),
                ("content-length", "2"),
                ("accept-ranges", "bytes"),
                ("x-end", "1"),
                ("x-end", "2"),
            ]
        );
    }

    #[test]
    fn an_upgrade_keeps_connection_in_its_place() {
        let mut m = map(&[
            ("host", "a"),
            ("connection", "Upgrade, x-private"),
            ("x-private", "1"),
            ("upgrade", "websocket"),
            ("x-last", "2"),
        ]);
        strip_hop_by_hop(&mut m, true);
        assert_eq!(
            in_order(&m),
            [
                ("host", "a"),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("x-last", "2"),
            ]
        );
    }

    #[test]
    fn a_responses_connection_close_stays_in_its_place() {
        let mut m = map(&[
            ("x-a", "1"),
            ("connection", "Keep-Alive, Close, x-private"),
            ("x-private", "p"),
            ("keep-alive", "timeout=5"),
            ("x-b", "2"),
        ]);
        strip_hop_by_hop_keeping_close(&mut m);
        assert_eq!(
            in_order(&m),
            [("x-a", "1"), ("connection", "close"), ("x-b", "2")]
        );
        let mut m = map(&[("x-a", "1"), ("connection", "keep-alive"), ("x-b", "2")]);
        strip_hop_by_hop_keeping_close(&mut m);
        assert_eq!(in_order(&m), [("x-a", "1"), ("x-b", "2")]);
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

        #[test]
        fn removing_keeps_the_rest_in_order(
            fields in proptest::collection::vec((0usize..6, "[a-z0-9]{0,4}"), 0..24),
            // Which of the names go (a bit each): one, several, trailing or not.
            gone in 0u8..64,
        ) {
            const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
            fn dropped(mask: u8, n: &HeaderName) -> bool {
                NAMES
                    .iter()
                    .position(|x| *x == n.as_str())
                    .is_some_and(|i| mask & (1 << i) != 0)
            }
            let mut m = HeaderMap::new();
            for (i, v) in &fields {
                m.append(NAMES[*i], HeaderValue::from_str(v).expect("value"));
            }
            let expected: Vec<(String, String)> = m
                .iter()
                .filter(|(n, _)| !dropped(gone, n))
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            remove_in_order(&mut m, |n| dropped(gone, n));
            let got: Vec<(String, String)> = m
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }
}
