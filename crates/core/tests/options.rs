//! Options: parsing `name=value` specs, with clear errors.

use waylay_core::options::{OptionType, parse_size};
use waylay_core::{OptionSpec, OptionValue, Options, OptionsError};

#[test]
fn defaults_are_mitmproxys_with_a_loopback_listen_host() {
    let o = Options::new();
    assert_eq!(o.str("listen_host"), Some("127.0.0.1"));
    assert_eq!(o.int("listen_port"), 8080);
    assert!(!o.bool("ssl_insecure"));
    assert_eq!(o.seq("mode"), ["regular"]);
    assert_eq!(o.size("stream_large_bodies"), Some(1 << 20));
    assert_eq!(o.size("body_size_limit"), None);
    let listing = o.listing();
    assert!(
        listing.contains("listen_port: int (default: 8080)"),
        "{listing}"
    );
    assert!(listing.contains("[choices: eager, lazy]"), "{listing}");
}

#[test]
fn unknown_names_suggest_the_closest_known_one() {
    let o = Options::new();
    let err = o.parse_specs(&["listen_prot=1"]).unwrap_err();
    assert_eq!(
        err,
        OptionsError::Unknown {
            name: "listen_prot".into(),
            suggestion: Some("listen_port".into()),
        }
    );
    assert_eq!(
        err.to_string(),
        r#"unknown option "listen_prot" (did you mean "listen_port"?)"#
    );
    let err = o.parse_specs(&["zzzzzzzzzzzzzzzzzzzz=1"]).unwrap_err();
    assert_eq!(err.to_string(), r#"unknown option "zzzzzzzzzzzzzzzzzzzz""#);
}

#[test]
fn bad_values_say_what_was_expected() {
    let mut o = Options::new();
    let err = o.set_specs(&["listen_port=eighty"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bad value "eighty" for option listen_port: expected an integer"#
    );
    let err = o.set_specs(&["ssl_insecure=maybe"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bad value "maybe" for option ssl_insecure: expected true or false"#
    );
    let err = o.set_specs(&["connection_strategy=sometimes"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bad value "sometimes" for option connection_strategy: expected one of eager, lazy"#
    );
    let err = o.set_specs(&["listen_port"]).unwrap_err();
    assert_eq!(err, OptionsError::BadSpec("listen_port".into()));
    let err = o.set_specs(&["=1"]).unwrap_err();
    assert_eq!(err, OptionsError::BadSpec("=1".into()));
    // Nothing was set by the failed calls.
    assert_eq!(o, Options::new());
}

#[test]
fn a_bad_spec_among_good_ones_sets_nothing() {
    let mut o = Options::new();
    assert!(o.set_specs(&["listen_port=1", "http2=nah"]).is_err());
    assert_eq!(o.int("listen_port"), 8080);
}

#[test]
fn booleans_sequences_and_optional_strings() {
    let mut o = Options::new();
    let changed = o
        .set_specs(&[
            "ssl_insecure",
            "http2=off",
            "ignore_hosts=a\\.test",
            "ignore_hosts=b\\.test:443",
            "body_size_limit=10m",
            "connection_strategy=lazy",
        ])
        .unwrap();
    // ignore_hosts named twice is one change holding both values.
    assert_eq!(changed.len(), 5);
    assert!(o.bool("ssl_insecure"));
    assert!(!o.bool("http2"));
    assert_eq!(o.seq("ignore_hosts"), ["a\\.test", "b\\.test:443"]);
    assert_eq!(o.size("body_size_limit"), Some(10 << 20));
    assert_eq!(o.str("connection_strategy"), Some("lazy"));

    // `name=` clears optional strings and sequences; values keep `=` after the first.
    let changed = o
        .set_specs(&["body_size_limit=", "ignore_hosts=", "confdir=/a=b"])
        .unwrap();
    assert_eq!(changed.len(), 3);
    assert_eq!(o.str("body_size_limit"), None);
    assert!(o.seq("ignore_hosts").is_empty());
    assert_eq!(o.str("confdir"), Some("/a=b"));

    // Setting the current value again is not a change.
    assert!(o.set_specs(&["listen_port=8080"]).unwrap().is_empty());
}

#[test]
fn addon_options_and_conflicting_declarations() {
    let mut o = Options::new();
    o.add(OptionSpec::new(
        "myaddon_level",
        OptionValue::Int(3),
        "Level.",
    ))
    .unwrap();
    o.add(OptionSpec::optional("myaddon_path", "Path."))
        .unwrap();
    // The same name and type again is fine (the first declaration stays).
    o.add(OptionSpec::new(
        "myaddon_level",
        OptionValue::Int(9),
        "Again.",
    ))
    .unwrap();
    assert_eq!(o.int("myaddon_level"), 3);
    let err = o
        .add(OptionSpec::new(
            "myaddon_level",
            OptionValue::Bool(true),
            "Other type.",
        ))
        .unwrap_err();
    assert_eq!(
        err,
        OptionsError::Conflict {
            name: "myaddon_level".into(),
            existing: OptionType::Int,
            new: OptionType::Bool,
        }
    );
    o.set_specs(&["myaddon_level=5", "myaddon_path=/tmp/x"])
        .unwrap();
    assert_eq!(
        (o.int("myaddon_level"), o.str("myaddon_path")),
        (5, Some("/tmp/x"))
    );
    // `set` checks the type.
    assert!(
        o.set("myaddon_level", OptionValue::Str("5".into()))
            .is_err()
    );
}

#[test]
fn parse_size_accepts_mitmproxy_sizes() {
    assert_eq!(parse_size("1024"), Ok(1024));
    assert_eq!(parse_size("512b"), Ok(512));
    assert_eq!(parse_size("1k"), Ok(1024));
    assert_eq!(parse_size("3M"), Ok(3 << 20));
    assert_eq!(parse_size(" 2g "), Ok(2 << 30));
    for bad in ["", "k", "1x", "-1k", "1.5m", "99999999999999999999"] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
    assert!(
        parse_size("99999999999g")
            .unwrap_err()
            .contains("too large")
    );
}

#[test]
fn setting_intercept_turns_intercept_active_on_and_off_as_mitmproxy() {
    let mut o = Options::new();
    let changed = o.set_specs(&["intercept=~q"]).unwrap();
    assert!(o.bool("intercept_active"));
    assert!(changed.contains("intercept_active"));
    // The toggle alone turns it off (a change now), the filter stays.
    let changed = o.set_specs(&["intercept_active=false"]).unwrap();
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        ["intercept_active"]
    );
    assert_eq!(o.str("intercept"), Some("~q"));
    // Both given: the toggle as given wins.
    o.set_specs(&["intercept=~s", "intercept_active=false"])
        .unwrap();
    assert!(!o.bool("intercept_active"));
    o.set_specs(&["intercept="]).unwrap();
    assert!(!o.bool("intercept_active"));
}

#[test]
fn a_value_equal_to_the_default_still_counts_as_given() {
    let mut o = Options::new();
    assert!(!o.is_given("listen_port"));
    let changed = o.set_specs(&["listen_port=8080"]).unwrap();
    assert!(changed.is_empty());
    assert!(o.is_given("listen_port"));
    assert!(!o.is_given("listen_host"));
    assert!(!o.is_given("no_such_option"));
}

#[test]
fn optional_ints_take_a_number_or_none() {
    let mut o = Options::new();
    o.add(OptionSpec::new(
        "limit",
        OptionValue::OptInt(None),
        "A limit.",
    ))
    .expect("a new option");
    assert_eq!(o.get("limit"), Some(&OptionValue::OptInt(None)));
    assert!(
        o.listing().contains("limit: optional int (default: None)"),
        "{}",
        o.listing()
    );
    for (text, want) in [("7", Some(7)), ("-3", Some(-3)), ("None", None), ("", None)] {
        o.set_specs(&[format!("limit={text}")]).expect(text);
        assert_eq!(o.get("limit"), Some(&OptionValue::OptInt(want)), "{text}");
    }
    let err = o.parse_specs(&["limit=seven"]).unwrap_err();
    assert!(err.to_string().contains("an integer or None"), "{err}");
    assert_eq!(
        OptionValue::parse(OptionType::OptInt, " 12 "),
        Ok(OptionValue::OptInt(Some(12)))
    );
}
