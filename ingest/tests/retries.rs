//! Beyond Broadway: per-message outcomes, retries with backoff in the processors and the
//! batchers, and the dead-letter sink (upstream leaves all of it to the broker).

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ingest::{
    Backoff, Batcher, Context, Failure, Handler, Message, Outcome, Pipeline, Processors,
    RetryPolicy, TestSource,
};
use support::{Journal, Morgue, Probe, feed, within};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn retrying(attempts: u32, backoff: Backoff) -> Processors<u64> {
    Processors::new()
        .concurrency(1)
        .retry(RetryPolicy::new(attempts).backoff(backoff))
}

/// A message that fails is tried again after the backoff (100 ms, then 200 ms), and settles
/// once, as acked, when it succeeds.
#[tokio::test(start_paused = true)]
async fn a_failed_message_is_retried_with_backoff() {
    let probe = Probe::default().on_message(|msg, _| {
        if msg.data == 1 && msg.attempt() < 3 {
            return Err(Failure::new("not yet"));
        }
        Ok(msg.data)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("retry", probe)
        .producer(source.producer())
        .processors(retrying(5, Backoff::exponential(ms(100))))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2]).unwrap()).await;
    assert_eq!(outcomes, [Outcome::Ack, Outcome::Ack]);
    let tries: Vec<(u64, u32, Duration)> = pipeline
        .handler()
        .messages()
        .into_iter()
        .filter(|m| m.1 == 1)
        .map(|m| (m.1, m.2, m.3))
        .collect();
    assert_eq!(tries, [(1, 1, ms(0)), (1, 2, ms(100)), (1, 3, ms(300))]);
    assert_eq!(pipeline.stats().retried, 2);
    assert_eq!(source.duplicates(), 0);
}

/// Out of attempts, a message goes to the dead-letter sink, which learns why and after how
/// many attempts; its source hears `DeadLetter`.
#[tokio::test(start_paused = true)]
async fn out_of_attempts_a_message_is_dead_lettered() {
    let morgue = Arc::new(Morgue::default());
    let probe = Probe::default().on_message(|_, _| Err(Failure::new("always")));
    let source = TestSource::new();
    let pipeline = Pipeline::builder("dlq", probe)
        .producer(source.producer())
        .processors(retrying(3, Backoff::fixed(ms(10))))
        .dead_letters(Arc::clone(&morgue))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([7]).unwrap()).await;
    let reason = "gave up after 3 attempts: always";
    assert_eq!(
        outcomes,
        [Outcome::DeadLetter {
            reason: Arc::from(reason)
        }]
    );
    let letters = morgue.letters.lock().unwrap().clone();
    assert_eq!(
        letters,
        [(7, reason.to_string(), 3, "dlq.processor.0".to_string())]
    );
    let report = pipeline.stats();
    assert_eq!(
        (report.retried, report.failed, report.dead_lettered),
        (2, 1, 1)
    );
}

/// Without a sink, a message out of attempts is rejected.
#[tokio::test(start_paused = true)]
async fn out_of_attempts_without_a_sink_a_message_is_rejected() {
    let probe = Probe::default().on_message(|_, _| Err(Failure::new("always")));
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("reject", probe)
        .producer(source.producer())
        .processors(retrying(2, Backoff::fixed(ms(10))))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([7]).unwrap()).await;
    assert_eq!(outcomes, [Outcome::Nack { requeue: false }]);
}

/// A failure that asks for something else is not retried: a nack with requeue goes back to
/// its source, a dead letter straight to the sink (or, without one, to its source as such).
#[tokio::test(start_paused = true)]
async fn an_explicit_outcome_skips_the_retries() {
    for with_sink in [true, false] {
        let morgue = Arc::new(Morgue::default());
        let probe = Probe::default().on_message(|msg, _| match msg.data {
            1 => Err(Failure::new("later").nack(true)),
            2 => Err(Failure::new("poison").dead_letter()),
            n => Ok(n),
        });
        let source = TestSource::new();
        let mut builder = Pipeline::builder("explicit", probe)
            .producer(source.producer())
            .processors(retrying(5, Backoff::fixed(ms(10))));
        if with_sink {
            builder = builder.dead_letters(Arc::clone(&morgue));
        }
        let pipeline = builder.start().unwrap();
        let outcomes = within(5, source.push([1, 2, 3]).unwrap()).await;
        assert_eq!(
            outcomes,
            [
                Outcome::Nack { requeue: true },
                Outcome::DeadLetter {
                    reason: Arc::from("poison")
                },
                Outcome::Ack
            ]
        );
        assert_eq!(pipeline.stats().retried, 0);
        assert_eq!(morgue.letters.lock().unwrap().len(), usize::from(with_sink));
    }
}

/// Without a retry policy, a failure that asks for a retry is handed to its source, to
/// redeliver after the wait asked for.
#[tokio::test(start_paused = true)]
async fn a_retry_without_a_policy_goes_back_to_the_source() {
    let probe = Probe::default()
        .on_message(|_, _| Err(Failure::new("busy").retry_after(Duration::from_secs(5))));
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("redeliver", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1]).unwrap()).await;
    assert_eq!(
        outcomes,
        [Outcome::Retry {
            after: Duration::from_secs(5)
        }]
    );
}

/// A sink that fails does not lose its messages: they are requeued with their source, and
/// the failure is counted.
#[tokio::test(start_paused = true)]
async fn a_failing_sink_requeues() {
    let morgue = Arc::new(Morgue::default());
    morgue.fail.store(true, Ordering::Relaxed);
    let probe = Probe::default().on_message(|_, _| Err(Failure::new("poison").dead_letter()));
    let source = TestSource::new();
    let pipeline = Pipeline::builder("full-morgue", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .dead_letters(Arc::clone(&morgue))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2]).unwrap()).await;
    assert_eq!(outcomes, vec![Outcome::Nack { requeue: true }; 2]);
    assert_eq!(pipeline.stats().dead_letter_errors, 1);
}

/// A message a batch failed is retried in a later batch, after its backoff, and settled once.
#[tokio::test(start_paused = true)]
async fn a_message_failed_in_a_batch_joins_a_later_batch() {
    let probe = Probe::default().on_batch(|msgs, _| {
        for m in msgs.iter_mut() {
            if m.data == 2 && m.attempt() == 1 {
                m.fail("the row was locked");
            }
        }
        Ok(())
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("batch-retry", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .batcher(
            Batcher::new("default")
                .batch_size(3)
                .batch_timeout(ms(50))
                .retry(RetryPolicy::new(3).backoff(Backoff::fixed(ms(100)))),
        )
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2, 3]).unwrap()).await;
    assert_eq!(outcomes, vec![Outcome::Ack; 3]);
    let batches: Vec<(Vec<u64>, Duration)> = pipeline
        .handler()
        .batches()
        .into_iter()
        .map(|b| (b.0, b.2))
        .collect();
    // The retry arrives 100 ms later and waits for its batch's timeout, 50 ms.
    assert_eq!(batches, [(vec![1, 2, 3], ms(0)), (vec![2], ms(150))]);
    assert_eq!(pipeline.stats().retried, 1);
}

/// With jitter, each wait is the backoff less up to that share of it, and differs between
/// messages.
#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_waits() {
    let probe = Probe::default().on_message(|msg, _| {
        if msg.attempt() == 1 {
            return Err(Failure::new("first try"));
        }
        Ok(msg.data)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("jitter", probe)
        .producer(source.producer())
        .processors(retrying(2, Backoff::fixed(ms(100)).jitter(0.5)))
        .start()
        .unwrap();
    within(5, source.push(0..8).unwrap()).await;
    let retried: Vec<Duration> = pipeline
        .handler()
        .messages()
        .into_iter()
        .filter(|m| m.2 == 2)
        .map(|m| m.3)
        .collect();
    assert_eq!(retried.len(), 8);
    assert!(
        retried.iter().all(|t| *t >= ms(50) && *t <= ms(100)),
        "{retried:?}"
    );
    let mut distinct = retried.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "{retried:?}");
}

/// A probe whose batches fail message 1 on its first attempt.
fn fail_one_once() -> Probe {
    Probe::default().on_batch(|msgs, _| {
        for m in msgs.iter_mut() {
            if m.data == 1 && m.attempt() == 1 {
                m.fail("the row was locked");
            }
        }
        Ok(())
    })
}

/// Once the processors are done, every open batch goes at once, and so does one that a retry
/// coming back opens afterwards: a finite pipeline whose batch retries a message ends when the
/// retry's backoff (100 ms) is over, not after the batch timeout (an hour).
#[tokio::test(start_paused = true)]
async fn a_batch_retry_after_the_processors_finished_goes_at_once() {
    let journal = Journal::new();
    let pipeline = Pipeline::builder("late-retry", fail_one_once())
        .producer(feed(0..3, &journal.acker()))
        .processors(Processors::new().concurrency(1))
        .batcher(
            Batcher::new("default")
                .batch_size(10)
                .batch_timeout(Duration::from_secs(3600))
                .retry(RetryPolicy::new(3).backoff(Backoff::fixed(ms(100)))),
        )
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!((report.processed, report.acked), (3, 3), "{report:?}");
}

/// A handler that acks every message early and then fails it for good.
struct AckThenFail;

impl Handler for AckThenFail {
    type In = u64;
    type Out = u64;

    async fn handle_message(&self, msg: &mut Message<u64>, _: &Context) -> Result<u64, Failure> {
        msg.ack_now().await.unwrap();
        Err(Failure::new("broken after the early ack"))
    }
}

/// A message acked early with `ack_now` is settled for good: when its handler then fails it
/// for good, it is not sent to the dead-letter sink, and it counts once, as acked.
#[tokio::test(start_paused = true)]
async fn a_message_acked_early_is_not_dead_lettered() {
    let morgue = Arc::new(Morgue::default());
    let source = TestSource::new();
    let pipeline = Pipeline::builder("early-dlq", AckThenFail)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .dead_letters(Arc::clone(&morgue))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([7u64]).unwrap()).await;
    assert_eq!(outcomes, vec![Outcome::Ack]);
    let report = within(5, pipeline.shutdown(Duration::from_secs(5))).await;
    let letters = morgue.letters.lock().unwrap().clone();
    assert!(
        letters.is_empty() && report.dead_lettered == 0,
        "an acked message went to the dead-letter sink: {letters:?} {report:?}"
    );
}

/// A dead-letter sink that never answers.
struct DeafSink;

impl ingest::DeadLetterSink<u64> for DeafSink {
    async fn dead_letter(&self, _: Vec<ingest::DeadLetter<u64>>) -> Result<(), ingest::AckError> {
        std::future::pending().await
    }
}

/// A dead-letter sink still waited for when the shutdown deadline passes is given up on, like
/// any other user call: its messages are requeued and the processor ends.
#[tokio::test(start_paused = true)]
async fn a_sink_that_never_answers_is_given_up_at_the_deadline() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder(
        "deaf-sink",
        Probe::default().on_message(|_, _| Err(Failure::new("poison"))),
    )
    .producer(source.producer())
    .processors(Processors::new().concurrency(1))
    .dead_letters(DeafSink)
    .start()
    .unwrap();
    let outcomes = source.push([1u64]).unwrap();
    tokio::time::sleep(ms(10)).await;
    let report = within(60, pipeline.shutdown(Duration::from_secs(5))).await;
    assert_eq!(within(5, outcomes).await, [Outcome::Nack { requeue: true }]);
    assert!(report.timed_out, "{report:?}");
    assert!(report.stuck.is_empty(), "{report:?}");
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.dead_letter_errors, 1);
}
