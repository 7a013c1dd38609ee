//! `waylay web` end to end in a real browser: Debian's Chromium driven by Playwright for
//! Python (`tests/web_e2e.py`), with curl sending traffic through the proxy. Screenshots go
//! to `target/web-e2e/`.

use std::process::Command;

use waylay_testkit::peers::{playwright_python, program};
use waylay_testkit::{TempDir, WaylayWeb};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

#[test]
fn the_page_shows_live_flows_filters_and_intercepts_with_edits() {
    let (Some(chromium), Some(python), Some(_curl)) =
        (program("chromium"), playwright_python(), program("curl"))
    else {
        return;
    };
    let conf = TempDir::new("web-e2e");
    let web = WaylayWeb::start(BIN, &conf);
    let (url, proxy) = (&web.url, &web.proxy);
    assert!(url.contains("/?token="), "{url}");

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-e2e");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web_e2e.py");
    let result = Command::new(python)
        .arg(script)
        .arg(url)
        .arg(proxy)
        .arg(&chromium)
        .arg(&artifacts)
        .output()
        .expect("the Playwright script runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
