//! `intercept` and `breakpoints` in a custom proxy without the web UI: the default addons of
//! `waylay::Proxy::builder()` hold the matching flows; code of the proxy's own resumes them
//! through the intercept handle (mitmproxy's `intercept` is a default addon too).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use waylay::flow::InterceptHandle;
use waylay::{Addon, HookKind, HookSet, HttpFlow, Proxy};
use waylay_testkit::{TestProxy, proxy_get, scripted_origin, within};

/// Hands out the handle of every flow held at `request`, and records that it saw one.
#[derive(Debug)]
struct Holder {
    handles: tokio::sync::mpsc::UnboundedSender<(String, InterceptHandle)>,
    saw_free: Arc<AtomicBool>,
}

impl Addon for Holder {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[HookKind::Request])
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        match flow.intercept_state().handle() {
            Some(h) => {
                let _ = self.handles.send((flow.request.path.to_string(), h));
            }
            None => self.saw_free.store(true, Ordering::SeqCst),
        }
    }
}

fn ok(_: &str) -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
}

#[actix_rt::test]
async fn a_custom_proxy_holds_what_intercept_matches_until_its_code_resumes_it() {
    let (origin, seen) = scripted_origin(ok).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let saw_free = Arc::new(AtomicBool::new(false));
    let proxy = TestProxy::start(
        Proxy::builder()
            // `~q`: requests only (a response would be held too, as in mitmproxy).
            .set("intercept=~q & ~u /hold")
            .set("breakpoints=|~u /hold|request|resume|header:X-Rule=1")
            .addon(Holder {
                handles: tx,
                saw_free: saw_free.clone(),
            }),
    )
    .await;
    let p = proxy.addr();
    // Not matching: straight through.
    let out = within("free", proxy_get(p, &format!("http://{origin}/free"))).await;
    assert!(out.ends_with("ok"), "{out}");
    assert!(saw_free.load(Ordering::SeqCst));

    // Matching: held (edited by the rule first) until the handle resumes it.
    let client = actix::spawn(async move { proxy_get(p, &format!("http://{origin}/hold")).await });
    let (path, handle) = within("the held flow", rx.recv()).await.unwrap();
    assert_eq!(path, "/hold");
    assert!(handle.is_waiting());
    assert_eq!(seen.lock().unwrap().len(), 1, "the origin saw only /free");
    handle.resume();
    let out = within("the resumed client", client).await.unwrap();
    assert!(out.ends_with("ok"), "{out}");
    let got = seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        got.starts_with("get /hold") && got.contains("x-rule: 1"),
        "{got}"
    );

    // Killed through the handle: the client gets no answer, the origin nothing.
    let client =
        actix::spawn(async move { proxy_get(p, &format!("http://{origin}/hold/2")).await });
    let (_, handle) = within("the second held flow", rx.recv()).await.unwrap();
    handle.kill();
    let out = within("the killed client", client).await.unwrap();
    assert!(!out.contains("200 OK"), "{out}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    // `intercept_active=false` turns it off at run time.
    proxy
        .running()
        .manager()
        .set(&["intercept_active=false".to_owned()])
        .await
        .unwrap();
    let out = within("not held", proxy_get(p, &format!("http://{origin}/hold/3"))).await;
    assert!(out.ends_with("ok"), "{out}");
    proxy.shutdown().await;
}
