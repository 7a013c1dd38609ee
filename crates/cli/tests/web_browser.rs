//! `waylay web` end to end in a real browser: Debian's Chromium driven by Playwright for
//! Python (`tests/web_e2e.py`), with curl sending traffic through the proxy. Screenshots go
//! to `target/web-e2e/`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use waylay_testkit::TempDir;
use waylay_testkit::peers::{playwright_python, program};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line of `lines` (within 20 s) that contains `marker`, from that marker on.
fn wait_line(rx: &mpsc::Receiver<String>, marker: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("waylay web never printed {marker:?}"));
        if let Some(i) = line.find(marker) {
            return line[i + marker.len()..].trim().to_owned();
        }
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn the_page_shows_live_flows_filters_and_intercepts_with_edits() {
    let (Some(chromium), Some(python), Some(_curl)) =
        (program("chromium"), playwright_python(), program("curl"))
    else {
        return;
    };
    let conf = TempDir::new("web-e2e");
    let mut child = Command::new(BIN)
        .args(["web", "-p", "0", "--web-port", "0", "--set"])
        .arg(format!("confdir={}", conf.path().display()))
        // The store in the test's folder: the child is killed, so it cannot remove a
        // temporary store itself.
        .arg("--set")
        .arg(format!(
            "web_store={}",
            conf.path().join("flows.sqlite").display()
        ))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waylay web starts");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    let _running = Running(child);
    let url = wait_line(&out, "Web server listening at ");
    // The log line carries the listener's mode after the address (`... mode=regular`).
    let proxy = wait_line(&err, "proxy listening at http://");
    let proxy = proxy
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(url.contains("/?token="), "{url}");

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-e2e");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web_e2e.py");
    let result = Command::new(python)
        .arg(script)
        .arg(&url)
        .arg(&proxy)
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
