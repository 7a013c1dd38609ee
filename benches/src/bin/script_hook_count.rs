//! Calls a `response` hook a fixed number of times on fresh flows and exits, for instruction
//! counts that do not depend on the machine's load: a no-op Python script, the seed's
//! AddHeader as a Python script, AddHeader in Rust, or no hook at all (the flow's making).
//!
//! `script_hook_count <none|rust|py_noop|py_addheader> <hooks> [direct|manager]`, e.g.
//! `PYTHONHASHSEED=0 valgrind --tool=callgrind target/release/script_hook_count py_noop 2200`.
//! Run it with 200 and 2200 hooks and divide the difference by 2000 (start-up, Python's
//! included, is not counted), then subtract `none`'s figure: what one hook adds.
//! `direct` (the default) calls the addon's method; `manager` fires the hook through the
//! addon manager (as `AddonHarness` and the proxy do: the route, the slot, the inline run
//! on the caller's thread), one flow in flight.

use std::sync::Arc;

use futures::FutureExt;
use waylay_addons::ScriptAddon;
use waylay_benches::{AddHeader, PY_ADDHEADER, PY_NOOP};
use waylay_core::flow::{Client, Request, Response};
use waylay_core::{Addon, AddonManager, HookKind, HttpFlow, Options};

/// A request with 20 headers and a 1 KiB body, a 1 KiB response with 3 headers.
fn flow() -> HttpFlow {
    let mut req = Request::from_url("GET", "http://example.com/path?x=1").expect("a URL");
    for i in 0..18 {
        req.headers
            .append(format!("x-header-{i}"), "value value value");
    }
    req.set_raw_content(vec![b'x'; 1024]);
    let client = Client::new(([127, 0, 0, 1], 5000).into(), ([127, 0, 0, 1], 8080).into());
    let mut f = HttpFlow::new(Arc::new(client), req);
    f.response = Some(Response::make(
        200,
        vec![b'x'; 1024],
        [("content-type", "text/plain"), ("server", "bench")],
    ));
    f
}

fn run<A: Addon>(a: &mut A, n: u64) {
    for _ in 0..n {
        let mut f = flow();
        f.live = true;
        a.response(&mut f)
            .now_or_never()
            .expect("a plain hook finishes at once");
        std::hint::black_box(&f);
    }
}

/// Fires `response` `n` times through an addon manager holding `addon` (none: no addon).
fn run_managed<A: Addon>(addon: Option<A>, n: u64) {
    let system = actix_rt::System::new();
    system.block_on(async move {
        let manager = AddonManager::start(Options::new());
        if let Some(a) = addon
            && let Err(e) = manager.add(a).await
        {
            panic!("adding the addon: {e}");
        }
        let m = manager.clone();
        // In a spawned task, as a connection fires hooks.
        actix_rt::spawn(async move {
            for _ in 0..n {
                let mut f = flow();
                f.live = true;
                match m.fire(HookKind::Response, Box::new(f)).await {
                    Ok(f) => {
                        std::hint::black_box(&f);
                    }
                    Err(e) => panic!("the hook: {e}"),
                }
            }
        })
        .await
        .expect("the firing task");
    });
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "py_noop".into());
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let managed = std::env::args().nth(3).is_some_and(|m| m == "manager");
    let src = match which.as_str() {
        "rust" if managed => return run_managed(Some(AddHeader::default()), n),
        "none" if managed => return run_managed(None::<AddHeader>, n),
        "rust" => return run(&mut AddHeader::default(), n),
        "none" => {
            for _ in 0..n {
                std::hint::black_box(flow());
            }
            return;
        }
        "py_addheader" => PY_ADDHEADER,
        _ => PY_NOOP,
    };
    let dir = std::env::temp_dir().join(format!("script-hook-count-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join(format!("{which}.py"));
    std::fs::write(&path, src).expect("the script written");
    let mut script = ScriptAddon::load(&path).expect("the script loads");
    if managed {
        run_managed(Some(script), n);
    } else {
        run(&mut script, n);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
