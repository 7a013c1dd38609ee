//! The `--mode` spec grammar and route URLs: fixtures, errors, and properties.

use proptest::prelude::*;
use waylay_core::Request;
use waylay_core::flow::{Address, HttpVersion, Server};
use waylay_core::{
    Credentials, Mode, ModeSpec, ModeSpecError, ProxyScheme, ReverseScheme, ReverseTarget,
    UpstreamProxy, Via, parse_modes,
};

fn spec(s: &str) -> ModeSpec {
    ModeSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> ModeSpecError {
    ModeSpec::parse(s).expect_err(s)
}

#[test]
fn modes_without_data_and_their_default_ports() {
    for (s, mode, port) in [
        ("regular", Mode::Regular, 8080),
        ("transparent", Mode::Transparent, 8080),
        ("socks5", Mode::Socks5, 1080),
        ("SOCKS5", Mode::Socks5, 1080),
    ] {
        let m = spec(s);
        assert_eq!(m.mode, mode);
        assert_eq!(m.listen_port, None);
        assert_eq!(m.listen_port_or(None), port);
        assert_eq!(m.listen_port_or(Some(9999)), 9999);
    }
}

#[test]
fn listen_suffixes() {
    let m = spec("regular@1234");
    assert_eq!(
        (m.listen_host.as_deref(), m.listen_port),
        (None, Some(1234))
    );
    assert_eq!(m.listen_port_or(Some(9999)), 1234);
    let m = spec("socks5@127.0.0.1:1081");
    assert_eq!(m.mode, Mode::Socks5);
    assert_eq!(m.listen_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(m.listen_port, Some(1081));
    assert_eq!(m.listen_host_or("0.0.0.0"), "127.0.0.1");
    let m = spec("regular@[::1]:8080");
    assert_eq!(m.listen_host.as_deref(), Some("::1"));
    assert_eq!(m.to_string(), "regular@[::1]:8080");
    let m = spec("regular@:8080");
    assert_eq!(m.listen_host.as_deref(), Some(""));
    assert_eq!(m.to_string(), "regular@:8080");
    assert_eq!(spec("transparent@0").listen_port, Some(0));
}

#[test]
fn reverse_targets() {
    let m = spec("reverse:https://example.com@127.0.0.1:8443");
    assert_eq!(
        m.mode,
        Mode::Reverse(ReverseTarget {
            scheme: ReverseScheme::Https,
            address: Address::new("example.com", 443),
        })
    );
    assert_eq!(m.listen_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(m.listen_port, Some(8443));
    assert_eq!(
        m.to_string(),
        "reverse:https://example.com:443@127.0.0.1:8443"
    );

    let t = |s: &str| match spec(s).mode {
        Mode::Reverse(t) => (t.scheme, t.address.to_string()),
        other => panic!("{other:?}"),
    };
    assert_eq!(t("reverse:http://h"), (ReverseScheme::Http, "h:80".into()));
    assert_eq!(
        t("reverse:example.org"),
        (ReverseScheme::Https, "example.org:443".into())
    );
    assert_eq!(
        t("reverse:tcp://10.0.0.1:22/"),
        (ReverseScheme::Tcp, "10.0.0.1:22".into())
    );
    assert_eq!(
        t("reverse:tls://[::1]:993"),
        (ReverseScheme::Tls, "[::1]:993".into())
    );
    assert_eq!(
        t("reverse:HTTP://h:81@8080"),
        (ReverseScheme::Http, "h:81".into())
    );
}

fn reverse(s: &str) -> ReverseTarget {
    match spec(s).mode {
        Mode::Reverse(t) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn reverse_rewrites_requests_to_its_target() {
    let t = reverse("reverse:https://api.example.com");
    assert_eq!(t.host_header(), "api.example.com");
    assert_eq!(reverse("reverse:http://h:8080").host_header(), "h:8080");
    assert_eq!(reverse("reverse:http://[::1]").host_header(), "[::1]");
    assert_eq!(
        reverse("reverse:https://[::1]:8443").host_header(),
        "[::1]:8443"
    );

    let mut r = Request::new("GET", "http", "127.0.0.1", 8080, "/x");
    r.headers.insert("Host", "127.0.0.1:8080");
    let mut kept = r.clone();
    t.apply(&mut r, false);
    assert_eq!(
        (r.scheme.as_str(), r.host.as_str(), r.port),
        ("https", "api.example.com", 443)
    );
    assert_eq!(r.headers.get("host"), Some("api.example.com"));
    assert_eq!(r.url(), "https://api.example.com/x");
    // keep_host_header: the destination changes, the Host header does not.
    t.apply(&mut kept, true);
    assert_eq!(kept.host, "api.example.com");
    assert_eq!(kept.headers.get("host"), Some("127.0.0.1:8080"));

    // HTTP/2: the :authority is rewritten, no Host header is added.
    let mut h2 = Request::new("GET", "https", "localhost", 8443, "/");
    h2.http_version = HttpVersion::Http2;
    h2.authority = "localhost:8443".into();
    reverse("reverse:http://origin.internal:81").apply(&mut h2, false);
    assert_eq!(h2.authority, "origin.internal:81");
    assert_eq!(h2.scheme, "http");
    assert_eq!(h2.headers.get("host"), None);
}

#[test]
fn reverse_refusals_say_why() {
    for s in [
        "reverse:dns://1.1.1.1",
        "reverse:udp://h:53",
        "reverse:quic://h",
    ] {
        let e = err(s);
        assert!(matches!(e, ModeSpecError::Unsupported(_)), "{s}: {e:?}");
        assert!(e.to_string().contains("not supported by waylay"), "{e}");
    }
    assert!(matches!(
        err("reverse:tcp://h"),
        ModeSpecError::MissingPort(_)
    ));
    assert_eq!(
        err("reverse:tls://h").to_string(),
        "tls:// needs a port (tls://HOST:PORT)"
    );
    assert!(matches!(
        err("reverse:ftp://h"),
        ModeSpecError::BadScheme { .. }
    ));
    assert!(matches!(
        err("reverse"),
        ModeSpecError::MissingData("reverse")
    ));
    assert!(matches!(
        err("reverse:"),
        ModeSpecError::MissingData("reverse")
    ));
    assert!(matches!(
        err("reverse:http://h/path"),
        ModeSpecError::BadUrl(_)
    ));
    assert!(matches!(
        err("reverse:http://h:99999"),
        ModeSpecError::BadPort(_)
    ));
    assert!(matches!(
        err("reverse:http://bad host"),
        ModeSpecError::BadHost(_)
    ));
    assert!(matches!(
        err("reverse:http://h@notaport"),
        ModeSpecError::BadPort(_)
    ));
}

#[test]
fn upstream_proxies() {
    let up = |s: &str| match spec(s).mode {
        Mode::Upstream(p) => p,
        other => panic!("{other:?}"),
    };
    let p = up("upstream:http://proxy:3128");
    assert_eq!(
        (p.scheme, p.address.to_string()),
        (ProxyScheme::Http, "proxy:3128".into())
    );
    assert_eq!(p.credentials, None);
    assert_eq!(up("upstream:proxy").address.port, 80);
    assert_eq!(up("upstream:https://proxy").address.port, 443);
    assert_eq!(up("upstream:socks5://proxy").address.port, 1080);

    let p = up("upstream:socks5://al%40ice:p%3Ass@proxy:1081");
    assert_eq!(p.scheme, ProxyScheme::Socks5);
    assert_eq!(p.address, Address::new("proxy", 1081));
    assert_eq!(
        p.credentials,
        Some(Credentials {
            username: "al@ice".into(),
            password: "p:ss".into()
        })
    );
    // The password never shows in Debug output.
    assert!(!format!("{p:?}").contains("p%3Ass"), "{p:?}");
    assert!(!format!("{:?}", p.credentials).contains("p:ss"));

    // One `@` then a bare port: the listen port (mitmproxy's form).
    let m = spec("upstream:http://proxy:3128@8081");
    assert_eq!(m.listen_port, Some(8081));
    assert_eq!(up("upstream:http://proxy:3128@8081").credentials, None);
    // One `@` then host:port: credentials.
    let m = spec("upstream:socks5://u:1234@proxy:1080");
    assert_eq!(m.listen_port, None);
    // Both.
    let m = spec("upstream:socks5://u:p@proxy:1080@127.0.0.1:1081");
    assert_eq!(m.listen_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(m.listen_port, Some(1081));
    // A listen host for an upstream without credentials: end the URL with `/`.
    let m = spec("upstream:http://proxy:3128/@127.0.0.1:8081");
    assert_eq!(m.listen_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(m.to_string(), "upstream:http://proxy:3128/@127.0.0.1:8081");

    assert!(matches!(
        err("upstream:ftp://p:1"),
        ModeSpecError::BadScheme { .. }
    ));
    assert!(matches!(
        err("upstream:socks5://nopass@p:1"),
        ModeSpecError::BadCredentials(_)
    ));
    assert!(
        !err("upstream:socks5://u:secret%zz@p:1")
            .to_string()
            .contains("secret")
    );
}

#[test]
fn other_modes_and_junk_are_refused() {
    assert!(matches!(err("wireguard"), ModeSpecError::Unsupported(_)));
    assert!(matches!(err("dns@53"), ModeSpecError::Unsupported(_)));
    assert!(matches!(err("socks4"), ModeSpecError::UnknownMode(_)));
    assert!(matches!(err(""), ModeSpecError::UnknownMode(_)));
    assert!(matches!(
        err("socks5:foo"),
        ModeSpecError::UnexpectedData { .. }
    ));
    assert!(matches!(err("regular@"), ModeSpecError::BadPort(_)));
    assert!(matches!(err("regular@65536"), ModeSpecError::BadPort(_)));
    assert!(matches!(err("regular@-1"), ModeSpecError::BadPort(_)));
    assert!(matches!(
        err("regular@bad host:1"),
        ModeSpecError::BadHost(_)
    ));
}

#[test]
fn via_urls() {
    assert_eq!(Via::parse("direct"), Ok(Via::Direct));
    let v = Via::parse("socks5://u:p@127.0.0.1:1080").unwrap();
    assert_eq!(v.to_string(), "socks5://u:p@127.0.0.1:1080");
    let p = v.proxy().unwrap();
    assert_eq!(p.credentials.as_ref().unwrap().username, "u");
    let v = Via::parse("https://proxy.example").unwrap();
    assert_eq!(v.to_string(), "https://proxy.example:443");
    // A route must say its scheme.
    assert!(Via::parse("proxy:3128").is_err());
    assert!(Via::parse("dns://h:53").is_err());
}

#[test]
fn a_server_via_survives_serde_and_defaults_to_none() {
    let mut s = Server::new(Address::new("example.com", 443));
    s.via = Some(Via::parse("http://u:p%20w@10.0.0.1:3128").unwrap());
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["via"], "http://u:p%20w@10.0.0.1:3128");
    let back: Server = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, s);

    let mut old = json;
    old.as_object_mut().unwrap().remove("via");
    let back: Server = serde_json::from_value(old).unwrap();
    assert_eq!(back.via, None);
}

#[test]
fn credentials_from_upstream_auth() {
    let c = Credentials::parse("user:pa:ss").unwrap();
    assert_eq!(
        (c.username.as_str(), c.password.as_str()),
        ("user", "pa:ss")
    );
    assert!(Credentials::parse("nocolon").is_err());
}

#[test]
fn several_modes_need_distinct_listen_addresses() {
    let modes = parse_modes(
        &["regular@8080", "socks5", "reverse:https://example.com@8443"],
        "127.0.0.1",
        None,
    )
    .unwrap();
    let ports: Vec<u16> = modes.iter().map(|m| m.listen_port_or(None)).collect();
    assert_eq!(ports, [8080, 1080, 8443]);

    // `regular` and `transparent` both default to 8080.
    let e = parse_modes(&["regular", "transparent"], "", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "modes regular and transparent would both listen on :8080: give one another @port"
    );
    // The listen_port option applies to every mode without its own port.
    assert!(parse_modes(&["regular", "socks5"], "", Some(9000)).is_err());
    assert!(parse_modes(&["regular", "socks5"], "", None).is_ok());
    // Different hosts may share a port; all interfaces clashes with any host.
    assert!(parse_modes(&["regular@127.0.0.1:80", "socks5@127.0.0.2:80"], "", None).is_ok());
    assert!(parse_modes(&["regular@:80", "socks5@127.0.0.2:80"], "", None).is_err());
    // Port 0 (any free port) never clashes.
    assert!(parse_modes(&["regular@0", "socks5@0"], "", None).is_ok());
    // A bad spec is reported as such.
    assert!(matches!(
        parse_modes(&["regular", "bogus"], "", None),
        Err(ModeSpecError::UnknownMode(_))
    ));
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_-]{1,12}(\\.[a-z0-9-]{1,8}){0,3}",
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
    ]
}

fn credentials() -> impl Strategy<Value = Option<Credentials>> {
    proptest::option::of(
        ("\\PC{0,8}", "\\PC{0,8}")
            .prop_map(|(username, password)| Credentials { username, password }),
    )
}

fn mode() -> impl Strategy<Value = Mode> {
    let scheme = prop_oneof![
        Just(ReverseScheme::Http),
        Just(ReverseScheme::Https),
        Just(ReverseScheme::Tls),
        Just(ReverseScheme::Tcp),
    ];
    let proxy = prop_oneof![
        Just(ProxyScheme::Http),
        Just(ProxyScheme::Https),
        Just(ProxyScheme::Socks5),
    ];
    prop_oneof![
        Just(Mode::Regular),
        Just(Mode::Transparent),
        Just(Mode::Socks5),
        (scheme, host(), any::<u16>()).prop_map(|(scheme, h, p)| Mode::Reverse(ReverseTarget {
            scheme,
            address: Address::new(h, p)
        })),
        (proxy, host(), any::<u16>(), credentials()).prop_map(|(scheme, h, p, credentials)| {
            Mode::Upstream(UpstreamProxy {
                scheme,
                address: Address::new(h, p),
                credentials,
            })
        }),
    ]
}

fn mode_spec() -> impl Strategy<Value = ModeSpec> {
    let listen = prop_oneof![
        Just((None, None)),
        any::<u16>().prop_map(|p| (None, Some(p))),
        (prop_oneof![host(), Just(String::new())], any::<u16>())
            .prop_map(|(h, p)| (Some(h), Some(p))),
    ];
    (mode(), listen).prop_map(|(mode, (listen_host, listen_port))| ModeSpec {
        mode,
        listen_host,
        listen_port,
    })
}

#[test]
fn the_listen_suffix_rule() {
    use waylay_core::mode::split_listen;
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("regular", "regular", None),
        ("regular@8081", "regular", Some("8081")),
        (
            "reverse:https://example.com@127.0.0.1:8443",
            "reverse:https://example.com",
            Some("127.0.0.1:8443"),
        ),
        // Credentials: a lone `@` followed by more than a port.
        (
            "upstream:socks5://u:p@proxy:1080",
            "upstream:socks5://u:p@proxy:1080",
            None,
        ),
        (
            "UPSTREAM:http://u:p@proxy:3128",
            "UPSTREAM:http://u:p@proxy:3128",
            None,
        ),
        // A bare port after a lone `@`: the listen port.
        (
            "upstream:http://proxy:3128@8081",
            "upstream:http://proxy:3128",
            Some("8081"),
        ),
        // The authority closed by `/`: the listen address.
        (
            "upstream:http://proxy:3128/@127.0.0.1:8081",
            "upstream:http://proxy:3128/",
            Some("127.0.0.1:8081"),
        ),
        // Two: credentials, then the listen address.
        (
            "upstream:socks5://u:p@proxy:1080@127.0.0.1:1081",
            "upstream:socks5://u:p@proxy:1080",
            Some("127.0.0.1:1081"),
        ),
        (
            "upstream:u:p@proxy@8081",
            "upstream:u:p@proxy",
            Some("8081"),
        ),
        ("upstream@8080", "upstream", Some("8080")),
    ];
    for (spec, head, listen) in cases {
        assert_eq!(split_listen(spec), (*head, *listen), "{spec}");
    }
    let m = spec("upstream:socks5://u:p@proxy:1080@127.0.0.1:1081");
    assert_eq!(m.listen_port, Some(1081));
    assert!(matches!(&m.mode, Mode::Upstream(p) if p.credentials.is_some()));
}

/// mitmproxy's rule: the last `@` starts the listen suffix.
fn mitmproxy_split(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once('@') {
        Some((head, listen)) if !head.is_empty() => (head, Some(listen)),
        _ => (spec, None),
    }
}

proptest! {
    #[test]
    fn split_listen_never_panics_and_cuts_at_an_at(s in "\\PC{0,60}") {
        match waylay_core::mode::split_listen(&s) {
            (head, Some(listen)) => prop_assert_eq!(format!("{head}@{listen}"), s),
            (head, None) => prop_assert_eq!(head, s.as_str()),
        }
    }

    #[test]
    fn outside_upstream_the_split_is_mitmproxys(
        s in "(regular|reverse|socks5|transparent|Reverse)(:[a-z]{0,5}://)?[a-z0-9:@/.]{0,24}"
    ) {
        prop_assert_eq!(waylay_core::mode::split_listen(&s), mitmproxy_split(&s));
    }

    #[test]
    fn upstream_credentials_never_read_as_a_listen_address(
        scheme in prop_oneof![Just("http"), Just("https"), Just("socks5")],
        user in "[a-z0-9%]{1,8}",
        pass in "[a-z0-9%]{0,8}",
        h in host(),
        p in any::<u16>(),
        listen in proptest::option::of((proptest::option::of(host()), any::<u16>())),
    ) {
        let authority = if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") };
        let head = format!("upstream:{scheme}://{user}:{pass}@{authority}");
        let listen = listen.map(|(lh, lp)| match lh {
            Some(lh) if lh.contains(':') => format!("[{lh}]:{lp}"),
            Some(lh) => format!("{lh}:{lp}"),
            None => lp.to_string(),
        });
        let spec = match &listen {
            Some(l) => format!("{head}@{l}"),
            None => head.clone(),
        };
        prop_assert_eq!(waylay_core::mode::split_listen(&spec), (head.as_str(), listen.as_deref()));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,60}") {
        let _ = ModeSpec::parse(&s);
        let _ = Via::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_spec_shaped_input(
        s in "(regular|reverse|upstream|socks5|transparent)(:[a-z0-9]{0,6}://)?[a-z0-9:@%/\\[\\].]{0,30}"
    ) {
        if let Ok(m) = ModeSpec::parse(&s) {
            let printed = m.to_string();
            prop_assert_eq!(ModeSpec::parse(&printed), Ok(m), "{} -> {}", s, printed);
        }
    }

    #[test]
    fn print_then_parse_is_stable(m in mode_spec()) {
        let printed = m.to_string();
        prop_assert_eq!(ModeSpec::parse(&printed), Ok(m), "{}", printed);
    }

    #[test]
    fn via_print_then_parse_is_stable(
        scheme in prop_oneof![Just(ProxyScheme::Http), Just(ProxyScheme::Https), Just(ProxyScheme::Socks5)],
        h in host(),
        p in any::<u16>(),
        credentials in credentials(),
    ) {
        let via = Via::Proxy(UpstreamProxy { scheme, address: Address::new(h, p), credentials });
        prop_assert_eq!(Via::parse(&via.to_string()), Ok(via.clone()));
        let json = serde_json::to_string(&via).unwrap();
        prop_assert_eq!(serde_json::from_str::<Via>(&json).unwrap(), via);
    }
}

/// The listen suffix of specs mitmproxy 12 also accepts is read as mitmproxy reads it
/// (`ProxyMode.parse` run in its own Python).
#[test]
fn listen_suffixes_agree_with_mitmproxy() {
    let Some(python) = waylay_testkit::peers::mitmproxy_python() else {
        return;
    };
    let specs = [
        "regular@8081",
        "regular@127.0.0.1:8082",
        "socks5@1081",
        "reverse:https://example.com@127.0.0.1:8443",
        "reverse:tcp://example.com:22@2222",
        "reverse:http://127.0.0.1:8000",
        "upstream:http://proxy.test:3128@8083",
        "upstream:https://proxy.test:3128",
    ];
    let script = "import sys\nfrom mitmproxy.proxy.mode_specs import ProxyMode\n\
                  for s in sys.argv[1:]:\n    m = ProxyMode.parse(s)\n    \
                  print(m.custom_listen_host or '', m.custom_listen_port or '')";
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(specs)
        .output()
        .expect("run mitmproxy's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
    for (s, line) in specs.iter().zip(theirs.lines()) {
        let m = spec(s);
        let ours = format!(
            "{} {}",
            m.listen_host.unwrap_or_default(),
            m.listen_port.map(|p| p.to_string()).unwrap_or_default()
        );
        assert_eq!(ours, line, "{s}");
    }
    assert_eq!(theirs.lines().count(), specs.len(), "{theirs}");
}
