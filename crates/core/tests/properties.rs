//! Property tests: parsers never panic, and serialisation is stable.

use bytes::Bytes;
use proptest::prelude::*;
use waylay_core::flow::split_host_port;
use waylay_core::options::parse_size;
use waylay_core::{Headers, Options};

fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}"
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #[test]
    fn headers_survive_a_serde_round_trip(
        pairs in proptest::collection::vec((header_name(), header_value()), 0..16)
    ) {
        let h = Headers::from_pairs(pairs.into_iter().map(|(n, v)| (n, Bytes::from(v))));
        let json = serde_json::to_string(&h).unwrap();
        let back: Headers = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, h);
    }

    #[test]
    fn split_host_port_never_panics(s in "\\PC{0,40}", default in any::<u16>()) {
        if let Some((host, _)) = split_host_port(&s, default) {
            prop_assert!(!host.is_empty());
        }
    }

    /// The byte-level split agrees with the one it replaced (`str` methods, `u16::from_str`)
    /// on any text, and on text made of the characters that matter to it.
    #[test]
    fn split_host_port_agrees_with_the_str_version(
        s in "\\PC{0,40}|[ \t\\[\\]:+0-9a-f.\u{a0}\u{3000}]{0,24}|\
              [ \u{a0}]?\\[?[0-9a-f:.]{0,8}\\]?(:\\+?[0-9]{0,6})?[ \u{3000}]?",
        default in any::<u16>(),
    ) {
        let expected = reference_split(&s, default).map(|(h, p)| (h.to_owned(), p));
        let got = split_host_port(&s, default).map(|(h, p)| (h.to_string(), p));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn split_host_port_reads_what_it_formats(
        host in "[a-z0-9.-]{1,20}|[0-9a-f:]{2,20}",
        port in any::<u16>(),
    ) {
        let formatted = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        prop_assert_eq!(split_host_port(&formatted, 1), Some((host.into(), port)));
    }

    #[test]
    fn parse_size_never_panics(s in "\\PC{0,24}") {
        let _ = parse_size(&s);
    }

    #[test]
    fn parse_size_reads_numbers_with_units(n in 0u64..1 << 30, unit in "[bkmgBKMG]?") {
        let mult = match unit.to_ascii_lowercase().as_str() {
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => 1,
        };
        prop_assert_eq!(parse_size(&format!("{n}{unit}")), Ok(n * mult));
    }

    #[test]
    fn option_specs_never_panic(spec in "\\PC{0,40}") {
        let mut o = Options::new();
        let before = o.clone();
        if o.set_specs(&[spec.as_str()]).is_err() {
            prop_assert_eq!(o, before);
        }
    }
}

/// `split_host_port` as it was written with `str` methods (the reference for the property
/// above).
fn reference_split(authority: &str, default: u16) -> Option<(&str, u16)> {
    let a = authority.trim();
    if a.is_empty() {
        return None;
    }
    if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        if h.is_empty() {
            return None;
        }
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default,
            None => return None,
        };
        return Some((h, port));
    }
    match a.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => Some((a, default)),
        Some((h, p)) if !h.is_empty() => Some((h, p.parse().ok()?)),
        Some(_) => None,
        None => Some((a, default)),
    }
}
