//! Runtime glue: hyper's executor on the worker's local task set, and a cheap timer for
//! hyper's per-request header timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// Spawns hyper's background futures (HTTP/2 streams) on the current worker thread, so a
/// connection and everything it spawns stay on one thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// hyper's timer for the HTTP/1 server's `header_read_timeout`, one per connection, at a
/// quarter of the timeout's precision: a sleep ends between its duration and 1.25 × it
/// (never early), as `idle_timeout` does ([`crate::io::IdleTimeout`]).
///
/// hyper arms the header timer for every request (when it starts reading a head, that is
/// right after the previous response) and drops it once the head is in. With tokio's timer
/// that is a clock read, a timer-wheel insertion and removal per request, and, whenever the
/// new deadline is the earliest, a wake-up of the driver (an `eventfd` write and one more
/// `epoll_wait`; measured on one keep-alive connection, every request). Here a sleep is a
/// tick count: the connection's one tokio timer ticks (every quarter of the timeout) while
/// some sleep is polled, and a sleep ends once enough ticks went by since it was made.
#[derive(Debug, Clone)]
pub(crate) struct CoarseTimer {
    ticker: Arc<Ticker>,
}

#[derive(Debug)]
struct Ticker {
    tick: Duration,
    /// When the ticker was made: `now()` is `epoch + ticks × tick`, which lags the clock
    /// (by up to a tick, more when nothing polled a sleep for a while). Only durations
    /// computed from it come back, so the lag is harmless and saves a clock read.
    epoch: Instant,
    ticks: AtomicU64,
    state: Mutex<TickState>,
}

#[derive(Debug)]
struct TickState {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The waker `sleep` was last polled with (see [`crate::io::IdleTimeout`]).
    registered: Option<Waker>,
}

impl CoarseTimer {
    /// A timer whose sleeps are counted in ticks of `tick` (at least a millisecond).
    pub(crate) fn new(tick: Duration) -> Self {
        let tick = tick.max(Duration::from_millis(1));
        Self {
            ticker: Arc::new(Ticker {
                tick,
                epoch: Instant::now(),
                ticks: AtomicU64::new(0),
                state: Mutex::new(TickState {
                    sleep: Box::pin(tokio::time::sleep(tick)),
                    registered: None,
                }),
            }),
        }
    }

    /// The tick count at which a sleep of `duration` from now is over.
    fn ends_at(&self, duration: Duration) -> u64 {
        let now = self.ticker.ticks.load(Ordering::Relaxed);
        if duration.is_zero() {
            return now;
        }
        // Whole ticks, plus one: the tick under way may be nearly over.
        let tick = self.ticker.tick.as_nanos();
        let n = duration.as_nanos().div_ceil(tick);
        now.saturating_add(u64::try_from(n).unwrap_or(u64::MAX))
            .saturating_add(1)
    }

    fn after(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep {
            ticker: self.ticker.clone(),
            ends_at: self.ends_at(duration),
        })
    }
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.after(duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.after(deadline.saturating_duration_since(self.now()))
    }

    /// Re-arms a sleep of this timer where it is (hyper re-arms its header-read timeout for
    /// every request of a connection): no new box per request.
    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        let duration = new_deadline.saturating_duration_since(self.now());
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(s) if Arc::ptr_eq(&s.ticker, &self.ticker) => {
                s.get_mut().ends_at = self.ends_at(duration);
            }
            _ => *sleep = self.after(duration),
        }
    }

    fn now(&self) -> std::time::Instant {
        let t = &self.ticker;
        let ticks = u32::try_from(t.ticks.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        (t.epoch + t.tick.saturating_mul(ticks)).into_std()
    }
}

/// A sleep of [`CoarseTimer`]: done once the ticker counted `ends_at` ticks.
#[derive(Debug)]
struct CoarseSleep {
    ticker: Arc<Ticker>,
    ends_at: u64,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = &*self.ticker;
        if t.ticks.load(Ordering::Relaxed) >= self.ends_at {
            return Poll::Ready(());
        }
        let mut state = t
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = &mut *state;
        if !st.sleep.is_elapsed()
            && st
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        st.registered = Some(cx.waker().clone());
        while st.sleep.as_mut().poll(cx).is_ready() {
            let ticks = t.ticks.fetch_add(1, Ordering::Relaxed) + 1;
            // One clock read per tick (not per request).
            st.sleep.as_mut().reset(Instant::now() + t.tick);
            if ticks >= self.ends_at {
                // The next sleep polled registers its waker anew.
                st.registered = None;
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use hyper::rt::Timer;

    /// A sleep ends no earlier than asked, the first one and those made after it (hyper
    /// makes one per request on the same timer).
    #[tokio::test]
    async fn coarse_sleeps_never_end_early() {
        let timer = CoarseTimer::new(Duration::from_millis(10));
        for i in 0..4 {
            let start = std::time::Instant::now();
            let sleep = timer.sleep_until(timer.now() + Duration::from_millis(40));
            tokio::time::timeout(Duration::from_secs(20), sleep)
                .await
                .unwrap_or_else(|_| panic!("sleep {i} never ended"));
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(40),
                "sleep {i} ended after {took:?}"
            );
        }
        let start = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(20),
            timer.sleep(Duration::from_millis(25)),
        )
        .await
        .expect("sleep never ended");
        assert!(start.elapsed() >= Duration::from_millis(25));
    }

    #[tokio::test]
    async fn a_zero_sleep_is_over_at_once_and_now_needs_no_clock() {
        let timer = CoarseTimer::new(Duration::from_millis(10));
        assert!(timer.sleep(Duration::ZERO).now_or_never().is_some());
        assert!(timer.sleep_until(timer.now()).now_or_never().is_some());
        // Not polled yet: no tick counted, so `now` is where the timer started.
        assert_eq!(timer.now(), timer.ticker.epoch.into_std());
        assert!(
            timer
                .sleep(Duration::from_secs(3600))
                .now_or_never()
                .is_none()
        );
    }

    /// `reset` re-arms a sleep in its own box (hyper's header-read timeout, once per request):
    /// an elapsed sleep waits again, a long one is brought forward, both to the new deadline.
    #[tokio::test]
    async fn a_reset_sleep_is_rearmed_in_place() {
        let timer = CoarseTimer::new(Duration::from_millis(10));
        let mut sleep = timer.sleep(Duration::ZERO);
        assert!(
            sleep.as_mut().now_or_never().is_some(),
            "a zero sleep is over"
        );
        let boxed: *const () = (&raw const *sleep).cast();

        let start = std::time::Instant::now();
        timer.reset(&mut sleep, timer.now() + Duration::from_millis(40));
        assert_eq!(boxed, (&raw const *sleep).cast(), "the same box, re-armed");
        assert!(sleep.as_mut().now_or_never().is_none(), "waits again");
        tokio::time::timeout(Duration::from_secs(20), sleep.as_mut())
            .await
            .expect("the re-armed sleep never ended");
        assert!(start.elapsed() >= Duration::from_millis(40));

        let mut long = timer.sleep(Duration::from_secs(3600));
        timer.reset(&mut long, timer.now() + Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(20), long)
            .await
            .expect("a sleep brought forward ends at its new deadline");

        // Another timer's sleep is replaced, not changed.
        let other = CoarseTimer::new(Duration::from_millis(10));
        let mut foreign = other.sleep(Duration::from_secs(3600));
        timer.reset(&mut foreign, timer.now());
        assert!(foreign.as_mut().now_or_never().is_some());
    }
}
