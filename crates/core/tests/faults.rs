//! Faults stay inside the addon that caused them: panics, overruns, addons that keep
//! failing, and `configure` rejections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use waylay_core::hooks::{Configure, LogLevel};
use waylay_core::{AddError, Addon, HookKind, HttpFlow, OptionsError};
use waylay_testkit::{AddonHarness, tflow};

/// Appends its tag to the `x-chain` request header.
struct Tag(&'static str);

impl Addon for Tag {
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

/// Touches the flow, then panics on its first request only.
#[derive(Default)]
struct PanicsOnce {
    calls: usize,
}

impl Addon for PanicsOnce {
    async fn request(&mut self, flow: &mut HttpFlow) {
        self.calls += 1;
        flow.request
            .headers
            .insert("x-touched", self.calls.to_string());
        if self.calls == 1 {
            panic!("boom in request");
        }
        Tag("b").request(flow).await;
    }
}

#[actix_rt::test]
async fn a_panicking_addon_is_logged_and_the_flow_goes_on() {
    let mut h = AddonHarness::with_addons((Tag("a"), PanicsOnce::default(), Tag("c"))).await;

    let flow = h.request(tflow()).await;
    // The flow came back with what the panicking addon left, and the next addon ran.
    assert_eq!(chain(&flow), "ac");
    assert_eq!(flow.request.headers.get("x-touched"), Some("1"));
    let fault = h
        .logs()
        .into_iter()
        .find(|e| e.message.contains("boom in request"))
        .expect("the panic is logged");
    assert_eq!(fault.level, LogLevel::Error);
    assert!(
        fault.message.contains("addon=PanicsOnce"),
        "{}",
        fault.message
    );
    assert!(fault.message.contains("hook=request"), "{}", fault.message);

    // The addon keeps its state and serves the next flow.
    let flow = h.request(tflow()).await;
    assert_eq!(chain(&flow), "abc");
    assert_eq!(flow.request.headers.get("x-touched"), Some("2"));
}

/// Never finishes its first request.
#[derive(Default)]
struct HangsOnce {
    calls: usize,
}

impl Addon for HangsOnce {
    async fn request(&mut self, flow: &mut HttpFlow) {
        self.calls += 1;
        flow.request
            .headers
            .insert("x-hang", self.calls.to_string());
        if self.calls == 1 {
            std::future::pending::<()>().await;
        }
        Tag("b").request(flow).await;
    }
}

#[actix_rt::test]
async fn a_hook_overrunning_addon_timeout_is_reported_and_the_flow_goes_on() {
    let mut h = AddonHarness::with_addons((Tag("a"), HangsOnce::default(), Tag("c"))).await;
    h.set_options(&["addon_timeout=1"]).await.unwrap();

    // Takes the one second of `addon_timeout`.
    let flow = h.request(tflow()).await;
    assert_eq!(chain(&flow), "ac");
    assert!(h.has_log_at(LogLevel::Error, "addon timed out after 1.000s"));
    assert!(h.has_log("addon=HangsOnce"));

    let flow = h.request(tflow()).await;
    assert_eq!(chain(&flow), "abc");
    assert_eq!(flow.request.headers.get("x-hang"), Some("2"));
}

/// Panics on every request, counting calls.
struct AlwaysPanics(Arc<AtomicUsize>);

impl Addon for AlwaysPanics {
    async fn request(&mut self, _flow: &mut HttpFlow) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("always");
    }
}

#[actix_rt::test]
async fn an_addon_that_keeps_failing_is_dropped_from_every_route() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = AddonHarness::with_addons((AlwaysPanics(calls.clone()), Tag("b"))).await;

    for _ in 0..3 {
        assert_eq!(chain(&h.request(tflow()).await), "b");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(h.has_log_at(LogLevel::Error, "addon keeps failing"));

    h.sync().await;
    for _ in 0..3 {
        assert_eq!(chain(&h.request(tflow()).await), "b");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "called after it was dropped"
    );
}

/// Handles `log` (successfully) and panics on every request.
struct PanicsButLogs(Arc<AtomicUsize>);

impl Addon for PanicsButLogs {
    async fn log(&mut self, _entry: &mut waylay_core::hooks::LogEntry) {}

    async fn request(&mut self, _flow: &mut HttpFlow) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("always");
    }
}

/// Each fault is logged, and the `log` hook succeeding in between used to reset the fault
/// count, so an addon handling `log` was never dropped.
#[actix_rt::test]
async fn regression_fault_log_records_do_not_excuse_a_failing_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut h = AddonHarness::new(PanicsButLogs(calls.clone())).await;
    for _ in 0..3 {
        let _ = h.request(tflow()).await;
    }
    h.sync().await;
    assert!(h.has_log_at(LogLevel::Error, "addon keeps failing"));
    let _ = h.request(tflow()).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "called after it was dropped"
    );
}

/// Accepts everything, recording the `listen_port` each `configure` showed it.
struct Watcher(Arc<Mutex<Vec<i64>>>);

impl Addon for Watcher {
    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if cfg.changed("listen_port") {
            self.0
                .lock()
                .expect("lock")
                .push(cfg.options.int("listen_port"));
        }
        Ok(())
    }
}

/// Rejects `listen_port=1234`.
struct Picky;

impl Addon for Picky {
    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if cfg.options.int("listen_port") == 1234 {
            return Err(OptionsError::rejected("listen_port", "1234 is reserved"));
        }
        Ok(())
    }
}

#[actix_rt::test]
async fn a_rejected_option_keeps_the_old_value_and_reconfigures_earlier_addons() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = AddonHarness::with_addons((Watcher(seen.clone()), Picky)).await;
    assert_eq!(*seen.lock().expect("lock"), [8080]);

    let err = h.set_options(&["listen_port=1234"]).await.unwrap_err();
    assert_eq!(
        err,
        OptionsError::rejected("listen_port", "1234 is reserved")
    );
    assert_eq!(err.to_string(), "option listen_port: 1234 is reserved");
    assert_eq!(h.options().int("listen_port"), 8080);
    // The watcher accepted 1234, then was configured back to 8080.
    assert_eq!(*seen.lock().expect("lock"), [8080, 1234, 8080]);

    assert_eq!(
        h.set_options(&["listen_port=9090"]).await.unwrap(),
        ["listen_port".to_owned()].into()
    );
    assert_eq!(h.options().int("listen_port"), 9090);
    // Setting the same value again changes nothing and configures nobody.
    assert!(
        h.set_options(&["listen_port=9090"])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(*seen.lock().expect("lock"), [8080, 1234, 8080, 9090]);

    // A bad spec sets nothing.
    let err = h
        .set_options(&["listen_port=1", "listen_prot=2"])
        .await
        .unwrap_err();
    assert!(matches!(err, OptionsError::Unknown { .. }), "{err}");
    assert_eq!(h.options().int("listen_port"), 9090);
}

#[actix_rt::test]
async fn an_addon_rejecting_the_current_options_is_not_added() {
    let mut h = AddonHarness::new(Tag("a")).await;
    h.set_options(&["listen_port=1234"]).await.unwrap();
    let err = h.try_add(Picky).await.unwrap_err();
    assert!(
        matches!(&err, AddError::Options { addon, .. } if addon == "Picky"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "addon Picky: option listen_port: 1234 is reserved"
    );
    assert_eq!(h.manager().addons().await.len(), 1);
    assert!(h.handles(HookKind::Request));
}

/// Panics in `configure` once options change.
struct PanicsInConfigure;

impl Addon for PanicsInConfigure {
    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        assert!(!cfg.changed("listen_port") || cfg.updated.len() > 1, "no!");
        Ok(())
    }
}

#[actix_rt::test]
async fn a_panic_in_configure_is_a_rejection() {
    let mut h = AddonHarness::new(PanicsInConfigure).await;
    let err = h.set_options(&["listen_port=1"]).await.unwrap_err();
    assert!(
        err.to_string().contains("PanicsInConfigure panicked: no!"),
        "{err}"
    );
    assert_eq!(h.options().int("listen_port"), 8080);
}
