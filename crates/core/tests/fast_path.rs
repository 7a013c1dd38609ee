//! The fast path: hooks nobody handles cost an atomic load and send no message.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use waylay_core::{Addon, AddonManager, HookKind, HookSet, HttpFlow, Options};
use waylay_testkit::{AddonHarness, FlowExt, tflow, tresp};

/// Whether firing `kind` completes without ever yielding, with hooks run inline turned off
/// for the check: an idle addon's hook runs in the caller's task and completes at once too,
/// but through the actor a hook that reached an addon has to wait for the actor to run.
fn completes_at_once(h: &AddonHarness, kind: HookKind) -> bool {
    h.manager().set_inline_hooks(false);
    let done = h
        .manager()
        .fire(kind, Box::new(tflow()))
        .now_or_never()
        .is_some();
    h.manager().set_inline_hooks(true);
    done
}

#[actix_rt::test]
async fn with_no_addons_nothing_is_handled() {
    let manager = AddonManager::start(Options::new());
    for kind in HookKind::ALL {
        assert!(!manager.handles(*kind), "{kind:?}");
    }
    let flow = manager
        .fire(HookKind::Request, Box::new(tflow()))
        .now_or_never()
        .expect("no message sent")
        .unwrap();
    assert!(flow.response.is_none());
}

/// Implements `response` only.
struct OnlyResponse;

impl Addon for OnlyResponse {
    async fn response(&mut self, flow: &mut HttpFlow) {
        flow.comment = "seen".into();
    }
}

#[actix_rt::test]
async fn a_hook_learned_unhandled_sends_no_more_messages() {
    let mut h = AddonHarness::new(OnlyResponse).await;
    // Until the addon has been asked once, waylay cannot know.
    assert!(h.handles(HookKind::RequestHeaders));
    assert!(!completes_at_once(&h, HookKind::RequestHeaders));

    let flow = h.request_headers(tflow()).await;
    assert_eq!(flow.comment, "");
    h.sync().await;
    assert!(!h.handles(HookKind::RequestHeaders));
    assert!(completes_at_once(&h, HookKind::RequestHeaders));

    // The hook it implements stays on its route.
    let flow = h.response(tflow().with_response(tresp())).await;
    assert_eq!(flow.comment, "seen");
    h.sync().await;
    assert!(h.handles(HookKind::Response));
    assert!(!completes_at_once(&h, HookKind::Response));
}

/// Declares `response` only, though it also implements `request`.
struct Declared {
    requests: Arc<AtomicUsize>,
}

impl Addon for Declared {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Response])
    }

    async fn request(&mut self, _flow: &mut HttpFlow) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        flow.comment = "seen".into();
    }
}

#[actix_rt::test]
async fn an_addon_declaring_its_hooks_is_never_called_for_others() {
    let requests = Arc::new(AtomicUsize::new(0));
    let mut h = AddonHarness::new(Declared {
        requests: requests.clone(),
    })
    .await;
    let handled: Vec<_> = HookKind::ALL
        .iter()
        .filter(|k| h.handles(**k))
        .copied()
        .collect();
    assert_eq!(handled, [HookKind::Response]);
    assert!(completes_at_once(&h, HookKind::Request));
    let _ = h.request(tflow()).await;
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    let flow = h.response(tflow().with_response(tresp())).await;
    assert_eq!(flow.comment, "seen");
}

#[actix_rt::test]
async fn removing_the_last_handler_clears_the_bit() {
    let mut h = AddonHarness::new(OnlyResponse).await;
    let id = h.ids()[0];
    assert!(h.handles(HookKind::Response));
    assert!(h.remove(id).await);
    assert!(!h.handles(HookKind::Response));
    assert!(completes_at_once(&h, HookKind::Response));
}

/// Acts on the HTTP flows of one host only, named by an option (as the onboarding page).
struct OneHost;

impl Addon for OneHost {
    fn http_hosts(options: &Options) -> Option<Vec<String>> {
        Some(vec![
            options.str("one_host").unwrap_or("MITM.it").to_owned(),
        ])
    }

    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::RequestHeaders])
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        flow.comment = "one host".into();
    }
}

#[actix_rt::test]
async fn addons_acting_on_named_hosts_leave_other_hosts_flowless() {
    let mut options = Options::new();
    options
        .add(waylay_core::OptionSpec::new(
            "one_host",
            waylay_core::OptionValue::OptStr(None),
            "the host",
        ))
        .unwrap();
    let manager = AddonManager::start(options);
    assert!(
        manager.observes_http_host("example.com"),
        "no addon: unscoped"
    );

    manager.add(OneHost).await.unwrap();
    assert!(manager.handles(HookKind::RequestHeaders));
    assert!(manager.observes_http_host("mitm.it"));
    assert!(
        manager.observes_http_host("MITM.IT"),
        "host names compare without case"
    );
    assert!(!manager.observes_http_host("example.com"));

    // The scope follows the options it is computed from.
    manager.set(&["one_host=example.com"]).await.unwrap();
    assert!(manager.observes_http_host("example.com"));
    assert!(!manager.observes_http_host("mitm.it"));

    // One addon acting on every host makes every request observed again.
    manager.add(OnlyResponse).await.unwrap();
    assert!(manager.observes_http_host("mitm.it"));
    assert!(manager.observes_http_host("anything.example"));
}

/// Handles `request` only while the option `watch` is on (as the policy addons do).
#[derive(Default)]
struct Watching {
    on: bool,
}

impl Addon for Watching {
    fn hooks(&self) -> HookSet {
        if self.on {
            HookSet::of(&[HookKind::Configure, HookKind::Request])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(
        &mut self,
        cfg: &mut waylay_core::hooks::Configure,
    ) -> Result<(), waylay_core::OptionsError> {
        self.on = cfg.options.bool("watch");
        Ok(())
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        flow.comment = "watched".into();
    }
}

/// A harness with the option `watch` (set to `value`) and [`Watching`], made with `on` off.
async fn watching(value: &str) -> AddonHarness {
    let mut options = Options::new();
    options
        .add(waylay_core::OptionSpec::new(
            "watch",
            waylay_core::OptionValue::Bool(false),
            "Comment requests.",
        ))
        .expect("add");
    options.set_specs(&[format!("watch={value}")]).expect("set");
    let mut h = AddonHarness::with_options(options).await;
    h.add(Watching::default()).await;
    h
}

#[actix_rt::test]
async fn hooks_declared_after_configure_join_and_leave_routes_at_run_time() {
    let mut h = watching("false").await;
    assert!(!h.handles(HookKind::Request));
    assert_eq!(h.request(tflow()).await.comment, "");

    h.set_options(&["watch=true"]).await.expect("set");
    assert!(h.handles(HookKind::Request));
    assert_eq!(h.request(tflow()).await.comment, "watched");

    h.set_options(&["watch=false"]).await.expect("set");
    assert!(!h.handles(HookKind::Request));
    assert_eq!(h.request(tflow()).await.comment, "");
}

#[actix_rt::test]
async fn hooks_declared_after_the_first_configure_count_at_registration() {
    // The addon is made with `on` off; its first `configure` (with `watch` on) turns it on.
    let mut h = watching("true").await;
    assert!(h.handles(HookKind::Request));
    assert_eq!(h.request(tflow()).await.comment, "watched");
}
