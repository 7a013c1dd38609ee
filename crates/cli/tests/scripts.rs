//! `waylay -s script.py` as a user runs it: with the `python` feature, a script's options
//! are listed and settable and a script that cannot load is one line; without it, `-s` says
//! in one line how to get a build that has it.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

fn waylay(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the waylay binary runs")
}

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("waylay: error: "), "{err:?}");
    err
}

fn script(name: &str, src: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("waylay-cli-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, src).expect("write script");
    p
}

#[cfg(not(feature = "python"))]
#[test]
fn without_python_s_says_how_to_get_it() {
    let p = script("noop.py", "def request(flow):\n    pass\n");
    let err = one_line_error(&waylay(&["-s", p.to_str().expect("utf-8")]));
    assert!(
        err.contains("cargo run --release -p waylay --features python -- -s script.py"),
        "{err}"
    );
}

#[cfg(feature = "python")]
#[test]
fn script_options_are_listed_and_checked() {
    let p = script(
        "opts.py",
        "from mitmproxy import ctx\n\ndef load(loader):\n    loader.add_option('shout_level', int, 3, 'How loud.')\n",
    );
    let path = p.to_str().expect("utf-8");
    let out = waylay(&["-s", path, "--options"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        listing.contains("shout_level: int (default: 3)"),
        "{listing}"
    );
    assert!(listing.contains("How loud."), "{listing}");
    let err = one_line_error(&waylay(&[
        "-s",
        path,
        "--set",
        "shout_level=loud",
        "--options",
    ]));
    assert!(err.contains("shout_level"), "{err}");
}

#[cfg(feature = "python")]
#[test]
fn a_script_importing_a_missing_name_is_one_line() {
    let p = script("missing.py", "from mitmproxy.addons import asgiapp\n");
    let err = one_line_error(&waylay(&["-s", p.to_str().expect("utf-8"), "--options"]));
    assert!(
        err.contains("waylay does not provide mitmproxy.addons"),
        "{err}"
    );
    assert!(err.contains("missing.py:1"), "{err}");
}

#[cfg(feature = "python")]
#[test]
fn a_script_calling_ctx_master_shutdown_stops_waylay_cleanly() {
    let dir = std::env::temp_dir().join(format!("waylay-cli-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let marker = dir.join("done.txt");
    let _ = std::fs::remove_file(&marker);
    let p = script(
        "stop.py",
        &format!(
            "from mitmproxy import ctx\n\ndef running():\n    ctx.master.shutdown()\n\ndef done():\n    open({:?}, 'w').write('done')\n",
            marker.to_str().expect("utf-8")
        ),
    );
    let mut child = Command::new(BIN)
        .args(["-q", "-p", "0", "-s", p.to_str().expect("utf-8")])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the waylay binary runs");
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = child.try_wait().expect("wait") {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("waylay did not stop within 15 s after ctx.master.shutdown()");
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(&marker).ok().as_deref(),
        Some("done"),
        "done ran on the way out"
    );
}

/// What a script logs while it loads (module level and `load`, before the options that set
/// the log level are known) is shown, in order, as mitmdump shows it; it was lost.
#[cfg(feature = "python")]
#[test]
fn what_a_script_logs_while_loading_is_shown() {
    let p = script(
        "loadlog.py",
        "import logging\nfrom mitmproxy import ctx\nlogging.info('from the module')\n\n\
         def load(loader):\n    logging.getLogger('mine').warning('from load')\n    \
         ctx.log.info('from ctx.log in load')\n\n\
         def running():\n    ctx.master.shutdown()\n",
    );
    let mut child = Command::new(BIN)
        .args(["-p", "0", "--listen-host", "127.0.0.1", "-s"])
        .arg(&p)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the waylay binary runs");
    // Bounded: the script stops waylay once it runs.
    let stopped = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        child.try_wait().expect("wait").is_some()
    });
    if !stopped {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    assert!(stopped && out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let at = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not logged: {err}"))
    };
    assert!(at("from the module") < at("from load"), "{err}");
    assert!(at("from load") < at("from ctx.log in load"), "{err}");
    assert!(at("from ctx.log in load") < at("listening at"), "{err}");
}

/// While a script loads, `ctx.options` holds every other option with the value the flags and
/// the config file give it, as in mitmdump (a script read `ctx.options.dumper_filter` in `load`
/// and failed: no option was known before the first `configure`). Its own options read their
/// defaults there; the value given for one arrives with `configure`.
#[cfg(feature = "python")]
#[test]
fn a_loading_script_sees_the_other_options() {
    let p = script(
        "seeopts.py",
        "from mitmproxy import ctx\n\n\
         def load(loader):\n    loader.add_option('shout', str, 'quiet', 'How.')\n    \
         names = ('dumper_filter', 'flow_detail', 'anticache', 'listen_port', 'scripts', 'shout')\n    \
         seen = [repr(getattr(ctx.options, n)) for n in names]\n    \
         open(__file__ + '.seen', 'w').write('\\n'.join(seen))\n",
    );
    let path = p.to_str().expect("utf-8");
    let confdir = p.with_extension("confdir");
    std::fs::create_dir_all(&confdir).expect("confdir");
    // A value for the script's own option too: unknown before the script loads, so it is
    // skipped then and applied after.
    std::fs::write(
        confdir.join("config.yaml"),
        "anticache: true\nlisten_port: 9\nshout: loud\n",
    )
    .expect("config");
    let out = waylay(&[
        "-s",
        path,
        "--set",
        &format!("confdir={}", confdir.display()),
        "--flow-detail",
        "3",
        "-p",
        "0",
        "--options",
        "~q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let seen = std::fs::read_to_string(format!("{path}.seen")).expect("the script wrote");
    let want = ["'~q'", "3", "True", "0", &format!("['{path}']"), "'quiet'"];
    assert_eq!(seen.lines().collect::<Vec<_>>(), want);
    let listing = String::from_utf8_lossy(&out.stdout);
    let shout = listing
        .lines()
        .find(|l| l.starts_with("shout:"))
        .expect("listed");
    assert!(shout.contains("loud"), "{shout}");
}
