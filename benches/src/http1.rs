//! The load generators' HTTP/1.1 client side: just enough to read a `200` with a
//! `Content-Length` body off a keep-alive connection, without a client library's cost.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest response (or, for the floor forwarder, request) head read before giving up.
pub const MAX_HEAD: usize = 64 * 1024;

/// Where `needle` first starts in `hay`.
#[must_use]
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one `200` response with a `Content-Length` body from `s`; `None` on anything else.
/// `buf` carries bytes read past one response over to the next: the response is drained from
/// its front, whatever followed stays.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    };
    let head = std::str::from_utf8(buf.get(..head_end)?).ok()?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let len: usize = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(chunk.get(..n)?);
    }
    buf.drain(..head_end + len);
    Some(())
}
