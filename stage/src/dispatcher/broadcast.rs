//! Every consumer gets every event (that its selector keeps).

use std::fmt;

use super::{Dispatcher, refuse_foreign_options};
use crate::error::SubscribeError;
use crate::options::{Selector, SubscribeOptions, SubscriptionId};

/// Sends every event to every consumer, at the pace of the slowest (GenStage §2.9).
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
/// (§2.9 rule 10), and a consumer may subscribe twice (it then receives everything twice).
///
/// # Examples
///
/// ```
/// use stage::{BroadcastDispatcher, Dispatcher, SubscribeOptions, SubscriptionId};
///
/// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// let mut d = BroadcastDispatcher::<u32>::new();
/// d.subscribe(a, &SubscribeOptions::new()).unwrap();
/// d.subscribe(b, &SubscribeOptions::new().selector(|e: &u32| e % 2 == 0)).unwrap();
/// assert_eq!(d.ask(a, 4), 0); // b has not asked yet
/// assert_eq!(d.ask(b, 3), 3); // now both can take 3
/// let mut sent = vec![];
/// let left = d.dispatch(vec![1, 2, 3, 4], &mut |id, evs| sent.push((id, evs)));
/// assert_eq!(sent, vec![(a, vec![1, 2, 3]), (b, vec![2])]);
/// assert_eq!(left, vec![4]);
/// assert_eq!(d.take_demand(), 1); // b's selector gave back 2 credits, a has 1 left
/// ```
pub struct BroadcastDispatcher<T> {
    consumers: Vec<Subscriber<T>>,
    /// Events every consumer has asked for and that can be broadcast now.
    waiting: usize,
    /// Upstream demand asked for and not yet dispatched.
    requested: usize,
    /// Upstream demand from selectors' returned credit, not yet taken.
    owed: usize,
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
            owed: 0,
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
        self.waiting += min;
        let demand = self.waiting.saturating_sub(self.requested);
        self.requested += demand;
        demand
    }
}

impl<T: Clone + Send + 'static> Dispatcher<T> for BroadcastDispatcher<T> {
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
    ) -> Result<usize, SubscribeError> {
        refuse_foreign_options(opts, "BroadcastDispatcher", false, true)?;
        let selector = opts.selector_for::<T>()?;
        // What everyone could take is given back: the newcomer has asked for nothing yet.
        for s in &mut self.consumers {
            s.counter += self.waiting;
        }
        self.waiting = 0;
        self.consumers.push(Subscriber {
            id,
            counter: 0,
            selector,
        });
        Ok(0)
    }

    fn cancel(&mut self, id: SubscriptionId) -> usize {
        self.consumers.retain(|s| s.id != id);
        if self.consumers.is_empty() {
            self.waiting = 0;
            return 0;
        }
        self.sync()
    }

    fn ask(&mut self, id: SubscriptionId, n: usize) -> usize {
        let Some(s) = self.consumers.iter_mut().find(|s| s.id == id) else {
            return 0;
        };
        s.counter += n;
        self.sync()
    }

    fn demand(&self) -> usize {
        self.waiting
    }

    fn dispatch(
        &mut self,
        mut events: Vec<T>,
        send: &mut dyn FnMut(SubscriptionId, Vec<T>),
    ) -> Vec<T> {
        let n = self.waiting.min(events.len());
        if n == 0 {
            return events;
        }
        let left = events.split_off(n);
        self.waiting -= n;
        self.requested = self.requested.saturating_sub(n);
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
                s.counter += filtered;
                gave_back = true;
            }
            if !batch.is_empty() {
                send(s.id, batch);
            }
        }
        if gave_back {
            self.owed += self.sync();
        }
        left
    }

    fn demands(&self) -> Vec<(SubscriptionId, usize)> {
        self.consumers
            .iter()
            .map(|s| (s.id, s.counter + self.waiting))
            .collect()
    }

    fn take_demand(&mut self) -> usize {
        std::mem::take(&mut self.owed)
    }

    /// Buffered events were produced for `requested` demand: the demand this dispatcher
    /// returns never counts them twice.
    fn buffered_were_requested(&self) -> bool {
        true
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
        let mut sent = vec![];
        let left = d.dispatch(events, &mut |id, evs| sent.push((id, evs)));
        (sent, left)
    }

    fn subscribe<T: Clone + Send + 'static>(d: &mut BroadcastDispatcher<T>, n: u64) {
        assert_eq!(d.subscribe(id(n), &SubscribeOptions::new()), Ok(0));
    }

    #[test]
    fn upstream_demand_follows_the_least_demand() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        assert_eq!(d.ask(id(1), 10), 0);
        assert_eq!(d.ask(id(2), 4), 4);
        assert_eq!(d.ask(id(2), 4), 4);
        assert_eq!(d.ask(id(2), 4), 2, "consumer 1 only asked for 10");
        assert_eq!(d.demand(), 10);
    }

    #[test]
    fn no_duplicate_upstream_demand() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        assert_eq!(d.ask(id(1), 5), 5);
        subscribe(&mut d, 2);
        assert_eq!(d.ask(id(2), 5), 0, "5 were already requested");
        assert_eq!(d.demand(), 5);
    }

    #[test]
    fn every_consumer_gets_every_event_and_the_rest_is_left() {
        let mut d = BroadcastDispatcher::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        d.ask(id(1), 3);
        d.ask(id(2), 3);
        let (sent, left) = dispatch(&mut d, vec!['a', 'b', 'c', 'd']);
        assert_eq!(
            sent,
            vec![(id(1), vec!['a', 'b', 'c']), (id(2), vec!['a', 'b', 'c'])]
        );
        assert_eq!(left, vec!['d']);
        assert_eq!(d.demand(), 0);
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
        assert_eq!(d.ask(id(1), 5), 5);
        subscribe(&mut d, 2);
        assert_eq!(d.demand(), 0);
        assert_eq!(d.ask(id(2), 2), 0);
        assert_eq!(d.demand(), 2);
    }

    #[test]
    fn selectors_filter_and_give_credit_back_spec_example() {
        let mut d = BroadcastDispatcher::new();
        let pre = SubscribeOptions::new().selector(|e: &&str| e.starts_with("pre"));
        let pref = SubscribeOptions::new().selector(|e: &&str| e.starts_with("pref"));
        d.subscribe(id(1), &pre).unwrap();
        d.subscribe(id(2), &pref).unwrap();
        d.ask(id(1), 4);
        d.ask(id(2), 4);
        let (sent, _) = dispatch(&mut d, vec!["pref-1234", "pref-5678", "pre0000", "foo0000"]);
        assert_eq!(
            sent,
            vec![
                (id(1), vec!["pref-1234", "pref-5678", "pre0000"]),
                (id(2), vec!["pref-1234", "pref-5678"])
            ]
        );
        // Consumer 1 got 1 back, consumer 2 got 2 back: both can take 1 more now.
        assert_eq!(d.take_demand(), 1);
        assert_eq!(d.take_demand(), 0, "taken once");
    }

    #[test]
    fn a_selector_over_another_type_is_refused_naming_the_option() {
        let mut d = BroadcastDispatcher::<u32>::new();
        let opts = SubscribeOptions::new().selector(|_: &String| true);
        match d.subscribe(id(1), &opts) {
            Err(SubscribeError::Option(e)) => assert_eq!(e.option, "selector"),
            other => panic!("expected a selector error, got {other:?}"),
        }
        let opts = SubscribeOptions::new().partition(0);
        assert!(
            matches!(d.subscribe(id(1), &opts), Err(SubscribeError::Option(e)) if e.option == "partition")
        );
    }

    #[test]
    fn cancelling_the_slowest_creates_demand() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        subscribe(&mut d, 2);
        d.ask(id(1), 10);
        d.ask(id(2), 2);
        assert_eq!(d.cancel(id(2)), 8);
        assert_eq!(d.demand(), 10);
    }

    #[test]
    fn cancelling_the_last_resets_but_keeps_requested() {
        let mut d = BroadcastDispatcher::<u32>::new();
        subscribe(&mut d, 1);
        assert_eq!(d.ask(id(1), 10), 10);
        assert_eq!(d.cancel(id(1)), 0);
        subscribe(&mut d, 2);
        assert_eq!(d.ask(id(2), 10), 0, "the 10 requested are still coming");
    }
}
