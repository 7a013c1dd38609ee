//! Log records reach addons' `log` hook through the global log layer. Alone in its test
//! binary: the layer delivers to the proxy started last in the process.

use waylay_core::Addon;
use waylay_layers::Proxy;
use waylay_testkit::{TestProxy, proxy_get};

#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Addon for Logs {
    async fn log(&mut self, entry: &mut waylay_core::hooks::LogEntry) {
        if let Ok(mut v) = self.0.lock() {
            v.push(entry.message.clone());
        }
    }
}

#[actix_rt::test]
async fn log_records_reach_the_addons_log_hook() {
    use tracing_subscriber::layer::SubscriberExt;
    let _sub = tracing::subscriber::set_default(tracing_subscriber::registry().with(
        waylay_core::log::GlobalAddonLogLayer::new(tracing::Level::INFO),
    ));
    let logs = Logs::default();
    let proxy = TestProxy::start(Proxy::builder().addon(logs.clone())).await;
    let out = proxy_get(proxy.addr(), "http://127.0.0.1:1/").await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    // The failure is logged once; delivery to the addon is asynchronous, so poll (bounded).
    for _ in 0..200 {
        if logs
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("cannot connect to 127.0.0.1:1"))
        {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        logs.0
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("cannot connect to 127.0.0.1:1"))
    );
    proxy.shutdown().await;
}
