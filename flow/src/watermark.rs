//! Watermarks as a pure core (no async, no I/O).
//!
//! - [`Watermarks`]: each input's progress (the latest event time, or fixed window, it has
//!   reached), and the least of it over the inputs that count: those that have not finished
//!   and, with an idle timeout, have sent something recently. A fixed-window stage closes the
//!   windows below it; a stage feeding one sends it downstream as its own watermark.
//! - [`MarksIn`]: the watermarks upstream stages send. A mark travels beside the events, not
//!   among them, so it says after how many of that upstream stage's events to this stage it
//!   holds; it is applied only once those events have been handled, so a mark never overtakes
//!   the events it follows.
//!
//! See `docs/semantics.md`, *Flow: event time and watermarks*.

use std::collections::VecDeque;
use std::time::Duration;

use stage::SubscriptionId;
use tokio::time::Instant;

/// Where events come from: a subscription, or (`None`) the stage's own local source.
pub(crate) type Input = Option<SubscriptionId>;

#[derive(Clone, Debug)]
struct Progress {
    input: Input,
    latest: Option<u64>,
    last_active: Instant,
    idle: bool,
}

/// Each input's latest value, and the least over the inputs that count.
#[derive(Clone, Debug)]
pub(crate) struct Watermarks {
    /// Few in practice: a linear search beats hashing.
    inputs: Vec<Progress>,
    idle_after: Option<Duration>,
}

impl Watermarks {
    /// No inputs yet; inputs silent for `idle_after` stop counting until they send again.
    pub(crate) fn new(idle_after: Option<Duration>) -> Self {
        Watermarks {
            inputs: Vec::new(),
            idle_after,
        }
    }

    fn find(&mut self, input: Input, now: Instant) -> &mut Progress {
        match self.inputs.iter().position(|p| p.input == input) {
            Some(i) => &mut self.inputs[i],
            None => {
                self.inputs.push(Progress {
                    input,
                    latest: None,
                    last_active: now,
                    idle: false,
                });
                self.inputs.last_mut().expect("just pushed")
            }
        }
    }

    /// An input that counts from `now` on, with no value yet.
    pub(crate) fn add(&mut self, input: Input, now: Instant) {
        self.find(input, now);
    }

    /// An input that finished: it no longer holds anything back.
    pub(crate) fn remove(&mut self, input: Input) {
        self.inputs.retain(|p| p.input != input);
    }

    /// An input's latest value.
    pub(crate) fn latest(&self, input: Input) -> Option<u64> {
        self.inputs
            .iter()
            .find(|p| p.input == input)
            .and_then(|p| p.latest)
    }

    /// Whether the input is left out as idle.
    pub(crate) fn is_idle(&self, input: Input) -> bool {
        self.inputs.iter().any(|p| p.input == input && p.idle)
    }

    /// The input sent something: it counts again if it was idle.
    pub(crate) fn touch(&mut self, input: Input, now: Instant) {
        let p = self.find(input, now);
        p.last_active = now;
        p.idle = false;
    }

    /// Raises an input's latest value to `value` (never lowers it), and touches it.
    pub(crate) fn advance(&mut self, input: Input, value: u64, now: Instant) {
        let p = self.find(input, now);
        p.latest = Some(p.latest.map_or(value, |l| l.max(value)));
        p.last_active = now;
        p.idle = false;
    }

    /// The least latest value of the inputs that count. `None` when none counts, or while
    /// one of them has no value yet (it may still send anything).
    pub(crate) fn least(&self) -> Option<u64> {
        let mut least: Option<u64> = None;
        for p in self.inputs.iter().filter(|p| !p.idle) {
            let latest = p.latest?;
            least = Some(least.map_or(latest, |l| l.min(latest)));
        }
        least
    }

    /// When the next counting input becomes idle, with an idle timeout.
    pub(crate) fn next_idle(&self) -> Option<Instant> {
        let after = self.idle_after?;
        self.inputs
            .iter()
            .filter(|p| !p.idle)
            .map(|p| p.last_active + after)
            .min()
    }

    /// Leaves out the inputs silent for the idle timeout by `now`. Returns whether any was.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let Some(after) = self.idle_after else {
            return false;
        };
        let mut changed = false;
        for p in &mut self.inputs {
            if !p.idle && p.last_active + after <= now {
                p.idle = true;
                changed = true;
            }
        }
        changed
    }
}

/// A watermark an upstream stage sent: its value (event time in ms), and for each of its
/// consumers' subscriptions how many events it had sent on it when it sent the mark.
#[derive(Clone, Debug)]
pub(crate) struct Mark {
    pub(crate) counts: std::sync::Arc<[(SubscriptionId, u64)]>,
    pub(crate) time: u64,
}

#[derive(Debug)]
struct Pending {
    sub: SubscriptionId,
    /// Events handled on the subscription so far.
    handled: u64,
    /// Marks not yet due: `(after, value)`, in the order sent.
    waiting: VecDeque<(u64, u64)>,
}

/// The marks of a stage's subscriptions that wait for the events they follow.
#[derive(Debug, Default)]
pub(crate) struct MarksIn {
    subs: Vec<Pending>,
}

impl MarksIn {
    fn find(&mut self, sub: SubscriptionId) -> &mut Pending {
        match self.subs.iter().position(|p| p.sub == sub) {
            Some(i) => &mut self.subs[i],
            None => {
                self.subs.push(Pending {
                    sub,
                    handled: 0,
                    waiting: VecDeque::new(),
                });
                self.subs.last_mut().expect("just pushed")
            }
        }
    }

    /// A mark for `sub` that holds after its `after`-th event: returns the latest value now
    /// due, if any.
    pub(crate) fn mark(&mut self, sub: SubscriptionId, after: u64, value: u64) -> Option<u64> {
        let p = self.find(sub);
        p.waiting.push_back((after, value));
        Self::due(p)
    }

    /// `n` more events of `sub` were handled: returns the latest value now due, if any.
    pub(crate) fn handled(&mut self, sub: SubscriptionId, n: usize) -> Option<u64> {
        let p = self.find(sub);
        p.handled += n as u64;
        if p.waiting.is_empty() {
            return None;
        }
        Self::due(p)
    }

    fn due(p: &mut Pending) -> Option<u64> {
        let mut value = None;
        while let Some(&(after, v)) = p.waiting.front() {
            if after > p.handled {
                break;
            }
            value = Some(v);
            p.waiting.pop_front();
        }
        value
    }

    /// The subscription ended.
    pub(crate) fn remove(&mut self, sub: SubscriptionId) {
        self.subs.retain(|p| p.sub != sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(n: u64) -> Input {
        Some(SubscriptionId::from_raw(n))
    }

    #[test]
    fn the_least_waits_for_every_input_and_ignores_finished_ones() {
        let now = Instant::now();
        let mut w = Watermarks::new(None);
        w.add(sub(1), now);
        w.add(sub(2), now);
        w.advance(sub(1), 5, now);
        assert_eq!(w.least(), None, "input 2 has sent nothing");
        w.advance(sub(2), 3, now);
        assert_eq!(w.least(), Some(3));
        w.advance(sub(2), 1, now);
        assert_eq!(w.latest(sub(2)), Some(3), "never lowered");
        w.remove(sub(2));
        assert_eq!(w.least(), Some(5));
        w.remove(sub(1));
        assert_eq!(w.least(), None, "no inputs: nothing to go by");
    }

    #[test]
    fn silent_inputs_are_left_out_after_the_idle_timeout_and_back_when_they_send() {
        let start = Instant::now();
        let after = Duration::from_millis(100);
        let mut w = Watermarks::new(Some(after));
        w.add(sub(1), start);
        w.add(sub(2), start);
        w.advance(sub(1), 7, start + Duration::from_millis(50));
        assert_eq!(
            w.next_idle(),
            Some(start + after),
            "input 2, silent since the start"
        );
        assert!(!w.expire(start + Duration::from_millis(99)));
        assert!(w.expire(start + after));
        assert_eq!(w.least(), Some(7), "input 2 is idle");
        assert!(w.is_idle(sub(2)) && !w.is_idle(sub(1)));
        assert_eq!(w.next_idle(), Some(start + Duration::from_millis(150)));
        w.touch(sub(2), start + Duration::from_millis(120));
        assert_eq!(w.least(), None, "back, still with no value");
        w.advance(sub(2), 9, start + Duration::from_millis(130));
        assert_eq!(w.least(), Some(7));
    }

    #[test]
    fn without_an_idle_timeout_nobody_is_idle() {
        let start = Instant::now();
        let mut w = Watermarks::new(None);
        w.add(sub(1), start);
        assert_eq!(w.next_idle(), None);
        assert!(!w.expire(start + Duration::from_secs(3600)));
    }

    #[test]
    fn marks_wait_for_the_events_they_follow() {
        let s = SubscriptionId::from_raw(1);
        let mut m = MarksIn::default();
        assert_eq!(m.mark(s, 0, 10), Some(10), "nothing to wait for");
        assert_eq!(m.mark(s, 3, 20), None);
        assert_eq!(m.mark(s, 5, 30), None);
        assert_eq!(m.handled(s, 2), None);
        assert_eq!(m.handled(s, 1), Some(20));
        assert_eq!(m.handled(s, 4), Some(30), "the latest due");
        assert_eq!(m.handled(s, 1), None);
        m.remove(s);
        assert_eq!(
            m.mark(s, 1, 40),
            None,
            "counts start again for a new subscription"
        );
    }
}
