//! What the process benches read of the proxy under test in `/proc` (Linux): memory, threads,
//! open file descriptors, CPU time.

use std::process::Command;

/// `/proc/<pid>/status` as text (empty when the process is gone).
#[must_use]
pub fn status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The number in the `name` line of a `/proc/<pid>/status` text (`VmRSS:` and `VmHWM:` are
/// in KiB, `Threads:` a count); 0 when absent.
#[must_use]
pub fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident set size of a process, in KiB (`VmRSS`; 0 when unknown).
#[must_use]
pub fn rss_kib(pid: u32) -> u64 {
    status_field(&status(pid), "VmRSS:")
}

/// Open file descriptors of `pid` (0 when unknown).
#[must_use]
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Open file descriptors of `pid`, and how many of them are sockets.
#[must_use]
pub fn fds_and_sockets(pid: u32) -> (u64, u64) {
    let (mut fds, mut sockets) = (0, 0);
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            fds += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
            {
                sockets += 1;
            }
        }
    }
    (fds, sockets)
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 if unknown).
#[must_use]
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in clock ticks.
#[must_use]
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses, may hold spaces); `rest` starts at
    // field 3, so utime (14) and stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    at(11) + at(12)
}
