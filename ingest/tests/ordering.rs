//! Partitioning and order: `partition_by` on processors and batchers, what it guarantees, and
//! partition functions that panic (which crash upstream's producer or batcher).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use ingest::{BatchKey, Batcher, Outcome, Pipeline, Processors, TestSource, Trigger};
use support::{Journal, Probe, feed, within};

/// Messages of one key all go to one processor, which handles them in the order the producer
/// emitted them, however long each takes.
#[tokio::test(start_paused = true)]
async fn a_key_goes_to_one_processor_in_order() {
    let journal = Journal::new();
    let probe = Probe::default().message_delay(|d| Duration::from_millis((d * 7) % 13));
    let pipeline = Pipeline::builder("keys", probe)
        .producer(feed(0..90, &journal.acker()))
        .processors(
            Processors::new()
                .concurrency(4)
                .max_demand(6)
                .partition_by(|m: &ingest::Message<u64>| m.data % 5),
        )
        .start()
        .unwrap();
    let report = within(10, pipeline.join()).await;
    assert_eq!(report.acked, 90);
    let mut by_key: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
    for (stage, data, _, _) in pipeline.handler().messages() {
        by_key.entry(data % 5).or_default().push((stage, data));
    }
    assert_eq!(by_key.len(), 5);
    for (key, seen) in by_key {
        let stages: std::collections::HashSet<_> = seen.iter().map(|s| s.0.clone()).collect();
        assert_eq!(stages.len(), 1, "key {key} went to {stages:?}");
        let data: Vec<u64> = seen.iter().map(|s| s.1).collect();
        let mut sorted = data.clone();
        sorted.sort();
        assert_eq!(data, sorted, "key {key} out of order");
        assert_eq!(data.len(), 18);
    }
}

/// A batcher's `partition_by` pins each key to one batch processor, whose batches come in
/// order; `BatchInfo::partition` says which. Upstream's test: 16..=23 with batches of 4, two
/// partitions by parity and a batch key for 20 and up give [16, 18] [17, 19] [20, 22]
/// [21, 23].
#[tokio::test(start_paused = true)]
async fn a_partitioned_batcher_keeps_each_partition_in_order() {
    let probe = Probe::default().on_message(|msg, _| {
        if msg.data >= 20 {
            msg.put_batch_key("high");
        }
        Ok(msg.data)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("parts", probe)
        .producer(source.producer())
        .processors(
            Processors::new()
                .concurrency(2)
                .partition_by(|m: &ingest::Message<u64>| m.data % 2),
        )
        .batcher(
            Batcher::new("default")
                .batch_size(4)
                .concurrency(2)
                .partition_by(|m: &ingest::Message<u64>| m.data % 2),
        )
        .start()
        .unwrap();
    let outcomes = source.push(16..=23).unwrap();
    source.finish().unwrap();
    assert_eq!(within(5, outcomes).await, vec![Outcome::Ack; 8]);
    within(5, pipeline.join()).await;
    let batches = pipeline.handler().batches();
    let mut seen: Vec<(Vec<u64>, Option<usize>, BatchKey)> = batches
        .iter()
        .map(|b| (b.0.clone(), b.1.partition, b.1.batch_key.clone()))
        .collect();
    seen.sort();
    let high = BatchKey::from("high");
    assert_eq!(
        seen,
        [
            (vec![16, 18], Some(0), BatchKey::Default),
            (vec![17, 19], Some(1), BatchKey::Default),
            (vec![20, 22], Some(0), high.clone()),
            (vec![21, 23], Some(1), high),
        ]
    );
    // Each partition's batches run on the batch processor of that index.
    for call in pipeline.handler().calls() {
        if let support::Call::Batch { stage, info, .. } = call {
            let p = info.partition.unwrap();
            assert_eq!(stage, format!("parts.batch_processor.default.{p}"));
        }
    }
}

/// Partitioned processors and batchers keep each key's messages in order from the producer
/// to the batches, whatever the delays.
#[tokio::test(start_paused = true)]
async fn order_per_key_holds_end_to_end() {
    let journal = Journal::new();
    let key = |m: &ingest::Message<u64>| m.data % 7;
    let probe = Probe::default()
        .message_delay(|d| Duration::from_millis(d % 5))
        .batch_delay(|d| Duration::from_millis((d * 3) % 11));
    let pipeline = Pipeline::builder("e2e", probe)
        .producer(feed(0..200, &journal.acker()))
        .processors(
            Processors::new()
                .concurrency(3)
                .max_demand(8)
                .partition_by(key),
        )
        .batcher(
            Batcher::new("default")
                .batch_size(5)
                .batch_timeout(Duration::from_millis(20))
                .concurrency(4)
                .partition_by(key),
        )
        .start()
        .unwrap();
    let report = within(20, pipeline.join()).await;
    assert_eq!(report.acked, 200);
    let mut batches = pipeline.handler().batches();
    batches.sort_by_key(|b| b.2);
    let mut by_key: HashMap<u64, Vec<u64>> = HashMap::new();
    for (data, _, _, _) in batches {
        for d in data {
            by_key.entry(d % 7).or_default().push(d);
        }
    }
    for (k, seen) in by_key {
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "key {k} out of order");
    }
}

/// A processor `partition_by` that panics fails that message only: the producer it runs in
/// goes on (upstream's producer crashes and loses what it had emitted).
#[tokio::test(start_paused = true)]
async fn a_panicking_processor_partition_fails_one_message() {
    let source = TestSource::new();
    let pipeline =
        Pipeline::builder("bad-key", Probe::default())
            .producer(source.producer())
            .processors(Processors::new().concurrency(2).partition_by(
                |m: &ingest::Message<u64>| {
                    assert!(m.data != 7, "no key for seven");
                    m.data
                },
            ))
            .start()
            .unwrap();
    let outcomes = within(5, source.push(5..10).unwrap()).await;
    let rejected = Outcome::Nack { requeue: false };
    assert_eq!(
        outcomes,
        [
            Outcome::Ack,
            Outcome::Ack,
            rejected,
            Outcome::Ack,
            Outcome::Ack
        ]
    );
    assert_eq!(within(5, source.push([11]).unwrap()).await, [Outcome::Ack]);
    source.finish().unwrap();
    let report = within(5, pipeline.join()).await;
    assert!(report.stopped.is_empty(), "{:?}", report.stopped);
    assert_eq!((report.acked, report.failed), (5, 1));
}

/// A batcher `partition_by` that panics fails that message only, in the batcher, which keeps
/// its open batches (upstream's batcher crashes and loses them).
#[tokio::test(start_paused = true)]
async fn a_panicking_batcher_partition_fails_one_message() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("bad-batch-key", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .batcher(
            Batcher::new("default")
                .batch_size(3)
                .concurrency(2)
                .partition_by(|m: &ingest::Message<u64>| {
                    assert!(m.data != 2, "no partition for two");
                    0
                }),
        )
        .start()
        .unwrap();
    let outcomes = within(5, source.push_flush([1, 2, 3]).unwrap()).await;
    let rejected = Outcome::Nack { requeue: false };
    assert_eq!(outcomes, [Outcome::Ack, rejected, Outcome::Ack]);
    let batches = pipeline.handler().batches();
    // The failed message ends the run of 1, which flushes; 3 starts (and flushes) another.
    let data: Vec<(Vec<u64>, Trigger)> =
        batches.iter().map(|b| (b.0.clone(), b.1.trigger)).collect();
    assert_eq!(data, [(vec![1], Trigger::Flush), (vec![3], Trigger::Flush)]);
    let failed_batches: Vec<_> = pipeline
        .handler()
        .calls()
        .into_iter()
        .filter(|c| matches!(c, support::Call::FailedBatch { .. }))
        .collect();
    assert_eq!(failed_batches.len(), 1);
}
