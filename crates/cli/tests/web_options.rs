//! `intercept` is the web UI's option: `waylay web` takes it, plain `waylay` refuses it
//! (a held flow could never be resumed), with one line and exit code 2.

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
