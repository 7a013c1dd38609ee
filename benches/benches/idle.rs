//! Idle intercepted connections (the shared harness's S5 in-repo): `IDLE_CONNS` (1000) HTTPS
//! connections are opened through the proxy (CONNECT, TLS to the proxy, one `GET /1k` with
//! keep-alive each, answered by an HTTPS origin on loopback) and held idle; the figure is the
//! proxy process's `VmRSS` with them held minus its `VmRSS` before, divided by the count.
//!
//! `cargo bench -p waylay-benches --bench idle`
//!
//! The bench binary is both sides: with `WAYLAY_IDLE_CHILD=1` it is the proxy (the real
//! `Proxy::builder()`, one worker, upstream certificates not verified as the harness's `-k`,
//! and the onboarding addon as the `waylay` binary registers it by default), so the figure is
//! the proxy process's alone; otherwise it is the parent (origin and clients on one
//! current-thread runtime). `IDLE_WRAP` runs the child under a tool, e.g.
//! `IDLE_WRAP="valgrind --tool=massif --massif-out-file=idle.massif"` or
//! `IDLE_WRAP="heaptrack -o idle"`: the child then exits cleanly (its stdin closed) after the
//! hold, so the tool writes its profile; RSS figures under a tool mean nothing.
//!
//! Settings: `IDLE_CONNS` (1000), `IDLE_PARALLEL` (50 opened at once), `IDLE_SETTLE` (2 s
//! between "all open" and reading RSS), `IDLE_HOLD` (extra seconds held after the reading),
//! `IDLE_OBSERVE_SERVERS` (0; 1: an addon handles `server_connect`, so every client connection
//! keeps its own server connection, as in mitmproxy, instead of sharing idle ones),
//! `IDLE_ONBOARDING` (1: register the onboarding addon as the binary does; 0: no addon),
//! `IDLE_EXTRA_SETS` (`;`-separated `name=value` options for the proxy). The proxy's open
//! file descriptors before and while held are printed too (the held clients plus the server
//! connections). A connection that fails is counted and its step and reason printed; one whose
//! ClientHello comes more than a second after its CONNECT (a loaded machine, `IDLE_PARALLEL`
//! in the hundreds with a debug build) is relayed as raw TCP, as designed, and fails its
//! handshake on the origin's certificate.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use waylay_benches::child::{
    KillOnDrop, announce, env_or, exit_when_stdin_closes, spawn_announced,
};
use waylay_benches::http1::read_response;
use waylay_benches::origin_1k;
use waylay_benches::procfs::{fd_count, rss_kib, status, status_field};
use waylay_layers::Proxy;
use waylay_testkit::{TempDir, connect_tls, test_tls_acceptor};

const CHILD_ENV: &str = "WAYLAY_IDLE_CHILD";
const CONFDIR_ENV: &str = "WAYLAY_IDLE_CONFDIR";
/// No single step (tunnel, handshake, request) may take longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    if std::env::var(CHILD_ENV).is_ok() {
        child();
    } else {
        parent();
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy under test.

/// Handles `server_connect`: every client connection then keeps its own server connections.
struct ObservesServers;

impl waylay_core::Addon for ObservesServers {
    async fn server_connect(&mut self, _data: &mut waylay_core::hooks::ServerConnectionHookData) {}
}

fn child() {
    exit_when_stdin_closes();
    let confdir = std::env::var(CONFDIR_ENV).expect("confdir set by the parent");
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut builder = Proxy::builder()
            .set(format!("confdir={confdir}"))
            .set("workers=1")
            .set("ssl_insecure=true")
            .listen("127.0.0.1:0");
        for set in std::env::var("IDLE_EXTRA_SETS")
            .unwrap_or_default()
            .split(';')
        {
            if !set.trim().is_empty() {
                builder = builder.set(set.trim());
            }
        }
        if env_or("IDLE_OBSERVE_SERVERS", 0u8) > 0 {
            builder = builder.addon(ObservesServers);
        }
        if env_or("IDLE_ONBOARDING", 1u8) > 0 {
            builder = builder.addon(waylay_addons::Onboarding::new());
        }
        let proxy = builder.start().await.expect("waylay starts");
        let ca = std::path::Path::new(&confdir).join("idle-proxy-ca.pem");
        std::fs::write(&ca, proxy.ca_cert_pem()).expect("write the proxy CA");
        announce(&proxy.local_addr().to_string());
        futures::future::pending::<()>().await;
    });
}

// ---------------------------------------------------------------------------------------------
// The origin and the clients.

type Held = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// One intercepted connection with one request answered, kept open; else at which step it
/// failed, and why.
async fn open_one(proxy: SocketAddr, origin: SocketAddr, ca: &str) -> Result<Held, String> {
    let step = std::cell::Cell::new("tunnel and TLS");
    let opened = tokio::time::timeout(STEP_TIMEOUT, async {
        let mut s = connect_tls(proxy, &origin.to_string(), "localhost", ca, &[b"http/1.1"])
            .await
            .map_err(|e| format!("tunnel and TLS: {e}"))?;
        step.set("request");
        s.write_all(b"GET /1k HTTP/1.1\r\nHost: localhost\r\nUser-Agent: waylay-idle\r\n\r\n")
            .await
            .map_err(|e| format!("request: {e}"))?;
        // tokio-rustls's write may keep what it took in its TLS buffer when the socket is not
        // writable at once, and a socket looks unwritable once this task spent its
        // cooperative budget (~128 IO operations per poll, soon reached by 50 clients joined
        // in one task): unflushed, that request never leaves and its response never comes.
        s.flush().await.map_err(|e| format!("request: {e}"))?;
        step.set("response");
        read_response(&mut s, &mut Vec::new())
            .await
            .ok_or_else(|| "response: closed, or not a 200".to_owned())?;
        Ok(s)
    })
    .await;
    opened.unwrap_or_else(|_| Err(format!("{}: nothing within {STEP_TIMEOUT:?}", step.get())))
}

// ---------------------------------------------------------------------------------------------
// The proxy process.

fn spawn_child(confdir: &TempDir) -> (KillOnDrop, SocketAddr) {
    let exe = std::env::current_exe().expect("current exe");
    let wrap = std::env::var("IDLE_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.env(CHILD_ENV, "1").env(CONFDIR_ENV, confdir.path());
    // A wrapping tool may print lines of its own first.
    let (guard, addr, _) = spawn_announced(&mut cmd, "the proxy", 50, Duration::from_secs(60));
    (guard, addr)
}

fn parent() {
    let conns: usize = env_or("IDLE_CONNS", 1000);
    let parallel: usize = env_or("IDLE_PARALLEL", 50).max(1);
    let settle: f64 = env_or("IDLE_SETTLE", 2.0);
    let hold: f64 = env_or("IDLE_HOLD", 0.0);
    let confdir = TempDir::new("waylay-idle");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (acceptor, _ca) = test_tls_acceptor(&confdir, "idle-origin-ca.pem", &[b"http/1.1"]);
    let origin = rt.block_on(origin_1k(Some(acceptor)));
    let (mut child, proxy) = spawn_child(&confdir);
    let pid = child.0.id();
    let ca = Arc::new(
        std::fs::read_to_string(confdir.path().join("idle-proxy-ca.pem")).expect("proxy CA"),
    );
    rt.block_on(async {
        // One connection first (as the harness's curl): certificate minted, pools warm.
        let first = open_one(proxy, origin, &ca).await;
        if let Err(e) = &first {
            panic!("the first request through the proxy failed: {e}");
        }
        drop(first);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss0 = rss_kib(pid);
        let fds0 = fd_count(pid);
        let started = Instant::now();
        let mut held = Vec::with_capacity(conns);
        let mut failed = 0usize;
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        while held.len() + failed < conns {
            let batch = parallel.min(conns - held.len() - failed);
            let opened = futures::future::join_all(
                (0..batch).map(|_| open_one(proxy, origin, &ca)),
            )
            .await;
            for s in opened {
                match s {
                    Ok(s) => held.push(s),
                    Err(e) => {
                        failed += 1;
                        *reasons.entry(e).or_default() += 1;
                    }
                }
            }
        }
        let open_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        let rss1 = rss_kib(pid);
        let hwm = status_field(&status(pid), "VmHWM:");
        let fds1 = fd_count(pid);
        let n = held.len().max(1) as f64;
        println!(
            "idle: {} held ({failed} failed, opened in {open_s:.1} s), proxy RSS {:.1} MiB before, {:.1} MiB held (peak {:.1}): {:.1} KiB per idle connection; proxy fds {fds0} before, {fds1} held",
            held.len(),
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            hwm as f64 / 1024.0,
            rss1.saturating_sub(rss0) as f64 / n,
        );
        for (reason, n) in &reasons {
            println!("idle: {n} failed at {reason}");
        }
        tokio::time::sleep(Duration::from_secs_f64(hold)).await;
        drop(held);
    });
    // Let a wrapping tool write its profile: close the child's stdin and wait (bounded).
    drop(child.0.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if matches!(child.0.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
