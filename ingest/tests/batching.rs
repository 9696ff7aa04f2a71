//! Batching: by size, by a timeout counted from a batch's first message, by flush, at the
//! drain; per batcher and key; one key's batches in order; bounded open keys; partitioned
//! batchers (Broadway's batcher rules, and the choices this crate makes where they are weak).

mod support;

use std::time::Duration;

use ingest::{BatchKey, Batcher, Outcome, Pipeline, Processors, TestSource, Trigger};
use support::{Journal, Probe, feed, within};

fn one_processor() -> Processors<u64> {
    Processors::new().concurrency(1).max_demand(10)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Batches close when full; a push larger than a batch fills several.
#[tokio::test(start_paused = true)]
async fn a_batch_closes_when_full() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("size", Probe::default())
        .producer(source.producer())
        .processors(one_processor())
        .batcher(
            Batcher::new("default")
                .batch_size(2)
                .batch_timeout(Duration::from_secs(60)),
        )
        .start()
        .unwrap();
    let outcomes = source.push(1..=4).unwrap();
    within(5, outcomes).await;
    let batches = pipeline.handler().batches();
    let seen: Vec<_> = batches.iter().map(|b| (b.0.clone(), b.1.trigger)).collect();
    assert_eq!(
        seen,
        [(vec![1, 2], Trigger::Size), (vec![3, 4], Trigger::Size)]
    );
    // Both went out at once: nothing waited for the timeout.
    assert!(batches.iter().all(|b| b.2 == Duration::ZERO), "{batches:?}");
}

/// Upstream's probe: messages at 0 and 200 ms with a timeout of 300 ms make one batch at
/// 300 ms; a message at 350 ms comes out at 650 ms. The timer starts with a batch's first
/// message and later messages do not reset it.
#[tokio::test(start_paused = true)]
async fn the_timeout_counts_from_the_first_message() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("timeout", Probe::default())
        .producer(source.producer())
        .processors(one_processor())
        .batcher(
            Batcher::new("default")
                .batch_size(10)
                .batch_timeout(ms(300)),
        )
        .start()
        .unwrap();
    let first = source.push([1]).unwrap();
    tokio::time::sleep(ms(200)).await;
    let second = source.push([2]).unwrap();
    tokio::time::sleep(ms(150)).await;
    let third = source.push([3]).unwrap();
    within(5, async { (first.await, second.await, third.await) }).await;
    let batches = pipeline.handler().batches();
    assert_eq!(batches.len(), 2, "{batches:?}");
    let (data, info, start, _) = &batches[0];
    assert_eq!(
        (data.as_slice(), info.trigger),
        (&[1, 2][..], Trigger::Timeout)
    );
    assert_eq!(info.closed_at - info.opened_at, ms(300));
    assert_eq!(*start, ms(300));
    let (data, info, start, _) = &batches[1];
    assert_eq!(
        (data.as_slice(), info.trigger),
        (&[3][..], Trigger::Timeout)
    );
    assert_eq!(*start, ms(650));
}

/// Upstream's rule for flush mode: a flush message sends its key's batch on at the end of
/// its run, with whatever the batch holds (so not always one message).
#[tokio::test(start_paused = true)]
async fn a_flush_message_sends_its_batch_on() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("flush", Probe::default())
        .producer(source.producer())
        .processors(one_processor())
        .batcher(
            Batcher::new("default")
                .batch_size(10)
                .batch_timeout(Duration::from_secs(60)),
        )
        .start()
        .unwrap();
    let bulk = source.push([10]).unwrap();
    let flush = source.push_flush([11]).unwrap();
    let outcomes = within(5, async { (bulk.await, flush.await) }).await;
    assert_eq!(outcomes, (vec![Outcome::Ack], vec![Outcome::Ack]));
    let batches = pipeline.handler().batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        (batches[0].0.clone(), batches[0].1.trigger),
        (vec![10, 11], Trigger::Flush)
    );
    assert_eq!(batches[0].2, Duration::ZERO);
}

/// When the producers finish, every open batch goes out at once (trigger `Drain`), without
/// waiting for its timeout.
#[tokio::test(start_paused = true)]
async fn open_batches_are_flushed_when_the_producers_finish() {
    let journal = Journal::new();
    let probe = Probe::default().on_message(|msg, _| {
        msg.put_batch_key(msg.data % 2);
        Ok(msg.data)
    });
    let pipeline = Pipeline::builder("drain", probe)
        .producer(feed(0..5, &journal.acker()))
        .processors(one_processor())
        .batcher(
            Batcher::new("default")
                .batch_size(10)
                .batch_timeout(Duration::from_secs(60)),
        )
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!(report.acked, 5);
    let mut batches: Vec<_> = pipeline
        .handler()
        .batches()
        .into_iter()
        .map(|b| (b.0, b.1.trigger, b.2))
        .collect();
    batches.sort();
    assert_eq!(
        batches,
        [
            (vec![0, 2, 4], Trigger::Drain, Duration::ZERO),
            (vec![1, 3], Trigger::Drain, Duration::ZERO)
        ]
    );
}

/// A batch holds messages of one batcher and one key, never more than its size, and its
/// info's size is its length.
#[tokio::test(start_paused = true)]
async fn batches_never_mix_batchers_or_keys() {
    let journal = Journal::new();
    let probe = Probe::default().on_message(|msg, _| {
        msg.put_batcher(if msg.data % 2 == 0 { "even" } else { "odd" });
        msg.put_batch_key(msg.data % 3);
        Ok(msg.data)
    });
    let pipeline = Pipeline::builder("mix", probe)
        .producer(feed(0..100, &journal.acker()))
        .processors(Processors::new().concurrency(3).max_demand(10))
        .batcher(Batcher::new("even").batch_size(4).concurrency(2))
        .batcher(Batcher::new("odd").batch_size(3))
        .start()
        .unwrap();
    let report = within(10, pipeline.join()).await;
    assert_eq!(report.acked, 100);
    let batches = pipeline.handler().batches();
    let mut seen: Vec<u64> = Vec::new();
    for (data, info, _, _) in &batches {
        let parity = data[0] % 2;
        let key = data[0] % 3;
        assert!(
            data.iter().all(|d| d % 2 == parity && d % 3 == key),
            "{data:?}"
        );
        assert_eq!(&*info.batcher, if parity == 0 { "even" } else { "odd" });
        assert_eq!(info.batch_key, BatchKey::Int(key));
        assert_eq!(info.size, data.len());
        assert!(data.len() <= if parity == 0 { 4 } else { 3 });
        seen.extend(data);
    }
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

/// Batches of one key run one at a time, in order, even with free batch processors (what
/// upstream's docs promise; its code runs them at once); batches without a key run on any
/// free batch processor.
#[tokio::test(start_paused = true)]
async fn batches_of_one_key_run_one_at_a_time() {
    for keyed in [true, false] {
        let probe = Probe::default()
            .on_message(move |msg, _| {
                if keyed {
                    msg.put_batch_key("k");
                }
                Ok(msg.data)
            })
            .batch_delay(|_| ms(100));
        let source = TestSource::new();
        let pipeline = Pipeline::builder("serial", probe)
            .producer(source.producer())
            .processors(one_processor())
            .batcher(Batcher::new("default").batch_size(1).concurrency(2))
            .start()
            .unwrap();
        within(5, source.push(0..4).unwrap()).await;
        let batches = pipeline.handler().batches();
        let mut starts: Vec<(u64, Duration)> = batches.iter().map(|b| (b.0[0], b.2)).collect();
        starts.sort();
        if keyed {
            assert_eq!(
                starts,
                [(0, ms(0)), (1, ms(100)), (2, ms(200)), (3, ms(300))]
            );
        } else {
            let times: Vec<Duration> = starts.iter().map(|s| s.1).collect();
            assert_eq!(times, [ms(0), ms(0), ms(100), ms(100)]);
        }
    }
}

/// `key_concurrency` lets that many batches of one key run at once.
#[tokio::test(start_paused = true)]
async fn key_concurrency_allows_that_many_at_once() {
    let probe = Probe::default()
        .on_message(|msg, _| {
            msg.put_batch_key("k");
            Ok(msg.data)
        })
        .batch_delay(|_| ms(100));
    let source = TestSource::new();
    let pipeline = Pipeline::builder("two", probe)
        .producer(source.producer())
        .processors(one_processor())
        .batcher(
            Batcher::new("default")
                .batch_size(1)
                .concurrency(3)
                .key_concurrency(2),
        )
        .start()
        .unwrap();
    within(5, source.push(0..4).unwrap()).await;
    let mut times: Vec<Duration> = pipeline.handler().batches().iter().map(|b| b.2).collect();
    times.sort();
    assert_eq!(times, [ms(0), ms(0), ms(100), ms(100)]);
}

/// With `max_open_keys`, a key that needs a batch when that many are open sends the oldest
/// open batch on (upstream keeps a batch and a timer for every key it ever saw).
#[tokio::test(start_paused = true)]
async fn opening_one_key_too_many_sends_the_oldest_on() {
    let probe = Probe::default().on_message(|msg, _| {
        msg.put_batch_key(msg.data / 10);
        Ok(msg.data)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("keys", probe)
        .producer(source.producer())
        .processors(one_processor())
        .batcher(
            Batcher::new("default")
                .batch_size(10)
                .batch_timeout(Duration::from_secs(60))
                .max_open_keys(2),
        )
        .start()
        .unwrap();
    // Keys 0, 1, 0, then 2: key 0's batch was opened first and goes.
    let first = source.push([1, 11, 2]).unwrap();
    let evicting = source.push([21]).unwrap();
    // On the paused clock, a sleep returns once every task is idle: all that could happen has.
    tokio::time::sleep(ms(1)).await;
    let batches = pipeline.handler().batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(
        (batches[0].0.clone(), batches[0].1.trigger),
        (vec![1, 2], Trigger::Evicted)
    );
    source.finish().unwrap();
    within(5, async { (first.await, evicting.await) }).await;
    let mut rest: Vec<_> = pipeline.handler().batches()[1..]
        .iter()
        .map(|b| (b.0.clone(), b.1.trigger))
        .collect();
    rest.sort();
    assert_eq!(
        rest,
        [(vec![11], Trigger::Drain), (vec![21], Trigger::Drain)]
    );
}
