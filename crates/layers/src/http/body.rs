//! Bodies between hyper's server and client sides: buffered for hooks up to a threshold,
//! streamed beyond it, counted and limited either way.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use waylay_core::flow::{BodyStore, Message, StreamFn};

/// The error type of bodies flowing through the proxy.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Called once when a streamed body ends: total bytes and why it ended early, if it did.
pub(crate) type OnEnd = Box<dyn FnOnce(u64, Option<BodyEnd>) + Send>;

/// Why a body passed through the proxy ended before its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyEnd {
    /// It outgrew `body_size_limit` (the limit in bytes).
    #[error("body exceeds body_size_limit ({0} bytes)")]
    Limit(u64),
    /// It was dropped before its end: the other side stopped reading it.
    #[error("body not fully transferred")]
    NotFullyTransferred,
    /// The stream it comes from failed (the side that sent it).
    #[error("{0}")]
    Stream(String),
    /// The flow's kill switch tripped while it streamed.
    #[error("{}", waylay_core::flow::KILLED_MESSAGE)]
    Killed,
}

/// Completes when the flow's kill switch trips.
type KillWatch = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The body type waylay hands to hyper on both sides.
///
/// One pointer wide: every request waiting in a hyper client connection's queue carries one,
/// and the queue's first block (32 slots, sized for the request) stays allocated for the
/// connection's life (measured: 4 KiB less per idle intercepted connection). An empty body
/// with nothing attached (every bodiless request) is `None`: no allocation.
pub(crate) struct ProxyBody(Option<Box<State>>);

/// What a [`ProxyBody`] holds.
pub(crate) struct State {
    /// Chunks already read (buffered), sent first.
    prefix: Prefix,
    /// Trailers to send after everything.
    /// Boxed: every request in a server connection's queue carries a body, and the queue's
    /// slots are sized for the largest (kept allocated while the connection idles).
    trailers: Option<Box<http::HeaderMap>>,
    /// The rest, still streaming from the other side.
    rest: Option<Incoming>,
    /// Bytes passed so far (prefix included).
    seen: u64,
    /// `body_size_limit`: the stream fails beyond it.
    limit: Option<u64>,
    /// Exact size when known.
    exact: Option<u64>,
    on_end: Option<OnEnd>,
    /// `store_streamed_bodies`: where each chunk passed on is also kept (on disk).
    store: Option<BodyStore>,
    /// The flow's kill switch, when it has one: the stream fails when it trips.
    kill: Option<KillWatch>,
    /// What each chunk passes through (`Message::stream_fn`), and its output not yet sent.
    transform: Option<Box<Transform>>,
}

/// A chunk function on a body's way ([`ProxyBody::with_transform`]).
struct Transform {
    f: StreamFn,
    /// Output waiting to be sent, in order.
    out: VecDeque<Bytes>,
    /// Called with the final empty chunk already.
    flushed: bool,
}

impl Transform {
    fn push(&mut self, chunk: Bytes) {
        self.out
            .extend(self.f.apply(chunk).into_iter().filter(|c| !c.is_empty()));
    }
}

/// The chunks a body sends before its stream: one (a buffered body) held without the queue's
/// allocation, or a queue (what was read before a body turned out to be large).
#[derive(Default)]
struct Prefix {
    next: Option<Bytes>,
    more: VecDeque<Bytes>,
}

impl Prefix {
    fn pop_front(&mut self) -> Option<Bytes> {
        self.next.take().or_else(|| self.more.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.next.is_none() && self.more.is_empty()
    }

    fn clear(&mut self) {
        self.next = None;
        self.more.clear();
    }

    /// Bytes held.
    fn len(&self) -> u64 {
        self.next
            .iter()
            .chain(&self.more)
            .map(|b| b.len() as u64)
            .sum()
    }
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody")
            .field("seen", &self.0.as_ref().map_or(0, |s| s.seen))
            .finish()
    }
}

impl State {
    /// An empty body's state.
    fn empty() -> Self {
        Self {
            prefix: Prefix::default(),
            trailers: None,
            rest: None,
            seen: 0,
            limit: None,
            exact: Some(0),
            on_end: None,
            store: None,
            kill: None,
            transform: None,
        }
    }
}

impl ProxyBody {
    /// An empty body (no allocation).
    pub(crate) fn empty() -> Self {
        Self(None)
    }

    /// The state, made now for an empty body that gets something attached.
    fn state(&mut self) -> &mut State {
        self.0.get_or_insert_with(|| Box::new(State::empty()))
    }

    /// A body held in memory.
    pub(crate) fn full(b: Bytes) -> Self {
        if b.is_empty() {
            return Self::empty();
        }
        let mut state = State::empty();
        state.exact = Some(b.len() as u64);
        state.prefix.next = Some(b);
        Self(Some(Box::new(state)))
    }

    /// A buffered body with trailers.
    pub(crate) fn with_trailers(mut self, t: Option<http::HeaderMap>) -> Self {
        match t {
            Some(t) => {
                let s = self.state();
                s.exact = None;
                s.trailers = Some(Box::new(t));
            }
            None => {
                if let Some(s) = self.0.as_mut() {
                    s.trailers = None;
                }
            }
        }
        self
    }

    /// Streams `prefix` chunks then `rest`.
    pub(crate) fn streaming(prefix: Vec<Bytes>, rest: Incoming, limit: Option<u64>) -> Self {
        Self(Some(Box::new(State {
            prefix: Prefix {
                next: None,
                more: prefix.into(),
            },
            trailers: None,
            rest: Some(rest),
            seen: 0,
            limit,
            exact: None,
            on_end: None,
            store: None,
            kill: None,
            transform: None,
        })))
    }

    /// Sets the exact length (from `Content-Length`) so hyper frames it the same way.
    pub(crate) fn with_exact(mut self, n: Option<u64>) -> Self {
        if self.0.is_some() || n != Some(0) {
            self.state().exact = n;
        }
        self
    }

    /// Passes every chunk through `f` (see [`StreamFn`]); the length is then unknown.
    pub(crate) fn with_transform(mut self, f: Option<StreamFn>) -> Self {
        if let Some(f) = f {
            let state = self.state();
            state.exact = None;
            state.transform = Some(Box::new(Transform {
                f,
                out: VecDeque::new(),
                flushed: false,
            }));
        }
        self
    }

    /// Fails the stream (both sides' connections then close) when `switch` trips.
    pub(crate) fn with_kill(mut self, switch: Option<waylay_core::flow::KillSwitch>) -> Self {
        match switch {
            Some(s) => self.state().kill = Some(Box::pin(s.killed()) as KillWatch),
            None => {
                if let Some(st) = self.0.as_mut() {
                    st.kill = None;
                }
            }
        }
        self
    }

    /// Calls `f` once when the body has been fully passed on (or failed).
    pub(crate) fn on_end(mut self, f: OnEnd) -> Self {
        self.state().on_end = Some(f);
        self
    }
}

/// With `store_streamed_bodies`, keeps a copy of the streamed `body` for the flow: its chunks
/// go to a file as they pass (the forwarding never waits for the whole body), and `message`
/// gets the handle that reads it back once the body has ended. Without it, or when no file
/// can be made, the body passes untouched.
pub(crate) fn keep_streamed(enabled: bool, message: &mut Message, body: ProxyBody) -> ProxyBody {
    if !enabled {
        return body;
    }
    match BodyStore::create() {
        Ok((store, stored)) => {
            message.stored_body = Some(stored);
            let mut body = body;
            body.state().store = Some(store);
            body
        }
        Err(e) => {
            tracing::warn!(
                "store_streamed_bodies: cannot create a file for the body, it is not stored: {e}"
            );
            body
        }
    }
}

impl State {
    fn keep(&mut self, chunk: &Bytes) {
        if let Some(store) = self.store.as_mut() {
            store.push(chunk);
        }
    }

    fn finish(&mut self, err: Option<BodyEnd>) {
        // A stored copy is complete only when the body was passed on to its end; dropped
        // unfinished, it is marked failed and the flow keeps no body.
        if let Some(store) = self.store.take()
            && err.is_none()
        {
            store.finish();
        }
        if let Some(f) = self.on_end.take() {
            f(self.seen, err);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let Some(this) = self.0.as_deref_mut() else {
            return;
        };
        // hyper stops polling a body whose declared length has been sent: the stream that
        // says it is at its end counts as passed on whole for the stored copy.
        if let Some(store) = this.store.take()
            && this.prefix.is_empty()
            && this.rest.as_ref().is_none_or(|r| r.is_end_stream())
        {
            store.finish();
        }
        if this.on_end.is_some() {
            // Likewise for the flow: a body whose every byte went out ended well, even
            // though hyper never asked for its end (it was reported as failed before).
            let done = this.prefix.is_empty()
                && (this.rest.as_ref().is_none_or(|r| r.is_end_stream())
                    || this.exact.is_some_and(|n| this.seen >= n));
            this.finish(if done {
                None
            } else {
                Some(BodyEnd::NotFullyTransferred)
            });
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(this) = self.0.as_deref_mut() else {
            return Poll::Ready(None);
        };
        if let Some(k) = this.kill.as_mut()
            && k.as_mut().poll(cx).is_ready()
        {
            this.kill = None;
            this.prefix.clear();
            this.rest = None;
            this.finish(Some(BodyEnd::Killed));
            return Poll::Ready(Some(Err(Box::new(BodyEnd::Killed))));
        }
        // Each pass sends a chunk, or consumes one (into the transform), or moves on to the
        // end: bounded by the body.
        loop {
            if let Some(t) = this.transform.as_mut()
                && let Some(b) = t.out.pop_front()
            {
                this.keep(&b);
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if let Some(b) = this.prefix.pop_front() {
                this.seen += b.len() as u64;
                if let Some(t) = this.transform.as_mut() {
                    t.push(b);
                    continue;
                }
                this.keep(&b);
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if let Some(rest) = this.rest.as_mut() {
                match Pin::new(rest).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            this.seen += d.len() as u64;
                            if let Some(limit) = this.limit
                                && this.seen > limit
                            {
                                this.rest = None;
                                this.finish(Some(BodyEnd::Limit(limit)));
                                return Poll::Ready(Some(Err(Box::new(BodyEnd::Limit(limit)))));
                            }
                            if this.transform.is_none() {
                                this.keep(d);
                            }
                        }
                        let Some(t) = this.transform.as_mut() else {
                            return Poll::Ready(Some(Ok(frame)));
                        };
                        // Through the transform; trailers wait for its last output.
                        match frame.into_data() {
                            Ok(d) => t.push(d),
                            Err(frame) => {
                                if let Ok(trailers) = frame.into_trailers() {
                                    this.trailers = Some(Box::new(trailers));
                                }
                            }
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.rest = None;
                        this.finish(Some(BodyEnd::Stream(e.to_string())));
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    Poll::Ready(None) => {
                        this.rest = None;
                    }
                }
            }
            if let Some(t) = this.transform.as_mut()
                && !t.flushed
            {
                t.flushed = true;
                t.push(Bytes::new());
                continue;
            }
            break;
        }
        if let Some(t) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*t))));
        }
        this.finish(None);
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|s| {
            s.prefix.is_empty()
                && s.rest.is_none()
                && s.trailers.is_none()
                && s.transform
                    .as_ref()
                    .is_none_or(|t| t.flushed && t.out.is_empty())
        })
    }

    fn size_hint(&self) -> SizeHint {
        let Some(s) = self.0.as_deref() else {
            return SizeHint::with_exact(0);
        };
        match s.exact {
            Some(n) => SizeHint::with_exact(n.saturating_sub(s.seen)),
            None => {
                let mut h = SizeHint::new();
                h.set_lower(s.prefix.len());
                h
            }
        }
    }
}

/// What reading a body for the hooks gave.
pub(crate) enum Read {
    /// The whole body, with trailers if any.
    Complete(Bytes, Option<http::HeaderMap>),
    /// More than the threshold: the chunks read so far and the rest of the stream.
    TooLarge(Vec<Bytes>, Incoming),
}

/// Reads `body` into memory unless it exceeds `threshold` bytes. A body of one frame (the
/// common case for small bodies) is kept as that frame's bytes: no list, no copy.
pub(crate) async fn read_up_to(mut body: Incoming, threshold: u64) -> Result<Read, hyper::Error> {
    let mut first: Option<Bytes> = None;
    let mut more: Vec<Bytes> = Vec::new();
    let mut total = 0u64;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(d) => {
                total += d.len() as u64;
                match &first {
                    None => first = Some(d),
                    Some(_) => more.push(d),
                }
                if total > threshold {
                    let mut chunks: Vec<Bytes> = first.into_iter().collect();
                    chunks.append(&mut more);
                    return Ok(Read::TooLarge(chunks, body));
                }
                // A body whose length is known ends with its last byte: no poll for the end
                // (a body with trailers is chunked, and not at its end before them).
                if body.is_end_stream() {
                    break;
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    let all = match first {
        None => Bytes::new(),
        Some(b) if more.is_empty() => b,
        Some(b) => {
            let mut v = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            v.extend_from_slice(&b);
            for c in &more {
                v.extend_from_slice(c);
            }
            Bytes::from(v)
        }
    };
    Ok(Read::Complete(all, trailers))
}
