//! Every consumer gets every event (that its selector keeps).

use std::fmt;

use super::{Contract, Dispatcher, DispatcherState, Outbox};
use crate::error::SubscribeError;
use crate::options::{Selector, SubscribeOptions, SubscriptionId};

/// Sends every event to every consumer, at the pace of the slowest.
///
/// Upstream demand follows the *least* demand across consumers: an event is produced only once
/// every consumer has asked for it. A consumer may subscribe with a
/// [`selector`](SubscribeOptions::selector) to receive only some events; the events its
/// selector drops count as received, so it does not hold the others back.
///
/// A new subscriber holds broadcasting back until it asks; to make sure every consumer sees the
/// first events, start the producer with [`DemandMode::Accumulate`](crate::DemandMode) and
/// switch it to forward once all have subscribed.
///
/// Unlike upstream, events buffered while demand was missing are always sent before newer ones
/// (GenStage may send newer events first), and a consumer may subscribe twice (it then receives everything twice).
///
/// # Examples
///
/// ```
/// use stage::{BroadcastDispatcher, Dispatcher, Outbox, SubscribeOptions, SubscriptionId};
///
/// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// let mut d = BroadcastDispatcher::<u32>::new();
/// let mut out = Outbox::new();
/// d.subscribe(a, &SubscribeOptions::new(), &mut out).unwrap();
/// d.subscribe(b, &SubscribeOptions::new().selector(|e: &u32| e % 2 == 0), &mut out).unwrap();
/// d.ask(a, 4, &mut out);
/// assert_eq!(out.take_demand(), 0); // b has not asked yet
/// d.ask(b, 3, &mut out);
/// assert_eq!(out.take_demand(), 3); // now both can take 3
/// let left = d.dispatch(vec![1, 2, 3, 4], &mut out);
/// assert_eq!(out.take_sends(), vec![(a, vec![1, 2, 3]), (b, vec![2])]);
/// assert_eq!(left, vec![4]);
/// assert_eq!(out.take_demand(), 1); // b's selector gave back 2 credits, a has 1 left
/// ```
pub struct BroadcastDispatcher<T> {
    consumers: Vec<Subscriber<T>>,
    /// Events every consumer has asked for and that can be broadcast now.
    waiting: usize,
    /// Upstream demand asked for and not yet dispatched.
    requested: usize,
    /// Copies discarded because their consumer left before handling them.
    dropped: u64,
}

struct Subscriber<T> {
    id: SubscriptionId,
    /// Demand beyond `waiting`.
    counter: usize,
    selector: Option<Selector<T>>,
}

impl<T> fmt::Debug for BroadcastDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastDispatcher")
            .field(
                "consumers",
                &self
                    .consumers
                    .iter()
                    .map(|s| (s.id, s.counter))
                    .collect::<Vec<_>>(),
            )
            .field("waiting", &self.waiting)
            .field("requested", &self.requested)
            .finish()
    }
}

impl<T> Default for BroadcastDispatcher<T> {
    fn default() -> Self {
        BroadcastDispatcher {
            consumers: Vec::new(),
            waiting: 0,
            requested: 0,
            dropped: 0,
        }
    }
}

impl<T> BroadcastDispatcher<T> {
    /// A dispatcher with no consumers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the demand every consumer shares into `waiting`; returns the new upstream demand.
    fn sync(&mut self) -> usize {
        let Some(min) = self.consumers.iter().map(|s| s.counter).min() else {
            return 0;
        };
        for s in &mut self.consumers {
            s.counter -= min;
        }
        self.waiting = self.waiting.saturating_add(min);
        let demand = self.waiting.saturating_sub(self.requested);
        self.requested += demand;
        demand
    }
}

impl<T: Clone + Send + 'static> Dispatcher<T> for BroadcastDispatcher<T> {
    fn contract(&self) -> Contract {
        Contract::Selectors {
            dispatcher: "BroadcastDispatcher",
        }
    }

    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        _: &mut Outbox<T>,
    ) -> Result<(), SubscribeError> {
        Dispatcher::<T>::contract(self).check::<T>(opts)?;
        let selector = opts.selector_for::<T>()?;
        // What everyone could take is given back: the newcomer has asked for nothing yet.
        for s in &mut self.consumers {
            s.counter = s.counter.saturating_add(self.waiting);
        }
        self.waiting = 0;
        self.consumers.push(Subscriber {
            id,
            counter: 0,
            selector,
        });
        Ok(())
    }

    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<T>) {
        let Some(s) = self.consumers.iter_mut().find(|s| s.id == id) else {
            return;
        };
        s.counter = s.counter.saturating_add(n);
        out.demand(self.sync());
    }

    /// The copies a leaving consumer never handled are discarded (every other consumer has
    /// its own) and counted as dropped.
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        self.dropped += returned.len() as u64;
        let before = self.consumers.len();
        self.consumers.retain(|s| s.id != id);
        if self.consumers.len() == before {
            return Vec::new();
        }
        if self.consumers.is_empty() {
            self.waiting = 0;
        } else {
            out.demand(self.sync());
        }
        Vec::new()
    }

    fn dispatch(&mut self, mut events: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        let n = self.waiting.min(events.len());
        if n == 0 {
            // Produced but not broadcast: no longer awaited from the producer.
            self.requested = self.requested.saturating_sub(events.len());
            return events;
        }
        let left = events.split_off(n);
        self.waiting -= n;
        // Both the events sent and the leftovers, which wait in the producer's buffer, have
        // been produced: neither is still awaited. (Draining that buffer later subtracts them
        // again, which is right then: the producer is asked only for what the buffer does not
        // cover.)
        self.requested = self.requested.saturating_sub(n + left.len());
        let mut gave_back = false;
        let last = self.consumers.len() - 1;
        let mut events = Some(events);
        for (i, s) in self.consumers.iter_mut().enumerate() {
            let batch = match &s.selector {
                Some(keep) => {
                    let all = events.as_ref().expect("taken only by the last consumer");
                    all.iter().filter(|e| keep(e)).cloned().collect()
                }
                None if i == last => events.take().expect("taken only once"),
                None => events.clone().expect("taken only by the last consumer"),
            };
            let filtered = n - batch.len();
            if filtered > 0 {
                s.counter = s.counter.saturating_add(filtered);
                gave_back = true;
            }
            out.send(s.id, batch);
        }
        if gave_back {
            out.demand(self.sync());
        }
        left
    }

    fn capacity(&self) -> usize {
        self.waiting
    }

    fn hold(&mut self, _: u64) -> bool {
        false
    }

    fn state(&self) -> DispatcherState {
        DispatcherState {
            consumers: self
                .consumers
                .iter()
                .map(|s| (s.id, s.counter.saturating_add(self.waiting)))
                .collect(),
            dropped: self.dropped,
            ..DispatcherState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> SubscriptionId {
        SubscriptionId::from_raw(n)
    }

    fn dispatch<T: Clone + Send + 'static>(
        d: &mut BroadcastDispatcher<T>,
        events: Vec<T>,
    ) -> (Vec<(SubscriptionId, Vec<T>)>, Vec<T>) {
        let mut out = Outbox::new();
        let left = d.dispatch(events, &mut out);
        (out.take_sends(), left)
    }

    fn ask<T: Clone + Send + 'static>(d: &mut BroadcastDispatcher<T>, n: u64, k: usize) -> usize {
        let mut out = Outbox::new();
        d.ask(id(n), k, &mut out);
        out.take_demand()
    }

    fn cancel<T: Clone + Send + 'static>(d: &mut BroadcastDispatcher<T>, n: u64) -> usize {
        let mut out = Outbox::new();
        assert!(d.cancel(id(n), Vec::new(), &mut out).is_empty());
        out.take_demand()
    }

    fn subscribe<T: Clone + Send + 'static>(d: &mut BroadcastDispatcher<T>, n: u64) {
        let mut out = Outbox::new();
        assert_eq!(
            d.subscribe(id(n), &SubscribeOptions::new(), &mut out),
            Ok(())
        );
        assert!(out.is_empty());
    }

    #[test]
    fn upstream_demand_follows_the_least_demand() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        assert_eq!(ask(&mut d, 1, 10), 0);
        assert_eq!(ask(&mut d, 2, 4), 4);
        assert_eq!(ask(&mut d, 2, 4), 4);
        assert_eq!(ask(&mut d, 2, 4), 2, "consumer 1 only asked for 10");
        assert_eq!(d.capacity(), 10);
    }

    #[test]
    fn no_duplicate_upstream_demand() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        assert_eq!(ask(&mut d, 1, 5), 5);
        subscribe(&mut d, 2);
        assert_eq!(ask(&mut d, 2, 5), 0, "5 were already requested");
        assert_eq!(d.capacity(), 5);
    }

    #[test]
    fn every_consumer_gets_every_event_and_the_rest_is_left() {
        let mut d = BroadcastDispatcher::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        ask(&mut d, 1, 3);
        ask(&mut d, 2, 3);
        let (sent, left) = dispatch(&mut d, vec!['a', 'b', 'c', 'd']);
        assert_eq!(
            sent,
            vec![(id(1), vec!['a', 'b', 'c']), (id(2), vec!['a', 'b', 'c'])]
        );
        assert_eq!(left, vec!['d']);
        assert_eq!(d.capacity(), 0);
    }

    #[test]
    fn nothing_waiting_leaves_everything() {
        let mut d = BroadcastDispatcher::new();
        subscribe(&mut d, 1);
        let (sent, left) = dispatch(&mut d, vec![1, 2]);
        assert!(sent.is_empty());
        assert_eq!(left, vec![1, 2]);
    }

    #[test]
    fn a_new_subscriber_blocks_broadcast_until_it_asks() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        assert_eq!(ask(&mut d, 1, 5), 5);
        subscribe(&mut d, 2);
        assert_eq!(d.capacity(), 0);
        assert_eq!(ask(&mut d, 2, 2), 0);
        assert_eq!(d.capacity(), 2);
    }

    #[test]
    fn selectors_filter_and_give_credit_back_spec_example() {
        let mut d = BroadcastDispatcher::new();
        let mut out = Outbox::new();
        let pre = SubscribeOptions::new().selector(|e: &&str| e.starts_with("pre"));
        let pref = SubscribeOptions::new().selector(|e: &&str| e.starts_with("pref"));
        d.subscribe(id(1), &pre, &mut out).unwrap();
        d.subscribe(id(2), &pref, &mut out).unwrap();
        d.ask(id(1), 4, &mut out);
        d.ask(id(2), 4, &mut out);
        assert_eq!(out.take_demand(), 4);
        let left = d.dispatch(
            vec!["pref-1234", "pref-5678", "pre0000", "foo0000"],
            &mut out,
        );
        assert!(left.is_empty());
        assert_eq!(
            out.take_sends(),
            vec![
                (id(1), vec!["pref-1234", "pref-5678", "pre0000"]),
                (id(2), vec!["pref-1234", "pref-5678"])
            ]
        );
        // Consumer 1 got 1 back, consumer 2 got 2 back: both can take 1 more now.
        assert_eq!(out.take_demand(), 1);
    }

    #[test]
    fn a_selector_over_another_type_is_refused_naming_the_option() {
        let mut d = BroadcastDispatcher::<u32>::new();
        let mut out = Outbox::new();
        let opts = SubscribeOptions::new().selector(|_: &String| true);
        match d.subscribe(id(1), &opts, &mut out) {
            Err(SubscribeError::Option(e)) => assert_eq!(e.option, "selector"),
            other => panic!("expected a selector error, got {other:?}"),
        }
        let opts = SubscribeOptions::new().partition(0);
        assert!(
            matches!(d.subscribe(id(1), &opts, &mut out), Err(SubscribeError::Option(e)) if e.option == "partition")
        );
    }

    #[test]
    fn cancelling_the_slowest_creates_demand() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        ask(&mut d, 1, 10);
        ask(&mut d, 2, 2);
        assert_eq!(cancel(&mut d, 2), 8);
        assert_eq!(d.capacity(), 10);
    }

    #[test]
    fn cancelling_the_last_resets_but_keeps_requested() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        assert_eq!(ask(&mut d, 1, 10), 10);
        assert_eq!(cancel(&mut d, 1), 0);
        subscribe(&mut d, 2);
        assert_eq!(ask(&mut d, 2, 10), 0, "the 10 requested are still coming");
    }

    #[test]
    fn surplus_a_producer_made_beyond_demand_is_not_asked_for_again() {
        // The producer answers an ask of 10 with 20: the 10 it made ahead are netted against
        // the next ask by the producer's buffer, so nothing is requested twice.
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        assert_eq!(ask(&mut d, 1, 10), 10);
        let (sent, left) = dispatch(&mut d, (0..20).collect());
        assert_eq!(sent[0].1.len(), 10);
        assert_eq!(left.len(), 10);
        // The next ask of 10: the dispatcher asks 10, and the producer's buffer (the 10 left)
        // covers it, so the producer is asked for 10 - 10 = 0.
        assert_eq!(ask(&mut d, 1, 10), 10);
        let (sent, left) = dispatch(&mut d, left);
        assert_eq!((sent[0].1.len(), left.len()), (10, 0));
        assert_eq!(d.requested, 0, "nothing is awaited any more");
    }

    #[test]
    fn copies_a_leaving_consumer_never_handled_are_counted_as_dropped() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        let mut out = Outbox::new();
        assert!(d.cancel(id(1), vec![1, 2, 3], &mut out).is_empty());
        assert_eq!(d.state().dropped, 3);
    }
}
