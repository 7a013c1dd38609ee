//! A program under test (the `waylay` binary) as a child process: a free port for it, a
//! bounded wait until it listens or prints a line, SIGTERM, and a kill when the test ends
//! however it ends.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::proxy::TempDir;

/// How long [`wait_listening`] waits for a port to accept.
const LISTEN_WITHIN: Duration = Duration::from_secs(30);
/// How long [`terminate`] waits for the child to exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(20);
/// How long [`Lines::wait_for`] waits for its line.
const LINE_WITHIN: Duration = Duration::from_secs(20);

/// A loopback port that was free when asked (bound on `127.0.0.1:0`, then released), for a
/// child's `-p` when the child cannot report the port it bound.
///
/// No port is handed out twice in one test process: two children started side by side (tests
/// run in parallel threads) could otherwise both be told the same port between its release
/// and their bind, and a peer that binds with `SO_REUSEPORT` (HAProxy does) would then share
/// it silently, taking the other test's connections.
///
/// # Panics
///
/// When no fresh ephemeral port can be bound (64 tries).
#[must_use]
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    // Ports already given stay bound here until a fresh one comes, so the kernel moves on.
    let mut held = Vec::new();
    for _ in 0..64 {
        let l = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
        let port = l.local_addr().expect("the bound address").port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return port;
        }
        held.push(l);
    }
    panic!("no fresh ephemeral port in 64 tries");
}

/// Waits (up to 30 s) until `127.0.0.1:port` accepts a connection.
///
/// # Panics
///
/// When `child` exits first, or the port does not accept in time.
pub fn wait_listening(child: &mut Child, port: u16) {
    let deadline = Instant::now() + LISTEN_WITHIN;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("waylay exited early: {status}");
        }
        assert!(Instant::now() < deadline, "waylay never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to `child` (with `kill -TERM`, as a user stops it) and waits up to 20 s for
/// it to exit; its exit status.
///
/// # Panics
///
/// When the signal cannot be sent, or the child does not exit in time (it is killed then).
pub fn terminate(child: &mut Child) -> ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let deadline = Instant::now() + STOP_WITHIN;
    loop {
        if let Some(status) = child.try_wait().expect("wait for waylay") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("waylay did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed and reaped when dropped (also when the test panics).
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines a child writes on one of its streams, read by a thread of their own so that the
/// child never blocks on a full pipe.
#[derive(Debug)]
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    /// Starts reading `r` (a child's `stdout` or `stderr`) line by line.
    #[must_use]
    pub fn new(r: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// The rest (trimmed) of the first line still to come (within 20 s) that contains
    /// `marker`, after the marker; earlier lines are skipped.
    ///
    /// # Panics
    ///
    /// When no such line comes in time, or the stream ends first.
    pub fn wait_for(&self, marker: &str) -> String {
        let deadline = Instant::now() + LINE_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .0
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("waylay never printed {marker:?}"));
            if let Some(i) = line.find(marker) {
                return line[i + marker.len()..].trim().to_owned();
            }
        }
    }

    /// The address (`127.0.0.1:PORT`) in the HTTP proxy's startup log line (`HTTP(S) proxy
    /// listening at http://ADDR ...`) still to come on these lines (a child's `stderr`),
    /// within 20 s.
    ///
    /// # Panics
    ///
    /// When no such line comes in time.
    pub fn wait_for_proxy_addr(&self) -> String {
        // The log line carries the listener's mode after the address (`... mode=regular`).
        self.wait_for("proxy listening at http://")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `waylay web` (the binary at `bin`) running on ephemeral ports (`-p 0 --web-port 0`), its
/// confdir and flow store in a test's folder, once it has printed both addresses; killed on
/// drop.
///
/// ```no_run
/// # let conf = waylay_testkit::TempDir::new("doc");
/// // In a crate's test: `env!("CARGO_BIN_EXE_waylay")`.
/// let web = waylay_testkit::WaylayWeb::start("target/debug/waylay", &conf);
/// let (ui, token) = web.ui_and_token();
/// assert!(web.proxy.starts_with("127.0.0.1:") && !token.is_empty() && !ui.is_empty());
/// ```
#[derive(Debug)]
pub struct WaylayWeb {
    /// The proxy's address (`127.0.0.1:PORT`), from its "proxy listening at" log line.
    pub proxy: String,
    /// The UI's URL as printed (`http://127.0.0.1:PORT/?token=...`).
    pub url: String,
    _child: KillOnDrop,
}

impl WaylayWeb {
    /// Starts it with its confdir in `conf` and its store at `conf/flows.sqlite` (the child
    /// is killed, so a temporary store could not remove itself), and waits (bounded) for the
    /// UI's and the proxy's address.
    ///
    /// # Panics
    ///
    /// When the binary does not start, or does not print both addresses within 20 s each.
    #[must_use]
    pub fn start(bin: &str, conf: &TempDir) -> Self {
        let mut child = Command::new(bin)
            .args(["web", "-p", "0", "--web-port", "0", "--set"])
            .arg(format!("confdir={}", conf.path().display()))
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
        let out = Lines::new(child.stdout.take().expect("stdout"));
        let err = Lines::new(child.stderr.take().expect("stderr"));
        let child = KillOnDrop(child);
        let url = out.wait_for("Web server listening at ");
        let proxy = err.wait_for_proxy_addr();
        Self {
            proxy,
            url,
            _child: child,
        }
    }

    /// The UI's address (`127.0.0.1:PORT`) and its token, from [`url`](Self::url).
    ///
    /// # Panics
    ///
    /// When the URL carries no token.
    #[must_use]
    pub fn ui_and_token(&self) -> (String, String) {
        let (ui, token) = self
            .url
            .trim_start_matches("http://")
            .split_once("/?token=")
            .expect("the URL carries the token");
        (ui.to_owned(), token.to_owned())
    }
}
