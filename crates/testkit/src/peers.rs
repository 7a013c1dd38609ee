//! Real peers the end-to-end tests talk to: programs from Debian's packages (curl, tinyproxy,
//! danted, haproxy, nft, h2load, chromium) and mitmproxy and Playwright from PyPI, installed by `scripts/peers.sh`.
//!
//! A test asks for a peer and gets `None` when it is missing on a developer's machine (the
//! test then returns early, after one line on stderr saying what to install). Under `CI=true`
//! a missing peer panics instead: CI installs every peer, so a missing one is a broken
//! install, never a reason to skip.

use std::path::{Path, PathBuf};

/// True when running under CI (`CI` set to anything but `false`/`0`/empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reports a missing peer: panics under CI, otherwise prints a skip line and returns `None`.
fn missing<T>(what: &str, hint: &str) -> Option<T> {
    if in_ci() {
        panic!("peer {what} is missing under CI ({hint})");
    }
    eprintln!("skipped: peer {what} is missing ({hint})");
    None
}

/// Finds a program on `PATH`, or in `/usr/sbin` and `/sbin` where Debian puts daemons.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A program from a Debian package (`program("tinyproxy")`), or `None` (skip) when missing.
pub fn program(name: &str) -> Option<PathBuf> {
    find_program(name).map_or_else(
        || missing(name, "run `source scripts/peers.sh && install_peers`"),
        Some,
    )
}

/// The Python of the venv holding mitmproxy 12.3.1 (`WAYLAY_MITMPROXY_PY`, set by
/// `scripts/peers.sh`), or `None` (skip) when it is not set up.
pub fn mitmproxy_python() -> Option<PathBuf> {
    env_path("WAYLAY_MITMPROXY_PY")
}

/// mitmproxy's `mitmdump` from the same venv (`WAYLAY_MITMDUMP`), or `None` (skip).
pub fn mitmdump() -> Option<PathBuf> {
    env_path("WAYLAY_MITMDUMP")
}

/// The Python of the venv holding Playwright (`WAYLAY_PLAYWRIGHT_PY`, set by
/// `scripts/peers.sh`; it drives Debian's Chromium), or `None` (skip).
pub fn playwright_python() -> Option<PathBuf> {
    env_path("WAYLAY_PLAYWRIGHT_PY")
}

fn env_path(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if is_executable(&p) => Some(p),
        _ => missing(
            var,
            "run the tests with `bash scripts/test.sh`, or `source scripts/peers.sh && install_peers`",
        ),
    }
}
