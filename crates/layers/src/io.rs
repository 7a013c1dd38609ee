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
            if self.prefix.is_empty() {
                // Let go of the buffer the prefix was read into.
                self.prefix = Bytes::new();
            }
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
/// Progress only sets a flag: the timer ticks every quarter of `idle` and the stream fails
/// after four quiet ticks in a row, so a connection closes between `idle` and 1.25 × `idle`
/// after its last byte, and a busy one costs no clock read and no timer update per IO call.
#[derive(Debug)]
pub(crate) struct IdleTimeout<T> {
    inner: T,
    /// `None`: no timeout (the wrapper only passes calls through).
    timer: Option<IdleTimer>,
}

/// Quiet ticks in a row that make a connection idle.
const IDLE_TICKS: u8 = 4;

#[derive(Debug)]
struct IdleTimer {
    idle: Duration,
    tick: Duration,
    /// Some byte moved since the last tick.
    active: bool,
    quiet_ticks: u8,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    pub(crate) fn new(inner: T, idle: Option<Duration>) -> Self {
        let timer = idle.map(|idle| {
            let tick = idle / u32::from(IDLE_TICKS);
            IdleTimer {
                idle,
                tick,
                active: false,
                quiet_ticks: 0,
                sleep: Box::pin(tokio::time::sleep(tick)),
            }
        });
        Self { inner, timer }
    }

    /// Called when the inner stream is not ready: `Err` once the idle time is up.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(t) = self.timer.as_mut() else {
            return Ok(());
        };
        while t.sleep.as_mut().poll(cx).is_ready() {
            if std::mem::take(&mut t.active) {
                t.quiet_ticks = 0;
            } else {
                t.quiet_ticks += 1;
                if t.quiet_ticks >= IDLE_TICKS {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("idle for {}s (idle_timeout)", t.idle.as_secs()),
                    ));
                }
            }
            // One clock read per tick (not per IO call).
            t.sleep.as_mut().reset(Instant::now() + t.tick);
        }
        Ok(())
    }

    fn progress<R>(&mut self, r: &Poll<io::Result<R>>) {
        if let (Some(t), Poll::Ready(Ok(_))) = (self.timer.as_mut(), r) {
            t.active = true;
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
