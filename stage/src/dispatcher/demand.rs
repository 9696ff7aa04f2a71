//! The default dispatcher: each event goes to one consumer, the one that asked the most.

use std::fmt;
use std::marker::PhantomData;

use tracing::warn;

use super::{Contract, Dispatcher, DispatcherState, Outbox};
use crate::error::SubscribeError;
use crate::options::{SubscribeOptions, SubscriptionId};

/// Sends each batch to the consumers with the highest outstanding demand first.
///
/// Consumers are kept in order of demand, highest first and first come first among equals. A
/// dispatch takes the head, sends it a contiguous slice of up to its demand, re-inserts it and
/// goes on until the events or the demand run out. The demand of a consumer that leaves is kept
/// as *pending* and netted against later asks, since the producer may still be producing it.
///
/// # Examples
///
/// ```
/// use stage::{DemandDispatcher, Dispatcher, Outbox, SubscribeOptions, SubscriptionId};
///
/// let (a, b) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// let mut d = DemandDispatcher::new();
/// let mut out = Outbox::new();
/// d.subscribe(a, &SubscribeOptions::new(), &mut out).unwrap();
/// d.subscribe(b, &SubscribeOptions::new(), &mut out).unwrap();
/// d.ask(a, 3, &mut out);
/// d.ask(b, 2, &mut out);
/// assert_eq!(out.take_demand(), 5, "the producer is asked for both asks");
/// let left = d.dispatch(vec!['a', 'b', 'c', 'd', 'e', 'f'], &mut out);
/// assert_eq!(out.take_sends(), vec![(a, vec!['a', 'b', 'c']), (b, vec!['d', 'e'])]);
/// assert_eq!(left, vec!['f']);
/// ```
pub struct DemandDispatcher<T> {
    /// `(demand, consumer)`, highest demand first, FIFO among ties.
    consumers: Vec<(usize, SubscriptionId)>,
    total: usize,
    pending: usize,
    max: Option<usize>,
    _events: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for DemandDispatcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemandDispatcher")
            .field("consumers", &self.consumers)
            .field("pending", &self.pending)
            .finish()
    }
}

impl<T> Default for DemandDispatcher<T> {
    fn default() -> Self {
        DemandDispatcher {
            consumers: Vec::new(),
            total: 0,
            pending: 0,
            max: None,
            _events: PhantomData,
        }
    }
}

impl<T> DemandDispatcher<T> {
    /// A dispatcher with no consumers.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, demand: usize, id: SubscriptionId) {
        let at = self
            .consumers
            .iter()
            .position(|&(d, _)| d < demand)
            .unwrap_or(self.consumers.len());
        self.consumers.insert(at, (demand, id));
    }

    fn remove(&mut self, id: SubscriptionId) -> Option<usize> {
        let at = self.consumers.iter().position(|&(_, c)| c == id)?;
        let (demand, _) = self.consumers.remove(at);
        Some(demand)
    }
}

impl<T: Send + 'static> Dispatcher<T> for DemandDispatcher<T> {
    fn contract(&self) -> Contract {
        Contract::Plain {
            dispatcher: "DemandDispatcher",
        }
    }

    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        _: &mut Outbox<T>,
    ) -> Result<(), SubscribeError> {
        Dispatcher::<T>::contract(self).check::<T>(opts)?;
        self.consumers.push((0, id));
        Ok(())
    }

    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<T>) {
        let Some(at) = self.consumers.iter().position(|&(_, c)| c == id) else {
            return;
        };
        match self.max {
            None => self.max = Some(n),
            Some(max) if n > max => warn!(
                expected = max,
                got = n,
                "DemandDispatcher expects a maximum demand of {max}: give every consumer the same max_demand"
            ),
            Some(_) => {}
        }
        let current = self.consumers[at].0;
        let demand = current.saturating_add(n);
        // A consumer whose demand grew without passing the one ahead of it keeps its place
        // (with one consumer, always); one whose demand stayed the same goes behind its equals.
        if demand > current && (at == 0 || self.consumers[at - 1].0 >= demand) {
            self.consumers[at].0 = demand;
        } else {
            self.consumers.remove(at);
            self.insert(demand, id);
        }
        self.total = self.total.saturating_add(n);
        let netted = self.pending.min(n);
        self.pending -= netted;
        out.demand(n - netted);
    }

    /// The consumer's outstanding demand becomes pending (the producer may still be producing
    /// it); the events it returns go back to the producer's buffer for the others.
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, _: &mut Outbox<T>) -> Vec<T> {
        if let Some(demand) = self.remove(id) {
            self.total = self.total.saturating_sub(demand);
            self.pending = self.pending.saturating_add(demand);
        }
        returned
    }

    fn dispatch(&mut self, mut events: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        while !events.is_empty() {
            let Some(&(demand, id)) = self.consumers.first() else {
                break;
            };
            if demand == 0 {
                break;
            }
            let n = demand.min(events.len());
            let left = demand - n;
            // The head keeps its place while it still has the most demand (ties go behind
            // the others), which with one consumer is always.
            if self.consumers.get(1).is_none_or(|&(next, _)| left > next) {
                self.consumers[0].0 = left;
            } else {
                self.consumers.remove(0);
                self.insert(left, id);
            }
            self.total = self.total.saturating_sub(n);
            if n == events.len() {
                out.send(id, std::mem::take(&mut events));
            } else {
                let rest = events.split_off(n);
                out.send(id, std::mem::replace(&mut events, rest));
            }
        }
        self.pending = self.pending.saturating_sub(events.len());
        events
    }

    fn capacity(&self) -> usize {
        self.total
    }

    fn hold(&mut self, _: u64) -> bool {
        false
    }

    fn state(&self) -> DispatcherState {
        DispatcherState::with_consumers(self.consumers.iter().map(|&(d, id)| (id, d)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (SubscriptionId, SubscriptionId) {
        (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2))
    }

    fn dispatch(
        d: &mut DemandDispatcher<char>,
        events: Vec<char>,
    ) -> (Vec<(SubscriptionId, Vec<char>)>, Vec<char>) {
        let mut out = Outbox::new();
        let left = d.dispatch(events, &mut out);
        (out.take_sends(), left)
    }

    fn ask(d: &mut DemandDispatcher<char>, id: SubscriptionId, n: usize) -> usize {
        let mut out = Outbox::new();
        d.ask(id, n, &mut out);
        out.take_demand()
    }

    fn cancel(d: &mut DemandDispatcher<char>, id: SubscriptionId) -> usize {
        let mut out = Outbox::new();
        assert!(d.cancel(id, Vec::new(), &mut out).is_empty());
        out.take_demand()
    }

    fn two(d1: usize, d2: usize) -> DemandDispatcher<char> {
        let (a, b) = ids();
        let mut d = DemandDispatcher::<char>::new();
        let mut out = Outbox::new();
        assert_eq!(d.subscribe(a, &SubscribeOptions::new(), &mut out), Ok(()));
        assert_eq!(d.subscribe(b, &SubscribeOptions::new(), &mut out), Ok(()));
        assert!(out.is_empty());
        assert_eq!(ask(&mut d, a, d1), d1);
        assert_eq!(ask(&mut d, b, d2), d2);
        d
    }

    #[test]
    fn highest_demand_first_in_contiguous_slices() {
        let (a, b) = ids();
        let mut d = two(3, 2);
        let (sent, left) = dispatch(&mut d, "abcde".chars().collect());
        assert_eq!(sent, vec![(a, vec!['a', 'b', 'c']), (b, vec!['d', 'e'])]);
        assert!(left.is_empty());
    }

    #[test]
    fn ties_are_fifo_and_leftovers_come_back() {
        let (a, b) = ids();
        let mut d = two(3, 3);
        let (sent, _) = dispatch(&mut d, vec!['a', 'b']);
        assert_eq!(sent, vec![(a, vec!['a', 'b'])]);
        let (sent, _) = dispatch(&mut d, vec!['c', 'd']);
        assert_eq!(sent, vec![(b, vec!['c', 'd'])]);
        let (sent, left) = dispatch(&mut d, vec!['e', 'f', 'g']);
        assert_eq!(sent, vec![(a, vec!['e']), (b, vec!['f'])]);
        assert_eq!(left, vec!['g']);
        assert_eq!(Dispatcher::<char>::capacity(&d), 0);
    }

    #[test]
    fn cancelled_demand_is_pending_and_netted_against_later_asks() {
        let (a, b) = ids();
        let mut d = two(10, 0);
        assert_eq!(cancel(&mut d, a), 0);
        assert_eq!(Dispatcher::<char>::capacity(&d), 0);
        assert_eq!(ask(&mut d, b, 4), 0);
        assert_eq!(ask(&mut d, b, 10), 4);
        assert_eq!(Dispatcher::<char>::capacity(&d), 14);
    }

    #[test]
    fn leftovers_reduce_pending() {
        let (a, _) = ids();
        let mut d = two(5, 0);
        cancel(&mut d, a);
        let (_, left) = dispatch(&mut d, vec!['x', 'y']);
        assert_eq!(left.len(), 2);
        assert_eq!(d.pending, 3);
    }

    #[test]
    fn events_a_leaving_consumer_returns_go_back_to_the_producer() {
        let (a, _) = ids();
        let mut d = two(5, 0);
        let mut out = Outbox::new();
        assert_eq!(d.cancel(a, vec!['x', 'y'], &mut out), vec!['x', 'y']);
        assert!(out.is_empty());
    }

    #[test]
    fn unknown_consumers_are_ignored() {
        let mut d = DemandDispatcher::<char>::new();
        assert_eq!(ask(&mut d, SubscriptionId::from_raw(9), 5), 0);
        assert_eq!(cancel(&mut d, SubscriptionId::from_raw(9)), 0);
        assert_eq!(Dispatcher::<char>::capacity(&d), 0);
    }

    #[test]
    fn huge_asks_saturate_instead_of_overflowing() {
        let (a, b) = ids();
        let mut d = two(usize::MAX, usize::MAX);
        assert_eq!(Dispatcher::<char>::capacity(&d), usize::MAX);
        assert_eq!(ask(&mut d, a, usize::MAX), usize::MAX);
        let (sent, _) = dispatch(&mut d, vec!['x']);
        assert_eq!(sent.len(), 1);
        let _ = b;
    }

    proptest::proptest! {
        /// Consumers stay in order of demand, highest first and first come first among
        /// equals, through any asks and dispatches: the order a sort by (demand, first
        /// reaching it) gives, kept here as a model.
        #[test]
        fn consumers_stay_in_order_of_demand_fifo_among_ties(
            ops in proptest::collection::vec((0u64..4, 0usize..6, proptest::bool::ANY), 1..60),
        ) {
            let mut d = DemandDispatcher::<u8>::new();
            let mut out = Outbox::new();
            // The model: (demand, when it last changed, id), in the dispatcher's order once
            // sorted.
            let mut model: Vec<(usize, u64, SubscriptionId)> = Vec::new();
            let mut clock = 0;
            for raw in 0..4 {
                let id = SubscriptionId::from_raw(raw);
                d.subscribe(id, &SubscribeOptions::new(), &mut out).unwrap();
                clock += 1;
                model.push((0, clock, id));
            }
            let sort = |model: &mut Vec<(usize, u64, SubscriptionId)>| {
                model.sort_by_key(|&(demand, at, _)| (std::cmp::Reverse(demand), at));
            };
            for (raw, n, dispatch) in ops {
                if dispatch {
                    d.dispatch(vec![0; n], &mut out);
                    let mut left = n;
                    while left > 0 && model[0].0 > 0 {
                        let taken = model[0].0.min(left);
                        clock += 1;
                        model[0] = (model[0].0 - taken, clock, model[0].2);
                        left -= taken;
                        sort(&mut model);
                    }
                } else {
                    // An ask of 0 also counts as a change: the consumer goes behind its equals.
                    let id = SubscriptionId::from_raw(raw);
                    d.ask(id, n, &mut out);
                    let entry = model.iter_mut().find(|e| e.2 == id).unwrap();
                    clock += 1;
                    *entry = (entry.0 + n, clock, id);
                    sort(&mut model);
                }
                let want: Vec<_> = model.iter().map(|&(demand, _, id)| (demand, id)).collect();
                proptest::prop_assert_eq!(&d.consumers, &want);
            }
        }
    }
}
