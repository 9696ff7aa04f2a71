//! The rate limit shared by a pipeline's producers: a budget of messages per interval, taken
//! from when a processor asks a producer for messages, so that the limit holds demand back
//! instead of dropping anything. Pure [`Bucket`], shared as [`RateLimiter`].
//!
//! Intervals are counted lazily on tokio's clock from the limiter's start, at fixed
//! boundaries, as if a timer reset the budget at each: nothing ticks while nobody asks.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::options::{Apply, RateLimit};

/// The budget of the current interval. Pure: the time is passed in.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    limit: RateLimit,
    /// A limit that applies from the next interval.
    pending: Option<RateLimit>,
    tokens: u64,
    /// When the current interval ends.
    end: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Bucket {
            limit,
            pending: None,
            tokens: limit.allowed,
            end: now + limit.interval,
        }
    }

    /// Starts the interval `now` falls in, if the current one is over.
    fn roll(&mut self, now: Instant) {
        if now < self.end {
            return;
        }
        if let Some(limit) = self.pending.take() {
            self.limit = limit;
        }
        // The boundaries stay aligned however long nobody asked: the interval `now` falls in
        // ends where the current one would, plus whole intervals.
        let interval = self.limit.interval;
        let behind = now.duration_since(self.end).as_nanos();
        let into = behind % interval.as_nanos();
        let into = Duration::from_nanos(u64::try_from(into).unwrap_or(u64::MAX));
        self.end = now + (interval - into.min(interval));
        self.tokens = self.limit.allowed;
    }

    /// Takes up to `want` from the budget; returns what it got.
    pub(crate) fn take(&mut self, now: Instant, want: usize) -> usize {
        self.roll(now);
        let got = self.tokens.min(want as u64);
        self.tokens -= got;
        got as usize
    }

    /// When the budget is next renewed.
    pub(crate) fn next_refill(&self) -> Instant {
        self.end
    }

    /// The limit in force, and the one that applies from the next interval if it differs.
    pub(crate) fn limits(&self) -> (RateLimit, Option<RateLimit>) {
        (self.limit, self.pending)
    }

    pub(crate) fn update(&mut self, limit: RateLimit, apply: Apply, now: Instant) {
        match apply {
            Apply::NextInterval => {
                self.roll(now);
                self.pending = Some(limit);
            }
            Apply::Now => {
                self.limit = limit;
                self.pending = None;
                self.tokens = limit.allowed;
                self.end = now + limit.interval;
            }
        }
    }
}

type Waker = Box<dyn Fn() + Send + Sync>;

/// A [`Bucket`] shared by every processor of a pipeline, with a way to wake the processors
/// that wait for it when the limit is raised now.
#[derive(Clone)]
pub(crate) struct RateLimiter {
    bucket: Arc<Mutex<Bucket>>,
    wakers: Arc<Mutex<Vec<Waker>>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            bucket: Arc::new(Mutex::new(Bucket::new(limit, Instant::now()))),
            wakers: Arc::default(),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `want` messages' worth now.
    pub(crate) fn take(&self, want: usize) -> usize {
        self.bucket().take(Instant::now(), want)
    }

    pub(crate) fn next_refill(&self) -> Instant {
        self.bucket().next_refill()
    }

    pub(crate) fn limits(&self) -> (RateLimit, Option<RateLimit>) {
        self.bucket().limits()
    }

    /// Registers a processor to wake when the budget is renewed early.
    pub(crate) fn on_renew(&self, wake: impl Fn() + Send + Sync + 'static) {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(wake));
    }

    pub(crate) fn update(&self, limit: RateLimit, apply: Apply) {
        self.bucket().update(limit, apply, Instant::now());
        if apply == Apply::Now {
            for wake in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                wake();
            }
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bucket", &*self.bucket())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limit(allowed: u64, ms: u64) -> RateLimit {
        RateLimit::new(allowed, Duration::from_millis(ms))
    }

    #[test]
    fn the_budget_is_spent_then_renewed_at_each_boundary() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(10, 100), t0);
        assert_eq!(b.take(t0, 6), 6);
        assert_eq!(b.take(t0 + Duration::from_millis(50), 6), 4);
        assert_eq!(b.take(t0 + Duration::from_millis(99), 1), 0);
        assert_eq!(b.next_refill(), t0 + Duration::from_millis(100));
        assert_eq!(b.take(t0 + Duration::from_millis(100), 3), 3);
        // Idle for a while: the next interval is the one `now` falls in, aligned.
        assert_eq!(b.take(t0 + Duration::from_millis(450), 20), 10);
        assert_eq!(b.next_refill(), t0 + Duration::from_millis(500));
    }

    #[test]
    fn a_long_idle_spell_under_a_short_interval_keeps_the_boundaries() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(3, 1), t0);
        // 60 days of 1 ms intervals: more intervals than a u32 counts.
        let later = t0 + Duration::from_secs(60 * 24 * 3600) + Duration::from_micros(250);
        assert_eq!(b.take(later, 5), 3);
        assert_eq!(
            b.next_refill(),
            t0 + Duration::from_secs(60 * 24 * 3600) + Duration::from_millis(1)
        );
    }

    #[test]
    fn an_update_applies_from_the_next_interval_or_now() {
        let t0 = Instant::now();
        let mut b = Bucket::new(limit(10, 100), t0);
        assert_eq!(b.take(t0, 10), 10);
        b.update(
            limit(2, 50),
            Apply::NextInterval,
            t0 + Duration::from_millis(10),
        );
        assert_eq!(
            b.take(t0 + Duration::from_millis(20), 5),
            0,
            "this interval is spent"
        );
        assert_eq!(b.limits(), (limit(10, 100), Some(limit(2, 50))));
        assert_eq!(b.take(t0 + Duration::from_millis(100), 5), 2);
        assert_eq!(b.next_refill(), t0 + Duration::from_millis(150));
        b.update(limit(7, 1000), Apply::Now, t0 + Duration::from_millis(120));
        assert_eq!(b.take(t0 + Duration::from_millis(120), 9), 7);
        assert_eq!(b.next_refill(), t0 + Duration::from_millis(1120));
    }
}
