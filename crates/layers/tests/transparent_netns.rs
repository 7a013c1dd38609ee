//! Transparent mode's original destination, for real: the test re-runs itself inside a new
//! network namespace (`unshare --net`), brings up loopback, installs nftables `redirect`
//! rules sending a port to a listener, and checks that the listener reads the port the
//! client asked for (IPv4 and IPv6). Needs root (or user namespaces) and nft: skipped with a
//! line on a developer's machine without them, a failure under CI.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use waylay_layers::front::original_destination;
use waylay_testkit::{rerun_in_netns, run_program};

const NAME: &str = "original_destination_through_nftables_redirect";

#[test]
fn original_destination_through_nftables_redirect() {
    if rerun_in_netns(NAME, &["nft", "ip"], "netns: checked") {
        inside();
    }
}

fn inside() {
    run_program("ip", &["link", "set", "lo", "up"], None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let v4 = TcpListener::bind("127.0.0.1:0").await.expect("bind v4");
        let v6 = TcpListener::bind("[::1]:0").await.expect("bind v6");
        let (p4, p6) = (
            v4.local_addr().expect("addr").port(),
            v6.local_addr().expect("addr").port(),
        );
        // Ports nobody listens on: only the redirect can answer them.
        let (asked4, asked6) = (p4.wrapping_add(7), p6.wrapping_add(7));
        let rules = format!(
            "table ip waylay_test {{\n chain output {{\n  type nat hook output priority -100; policy accept;\n  \
             ip daddr 127.0.0.1 tcp dport {asked4} redirect to :{p4}\n }}\n}}\n\
             table ip6 waylay_test6 {{\n chain output {{\n  type nat hook output priority -100; policy accept;\n  \
             ip6 daddr ::1 tcp dport {asked6} redirect to :{p6}\n }}\n}}\n"
        );
        run_program("nft", &["-f", "-"], Some(&rules));

        for (listener, asked) in [
            (&v4, SocketAddr::from(([127, 0, 0, 1], asked4))),
            (&v6, SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, asked6))),
        ] {
            let client = TcpStream::connect(asked).await.expect("connect (redirected)");
            let (accepted, peer) = listener.accept().await.expect("accept");
            assert_eq!(peer, client.local_addr().expect("client addr"));
            assert_eq!(original_destination(&accepted).expect("original dst"), asked);
        }
        // A connection that was not redirected has its own address as the original one.
        let direct = TcpStream::connect(v4.local_addr().expect("addr")).await.expect("connect");
        let (accepted, _) = v4.accept().await.expect("accept");
        assert_eq!(
            original_destination(&accepted).expect("original dst"),
            direct.peer_addr().expect("peer")
        );
    });
    println!("netns: checked");
}
