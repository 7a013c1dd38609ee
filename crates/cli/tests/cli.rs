//! The `waylay` binary as a user runs it: flags, `--options`, errors and exit codes, and
//! the bench harness's command line.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

fn waylay(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the waylay binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a failure: the exit code, and exactly one line on stderr starting `waylay: error: `.
fn assert_one_line_error(out: &Output, code: i32) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("waylay: error: "), "{err:?}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", text(&out.stdout));
    err.trim_end().to_owned()
}

#[test]
fn version() {
    let out = waylay(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("waylay {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_mitmdumps_flags() {
    let out = waylay(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for flag in [
        "--listen-host <HOST>",
        "-p, --listen-port <PORT>",
        "-m, --mode <MODE>",
        "--set <NAME=VALUE>",
        "-k, --ssl-insecure",
        "-q, --quiet",
        "-v, --verbose",
        "--flow-detail <LEVEL>",
        "--options",
        "--version",
        "[FILTER]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn options_lists_every_option_with_type_default_and_help() {
    let out = waylay(&["--options"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(
        list.contains("listen_port: int (default: 8080)\n    Port to bind the proxy to.\n"),
        "{list}"
    );
    assert!(list.contains("listen_host: str (default: \"127.0.0.1\")\n"));
    assert!(list.contains("flow_detail: int (default: 1)\n"));
    assert!(list.contains("dumper_filter: optional str (default: None)\n"));
    assert!(list.contains("ssl_insecure: bool (default: false)\n"));
}

#[test]
fn options_shows_values_set_on_the_command_line() {
    let out = waylay(&["-p", "9090", "--options"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("listen_port: int (default: 8080) [set: 9090]\n"));
}

#[test]
fn unknown_option_name_is_one_line_with_a_suggestion() {
    let err = assert_one_line_error(&waylay(&["--set", "lisen_port=1"]), 2);
    assert_eq!(
        err,
        "waylay: error: unknown option \"lisen_port\" (did you mean \"listen_port\"?)"
    );
}

#[test]
fn bad_option_value_is_one_line() {
    let err = assert_one_line_error(&waylay(&["--set", "listen_port=eighty"]), 2);
    assert_eq!(
        err,
        "waylay: error: bad value \"eighty\" for option listen_port: expected an integer"
    );
    let err = assert_one_line_error(&waylay(&["--set", "listen_port=70000"]), 2);
    assert!(err.contains("listen_port"), "{err}");
    let err = assert_one_line_error(&waylay(&["--set", "flow_detail=9"]), 2);
    assert!(err.contains("flow_detail"), "{err}");
    let err = assert_one_line_error(&waylay(&["--set", "nonsense"]), 2);
    assert!(err.contains("nonsense"), "{err}");
}

#[test]
fn unknown_flag_is_one_line() {
    let err = assert_one_line_error(&waylay(&["--lisen-port", "8080"]), 2);
    assert!(
        err.contains("'--lisen-port'") && err.contains("'--listen-port'"),
        "{err}"
    );
    assert_one_line_error(&waylay(&["--flow-detail", "5"]), 2);
    assert_one_line_error(&waylay(&["-p", "http"]), 2);
}

#[test]
fn a_bad_filter_expression_is_one_line_with_its_position() {
    let err = assert_one_line_error(&waylay(&["~c", "200", "&", "~d"]), 2);
    assert_eq!(
        err,
        "waylay: error: option dumper_filter: expected a regex after ~d at 11"
    );
    let err = assert_one_line_error(&waylay(&["~q&~s"]), 2);
    assert_eq!(
        err,
        "waylay: error: option dumper_filter: expected a space after ~q at 2"
    );
    let err = assert_one_line_error(&waylay(&["~u", "'[a-'"]), 2);
    assert!(err.contains("unterminated character set at 3"), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

fn wait_listening(child: &mut Child, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("waylay exited early: {status}");
        }
        assert!(Instant::now() < deadline, "waylay never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
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

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("waylay-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

/// The `waylay` line of `shared/bench/proxies.conf`, as written (minus copying a CA in:
/// waylay creates one in an empty confdir).
#[test]
fn the_bench_command_line_starts_and_stops_on_sigterm() {
    let confdir = temp_dir("bench");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["-q", "--listen-host", "127.0.0.1", "-p", &port.to_string()])
        .args(["--set", &format!("confdir={}", confdir.display()), "-k"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, port);
    let status = terminate(&mut child);
    let out = child.wait_with_output().expect("output");
    assert!(status.success(), "{status}: {}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "-q printed {:?}", text(&out.stdout));
    let _ = std::fs::remove_dir_all(&confdir);
}

#[test]
fn a_port_in_use_is_one_line_and_exit_code_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let confdir = temp_dir("busy");
    let err = assert_one_line_error(
        &waylay(&[
            "-p",
            &port,
            "--set",
            &format!("confdir={}", confdir.display()),
        ]),
        1,
    );
    assert!(err.contains(&port), "{err}");
    let _ = std::fs::remove_dir_all(&confdir);
}

/// A one-shot HTTP/1.1 origin on 127.0.0.1 answering `hello` to every request.
fn origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

/// One request through the real proxy prints one line, and SIGTERM flushes it and exits 0.
#[test]
fn a_request_through_the_proxy_prints_one_line() {
    let confdir = temp_dir("flow");
    let port = free_port();
    let origin = origin();
    let mut child = Command::new(BIN)
        .args(["-p", &port.to_string()])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, port);

    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET http://127.0.0.1:{origin}/hello HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = text(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("hello"), "{resp}");
    drop(s);

    let status = terminate(&mut child);
    let out = child.wait_with_output().expect("output");
    let stdout = text(&out.stdout);
    assert!(status.success(), "{status}: {}", text(&out.stderr));
    let line = format!("GET http://127.0.0.1:{origin}/hello << 200 OK 5b ");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("127.0.0.1:") && stdout.contains(&line),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&confdir);
}

/// Sends `GET /path` through the proxy to the origin and reads the whole response.
fn get_through(port: u16, origin: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "GET http://127.0.0.1:{origin}{path} HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    text(&resp)
}

/// `waylay "~u /wanted"` prints only the flows the trailing filter matches; the others
/// are proxied all the same.
#[test]
fn the_trailing_filter_limits_what_is_printed() {
    let confdir = temp_dir("filter");
    let port = free_port();
    let origin = origin();
    let mut child = Command::new(BIN)
        .args(["-p", &port.to_string()])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args(["~u", "/wanted", "|", "~c", "404"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, port);
    for path in ["/other", "/wanted", "/also-other"] {
        let resp = get_through(port, origin, path);
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.ends_with("hello"),
            "{resp}"
        );
    }
    let status = terminate(&mut child);
    let out = child.wait_with_output().expect("output");
    let stdout = text(&out.stdout);
    assert!(status.success(), "{status}: {}", text(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("GET http://127.0.0.1:{origin}/wanted << 200 OK")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&confdir);
}
