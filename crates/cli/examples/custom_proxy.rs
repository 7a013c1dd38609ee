//! A custom proxy built on waylay: counts responses in a `count` header and prints every
//! flow as `waylay` does.
//!
//! ```text
//! cargo run -p waylay --example custom_proxy -- 127.0.0.1:8080
//! curl -x http://127.0.0.1:8080 http://example.com/ -D -
//! ```

use waylay::{Addon, Dumper, HttpFlow, Proxy};

/// Adds a `count` header to every response the proxy sees.
#[derive(Debug, Default)]
struct AddHeader {
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

fn main() -> Result<(), waylay::ProxyError> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    Proxy::builder()
        .listen(&listen)
        .addon(AddHeader::default())
        .addon(Dumper::stdout())
        .run()
}
