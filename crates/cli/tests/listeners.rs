//! The README's mode commands, run as a user runs them: `waylay -m regular@PORT -m
//! socks5@PORT --proxyauth USER:PASS` serves curl on both listeners with the same
//! credentials, prints a startup line per listener, and names the mode on each flow line.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use waylay_testkit::{free_port, terminate, wait_listening};

const BIN: &str = env!("CARGO_BIN_EXE_waylay");

/// An HTTP/1.1 origin on 127.0.0.1 answering `hello` to every request.
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
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

#[test]
fn regular_and_socks5_listeners_with_one_proxyauth() {
    let Some(curl) = waylay_testkit::peers::program("curl") else {
        return;
    };
    let confdir = std::env::temp_dir().join(format!("waylay-cli-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&confdir);
    std::fs::create_dir_all(&confdir).expect("confdir");
    let (http, socks, origin) = (free_port(), free_port(), origin());
    let mut child = Command::new(BIN)
        .args([
            "-m",
            &format!("regular@{http}"),
            "-m",
            &format!("socks5@{socks}"),
        ])
        .args(["--proxyauth", "alice:s3cret"])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, http);
    wait_listening(&mut child, socks);
    let code = |proxy: String| {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-x", &proxy])
            .arg(format!("http://127.0.0.1:{origin}/m"))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(format!("http://alice:s3cret@127.0.0.1:{http}")), "200");
    assert_eq!(code(format!("http://alice:nope@127.0.0.1:{http}")), "407");
    assert_eq!(
        code(format!("socks5h://alice:s3cret@127.0.0.1:{socks}")),
        "200"
    );
    assert_eq!(
        code(format!("socks5h://alice:nope@127.0.0.1:{socks}")),
        "000"
    );
    assert_eq!(
        code(format!("socks5://alice:s3cret@127.0.0.1:{socks}")),
        "200"
    );
    terminate(&mut child);
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "HTTP(S) proxy listening at http://127.0.0.1:{http}"
        )) && stderr.contains(&format!("SOCKS v5 proxy listening at 127.0.0.1:{socks}")),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("[regular@"), "{stdout}");
    assert!(
        lines[2].starts_with(&format!("[socks5@{socks}] 127.0.0.1:")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&confdir);
}

/// Regression: at first start the CA was written after the listener was bound, so a client
/// reading `waylay-ca-cert.pem` as soon as the port accepted raced its creation. Now the CA
/// files exist before the port is open.
#[test]
fn the_ca_files_exist_before_the_port_accepts() {
    let dir = waylay_testkit::TempDir::new("ca-first");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["-q", "-p", &port.to_string(), "--set"])
        .arg(format!("confdir={}", dir.path().display()))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("waylay starts");
    wait_listening(&mut child, port);
    let present: Vec<bool> = ["waylay-ca.pem", "waylay-ca-cert.pem", "waylay-ca-cert.cer"]
        .iter()
        .map(|f| dir.path().join(f).is_file())
        .collect();
    terminate(&mut child);
    assert_eq!(present, [true, true, true]);
}
