//! End-to-end load: HTTP/1.1 keep-alive, 1 KiB responses, absolute-form requests through a
//! proxy running in its own process, whose CPU time is read from `/proc/<pid>/stat` around
//! the measured window (DESIGN.md §9: CPU per request as a ratio to a minimal forwarder
//! measured in the same run).
//!
//! `cargo bench -p waylay-benches --bench proxy_load`
//!
//! The bench binary is both sides: run with `WAYLAY_LOAD_CHILD=floor|waylay` it is the proxy
//! under test (`origin`: the 1 KiB origin alone) (it prints its address on stdout and serves until its stdin closes); otherwise
//! it is the parent, which runs the origin (hyper, 1 KiB body) and the load generator (plain
//! tokio, `LOAD_CONNS` keep-alive connections each sending requests back to back) on one
//! current-thread runtime, and starts one child per scenario.
//!
//! With two cores or more and `taskset` present (and `LOAD_PIN` not `0`), the child is pinned
//! to CPU 0 and the parent to the others, as `../shared/bench` does; the pinned scenarios set
//! `workers=1` (waylay's default on one core) and the floor's tokio pool has one thread. The
//! `*-w2` scenarios run the child unpinned (all CPUs) with `workers=2`, so connections on
//! worker 1 send their hooks across threads to the addon manager on worker 0.
//!
//! Settings: `LOAD_CONNS` (32), `LOAD_SECS` (3, measured), `LOAD_WARMUP` (1),
//! `LOAD_SCENARIOS` (comma-separated, default all:
//! `floor,waylay,waylay+1,waylay+4,waylay+onb,waylay+mh,waylay+mr,waylay+16,waylay-w2,
//! waylay+4-w2,waylay-w,waylay+web,waylay+web+ws,waylay+addheader,waylay+noop-resp,waylay+py-noop,
//! waylay+py-addheader,mitmdump,mitmdump+py-addheader,tunnels`;
//! `tunnels`: one waylay child listening in `regular` and `socks5` mode, measured with
//! intercepted HTTPS (HTTP/1.1, 1 KiB) through a CONNECT and through SOCKS5 in the same run,
//! keep-alive (CPU per request) and a new tunnel per request (TCP, the proxy handshake, TLS:
//! connections per second and CPU per connection), SOCKS5 as a ratio to CONNECT;
//! `waylay-w`: with `-w`, the save addon writing every flow to a file in the confdir;
//! `waylay+onb` runs the onboarding addon (the binary's default), `waylay+mh` and
//! `waylay+mr` the bundled `modify_headers` / `map_remote` with one rule matching every
//! request; the `py` ones need `--features python`, the mitmdump ones `WAYLAY_MITMDUMP`:
//! mitmproxy running the same script on the same rig),
//! `LOAD_REPS` (1: repetitions of the whole list, then the median of each scenario),
//! `LOAD_PIN` (1).
//!
//! `waylay+web` adds the web UI's addon (`waylay web`: ring, SQLite store written by its own
//! thread, UI server on its own thread); `waylay+web+ws` also has a browser-like client
//! reading `/updates` the whole time. The child's RSS is printed after the window.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waylay_benches::child::{
    KillOnDrop, announce, env_or, exit_when_stdin_closes, spawn_announced,
};
use waylay_benches::http1::{MAX_HEAD, find, read_response};
use waylay_benches::origin_1k;
use waylay_benches::procfs::{clock_ticks, cpu_ticks, rss_kib};
use waylay_benches::{AddHeader, NoopHttp, NoopResponse, PY_ADDHEADER, PY_NOOP};
use waylay_layers::Proxy;
use waylay_testkit::TempDir;

const CHILD_ENV: &str = "WAYLAY_LOAD_CHILD";
const ADDONS_ENV: &str = "WAYLAY_LOAD_ADDONS";
const WORKERS_ENV: &str = "WAYLAY_LOAD_WORKERS";
const CONFDIR_ENV: &str = "WAYLAY_LOAD_CONFDIR";
const WEB_ENV: &str = "WAYLAY_LOAD_WEB";
/// The web UI's token in the `+web` scenarios (the bench's own, on loopback).
const WEB_TOKEN: &str = "00000000000000000000000000000bec";
const EXTRA_ENV: &str = "WAYLAY_LOAD_EXTRA";
/// The `mode` option of the proxy under test (a full spec; unset: regular).
const MODE_ENV: &str = "WAYLAY_LOAD_MODE";

const BUNDLED_ENV: &str = "WAYLAY_LOAD_BUNDLED";
/// Set for the tunnel section: the child listens in `regular` and `socks5` mode.
const TUNNELS_ENV: &str = "WAYLAY_LOAD_TUNNELS";

/// No single response may take longer than this (keeps every loop bounded).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    // `cargo bench` passes `--bench`; arguments are ignored.
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("floor") => child_floor(),
        Ok("waylay") => child_waylay(),
        Ok("origin") => child_origin(),
        Ok(other) => {
            eprintln!("proxy_load: unknown child mode {other:?}");
            std::process::exit(2);
        }
        Err(_) => parent(),
    }
}

// ---------------------------------------------------------------------------------------------
// Children: the proxies under test.

/// The script scenarios' addon (`py-noop`, `py-addheader`), written into `confdir`.
#[cfg(feature = "python")]
fn script_addon(extra: &str, confdir: &str) -> waylay_addons::ScriptAddon {
    let src = if extra == "py-noop" {
        PY_NOOP
    } else {
        PY_ADDHEADER
    };
    let path = std::path::Path::new(confdir).join(format!("{extra}.py"));
    std::fs::write(&path, src).expect("write the script");
    waylay_addons::ScriptAddon::load(&path).expect("the script loads")
}

/// The real proxy, as an embedder starts it, with `WAYLAY_LOAD_ADDONS` no-op addons and the
/// `WAYLAY_LOAD_EXTRA` addon (`addheader`, `noop-response`, `py-noop`, `py-addheader`).
fn child_waylay() {
    exit_when_stdin_closes();
    let addons: usize = env_or(ADDONS_ENV, 0);
    let workers: usize = env_or(WORKERS_ENV, 0);
    let confdir = std::env::var(CONFDIR_ENV).expect("WAYLAY_LOAD_CONFDIR is set by the parent");
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut builder = Proxy::builder()
            .set(format!("confdir={confdir}"))
            .set(format!("workers={workers}"))
            .listen("127.0.0.1:0");
        for _ in 0..addons {
            builder = builder.addon(NoopHttp);
        }
        if let Ok(mode) = std::env::var(MODE_ENV) {
            builder = builder.set(format!("mode={mode}"));
        }
        let tunnels = env_or(TUNNELS_ENV, 0u8) > 0;
        if tunnels {
            // The HTTPS origin's certificate is the bench's own: not verified.
            builder = builder
                .set("mode=regular")
                .set("mode=socks5")
                .set("ssl_insecure=true");
        }
        // `+web`: the web UI's addon (ring, SQLite store, UI server on its own thread).
        let mut ui = None;
        if env_or(WEB_ENV, 0u8) > 0 {
            let (addon, handle) = waylay_web::WebUi::bind(waylay_web::WebConfig {
                port: 0,
                token: Some(WEB_TOKEN.into()),
                // In the parent's temporary confdir: the child is killed, so a temporary
                // store could not remove itself.
                store_path: Some(std::path::Path::new(&confdir).join("web.sqlite")),
                ..waylay_web::WebConfig::default()
            })
            .expect("web UI binds");
            builder = builder.addon(addon);
            ui = Some(handle);
        }
        match std::env::var(EXTRA_ENV).as_deref().unwrap_or("") {
            "" => {}
            "addheader" => builder = builder.addon(AddHeader::default()),
            "noop-response" => builder = builder.addon(NoopResponse),
            #[cfg(feature = "python")]
            py @ ("py-noop" | "py-addheader") => {
                builder = builder.addon(script_addon(py, &confdir));
            }
            "save" => {
                // `-w`: every flow written to a flow file by the save addon's writer thread.
                builder = builder
                    .set(format!("save_stream_file={confdir}/load.flows"))
                    .addon(waylay_addons::Save::new());
            }
            other => panic!("proxy_load: unknown extra addon {other:?}"),
        }
        // One bundled addon with one rule matching every request.
        let bundled = std::env::var(BUNDLED_ENV).unwrap_or_default();
        let rule = match bundled.as_str() {
            "modify_headers" => {
                builder = builder.addon(waylay_addons::ModifyHeaders::new());
                Some("modify_headers=|X-Waylay-Load|1")
            }
            "onboarding" => {
                // The binary's default: the onboarding page is on, nothing else.
                builder = builder.addon(waylay_addons::Onboarding::new());
                None
            }
            "map_remote" => {
                builder = builder.addon(waylay_addons::MapRemote::new());
                Some(r"map_remote=|^(http://[^/]+)/(.*)$|\1/mapped/\2")
            }
            _ => None,
        };
        let proxy = builder.start().await.expect("waylay starts");
        if let Some(rule) = rule {
            proxy
                .manager()
                .set(&[rule])
                .await
                .expect("the bench rule is valid");
        }
        match (&ui, proxy.addr_of("socks5")) {
            (Some(ui), _) => announce(&format!("{} {}", proxy.local_addr(), ui.addr())),
            // The tunnel section: the regular listener, then the SOCKS5 one.
            (None, Some(socks)) if tunnels => {
                announce(&format!("{} {socks}", proxy.local_addr()));
            }
            _ => announce(&proxy.local_addr().to_string()),
        }
        futures::future::pending::<()>().await;
    });
}

/// The origin alone (`WAYLAY_LOAD_CHILD=origin`), for instruction counts of the proxy child
/// driven by another client (`benches/count_requests.sh`).
fn child_origin() {
    exit_when_stdin_closes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("origin runtime");
    rt.block_on(async {
        announce(&origin_1k(None).await.to_string());
        futures::future::pending::<()>().await;
    });
}

/// The floor: a minimal forwarder. Reads the first request head, connects to its
/// (loopback, IP-literal) target, forwards the head as received (origins accept
/// absolute-form), then copies bytes both ways. Later requests on the connection go to the
/// same target unparsed. A tokio multi-thread runtime sized by the affinity mask, as
/// `../shared/bench/floor`.
fn child_floor() {
    exit_when_stdin_closes();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("floor runtime");
    rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind floor");
        announce(&l.local_addr().expect("floor addr").to_string());
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(async move {
                        let _ = floor_connection(s).await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
}

async fn floor_connection(mut client: TcpStream) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    while find(&head, b"\r\n\r\n").is_none() {
        if head.len() >= MAX_HEAD {
            return Ok(());
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let Some(target) = absolute_form_target(&head) else {
        client
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await?;
        return Ok(());
    };
    let mut server = TcpStream::connect(target).await?;
    server.set_nodelay(true)?;
    server.write_all(&head).await?;
    drop(head);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// `GET http://127.0.0.1:PORT/... HTTP/1.1` → `127.0.0.1:PORT`; loopback IP literals only.
fn absolute_form_target(head: &[u8]) -> Option<SocketAddr> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let target = line.split(' ').nth(1)?;
    let authority = target.strip_prefix("http://")?.split('/').next()?;
    let addr: SocketAddr = authority.parse().ok()?;
    addr.ip().is_loopback().then_some(addr)
}

// ---------------------------------------------------------------------------------------------
// Parent: origin, load generator, measurement.

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    mode: &'static str,
    addons: usize,
    /// waylay's `workers` (ignored by the floor, whose pool follows its affinity mask).
    workers: usize,
    /// On CPU 0 alone (when pinning), or on every CPU.
    pinned: bool,
    /// 0: no web UI; 1: the web UI's addon; 2: and a browser-like WebSocket client reading
    /// `/updates` throughout.
    web: u8,
    /// A bundled addon with one rule matching every request (`modify_headers`, `map_remote`,
    /// or `onboarding` alone).
    bundled: &'static str,
    /// One more addon: `addheader` (Rust), `py-noop` / `py-addheader` (a Python script).
    extra: &'static str,
    /// waylay's proxy mode: `regular`, `reverse` (to the origin; the load sends origin-form
    /// requests), or `upstream` (through a second floor forwarder as the upstream proxy, on
    /// the load's CPUs).
    proxy_mode: &'static str,
}

const SCENARIOS: [Scenario; 21] = [
    Scenario {
        name: "floor",
        mode: "floor",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+1",
        mode: "waylay",
        addons: 1,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+4",
        mode: "waylay",
        addons: 4,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+onb",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "onboarding",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+mh",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "modify_headers",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+mr",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "map_remote",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+16",
        mode: "waylay",
        addons: 16,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay-w2",
        mode: "waylay",
        addons: 0,
        workers: 2,
        pinned: false,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+4-w2",
        mode: "waylay",
        addons: 4,
        workers: 2,
        pinned: false,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay-w",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "save",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+web",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 1,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+web+ws",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 2,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+addheader",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "addheader",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+noop-resp",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "noop-response",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+py-noop",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "py-noop",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay+py-addheader",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "py-addheader",
        proxy_mode: "regular",
    },
    Scenario {
        name: "mitmdump",
        mode: "mitmdump",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "regular",
    },
    Scenario {
        name: "mitmdump+py-addheader",
        mode: "mitmdump",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "py-addheader",
        proxy_mode: "regular",
    },
    Scenario {
        name: "waylay-reverse",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "reverse",
    },
    Scenario {
        name: "waylay-upstream",
        mode: "waylay",
        addons: 0,
        workers: 1,
        pinned: true,
        web: 0,
        bundled: "",
        extra: "",
        proxy_mode: "upstream",
    },
];

/// How the child and the parent are placed on CPUs.
struct Placement {
    /// `taskset -c` list for a pinned child, and for an unpinned one.
    child_pinned: Option<String>,
    child_all: Option<String>,
    /// The parent's CPUs (the load and the origin).
    parent: Option<String>,
}

fn place_parent(ncpus: usize) -> Placement {
    let want = std::env::var("LOAD_PIN").map_or(true, |v| v != "0");
    if !want || ncpus < 2 {
        return Placement {
            child_pinned: None,
            child_all: None,
            parent: None,
        };
    }
    let others = format!("1-{}", ncpus - 1);
    // `-a`: every thread of this process (only the main thread exists yet).
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", &others, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !pinned {
        eprintln!("proxy_load: taskset failed; running unpinned");
        return Placement {
            child_pinned: None,
            child_all: None,
            parent: None,
        };
    }
    Placement {
        child_pinned: Some("0".into()),
        child_all: Some(format!("0-{}", ncpus - 1)),
        parent: Some(others),
    }
}

/// mitmdump (`WAYLAY_MITMDUMP`) as the child, pinned like waylay, with the same script for
/// `py-*` scenarios; it is given a free port and polled until it accepts.
fn spawn_mitmdump(
    s: Scenario,
    place: &Placement,
    confdir: &TempDir,
) -> (KillOnDrop, SocketAddr, Option<SocketAddr>) {
    let bin = std::env::var("WAYLAY_MITMDUMP").expect("WAYLAY_MITMDUMP names mitmdump");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut cmd = match place.child_pinned.as_deref() {
        Some(list) if s.pinned => {
            let mut c = Command::new("taskset");
            c.args(["-c", list]).arg(&bin);
            c
        }
        _ => Command::new(&bin),
    };
    cmd.args(["-q", "--listen-host", "127.0.0.1", "-p", &port.to_string()])
        .arg("--set")
        .arg(format!("confdir={}", confdir.path().display()));
    if s.extra.starts_with("py-") {
        let src = if s.extra == "py-noop" {
            PY_NOOP
        } else {
            PY_ADDHEADER
        };
        let path = confdir.path().join(format!("{}.py", s.extra));
        std::fs::write(&path, src).expect("write the script");
        cmd.arg("-s").arg(path);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mitmdump");
    let guard = KillOnDrop(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return (guard, addr, None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("mitmdump did not listen on {addr} within 20 s");
}

fn spawn_child(
    s: Scenario,
    place: &Placement,
    confdir: &TempDir,
    mode_spec: Option<&str>,
) -> (KillOnDrop, SocketAddr, Option<SocketAddr>) {
    if s.mode == "mitmdump" {
        return spawn_mitmdump(s, place, confdir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let cpus = if s.pinned {
        place.child_pinned.as_deref()
    } else {
        place.child_all.as_deref()
    };
    let mut cmd = match cpus {
        Some(list) => {
            // taskset execs the program: the child's pid is the proxy's.
            let mut c = Command::new("taskset");
            c.args(["-c", list]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.env(CHILD_ENV, s.mode)
        .env(ADDONS_ENV, s.addons.to_string())
        .env(WORKERS_ENV, s.workers.to_string())
        .env(CONFDIR_ENV, confdir.path())
        .env(WEB_ENV, s.web.to_string())
        .env(EXTRA_ENV, s.extra)
        .env(BUNDLED_ENV, s.bundled)
        .env(TUNNELS_ENV, u8::from(s.name == TUNNELS.name).to_string());
    if let Some(m) = mode_spec {
        cmd.env(MODE_ENV, m);
    }
    spawn_announced(
        &mut cmd,
        &format!("child {}", s.name),
        1,
        Duration::from_secs(20),
    )
}

/// A browser's share of the web UI: `/updates` read as fast as it comes; returns the
/// messages seen when `stop` is set.
async fn browser(ui: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let Ok(mut req) = format!("ws://{ui}/updates").into_client_request() else {
        return 0;
    };
    if let Ok(v) = format!("Bearer {WEB_TOKEN}").parse() {
        req.headers_mut().insert("authorization", v);
    }
    let Ok(s) = TcpStream::connect(ui).await else {
        return 0;
    };
    let Ok((mut ws, _)) = tokio_tungstenite::client_async(req, s).await else {
        return 0;
    };
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Ok(Some(Ok(m))) => n += m.len() as u64,
            Ok(_) => break,
            Err(_) => {}
        }
    }
    n
}

#[derive(Default)]
struct Shared {
    done: AtomicU64,
    errors: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// One client sending `request` until told to stop: with `keep_alive`, on one connection
/// back to back; without, on a new connection (made by `connect`) for every request. Returns
/// the latencies (µs) of the requests (with their connection, when new) completed while
/// measuring. Its first failure (connecting, or a response not in within `RESPONSE_TIMEOUT`)
/// counts an error and ends it.
async fn client<S, C, F>(
    mut connect: C,
    keep_alive: bool,
    request: Arc<[u8]>,
    shared: Arc<Shared>,
) -> Vec<u32>
where
    S: AsyncRead + AsyncWrite + Unpin,
    C: FnMut() -> F,
    F: Future<Output = std::io::Result<S>>,
{
    let mut lat = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    let mut kept = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let ok = tokio::time::timeout(RESPONSE_TIMEOUT, async {
            let mut s = match kept.take() {
                Some(s) => s,
                None => connect().await.ok()?,
            };
            s.write_all(&request).await.ok()?;
            buf.clear();
            read_response(&mut s, &mut buf).await?;
            if keep_alive {
                kept = Some(s);
            }
            Some(())
        })
        .await;
        if !matches!(ok, Ok(Some(()))) {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return lat;
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
        if shared.measuring.load(Ordering::Relaxed) {
            lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
    }
    lat
}

/// A plain TCP connection to the proxy, for [`client`].
async fn connect_plain(proxy: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(proxy).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

struct Measured {
    requests: u64,
    secs: f64,
    proxy_cpu_s: f64,
    rig_cpu_s: f64,
    p50_us: u32,
    p99_us: u32,
    errors: u64,
}

async fn run_load(
    proxy: SocketAddr,
    origin: SocketAddr,
    pid: u32,
    cfg: &Settings,
    origin_form: bool,
) -> Measured {
    // A reverse proxy gets origin-form requests; a regular one absolute-form.
    let target = if origin_form {
        "/1k".to_owned()
    } else {
        format!("http://{origin}/1k")
    };
    let request: Arc<[u8]> = format!(
        "GET {target} HTTP/1.1\r\nHost: {origin}\r\nUser-Agent: waylay-proxy-load\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
    .into();
    let shared = Arc::new(Shared::default());
    let tasks: Vec<_> = (0..cfg.conns)
        .map(|_| {
            tokio::spawn(client(
                move || connect_plain(proxy),
                true,
                request.clone(),
                shared.clone(),
            ))
        })
        .collect();
    measure(tasks, &shared, pid, cfg).await
}

/// The measuring window over running clients: `cfg.warmup`, then `cfg.measure` with the
/// proxy's (`pid`) and the rig's CPU time read around it; then the clients are stopped and
/// their latencies gathered.
async fn measure(
    tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>,
    shared: &Shared,
    pid: u32,
    cfg: &Settings,
) -> Measured {
    tokio::time::sleep(cfg.warmup).await;
    let (cpu0, rig0, n0, t0) = (
        cpu_ticks(pid),
        cpu_ticks(std::process::id()),
        shared.done.load(Ordering::Relaxed),
        Instant::now(),
    );
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(cfg.measure).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let (cpu1, rig1, n1, secs) = (
        cpu_ticks(pid),
        cpu_ticks(std::process::id()),
        shared.done.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    shared.stop.store(true, Ordering::Relaxed);

    let mut lat = Vec::new();
    for t in tasks {
        // Each client finishes its request in flight (bounded by RESPONSE_TIMEOUT).
        if let Ok(l) = t.await {
            lat.extend(l);
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or(0)
    };
    Measured {
        requests: n1 - n0,
        secs,
        proxy_cpu_s: (cpu1 - cpu0) as f64 / cfg.ticks,
        rig_cpu_s: (rig1 - rig0) as f64 / cfg.ticks,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        errors: shared.errors.load(Ordering::Relaxed),
    }
}

fn ratio(us: f64, floor_us: Option<f64>) -> String {
    floor_us.map_or_else(|| "—".to_owned(), |f| format!("{:.2}×", us / f))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Settings {
    reps: usize,
    conns: usize,
    warmup: Duration,
    measure: Duration,
    ticks: f64,
}

fn parent() {
    let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let place = place_parent(ncpus);
    let cfg = Settings {
        reps: env_or("LOAD_REPS", 1usize).max(1),
        conns: env_or("LOAD_CONNS", 32usize).max(1),
        warmup: Duration::from_secs_f64(env_or("LOAD_WARMUP", 1.0f64).max(0.0)),
        measure: Duration::from_secs_f64(env_or("LOAD_SECS", 3.0f64).max(0.1)),
        ticks: clock_ticks(),
    };
    let wanted = std::env::var("LOAD_SCENARIOS").unwrap_or_default();
    let wanted: Vec<&str> = wanted
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let run_tunnels = wanted.is_empty() || wanted.contains(&TUNNELS.name);
    let scenarios: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
        // The script scenarios need the `python` feature, mitmdump's `WAYLAY_MITMDUMP`.
        .filter(|s| cfg!(feature = "python") || !s.extra.starts_with("py-") || s.mode == "mitmdump")
        .filter(|s| s.mode != "mitmdump" || std::env::var_os("WAYLAY_MITMDUMP").is_some())
        .collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("parent runtime");
    rt.block_on(async move {
        let origin = origin_1k(None).await;
        println!(
            "proxy_load: HTTP/1.1 keep-alive, 1 KiB, {} connections, {:.0} s warm-up + {:.0} s measured; {}; CLK_TCK {}",
            cfg.conns,
            cfg.warmup.as_secs_f64(),
            cfg.measure.as_secs_f64(),
            match &place.child_pinned {
                Some(c) => format!(
                    "child on CPU {c} (w2: CPUs {}), load+origin on the others",
                    place.child_all.as_deref().unwrap_or("?")
                ),
                None => "unpinned".into(),
            },
            cfg.ticks
        );
        println!(
            "{:<22} {:>9} {:>8} {:>7} {:>7} {:>8} {:>8} {:>11} {:>8} {:>8}",
            "scenario",
            "requests",
            "req/s",
            "p50 µs",
            "p99 µs",
            "proxy %",
            "rig %",
            "CPU µs/req",
            "× floor",
            "RSS MiB"
        );
        // CPU µs/request of every repetition, per scenario.
        let mut per_rep: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
        for rep in 0..cfg.reps {
            if cfg.reps > 1 {
                println!("-- repetition {}", rep + 1);
            }
            let mut floor_us = None;
            for (i, &s) in scenarios.iter().enumerate() {
                let confdir = TempDir::new("load");
                // Upstream mode's upstream proxy: a floor forwarder, unmeasured, on the
                // load's CPUs (so it never takes CPU 0 from the proxy under test).
                let upstream = (s.proxy_mode == "upstream").then(|| {
                    let floor = SCENARIOS[0];
                    let unpinned = Placement {
                        child_pinned: place.parent.clone(),
                        child_all: None,
                        parent: None,
                    };
                    spawn_child(floor, &unpinned, &confdir, None)
                });
                let mode_spec = match (s.proxy_mode, &upstream) {
                    ("reverse", _) => Some(format!("reverse:http://{origin}")),
                    ("upstream", Some((_, up, _))) => Some(format!("upstream:http://{up}")),
                    _ => None,
                };
                let (child, addr, ui) = spawn_child(s, &place, &confdir, mode_spec.as_deref());
                let stop = Arc::new(AtomicBool::new(false));
                let reader = match ui {
                    Some(ui) if s.web >= 2 => Some(tokio::spawn(browser(ui, stop.clone()))),
                    _ => None,
                };
                let m =
                    run_load(addr, origin, child.0.id(), &cfg, s.proxy_mode == "reverse").await;
                let rss = rss_kib(child.0.id());
                stop.store(true, Ordering::Relaxed);
                let ws_bytes = match reader {
                    Some(r) => r.await.unwrap_or(0),
                    None => 0,
                };
                drop(child);
                drop(upstream);
                let us = if m.requests > 0 {
                    m.proxy_cpu_s * 1e6 / m.requests as f64
                } else {
                    f64::NAN
                };
                if s.name == "floor" {
                    floor_us = Some(us);
                }
                if let Some(v) = per_rep.get_mut(i) {
                    v.push(us);
                }
                println!(
                    "{:<22} {:>9} {:>8.0} {:>7} {:>7} {:>8.0} {:>8.0} {:>11.2} {:>8} {:>8.1}{}{}",
                    s.name,
                    m.requests,
                    m.requests as f64 / m.secs,
                    m.p50_us,
                    m.p99_us,
                    100.0 * m.proxy_cpu_s / m.secs,
                    100.0 * m.rig_cpu_s / m.secs,
                    us,
                    ratio(us, floor_us),
                    rss as f64 / 1024.0,
                    if ws_bytes > 0 {
                        format!("  (browser read {:.1} MiB of updates)", ws_bytes as f64 / 1048576.0)
                    } else {
                        String::new()
                    },
                    if m.errors > 0 {
                        format!("  ({} errors)", m.errors)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if run_tunnels {
            tunnels(&place, &cfg).await;
        }
        if cfg.reps > 1 {
            println!("-- median CPU µs/req over {} repetitions (min–max)", cfg.reps);
            let floor_med = scenarios
                .iter()
                .zip(&per_rep)
                .find(|(s, _)| s.name == "floor")
                .map(|(_, v)| median(v));
            for (s, v) in scenarios.iter().zip(&per_rep) {
                let med = median(v);
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                println!(
                    "{:<22} {:>8.2} ({:.2}–{:.2}) {:>8}",
                    s.name,
                    med,
                    lo,
                    hi,
                    ratio(med, floor_med)
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Tunnels: intercepted HTTPS through CONNECT and through SOCKS5, one child serving both.

/// The child of the tunnel section: one waylay (pinned, one worker) listening in `regular`
/// and `socks5` mode, so both paths are measured against the same process.
const TUNNELS: Scenario = Scenario {
    name: "tunnels",
    mode: "waylay",
    addons: 0,
    workers: 1,
    pinned: true,
    web: 0,
    bundled: "",
    extra: "",
    proxy_mode: "regular",
};

/// How a client reaches the HTTPS origin through the proxy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Connect,
    Socks5,
}

/// A TLS connection to `localhost:port` through the proxy, intercepted (waylay's leaf).
async fn tunnel(
    via: Via,
    proxy: SocketAddr,
    port: u16,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    match via {
        Via::Connect => {
            waylay_testkit::connect_tls(
                proxy,
                &format!("localhost:{port}"),
                "localhost",
                ca,
                &[b"http/1.1"],
            )
            .await
        }
        Via::Socks5 => {
            waylay_testkit::connect_tls_socks5(proxy, "localhost", port, ca, &[b"http/1.1"]).await
        }
    }
}

/// Measures one tunnel scenario against the running child `pid`.
async fn run_tunnel_load(
    via: Via,
    keep_alive: bool,
    proxy: SocketAddr,
    port: u16,
    ca: Arc<str>,
    pid: u32,
    cfg: &Settings,
) -> Measured {
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    let request: Arc<[u8]> = format!(
        "GET /1k HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: waylay-proxy-load\r\n{close}\r\n"
    )
    .into_bytes()
    .into();
    let shared = Arc::new(Shared::default());
    let tasks: Vec<_> = (0..cfg.conns)
        .map(|_| {
            let ca = ca.clone();
            let connect = move || {
                let ca = ca.clone();
                async move { tunnel(via, proxy, port, &ca).await }
            };
            tokio::spawn(client(connect, keep_alive, request.clone(), shared.clone()))
        })
        .collect();
    measure(tasks, &shared, pid, cfg).await
}

/// The tunnel section: CONNECT and SOCKS5, keep-alive and a new tunnel per request, each
/// pair against the same child, and each SOCKS5 figure as a ratio to its CONNECT one.
async fn tunnels(place: &Placement, cfg: &Settings) {
    let dir = TempDir::new("load-tls");
    let (acceptor, _ca) =
        waylay_testkit::test_tls_acceptor(&dir, "load-origin-ca.pem", &[b"http/1.1"]);
    let origin = origin_1k(Some(acceptor)).await;
    let confdir = TempDir::new("load");
    let (child, regular, socks) = spawn_child(TUNNELS, place, &confdir, None);
    let socks = socks.expect("the tunnel child announces its SOCKS5 address");
    let ca: Arc<str> = std::fs::read_to_string(confdir.path().join("waylay-ca-cert.pem"))
        .expect("waylay's CA certificate")
        .into();
    println!(
        "tunnels: intercepted HTTPS (HTTP/1.1, 1 KiB) through one waylay (regular + socks5, one worker), {} clients",
        cfg.conns
    );
    println!(
        "{:<22} {:>9} {:>8} {:>7} {:>7} {:>8} {:>11} {:>10}",
        "scenario", "requests", "req/s", "p50 µs", "p99 µs", "proxy %", "CPU µs/req", "× CONNECT"
    );
    for keep_alive in [true, false] {
        let mut connect_us = None;
        for via in [Via::Connect, Via::Socks5] {
            let proxy = if via == Via::Connect { regular } else { socks };
            let m = run_tunnel_load(
                via,
                keep_alive,
                proxy,
                origin.port(),
                ca.clone(),
                child.0.id(),
                cfg,
            )
            .await;
            let us = if m.requests > 0 {
                m.proxy_cpu_s * 1e6 / m.requests as f64
            } else {
                f64::NAN
            };
            let name = match (via, keep_alive) {
                (Via::Connect, true) => "CONNECT+TLS keep-alive",
                (Via::Socks5, true) => "SOCKS5+TLS keep-alive",
                (Via::Connect, false) => "CONNECT+TLS new conn",
                (Via::Socks5, false) => "SOCKS5+TLS new conn",
            };
            if via == Via::Connect {
                connect_us = Some(us);
            }
            println!(
                "{:<22} {:>9} {:>8.0} {:>7} {:>7} {:>8.0} {:>11.2} {:>10}{}",
                name,
                m.requests,
                m.requests as f64 / m.secs,
                m.p50_us,
                m.p99_us,
                100.0 * m.proxy_cpu_s / m.secs,
                us,
                ratio(us, connect_us),
                if m.errors > 0 {
                    format!("  ({} errors)", m.errors)
                } else {
                    String::new()
                }
            );
        }
    }
    drop(child);
}
