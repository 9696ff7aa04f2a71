//! Ending a pipeline: finite producers end it normally; `shutdown` drains it in order, within
//! a deadline, and returns a report that adds up; many pipelines shut down at once all drain.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use ingest::{
    Backoff, Batcher, Context, Failure, Handler, Message, Outcome, Pipeline, Processors,
    RetryPolicy, TestSource, Trigger,
};
use support::{Journal, Probe, feed, within};
use tokio::time::Instant;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A finite producer ends the pipeline normally: every stage stops, nothing is stuck or
/// abnormal, and the report adds up (upstream restarts a finished producer until the pipeline
/// gives up).
#[tokio::test(start_paused = true)]
async fn a_finite_producer_ends_the_pipeline_normally() {
    let journal = Journal::new();
    let pipeline = Pipeline::builder("finite", Probe::default())
        .producer(feed(0..250, &journal.acker()))
        .processors(Processors::new().concurrency(2))
        .batcher(
            Batcher::new("default")
                .batch_size(100)
                .batch_timeout(secs(60)),
        )
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert!(!pipeline.is_running());
    assert_eq!((report.processed, report.acked), (250, 250));
    assert!(report.adds_up());
    assert!(
        report.stopped.is_empty() && report.stuck.is_empty(),
        "{report:?}"
    );
    assert!(!report.timed_out);
    assert_eq!(journal.by_tag().len(), 250);
    // It took no time: the last, partial batch did not wait for its timeout.
    let batches = pipeline.handler().batches();
    assert_eq!(batches.last().unwrap().1.trigger, Trigger::Drain);
    assert_eq!(batches.last().unwrap().3, Duration::ZERO);
}

/// Shutting down stops intake, lets the processors finish what they hold, flushes the open
/// batch and settles everything before returning, well before the deadline. What the
/// producer still held is given back to its source.
#[tokio::test(start_paused = true)]
async fn shutdown_drains_in_order() {
    let probe = Probe::default().message_delay(|_| Duration::from_millis(10));
    let source = TestSource::new();
    let pipeline = Pipeline::builder("drain", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(2).max_demand(4))
        .batcher(
            Batcher::new("default")
                .batch_size(100)
                .batch_timeout(secs(60)),
        )
        .start()
        .unwrap();
    let outcomes = source.push(0..100).unwrap();
    tokio::time::sleep(Duration::from_millis(45)).await;
    let started = Instant::now();
    let report = within(5, pipeline.shutdown(secs(30))).await;
    assert!(started.elapsed() < secs(1), "{:?}", started.elapsed());
    assert!(!report.timed_out);
    assert!(report.adds_up(), "{report:?}");
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.processed + report.unprocessed, 100, "{report:?}");
    assert!(report.processed > 0 && report.unprocessed > 0, "{report:?}");
    let outcomes = within(5, outcomes).await;
    let acked = outcomes.iter().filter(|o| o.is_ack()).count() as u64;
    let requeued = outcomes
        .iter()
        .filter(|o| **o == Outcome::Nack { requeue: true })
        .count() as u64;
    assert_eq!((acked, requeued), (report.processed, report.unprocessed));
    // What was handled went out in one flushed batch, in order per processor.
    let batches = pipeline.handler().batches();
    assert!(
        batches.iter().all(|b| b.1.trigger == Trigger::Drain),
        "{batches:?}"
    );
    assert_eq!(
        batches.iter().map(|b| b.0.len() as u64).sum::<u64>(),
        report.processed
    );
    assert_eq!(source.duplicates(), 0);
}

/// `shutdown` is idempotent: callers at the same time, and later ones, get the same report.
#[tokio::test(start_paused = true)]
async fn shutdown_is_idempotent() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("twice", Probe::default())
        .producer(source.producer())
        .batcher(Batcher::new("default").batch_timeout(secs(60)))
        .start()
        .unwrap();
    let pushed = source.push(0..10).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let other = pipeline.clone();
    let (a, b) = tokio::join!(pipeline.shutdown(secs(5)), other.shutdown(secs(1)));
    let c = pipeline.shutdown(secs(5)).await;
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.acked, 10);
    assert_eq!(within(1, pushed).await, vec![Outcome::Ack; 10]);
    assert_eq!(pipeline.join().await, a);
}

/// Upstream issue 362: shutting many pipelines down at once left about half of them
/// undrained. Here every one drains: each flushes its open batch and settles everything.
#[tokio::test(start_paused = true)]
async fn many_pipelines_shut_down_at_once_all_drain() {
    let mut running = Vec::new();
    for i in 0..60 {
        let source = TestSource::new();
        let pipeline = Pipeline::builder(format!("many-{i}"), Probe::default())
            .producer(source.producer())
            .processors(Processors::new().concurrency(2))
            .batcher(
                Batcher::new("default")
                    .batch_size(1000)
                    .batch_timeout(secs(3600)),
            )
            .start()
            .unwrap();
        let outcomes = source.push(0..(i as u64 + 1)).unwrap();
        running.push((pipeline, outcomes, i as u64 + 1));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let reports = within(
        10,
        join_all(running.iter().map(|(p, _, _)| p.shutdown(secs(30)))),
    )
    .await;
    for ((pipeline, outcomes, n), report) in running.into_iter().zip(reports) {
        assert_eq!(report.acked, n, "{}: {report:?}", pipeline.name());
        assert!(!report.timed_out && report.adds_up());
        assert_eq!(within(1, outcomes).await, vec![Outcome::Ack; n as usize]);
        let batches = pipeline.handler().batches();
        assert!(batches.iter().all(|b| b.1.trigger == Trigger::Drain));
    }
}

/// Waits for ever on message 0, handles the others at once.
struct Stuck {
    handled: AtomicU64,
}

impl Handler for Stuck {
    type In = u64;
    type Out = u64;

    async fn handle_message(&self, msg: &mut Message<u64>, _: &Context) -> Result<u64, Failure> {
        if msg.data == 0 {
            std::future::pending::<()>().await;
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(msg.data)
    }
}

/// When the deadline passes, the stages give up: the call that does not return is dropped,
/// and what they hold is given back to its source (abandoned). The report says so, adds up,
/// and comes within the deadline and the grace.
#[tokio::test(start_paused = true)]
async fn past_the_deadline_what_is_left_is_abandoned() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder(
        "stuck",
        Stuck {
            handled: AtomicU64::new(0),
        },
    )
    .producer(source.producer())
    .processors(Processors::new().concurrency(1).max_demand(10))
    .start()
    .unwrap();
    let outcomes = source.push(0..4).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let started = Instant::now();
    let report = within(10, pipeline.shutdown(secs(2))).await;
    let took = started.elapsed();
    assert!(
        took >= secs(2) && took <= secs(2) + ingest::KILL_GRACE,
        "{took:?}"
    );
    assert!(report.timed_out);
    assert!(report.adds_up(), "{report:?}");
    assert_eq!((report.processed, report.abandoned), (4, 4), "{report:?}");
    assert!(report.stuck.is_empty(), "{report:?}");
    assert_eq!(pipeline.handler().handled.load(Ordering::Relaxed), 0);
    let outcomes = within(1, outcomes).await;
    assert_eq!(outcomes, vec![Outcome::Nack { requeue: true }; 4]);
}

/// Messages waiting for a retry when the pipeline shuts down are handed back to their source
/// to retry (after what was left of their wait), not waited for.
#[tokio::test(start_paused = true)]
async fn retries_pending_at_shutdown_are_handed_back() {
    let probe = Probe::default().on_message(|msg, _| {
        if msg.data == 1 {
            return Err(Failure::new("not yet"));
        }
        Ok(msg.data)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("retry-at-shutdown", probe)
        .producer(source.producer())
        .processors(
            Processors::new()
                .concurrency(1)
                .retry(RetryPolicy::new(5).backoff(Backoff::fixed(secs(10)))),
        )
        .start()
        .unwrap();
    let outcomes = source.push([1, 2]).unwrap();
    tokio::time::sleep(secs(4)).await;
    let report = within(5, pipeline.shutdown(secs(30))).await;
    assert_eq!(
        within(1, outcomes).await,
        [Outcome::Retry { after: secs(6) }, Outcome::Ack]
    );
    assert_eq!((report.acked, report.failed, report.retried), (1, 1, 1));
    assert!(report.adds_up());
}

/// A shutdown after the pipeline ended on its own returns the report it ended with.
#[tokio::test(start_paused = true)]
async fn shutting_down_an_ended_pipeline_returns_its_report() {
    let journal = Journal::new();
    let pipeline = Pipeline::builder("ended", Probe::default())
        .producer(feed(0..3, &journal.acker()))
        .start()
        .unwrap();
    let ended = within(5, pipeline.join()).await;
    assert_eq!(within(5, pipeline.shutdown(secs(1))).await, ended);
}

/// A pipeline whose handles are all dropped goes on until its producers finish.
#[tokio::test(start_paused = true)]
async fn dropping_the_handle_does_not_stop_the_pipeline() {
    let journal = Journal::new();
    let acker = journal.acker();
    let probe = Probe::default().message_delay(|_| Duration::from_millis(5));
    drop(
        Pipeline::builder("orphan", probe)
            .producer(feed(0..20, &acker))
            .start()
            .unwrap(),
    );
    tokio::time::sleep(secs(5)).await;
    assert_eq!(journal.by_tag().len(), 20);
    let _ = Arc::clone(&journal);
}

/// An acknowledger whose calls never answer, and that says when it is first called.
struct NeverAnswers(std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>);

impl ingest::Acknowledger for NeverAnswers {
    async fn ack(&self, _: Vec<ingest::Settlement>) -> Result<(), ingest::AckError> {
        if let Some(called) = self.0.lock().unwrap().take() {
            let _ = called.send(());
        }
        std::future::pending().await
    }
}

/// A shutdown waits for the messages dropped unsettled on its own runtime only: an orphan
/// whose acknowledger never answers, on another runtime, does not hold it up by a moment.
#[tokio::test(start_paused = true)]
async fn a_shutdown_does_not_wait_for_another_runtimes_orphans() {
    let (called, was_called) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let elsewhere = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let acker = ingest::Acker::new(NeverAnswers(std::sync::Mutex::new(Some(called))));
            drop(Message::new(0u64, &acker, 1));
            let _ = stopped.await;
        });
    });
    was_called
        .recv_timeout(Duration::from_secs(10))
        .expect("the other runtime's orphan reached its acknowledger");

    let journal = Journal::new();
    let pipeline = Pipeline::builder("own-orphans", Probe::default())
        .producer(feed(0..3, &journal.acker()))
        .start()
        .unwrap();
    let started = Instant::now();
    let report = within(5, pipeline.join()).await;
    assert!(
        started.elapsed() < ingest::KILL_GRACE,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.acked, 3);
    let _ = stop.send(());
    elsewhere.join().unwrap();
}
