//! The benches that measure a proxy in its own process (`idle`, `soak`, `proxy_load`): the
//! bench binary re-runs itself as the child, which announces its address on stdout and exits
//! when the parent closes its stdin; the parent holds it in a [`KillOnDrop`] (the testkit's).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

pub use waylay_testkit::KillOnDrop;

/// The environment variable `name` parsed as `T`, or `default` when unset or unparsable.
#[must_use]
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// In the child: exits the process when the parent closes its stdin (or dies), so no orphan
/// keeps a core busy, and a wrapping tool (massif, heaptrack) sees a normal exit and writes
/// its profile.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}

/// In the child: prints `line` (its address, or addresses separated by a space) on stdout
/// and flushes it, for [`spawn_announced`] in the parent.
pub fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Spawns `cmd` (stdin and stdout piped, stderr inherited) and waits up to `within` for the
/// line it [`announce`]s: the first of at most `max_lines` stdout lines whose first word is
/// an address (a wrapping tool may print lines of its own first). Returns the guard, that
/// address and the line's second word when it is an address too.
///
/// # Panics
///
/// When the child cannot be spawned, says nothing in time, or prints no address;
/// `what` names it in the message.
pub fn spawn_announced(
    cmd: &mut Command,
    what: &str,
    max_lines: usize,
    within: Duration,
) -> (KillOnDrop, SocketAddr, Option<SocketAddr>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take();
    let guard = KillOnDrop(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let mut r = std::io::BufReader::new(out);
            for _ in 0..max_lines.max(1) {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if first_addr(&line).is_some() {
                    break;
                }
            }
        }
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what} announces its address within {} s", within.as_secs()));
    let addr =
        first_addr(&line).unwrap_or_else(|| panic!("{what} printed {line:?}, not an address"));
    let second = line.split_whitespace().nth(1).and_then(|w| w.parse().ok());
    (guard, addr, second)
}

fn first_addr(line: &str) -> Option<SocketAddr> {
    line.split_whitespace().next()?.parse().ok()
}
