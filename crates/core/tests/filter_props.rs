//! Property tests of the filter language: no input makes the parser or the matcher panic,
//! and printing a filter gives text that parses back to an equal filter.

use proptest::prelude::*;
use waylay_core::Filter;
use waylay_testkit::{FlowExt, tflow, tresp, ttcpflow, twebsocketflow};

/// Pieces that exercise every corner of the grammar, glued at random.
fn soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("~q".to_owned()),
        Just("~s".to_owned()),
        Just("~all".to_owned()),
        Just("~d".to_owned()),
        Just("~b".to_owned()),
        Just("~h".to_owned()),
        Just("~c".to_owned()),
        Just("~meta".to_owned()),
        Just("~".to_owned()),
        Just("!".to_owned()),
        Just("&".to_owned()),
        Just("|".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("\n".to_owned()),
        Just("200".to_owned()),
        "[a-z.*+?{}\\[\\]()^$|\\\\0-9,:=<>P#-]{1,6}",
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

/// A Python regex escape of arbitrary text (so it is always a valid regex).
fn py_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || !c.is_ascii() {
            out.push(c);
        } else if c == '\n' {
            out.push_str("\\n");
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
}

/// The text of a valid filter built from random parts.
fn expr() -> impl Strategy<Value = String> {
    let regex = prop_oneof![
        Just("example\\.com".to_owned()),
        Just("^GET$".to_owned()),
        Just("a{2,3}|b*?".to_owned()),
        Just("[^a-z]\\d+".to_owned()),
        Just("(?i:x)(?P<n>y)".to_owned()),
        "\\PC{0,8}".prop_map(|s| py_escape(&s)),
        "[ -~\\t\\n]{0,8}".prop_map(|s| py_escape(&s)),
    ];
    let quote = |r: String| {
        let mut q = String::from("\"");
        for c in r.chars() {
            match c {
                '\\' => q.push_str("\\\\"),
                '"' => q.push_str("\\\""),
                '\n' => q.push_str("\\n"),
                '\t' => q.push_str("\\t"),
                '\r' => q.push_str("\\r"),
                c => q.push(c),
            }
        }
        q.push('"');
        q
    };
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "~a",
            "~e",
            "~http",
            "~marked",
            "~replay",
            "~replayq",
            "~replays",
            "~q",
            "~s",
            "~tcp",
            "~udp",
            "~dns",
            "~websocket",
            "~all",
        ])
        .prop_map(str::to_owned),
        (
            prop::sample::select(vec![
                "~b", "~bq", "~bs", "~t", "~tq", "~ts", "~d", "~dst", "~h", "~hq", "~hs", "~m",
                "~src", "~u", "~meta", "~marker", "~comment",
            ]),
            regex
        )
            .prop_map(move |(op, r)| format!("{op} {}", quote(r))),
        (0u32..1000).prop_map(|c| format!("~c {c}")),
    ];
    let tree = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| format!("!({e} )")),
            inner.clone().prop_map(|e| format!("!{e}")),
            prop::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({} )", v.join(" & "))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| v.join(" & ")),
            prop::collection::vec(inner, 2..4).prop_map(|v| format!("({} )", v.join(" | "))),
        ]
    });
    // Expressions side by side ("and") only at the top level, as mitmproxy allows.
    prop::collection::vec(tree, 1..3).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(text in soup()) {
        if let Ok(filter) = Filter::parse(&text) {
            let printed = filter.to_string();
            let again = Filter::parse(&printed);
            prop_assert!(again.is_ok(), "{text:?} printed as {printed:?}: {again:?}");
            prop_assert_eq!(again.as_ref().ok(), Some(&filter), "{:?} -> {:?}", text, printed);
            for flow in [tflow(), tflow().with_response(tresp()), twebsocketflow()] {
                let _ = filter.matches(&flow);
            }
            let _ = filter.matches(&ttcpflow());
        }
    }

    #[test]
    fn random_bytes_never_panic(text in "\\PC{0,40}") {
        let _ = Filter::parse(&text);
    }

    #[test]
    fn print_then_parse_gives_an_equal_filter(text in expr()) {
        let filter = Filter::parse(&text);
        prop_assert!(filter.is_ok(), "{text:?}: {filter:?}");
        let filter = filter.unwrap_or_else(|_| unreachable!());
        let printed = filter.to_string();
        let again = Filter::parse(&printed);
        prop_assert_eq!(again.as_ref().ok(), Some(&filter), "{:?} -> {:?}: {:?}", text, printed, again);
        // The canonical form is a fixed point.
        prop_assert_eq!(again.map(|f| f.to_string()).ok(), Some(printed));
    }
}
