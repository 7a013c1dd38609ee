//! The onboarding page through the real addon manager: which requests it answers, the
//! certificate downloads, and bad `onboarding_host` values.

use waylay_addons::Onboarding;
use waylay_core::HttpFlow;
use waylay_core::flow::Request;
use waylay_testkit::{AddonHarness, TempDir, tflow};

fn get(url: &str) -> HttpFlow {
    let mut f = tflow();
    f.request = Request::from_url("GET", url).expect("test setup");
    f
}

/// A confdir holding the two certificate files with recognisable contents, and a harness
/// pointing at it.
async fn harness(dir: &TempDir, specs: &[&str]) -> AddonHarness {
    let mut h = AddonHarness::new(Onboarding::new()).await;
    let mut all = vec![format!("confdir={}", dir.path().display())];
    all.extend(specs.iter().map(|s| (*s).to_owned()));
    h.set_options(&all).await.expect("test setup");
    h
}

fn write_ca(dir: &TempDir) -> (Vec<u8>, Vec<u8>) {
    // A real certificate, so that the PKCS#12 download can be built from it.
    let cert =
        rcgen::generate_simple_self_signed(vec!["waylay test CA".into()]).expect("test setup");
    let ca = cert.cert.der().to_vec();
    let pem = cert.cert.pem();
    std::fs::write(dir.path().join("waylay-ca-cert.pem"), &pem).expect("test setup");
    std::fs::write(dir.path().join("waylay-ca-cert.cer"), &ca).expect("test setup");
    (pem.into_bytes(), ca)
}

#[actix_rt::test]
async fn the_page_is_answered_by_the_addon_with_the_three_links() {
    let dir = TempDir::new("onboarding");
    write_ca(&dir);
    let mut h = harness(&dir, &[]).await;
    let f = h.request_headers(get("http://mitm.it/")).await;
    let resp = f.response.expect("answered, not forwarded");
    assert_eq!(resp.status_code, 200);
    assert_eq!(
        resp.headers.get("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = resp.text().unwrap();
    for link in ["/cert/pem", "/cert/cer", "/cert/p12"] {
        assert!(page.contains(&format!("href=\"{link}\"")), "{link}");
    }
    for platform in ["Linux", "macOS", "Windows", "Android", "iOS", "Firefox"] {
        assert!(page.contains(&format!("<h2>{platform}</h2>")), "{platform}");
    }
}

#[actix_rt::test]
async fn the_certificate_downloads_are_the_confdir_files() {
    let dir = TempDir::new("onboarding");
    let (pem, der) = write_ca(&dir);
    let mut h = harness(&dir, &[]).await;

    let resp = h
        .request_headers(get("http://mitm.it/cert/pem"))
        .await
        .response
        .unwrap();
    assert_eq!(resp.status_code, 200);
    assert_eq!(resp.raw_content.as_deref(), Some(pem.as_slice()));
    assert_eq!(
        resp.headers.get("content-disposition"),
        Some("attachment; filename=\"waylay-ca-cert.pem\"")
    );
    let resp = h
        .request_headers(get("http://mitm.it/cert/cer"))
        .await
        .response
        .unwrap();
    assert_eq!(resp.raw_content.as_deref(), Some(der.as_slice()));

    let resp = h
        .request_headers(get("http://mitm.it/cert/p12"))
        .await
        .response
        .unwrap();
    assert_eq!(resp.status_code, 200);
    assert_eq!(
        resp.headers.get("content-type"),
        Some("application/x-pkcs12")
    );
    let p12 = resp.raw_content.clone().unwrap();
    let store =
        p12_keystore::KeyStore::from_pkcs12(&p12, "", p12_keystore::Pkcs12ImportPolicy::Relaxed)
            .unwrap();
    let certs: Vec<Vec<u8>> = store
        .entries()
        .filter_map(|(_, e)| match e {
            p12_keystore::KeyStoreEntry::Certificate(c) => Some(c.as_der().to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(
        certs,
        vec![der],
        "the PKCS#12 file holds the CA certificate only"
    );

    let resp = h
        .request_headers(get("http://mitm.it/nope"))
        .await
        .response
        .unwrap();
    assert_eq!(resp.status_code, 404);
}

#[actix_rt::test]
async fn mitmproxys_certificate_is_offered_when_confdir_holds_its_ca() {
    let dir = TempDir::new("onboarding");
    std::fs::write(dir.path().join("mitmproxy-ca-cert.pem"), "mitm pem").unwrap();
    let mut h = harness(&dir, &[]).await;
    let resp = h
        .request_headers(get("http://mitm.it/cert/pem"))
        .await
        .response
        .unwrap();
    assert_eq!(resp.raw_content.as_deref(), Some(&b"mitm pem"[..]));
    assert_eq!(
        resp.headers.get("content-disposition"),
        Some("attachment; filename=\"mitmproxy-ca-cert.pem\"")
    );
    // No DER file: a clear 404, not a panic.
    let resp = h
        .request_headers(get("http://mitm.it/cert/cer"))
        .await
        .response
        .unwrap();
    assert_eq!(resp.status_code, 404);
    assert!(resp.text().unwrap().contains("no CA certificate"));
}

#[actix_rt::test]
async fn other_hosts_pass_and_the_page_can_be_turned_off_or_moved() {
    let dir = TempDir::new("onboarding");
    write_ca(&dir);
    let mut h = harness(&dir, &[]).await;
    assert!(
        h.request_headers(get("http://example.com/"))
            .await
            .response
            .is_none()
    );
    // The Host header decides (as mitmproxy's pretty_host), whatever the destination.
    let mut f = get("http://127.0.0.1:1/");
    f.request.headers.insert("host", "MITM.IT");
    assert!(h.request_headers(f).await.response.is_some());

    h.set_options(&["onboarding=false"]).await.unwrap();
    assert!(
        h.request_headers(get("http://mitm.it/"))
            .await
            .response
            .is_none()
    );

    h.set_options(&["onboarding=true", "onboarding_host=ca.test"])
        .await
        .unwrap();
    assert!(
        h.request_headers(get("http://mitm.it/"))
            .await
            .response
            .is_none()
    );
    assert_eq!(
        h.request_headers(get("http://ca.test/"))
            .await
            .response
            .unwrap()
            .status_code,
        200
    );
}

#[actix_rt::test]
async fn a_bad_onboarding_host_is_refused_and_the_old_one_kept() {
    let dir = TempDir::new("onboarding");
    write_ca(&dir);
    let mut h = harness(&dir, &[]).await;
    let err = h
        .set_options(&["onboarding_host=a b/c"])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "option onboarding_host: \"a b/c\" is not a host name");
    assert!(
        h.request_headers(get("http://mitm.it/"))
            .await
            .response
            .is_some()
    );
}
