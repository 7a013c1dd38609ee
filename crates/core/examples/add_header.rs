//! The seed's example addon: adds a `count` header to every response, counting the
//! responses the proxy has seen (mitmproxy's `examples/addons/http-add-header.py`).
//!
//! This program runs it in the addon manager on a few hand-made flows; in a proxy the layers
//! fire `response` for every response instead. Run it with
//! `cargo run -p waylay-core --example add_header`.

use std::sync::Arc;

use waylay_core::flow::{Client, Request, Response};
use waylay_core::{Addon, AddonManager, HookKind, HttpFlow, Options};

/// Adds a `count` header to every response.
#[derive(Debug, Default)]
pub(crate) struct AddHeader {
    num: u64,
}

impl Addon for AddHeader {
    async fn response(&mut self, flow: &mut HttpFlow) {
        self.num += 1;
        if let Some(resp) = flow.response.as_mut() {
            resp.headers.insert("count", self.num.to_string());
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    actix::System::new().block_on(async {
        let manager = AddonManager::start(Options::new());
        manager.add(AddHeader::default()).await?;

        let client = Arc::new(Client::new(
            "127.0.0.1:50000".parse()?,
            "127.0.0.1:8080".parse()?,
        ));
        for path in ["/", "/a", "/b"] {
            let url = format!("http://example.com{path}");
            let mut flow = HttpFlow::new(client.clone(), Request::from_url("GET", &url)?);
            flow.response = Some(Response::make(
                200,
                "hello",
                [("content-type", "text/plain")],
            ));
            let flow = manager.fire(HookKind::Response, Box::new(flow)).await?;
            let count = flow.response.as_ref().and_then(|r| r.headers.get("count"));
            println!("{url} -> count: {}", count.unwrap_or("-"));
        }
        manager.shutdown().await;
        Ok(())
    })
}
