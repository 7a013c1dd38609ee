//! Fires a fixed number of `request` hooks through the addon manager and exits: one case of
//! `benches/hooks.rs` without criterion, for instruction counts that do not depend on the
//! machine's load (`valgrind --tool=callgrind`, then the total divided by the hook count).
//!
//! `hook_count <addons> <inflight> <hooks> [inline|actor]`, e.g.
//! `valgrind --tool=callgrind target/release/hook_count 4 1 20000 inline`. Run it twice with
//! different hook counts and take the difference, so that start-up is not counted.

use std::time::Instant;

use futures::future::join_all;
use waylay_benches::{bench_flow, manager_with};
use waylay_core::HookKind;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let addons = usize::try_from(arg(1, 4)).unwrap_or(4);
    let inflight = usize::try_from(arg(2, 1)).unwrap_or(1).max(1);
    let hooks = arg(3, 10_000);
    let inline = std::env::args().nth(4).is_none_or(|m| m != "actor");
    let system = actix_rt::System::new();
    let elapsed = system.block_on(async move {
        let manager = manager_with(addons).await;
        manager.set_inline_hooks(inline);
        let m = manager.clone();
        // In a spawned task, as connections fire hooks (see benches/hooks.rs).
        let elapsed = actix_rt::spawn(async move {
            let mut flows: Vec<_> = (0..inflight).map(|_| Box::new(bench_flow())).collect();
            let start = Instant::now();
            for _ in 0..hooks.div_ceil(inflight as u64) {
                let fired = flows.drain(..).map(|f| m.fire(HookKind::Request, f));
                for f in join_all(fired).await {
                    match f {
                        Ok(f) => flows.push(f),
                        Err(e) => panic!("hook failed: {e}"),
                    }
                }
            }
            start.elapsed()
        })
        .await;
        manager.shutdown().await;
        elapsed
    });
    match elapsed {
        Ok(d) => println!(
            "{addons} addons, {inflight} in flight, {hooks} hooks, {}: {:.3} µs/hook",
            if inline { "inline" } else { "actor" },
            d.as_secs_f64() * 1e6 / hooks as f64
        ),
        Err(e) => panic!("bench task: {e}"),
    }
}
