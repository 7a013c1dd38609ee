//! Tests that need a network namespace of their own (nftables rules, `--mode transparent`):
//! the test binary runs the one test again inside `unshare --net`, where it may change
//! routing and firewall rules without touching the machine's.

use std::process::{Command, Stdio};

use crate::peers::{in_ci, program};

/// Set in the namespace's copy of the test: it runs the inner part.
const INSIDE: &str = "WAYLAY_TEST_IN_NETNS";

/// Runs the test named `name` again, alone, inside a new network namespace, and checks that
/// it passed and printed `done_marker` (its last line: proof that the inner part ran).
/// Returns `true` in the namespace's copy (the caller then runs the inner part), `false` in
/// the outer one once the copy has passed, or when `unshare` or one of `programs` is missing
/// on a developer's machine (skipped, as [`program`] does; under CI that is a failure), or
/// the namespace cannot be created there (skipped with a line).
///
/// ```no_run
/// // The body of `#[test] fn nft_redirect()`:
/// if waylay_testkit::rerun_in_netns("nft_redirect", &["nft", "ip"], "netns: checked") {
///     waylay_testkit::run_program("ip", &["link", "set", "lo", "up"], None);
///     // ... the inner part, on this namespace's loopback ...
///     println!("netns: checked");
/// }
/// ```
///
/// # Panics
///
/// When the copy fails or does not print `done_marker`, or (under CI) a program is missing
/// or the namespace cannot be created.
#[must_use]
pub fn rerun_in_netns(name: &str, programs: &[&str], done_marker: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let Some(unshare) = program("unshare") else {
        return false;
    };
    for p in programs {
        if program(p).is_none() {
            return false;
        }
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(unshare)
        .args(["--net", "--"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && stderr.contains("unshare failed") && !in_ci() {
        eprintln!("skipped: cannot create a network namespace here: {stderr}");
        return false;
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(done_marker), "{stdout}\n{stderr}");
    false
}

/// Runs the peer program `program_name` (found by [`program`]) with `args`, writing `stdin`
/// to it when given, and waits for it; it must succeed (`ip link set lo up`, `nft -f -`).
///
/// # Panics
///
/// When the program is missing, cannot be run, or fails.
pub fn run_program(program_name: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let bin = program(program_name).expect("checked outside");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    assert!(
        child.wait().expect("wait").success(),
        "{program_name} {args:?}"
    );
}
