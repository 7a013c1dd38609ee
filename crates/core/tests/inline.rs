//! Hooks run in the caller's task when the addon is idle (its state handed over, never
//! shared), and through the addon actor's mailbox when it is busy or the caller is on
//! another thread: both paths keep one hook at a time per addon, registration order, the
//! panic guard, `addon_timeout`, and a slow addon holding only its own flows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::join_all;
use tokio::sync::{Notify, oneshot};
use waylay_core::hooks::LogLevel;
use waylay_core::{
    Addon, AddonManager, Called, HookKind, HookSet, HttpFlow, ManagerHandle, Options,
};
use waylay_testkit::{AddonHarness, FlowExt, tflow, tresp, within};

/// Appends its tag to the `x-chain` request header.
struct Tag(&'static str);

impl Addon for Tag {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        let prev = flow.request.headers.get("x-chain").unwrap_or("").to_owned();
        flow.request
            .headers
            .insert("x-chain", format!("{prev}{}", self.0));
    }
}

fn chain(flow: &HttpFlow) -> &str {
    flow.request.headers.get("x-chain").unwrap_or("")
}

fn numbered(n: usize) -> Box<HttpFlow> {
    let mut f = tflow();
    f.request.headers.insert("x-n", n.to_string());
    Box::new(f)
}

fn number(flow: &HttpFlow) -> String {
    flow.request.headers.get("x-n").unwrap_or("").to_owned()
}

/// Fires `request` once, polled once: `Some` when it completed without yielding.
fn fire_now(m: &ManagerHandle, flow: Box<HttpFlow>) -> Option<Box<HttpFlow>> {
    m.fire(HookKind::Request, flow)
        .now_or_never()
        .map(|r| r.expect("fired"))
}

/// `fire`'s and `call`'s futures, and `fire_in`'s rest of the walk, are `Send`: an embedder
/// may await them on any runtime, from any thread. Checked by the compiler (this does not
/// build otherwise); session 14's first `Called` lost it and nothing else in the workspace
/// noticed.
#[test]
fn hook_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn check(m: &ManagerHandle, cx: &mut std::task::Context<'_>) {
        send(&m.fire(HookKind::Request, Box::new(tflow())));
        send(&m.call(waylay_core::Hook::Request(Box::new(tflow()))));
        if let Called::Later(rest) = m.fire_in(HookKind::Request, Box::new(tflow()), cx) {
            send(&rest);
        }
    }
    let _ = check;
}

/// `fire_in` is the walk's first step inside the caller's own poll: `Done` when every addon
/// ran there, `Later` (the rest of the walk, to await) when one could not.
#[actix_rt::test]
async fn fire_in_finishes_in_the_callers_poll_or_hands_back_the_rest() {
    let h = AddonHarness::with_addons((Tag("a"), Tag("b"))).await;
    let m = h.manager();
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    match m.fire_in(HookKind::Request, Box::new(tflow()), &mut cx) {
        Called::Done(r) => assert_eq!(chain(&r.expect("walked")), "ab"),
        Called::Later(_) => panic!("idle addons run in the caller's poll"),
    }

    m.set_inline_hooks(false);
    let rest = match m.fire_in(HookKind::Request, Box::new(tflow()), &mut cx) {
        Called::Done(_) => panic!("through the mailboxes, nothing finishes in this poll"),
        Called::Later(rest) => rest,
    };
    assert_eq!(chain(&rest.await.expect("walked")), "ab");

    // A hook nobody handles gives the payload back at once, untouched.
    match m.fire_in(HookKind::TcpStart, Box::new(tflow()), &mut cx) {
        Called::Done(r) => assert_eq!(chain(&r.expect("untouched")), ""),
        Called::Later(_) => panic!("an unhandled hook is not walked"),
    }
}

#[actix_rt::test]
async fn an_idle_addons_hook_runs_in_the_callers_task_in_registration_order() {
    let h = AddonHarness::with_addons((Tag("a"), Tag("b"), Tag("c"))).await;
    // Inline: no message, so the hook completes in the caller's first poll.
    let flow = fire_now(h.manager(), Box::new(tflow())).expect("ran inline");
    assert_eq!(chain(&flow), "abc");

    // The literal actor path gives the same result, through the mailboxes.
    h.manager().set_inline_hooks(false);
    assert!(fire_now(h.manager(), Box::new(tflow())).is_none());
    let flow = h
        .manager()
        .fire(HookKind::Request, Box::new(tflow()))
        .await
        .unwrap();
    assert_eq!(chain(&flow), "abc");
}

/// The requests an addon saw, in order (their `x-n`).
type Seen = Arc<Mutex<Vec<String>>>;

/// Holds its first request until released; records the order in which it saw requests.
struct Gate {
    entered: Option<oneshot::Sender<()>>,
    release: Arc<Notify>,
    seen: Seen,
}

impl Addon for Gate {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.seen.lock().expect("lock").push(number(flow));
        if let Some(tx) = self.entered.take() {
            let _ = tx.send(());
            self.release.notified().await;
        }
        flow.request.headers.insert("x-gate", "passed");
    }
}

fn gate() -> (Gate, Arc<Notify>, oneshot::Receiver<()>, Seen) {
    let release = Arc::new(Notify::new());
    let (tx, rx) = oneshot::channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let g = Gate {
        entered: Some(tx),
        release: release.clone(),
        seen: seen.clone(),
    };
    (g, release, rx, seen)
}

#[actix_rt::test]
async fn a_busy_addon_gets_its_hooks_through_its_actor_in_order_then_runs_inline_again() {
    let (g, release, entered, seen) = gate();
    let h = AddonHarness::with_addons((g, Tag("t"))).await;
    let m = h.manager().clone();

    // Flow 1 waits inside the gate: its hook was handed to a task of its own.
    let m1 = m.clone();
    let first = actix_rt::spawn(async move { m1.fire(HookKind::Request, numbered(1)).await });
    within("the gate holds flow 1", entered).await.unwrap();

    // The gate is busy: flows 2 and 3 go to its actor and wait there, in order.
    let mut later = Vec::new();
    for n in [2, 3] {
        let m = m.clone();
        later.push(actix_rt::spawn(async move {
            m.fire(HookKind::Request, numbered(n)).await
        }));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!first.is_finished());
    assert!(later.iter().all(|t| !t.is_finished()));
    assert_eq!(*seen.lock().unwrap(), ["1"]);

    release.notify_one();
    // Fired as the gate lets go: it must queue behind flows 2 and 3, not overtake them.
    later.push(actix_rt::spawn({
        let m = m.clone();
        async move { m.fire(HookKind::Request, numbered(4)).await }
    }));
    let flow = within("flow 1", first).await.unwrap().unwrap();
    assert_eq!(chain(&flow), "t");
    assert_eq!(flow.request.headers.get("x-gate"), Some("passed"));
    for t in later {
        let flow = within("flows 2 to 4", t).await.unwrap().unwrap();
        assert_eq!(chain(&flow), "t");
        assert_eq!(flow.request.headers.get("x-gate"), Some("passed"));
    }
    assert_eq!(*seen.lock().unwrap(), ["1", "2", "3", "4"]);

    // Idle again: the next hook runs inline.
    let flow = fire_now(&m, numbered(5)).expect("inline once idle again");
    assert_eq!(chain(&flow), "t");
    assert_eq!(*seen.lock().unwrap(), ["1", "2", "3", "4", "5"]);
}

/// Counts responses in a `count` header.
#[derive(Default)]
struct Counter(u64);

impl Addon for Counter {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Response])
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        self.0 += 1;
        if let Some(r) = flow.response.as_mut() {
            r.headers.insert("count", self.0.to_string());
        }
    }
}

#[actix_rt::test]
async fn a_slow_addon_holds_only_its_flow_while_other_flows_pass_inline() {
    let (g, release, entered, _seen) = gate();
    let h = AddonHarness::with_addons((g, Counter::default())).await;
    let m = h.manager().clone();
    let m1 = m.clone();
    let held = actix_rt::spawn(async move { m1.fire(HookKind::Request, numbered(1)).await });
    within("the gate holds flow 1", entered).await.unwrap();

    // Other flows, through the other addon, pass at once while the gate holds flow 1.
    for n in 1..=3 {
        let flow = m
            .fire(HookKind::Response, Box::new(tflow().with_response(tresp())))
            .now_or_never()
            .expect("passes inline")
            .unwrap();
        assert_eq!(
            flow.response.unwrap().headers.get("count"),
            Some(n.to_string().as_str())
        );
    }
    assert!(!held.is_finished());
    release.notify_one();
    let flow = within("flow 1", held).await.unwrap().unwrap();
    assert_eq!(flow.request.headers.get("x-gate"), Some("passed"));
}

/// Counts how many of its hooks run at once, yielding inside each.
struct Overlap {
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    calls: u64,
}

impl Addon for Overlap {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.calls += 1;
        let n = flow.request.headers.get("x-n").unwrap_or("").to_owned();
        // Some hooks finish in their first poll (inline), others wait (handed over).
        if n.parse::<u32>().unwrap_or(0) % 2 == 0 {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
        }
        flow.request
            .headers
            .insert("x-call", self.calls.to_string());
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

#[actix_rt::test]
async fn hooks_of_one_addon_never_overlap_on_either_path() {
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let h = AddonHarness::with_addons((
        Overlap {
            inside: inside.clone(),
            most: most.clone(),
            calls: 0,
        },
        Tag("z"),
    ))
    .await;
    let m = h.manager().clone();
    let fired = (0..16).map(|n| m.fire(HookKind::Request, numbered(n)));
    let flows = within("16 flows", join_all(fired)).await;
    let mut calls: Vec<u64> = flows
        .into_iter()
        .map(|f| {
            let f = f.unwrap();
            assert_eq!(chain(&f), "z");
            f.request.headers.get("x-call").unwrap().parse().unwrap()
        })
        .collect();
    calls.sort_unstable();
    assert_eq!(calls, (1..=16).collect::<Vec<u64>>());
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two hooks of one addon overlapped"
    );
}

/// Panics on its first request, after touching the flow.
#[derive(Default)]
struct PanicsOnce(usize);

impl Addon for PanicsOnce {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.0 += 1;
        flow.request.headers.insert("x-touched", self.0.to_string());
        if self.0 == 1 {
            panic!("boom inline");
        }
    }
}

#[actix_rt::test]
async fn a_panic_on_the_inline_path_is_caught_and_the_flow_returned() {
    let h = AddonHarness::with_addons((Tag("a"), PanicsOnce::default(), Tag("c"))).await;
    let flow = fire_now(h.manager(), Box::new(tflow())).expect("ran inline, panic and all");
    assert_eq!(chain(&flow), "ac");
    assert_eq!(flow.request.headers.get("x-touched"), Some("1"));
    assert!(h.has_log_at(LogLevel::Error, "boom inline"));
    assert!(h.has_log("addon=PanicsOnce"));

    // The addon keeps its state, and the next hook runs inline again.
    let flow = fire_now(h.manager(), Box::new(tflow())).expect("inline");
    assert_eq!(chain(&flow), "ac");
    assert_eq!(flow.request.headers.get("x-touched"), Some("2"));
}

/// Never finishes its first request.
#[derive(Default)]
struct HangsOnce(usize);

impl Addon for HangsOnce {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.0 += 1;
        flow.request.headers.insert("x-hang", self.0.to_string());
        if self.0 == 1 {
            std::future::pending::<()>().await;
        }
    }
}

#[actix_rt::test]
async fn a_hook_started_inline_and_over_addon_timeout_is_reported() {
    let mut h = AddonHarness::with_addons((Tag("a"), HangsOnce::default(), Tag("c"))).await;
    h.set_options(&["addon_timeout=1"]).await.unwrap();
    let m = h.manager().clone();

    let mut hung = Box::pin(m.fire(HookKind::Request, Box::new(tflow())));
    // Its first poll ran `a` and the first poll of the hanging hook inline.
    assert!((&mut hung).now_or_never().is_none());
    // Meanwhile the hanging addon is busy: this flow queues at its actor.
    let queued = actix_rt::spawn({
        let m = m.clone();
        async move { m.fire(HookKind::Request, Box::new(tflow())).await }
    });
    let flow = within("the timeout", hung).await.unwrap();
    assert_eq!(chain(&flow), "ac");
    assert!(h.has_log_at(LogLevel::Error, "addon timed out after 1.000s"));
    assert!(h.has_log("addon=HangsOnce"));

    let flow = within("the queued flow", queued).await.unwrap().unwrap();
    assert_eq!(chain(&flow), "ac");
    assert_eq!(flow.request.headers.get("x-hang"), Some("2"));
}

/// Records the thread its `request` hook ran on.
struct OnThread(Arc<Mutex<Vec<std::thread::ThreadId>>>);

impl Addon for OnThread {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, _flow: &mut HttpFlow) {
        self.0
            .lock()
            .expect("not poisoned")
            .push(std::thread::current().id());
    }
}

#[test]
fn a_hook_from_another_thread_goes_through_the_manager() {
    let sys = actix_rt::System::new();
    let arbiter = actix::Arbiter::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let seen = ran_on.clone();
    arbiter.spawn(async move {
        let m = AddonManager::start(Options::new());
        m.add(Tag("x")).await.unwrap();
        m.add(OnThread(seen)).await.unwrap();
        m.add(Tag("y")).await.unwrap();
        let _ = tx.send((m, std::thread::current().id()));
    });
    let (m, home) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("manager started");
    sys.block_on(async {
        // Not the addons' thread: no inline run here, a message to the manager's thread,
        // where the walk runs. (Whether the reply is there by the caller's first poll is a
        // race between the threads, so it is the thread the hook ran on that is checked.)
        let flow = within(
            "cross-thread hook",
            m.fire(HookKind::Request, Box::new(tflow())),
        )
        .await
        .unwrap();
        assert_eq!(chain(&flow), "xy");
    });
    assert_ne!(home, std::thread::current().id());
    assert_eq!(*ran_on.lock().unwrap(), vec![home]);
    arbiter.stop();
    let _ = arbiter.join();
}

/// Waits once (a timer) before tagging: its hook is handed over to a task of its own.
struct SlowTag(&'static str);

impl Addon for SlowTag {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let prev = flow.request.headers.get("x-chain").unwrap_or("").to_owned();
        flow.request
            .headers
            .insert("x-chain", format!("{prev}{}", self.0));
    }
}

/// The inline pass stops at an addon whose hook waits; the walk goes on from there (the
/// addons after it inline again), in registration order, on both paths.
#[actix_rt::test]
async fn a_walk_stopped_by_a_waiting_addon_goes_on_with_the_addons_after_it() {
    let h = AddonHarness::with_addons((Tag("a"), SlowTag("b"), Tag("c"), Tag("d"))).await;
    for _ in 0..3 {
        assert!(
            fire_now(h.manager(), Box::new(tflow())).is_none(),
            "b waits: the hook does not complete in the first poll"
        );
        let flow = within("a walk past a waiting addon", async {
            h.manager().fire(HookKind::Request, Box::new(tflow())).await
        })
        .await
        .unwrap();
        assert_eq!(chain(&flow), "abcd");
    }
    // The flows dropped after their first poll above did not lose an addon's state:
    // the walk still completes and every addon is still on the route.
    h.manager().set_inline_hooks(false);
    let flow = within("the actor path", async {
        h.manager().fire(HookKind::Request, Box::new(tflow())).await
    })
    .await
    .unwrap();
    assert_eq!(chain(&flow), "abcd");
}

/// What addons saw, in order: (addon, the flow's `x-n`).
type Events = Arc<Mutex<Vec<(&'static str, String)>>>;

/// Records each request it sees.
struct Rec(&'static str, Events);

impl Addon for Rec {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.1.lock().expect("lock").push((self.0, number(flow)));
    }
}

/// Records each request it sees, and holds the first until released.
struct HoldFirst {
    events: Events,
    entered: Option<oneshot::Sender<()>>,
    release: Arc<Notify>,
}

impl Addon for HoldFirst {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        self.events
            .lock()
            .expect("lock")
            .push(("hold", number(flow)));
        if let Some(tx) = self.entered.take() {
            let _ = tx.send(());
            self.release.notified().await;
        }
    }
}

/// Where `addon` saw each flow, in order.
fn seen_by(events: &Events, addon: &str) -> Vec<String> {
    let events = events.lock().expect("lock");
    events
        .iter()
        .filter(|(a, _)| *a == addon)
        .map(|(_, n)| n.clone())
        .collect()
}

/// An addon in the middle of the chain that waits holds only the flows that reach it: the
/// addons before it go on with other flows, the ones after it see no flow before it let
/// that flow through, each flow passes the addons in registration order, and the flows
/// queued behind the waiting one pass it (and the addons after it) in the order they came.
#[actix_rt::test]
async fn an_addon_in_the_middle_that_waits_holds_its_flows_and_later_addons_run_in_order() {
    let events = Events::default();
    let release = Arc::new(Notify::new());
    let (tx, entered) = oneshot::channel();
    let hold = HoldFirst {
        events: events.clone(),
        entered: Some(tx),
        release: release.clone(),
    };
    let h = AddonHarness::with_addons((
        Rec("a", events.clone()),
        hold,
        Rec("c", events.clone()),
        Rec("d", events.clone()),
    ))
    .await;
    let m = h.manager().clone();
    let mut flows = Vec::new();
    flows.push(actix_rt::spawn({
        let m = m.clone();
        async move { m.fire(HookKind::Request, numbered(1)).await }
    }));
    within("the middle addon holds flow 1", entered)
        .await
        .unwrap();
    for n in [2, 3] {
        let m = m.clone();
        flows.push(actix_rt::spawn(async move {
            m.fire(HookKind::Request, numbered(n)).await
        }));
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // `a` went on with flows 2 and 3; they queue at the busy middle addon, and nothing
    // reached `c` or `d`.
    assert_eq!(seen_by(&events, "a"), ["1", "2", "3"]);
    assert_eq!(seen_by(&events, "hold"), ["1"]);
    assert!(seen_by(&events, "c").is_empty());
    assert!(seen_by(&events, "d").is_empty());
    assert!(flows.iter().all(|t| !t.is_finished()));

    release.notify_one();
    for (i, t) in flows.into_iter().enumerate() {
        let flow = within("the held and queued flows", t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(number(&flow), (i + 1).to_string());
    }
    for addon in ["hold", "c", "d"] {
        assert_eq!(seen_by(&events, addon), ["1", "2", "3"], "{addon}");
    }
    let events = events.lock().expect("lock").clone();
    for n in ["1", "2", "3"] {
        let order: Vec<&str> = events
            .iter()
            .filter(|(_, m)| m == n)
            .map(|(a, _)| *a)
            .collect();
        assert_eq!(order, ["a", "hold", "c", "d"], "flow {n}");
    }
}

/// A flow whose walk is dropped while its hook queues at a busy addon's actor (its client
/// hung up) is not counted as queued for good: once the addon is idle again its hooks run
/// inline again.
#[actix_rt::test]
async fn a_hook_dropped_while_queued_at_a_busy_addon_does_not_keep_it_off_the_inline_path() {
    let (g, release, entered, seen) = gate();
    let h = AddonHarness::with_addons((g, Tag("t"))).await;
    let m = h.manager().clone();
    let first = actix_rt::spawn({
        let m = m.clone();
        async move { m.fire(HookKind::Request, numbered(1)).await }
    });
    within("the gate holds flow 1", entered).await.unwrap();
    // Flow 2 queues at the gate's actor, which takes it and waits for the gate's state;
    // flow 3 queues behind it in the mailbox, and its caller goes away.
    let second = actix_rt::spawn({
        let m = m.clone();
        async move { m.fire(HookKind::Request, numbered(2)).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let mut third = Box::pin(m.fire(HookKind::Request, numbered(3)));
    assert!((&mut third).now_or_never().is_none());
    drop(third);

    release.notify_one();
    within("flow 1", first).await.unwrap().unwrap();
    within("flow 2", second).await.unwrap().unwrap();
    // The actor passes over the dropped hook (actix drops it unhandled).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let flow = fire_now(&m, numbered(4)).expect("inline once idle again");
    assert_eq!(chain(&flow), "t");
    assert_eq!(*seen.lock().unwrap(), ["1", "2", "4"]);
}
