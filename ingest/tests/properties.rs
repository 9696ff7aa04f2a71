//! Random pipelines (processors, batchers, keys, sizes, timeouts) under random failures,
//! panics and retries, and churn: several sources, some finishing early, one whose
//! acknowledger fails at random, a dead-letter sink that may refuse, shutdowns at random times
//! with deadlines that may pass. On the paused clock: every message is settled exactly once,
//! per-key order holds where `partition_by` promises it, no batch is larger than its size or
//! older than its timeout, and the report adds up.

mod support;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::{
    AckError, Acker, Acknowledger, Backoff, Batcher, Failure, Message, Outcome, Pipeline,
    Processors, Producers, RetryPolicy, Settlement, TestSource,
};
use proptest::prelude::*;
use support::{Morgue, Probe, within};

#[derive(Clone, Debug)]
struct BatcherCase {
    size: usize,
    timeout_ms: u64,
    concurrency: usize,
    key_concurrency: usize,
    partitioned: bool,
    retries: u32,
}

#[derive(Clone, Debug)]
struct Case {
    processors: usize,
    max_demand: usize,
    min_demand: usize,
    partitioned: bool,
    processor_retries: u32,
    batchers: Vec<BatcherCase>,
    keys: u64,
    keyed_batches: bool,
    /// Out of 100: processor error, processor panic, batch message failure, batch panic.
    odds: (u64, u64, u64, u64),
    seed: u64,
    pushes: Vec<(u64, u64)>,
    message_delay_ms: u64,
    batch_delay_ms: u64,
    shutdown: bool,
    /// How many test sources (each its own producer group).
    sources: usize,
    /// Per push: which source it goes to, and whether that source finishes after it.
    routing: Vec<(usize, bool)>,
    /// A finite source of this many messages whose acknowledger fails this often (out of 100).
    feed: Option<(u64, u64)>,
    /// A dead-letter sink, and whether it refuses everything.
    dead_letters: Option<bool>,
    /// The shutdown's deadline: long, or short enough to pass with messages in flight.
    deadline_ms: u64,
}

fn batcher_case() -> impl Strategy<Value = BatcherCase> {
    (
        1usize..=8,
        1u64..=50,
        1usize..=3,
        1usize..=2,
        any::<bool>(),
        1u32..=3,
    )
        .prop_map(
            |(size, timeout_ms, concurrency, key_concurrency, partitioned, retries)| BatcherCase {
                size,
                timeout_ms,
                concurrency,
                key_concurrency,
                partitioned,
                retries,
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=4, 1usize..=12, any::<bool>(), 1u32..=3),
        prop::collection::vec(batcher_case(), 0..=3),
        (1u64..=5, any::<bool>()),
        (0u64..=15, 0u64..=10, 0u64..=15, 0u64..=10),
        any::<u64>(),
        prop::collection::vec((1u64..=30, 0u64..=40), 1..=4),
        (0u64..=3, 0u64..=5, any::<bool>()),
        (
            1usize..=3,
            prop::collection::vec((0usize..3, any::<bool>()), 4),
            prop::option::of((1u64..=60, 0u64..=50)),
            prop::option::of(any::<bool>()),
            prop_oneof![Just(60_000u64), 0u64..=30],
        ),
    )
        .prop_flat_map(|(p, batchers, keys, odds, seed, pushes, timing, churn)| {
            (0..p.1).prop_map(move |min_demand| Case {
                processors: p.0,
                max_demand: p.1,
                min_demand,
                partitioned: p.2,
                processor_retries: p.3,
                batchers: batchers.clone(),
                keys: keys.0,
                keyed_batches: keys.1,
                odds,
                seed,
                pushes: pushes.clone(),
                message_delay_ms: timing.0,
                batch_delay_ms: timing.1,
                shutdown: timing.2,
                sources: churn.0,
                routing: churn.1.clone(),
                feed: churn.2,
                dead_letters: churn.3,
                deadline_ms: churn.4,
            })
        })
}

/// A number in `0..100` drawn from the case's seed, a message and an attempt.
fn roll(seed: u64, what: u64, data: u64, attempt: u32) -> u64 {
    let state = ahash::RandomState::with_seeds(seed, what, 7, 11);
    let mut h = state.build_hasher();
    (data, attempt).hash(&mut h);
    std::hash::Hasher::finish(&h) % 100
}

const NAMES: [&str; 3] = ["a", "b", "c"];

/// The feed's acknowledger: records every settlement (also of the calls it fails), and fails
/// a call when the roll for its first message says so.
#[derive(Default)]
struct Ledger {
    settled: Mutex<Vec<Settlement>>,
    seed: u64,
    odds: u64,
    errors: AtomicU64,
}

impl Acknowledger for Ledger {
    async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
        let fail = roll(self.seed, 4, settled[0].tag, 0) < self.odds;
        self.settled.lock().unwrap().extend(settled);
        if fail {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return Err(AckError::new("the broker refused the ack"));
        }
        Ok(())
    }
}

/// Feed messages are numbered from here, apart from the pushed ones.
const FEED_BASE: u64 = 1_000_000;

/// A finite source of `FEED_BASE..FEED_BASE + n`, made as demanded, counting what it made.
struct Numbers {
    next: u64,
    end: u64,
    acker: Acker,
    made: Arc<AtomicU64>,
}

impl stage::Producer for Numbers {
    type Out = Message<u64>;

    async fn handle_demand(
        &mut self,
        demand: usize,
        ctx: &mut stage::Context<Self>,
    ) -> Vec<Message<u64>> {
        let start = self.next;
        self.next = self.end.min(start + demand as u64);
        if self.next == self.end {
            ctx.finish();
        }
        self.made.fetch_add(self.next - start, Ordering::Relaxed);
        (start..self.next)
            .map(|d| Message::new(d, &self.acker, d))
            .collect()
    }
}

/// What a case's pipeline is fed from.
struct Sources {
    tests: Vec<TestSource<u64>>,
    ledger: Arc<Ledger>,
    made: Arc<AtomicU64>,
    morgue: Arc<Morgue>,
}

fn build(case: &Case) -> (Pipeline<Probe>, Sources) {
    let c = case.clone();
    let batchers = case.batchers.len() as u64;
    let keys = case.keys;
    let probe = Probe::default()
        .on_message(move |msg, _| {
            let key = msg.data % keys;
            if batchers > 0 {
                msg.put_batcher(NAMES[(key % batchers) as usize]);
            }
            if c.keyed_batches {
                msg.put_batch_key(key);
            }
            let r = roll(c.seed, 1, msg.data, msg.attempt());
            if r < c.odds.0 {
                return Err(Failure::new("processor error"));
            }
            if r < c.odds.0 + c.odds.1 {
                panic!("processor panic");
            }
            Ok(msg.data)
        })
        .on_batch({
            let c = case.clone();
            move |msgs, _| {
                if roll(c.seed, 2, msgs[0].data, msgs[0].attempt()) < c.odds.3 {
                    panic!("batch panic");
                }
                for m in msgs.iter_mut() {
                    if roll(c.seed, 3, m.data, m.attempt()) < c.odds.2 {
                        m.fail("batch message failure");
                    }
                }
                Ok(())
            }
        })
        .message_delay({
            let d = case.message_delay_ms;
            move |data| Duration::from_millis(data % (d + 1))
        })
        .batch_delay({
            let d = case.batch_delay_ms;
            move |data| Duration::from_millis(data % (d + 1))
        });
    let sources = Sources {
        tests: (0..case.sources).map(|_| TestSource::new()).collect(),
        ledger: Arc::new(Ledger {
            seed: case.seed,
            odds: case.feed.map_or(0, |f| f.1),
            ..Ledger::default()
        }),
        made: Arc::default(),
        morgue: Arc::new(Morgue {
            fail: AtomicBool::new(case.dead_letters == Some(true)),
            ..Morgue::default()
        }),
    };
    let mut processors = Processors::new()
        .concurrency(case.processors)
        .max_demand(case.max_demand)
        .min_demand(case.min_demand)
        .retry(
            RetryPolicy::new(case.processor_retries)
                .backoff(Backoff::exponential(Duration::from_millis(3))),
        );
    if case.partitioned {
        processors = processors.partition_by(move |m: &Message<u64>| m.data % keys);
    }
    let mut builder = Pipeline::builder("prop", probe).processors(processors);
    for (i, source) in sources.tests.iter().enumerate() {
        builder = builder.producer(source.producer().name(format!("test{i}")));
    }
    if let Some((n, _)) = case.feed {
        builder = builder.producer(
            Producers::single(Numbers {
                next: FEED_BASE,
                end: FEED_BASE + n,
                acker: Acker::new(Arc::clone(&sources.ledger)),
                made: Arc::clone(&sources.made),
            })
            .name("feed"),
        );
    }
    if case.dead_letters.is_some() {
        builder = builder.dead_letters(Arc::clone(&sources.morgue));
    }
    for (i, b) in case.batchers.iter().enumerate() {
        let mut batcher = Batcher::new(NAMES[i])
            .batch_size(b.size)
            .batch_timeout(Duration::from_millis(b.timeout_ms))
            .concurrency(b.concurrency)
            .key_concurrency(b.key_concurrency)
            .retry(RetryPolicy::new(b.retries).backoff(Backoff::fixed(Duration::from_millis(2))));
        if b.partitioned {
            batcher = batcher.partition_by(move |m: &Message<u64>| m.data % keys);
        }
        builder = builder.batcher(batcher);
    }
    (builder.start().expect("a valid case"), sources)
}

async fn run(case: Case) -> Result<(), TestCaseError> {
    let (pipeline, sources) = build(&case);
    let mut pushed: Vec<Vec<_>> = (0..case.sources).map(|_| Vec::new()).collect();
    let mut finished = vec![false; case.sources];
    let mut origins = Vec::new();
    let mut next = 0u64;
    for (i, (n, pause_ms)) in case.pushes.iter().enumerate() {
        let (to, then_finish) = case.routing[i];
        let to = to % case.sources;
        if !finished[to] {
            // A push to a source that has just finished may find it stopped: an error, not a
            // message lost.
            if let Ok(outcomes) = sources.tests[to].push(next..next + n) {
                pushed[to].push((outcomes, *n));
                origins.push((next..next + n, to));
                next += n;
            }
            if then_finish {
                let _ = sources.tests[to].finish();
                finished[to] = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
    }
    let short_deadline = case.shutdown && case.deadline_ms < 60_000;
    let report = if case.shutdown {
        within(
            120,
            pipeline.shutdown(Duration::from_millis(case.deadline_ms)),
        )
        .await
    } else {
        for source in &sources.tests {
            let _ = source.finish();
        }
        within(120, pipeline.join()).await
    };
    // Settled exactly once: every push resolves, with an outcome for each of its messages,
    // and no source hears of a message twice.
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut total = 0;
    for (source, pushes) in sources.tests.iter().zip(pushed) {
        let mut from_source = 0;
        for (push, n) in pushes {
            let got = within(5, push).await;
            prop_assert_eq!(got.len() as u64, n);
            outcomes.extend(got);
            from_source += n;
        }
        prop_assert_eq!(source.duplicates(), 0);
        prop_assert_eq!(source.settled(), from_source);
        total += from_source;
    }
    let made = sources.made.load(Ordering::Relaxed);
    let ledger = sources.ledger.settled.lock().unwrap().clone();
    let mut seen = std::collections::HashSet::new();
    for s in &ledger {
        prop_assert!(seen.insert(s.tag), "feed message {} settled twice", s.tag);
    }
    prop_assert_eq!(
        ledger.len() as u64,
        made,
        "every feed message made is settled"
    );
    outcomes.extend(ledger.iter().map(|s| s.outcome.clone()));
    total += made;
    // The report adds up, and agrees with what the sources heard.
    prop_assert!(report.adds_up(), "{:?}", report);
    if !short_deadline {
        prop_assert!(!report.timed_out, "{:?}", report);
    }
    prop_assert!(
        report.stopped.is_empty() && report.stuck.is_empty(),
        "{:?}",
        report
    );
    prop_assert_eq!(report.processed + report.unprocessed, total, "{:?}", report);
    let acked = outcomes.iter().filter(|o| o.is_ack()).count() as u64;
    prop_assert_eq!(report.acked, acked, "{:?}", report);
    // Every failed acknowledger call of a stage is counted. (Messages a stopped producer held
    // are settled by their guards, whose calls are the acknowledger's own business.)
    let errors = sources.ledger.errors.load(Ordering::Relaxed);
    if report.unprocessed == 0 {
        prop_assert_eq!(report.ack_errors, errors, "{:?}", report);
    } else {
        prop_assert!(report.ack_errors <= errors, "{:?}", report);
    }
    let dead = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::DeadLetter { .. }))
        .count() as u64;
    if case.dead_letters.is_some() {
        prop_assert_eq!(report.dead_lettered, dead, "{:?}", report);
    }
    prop_assert_eq!(
        sources.morgue.letters.lock().unwrap().len() as u64,
        dead,
        "{:?}",
        report
    );
    if !case.shutdown {
        prop_assert_eq!(report.unprocessed, 0);
    }
    // Batches: never larger than their size, never older than their timeout.
    let probe = pipeline.handler();
    for (data, info, _, _) in probe.batches() {
        let i = NAMES.iter().position(|n| **n == *info.batcher).unwrap();
        let b = &case.batchers[i];
        prop_assert!(data.len() <= b.size, "{} > {}", data.len(), b.size);
        prop_assert_eq!(info.size, data.len());
        let age = info.closed_at - info.opened_at;
        prop_assert!(
            age <= Duration::from_millis(b.timeout_ms),
            "{:?} > {}ms",
            age,
            b.timeout_ms
        );
    }
    // Order per key and source, where the partitioning promises it, among messages never
    // retried. (Sources are not ordered among themselves.)
    let keys = case.keys;
    let order_key = |d: u64| {
        let source = origins
            .iter()
            .find(|(range, _)| range.contains(&d))
            .map_or(usize::MAX, |(_, source)| *source);
        (source, d % keys)
    };
    if case.partitioned {
        let retried: std::collections::HashSet<u64> = probe
            .messages()
            .iter()
            .filter(|m| m.2 > 1)
            .map(|m| m.1)
            .collect();
        let mut by_key: HashMap<(usize, u64), Vec<u64>> = HashMap::new();
        for (_, data, attempt, _) in probe.messages() {
            if attempt == 1 {
                by_key.entry(order_key(data)).or_default().push(data);
            }
        }
        for (key, seen) in &by_key {
            prop_assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "key {:?}: {:?}",
                key,
                seen
            );
        }
        // A partitioned batcher runs each partition on one batch processor; otherwise a key's
        // batches run one at a time only with a key of their own and a key concurrency of 1.
        let ordered_batches = case
            .batchers
            .iter()
            .all(|b| b.partitioned || (case.keyed_batches && b.key_concurrency == 1));
        if ordered_batches {
            let mut batches = probe.batches();
            batches.sort_by_key(|b| b.2);
            let mut by_key: HashMap<(usize, u64), Vec<u64>> = HashMap::new();
            let mut batch_retried = std::collections::HashSet::new();
            for (data, _, _, _) in &batches {
                for d in data {
                    let seen = by_key.entry(order_key(*d)).or_default();
                    if !seen.contains(d) {
                        seen.push(*d);
                    } else {
                        batch_retried.insert(*d);
                    }
                }
            }
            for (key, seen) in by_key {
                let firsts: Vec<u64> = seen
                    .into_iter()
                    .filter(|d| !retried.contains(d) && !batch_retried.contains(d))
                    .collect();
                prop_assert!(
                    firsts.windows(2).all(|w| w[0] < w[1]),
                    "key {:?}: {:?}",
                    key,
                    firsts
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_message_is_settled_once(case in case()) {
        // Handler panics are part of the cases; keep them out of the output.
        std::panic::set_hook(Box::new(|_| {}));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let result = rt.block_on(run(case));
        let _ = std::panic::take_hook();
        result?;
    }
}
