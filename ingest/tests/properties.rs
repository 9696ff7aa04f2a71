//! Random pipelines (processors, batchers, keys, sizes, timeouts) under random failures,
//! panics and retries, on the paused clock: every message is settled exactly once, per-key
//! order holds where `partition_by` promises it, no batch is larger than its size or older
//! than its timeout, and the report adds up.

mod support;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use futures::future::join_all;
use ingest::{
    Backoff, Batcher, Failure, Message, Outcome, Pipeline, Processors, RetryPolicy, TestSource,
};
use proptest::prelude::*;
use support::{Probe, within};

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
    )
        .prop_flat_map(|(p, batchers, keys, odds, seed, pushes, timing)| {
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

fn build(case: &Case) -> (Pipeline<Probe>, TestSource<u64>) {
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
    let source = TestSource::new();
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
    let mut builder = Pipeline::builder("prop", probe)
        .producer(source.producer())
        .processors(processors);
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
    (builder.start().expect("a valid case"), source)
}

async fn run(case: Case) -> Result<(), TestCaseError> {
    let (pipeline, source) = build(&case);
    let mut pushed = Vec::new();
    let mut next = 0u64;
    for (n, pause_ms) in &case.pushes {
        pushed.push(source.push(next..next + n).unwrap());
        next += n;
        tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
    }
    let total = next;
    let report = if case.shutdown {
        within(120, pipeline.shutdown(Duration::from_secs(60))).await
    } else {
        source.finish().unwrap();
        within(120, pipeline.join()).await
    };
    // Settled exactly once: every push resolves, nothing twice.
    let outcomes: Vec<Outcome> = within(5, join_all(pushed))
        .await
        .into_iter()
        .flatten()
        .collect();
    prop_assert_eq!(outcomes.len() as u64, total);
    prop_assert_eq!(source.duplicates(), 0);
    prop_assert_eq!(source.settled(), total);
    // The report adds up, and agrees with what the source heard.
    prop_assert!(report.adds_up(), "{:?}", report);
    prop_assert!(!report.timed_out, "{:?}", report);
    prop_assert!(
        report.stopped.is_empty() && report.stuck.is_empty(),
        "{:?}",
        report
    );
    prop_assert_eq!(report.processed + report.unprocessed, total, "{:?}", report);
    let acked = outcomes.iter().filter(|o| o.is_ack()).count() as u64;
    prop_assert_eq!(report.acked, acked, "{:?}", report);
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
    // Order per key, where the partitioning promises it, among messages never retried.
    if case.partitioned {
        let retried: std::collections::HashSet<u64> = probe
            .messages()
            .iter()
            .filter(|m| m.2 > 1)
            .map(|m| m.1)
            .collect();
        let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
        for (_, data, attempt, _) in probe.messages() {
            if attempt == 1 {
                by_key.entry(data % case.keys).or_default().push(data);
            }
        }
        for (key, seen) in &by_key {
            prop_assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "key {}: {:?}",
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
            let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
            let mut batch_retried = std::collections::HashSet::new();
            for (data, _, _, _) in &batches {
                for d in data {
                    if !by_key.entry(d % case.keys).or_default().contains(d) {
                        by_key.get_mut(&(d % case.keys)).unwrap().push(*d);
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
                    "key {}: {:?}",
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
