//! The page, embedded at build time (the bundle is committed: `cargo build` needs no node).

use bytes::Bytes;
use http::{HeaderValue, header};

use crate::server::Resp;

const INDEX: &[u8] = include_bytes!("../ui/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../ui/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../ui/dist/app.css");

/// The asset `name`, or `None`.
pub(crate) fn get(name: &str) -> Option<Resp> {
    let (body, ct) = match name {
        "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = hyper::Response::new(crate::server::full(Bytes::from_static(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Some(r)
}
