//! `intercept` (and a `breakpoints` rule that holds) makes flows wait for the web UI:
//! `waylay web` takes it, plain `waylay` refuses it (a held flow could never be resumed),
//! with one line and exit code 2.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

fn waylay(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the waylay binary runs")
}

#[test]
fn intercept_is_refused_without_the_web_ui() {
    let out = waylay(&["-p", "0", "--set", "intercept=~q"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("waylay: error: option intercept:") && err.contains("waylay web"),
        "{err}"
    );
}

#[test]
fn breakpoint_rules_are_checked_and_hold_rules_need_the_web_ui() {
    let out = waylay(&[
        "-p",
        "0",
        "--set",
        "breakpoints=|~q|request|resume|status:500",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("waylay: error: option breakpoints:") && err.contains("at position 19"),
        "{err}"
    );
    let out = waylay(&["-p", "0", "--set", "breakpoints=|~q|request|hold"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("waylay web"), "{err}");
    // Resume rules need no UI; `--options` shows them as set.
    let out = waylay(&[
        "--set",
        "breakpoints=|~q|request|resume|header:X-A=1",
        "--options",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("header:X-A=1"), "{listing}");
}

#[test]
fn waylay_web_lists_intercept_as_a_real_option() {
    let out = waylay(&["web", "--set", "intercept=~u /x", "--options"]);
    assert_eq!(out.status.code(), Some(0));
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("intercept:"))
        .unwrap_or_else(|| panic!("no intercept in {listing}"));
    assert!(line.contains("~u /x"), "{line}");
    assert!(!listing.contains("web_intercept"), "{listing}");
}

/// The first line of `r` (within 20 s) containing `marker`, from after it.
fn line_after(r: impl std::io::Read + Send + 'static, marker: &'static str) -> String {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if let Some(i) = line.find(marker) {
                let _ = tx.send(line[i + marker.len()..].trim().to_owned());
                return;
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("never printed {marker:?}"))
}

#[test]
fn waylay_web_r_loads_a_flow_file_into_the_ui() {
    use std::io::{Read, Write};
    let dir = waylay_testkit::TempDir::new("web-rfile");
    let file = dir.path().join("in.flows");
    let mut w = waylay::flowfile::FlowWriter::new(std::fs::File::create(&file).unwrap());
    for p in ["/one", "/two"] {
        let mut f = waylay_testkit::tflow();
        f.request.path = p.into();
        f.live = false;
        w.add(&waylay::Flow::Http(Box::new(f))).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let mut child = Command::new(BIN)
        .args(["web", "-p", "0", "--web-port", "0", "-r"])
        .arg(&file)
        .arg("--set")
        .arg(format!("confdir={}", dir.path().display()))
        .arg("--set")
        .arg(format!(
            "web_store={}",
            dir.path().join("s.sqlite").display()
        ))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = line_after(child.stdout.take().unwrap(), "Web server listening at ");
    let (addr, token) = url
        .trim_start_matches("http://")
        .split_once("/?token=")
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET /flows HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        if answer.contains("/two") || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        body.contains("\"/one\"") && body.contains("\"/two\""),
        "{body}"
    );
}
