//! Shared payload for the benchmarks in `benches/`.
//!
//! - `benches/pipeline.rs`: the stages of the pipelines under test and the hand-written
//!   `tokio::sync::mpsc` baselines they are compared with. Every pipeline moves the numbers
//!   `0..total` from a producer to a consumer that sums them, optionally through a middle step
//!   that maps `x -> x + 1`, and returns the sum, which [`expected_sum`] predicts.
//! - `benches/flow.rs`: the `flow` scenarios (`map_filter_reduce`, `partition_reduce`) and
//!   their rayon and sequential baselines, over one shared [`input`] `Vec`.
//! - `benches/join.rs`: an inner join of two 1 M-event sides as a flow and as a rayon hash
//!   join: see [`join`].
//! - `benches/channel.rs`: `stage::channel` against a tokio `mpsc` channel: see [`channel`].
//! - `benches/airports.rs`: the airports count over the real `airports.csv`, as a flow and as
//!   a `csv` loop and rayon over chunks: see [`airports`].
//! - `benches/ingest.rs`: acknowledged messages through an `ingest` pipeline and a
//!   hand-written tokio pipeline: see [`ingest`].

pub mod airports;
pub mod channel;
pub mod dispatch;
pub mod ingest;
pub mod join;

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use stage::{Consumer, Context, Producer, Reason, SubscribeOptions, SubscriptionId};
use tokio::sync::{mpsc, oneshot};

/// How many events each benchmark run moves.
pub const EVENTS: u64 = 10_000_000;

/// The batch size of the baselines: 500, the batch size a stage consumer handles with the
/// default demand (`max_demand` 1000, `min_demand` 500).
pub const BATCH: usize = 500;

/// How many batches a baseline channel holds: 2 batches of [`BATCH`] are 1000 events in
/// flight per edge, the default `max_demand` of a stage subscription.
pub const CHANNEL_BATCHES: usize = 2;

/// The sum a pipeline over `0..total` must return: `0 + 1 + ... + (total - 1)`, plus `total`
/// when every event went through [`AddOne`].
pub fn expected_sum(total: u64, mapped: bool) -> u64 {
    let sum = total * total.saturating_sub(1) / 2;
    if mapped { sum + total } else { sum }
}

/// A producer of the numbers `0..total`: each demand of `n` gets the next `n` numbers as one
/// `Vec`, and the producer finishes once it has produced them all.
#[derive(Debug)]
pub struct Counter {
    next: u64,
    end: u64,
}

impl Counter {
    /// Counts from 0 up to (not including) `total`.
    pub fn new(total: u64) -> Self {
        Counter {
            next: 0,
            end: total,
        }
    }
}

impl Producer for Counter {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<u64> {
        let start = self.next;
        self.next = self.end.min(start.saturating_add(demand as u64));
        if self.next == self.end {
            ctx.finish();
        }
        (start..self.next).collect()
    }
}

/// A consumer that sums its events and sends the sum when it terminates.
#[derive(Debug)]
pub struct Sum {
    sum: u64,
    batches: u64,
    done: Option<oneshot::Sender<Summed>>,
}

/// What a [`Sum`] consumer reports when it terminates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summed {
    /// The sum of the events received.
    pub sum: u64,
    /// How many times `handle_events` ran.
    pub batches: u64,
}

impl Sum {
    /// A summing consumer and the receiver of its result.
    pub fn new() -> (Self, oneshot::Receiver<Summed>) {
        let (tx, rx) = oneshot::channel();
        let sum = Sum {
            sum: 0,
            batches: 0,
            done: Some(tx),
        };
        (sum, rx)
    }
}

impl Consumer for Sum {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        self.sum += events.iter().sum::<u64>();
        self.batches += 1;
    }

    async fn terminate(&mut self, _: &Reason) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Summed {
                sum: self.sum,
                batches: self.batches,
            });
        }
    }
}

/// A producer-consumer that maps every event `x` to `x + 1`.
#[derive(Debug, Default)]
pub struct AddOne;

impl Producer for AddOne {
    type Out = u64;
}

impl Consumer for AddOne {
    type In = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        ctx.emit(add_one(events));
    }
}

/// Maps a batch `x -> x + 1` in place (the same code for [`AddOne`] and the baseline).
pub fn add_one(mut events: Vec<u64>) -> Vec<u64> {
    for x in &mut events {
        *x += 1;
    }
    events
}

/// Runs `Counter(total) -> Sum` (or `Counter(total) -> AddOne -> Sum` when `mapped`) as stages,
/// every subscription with `opts`, on the current runtime. Returns once the consumer has
/// stopped (the producer finishes and its permanent consumers stop with it).
///
/// # Panics
///
/// Outside a tokio runtime, or if the consumer stops abnormally.
pub async fn run_stages(total: u64, mapped: bool, opts: SubscribeOptions) -> Summed {
    let counter = stage::producer(Counter::new(total))
        .start()
        .expect("start counter");
    let (sum, done) = Sum::new();
    let consumer = if mapped {
        let add_one = stage::producer_consumer(AddOne)
            .subscribe_to(&counter, opts.clone())
            .start()
            .expect("start add_one");
        stage::consumer(sum).subscribe_to(&add_one, opts).start()
    } else {
        stage::consumer(sum).subscribe_to(&counter, opts).start()
    }
    .expect("start sum");
    assert_eq!(consumer.join().await, Reason::Normal);
    done.await.expect("the consumer reports its sum")
}

/// The hand-written baseline of [`run_stages`]: a producer task sending `Vec<u64>` batches of
/// `batch` numbers over a bounded `mpsc` channel of `capacity` batches to a summing task
/// (through a mapping task and a second such channel when `mapped`), on the current runtime.
///
/// # Panics
///
/// Outside a tokio runtime, or if a task panics.
pub async fn run_baseline(total: u64, mapped: bool, batch: usize, capacity: usize) -> Summed {
    let (tx, mut rx) = mpsc::channel::<Vec<u64>>(capacity);
    tokio::spawn(async move {
        let mut next = 0;
        while next < total {
            let end = total.min(next + batch as u64);
            if tx.send((next..end).collect()).await.is_err() {
                return;
            }
            next = end;
        }
    });
    if mapped {
        let (mapped_tx, mapped_rx) = mpsc::channel::<Vec<u64>>(capacity);
        tokio::spawn(async move {
            while let Some(events) = rx.recv().await {
                if mapped_tx.send(add_one(events)).await.is_err() {
                    return;
                }
            }
        });
        rx = mapped_rx;
    }
    let consumer = tokio::spawn(async move {
        let mut summed = Summed { sum: 0, batches: 0 };
        while let Some(events) = rx.recv().await {
            summed.sum += events.iter().sum::<u64>();
            summed.batches += 1;
        }
        summed
    });
    consumer.await.expect("the baseline consumer panicked")
}

/// A tokio multi-thread runtime with 2 worker threads, the runtime every benchmark uses.
///
/// # Panics
///
/// If the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

// ----- flow against rayon (`benches/flow.rs`) -----

/// Elixir Flow's reference throughput for `map_filter_reduce`, in millions of events per second.
pub const ELIXIR_MAP_FILTER_REDUCE: f64 = 17.0;

/// Elixir Flow's reference throughput for `partition_reduce`, in millions of events per second.
pub const ELIXIR_PARTITION_REDUCE: f64 = 2.5;

/// How many keys `partition_reduce` counts by: event `x` has key `x % KEYS`.
pub const KEYS: u64 = 1000;

/// The input of the flow benchmarks: the numbers `0..total` in one `Vec`, built once, outside
/// any timing, and shared by our flows and the baselines.
pub fn input(total: u64) -> Arc<Vec<u64>> {
    Arc::new((0..total).collect())
}

/// An owning iterator over a copy of each number of the shared `data`, for `Flow::from_iter`
/// (which needs `'static`): the flow reads the same prebuilt `Vec` as rayon, with no copy of
/// the whole input and no 80 MB `Vec` to free inside the timing (dropping it drops an `Arc`).
pub fn shared_iter(data: Arc<Vec<u64>>) -> impl Iterator<Item = u64> + Send + 'static {
    (0..data.len()).map(move |i| data[i])
}

/// The mapper of `map_filter_reduce`: `x -> 3x`.
pub fn triple(x: u64) -> u64 {
    x * 3
}

/// The filter of `map_filter_reduce`: keeps even numbers.
pub fn is_even(x: &u64) -> bool {
    x.is_multiple_of(2)
}

/// The key of `partition_reduce`: `x % KEYS`.
pub fn key(x: &u64) -> u64 {
    x % KEYS
}

/// What `map_filter_reduce` over `0..total` sums to: `3x` for every even `x`.
pub fn expected_map_filter_sum(total: u64) -> u64 {
    let evens = total.div_ceil(2);
    3 * evens * evens.saturating_sub(1)
}

/// How a flow benchmark reads its input `Vec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `Flow::from_shared`: the stages of the first layer read the shared `Vec` themselves.
    Shared,
    /// `Flow::from_iter` over [`shared_iter`]: one producer stage reads it for them.
    Iter,
}

impl Source {
    /// A flow over `data`, read this way.
    pub fn flow(self, data: Arc<Vec<u64>>) -> flow::Flow<u64> {
        match self {
            Source::Shared => flow::Flow::from_shared(data),
            Source::Iter => flow::Flow::from_iter(shared_iter(data)),
        }
    }
}

/// `map_filter_reduce` as a flow: a source reading `data`, one layer of stages (the default,
/// one per core) mapping, filtering and summing, each stage emitting its sum when its input
/// is done; returns the total of those sums. `max_demand` is the layer's (default 1000).
///
/// # Panics
///
/// Outside a tokio runtime, or if the flow fails.
pub async fn flow_map_filter_reduce(
    source: Source,
    data: Arc<Vec<u64>>,
    max_demand: Option<usize>,
) -> u64 {
    let mut source = source.flow(data);
    if let Some(max) = max_demand {
        source = source.max_demand(max);
    }
    let sums = source
        .map(triple)
        .filter(is_even)
        .reduce(|| 0u64, |sum, x| *sum += x)
        .emit_state()
        .collect()
        .await
        .expect("the flow runs");
    sums.iter().sum()
}

/// `map_filter_reduce` with rayon, on `pool`.
pub fn rayon_map_filter_reduce(pool: &rayon::ThreadPool, data: &[u64]) -> u64 {
    pool.install(|| data.par_iter().map(|&x| triple(x)).filter(is_even).sum())
}

/// Counts of events by key.
pub type Counts = HashMap<u64, u64>;

/// Adds one event to its key's count (the reducer every `partition_reduce` uses).
pub fn count(counts: &mut Counts, x: u64) {
    *counts.entry(key(&x)).or_insert(0) += 1;
}

/// `partition_reduce` as a flow: a source reading `data`, partitioned by [`key`] over one
/// stage per core, each counting its keys in a `HashMap` and emitting the `(key, count)`
/// pairs when its input is done. Returns every pair.
///
/// # Panics
///
/// Outside a tokio runtime, or if the flow fails.
pub async fn flow_partition_reduce(source: Source, data: Arc<Vec<u64>>) -> Vec<(u64, u64)> {
    source
        .flow(data)
        .partition(flow::Partition::by_key(key))
        .reduce(Counts::new, count)
        .emit_events()
        .collect()
        .await
        .expect("the flow runs")
}

/// `partition_reduce` with rayon's idiom for a parallel group-count, on `pool`: each task
/// folds its share into its own `HashMap`, and the maps are merged pairwise.
pub fn rayon_partition_reduce(pool: &rayon::ThreadPool, data: &[u64]) -> Counts {
    pool.install(|| {
        data.par_iter()
            .fold(Counts::new, |mut counts, &x| {
                count(&mut counts, x);
                counts
            })
            .reduce(Counts::new, |a, b| {
                if a.len() >= b.len() {
                    merge_counts(a, b)
                } else {
                    merge_counts(b, a)
                }
            })
    })
}

/// Adds the counts of `from` into `into`.
fn merge_counts(mut into: Counts, from: Counts) -> Counts {
    for (k, n) in from {
        *into.entry(k).or_insert(0) += n;
    }
    into
}

/// `partition_reduce` as a plain loop on one thread.
pub fn sequential_partition_reduce(data: &[u64]) -> Counts {
    let mut counts = Counts::new();
    for &x in data {
        count(&mut counts, x);
    }
    counts
}

/// Checks `(key, count)` pairs from `partition_reduce` over `0..total`: every key of
/// `0..KEYS` exactly once, with its exact count.
///
/// # Panics
///
/// If they are not.
pub fn check_counts(total: u64, pairs: impl IntoIterator<Item = (u64, u64)>) {
    let mut pairs: Vec<(u64, u64)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..KEYS)
        .map(|k| (k, total / KEYS + u64::from(k < total % KEYS)))
        .collect();
    assert_eq!(pairs, expected, "counts by key");
}

/// A rayon pool with 2 threads, the pool every rayon baseline uses (like [`runtime`]'s 2
/// workers).
///
/// # Panics
///
/// If the pool cannot be built.
pub fn rayon_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("build the rayon pool")
}

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
