//! Demand counted by hand, so that a stage can hold asks back (for the rate limit, or while it
//! holds too many messages waiting for a retry or for their key). Pure.
//!
//! The rule is `stage`'s automatic one: each subscription asks for `max` at first and, after a
//! chunk of at most `max - min` has been handled, refills to `max` once its credit has fallen
//! to `min` or below. What differs is that every ask goes through a `grant` that may give less
//! than was wanted, and that asking can be paused.

use stage::SubscriptionId;

/// One subscription's credit: messages asked for and not received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sub {
    id: SubscriptionId,
    credit: usize,
}

/// The credit of a stage's subscriptions to its producers.
#[derive(Clone, Debug)]
pub(crate) struct Credits {
    subs: Vec<Sub>,
    max: usize,
    min: usize,
    paused: bool,
    /// Where the next refill starts, so that a short grant is shared out in turn.
    next: usize,
    /// Messages received beyond the credit (a producer that sent more than asked).
    excess: u64,
}

impl Credits {
    pub(crate) fn new(max: usize, min: usize) -> Self {
        debug_assert!(max >= 1 && min < max);
        Credits {
            subs: Vec::new(),
            max,
            min,
            paused: false,
            next: 0,
            excess: 0,
        }
    }

    /// The most messages one chunk holds: `max - min`.
    pub(crate) fn chunk(&self) -> usize {
        self.max - self.min
    }

    /// A new subscription, which has asked for nothing yet.
    pub(crate) fn add(&mut self, id: SubscriptionId) {
        if !self.subs.iter().any(|s| s.id == id) {
            self.subs.push(Sub { id, credit: 0 });
        }
    }

    /// A subscription ended. `false` if it was not known.
    pub(crate) fn remove(&mut self, id: SubscriptionId) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| s.id != id);
        before != self.subs.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// `n` messages of subscription `id` have been handled.
    pub(crate) fn received(&mut self, id: SubscriptionId, n: usize) {
        if let Some(sub) = self.subs.iter_mut().find(|s| s.id == id) {
            if n > sub.credit {
                self.excess += (n - sub.credit) as u64;
            }
            sub.credit = sub.credit.saturating_sub(n);
        }
    }

    /// Holds every ask back (or lets them go again).
    pub(crate) fn pause(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// The asks due now: each subscription whose credit is at `min` or below wants enough to
    /// refill to `max`, and gets what `grant` gives it. Appends `(subscription, n)` to `asks`
    /// and returns whether some subscription got less than it wanted.
    pub(crate) fn refill(
        &mut self,
        mut grant: impl FnMut(usize) -> usize,
        asks: &mut Vec<(SubscriptionId, usize)>,
    ) -> bool {
        if self.paused || self.subs.is_empty() {
            return false;
        }
        let len = self.subs.len();
        let start = self.next % len;
        let mut short = false;
        for k in 0..len {
            let sub = &mut self.subs[(start + k) % len];
            if sub.credit > self.min {
                continue;
            }
            let want = self.max - sub.credit;
            let got = grant(want).min(want);
            if got > 0 {
                sub.credit += got;
                asks.push((sub.id, got));
            }
            if got < want {
                short = true;
            }
        }
        self.next = start + 1;
        short
    }

    #[cfg(test)]
    fn credit(&self, id: SubscriptionId) -> Option<usize> {
        self.subs.iter().find(|s| s.id == id).map(|s| s.credit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> SubscriptionId {
        SubscriptionId::from_raw(n)
    }

    fn all(n: usize) -> usize {
        n
    }

    #[test]
    fn asks_max_then_refills_at_min_like_automatic_demand() {
        // max 10, min 5: chunks of 5; the first ask is 10, then 5 after each chunk of 5.
        let mut c = Credits::new(10, 5);
        c.add(id(1));
        let mut asks = Vec::new();
        assert!(!c.refill(all, &mut asks));
        assert_eq!(asks, vec![(id(1), 10)]);
        assert_eq!(c.chunk(), 5);
        asks.clear();
        c.received(id(1), 3);
        c.refill(all, &mut asks);
        assert!(asks.is_empty(), "credit 7 is above min 5");
        c.received(id(1), 2);
        c.refill(all, &mut asks);
        assert_eq!(asks, vec![(id(1), 5)]);
        assert_eq!(c.credit(id(1)), Some(10));
    }

    #[test]
    fn a_short_grant_is_remembered_and_asked_for_later() {
        let mut c = Credits::new(10, 5);
        c.add(id(1));
        let mut asks = Vec::new();
        assert!(c.refill(|_| 3, &mut asks));
        assert_eq!(asks, vec![(id(1), 3)]);
        asks.clear();
        // Nothing granted: nothing asked, still short.
        assert!(c.refill(|_| 0, &mut asks));
        assert!(asks.is_empty());
        assert!(!c.refill(all, &mut asks));
        assert_eq!(asks, vec![(id(1), 7)]);
    }

    #[test]
    fn a_short_grant_is_shared_out_in_turn() {
        let mut c = Credits::new(4, 0);
        c.add(id(1));
        c.add(id(2));
        let mut budget = 4;
        let mut asks = Vec::new();
        c.refill(
            |want| {
                let g = want.min(budget);
                budget -= g;
                g
            },
            &mut asks,
        );
        assert_eq!(asks, vec![(id(1), 4)]);
        asks.clear();
        c.refill(|want| want.min(2), &mut asks);
        // Subscription 2 goes first this time.
        assert_eq!(asks, vec![(id(2), 2)]);
    }

    #[test]
    fn paused_credits_ask_nothing_and_excess_is_counted() {
        let mut c = Credits::new(2, 0);
        c.add(id(1));
        c.pause(true);
        let mut asks = Vec::new();
        assert!(!c.refill(all, &mut asks));
        assert!(asks.is_empty());
        c.pause(false);
        c.refill(all, &mut asks);
        assert_eq!(asks, vec![(id(1), 2)]);
        c.received(id(1), 3);
        assert_eq!(c.excess, 1);
        assert!(c.remove(id(1)));
        assert!(!c.remove(id(1)));
        assert!(c.is_empty());
    }
}
