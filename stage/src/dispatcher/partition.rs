//! Each event goes to the one consumer of its partition.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;

use tracing::warn;

use super::{Contract, Dispatcher, DispatcherState, Outbox};
use crate::error::{OptionError, SubscribeError};
use crate::options::{DEFAULT_BUFFER_SIZE, SubscribeOptions, SubscriptionId};

/// A boxed hash, the default of [`PartitionDispatcher`]'s `H`: what [`PartitionDispatcher::new`]
/// routes by, and a nameable type for a dispatcher made [`with_hash`](PartitionDispatcher::with_hash).
pub type BoxedHash<T> = Box<dyn Fn(&T) -> Option<usize> + Send + Sync>;

/// Routes each event to a partition by a hash of it, one consumer per partition
/// (`docs/semantics.md`, *Dispatchers*).
///
/// The hash `H` is a type parameter, so the per-event call is inlined into the routing loop;
/// it defaults to [`BoxedHash`] for a dispatcher that must be named.
///
/// A consumer names its partition with [`SubscribeOptions::partition`]. Events for a partition
/// whose consumer has no demand (or that has no consumer yet) wait in that partition's queue
/// and go out as soon as it asks. Unlike upstream:
/// - the queues are bounded (by default by the producer's default buffer size, 10,000 events
///   each; see [`queue_limit`](PartitionDispatcher::queue_limit)); when one is full its oldest
///   event is dropped and counted, so a skewed key cannot exhaust memory (gen_stage issue 282);
/// - a missing, unknown or already taken partition refuses the subscription with a typed error
///   instead of crashing the producer;
/// - a partition's queue is kept when its consumer leaves, for the next one.
///
/// # Examples
///
/// ```
/// use stage::{Dispatcher, Outbox, PartitionDispatcher, SubscribeOptions, SubscriptionId};
///
/// let (even, odd) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// // Partition by parity; drop multiples of 3.
/// let mut d = PartitionDispatcher::with_hash(2, |e: &u32| (e % 3 != 0).then_some((e % 2) as usize)).unwrap();
/// let mut out = Outbox::new();
/// d.subscribe(even, &SubscribeOptions::new().partition(0), &mut out).unwrap();
/// d.subscribe(odd, &SubscribeOptions::new().partition(1), &mut out).unwrap();
/// d.ask(even, 4, &mut out);
/// d.ask(odd, 4, &mut out);
/// let left = d.dispatch((1..=12).collect(), &mut out);
/// assert_eq!(out.take_sends(), vec![(even, vec![2, 4, 8, 10]), (odd, vec![1, 5, 7, 11])]);
/// assert_eq!(left, vec![12]);
/// assert_eq!(d.state().dropped, 3);
/// ```
pub struct PartitionDispatcher<T, H = BoxedHash<T>> {
    partitions: Vec<Partition<T>>,
    by_id: HashMap<SubscriptionId, usize>,
    hash: H,
    /// Upstream demand asked for and not yet hashed.
    waiting: usize,
    /// Demand of consumers that left, netted against later asks.
    pending: usize,
    queue_limit: usize,
    dropped: u64,
    /// One output batch per partition, reused between dispatches.
    out: Vec<Vec<T>>,
    /// How many events each partition takes directly in one dispatch, reused likewise.
    direct: Vec<usize>,
    /// Held infos, each with the queue positions `(partition, head)` it waits for.
    held: VecDeque<(u64, Vec<(usize, i64)>)>,
}

/// The most partitions a [`PartitionDispatcher`] may have (and so the most stages a flow
/// layer may partition over): 65,536.
pub const MAX_PARTITIONS: usize = 1 << 16;

struct Partition<T> {
    consumer: Option<SubscriptionId>,
    /// Whether a consumer has left this partition (and none has taken its place): its queue
    /// is stranded, while a partition that never had a consumer waits for its first.
    orphaned: bool,
    demand: usize,
    queue: VecDeque<T>,
    /// Events ever taken from the front of the queue (sent or dropped), less those put back
    /// at its front.
    head: i64,
}

impl<T, H> fmt::Debug for PartitionDispatcher<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<_> = self
            .partitions
            .iter()
            .map(|p| (p.consumer, p.demand, p.queue.len()))
            .collect();
        f.debug_struct("PartitionDispatcher")
            .field("partitions (consumer, demand, queued)", &parts)
            .field("waiting", &self.waiting)
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl<T: Hash + 'static> PartitionDispatcher<T> {
    /// `partitions` partitions, routing by a hash of the whole event (the same hash in every
    /// run, so a key always lands in the same partition).
    ///
    /// # Errors
    ///
    /// [`OptionError`] naming `partitions` when it is 0 or above [`MAX_PARTITIONS`].
    pub fn new(partitions: usize) -> Result<Self, OptionError> {
        let state = ahash::RandomState::with_seeds(0x5eed, 0xca11, 0xf10e, 0x57a6);
        Self::with_hash(
            partitions,
            Box::new(move |event: &T| Some((state.hash_one(event) % partitions as u64) as usize)),
        )
    }
}

impl<T, H> PartitionDispatcher<T, H>
where
    H: Fn(&T) -> Option<usize> + Send + Sync + 'static,
{
    /// `partitions` partitions, routing by `hash`: `Some(i)` sends the event to partition `i`,
    /// `None` drops it (counted in [`DispatcherState::dropped`]). An index out of range is
    /// a bug in `hash`: the event is dropped, counted and logged.
    ///
    /// # Errors
    ///
    /// [`OptionError`] naming `partitions` when it is 0 or above [`MAX_PARTITIONS`].
    pub fn with_hash(partitions: usize, hash: H) -> Result<Self, OptionError> {
        if partitions == 0 {
            return Err(OptionError::new(
                "partitions",
                "must be at least 1",
                partitions,
            ));
        }
        if partitions > MAX_PARTITIONS {
            let rule = format!("must be at most {MAX_PARTITIONS}");
            return Err(OptionError::new("partitions", rule, partitions));
        }
        Ok(PartitionDispatcher {
            partitions: (0..partitions)
                .map(|_| Partition {
                    consumer: None,
                    orphaned: false,
                    demand: 0,
                    queue: VecDeque::new(),
                    head: 0,
                })
                .collect(),
            by_id: HashMap::new(),
            hash,
            waiting: 0,
            pending: 0,
            queue_limit: DEFAULT_BUFFER_SIZE,
            dropped: 0,
            out: (0..partitions).map(|_| Vec::new()).collect(),
            direct: Vec::with_capacity(partitions),
            held: VecDeque::new(),
        })
    }

    /// How many events each partition's queue holds at most (default 10,000). `0` drops every
    /// event its partition cannot take at once.
    pub fn queue_limit(mut self, limit: usize) -> Self {
        self.queue_limit = limit;
        self
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }
}

impl<T, H> PartitionDispatcher<T, H>
where
    H: Fn(&T) -> Option<usize> + Send + Sync + 'static,
{
    /// Sends what partition `index`'s queue holds, up to its consumer's demand.
    fn flush(&mut self, index: usize, out: &mut Outbox<T>) {
        let partition = &mut self.partitions[index];
        let Some(id) = partition.consumer else {
            return;
        };
        let n = partition.demand.min(partition.queue.len());
        if n > 0 {
            partition.demand -= n;
            partition.head += n as i64;
            out.send(id, partition.queue.drain(..n).collect());
        }
    }

    /// Releases the held infos whose partitions have sent what they waited for.
    fn release(&mut self, out: &mut Outbox<T>) {
        while let Some((token, waits)) = self.held.front() {
            if !waits.iter().all(|&(i, at)| self.partitions[i].head >= at) {
                break;
            }
            out.release(*token);
            self.held.pop_front();
        }
    }
}

impl<T, H> Dispatcher<T> for PartitionDispatcher<T, H>
where
    T: Send + 'static,
    H: Fn(&T) -> Option<usize> + Send + Sync + 'static,
{
    fn contract(&self) -> Contract {
        Contract::Partitions {
            dispatcher: "PartitionDispatcher",
            partitions: self.partitions.len(),
        }
    }

    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        _: &mut Outbox<T>,
    ) -> Result<(), SubscribeError> {
        Dispatcher::<T>::contract(self).check::<T>(opts)?;
        let index = opts.partition_index().expect("checked by the contract");
        let partition = &mut self.partitions[index];
        if let Some(taken) = partition.consumer {
            return Err(SubscribeError::Rejected(
                format!("partition {index} is already taken by {taken}").into(),
            ));
        }
        partition.consumer = Some(id);
        partition.orphaned = false;
        self.by_id.insert(id, index);
        Ok(())
    }

    /// Sends what the partition's queue holds at once; the upstream demand is forwarded even
    /// when the queue covered it (GenStage's rule, which keeps every partition fed).
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<T>) {
        let Some(&index) = self.by_id.get(&id) else {
            return;
        };
        let partition = &mut self.partitions[index];
        partition.demand = partition.demand.saturating_add(n);
        let netted = self.pending.min(n);
        self.pending -= netted;
        self.waiting = self.waiting.saturating_add(n - netted);
        out.demand(n - netted);
        self.flush(index, out);
        self.release(out);
    }

    /// The partition keeps its queue for its next consumer, and the events its consumer never
    /// handled go back to the front of that queue, and on to that partition's current
    /// consumer as far as its demand allows.
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        if let Some(index) = self.by_id.remove(&id) {
            let partition = &mut self.partitions[index];
            partition.consumer = None;
            partition.orphaned = true;
            self.pending = self
                .pending
                .saturating_add(std::mem::take(&mut partition.demand));
        }
        // Newest first, each to the front of its queue: the queues keep the original order.
        for event in returned.into_iter().rev() {
            match (self.hash)(&event) {
                Some(index) if index < self.partitions.len() => {
                    let partition = &mut self.partitions[index];
                    partition.queue.push_front(event);
                    partition.head -= 1;
                }
                _ => self.dropped += 1,
            }
        }
        // A partition may already have a new consumer with demand: it gets the returned
        // events now, since `dispatch` sends directly only to partitions whose queue is empty.
        // Flushing a partition whose queue was empty or whose consumer has no demand sends
        // nothing.
        for index in 0..self.partitions.len() {
            self.flush(index, out);
        }
        self.release(out);
        Vec::new()
    }

    fn dispatch(&mut self, events: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        let mut events = events.into_iter();
        let mut routed = 0;
        // How many events each partition takes directly this time (its consumer's demand,
        // unless events already wait in its queue): decided once per batch, not per event.
        let mut direct = std::mem::take(&mut self.direct);
        direct.clear();
        direct.extend(self.partitions.iter().map(|p| {
            if p.consumer.is_some() && p.queue.is_empty() {
                p.demand
            } else {
                0
            }
        }));
        while routed < self.waiting {
            let Some(event) = events.next() else {
                break;
            };
            let Some(index) = (self.hash)(&event) else {
                self.dropped += 1;
                continue;
            };
            let Some(partition) = self.partitions.get_mut(index) else {
                warn!(
                    index,
                    partitions = self.partitions.len(),
                    "hash returned an unknown partition; event dropped"
                );
                self.dropped += 1;
                continue;
            };
            routed += 1;
            let batch = &mut self.out[index];
            if batch.len() < direct[index] {
                batch.push(event);
            } else if self.queue_limit > 0 {
                if partition.queue.len() >= self.queue_limit {
                    partition.queue.pop_front();
                    partition.head += 1;
                    self.dropped += 1;
                }
                partition.queue.push_back(event);
            } else {
                self.dropped += 1;
            }
        }
        self.waiting -= routed;
        self.direct = direct;
        for (partition, batch) in self.partitions.iter_mut().zip(&mut self.out) {
            if let (Some(id), false) = (partition.consumer, batch.is_empty()) {
                partition.demand -= batch.len();
                out.send(id, std::mem::take(batch));
            }
        }
        self.release(out);
        events.collect()
    }

    fn capacity(&self) -> usize {
        self.waiting
    }

    /// An info waits for the events queued in every partition now.
    fn hold(&mut self, token: u64) -> bool {
        let waits: Vec<_> = self
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.queue.is_empty())
            .map(|(i, p)| (i, p.head + p.queue.len() as i64))
            .collect();
        if waits.is_empty() && self.held.is_empty() {
            return false;
        }
        self.held.push_back((token, waits));
        true
    }

    fn state(&self) -> DispatcherState {
        DispatcherState {
            consumers: self
                .partitions
                .iter()
                .filter_map(|p| p.consumer.map(|id| (id, p.demand)))
                .collect(),
            queued: self.partitions.iter().map(|p| p.queue.len()).sum(),
            stranded: self
                .partitions
                .iter()
                .filter(|p| p.orphaned)
                .map(|p| p.queue.len())
                .sum(),
            dropped: self.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> SubscriptionId {
        SubscriptionId::from_raw(n)
    }

    fn parity() -> PartitionDispatcher<u32, impl Fn(&u32) -> Option<usize> + Send + Sync> {
        PartitionDispatcher::with_hash(2, |e: &u32| Some((e % 2) as usize)).unwrap()
    }

    fn dispatch(
        d: &mut impl Dispatcher<u32>,
        events: Vec<u32>,
    ) -> (Vec<(SubscriptionId, Vec<u32>)>, Vec<u32>) {
        let mut out = Outbox::new();
        let left = d.dispatch(events, &mut out);
        (out.take_sends(), left)
    }

    /// Asks, and returns the upstream demand and what the ask sent from the queue.
    fn ask(
        d: &mut impl Dispatcher<u32>,
        n: u64,
        k: usize,
    ) -> (usize, Vec<(SubscriptionId, Vec<u32>)>) {
        let mut out = Outbox::new();
        d.ask(id(n), k, &mut out);
        (out.take_demand(), out.take_sends())
    }

    fn subscribe(d: &mut impl Dispatcher<u32>, n: u64, partition: usize) {
        let mut out = Outbox::new();
        d.subscribe(
            id(n),
            &SubscribeOptions::new().partition(partition),
            &mut out,
        )
        .unwrap();
    }

    fn two() -> PartitionDispatcher<u32, impl Fn(&u32) -> Option<usize> + Send + Sync> {
        let mut d = parity();
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        d
    }

    #[test]
    fn infos_wait_for_the_events_queued_before_them() {
        let mut d = two();
        assert!(!d.hold(1), "nothing queued: deliver at once");
        ask(&mut d, 2, 5);
        dispatch(&mut d, vec![2, 4, 1]);
        assert!(d.hold(2));
        assert!(d.hold(3), "infos keep their order");
        let mut out = Outbox::new();
        d.ask(id(1), 1, &mut out);
        assert!(out.take_released().is_empty(), "4 is still queued");
        d.ask(id(1), 1, &mut out);
        assert_eq!(out.take_released(), vec![2, 3]);
    }

    #[test]
    fn zero_and_too_many_partitions_are_refused() {
        assert_eq!(
            PartitionDispatcher::<u32>::new(0).unwrap_err().option,
            "partitions"
        );
        let err = PartitionDispatcher::<u32>::new(usize::MAX).unwrap_err();
        assert_eq!(err.option, "partitions");
        assert!(err.to_string().contains("at most 65536"), "{err}");
    }

    #[test]
    fn missing_unknown_and_taken_partitions_are_refused() {
        let mut d = parity();
        let mut out = Outbox::new();
        let err = |r: Result<(), SubscribeError>| match r {
            Err(SubscribeError::Option(e)) => e.option,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(d.subscribe(id(1), &SubscribeOptions::new(), &mut out)),
            "partition"
        );
        assert_eq!(
            err(d.subscribe(id(1), &SubscribeOptions::new().partition(2), &mut out)),
            "partition"
        );
        d.subscribe(id(1), &SubscribeOptions::new().partition(0), &mut out)
            .unwrap();
        assert!(matches!(
            d.subscribe(id(2), &SubscribeOptions::new().partition(0), &mut out),
            Err(SubscribeError::Rejected(_))
        ));
        let selector = SubscribeOptions::new()
            .partition(1)
            .selector(|_: &u32| true);
        assert_eq!(err(d.subscribe(id(3), &selector, &mut out)), "selector");
    }

    #[test]
    fn events_without_demand_are_queued_and_sent_on_ask_in_order() {
        let mut d = two();
        assert_eq!(ask(&mut d, 1, 4).0, 4);
        assert_eq!(ask(&mut d, 2, 4).0, 4);
        let (sent, left) = dispatch(&mut d, vec![2, 4, 6, 8, 10, 12, 1]);
        assert_eq!(sent, vec![(id(1), vec![2, 4, 6, 8]), (id(2), vec![1])]);
        assert!(left.is_empty());
        assert_eq!(d.state().queued, 2);
        // Upstream demand is forwarded even when the queue satisfies it.
        assert_eq!(ask(&mut d, 1, 1), (1, vec![(id(1), vec![10])]));
        assert_eq!(ask(&mut d, 1, 5), (5, vec![(id(1), vec![12])]));
        assert_eq!(d.state().consumers, vec![(id(1), 4), (id(2), 3)]);
    }

    #[test]
    fn queues_are_bounded_and_count_their_drops() {
        let mut d = parity().queue_limit(2);
        subscribe(&mut d, 1, 0);
        subscribe(&mut d, 2, 1);
        ask(&mut d, 2, 10);
        let (sent, _) = dispatch(&mut d, vec![2, 4, 6, 8, 1]);
        assert_eq!(sent, vec![(id(2), vec![1])]);
        assert_eq!(d.state().dropped, 2);
        assert_eq!(
            ask(&mut d, 1, 10).1,
            vec![(id(1), vec![6, 8])],
            "the oldest were dropped"
        );
    }

    #[test]
    fn a_partitions_queue_outlives_its_consumer() {
        let mut d = two();
        ask(&mut d, 2, 3);
        dispatch(&mut d, vec![2, 4]);
        let mut out = Outbox::new();
        assert!(d.cancel(id(1), Vec::new(), &mut out).is_empty());
        assert_eq!(out.take_demand(), 0);
        assert_eq!(d.state().stranded, 2, "held for a consumer that is gone");
        let mut fresh = parity();
        subscribe(&mut fresh, 1, 1);
        ask(&mut fresh, 1, 1);
        dispatch(&mut fresh, vec![2]);
        assert_eq!(
            (fresh.state().queued, fresh.state().stranded),
            (1, 0),
            "a partition that never had a consumer waits for its first"
        );
        subscribe(&mut d, 3, 0);
        assert_eq!(d.state().stranded, 0);
        assert_eq!(ask(&mut d, 3, 5).1, vec![(id(3), vec![2, 4])]);
    }

    #[test]
    fn events_a_leaving_consumer_never_handled_go_back_to_the_front_of_its_queue() {
        let mut d = two();
        ask(&mut d, 1, 2);
        ask(&mut d, 2, 1);
        let (sent, left) = dispatch(&mut d, vec![2, 4, 6]);
        assert_eq!(sent, vec![(id(1), vec![2, 4])]);
        assert_eq!(d.state().queued, 1, "6 waits for demand");
        assert!(left.is_empty());
        let mut out = Outbox::new();
        assert!(d.cancel(id(1), vec![2, 4], &mut out).is_empty());
        subscribe(&mut d, 3, 0);
        assert_eq!(ask(&mut d, 3, 5).1, vec![(id(3), vec![2, 4, 6])]);
    }

    #[test]
    fn cancelled_demand_is_pending() {
        let mut d = two();
        ask(&mut d, 1, 6);
        let mut out = Outbox::new();
        d.cancel(id(1), Vec::new(), &mut out);
        assert_eq!(ask(&mut d, 2, 4).0, 0);
        assert_eq!(ask(&mut d, 2, 4).0, 2);
    }

    #[test]
    fn the_default_hash_is_stable_and_spreads_keys() {
        let d = PartitionDispatcher::<u64>::new(4).unwrap();
        let mut counts = [0usize; 4];
        for k in 0..4000u64 {
            let p = (d.hash)(&k).unwrap();
            assert_eq!(Some(p), (d.hash)(&k));
            counts[p] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
