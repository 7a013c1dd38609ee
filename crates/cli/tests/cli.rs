//! The `waylay` binary as a user runs it: flags, `--options`, errors and exit codes, and
//! the bench harness's command line.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use waylay_testkit::{free_port, terminate, wait_listening};

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
        "-H, --modify-headers <PATTERN>",
        "-B, --modify-body <PATTERN>",
        "-M, --map-remote <PATTERN>",
        "--map-local <PATTERN>",
        "--stickycookie <FILTER>",
        "--stickyauth <FILTER>",
        "--showhost",
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

/// `confdir/config.yaml` sets options as mitmproxy's `config.yaml` does; flags win.
#[test]
fn the_config_file_sets_options_and_flags_win() {
    let confdir = temp_dir("config");
    std::fs::write(
        confdir.join("config.yaml"),
        "listen_port: 9191\nssl_insecure: true\nignore_hosts:\n  - a\\.example\n  - b\\.example\n",
    )
    .expect("write config.yaml");
    let set = format!("confdir={}", confdir.display());
    let out = waylay(&["--set", &set, "--options"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(
        list.contains("listen_port: int (default: 8080) [set: 9191]\n"),
        "{list}"
    );
    assert!(
        list.contains("ssl_insecure: bool (default: false) [set: true]\n"),
        "{list}"
    );
    assert!(
        list.contains(r#"[set: ["a\\.example", "b\\.example"]]"#),
        "{list}"
    );

    let out = waylay(&[
        "--set",
        &set,
        "-p",
        "9292",
        "--set",
        "ignore_hosts=c",
        "--options",
    ]);
    let list = text(&out.stdout);
    assert!(
        list.contains("listen_port: int (default: 8080) [set: 9292]\n"),
        "{list}"
    );
    assert!(list.contains(r#"[set: ["c"]]"#), "{list}");
    let _ = std::fs::remove_dir_all(&confdir);
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_file_and_the_key() {
    let confdir = temp_dir("badconfig");
    let path = confdir.join("config.yaml");
    let set = format!("confdir={}", confdir.display());

    std::fs::write(&path, "lisen_port: 1\n").expect("write");
    let err = assert_one_line_error(&waylay(&["--set", &set]), 2);
    assert_eq!(
        err,
        format!(
            "waylay: error: config file {}: unknown option \"lisen_port\" (did you mean \"listen_port\"?)",
            path.display()
        )
    );

    std::fs::write(&path, "listen_port: eighty\n").expect("write");
    let err = assert_one_line_error(&waylay(&["--set", &set]), 2);
    assert!(
        err.contains(&path.display().to_string()) && err.contains("listen_port"),
        "{err}"
    );

    std::fs::write(&path, "ignore_hosts: [\n").expect("write");
    let err = assert_one_line_error(&waylay(&["--set", &set]), 2);
    assert!(err.contains("config.yaml"), "{err}");

    // A value an addon refuses names the file too, unless a flag set it.
    std::fs::write(&path, "onboarding_host: a b\n").expect("write");
    let err = assert_one_line_error(&waylay(&["--set", &set]), 2);
    assert_eq!(
        err,
        format!(
            "waylay: error: config file {}: option onboarding_host: \"a b\" is not a host name",
            path.display()
        )
    );
    let err = assert_one_line_error(&waylay(&["--set", &set, "--set", "onboarding_host=c d"]), 2);
    assert_eq!(
        err,
        "waylay: error: option onboarding_host: \"c d\" is not a host name"
    );
    let _ = std::fs::remove_dir_all(&confdir);
}

/// Every bundled addon refuses a bad value before the proxy starts: exit code 2, one line
/// naming the option and quoting the offending part.
#[test]
fn bad_addon_values_are_refused_at_start() {
    let confdir = temp_dir("badaddon");
    let set = format!("confdir={}", confdir.display());
    for (args, option, quoted) in [
        (vec!["-H", "/only"], "modify_headers", "\"/only\""),
        (vec!["-H", "|bad name|x"], "modify_headers", "\"bad name\""),
        (vec!["-B", "|(|x"], "modify_body", "\"(\""),
        (vec!["-M", "|[|x"], "map_remote", "\"[\""),
        (
            vec!["-M", r"|a|\3"],
            "map_remote",
            "invalid group reference 3",
        ),
        (
            vec!["--map-local", "|a|/does/not/exist"],
            "map_local",
            "\"/does/not/exist\"",
        ),
        (
            vec!["--set", "block_list=/~all/nope"],
            "block_list",
            "\"nope\"",
        ),
        (
            vec!["--set", "onboarding_host=a b"],
            "onboarding_host",
            "\"a b\"",
        ),
        (
            vec!["--set", "block_list=/~bogus/404"],
            "block_list",
            "\"~bogus\"",
        ),
        (vec!["--stickycookie", "~d ("], "stickycookie", "\"~d (\""),
        (vec!["--stickyauth", "~x"], "stickyauth", "\"~x\""),
        (
            vec!["--set", "proxyauth=nocolon"],
            "proxyauth",
            "\"nocolon\"",
        ),
        (vec!["--proxyauth", ":nouser"], "proxyauth", "\":nouser\""),
        (
            vec!["--set", "proxyauth=@/does/not/exist/htpasswd"],
            "proxyauth",
            "/does/not/exist/htpasswd",
        ),
    ] {
        let mut all = vec!["--set", set.as_str()];
        all.extend(args.iter().copied());
        let err = assert_one_line_error(&waylay(&all), 2);
        assert!(
            err.contains(&format!("option {option}: ")) && err.contains(quoted),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&confdir);
}

#[test]
fn options_lists_the_addons_options() {
    let out = waylay(&["--options"]);
    let list = text(&out.stdout);
    for name in [
        "modify_headers: sequence of str",
        "modify_body: sequence of str",
        "map_remote: sequence of str",
        "map_local: sequence of str",
        "block_list: sequence of str",
        "stickycookie: optional str",
        "stickyauth: optional str",
        "onboarding: bool (default: true)",
        "onboarding_host: str (default: \"mitm.it\")",
    ] {
        assert!(list.contains(name), "{name} missing:\n{list}");
    }
    let help = list
        .split("modify_headers: ")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .unwrap_or_default();
    assert!(
        help.contains("header-name") && !help.contains("Not supported"),
        "{help}"
    );
}

/// Rules from `config.yaml` reach the addons of the running binary.
#[test]
fn a_rule_from_the_config_file_applies_to_traffic() {
    let confdir = temp_dir("configrule");
    std::fs::write(
        confdir.join("config.yaml"),
        "modify_headers:\n  - \"|X-From-Config|yes\"\nflow_detail: 0\n",
    )
    .expect("write config.yaml");
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
        "GET http://127.0.0.1:{origin}/ HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = text(&resp).to_ascii_lowercase();
    assert!(resp.starts_with("http/1.1 200"), "{resp}");
    assert!(resp.contains("x-from-config: yes\r\n"), "{resp}");
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&confdir);
}

/// `waylay export FORMAT FILE [FILTER]` prints recorded flows in mitmproxy's export formats.
#[test]
fn export_prints_recorded_flows_as_curl_and_raw() {
    let dir = temp_dir("export");
    let file = dir.join("flows");
    let mut flow = waylay_testkit::tflow();
    flow.response = Some(waylay_testkit::tresp());
    let mut w =
        waylay_core::flowfile::FlowWriter::new(std::fs::File::create(&file).expect("create"));
    w.add(&waylay_core::Flow::Http(Box::new(flow)))
        .expect("write flow");
    w.flush().expect("flush");
    drop(w);
    let path = file.display().to_string();

    let out = waylay(&["export", "curl", &path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "curl -H 'User-Agent: waylay-testkit' -H 'Accept: */*' -H 'header: qvalue' http://example.com/path -d content\n"
    );
    let out = waylay(&["export", "raw_response", &path]);
    assert!(
        text(&out.stdout).starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        text(&out.stdout)
    );
    let out = waylay(&["export", "curl", &path, "~c", "404"]);
    assert_eq!(text(&out.stdout), "", "the filter matches nothing");

    let err = assert_one_line_error(&waylay(&["export", "har", &path]), 2);
    assert!(err.contains("no such export format: \"har\""), "{err}");
    let err = assert_one_line_error(&waylay(&["export", "curl", "/does/not/exist"]), 1);
    assert!(err.contains("/does/not/exist"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--proxyauth` on the real binary with curl's `--proxy-user`: the password keeps its
/// colons; wrong credentials get 407 and the next request still works.
#[test]
fn proxyauth_flag_with_curl() {
    let Some(curl) = waylay_testkit::peers::program("curl") else {
        return;
    };
    let confdir = temp_dir("proxyauth");
    let port = free_port();
    let origin = origin();
    let mut child = Command::new(BIN)
        .args(["-q", "-p", &port.to_string(), "--proxyauth", "alice:pa:ss"])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, port);
    let code = |user: &str| {
        let out = Command::new(&curl)
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args([
                "-x",
                &format!("http://127.0.0.1:{port}"),
                "--proxy-user",
                user,
            ])
            .arg(format!("http://127.0.0.1:{origin}/p"))
            .output()
            .expect("run curl");
        text(&out.stdout)
    };
    assert_eq!(code("alice:pa:ss"), "200");
    assert_eq!(code("alice:pa"), "407");
    assert_eq!(code("alice:pa:ss"), "200");
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&confdir);
}

/// Regression: `-p 8080` (the default's value, given explicitly) was taken as "not given",
/// so `-m socks5` kept SOCKS's 1080. Given, it applies to every mode without `@port`: with
/// a regular and a SOCKS listener both would be on 8080, which is refused before anything
/// binds. Without `-p` each keeps its own default (8080 and 1080) and the options are fine.
#[test]
fn an_explicit_listen_port_equal_to_the_default_is_given() {
    let out = waylay(&["-p", "8080", "-m", "regular", "-m", "socks5", "--options"]);
    let err = assert_one_line_error(&out, 2);
    assert!(err.contains("8080"), "{err}");
    let out = waylay(&[
        "--set",
        "listen_port=8080",
        "-m",
        "regular",
        "-m",
        "socks5",
        "--options",
    ]);
    assert_one_line_error(&out, 2);
    let out = waylay(&["-m", "regular", "-m", "socks5", "--options"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
