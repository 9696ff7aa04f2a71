//! The supervisor's pure bookkeeping: demand slots per subscription and restart intensity.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Demand accounting of one subscription: children running from it, freed slots not yet
/// asked for, and the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slots {
    count: usize,
    pending: usize,
    min: usize,
    max: usize,
}

impl Slots {
    pub(super) fn new(max: usize, min: usize) -> Self {
        Slots {
            count: 0,
            pending: 0,
            min,
            max,
        }
    }

    /// `events` arrived, of which `failed` could not start. Returns the excess over `max` and
    /// the demand to ask for.
    pub(super) fn arrived(&mut self, events: usize, failed: usize) -> (usize, usize) {
        let excess = (self.count + events).saturating_sub(self.max);
        self.count = (self.count + events).saturating_sub(failed);
        (excess, self.free(failed))
    }

    /// A child from this subscription ended without a restart. Returns the demand to ask for.
    pub(super) fn freed(&mut self) -> usize {
        self.count = self.count.saturating_sub(1);
        self.free(1)
    }

    fn free(&mut self, n: usize) -> usize {
        self.pending += n;
        if self.pending > 0 && self.pending >= self.min {
            std::mem::take(&mut self.pending)
        } else {
            0
        }
    }
}

/// The restart intensity: at most `max` restarts within any `period`.
#[derive(Debug)]
pub(super) struct Intensity {
    max: usize,
    period: Duration,
    restarts: VecDeque<Instant>,
}

impl Intensity {
    pub(super) fn new(max: usize, period: Duration) -> Self {
        Intensity {
            max,
            period,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`. Returns `false` if that exceeds the intensity.
    pub(super) fn record(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        while let Some(&then) = self.restarts.front() {
            if now.duration_since(then) <= self.period {
                break;
            }
            self.restarts.pop_front();
        }
        self.restarts.len() <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribing_asks_max_and_each_freed_slot_waits_for_min() {
        // max 3 / min 2: one child exits (no ask), a second exits (ask 2), as in GenStage.
        let mut slots = Slots::new(3, 2);
        assert_eq!(slots.arrived(3, 0), (0, 0));
        assert_eq!(slots.freed(), 0);
        assert_eq!(slots.freed(), 2);
        assert_eq!(slots.count, 1);
        assert_eq!(slots.pending, 0);
    }

    #[test]
    fn min_zero_asks_one_per_freed_slot() {
        let mut slots = Slots::new(1, 0);
        assert_eq!(slots.arrived(1, 0), (0, 0));
        assert_eq!(slots.freed(), 1);
        assert_eq!(slots.arrived(1, 0), (0, 0));
        assert_eq!(slots.freed(), 1);
    }

    #[test]
    fn children_that_fail_to_start_free_their_slot_at_once() {
        let mut slots = Slots::new(4, 1);
        assert_eq!(slots.arrived(4, 2), (0, 2));
        assert_eq!(slots.count, 2);
    }

    #[test]
    fn events_beyond_max_are_reported_as_excess() {
        let mut slots = Slots::new(2, 1);
        assert_eq!(slots.arrived(2, 0), (0, 0));
        assert_eq!(slots.arrived(3, 0), (3, 0));
        assert_eq!(slots.count, 5);
    }

    #[test]
    fn intensity_counts_restarts_within_the_window() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut intensity = Intensity::new(2, Duration::from_secs(5));
        assert!(intensity.record(at(0)));
        assert!(intensity.record(at(1)));
        assert!(!intensity.record(at(5)), "three restarts within 5 seconds");
        let mut intensity = Intensity::new(2, Duration::from_secs(5));
        assert!(intensity.record(at(0)));
        assert!(intensity.record(at(1)));
        assert!(
            intensity.record(at(6)),
            "the first restart has left the window"
        );
    }

    #[test]
    fn zero_restarts_allowed_means_the_first_one_stops() {
        let mut intensity = Intensity::new(0, Duration::from_secs(5));
        assert!(!intensity.record(Instant::now()));
    }
}
