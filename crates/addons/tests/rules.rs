//! The rule-taking addons (modify_headers, modify_body, map_remote, map_local, block_list,
//! stickycookie, stickyauth) through the real addon manager: option parsing with any
//! separator, bad values refused with one line quoting the offending part (the old rules
//! kept), and what each does to flows.

use waylay_addons::{
    BlockList, MapLocal, MapRemote, ModifyBody, ModifyHeaders, StickyAuth, StickyCookie,
};
use waylay_core::flow::{Request, Response};
use waylay_core::{Addon, HttpFlow};
use waylay_testkit::{AddonHarness, FlowExt, TempDir, tflow, tresp};

async fn harness<A: Addon>(addon: A, specs: &[&str]) -> AddonHarness {
    let mut h = AddonHarness::new(addon).await;
    if !specs.is_empty() {
        h.set_options(specs).await.expect("valid options");
    }
    h
}

fn get(url: &str) -> HttpFlow {
    let mut f = tflow();
    f.request = Request::from_url("GET", url).expect("test setup");
    f
}

/// The refusal for `spec`, as one line.
async fn refused(h: &mut AddonHarness, spec: &str) -> String {
    let e = h.set_options(&[spec]).await.expect_err(spec).to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

// modify_headers

#[actix_rt::test]
async fn modify_headers_sets_replaces_and_removes_with_any_separator() {
    let mut h = harness(
        ModifyHeaders::new(),
        &[
            "modify_headers=/User-Agent/waylay",
            "modify_headers=:X-New:a/b|c",
            "modify_headers=;Accept;",
        ],
    )
    .await;
    let f = h.request_headers(tflow()).await;
    let hd = &f.request.headers;
    assert_eq!(hd.get("user-agent"), Some("waylay"));
    assert_eq!(hd.get("x-new"), Some("a/b|c"));
    assert!(!hd.contains("accept"), "an empty value removes the header");
    assert_eq!(hd.get("header"), Some("qvalue"), "others untouched");

    // The response side runs at responseheaders.
    let f = h.response_headers(tflow().with_response(tresp())).await;
    assert_eq!(
        f.response.unwrap().headers.get("user-agent"),
        Some("waylay")
    );
}

#[actix_rt::test]
async fn modify_headers_reads_at_files_and_python_escapes() {
    let dir = TempDir::new("mh");
    let file = dir.path().join("token");
    std::fs::write(&file, "from-file").unwrap();
    let at = format!("modify_headers=|X-Token|@{}", file.display());
    let mut h = harness(
        ModifyHeaders::new(),
        &[at.as_str(), r"modify_headers=/X-Esc/a\x41\tb"],
    )
    .await;
    let f = h.request_headers(tflow()).await;
    assert_eq!(f.request.headers.get("x-token"), Some("from-file"));
    assert_eq!(f.request.headers.get_bytes("x-esc"), Some(&b"aA\tb"[..]));
    // The file is read at each use.
    std::fs::write(&file, "changed").unwrap();
    let f = h.request_headers(tflow()).await;
    assert_eq!(f.request.headers.get("x-token"), Some("changed"));
}

#[actix_rt::test]
async fn modify_headers_refuses_bad_values_and_keeps_the_old_rules() {
    let mut h = harness(ModifyHeaders::new(), &["modify_headers=/X-A/1"]).await;
    let e = refused(&mut h, "modify_headers=/only").await;
    assert_eq!(
        e,
        "option modify_headers: cannot parse \"/only\": expected 2 or 3 parts separated by '/' (the first character), found 1"
    );
    let e = refused(&mut h, "modify_headers=/bad name/x").await;
    assert!(e.contains("\"bad name\" is not a header name"), "{e}");
    let e = refused(&mut h, "modify_headers=|X-A|@/nonexistent/file").await;
    assert!(e.contains("/nonexistent/file"), "{e}");
    let f = h.request_headers(tflow()).await;
    assert_eq!(f.request.headers.get("x-a"), Some("1"), "old rules kept");
}

// modify_body

#[actix_rt::test]
async fn modify_body_replaces_in_requests_and_responses() {
    let mut h = harness(
        ModifyBody::new(),
        &[
            "modify_body=/con.ent/CHANGED",
            r"modify_body=#mes+age#a\1$0|",
        ],
    )
    .await;
    let f = h.request(tflow()).await;
    assert_eq!(f.request.raw_content.as_deref(), Some(&b"CHANGED"[..]));
    assert_eq!(f.request.headers.get("content-length"), Some("7"));

    let f = h.response(tflow().with_response(tresp())).await;
    // The replacement is literal bytes after Python's escape decoding (`\1` is the octal
    // escape for byte 1), with no group expansion, as mitmproxy's.
    assert_eq!(
        f.response.unwrap().raw_content.as_deref(),
        Some(&b"a\x01$0|"[..])
    );
}

#[actix_rt::test]
async fn modify_body_matches_across_lines_and_keeps_the_encoding() {
    let mut h = harness(ModifyBody::new(), &["modify_body=/a.b/X"]).await;
    let mut resp = Response::make(200, "", [("content-type", "text/plain")]);
    resp.set_content("a\nb");
    resp.encode("gzip").unwrap();
    let f = h.response(tflow().with_response(resp)).await;
    let resp = f.response.unwrap();
    assert_eq!(resp.headers.get("content-encoding"), Some("gzip"));
    assert_eq!(resp.content().unwrap().as_ref(), b"X");
}

#[actix_rt::test]
async fn modify_body_refuses_a_bad_regex_in_one_line() {
    let mut h = harness(ModifyBody::new(), &[]).await;
    let e = refused(&mut h, "modify_body=/(/x").await;
    assert!(
        e.starts_with(
            "option modify_body: cannot parse \"/(/x\": invalid regular expression \"(\""
        ),
        "{e}"
    );
}

// map_remote

#[actix_rt::test]
async fn map_remote_rewrites_scheme_host_port_and_path_with_groups() {
    let mut h = harness(
        MapRemote::new(),
        &[r"map_remote=|https?://example\.com/(?P<rest>.*)|https://127.0.0.1:8443/mirror/\g<rest>?from=\g<0>"],
    )
    .await;
    let f = h.request(get("http://example.com/a/b")).await;
    let r = &f.request;
    assert_eq!(
        (r.scheme.as_str(), r.host.as_str(), r.port, r.path.as_str()),
        (
            "https",
            "127.0.0.1",
            8443,
            "/mirror/a/b?from=http://example.com/a/b"
        )
    );
    assert_eq!(r.headers.get("host"), Some("127.0.0.1:8443"));

    let e = refused(&mut h, r"map_remote=:example.com:\1").await;
    assert!(e.contains("invalid group reference 1"), "{e}");
}

#[actix_rt::test]
async fn map_remote_numbered_groups_and_unmatched_urls() {
    let mut h = harness(
        MapRemote::new(),
        &[r"map_remote=|example\.(com)/(\w+)|example.org:81/\2-\1"],
    )
    .await;
    let f = h.request(get("http://example.com/path")).await;
    assert_eq!(f.request.url(), "http://example.org:81/path-com");
    let f = h.request(get("http://other.test/path")).await;
    assert_eq!(f.request.url(), "http://other.test/path");
}

#[actix_rt::test]
async fn map_remote_refuses_bad_regexes_and_escapes() {
    let mut h = harness(MapRemote::new(), &[]).await;
    let e = refused(&mut h, "map_remote=|[|x").await;
    assert!(e.contains("invalid regular expression \"[\""), "{e}");
    let e = refused(&mut h, r"map_remote=|a|\q").await;
    assert!(e.contains(r"bad escape \q"), "{e}");
}

// map_local

#[actix_rt::test]
async fn map_local_serves_files_directories_and_404() {
    let dir = TempDir::new("ml");
    let root = dir.path();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>root</h1>").unwrap();
    std::fs::write(root.join("app.js"), "let a;").unwrap();
    std::fs::write(root.join("sub/index.html"), "sub index").unwrap();
    std::fs::write(root.join("a b.css"), "body{}").unwrap();
    let spec = format!("map_local=|example.com/static|{}", root.display());
    let mut h = harness(MapLocal::new(), &[spec.as_str()]).await;

    let resp = |f: HttpFlow| f.response.expect("answered locally");
    let r = resp(h.request(get("http://example.com/static/app.js?v=1")).await);
    assert_eq!(
        (r.status_code, r.raw_content.as_deref()),
        (200, Some(&b"let a;"[..]))
    );
    assert_eq!(r.headers.get("content-type"), Some("text/javascript"));
    let r = resp(h.request(get("http://example.com/static/")).await);
    assert_eq!(r.raw_content.as_deref(), Some(&b"<h1>root</h1>"[..]));
    assert_eq!(r.headers.get("content-type"), Some("text/html"));
    let r = resp(h.request(get("http://example.com/static/sub")).await);
    assert_eq!(r.raw_content.as_deref(), Some(&b"sub index"[..]));
    let r = resp(h.request(get("http://example.com/static/a%20b.css")).await);
    assert_eq!(r.headers.get("content-type"), Some("text/css"));
    let r = resp(
        h.request(get("http://example.com/static/missing.png"))
            .await,
    );
    assert_eq!(r.status_code, 404);
    // Not matching: forwarded as is.
    assert!(
        h.request(get("http://example.org/static/app.js"))
            .await
            .response
            .is_none()
    );
}

#[actix_rt::test]
async fn map_local_never_leaves_its_directory() {
    let dir = TempDir::new("ml");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(dir.path().join("secret"), "secret").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
    let spec = format!("map_local=|example.com/|{}", root.display());
    let mut h = harness(MapLocal::new(), &[spec.as_str()]).await;
    for url in [
        "http://example.com/../secret",
        "http://example.com/%2e%2e/secret",
        "http://example.com/x/..%2f..%2fsecret",
        "http://example.com/link",
    ] {
        let r = h.request(get(url)).await.response;
        assert!(
            r.as_ref().is_none_or(|r| r.status_code == 404),
            "{url} served {:?}",
            r.map(|r| r.raw_content.clone())
        );
    }
}

#[actix_rt::test]
async fn map_local_a_single_file_and_a_missing_path() {
    let dir = TempDir::new("ml");
    let file = dir.path().join("fixed.json");
    std::fs::write(&file, "{}").unwrap();
    let spec = format!("map_local=|api|{}", file.display());
    let mut h = harness(MapLocal::new(), &[spec.as_str()]).await;
    let r = h
        .request(get("http://example.com/api/anything"))
        .await
        .response
        .unwrap();
    assert_eq!(r.raw_content.as_deref(), Some(&b"{}"[..]));
    assert_eq!(r.headers.get("content-type"), Some("application/json"));

    let e = refused(&mut h, "map_local=|api|/does/not/exist").await;
    assert!(e.contains("invalid file path \"/does/not/exist\""), "{e}");
}

// block_list, stickycookie, stickyauth: their options are filters.

#[actix_rt::test]
async fn block_list_refuses_bad_values() {
    let mut h = harness(BlockList::new(), &[]).await;
    let e = refused(&mut h, "block_list=/~all").await;
    assert!(e.contains("expected 2 parts"), "{e}");
    let e = refused(&mut h, "block_list=/~all/nope").await;
    assert!(e.contains("invalid HTTP status code \"nope\""), "{e}");
    let e = refused(&mut h, "block_list=/~all/99").await;
    assert!(e.contains("\"99\""), "{e}");
    assert!(h.request(tflow()).await.response.is_none());
}

#[actix_rt::test]
async fn block_list_answers_with_the_status_or_kills_for_444() {
    let mut h = harness(
        BlockList::new(),
        &["block_list=/~d ads\\.test/404", "block_list=|~u /track|444"],
    )
    .await;
    let f = h.request(get("http://ads.test/banner")).await;
    let r = f.response.as_ref().expect("blocked with a response");
    assert_eq!(
        (r.status_code, r.raw_content.as_deref()),
        (404, Some(&b""[..]))
    );
    assert_eq!(
        f.metadata.get("blocklisted"),
        Some(&serde_json::Value::Bool(true))
    );

    let f = h.request(get("http://example.com/track/me")).await;
    assert!(f.killed(), "444 closes without a response");
    assert!(f.response.is_none());

    let f = h.request(get("http://example.com/fine")).await;
    assert!(f.response.is_none() && !f.killed());
    assert!(!f.metadata.contains_key("blocklisted"));

    let e = refused(&mut h, "block_list=/~nonsense/404").await;
    assert!(e.contains("invalid filter expression \"~nonsense\""), "{e}");
}

#[actix_rt::test]
async fn rules_with_filters_apply_to_matching_flows_only() {
    let mut h = harness(
        ModifyHeaders::new(),
        &["modify_headers=/~q/X-Req/1", "modify_headers=/~s/X-Resp/1"],
    )
    .await;
    let f = h.request_headers(tflow()).await;
    assert_eq!(f.request.headers.get("x-req"), Some("1"));
    assert!(!f.request.headers.contains("x-resp"));
    let f = h.response_headers(tflow().with_response(tresp())).await;
    let r = f.response.unwrap();
    assert_eq!(r.headers.get("x-resp"), Some("1"));
    assert!(!r.headers.contains("x-req"));

    let mut h = harness(
        MapRemote::new(),
        &[r"map_remote=|~m POST|example\.com|example.org"],
    )
    .await;
    assert_eq!(
        h.request(get("http://example.com/")).await.request.host,
        "example.com"
    );
    let mut post = get("http://example.com/");
    post.request.method = "POST".into();
    assert_eq!(h.request(post).await.request.host, "example.org");
}

#[actix_rt::test]
async fn stickycookie_replays_cookies_set_by_the_server() {
    let mut h = harness(StickyCookie::new(), &["stickycookie=~d example.com"]).await;
    let mut resp = tresp();
    resp.headers.append("set-cookie", "id=abc; Path=/");
    resp.headers.append("set-cookie", "lang=en");
    h.response(tflow().with_response(resp)).await;

    let f = h.request(tflow()).await;
    assert_eq!(f.request.headers.get("cookie"), Some("id=abc; lang=en"));
    assert_eq!(
        f.metadata.get("stickycookie"),
        Some(&serde_json::Value::Bool(true))
    );
    // Another host, or a request the filter does not match, gets nothing.
    assert!(
        !h.request(get("http://other.test/"))
            .await
            .request
            .headers
            .contains("cookie")
    );

    // A cookie set expired leaves the jar.
    let mut resp = tresp();
    resp.headers.append("set-cookie", "id=gone; Max-Age=0");
    h.response(tflow().with_response(resp)).await;
    let f = h.request(tflow()).await;
    assert_eq!(f.request.headers.get("cookie"), Some("lang=en"));

    let e = refused(&mut h, "stickycookie=~d (").await;
    assert!(
        e.starts_with("option stickycookie: invalid filter expression"),
        "{e}"
    );
}

#[actix_rt::test]
async fn stickyauth_replays_the_last_authorization_per_host() {
    let mut h = harness(StickyAuth::new(), &["stickyauth=~d example.com"]).await;
    let mut f = tflow();
    f.request.headers.insert("authorization", "Basic dTpw");
    h.request(f).await;
    let f = h.request(tflow()).await;
    assert_eq!(f.request.headers.get("authorization"), Some("Basic dTpw"));
    // A request carrying its own keeps it (and it becomes the remembered one).
    let mut f = tflow();
    f.request.headers.insert("authorization", "Bearer new");
    assert_eq!(
        h.request(f).await.request.headers.get("authorization"),
        Some("Bearer new")
    );
    let f = h.request(tflow()).await;
    assert_eq!(f.request.headers.get("authorization"), Some("Bearer new"));
    assert!(
        !h.request(get("http://other.test/"))
            .await
            .request
            .headers
            .contains("authorization")
    );
}

#[actix_rt::test]
async fn sticky_addons_do_nothing_until_set() {
    let mut h = AddonHarness::with_addons((StickyCookie::new(), StickyAuth::new())).await;
    let mut resp = tresp();
    resp.headers.append("set-cookie", "id=1");
    h.response(tflow().with_response(resp)).await;
    let f = h.request(tflow()).await;
    assert!(!f.request.headers.contains("cookie"));
}

/// Each rule addon handles its flow hooks only while it has rules (the sticky ones: while
/// their filter is set), so a proxy that registers them all keeps its flowless path until an
/// option is set, at start or at run time, and again once it is cleared.
#[actix_rt::test]
async fn rule_addons_handle_flow_hooks_only_while_they_have_rules() {
    use waylay_core::HookKind::{Request, RequestHeaders, Response, ResponseHeaders};
    let cases: Vec<(AddonHarness, &str, &str, Vec<waylay_core::HookKind>)> = vec![
        (
            AddonHarness::new(BlockList::new()).await,
            "block_list",
            "/~q/404",
            vec![Request],
        ),
        (
            AddonHarness::new(MapRemote::new()).await,
            "map_remote",
            "|a|b",
            vec![Request],
        ),
        (
            AddonHarness::new(MapLocal::new()).await,
            "map_local",
            "|a|.",
            vec![Request],
        ),
        (
            AddonHarness::new(ModifyBody::new()).await,
            "modify_body",
            "/a/b",
            vec![Request, Response],
        ),
        (
            AddonHarness::new(ModifyHeaders::new()).await,
            "modify_headers",
            "/x/y",
            vec![RequestHeaders, ResponseHeaders],
        ),
        (
            AddonHarness::new(StickyAuth::new()).await,
            "stickyauth",
            "~q",
            vec![Request],
        ),
        (
            AddonHarness::new(StickyCookie::new()).await,
            "stickycookie",
            "~q",
            vec![Request, Response],
        ),
    ];
    let all = [RequestHeaders, Request, ResponseHeaders, Response];
    for (mut h, option, value, hooks) in cases {
        assert!(all.iter().all(|k| !h.handles(*k)), "{option} idle");
        h.set_options(&[format!("{option}={value}")])
            .await
            .expect(option);
        for k in all {
            assert_eq!(h.handles(k), hooks.contains(&k), "{option} set: {k:?}");
        }
        h.set_options(&[format!("{option}=")]).await.expect(option);
        assert!(all.iter().all(|k| !h.handles(*k)), "{option} cleared");
    }
}
