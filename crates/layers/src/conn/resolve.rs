//! Resolving and connecting to a server's name, with a short per-worker cache of resolved
//! addresses.
//!
//! The system resolver (`getaddrinfo`) blocks, so every lookup runs on a blocking thread: a
//! thread hand-off, two context switches and a dozen system calls (`/etc/nsswitch.conf`,
//! `/etc/resolv.conf`, `/etc/hosts`) per new server connection, which showed up as the
//! largest non-TLS cost of a new intercepted connection per request (`localhost` in the
//! shared harness's S3). A name resolved in the last [`TTL`] is taken from the worker's
//! cache instead; when none of its cached addresses accepts a connection, the name is
//! resolved again at once (so a server that moved is found without waiting for the entry to
//! expire). Failed lookups are never cached. mitmproxy resolves every time (asyncio's
//! `getaddrinfo` on its thread pool); the operating system's own cache, where there is one,
//! already makes a lookup this fresh.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// How long a resolved name is reused.
pub(crate) const TTL: Duration = Duration::from_secs(5);
/// Most names a worker keeps; when full, expired entries go first, then all.
const CAPACITY: usize = 1024;

/// Resolved addresses (port 0) and when they stop being reused.
type Entry = (Vec<IpAddr>, Instant);

thread_local! {
    static CACHE: RefCell<HashMap<String, Entry>> = RefCell::new(HashMap::new());
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The name did not resolve.
    Lookup(io::Error),
    /// The name resolved to no address.
    NoAddress,
    /// No address accepted the connection (the last one's error).
    Connect(io::Error),
}

impl From<ConnectError> for io::Error {
    /// The error `tokio::net::TcpStream::connect((host, port))` gives for the same case.
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Lookup(e) | ConnectError::Connect(e) => e,
            ConnectError::NoAddress => io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any address",
            ),
        }
    }
}

/// Opens a TCP connection to `host:port`, trying each address the name resolves to in the
/// resolver's order; gives the stream and the address it connected to.
pub(crate) async fn connect(
    host: &str,
    port: u16,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        return match TcpStream::connect(addr).await {
            Ok(s) => Ok((s, addr)),
            Err(e) => Err(ConnectError::Connect(e)),
        };
    }
    let stale = match cached(host) {
        Some(ips) => match try_each(&ips, port).await {
            Ok(found) => return Ok(found),
            Err(e) => {
                forget(host);
                Some((ips, e))
            }
        },
        None => None,
    };
    let ips: Vec<IpAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => return Err(ConnectError::Lookup(e)),
    };
    if ips.is_empty() {
        return Err(ConnectError::NoAddress);
    }
    // The same addresses as the ones that just failed: no second round.
    if let Some((old, e)) = stale
        && old == ips
    {
        return Err(e);
    }
    let found = try_each(&ips, port).await?;
    remember(host, ips);
    Ok(found)
}

/// Forgets a name (its next connection resolves it again).
fn forget(host: &str) {
    CACHE.with(|c| c.borrow_mut().remove(host));
}

async fn try_each(ips: &[IpAddr], port: u16) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut last = None;
    for ip in ips {
        let addr = SocketAddr::new(*ip, port);
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok((s, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(ConnectError::NoAddress, ConnectError::Connect))
}

fn cached(host: &str) -> Option<Vec<IpAddr>> {
    CACHE.with(|c| {
        let c = c.borrow();
        let (ips, until) = c.get(host)?;
        (Instant::now() < *until).then(|| ips.clone())
    })
}

fn remember(host: &str, ips: Vec<IpAddr>) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CAPACITY && !c.contains_key(host) {
            let now = Instant::now();
            c.retain(|_, (_, until)| now < *until);
            if c.len() >= CAPACITY {
                c.clear();
            }
        }
        c.insert(host.to_owned(), (ips, Instant::now() + TTL));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len() -> usize {
        CACHE.with(|c| c.borrow().len())
    }

    #[test]
    fn the_cache_stays_bounded_however_many_names_are_seen() {
        let ip = vec![IpAddr::from([127, 0, 0, 1])];
        for i in 0..CAPACITY * 3 + 7 {
            remember(&format!("host{i}.test"), ip.clone());
            assert!(len() <= CAPACITY, "{} names after {i}", len());
        }
        // The newest name is always kept.
        assert_eq!(cached(&format!("host{}.test", CAPACITY * 3 + 6)), Some(ip));
    }

    #[test]
    fn an_expired_name_is_not_reused_and_goes_first_when_full() {
        let ip = vec![IpAddr::from([127, 0, 0, 1])];
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.clear();
            c.insert("old.test".into(), (ip.clone(), Instant::now()));
        });
        assert_eq!(cached("old.test"), None);
        for i in 0..CAPACITY - 1 {
            remember(&format!("host{i}.test"), ip.clone());
        }
        assert_eq!(len(), CAPACITY);
        // Full: the expired entry is dropped, the fresh ones stay.
        remember("new.test", ip.clone());
        assert_eq!(len(), CAPACITY);
        assert!(CACHE.with(|c| !c.borrow().contains_key("old.test")));
        assert_eq!(cached("host0.test"), Some(ip));
    }
}
