//! Stream adapters: replaying bytes already read during protocol detection, passing on only
//! the reads that can find something (`ReadLatch`, `TlsReads`), and closing connections that
//! stay idle too long.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `AsyncWrite` for a read-side wrapper: every write call goes straight to its `inner`.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $wrapper<T> {
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

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

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

write_through!(PrefixedIo);

/// A stream whose reads are not passed on while the last one is known to be still waiting.
///
/// hyper tries a read every time it polls a connection (several times per request: after
/// the response is written, when the exchange's future wakes it, when the body is taken),
/// and most of those find nothing. Through TLS such a try goes down the whole stack (hyper's
/// adapter, tokio-rustls, rustls's `read_tls` and record buffer, the IO wrappers, tokio's
/// readiness check) to learn again what the last one learnt (measured with callgrind: about
/// 500 instructions each, some ten per intercepted request).
///
/// The inner stream is read with this wrapper's own waker, which notes that it was woken
/// before waking the task (whichever task reads now). After a read that was `Pending`, the
/// next one is passed on only once that waker fired: until then nothing the inner read
/// waits for (readiness, a timer) has happened, and it would be `Pending` again. Writes go
/// straight through.
#[derive(Debug)]
pub(crate) struct ReadLatch<T> {
    inner: T,
    latch: Arc<Latch>,
    /// `latch` as a waker, made once.
    waker: Waker,
    /// The last read was `Pending`.
    waiting: bool,
}

#[derive(Debug, Default)]
struct Latch {
    /// Something the inner read waits for happened since the last read was passed on.
    woken: AtomicBool,
    /// The task reading now.
    task: futures::task::AtomicWaker,
}

impl std::task::Wake for Latch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<T> ReadLatch<T> {
    pub(crate) fn new(inner: T) -> Self {
        let latch = Arc::new(Latch::default());
        let waker = Waker::from(latch.clone());
        Self {
            inner,
            latch,
            waker,
            waiting: false,
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadLatch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // First: a wake from now on reaches this task.
        this.latch.task.register(cx.waker());
        if this.waiting && !this.latch.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        // Before the read: a wake during it is not lost.
        this.latch.woken.store(false, Ordering::Release);
        let mut own = Context::from_waker(&this.waker);
        let r = Pin::new(&mut this.inner).poll_read(&mut own, buf);
        this.waiting = r.is_pending();
        r
    }
}

write_through!(ReadLatch);

/// A TLS stream (tokio-rustls's, read through its `AsyncBufRead`) whose reads stop after a
/// record smaller than the largest, where tokio-rustls's own `poll_read` tries the socket
/// again until it would wait (or the buffer is full).
///
/// A record of less than 16 KiB of plaintext is what the peer had to send (a request head, a
/// small response), and the socket has nothing more: that second try always comes back
/// `Pending` (tokio clears the readiness on the short read before it), after going down
/// rustls's `read_tls` and the IO wrappers (measured with callgrind: about 450 instructions,
/// once for every request and every response). Full records, a large body's, are read on as
/// before, so large transfers still fill the reader's buffer in one call.
#[derive(Debug)]
pub(crate) struct TlsReads<T> {
    inner: T,
    /// An error met after some bytes were returned: the next read reports it.
    error: Option<io::Error>,
}

/// Plaintext of a full TLS record: a shorter one ends what the peer sent for now.
const FULL_RECORD: usize = 16 * 1024;

impl<T> TlsReads<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self { inner, error: None }
    }
}

impl<T: tokio::io::AsyncBufRead + Unpin> AsyncRead for TlsReads<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        let mut inner = Pin::new(&mut this.inner);
        // One record's plaintext (or what is left of it) per fill; after a full record more
        // may be waiting (tokio-rustls's loop), after a short one nothing is.
        let mut first = true;
        while buf.remaining() > 0 {
            let data = match inner.as_mut().poll_fill_buf(cx) {
                Poll::Ready(Ok(data)) => data,
                // Nothing read yet: the read waits or fails as the stream does.
                r @ (Poll::Pending | Poll::Ready(Err(_))) if first => return r.map_ok(|_| ()),
                Poll::Pending => break,
                Poll::Ready(Err(e)) => {
                    this.error = Some(e);
                    break;
                }
            };
            first = false;
            let record = data.len();
            let n = record.min(buf.remaining());
            buf.put_slice(&data[..n]);
            inner.as_mut().consume(n);
            if record < FULL_RECORD {
                break;
            }
        }
        Poll::Ready(Ok(()))
    }
}

write_through!(TlsReads);

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
    /// The waker `sleep` was last polled with: while it is the same task's and the tick is
    /// still ahead, polling the timer again would only register the same waker again
    /// (measured: a few hundred instructions per request, on every pending read).
    registered: Option<Waker>,
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
                registered: None,
            }
        });
        Self { inner, timer }
    }

    /// Called when the inner stream is not ready: `Err` once the idle time is up.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(t) = self.timer.as_mut() else {
            return Ok(());
        };
        if !t.sleep.is_elapsed()
            && t.registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Ok(());
        }
        t.registered = Some(cx.waker().clone());
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

/// How long a closed connection keeps reading (and discarding) what the client still sends,
/// at most, and how many bytes it discards at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// A client stream that closes the way nginx's lingering close does.
///
/// Closing a socket whose receive buffer holds unread bytes makes the kernel send a reset,
/// and a reset can destroy a response the client has not read yet (a request hyper refuses
/// to keep alive after, followed by the client's next request, is the common case). So when
/// the stream is dropped before the client closed its side, its write side is shut (FIN after
/// whatever was written) and what the client still sends is read and discarded for at most
/// [`LINGER_TIME`] (and [`LINGER_BYTES`]) on its own task, then the socket closes.
#[derive(Debug)]
pub(crate) struct LingeringClose<T: Io> {
    /// `None` only once dropped.
    inner: Option<T>,
    /// The client closed its side (a read gave end of stream): nothing is left to drain.
    eof: bool,
}

impl<T: Io> LingeringClose<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner: Some(inner),
            eof: false,
        }
    }

    fn inner(&mut self) -> io::Result<Pin<&mut T>> {
        self.inner
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<T: Io> Drop for LingeringClose<T> {
    fn drop(&mut self) {
        let Some(mut io) = self.inner.take() else {
            return;
        };
        if self.eof {
            return;
        }
        // Outside a runtime (shutdown) the socket simply closes.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let drain = async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = io.shutdown().await;
                let mut scratch = [0u8; 4096];
                let mut left = LINGER_BYTES;
                while left > 0 {
                    match io.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

impl<T: Io> AsyncRead for LingeringClose<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = self.inner()?.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.eof = true;
        }
        r
    }
}

impl<T: Io> AsyncWrite for LingeringClose<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.inner()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncWriteExt;

    /// Counts the reads that reach it.
    struct Counting<T> {
        inner: T,
        reads: Arc<AtomicUsize>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    /// A waker that counts its wakes.
    struct Flag(AtomicUsize);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn read_once<T: AsyncRead + Unpin>(
        s: &mut ReadLatch<T>,
        waker: &Waker,
        out: &mut [u8],
    ) -> Poll<usize> {
        let mut cx = Context::from_waker(waker);
        let mut buf = ReadBuf::new(out);
        match Pin::new(s).poll_read(&mut cx, &mut buf) {
            Poll::Ready(r) => {
                r.expect("read");
                Poll::Ready(buf.filled().len())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Records to read, one `fill_buf` each; `Pending` once they are gone (counted).
    struct Records {
        records: std::collections::VecDeque<Vec<u8>>,
        fills: usize,
        pending: usize,
    }

    impl AsyncRead for Records {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            unreachable!("read through fill_buf")
        }
    }

    impl tokio::io::AsyncBufRead for Records {
        fn poll_fill_buf(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
            let this = self.get_mut();
            this.fills += 1;
            match this.records.front() {
                Some(r) => Poll::Ready(Ok(r)),
                None => {
                    this.pending += 1;
                    Poll::Pending
                }
            }
        }

        fn consume(self: Pin<&mut Self>, amt: usize) {
            let this = self.get_mut();
            let front = this.records.front_mut().expect("a record");
            front.drain(..amt);
            if front.is_empty() {
                this.records.pop_front();
            }
        }
    }

    /// After a short record the read returns without trying for more; full records are read
    /// on until the buffer is full or nothing more is there; every byte comes out in order.
    #[test]
    fn tls_reads_stop_after_a_short_record_and_go_on_after_full_ones() {
        let full = |b: u8| vec![b; FULL_RECORD];
        let mut s = TlsReads::new(Records {
            records: [vec![1u8; 100], full(2), full(3), vec![4u8; 10], full(5)].into(),
            fills: 0,
            pending: 0,
        });
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut read = |s: &mut TlsReads<Records>, cap: usize| {
            let mut out = vec![0u8; cap];
            let mut buf = ReadBuf::new(&mut out);
            match Pin::new(s).poll_read(&mut cx, &mut buf) {
                Poll::Ready(r) => {
                    r.expect("read");
                    let n = buf.filled().len();
                    out.truncate(n);
                    Some(out)
                }
                Poll::Pending => None,
            }
        };
        // The short record alone: one fill, no try for more.
        let got = read(&mut s, 1 << 20).expect("ready");
        assert_eq!(got, vec![1u8; 100]);
        assert_eq!((s.inner.fills, s.inner.pending), (1, 0));
        // Two full records and the short one after them, in one read.
        let got = read(&mut s, 1 << 20).expect("ready");
        assert_eq!(got.len(), 2 * FULL_RECORD + 10);
        assert!(got[..FULL_RECORD].iter().all(|&b| b == 2));
        assert!(got[FULL_RECORD..2 * FULL_RECORD].iter().all(|&b| b == 3));
        assert!(got[2 * FULL_RECORD..].iter().all(|&b| b == 4));
        // A small buffer takes part of a full record; the rest comes next.
        let got = read(&mut s, 1000).expect("ready");
        assert_eq!(got, vec![5u8; 1000]);
        let got = read(&mut s, 1 << 20).expect("ready");
        assert_eq!(got, vec![5u8; FULL_RECORD - 1000]);
        assert!(read(&mut s, 1 << 20).is_none());
    }

    /// A read that would wait again is not passed on; once the data it waits for comes, the
    /// task that reads now (not the one that read first) is woken, and the read goes through.
    #[tokio::test]
    async fn a_waiting_read_stops_at_the_latch_until_the_stream_wakes_it() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let reads = Arc::new(AtomicUsize::new(0));
        let mut s = ReadLatch::new(Counting {
            inner: rx,
            reads: reads.clone(),
        });
        let first = Arc::new(Flag(AtomicUsize::new(0)));
        let second = Arc::new(Flag(AtomicUsize::new(0)));
        let (w1, w2) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let mut out = [0u8; 16];
        assert!(read_once(&mut s, &w1, &mut out).is_pending());
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        for _ in 0..3 {
            assert!(read_once(&mut s, &w1, &mut out).is_pending());
        }
        // Another task reads now.
        assert!(read_once(&mut s, &w2, &mut out).is_pending());
        assert_eq!(
            reads.load(Ordering::Relaxed),
            1,
            "waiting reads were passed on"
        );
        tx.write_all(b"hello").await.expect("write");
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
        assert_eq!(read_once(&mut s, &w2, &mut out), Poll::Ready(5));
        assert_eq!(&out[..5], b"hello");
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        // After data, the next read is passed on (and waits again); the end is seen.
        assert!(read_once(&mut s, &w2, &mut out).is_pending());
        assert_eq!(reads.load(Ordering::Relaxed), 3);
        drop(tx);
        assert_eq!(read_once(&mut s, &w2, &mut out), Poll::Ready(0));
    }
}
