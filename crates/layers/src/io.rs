//! Stream adapters: replaying bytes already read during protocol detection, and closing
//! connections that stay idle too long.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream that first yields `prefix` (bytes read while detecting the protocol), then
/// reads from `inner`. Writes go straight to `inner`.
#[derive(Debug)]
pub(crate) struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> PrefixedIo<T> {
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Any bidirectional byte stream the layers serve (TCP, TLS, an upgraded CONNECT tunnel).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed stream, so the layer stack does not grow a new type per nesting level.
pub(crate) type BoxIo = Box<dyn Io>;

/// A stream that fails with `TimedOut` once no byte has moved in either direction for
/// `idle` while a read or a write is waiting (`idle_timeout`). Whatever serves the stream
/// (hyper, a relay) then ends the connection the way it ends on any IO error.
///
/// Progress only records the time; the timer is re-armed lazily when it fires early, so a
/// busy connection costs one clock read per IO call and no timer update.
#[derive(Debug)]
pub(crate) struct IdleTimeout<T> {
    inner: T,
    /// `None`: no timeout (the wrapper only passes calls through).
    timer: Option<IdleTimer>,
}

#[derive(Debug)]
struct IdleTimer {
    idle: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub(crate) fn new(inner: T, idle: Option<Duration>) -> Self {
        let timer = idle.map(|idle| {
            let last = Instant::now();
            IdleTimer {
                idle,
                last,
                sleep: Box::pin(tokio::time::sleep_until(last + idle)),
            }
        });
        Self { inner, timer }
    }

    /// Called when the inner stream is not ready: `Err` once the idle time is up.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(t) = self.timer.as_mut() else {
            return Ok(());
        };
        loop {
            if t.sleep.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let deadline = t.last + t.idle;
            if deadline <= Instant::now() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {}s (idle_timeout)", t.idle.as_secs()),
                ));
            }
            t.sleep.as_mut().reset(deadline);
        }
    }

    fn progress<R>(&mut self, r: &Poll<io::Result<R>>) {
        if let (Some(t), Poll::Ready(Ok(_))) = (self.timer.as_mut(), r) {
            t.last = Instant::now();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if r.is_pending() {
            this.check(cx)?;
        }
        this.progress(&r);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if r.is_pending() {
            this.check(cx)?;
        }
        this.progress(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if r.is_pending() {
            this.check(cx)?;
        }
        this.progress(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
