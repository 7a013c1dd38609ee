//! Soak: the proxy held at a mixed load for `SOAK_SECS` (600) on loopback, with four no-op
//! addons on every HTTP hook, while its memory, file descriptors and connections are
//! recorded every `SOAK_EVERY` seconds (10).
//!
//! `SOAK_SECS=120 cargo bench -p waylay-benches --bench soak`
//!
//! The load, all through the proxy: HTTP/1.1 keep-alive clients (`SOAK_HTTP`, 8) and HTTPS
//! keep-alive clients in CONNECT tunnels, intercepted (`SOAK_HTTPS`, 4), each sending its
//! next request as soon as the previous response is in; a new connection per request, HTTP
//! and HTTPS (one client each); two WebSocket connections echoing a message every 10 ms;
//! "bad" clients that hang up mid-body (a POST that stops after 1 KiB of its 64 KiB, and a
//! 1 MiB download dropped after 16 KiB, one of each every 200 ms); and four slowloris
//! connections sending a request head one byte every 2 s, opened again when the proxy closes
//! them (`header_timeout`).
//!
//! The bench binary is both sides: with `WAYLAY_SOAK_CHILD=1` it is the proxy (the real
//! `Proxy::builder()` as an embedder starts it, default workers, four no-op addons), so the
//! figures are the proxy process's alone; otherwise it is the parent (origins and clients on
//! one current-thread runtime). Every sample: the proxy's RSS (`VmRSS`), open fds, of which
//! sockets, and threads (`/proc/<pid>`); requests completed and errors in the interval. The
//! table is printed; the series goes to `soak.tsv` and, when `gnuplot` is installed
//! (`scripts/peers.sh`), to `soak.png`, both beside `BENCHMARKS.md` (or `SOAK_OUT`).
//!
//! Flat, as judged here: over the samples after the warm-up (the first 20% of the run, at
//! least one sample), the median slope of RSS (Theil–Sen: the median of the slopes between
//! every pair of samples, which single spikes barely move), extrapolated over that window,
//! is below 5% of the median RSS, and so is it over the second half of the run alone; the
//! same for open fds; and no errors other than what the bad clients cause (they are counted
//! apart). The least-squares trend is printed beside it (spikes tip it).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use waylay_benches::NoopHttp;
use waylay_benches::child::{
    KillOnDrop, announce, env_or, exit_when_stdin_closes, spawn_announced,
};
use waylay_benches::http1::read_response;
use waylay_benches::procfs::{fds_and_sockets, status, status_field};
use waylay_layers::Proxy;
use waylay_testkit::{TempDir, connect_tls, test_tls_acceptor, ws_through_proxy};

const CHILD_ENV: &str = "WAYLAY_SOAK_CHILD";
const CONFDIR_ENV: &str = "WAYLAY_SOAK_CONFDIR";
const UPSTREAM_CA_ENV: &str = "WAYLAY_SOAK_UPSTREAM_CA";

/// No single exchange may take longer than this (keeps every loop bounded).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    if std::env::var(CHILD_ENV).is_ok() {
        child();
    } else {
        parent();
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy under test.

fn child() {
    exit_when_stdin_closes();
    let confdir = std::env::var(CONFDIR_ENV).expect("confdir set by the parent");
    let upstream_ca = std::env::var(UPSTREAM_CA_ENV).expect("upstream CA set by the parent");
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut builder = Proxy::builder()
            .set(format!("confdir={confdir}"))
            .set(format!("ssl_verify_upstream_trusted_ca={upstream_ca}"))
            .listen("127.0.0.1:0");
        for _ in 0..4 {
            builder = builder.addon(NoopHttp);
        }
        let proxy = builder.start().await.expect("waylay starts");
        let ca = PathBuf::from(&confdir).join("soak-proxy-ca.pem");
        std::fs::write(&ca, proxy.ca_cert_pem()).expect("write the proxy CA");
        announce(&proxy.local_addr().to_string());
        futures::future::pending::<()>().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Origins.

async fn origin_service(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path() {
        "/big" => Bytes::from(vec![b'b'; 1 << 20]),
        _ => {
            // Read (and drop) whatever body came; a client that hangs up ends it early.
            let _ = req.into_body().collect().await;
            Bytes::from(vec![b'x'; 1024])
        }
    };
    Ok(hyper::Response::new(Full::new(body)))
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(s: S) {
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), service_fn(origin_service))
        .await;
}

async fn http_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_http(s));
        }
    });
    addr
}

async fn https_origin(dir: &TempDir) -> (SocketAddr, PathBuf) {
    let (acceptor, ca) = test_tls_acceptor(dir, "soak-origin-ca.pem", &[b"http/1.1"]);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve_http(tls).await;
                }
            });
        }
    });
    (addr, ca)
}

/// A WebSocket origin echoing every data message.
async fn ws_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Clients.

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Bad-client exchanges done (hang-ups mid-body, slowloris heads cut by the proxy).
    bad: AtomicU64,
    /// Client-side connections open now.
    open: AtomicU64,
    stop: AtomicBool,
}

impl Counters {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Counts a connection open while it lives.
struct Open<'a>(&'a Counters);

impl<'a> Open<'a> {
    fn new(c: &'a Counters) -> Self {
        c.open.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests `request` back to back on `s` until stopped or it fails.
async fn keep_alive<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &[u8], c: &Counters) {
    let mut buf = Vec::with_capacity(4096);
    while !c.stopped() {
        let ok = tokio::time::timeout(STEP_TIMEOUT, async {
            s.write_all(request).await.ok()?;
            read_response(s, &mut buf).await
        })
        .await;
        if !matches!(ok, Ok(Some(()))) {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.ok.fetch_add(1, Ordering::Relaxed);
    }
}

fn get(target: &str, host: &str, close: bool) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: waylay-soak\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

async fn http_keep_alive(proxy: SocketAddr, origin: SocketAddr, c: Arc<Counters>) {
    let req = get(&format!("http://{origin}/1k"), &origin.to_string(), false);
    while !c.stopped() {
        if let Ok(mut s) = TcpStream::connect(proxy).await {
            let _open = Open::new(&c);
            let _ = s.set_nodelay(true);
            keep_alive(&mut s, &req, &c).await;
        } else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn https_keep_alive(
    proxy: SocketAddr,
    origin: SocketAddr,
    ca: Arc<String>,
    c: Arc<Counters>,
) {
    let req = get("/1k", "localhost", false);
    let target = origin.to_string();
    while !c.stopped() {
        let tls = tokio::time::timeout(
            STEP_TIMEOUT,
            connect_tls(proxy, &target, "localhost", &ca, &[b"http/1.1"]),
        )
        .await;
        if let Ok(Ok(mut s)) = tls {
            let _open = Open::new(&c);
            keep_alive(&mut s, &req, &c).await;
        } else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One request per connection (`Connection: close`), HTTP and HTTPS alternately.
async fn new_connections(
    proxy: SocketAddr,
    origin: SocketAddr,
    tls_origin: SocketAddr,
    ca: Arc<String>,
    c: Arc<Counters>,
) {
    let plain = get(&format!("http://{origin}/1k"), &origin.to_string(), true);
    let secure = get("/1k", "localhost", true);
    let tls_target = tls_origin.to_string();
    let mut n = 0u64;
    while !c.stopped() {
        n += 1;
        let done = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut buf = Vec::new();
            if n.is_multiple_of(2) {
                let mut s = TcpStream::connect(proxy).await.ok()?;
                let _open = Open::new(&c);
                s.write_all(&plain).await.ok()?;
                read_response(&mut s, &mut buf).await
            } else {
                let mut s = connect_tls(proxy, &tls_target, "localhost", &ca, &[b"http/1.1"])
                    .await
                    .ok()?;
                let _open = Open::new(&c);
                s.write_all(&secure).await.ok()?;
                read_response(&mut s, &mut buf).await
            }
        })
        .await;
        if matches!(done, Ok(Some(()))) {
            c.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A WebSocket through the proxy, one 64-byte message every 10 ms, each echo checked.
async fn websocket(proxy: SocketAddr, origin: SocketAddr, c: Arc<Counters>) {
    let msg = Bytes::from(vec![0x5au8; 64]);
    while !c.stopped() {
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(STEP_TIMEOUT, ws_through_proxy(proxy, origin, "/", &[])).await
        else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _open = Open::new(&c);
        while !c.stopped() {
            let echoed = tokio::time::timeout(STEP_TIMEOUT, async {
                ws.send(Message::Binary(msg.clone())).await.ok()?;
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b == msg => Some(()),
                    _ => None,
                }
            })
            .await;
            if !matches!(echoed, Ok(Some(()))) {
                c.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            c.ok.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

/// Clients that hang up mid-body: a POST cut after 1 KiB of its announced 64 KiB, and a 1 MiB
/// download dropped after 16 KiB; one of each every 200 ms.
async fn hang_ups(proxy: SocketAddr, origin: SocketAddr, c: Arc<Counters>) {
    let post = format!(
        "POST http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 65536\r\n\r\n"
    );
    let big = get(&format!("http://{origin}/big"), &origin.to_string(), false);
    while !c.stopped() {
        let _ = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut s = TcpStream::connect(proxy).await.ok()?;
            let _open = Open::new(&c);
            s.write_all(post.as_bytes()).await.ok()?;
            s.write_all(&[b'p'; 1024]).await.ok()?;
            Some(())
        })
        .await;
        c.bad.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::time::timeout(STEP_TIMEOUT, async {
            let mut s = TcpStream::connect(proxy).await.ok()?;
            let _open = Open::new(&c);
            s.write_all(&big).await.ok()?;
            let mut got = 0;
            let mut chunk = [0u8; 4096];
            while got < 16 * 1024 {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            Some(())
        })
        .await;
        c.bad.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A slowloris connection: a request head one byte every 2 s, never finished; opened again
/// when the proxy closes it.
async fn slowloris(proxy: SocketAddr, origin: SocketAddr, c: Arc<Counters>) {
    let head = format!("GET http://{origin}/1k HTTP/1.1\r\nHost: {origin}\r\nX-Slow: ");
    while !c.stopped() {
        let Ok(mut s) = TcpStream::connect(proxy).await else {
            c.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _open = Open::new(&c);
        let mut bytes = head.bytes().chain(std::iter::repeat(b'a'));
        while !c.stopped() {
            let Some(b) = bytes.next() else { break };
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            // Wait 2 s, or notice the proxy closing the connection.
            let mut probe = [0u8; 512];
            match tokio::time::timeout(Duration::from_secs(2), s.read(&mut probe)).await {
                Err(_) => {}
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => break,
            }
        }
        if !c.stopped() {
            c.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling.

#[derive(Clone, Copy, Default)]
struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
    sockets: u64,
    threads: u64,
    client_conns: u64,
    ok: u64,
    errors: u64,
    bad: u64,
}

fn sample_proc(pid: u32, s: &mut Sample) {
    let status = status(pid);
    s.rss_kib = status_field(&status, "VmRSS:");
    s.threads = status_field(&status, "Threads:");
    (s.fds, s.sockets) = fds_and_sockets(pid);
}

fn spawn_child(confdir: &TempDir, upstream_ca: &std::path::Path) -> (KillOnDrop, SocketAddr) {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ENV, "1")
        .env(CONFDIR_ENV, confdir.path())
        .env(UPSTREAM_CA_ENV, upstream_ca);
    let (guard, addr, _) = spawn_announced(&mut cmd, "the proxy", 1, Duration::from_secs(30));
    (guard, addr)
}

/// Least-squares slope of `y` over `x`.
fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        num += (a - mx) * (b - my);
        den += (a - mx) * (a - mx);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

/// Theil–Sen slope of `y` over `x`: the median of the slopes between every pair of samples.
/// A single high sample (glibc growing an arena under a burst, trimmed at the next sample)
/// moves it little, where it tips a least-squares fit; a leak, a steady climb, moves it as
/// much as it moves the fit.
fn median_slope(x: &[f64], y: &[f64]) -> f64 {
    let mut slopes = Vec::with_capacity(x.len() * x.len() / 2);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            if x[j] != x[i] {
                slopes.push((y[j] - y[i]) / (x[j] - x[i]));
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    slopes[slopes.len() / 2]
}

/// Growth over the window by the median slope, as a fraction of the median (the flatness
/// test), and the median.
fn robust_drift(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let x: Vec<f64> = samples.iter().map(|s| s.t).collect();
    let y: Vec<f64> = samples.iter().map(&f).collect();
    let mut sorted = y.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let span = x.last().copied().unwrap_or(0.0) - x.first().copied().unwrap_or(0.0);
    let growth = median_slope(&x, &y) * span;
    (if median > 0.0 { growth / median } else { 0.0 }, median)
}

/// Growth over the window as a fraction of the mean (least squares), and the mean.
fn drift(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let x: Vec<f64> = samples.iter().map(|s| s.t).collect();
    let y: Vec<f64> = samples.iter().map(&f).collect();
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let span = x.last().copied().unwrap_or(0.0) - x.first().copied().unwrap_or(0.0);
    let growth = slope(&x, &y) * span;
    (if mean > 0.0 { growth / mean } else { 0.0 }, mean)
}

fn write_outputs(samples: &[Sample], out_dir: &std::path::Path) {
    let tsv = out_dir.join("soak.tsv");
    let mut text =
        String::from("# t_s\trss_mib\tfds\tsockets\tthreads\tclient_conns\tok\terrors\tbad\n");
    for s in samples {
        text.push_str(&format!(
            "{:.0}\t{:.2}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            s.t,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.sockets,
            s.threads,
            s.client_conns,
            s.ok,
            s.errors,
            s.bad
        ));
    }
    if let Err(e) = std::fs::write(&tsv, text) {
        eprintln!("soak: cannot write {}: {e}", tsv.display());
        return;
    }
    let png = out_dir.join("soak.png");
    let script = format!(
        "set terminal png size 900,520\n\
         set output '{png}'\n\
         set title 'waylay soak: 4 no-op addons, mixed load (HTTP, HTTPS, WebSocket, bad clients)'\n\
         set xlabel 'seconds'\n\
         set ylabel 'RSS (MiB)'\n\
         set y2label 'count'\n\
         set ytics nomirror\n\
         set y2tics\n\
         set yrange [0:*]\n\
         set y2range [0:*]\n\
         set key bottom right\n\
         set grid\n\
         plot '{tsv}' using 1:2 axes x1y1 with linespoints title 'RSS (MiB)', \
         '' using 1:3 axes x1y2 with linespoints title 'open fds', \
         '' using 1:4 axes x1y2 with lines title 'sockets', \
         '' using 1:8 axes x1y2 with impulses title 'errors'\n",
        png = png.display(),
        tsv = tsv.display()
    );
    match Command::new("gnuplot").stdin(Stdio::piped()).spawn() {
        Ok(mut g) => {
            if let Some(mut stdin) = g.stdin.take() {
                let _ = stdin.write_all(script.as_bytes());
            }
            match g.wait() {
                Ok(st) if st.success() => {
                    println!("soak: wrote {} and {}", tsv.display(), png.display())
                }
                _ => eprintln!("soak: gnuplot failed; the series is in {}", tsv.display()),
            }
        }
        Err(_) => println!(
            "soak: wrote {} (no gnuplot on PATH: `source scripts/peers.sh && install_peers` for the plot)",
            tsv.display()
        ),
    }
}

fn parent() {
    let secs: u64 = env_or("SOAK_SECS", 600u64).max(10);
    let every: u64 = env_or("SOAK_EVERY", 10u64).max(1);
    let n_http: usize = env_or("SOAK_HTTP", 8usize);
    let n_https: usize = env_or("SOAK_HTTPS", 4usize);
    let out_dir = std::env::var("SOAK_OUT").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
        PathBuf::from,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("parent runtime");
    rt.block_on(async move {
        let dir = TempDir::new("soak");
        let origin = http_origin().await;
        let (tls_origin, upstream_ca) = https_origin(&dir).await;
        let ws = ws_origin().await;
        let (child, proxy) = spawn_child(&dir, &upstream_ca);
        let pid = child.0.id();
        let ca = Arc::new(
            std::fs::read_to_string(dir.path().join("soak-proxy-ca.pem")).expect("proxy CA"),
        );
        let c = Arc::new(Counters::default());
        let mut tasks = Vec::new();
        for _ in 0..n_http {
            tasks.push(tokio::spawn(http_keep_alive(proxy, origin, c.clone())));
        }
        for _ in 0..n_https {
            tasks.push(tokio::spawn(https_keep_alive(proxy, tls_origin, ca.clone(), c.clone())));
        }
        tasks.push(tokio::spawn(new_connections(proxy, origin, tls_origin, ca.clone(), c.clone())));
        for _ in 0..2 {
            tasks.push(tokio::spawn(websocket(proxy, ws, c.clone())));
        }
        tasks.push(tokio::spawn(hang_ups(proxy, origin, c.clone())));
        for _ in 0..4 {
            tasks.push(tokio::spawn(slowloris(proxy, origin, c.clone())));
        }

        println!(
            "soak: {secs} s, a sample every {every} s; proxy pid {pid}; {n_http} HTTP + {n_https} HTTPS keep-alive, new connections, 2 WebSocket, hang-ups, 4 slowloris"
        );
        println!(
            "{:>6} {:>9} {:>6} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7}",
            "t s", "RSS MiB", "fds", "sockets", "threads", "clients", "ok/s", "errors", "bad"
        );
        let start = Instant::now();
        let mut samples: Vec<Sample> = Vec::new();
        let (mut ok0, mut err0, mut bad0) = (0, 0, 0);
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.tick().await;
        while start.elapsed() < Duration::from_secs(secs) {
            tick.tick().await;
            let mut s = Sample {
                t: start.elapsed().as_secs_f64().round(),
                client_conns: c.open.load(Ordering::Relaxed),
                ..Sample::default()
            };
            sample_proc(pid, &mut s);
            let (ok, err, bad) = (
                c.ok.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed),
                c.bad.load(Ordering::Relaxed),
            );
            (s.ok, s.errors, s.bad) = (ok - ok0, err - err0, bad - bad0);
            (ok0, err0, bad0) = (ok, err, bad);
            println!(
                "{:>6.0} {:>9.1} {:>6} {:>8} {:>8} {:>8} {:>9.0} {:>7} {:>7}",
                s.t,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.sockets,
                s.threads,
                s.client_conns,
                s.ok as f64 / every as f64,
                s.errors,
                s.bad
            );
            samples.push(s);
        }
        c.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(STEP_TIMEOUT, t).await;
        }
        drop(child);

        let warm = (samples.len() / 5).max(1);
        let steady = samples.get(warm..).unwrap_or_default();
        let (rss_drift, rss_mean) = drift(steady, |s| s.rss_kib as f64);
        let (fd_drift, fd_mean) = drift(steady, |s| s.fds as f64);
        let errors: u64 = samples.iter().map(|s| s.errors).sum();
        let ok: u64 = samples.iter().map(|s| s.ok).sum();
        let bad: u64 = samples.iter().map(|s| s.bad).sum();
        let (rss_robust, rss_median) = robust_drift(steady, |s| s.rss_kib as f64);
        let (fd_robust, _) = robust_drift(steady, |s| s.fds as f64);
        // The second half of the run alone: a leak keeps climbing there, warm-up does not.
        let late = steady.get(steady.len() / 2..).unwrap_or_default();
        let (rss_late, _) = robust_drift(late, |s| s.rss_kib as f64);
        let flat = |d: f64| if d.abs() < 0.05 { "flat" } else { "NOT flat" };
        println!(
            "after warm-up ({} samples): RSS median {:.1} MiB, median-slope trend {:+.1}% over the window ({}), second half {:+.1}% ({}), least squares {:+.1}% (mean {:.1} MiB); fds median-slope trend {:+.1}% ({}), least squares {:+.1}% (mean {:.0}); {ok} exchanges, {errors} errors, {bad} bad-client exchanges",
            steady.len(),
            rss_median / 1024.0,
            rss_robust * 100.0,
            flat(rss_robust),
            rss_late * 100.0,
            flat(rss_late),
            rss_drift * 100.0,
            rss_mean / 1024.0,
            fd_robust * 100.0,
            flat(fd_robust),
            fd_drift * 100.0,
            fd_mean,
        );
        write_outputs(&samples, &out_dir);
    });
}
