//! Each event goes to the one consumer of its partition.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;

use tracing::warn;

use super::{Dispatcher, refuse_foreign_options};
use crate::error::{OptionError, SubscribeError};
use crate::options::{DEFAULT_BUFFER_SIZE, SubscribeOptions, SubscriptionId};

/// A boxed hash, the default of [`PartitionDispatcher`]'s `H`: what [`PartitionDispatcher::new`]
/// routes by, and a nameable type for a dispatcher made [`with_hash`](PartitionDispatcher::with_hash).
pub type BoxedHash<T> = Box<dyn Fn(&T) -> Option<usize> + Send + Sync>;

/// Routes each event to a partition by a hash of it, one consumer per partition
/// (GenStage §2.10).
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
/// use stage::{Dispatcher, PartitionDispatcher, SubscribeOptions, SubscriptionId};
///
/// let (even, odd) = (SubscriptionId::from_raw(1), SubscriptionId::from_raw(2));
/// // Partition by parity; drop multiples of 3.
/// let mut d = PartitionDispatcher::with_hash(2, |e: &u32| (e % 3 != 0).then_some((e % 2) as usize)).unwrap();
/// d.subscribe(even, &SubscribeOptions::new().partition(0)).unwrap();
/// d.subscribe(odd, &SubscribeOptions::new().partition(1)).unwrap();
/// d.ask(even, 4);
/// d.ask(odd, 4);
/// let mut sent = vec![];
/// let left = d.dispatch((1..=12).collect(), &mut |id, evs| sent.push((id, evs)));
/// assert_eq!(sent, vec![(even, vec![2, 4, 8, 10]), (odd, vec![1, 5, 7, 11])]);
/// assert_eq!(left, vec![12]);
/// assert_eq!(d.dropped(), 3);
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
    held: VecDeque<(u64, Vec<(usize, u64)>)>,
}

struct Partition<T> {
    consumer: Option<SubscriptionId>,
    demand: usize,
    queue: VecDeque<T>,
    /// Events ever taken from the front of the queue (sent or dropped).
    head: u64,
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
    /// [`OptionError`] naming `partitions` when it is 0.
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
    /// `None` drops it (counted in [`dropped`](Dispatcher::dropped)). An index out of range is
    /// a bug in `hash`: the event is dropped, counted and logged.
    ///
    /// # Errors
    ///
    /// [`OptionError`] naming `partitions` when it is 0.
    pub fn with_hash(partitions: usize, hash: H) -> Result<Self, OptionError> {
        if partitions == 0 {
            return Err(OptionError::new(
                "partitions",
                "must be at least 1",
                partitions,
            ));
        }
        Ok(PartitionDispatcher {
            partitions: (0..partitions)
                .map(|_| Partition {
                    consumer: None,
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

impl<T, H> Dispatcher<T> for PartitionDispatcher<T, H>
where
    T: Send + 'static,
    H: Fn(&T) -> Option<usize> + Send + Sync + 'static,
{
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
    ) -> Result<usize, SubscribeError> {
        refuse_foreign_options(opts, "PartitionDispatcher", true, false)?;
        let count = self.partitions.len();
        let Some(index) = opts.partition_index() else {
            let rule = format!("is required by a PartitionDispatcher (one of 0..{count})");
            return Err(OptionError::new("partition", rule, "none").into());
        };
        let Some(partition) = self.partitions.get_mut(index) else {
            let rule = format!("must be one of 0..{count}");
            return Err(OptionError::new("partition", rule, index).into());
        };
        if let Some(taken) = partition.consumer {
            return Err(SubscribeError::Rejected(
                format!("partition {index} is already taken by {taken}").into(),
            ));
        }
        partition.consumer = Some(id);
        self.by_id.insert(id, index);
        Ok(0)
    }

    fn cancel(&mut self, id: SubscriptionId) -> usize {
        if let Some(index) = self.by_id.remove(&id) {
            let partition = &mut self.partitions[index];
            partition.consumer = None;
            self.pending += std::mem::take(&mut partition.demand);
        }
        0
    }

    fn ask(&mut self, id: SubscriptionId, n: usize) -> usize {
        let Some(&index) = self.by_id.get(&id) else {
            return 0;
        };
        self.partitions[index].demand += n;
        let netted = self.pending.min(n);
        self.pending -= netted;
        self.waiting += n - netted;
        n - netted
    }

    fn demand(&self) -> usize {
        self.waiting
    }

    fn dispatch(&mut self, events: Vec<T>, send: &mut dyn FnMut(SubscriptionId, Vec<T>)) -> Vec<T> {
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
            let out = &mut self.out[index];
            if out.len() < direct[index] {
                out.push(event);
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
        for (partition, out) in self.partitions.iter_mut().zip(&mut self.out) {
            if let (Some(id), false) = (partition.consumer, out.is_empty()) {
                partition.demand -= out.len();
                send(id, std::mem::take(out));
            }
        }
        events.collect()
    }

    fn demands(&self) -> Vec<(SubscriptionId, usize)> {
        self.partitions
            .iter()
            .filter_map(|p| p.consumer.map(|id| (id, p.demand)))
            .collect()
    }

    fn flush(&mut self, send: &mut dyn FnMut(SubscriptionId, Vec<T>)) {
        for partition in &mut self.partitions {
            let Some(id) = partition.consumer else {
                continue;
            };
            let n = partition.demand.min(partition.queue.len());
            if n > 0 {
                partition.demand -= n;
                partition.head += n as u64;
                send(id, partition.queue.drain(..n).collect());
            }
        }
    }

    fn queued(&self) -> usize {
        self.partitions.iter().map(|p| p.queue.len()).sum()
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    /// An info waits for the events queued in every partition now (§2.10 rule 6).
    fn hold(&mut self, token: u64) -> bool {
        let waits: Vec<_> = self
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.queue.is_empty())
            .map(|(i, p)| (i, p.head + p.queue.len() as u64))
            .collect();
        if waits.is_empty() && self.held.is_empty() {
            return false;
        }
        self.held.push_back((token, waits));
        true
    }

    fn released(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((token, waits)) = self.held.front() {
            if !waits.iter().all(|&(i, at)| self.partitions[i].head >= at) {
                break;
            }
            out.push(*token);
            self.held.pop_front();
        }
        out
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
        let mut sent = vec![];
        let left = d.dispatch(events, &mut |id, evs| sent.push((id, evs)));
        (sent, left)
    }

    fn flush(d: &mut impl Dispatcher<u32>) -> Vec<(SubscriptionId, Vec<u32>)> {
        let mut sent = vec![];
        d.flush(&mut |id, evs| sent.push((id, evs)));
        sent
    }

    #[test]
    fn infos_wait_for_the_events_queued_before_them() {
        let mut d = parity();
        d.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        d.subscribe(id(2), &SubscribeOptions::new().partition(1))
            .unwrap();
        assert!(!d.hold(1), "nothing queued: deliver at once");
        d.ask(id(2), 5);
        dispatch(&mut d, vec![2, 4, 1]);
        assert!(d.hold(2));
        assert!(d.hold(3), "infos keep their order");
        assert!(d.released().is_empty());
        d.ask(id(1), 1);
        flush(&mut d);
        assert!(d.released().is_empty(), "4 is still queued");
        d.ask(id(1), 1);
        flush(&mut d);
        assert_eq!(d.released(), vec![2, 3]);
    }

    #[test]
    fn zero_partitions_is_refused() {
        assert_eq!(
            PartitionDispatcher::<u32>::new(0).unwrap_err().option,
            "partitions"
        );
    }

    #[test]
    fn missing_unknown_and_taken_partitions_are_refused() {
        let mut d = parity();
        let err = |r: Result<usize, SubscribeError>| match r {
            Err(SubscribeError::Option(e)) => e.option,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(d.subscribe(id(1), &SubscribeOptions::new())),
            "partition"
        );
        assert_eq!(
            err(d.subscribe(id(1), &SubscribeOptions::new().partition(2))),
            "partition"
        );
        d.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        assert!(matches!(
            d.subscribe(id(2), &SubscribeOptions::new().partition(0)),
            Err(SubscribeError::Rejected(_))
        ));
        let selector = SubscribeOptions::new()
            .partition(1)
            .selector(|_: &u32| true);
        assert_eq!(err(d.subscribe(id(3), &selector)), "selector");
    }

    #[test]
    fn events_without_demand_are_queued_and_sent_on_ask_in_order() {
        let mut d = parity();
        d.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        d.subscribe(id(2), &SubscribeOptions::new().partition(1))
            .unwrap();
        assert_eq!(d.ask(id(1), 4), 4);
        assert_eq!(d.ask(id(2), 4), 4);
        let (sent, left) = dispatch(&mut d, vec![2, 4, 6, 8, 10, 12, 1]);
        assert_eq!(sent, vec![(id(1), vec![2, 4, 6, 8]), (id(2), vec![1])]);
        assert!(left.is_empty());
        assert_eq!(d.queued(), 2);
        assert!(flush(&mut d).is_empty(), "no demand yet");
        // Upstream demand is forwarded even when the queue satisfies it (§2.10 rule 2).
        assert_eq!(d.ask(id(1), 1), 1);
        assert_eq!(flush(&mut d), vec![(id(1), vec![10])]);
        d.ask(id(1), 5);
        assert_eq!(flush(&mut d), vec![(id(1), vec![12])]);
        assert_eq!(d.demands(), vec![(id(1), 4), (id(2), 3)]);
    }

    #[test]
    fn queues_are_bounded_and_count_their_drops() {
        let mut d = parity().queue_limit(2);
        d.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        d.subscribe(id(2), &SubscribeOptions::new().partition(1))
            .unwrap();
        d.ask(id(2), 10);
        let (sent, _) = dispatch(&mut d, vec![2, 4, 6, 8, 1]);
        assert_eq!(sent, vec![(id(2), vec![1])]);
        assert_eq!(d.dropped(), 2);
        d.ask(id(1), 10);
        assert_eq!(
            flush(&mut d),
            vec![(id(1), vec![6, 8])],
            "the oldest were dropped"
        );
    }

    #[test]
    fn a_partitions_queue_outlives_its_consumer() {
        let mut d = parity();
        d.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        d.subscribe(id(2), &SubscribeOptions::new().partition(1))
            .unwrap();
        d.ask(id(2), 3);
        dispatch(&mut d, vec![2, 4]);
        assert_eq!(d.cancel(id(1)), 0);
        d.subscribe(id(3), &SubscribeOptions::new().partition(0))
            .unwrap();
        d.ask(id(3), 5);
        assert_eq!(flush(&mut d), vec![(id(3), vec![2, 4])]);
    }

    #[test]
    fn cancelled_demand_is_pending() {
        let mut d = parity();
        d.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        d.subscribe(id(2), &SubscribeOptions::new().partition(1))
            .unwrap();
        d.ask(id(1), 6);
        d.cancel(id(1));
        assert_eq!(d.ask(id(2), 4), 0);
        assert_eq!(d.ask(id(2), 4), 2);
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
