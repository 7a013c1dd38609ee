//! One `response` hook on a 1 KiB flow with 20 headers: the seed's AddHeader in Rust, a
//! no-op Python script and AddHeader as a Python script (`ScriptAddon`), called directly
//! (what Python adds to a hook) and through the addon manager with one flow in flight (what
//! a hook costs end to end without sockets).
//!
//! `cargo bench -p waylay-benches --features python --bench script_hooks`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use waylay_addons::ScriptAddon;
use waylay_benches::{AddHeader, PY_ADDHEADER, PY_NOOP, bench_flow};
use waylay_core::flow::Response;
use waylay_core::{Addon, AddonManager, HookKind, HttpFlow, Options};
use waylay_testkit::TempDir;

fn flow() -> HttpFlow {
    let mut f = bench_flow();
    f.response = Some(Response::make(
        200,
        vec![b'x'; 1024],
        [("content-type", "text/plain"), ("server", "bench")],
    ));
    f
}

fn script(dir: &TempDir, name: &str, src: &str) -> ScriptAddon {
    let p = dir.path().join(name);
    std::fs::write(&p, src).expect("write script");
    ScriptAddon::load(&p).expect("script loads")
}

fn direct<A: Addon>(addon: &mut A, flow: &mut HttpFlow, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        addon
            .response(flow)
            .now_or_never()
            .expect("a plain hook finishes at once");
    }
    start.elapsed()
}

fn direct_calls(c: &mut Criterion) {
    let dir = TempDir::new("script-bench");
    let mut g = c.benchmark_group("script_hook/direct");
    let mut f = flow();
    let mut rust = AddHeader::default();
    g.bench_function("rust_addheader", |b| {
        b.iter_custom(|n| direct(&mut rust, &mut f, n))
    });
    let mut noop = script(&dir, "noop.py", PY_NOOP);
    g.bench_function("py_noop", |b| {
        b.iter_custom(|n| direct(&mut noop, &mut f, n))
    });
    let mut add = script(&dir, "addheader.py", PY_ADDHEADER);
    g.bench_function("py_addheader", |b| {
        b.iter_custom(|n| direct(&mut add, &mut f, n))
    });
    g.finish();
}

fn through_manager<A: Addon>(c: &mut Criterion, name: &str, addon: A) {
    let system = actix_rt::System::new();
    let manager = system.block_on(async {
        let m = AddonManager::start(Options::new());
        m.add(addon).await.expect("added");
        m
    });
    let mut slot = Some(Box::new(flow()));
    c.bench_function(&format!("script_hook/manager/{name}"), |b| {
        b.iter_custom(|iters| {
            let m = manager.clone();
            let mut f = slot.take().expect("the flow");
            let (d, back) = system.block_on(async move {
                actix_rt::spawn(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        f = m.fire(HookKind::Response, f).await.expect("fired");
                    }
                    (start.elapsed(), f)
                })
                .await
                .expect("bench task")
            });
            slot = Some(back);
            d
        })
    });
    system.block_on(manager.shutdown());
}

fn managed(c: &mut Criterion) {
    let dir = TempDir::new("script-bench-m");
    through_manager(c, "rust_addheader", AddHeader::default());
    through_manager(c, "py_noop", script(&dir, "noop.py", PY_NOOP));
    through_manager(
        c,
        "py_addheader",
        script(&dir, "addheader.py", PY_ADDHEADER),
    );
}

criterion_group!(
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = direct_calls, managed
);
criterion_main!(benches);
