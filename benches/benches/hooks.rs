//! Hook dispatch: one hook through the addon manager with 0, 1, 4 and 16 handling addons,
//! with 1 and 64 flows in flight, on one arbiter (idle addons run inline in the caller's
//! task, and the literal actor path) and across arbiters; the same addons called directly;
//! and the fast path for a hook nobody handles.
//!
//! For instruction counts of one case, see `src/bin/hook_count.rs`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use futures::future::join_all;
use waylay_benches::{DynRequest, Noop, bench_flow, manager_with};
use waylay_core::{HookKind, HttpFlow, ManagerHandle};

const ADDONS: [usize; 4] = [0, 1, 4, 16];

/// Fires `iters` `request` hooks, `inflight` at a time, and returns the time per hook
/// scaled back to `iters`.
#[expect(
    clippy::vec_box,
    reason = "hooks move boxed flows; reusing the boxes keeps allocation out of the figures"
)]
async fn fire_hooks(
    manager: &ManagerHandle,
    flows: &mut Vec<Box<HttpFlow>>,
    iters: u64,
) -> Duration {
    let inflight = flows.len() as u64;
    let batches = iters.div_ceil(inflight);
    let start = Instant::now();
    for _ in 0..batches {
        if inflight == 1 {
            let flow = flows.pop().expect("one flow");
            flows.push(manager.fire(HookKind::Request, flow).await.expect("fired"));
        } else {
            let fired = flows.drain(..).map(|f| manager.fire(HookKind::Request, f));
            for f in join_all(fired).await {
                flows.push(f.expect("fired"));
            }
        }
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (batches * inflight) as f64)
}

/// Runs [`fire_hooks`] in a task spawned on the system's arbiter, as the proxy's connections
/// do (a hook fired from `block_on`'s own future pays tokio's wake-up of a `LocalSet` from
/// outside on every reply, which no connection pays).
#[expect(clippy::vec_box, reason = "hooks move boxed flows; see fire_hooks")]
fn fire_in_task(
    system: &actix_rt::SystemRunner,
    manager: &ManagerHandle,
    flows: &mut Vec<Box<HttpFlow>>,
    iters: u64,
) -> Duration {
    let m = manager.clone();
    let mut owned = std::mem::take(flows);
    let (d, back) = system.block_on(async move {
        actix_rt::spawn(async move {
            let d = fire_hooks(&m, &mut owned, iters).await;
            (d, owned)
        })
        .await
        .expect("bench task")
    });
    *flows = back;
    d
}

#[expect(clippy::vec_box, reason = "hooks move boxed flows; see fire_hooks")]
fn boxed_flows(n: usize) -> Vec<Box<HttpFlow>> {
    (0..n).map(|_| Box::new(bench_flow())).collect()
}

/// The default path: an idle addon's hook runs in the caller's task (`manager/`), and the
/// literal actor path, every hook through the addon actors' mailboxes as when the addons are
/// busy (`manager_actor/`).
fn manager_same_arbiter(c: &mut Criterion) {
    for (group, inline) in [
        ("hook_dispatch/manager", true),
        ("hook_dispatch/manager_actor", false),
    ] {
        let mut g = c.benchmark_group(group);
        for inflight in [1, 64] {
            for n in ADDONS {
                if !inline && n == 0 {
                    continue;
                }
                let system = actix_rt::System::new();
                let manager = system.block_on(manager_with(n));
                manager.set_inline_hooks(inline);
                let mut flows = boxed_flows(inflight);
                g.bench_with_input(
                    BenchmarkId::new(format!("{inflight}_inflight"), format!("{n}_addons")),
                    &n,
                    |b, _| {
                        b.iter_custom(|iters| fire_in_task(&system, &manager, &mut flows, iters))
                    },
                );
                system.block_on(manager.shutdown());
            }
        }
        g.finish();
    }
}

/// The manager and its addons on another arbiter (thread), hooks fired from this one: what
/// a hook from worker 1 costs when the manager lives on worker 0.
fn manager_cross_arbiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("hook_dispatch/cross_arbiter");
    for inflight in [1, 64] {
        for n in [1, 4] {
            let system = actix_rt::System::new();
            let arbiter = actix::Arbiter::new();
            let (tx, rx) = tokio::sync::oneshot::channel();
            arbiter.spawn(async move {
                let _ = tx.send(manager_with(n).await);
            });
            let manager = system.block_on(rx).expect("manager started");
            let mut flows = boxed_flows(inflight);
            g.bench_with_input(
                BenchmarkId::new(format!("{inflight}_inflight"), format!("{n}_addons")),
                &n,
                |b, _| b.iter_custom(|iters| fire_in_task(&system, &manager, &mut flows, iters)),
            );
            arbiter.stop();
            let _ = arbiter.join();
        }
    }
    g.finish();
}

fn direct_calls(c: &mut Criterion) {
    let mut g = c.benchmark_group("hook_dispatch/direct");
    for n in ADDONS {
        let mut addons: Vec<Noop> = (0..n).map(|_| Noop::default()).collect();
        let mut flow = Box::new(bench_flow());
        g.bench_with_input(
            BenchmarkId::new("generic", format!("{n}_addons")),
            &n,
            |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    async {
                        for _ in 0..iters {
                            for a in addons.iter_mut() {
                                waylay_core::Addon::request(a, black_box(&mut flow)).await;
                            }
                        }
                    }
                    .now_or_never()
                    .expect("no-op hooks never wait");
                    start.elapsed()
                })
            },
        );

        let mut addons: Vec<Box<dyn DynRequest>> = (0..n)
            .map(|_| Box::new(Noop::default()) as Box<dyn DynRequest>)
            .collect();
        g.bench_with_input(
            BenchmarkId::new("dyn", format!("{n}_addons")),
            &n,
            |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    async {
                        for _ in 0..iters {
                            for a in addons.iter_mut() {
                                a.request_dyn(black_box(&mut flow)).await;
                            }
                        }
                    }
                    .now_or_never()
                    .expect("no-op hooks never wait");
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

fn fast_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("hook_dispatch/fast_path");
    let system = actix_rt::System::new();
    // Four addons handling `request`; `response` is handled by none.
    let manager = system.block_on(manager_with(4));
    g.bench_function("handles", |b| {
        b.iter(|| black_box(&manager).handles(black_box(HookKind::Response)))
    });
    let mut flow = Some(Box::new(bench_flow()));
    g.bench_function("fire_unhandled", |b| {
        b.iter(|| {
            let f = flow.take().expect("the flow is put back");
            let f = manager
                .fire(HookKind::Response, black_box(f))
                .now_or_never()
                .expect("no message is sent")
                .expect("fired");
            flow = Some(f);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    fast_path,
    direct_calls,
    manager_same_arbiter,
    manager_cross_arbiter
);
criterion_main!(benches);
