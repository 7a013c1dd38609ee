//! The seed's `AddHeader` example, tested through the testkit.
#[path = "../examples/add_header.rs"]
#[expect(dead_code, reason = "the example's main is not run here")]
mod add_header;

use waylay_testkit::{AddonHarness, FlowExt, tflow, tresp};

#[actix_rt::test]
async fn counts_responses() {
    let mut addons = AddonHarness::new(add_header::AddHeader::default()).await;
    let flow = addons.response(tflow().with_response(tresp())).await;
    assert_eq!(flow.response.unwrap().headers.get("count"), Some("1"));
    let flow = addons.response(tflow().with_response(tresp())).await;
    assert_eq!(flow.response.unwrap().headers.get("count"), Some("2"));
}
