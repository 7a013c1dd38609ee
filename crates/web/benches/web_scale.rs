//! The web UI at scale, without a network: flows pushed through the addon's hooks
//! (`request`, then `response`, as the proxy calls them) into the ring and the SQLite store.
//! Prints the process's RSS at 100, 10k, 100k, 1M flows (flat once the ring is full: older
//! flows live on disk), and, when Playwright and Chromium are there
//! (`WAYLAY_PLAYWRIGHT_PY`, `scripts/peers.sh`), the time from opening the UI's URL to the
//! first rendered rows in Chromium at each of those points.
//!
//! ```sh
//! cargo bench -p waylay-web --bench web_scale                 # 1M flows
//! WEB_SCALE_FLOWS=100000 cargo bench -p waylay-web --bench web_scale
//! ```
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: failing loudly is the point"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use waylay_core::flow::Client;
use waylay_core::{Addon, HttpFlow, Request, Response};
use waylay_web::{WebConfig, WebUi};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A flow like the proxy records for a small API call: 10 request headers, 8 response
/// headers, a 1 KiB response body.
fn flow(client: &Arc<Client>, i: usize) -> HttpFlow {
    let mut q =
        Request::from_url("GET", &format!("http://api.example.com/items/{i}?page=2")).unwrap();
    for (k, v) in [
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) waylay-bench"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("x-request-id", "4f1c2a9e-0b7d-4c1e-9f2a-8d6b5e3c1a00"),
        ("referer", "http://api.example.com/"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
    ] {
        q.headers.append(k, v);
    }
    let mut f = HttpFlow::new(client.clone(), q);
    let body: Vec<u8> = (0..1024).map(|j| b'a' + ((i + j) % 26) as u8).collect();
    let mut r = Response::make(
        200,
        body,
        [
            ("content-type", "application/json"),
            ("server", "bench"),
            ("date", "Mon, 30 Nov 2026 18:00:00 GMT"),
            ("cache-control", "private, max-age=0"),
            ("x-frame-options", "DENY"),
            ("vary", "Accept-Encoding"),
            ("etag", "\"abcdef0123\""),
        ],
    );
    r.timestamp_start = f.request.timestamp_start + 0.01;
    f.response = Some(r);
    f
}

/// The median time (ms) from opening `url` to the first rendered flow rows, in Chromium.
fn first_page(url: &str) -> Option<(f64, String)> {
    let py = std::env::var_os("WAYLAY_PLAYWRIGHT_PY")?;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/first_page.py");
    let out = std::process::Command::new(py)
        .args([script, url, chromium, "5"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "first_page.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut ms: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    ms.sort_by(f64::total_cmp);
    Some((*ms.get(ms.len() / 2)?, text.trim().replace('\n', "; ")))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let total: usize = std::env::var("WEB_SCALE_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("waylay-web-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("flows.sqlite");
    let (mut addon, ui) = WebUi::bind(WebConfig {
        port: 0,
        token: Some(TOKEN.into()),
        store_path: Some(db.clone()),
        ..WebConfig::default()
    })
    .unwrap();
    let url = ui.url();
    let client = Arc::new(Client::new(
        "127.0.0.1:50000".parse().unwrap(),
        "127.0.0.1:8080".parse().unwrap(),
    ));
    println!("web_scale: {total} flows of 1 KiB through the web addon (ring 10k, SQLite store)");
    println!("RSS before: {:.1} MiB", rss_mib());
    println!(
        "| flows | RSS MiB | store file MiB | flows/s (since last) | first page in Chromium, median of 5 |"
    );
    println!("|---:|---:|---:|---:|---|");
    let mut checkpoints = vec![100, 10_000, 100_000, 300_000, 1_000_000];
    checkpoints.retain(|c| *c <= total);
    if checkpoints.last() != Some(&total) {
        checkpoints.push(total);
    }
    let mut done = 0;
    let mut since = Instant::now();
    for cp in checkpoints {
        let from = done;
        futures::executor::block_on(async {
            while done < cp {
                let mut f = flow(&client, done);
                addon.request(&mut f).await;
                f.live = false;
                addon.response(&mut f).await;
                done += 1;
                // Keep the writer's queue short (it drops flows when full, by design): the
                // point here is every flow stored.
                if done % 1000 == 0 {
                    while (done as u64).saturating_sub(ui.stored_flows().unwrap()) > 3000 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        });
        while ui.stored_flows().unwrap() < done as u64 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let rate = (done - from) as f64 / since.elapsed().as_secs_f64();
        let file = ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
            .map(|m| m.len())
            .sum::<u64>() as f64
            / (1 << 20) as f64;
        let rss = rss_mib();
        let page = first_page(&url)
            .map(|(m, all)| format!("{m:.0} ms ({all})"))
            .unwrap_or_else(|| "not measured (no WAYLAY_PLAYWRIGHT_PY or chromium)".into());
        println!("| {done} | {rss:.1} | {file:.0} | {rate:.0} | {page} |");
        since = Instant::now();
    }
    drop(addon);
    drop(ui);
    let _ = std::fs::remove_dir_all(&dir);
}
