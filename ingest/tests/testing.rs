//! The test source: each push's outcomes as one future, flush mode, and runs that repeat
//! exactly on the paused clock (upstream's test messages give one ack message per chunk or
//! batch, which tests must count).

mod support;

use std::time::Duration;

use ingest::{BatchKey, Batcher, Outcome, Pipeline, Processors, TestSource, Trigger, Value};
use support::{Probe, within};

/// Seven messages under the default demand are handled in chunks of 5 and 2 (and batched
/// apart), yet a push's outcomes arrive together, in push order.
#[tokio::test(start_paused = true)]
async fn a_push_resolves_once_with_every_outcome() {
    let probe = Probe::default().on_message(|msg, _| {
        if msg.data == 6 {
            return Err(ingest::Failure::new("six"));
        }
        Ok(msg.data)
    });
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("together", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(10))
        .batcher(
            Batcher::new("default")
                .batch_size(3)
                .batch_timeout(Duration::from_millis(10)),
        )
        .start()
        .unwrap();
    let outcomes = within(5, source.push(0..7).unwrap()).await;
    let mut expected = vec![Outcome::Ack; 7];
    expected[6] = Outcome::Nack { requeue: false };
    assert_eq!(outcomes, expected);
    assert_eq!(source.settled(), 7);
    assert_eq!(source.duplicates(), 0);
}

/// Flush mode sends each pushed run's batch on at once: a test need not wait an hour for a
/// batch timeout.
#[tokio::test(start_paused = true)]
async fn flush_mode_does_not_wait_for_the_timeout() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("flushing", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .batcher(
            Batcher::new("default")
                .batch_size(100)
                .batch_timeout(Duration::from_secs(3600)),
        )
        .start()
        .unwrap();
    let started = tokio::time::Instant::now();
    let outcomes = within(5, source.push_flush([1, 2, 3]).unwrap()).await;
    assert_eq!(outcomes, vec![Outcome::Ack; 3]);
    assert_eq!(started.elapsed(), Duration::ZERO);
    let batches = pipeline.handler().batches();
    assert_eq!(batches[0].1.trigger, Trigger::Flush);
}

/// `push_with` sets each message up: its metadata, batch key, batcher.
#[tokio::test(start_paused = true)]
async fn push_with_sets_each_message_up() {
    let probe = Probe::default().on_message(|msg, _| {
        let user = msg.metadata().get("user").and_then(Value::as_u64).unwrap();
        Ok(msg.data * 100 + user)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("setup", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .batcher(Batcher::new("default").batch_size(2))
        .start()
        .unwrap();
    let mut user = 0;
    let outcomes = source
        .push_with([1, 2], |msg| {
            user += 1;
            msg.metadata_mut().insert("user", user as u64);
            msg.put_batch_key("k");
        })
        .unwrap();
    assert_eq!(within(5, outcomes).await, vec![Outcome::Ack; 2]);
    let batches = pipeline.handler().batches();
    assert_eq!(batches[0].0, [101, 202]);
    assert_eq!(batches[0].1.batch_key, BatchKey::from("k"));
}

/// Pushing before the pipeline starts, or after it ended, is an error, not a message lost.
#[tokio::test(start_paused = true)]
async fn pushing_to_a_source_that_is_not_running_is_an_error() {
    let source = TestSource::<u64>::new();
    assert!(source.push([1]).is_err());
    let pipeline = Pipeline::builder("closed", Probe::default())
        .producer(source.producer())
        .start()
        .unwrap();
    within(5, pipeline.shutdown(Duration::from_secs(1))).await;
    assert!(source.push([1]).is_err());
    assert!(source.finish().is_err());
}

/// The same run twice, on the paused clock, makes the same calls, on the same stages, at the
/// same (virtual) times.
#[tokio::test(start_paused = true)]
async fn runs_repeat_exactly_on_the_paused_clock() {
    /// The calls, with each batch's instants made relative (runs start at different times).
    async fn run() -> Vec<String> {
        let probe = Probe::default()
            .message_delay(|d| Duration::from_millis(d % 7))
            .batch_delay(|d| Duration::from_millis(d % 5))
            .on_message(|msg, _| {
                msg.put_batch_key(msg.data % 3);
                if msg.data % 11 == 0 && msg.attempt() == 1 {
                    return Err(ingest::Failure::new("retry me"));
                }
                Ok(msg.data)
            });
        let source = TestSource::new();
        let pipeline = Pipeline::builder("repeat", probe)
            .producer(source.producer())
            .processors(
                Processors::new()
                    .concurrency(3)
                    .max_demand(4)
                    .retry(ingest::RetryPolicy::new(2)),
            )
            .batcher(
                Batcher::new("default")
                    .batch_size(4)
                    .concurrency(2)
                    .batch_timeout(Duration::from_millis(30)),
            )
            .start()
            .unwrap();
        let outcomes = source.push(0..60).unwrap();
        within(30, outcomes).await;
        within(5, pipeline.shutdown(Duration::from_secs(5))).await;
        let start = pipeline.handler().start;
        pipeline
            .handler()
            .calls()
            .into_iter()
            .map(|call| match call {
                support::Call::Batch {
                    stage,
                    data,
                    info,
                    start: s,
                    end,
                } => format!(
                    "batch {stage} {data:?} {} {:?} opened {:?} closed {:?} ran {s:?}..{end:?}",
                    info.batch_key,
                    info.trigger,
                    info.opened_at - start,
                    info.closed_at - start,
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }
    let first = run().await;
    let second = run().await;
    assert!(first.len() > 60);
    assert_eq!(first, second);
}
