//! Proxies for waylay to chain to: real tinyproxy and dante (`danted`) processes started with
//! a generated configuration on a loopback port, and a small in-process SOCKS5 server built
//! on waylay's own SOCKS5 front (for what dante cannot do without system accounts: username and
//! password authentication, and a view of the targets asked for).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use waylay_layers::front::socks5_accept;
use waylay_layers::socks5::{Reply, ServerAuth, TargetAddr, UserPass};

use crate::peers::program;
use crate::process::free_port;
use crate::proxy::{TempDir, test_tls_acceptor};

/// A proxy process started for a test; killed when dropped.
#[derive(Debug)]
pub struct PeerProxy {
    /// Where it listens (`127.0.0.1:port`).
    pub addr: SocketAddr,
    child: Child,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl PeerProxy {
    /// What the proxy logged so far (tinyproxy logs each request line it handles).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits (bounded) until `addr` accepts connections.
async fn start(
    name: &str,
    mut cmd: Command,
    addr: SocketAddr,
    log: std::path::PathBuf,
    dir: TempDir,
) -> PeerProxy {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr")).expect("stderr file"),
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut peer = PeerProxy {
        addr,
        child,
        log,
        _dir: dir,
    };
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return peer;
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            let stderr =
                std::fs::read_to_string(peer._dir.path().join("stderr")).unwrap_or_default();
            panic!("{name} exited with {status}: {stderr}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} did not listen on {addr} within 5 s");
}

/// tinyproxy on `127.0.0.1:<free port>`, requiring Basic `basic_auth` when given; `None`
/// (test skipped) when tinyproxy is not installed outside CI.
pub async fn tinyproxy(basic_auth: Option<(&str, &str)>) -> Option<PeerProxy> {
    let bin = program("tinyproxy")?;
    let dir = TempDir::new("tinyproxy");
    let port = free_port();
    let log = dir.path().join("tinyproxy.log");
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\n\
         LogFile \"{}\"\nLogLevel Connect\nDisableViaHeader Yes\n",
        log.display()
    );
    if let Some((user, pass)) = basic_auth {
        conf.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    let conf_path = dir.path().join("tinyproxy.conf");
    std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
    let mut cmd = Command::new(bin);
    cmd.arg("-d").arg("-c").arg(&conf_path);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Some(start("tinyproxy", cmd, addr, log, dir).await)
}

/// dante's `danted` as a SOCKS5 proxy without authentication on `127.0.0.1:<free port>`,
/// connecting out from 127.0.0.1 only; `None` (test skipped) when not installed outside CI.
pub async fn danted() -> Option<PeerProxy> {
    let bin = program("danted")?;
    let dir = TempDir::new("danted");
    let port = free_port();
    let log = dir.path().join("danted.log");
    let conf = format!(
        "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
         socksmethod: none\nclientmethod: none\n\
         client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
         socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }}\n",
        log.display()
    );
    let conf_path = dir.path().join("danted.conf");
    std::fs::write(&conf_path, conf).expect("write danted.conf");
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .arg(&conf_path)
        .arg("-N")
        .arg("1")
        .arg("-p")
        .arg(dir.path().join("danted.pid"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Some(start("danted", cmd, addr, log, dir).await)
}

/// HAProxy in TCP mode on `127.0.0.1:<ephemeral port>`, forwarding to `backend` with a PROXY
/// protocol header (`version` 1 or 2) in front of each connection; `None` (test skipped)
/// when haproxy is not installed outside CI.
///
/// The listening socket is bound here and handed to HAProxy (`bind fd@N`), so no other
/// process can take the port between a "free port" probe and HAProxy's own bind (tests in
/// parallel processes, as cargo-nextest runs them, did: a client then reached another test's
/// server).
pub async fn haproxy(backend: SocketAddr, version: u8) -> Option<PeerProxy> {
    let bin = program("haproxy")?;
    let dir = TempDir::new("haproxy");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind for haproxy");
    let addr = listener.local_addr().expect("haproxy's address");
    let fd = listener.as_raw_fd();
    // v2 also carries a TLV (the unique id), which readers must skip.
    let send = if version == 2 {
        "send-proxy-v2 proxy-v2-options unique-id"
    } else {
        "send-proxy"
    };
    let conf = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    \
         timeout server 30s\n\
         frontend fe\n    bind fd@{fd}\n    unique-id-format waylay-%ci-%cp\n    \
         default_backend be\n\
         backend be\n    server s1 {backend} {send}\n"
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).expect("write haproxy.cfg");
    let mut cmd = Command::new(bin);
    cmd.arg("-db").arg("-f").arg(&conf_path);
    inherit(&mut cmd, fd);
    let log = dir.path().join("stderr");
    // The child holds the socket now; the parent's copy goes when `listener` drops, so a
    // HAProxy that dies leaves a refused port, not a queue nobody serves.
    let peer = start("haproxy", cmd, addr, log, dir).await;
    drop(listener);
    Some(peer)
}

/// Lets the child of `cmd` inherit `fd` under the same number (std opens every descriptor
/// close-on-exec).
#[expect(
    unsafe_code,
    reason = "Command::pre_exec is the only way to keep a descriptor open across exec"
)]
fn inherit(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe; it touches no memory of the parent's other threads.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// An in-process SOCKS5 server on `127.0.0.1:0` (CONNECT only, as waylay's codec serves it).
#[derive(Debug, Clone)]
pub struct Socks5Server {
    /// Where it listens.
    pub addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Socks5Server {
    /// Every CONNECT target asked for, in order (`host:port`, or `ip:port`).
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Starts an in-process SOCKS5 server; with `auth`, RFC 1929 username/password is required
/// and checked against it.
pub async fn socks5_server(auth: Option<(&str, &str)>) -> Socks5Server {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind socks5");
    let server = Socks5Server {
        addr: l.local_addr().expect("addr"),
        targets: Arc::default(),
    };
    let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
    let targets = server.targets.clone();
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (auth, targets) = (auth.clone(), targets.clone());
            actix::spawn(async move {
                let _ = serve_socks5(s, auth, targets).await;
            });
        }
    });
    server
}

async fn serve_socks5(
    s: TcpStream,
    auth: Option<(String, String)>,
    targets: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mode = if auth.is_some() {
        ServerAuth::UserPass
    } else {
        ServerAuth::None
    };
    let check = |given: &UserPass| {
        auth.as_ref()
            .is_some_and(|(u, p)| *u == given.username && *p == given.password)
    };
    let Ok(pending) = socks5_accept(s, mode, check, Duration::from_secs(10)).await else {
        return Ok(());
    };
    if let Ok(mut t) = targets.lock() {
        t.push(pending.target().to_string());
    }
    let dialed = match pending.target() {
        TargetAddr::Ip(a) => TcpStream::connect(*a).await,
        TargetAddr::Domain(h, p) => TcpStream::connect((h.as_str(), *p)).await,
    };
    let mut server = match dialed {
        Ok(server) => server,
        Err(e) => return pending.failed(Reply::from_io_error(&e)).await,
    };
    let (mut s, early) = pending.succeeded(server.local_addr().ok()).await?;
    if !early.is_empty() {
        server.write_all(&early).await?;
    }
    let _ = tokio::io::copy_bidirectional(&mut s, &mut server).await;
    Ok(())
}

/// A TLS front on `127.0.0.1:0` for `backend` (certificate for `localhost` and `127.0.0.1`
/// from a test CA minted now, PEM written into `dir`): an HTTPS proxy when `backend` is an
/// HTTP proxy. Returns its address and the CA file.
pub async fn tls_front(backend: SocketAddr, dir: &TempDir) -> (SocketAddr, std::path::PathBuf) {
    let (acceptor, ca_file) = test_tls_acceptor(dir, "tls-front-ca.pem", &[b"http/1.1"]);
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tls front");
    let addr = l.local_addr().expect("addr");
    actix::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            actix::spawn(async move {
                let (Ok(mut tls), Ok(mut back)) =
                    (acceptor.accept(s).await, TcpStream::connect(backend).await)
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    (addr, ca_file)
}
