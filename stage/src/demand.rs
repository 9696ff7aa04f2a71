//! Consumer-side demand accounting for automatic subscriptions (`docs/semantics.md`,
//! *Demand*). Pure.
//!
//! Public for stages that count demand themselves in manual mode (such as consumers of
//! [`Packet`](crate::Packet)s), so that they batch and refill exactly as automatic ones do.

/// The credit of one automatic subscription: how many events the consumer has asked for and
/// not yet received, and the limits it refills between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    credit: usize,
    min: usize,
    max: usize,
}

/// The plan for one batch of an incoming message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// How many events the batch holds.
    pub len: usize,
    /// How many events to ask for once the batch has been handled (0: none).
    pub ask: usize,
    /// How many of the batch's events were beyond the credit the consumer had asked for.
    pub excess: usize,
}

impl Demand {
    /// A new subscription that has just asked for `max`.
    ///
    /// # Panics
    ///
    /// Unless `1 <= max` and `min < max` (see [`SubscribeOptions::limits`](crate::SubscribeOptions::limits)).
    pub fn new(max: usize, min: usize) -> Self {
        assert!(
            max >= 1 && min < max,
            "demand limits must satisfy 1 <= max and min < max"
        );
        Demand {
            credit: max,
            min,
            max,
        }
    }

    /// The most events one batch may hold: `max - min`.
    pub fn batch_size(&self) -> usize {
        self.max - self.min
    }

    /// Events asked for and not yet received.
    pub fn credit(&self) -> usize {
        self.credit
    }

    /// Starts cutting a message of `len` events into batches of at most `max - min`.
    ///
    /// The cut is fixed from the start of the message; the excess check uses the credit at the
    /// message's arrival, which never refills within the message.
    pub fn message(&self, len: usize) -> Message {
        Message {
            left: len,
            old: self.credit,
        }
    }

    /// The next batch of `message`, with the ask to send once it has been handled.
    pub fn next_batch(&mut self, message: &mut Message) -> Option<Batch> {
        if message.left == 0 {
            return None;
        }
        let b = message.left.min(self.batch_size());
        message.left -= b;
        let (counted, excess) = if b > message.old {
            let counted = message.old;
            message.old = 0;
            (counted, b - counted)
        } else {
            message.old -= b;
            (b, 0)
        };
        let diff = self.credit.saturating_sub(counted);
        let ask = if diff <= self.min {
            self.credit = self.max;
            self.max - diff
        } else {
            self.credit = diff;
            0
        };
        Some(Batch {
            len: b,
            ask,
            excess,
        })
    }
}

/// Where the cutting of one incoming message stands.
#[derive(Clone, Copy, Debug)]
pub struct Message {
    left: usize,
    old: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(d: &mut Demand, len: usize) -> Vec<Batch> {
        let mut m = d.message(len);
        std::iter::from_fn(|| d.next_batch(&mut m)).collect()
    }

    fn plan(d: &mut Demand, len: usize) -> Vec<(usize, usize)> {
        cut(d, len).iter().map(|b| (b.len, b.ask)).collect()
    }

    #[test]
    fn defaults_cut_a_full_message_in_two_and_ask_each_half() {
        let mut d = Demand::new(1000, 500);
        assert_eq!(plan(&mut d, 1000), vec![(500, 500), (500, 500)]);
        assert_eq!(d.credit(), 1000);
    }

    #[test]
    fn max_100_min_80_asks_20_per_batch() {
        let mut d = Demand::new(100, 80);
        assert_eq!(plan(&mut d, 100), vec![(20, 20); 5]);
    }

    #[test]
    fn max_100_min_20_refills_only_at_the_threshold() {
        let mut d = Demand::new(100, 20);
        assert_eq!(plan(&mut d, 100), vec![(80, 80), (20, 0)]);
        assert_eq!(d.credit(), 80);
        assert_eq!(plan(&mut d, 80), vec![(80, 100)]);
        assert_eq!(d.credit(), 100);
    }

    #[test]
    fn source_not_docs_max_1000_min_750_messages_of_100() {
        // The third 100-event message asks 300 (GenStage's docs say 250; its code does this).
        let mut d = Demand::new(1000, 750);
        assert_eq!(plan(&mut d, 100), vec![(100, 0)]);
        assert_eq!(plan(&mut d, 100), vec![(100, 0)]);
        assert_eq!(plan(&mut d, 100), vec![(100, 300)]);
        assert_eq!(d.credit(), 1000);
    }

    #[test]
    fn small_messages_are_not_aggregated() {
        let mut d = Demand::new(10, 5);
        assert_eq!(plan(&mut d, 3), vec![(3, 0)]);
        assert_eq!(plan(&mut d, 3), vec![(3, 6)]);
    }

    #[test]
    fn from_enumerable_example_batches() {
        // GenStage's from_enumerable example: max 10 / min 4 over 1..25 gives batches 6, 4, 6, 6, 3 when the
        // producer answers each ask exactly.
        let mut d = Demand::new(10, 4);
        let mut sizes = vec![];
        let mut outstanding = vec![10usize];
        let mut left = 25usize;
        while let Some(n) = outstanding.pop() {
            let n = n.min(left);
            if n == 0 {
                break;
            }
            left -= n;
            for b in cut(&mut d, n) {
                sizes.push(b.len);
                if b.ask > 0 {
                    outstanding.insert(0, b.ask);
                }
            }
        }
        assert_eq!(sizes, vec![6, 4, 6, 6, 3]);
    }

    #[test]
    fn excess_is_reported_and_credit_never_goes_negative() {
        let mut d = Demand::new(10, 5);
        let batches = cut(&mut d, 12);
        assert_eq!(batches.iter().map(|b| b.excess).sum::<usize>(), 2);
        assert_eq!(d.credit(), 10);
    }
}
