//! User code that panics before it returns its future (a plain `fn ... -> impl Future`, which
//! the traits allow, doing its work up front): the panic fails the work it was given, as a
//! panic while the future runs does, never the stage, and every message is still settled.

mod support;

use std::time::Duration;

use ingest::{
    Batcher, Context, Failure, Handler, Message, Outcome, Pipeline, Processors, TestSource,
};
use support::{Journal, Probe, within};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// An acknowledger written as a plain `fn` returning a future (the trait allows it) that
/// refuses tag 0 by panicking before it returns its future.
struct SyncPanicAck;

impl ingest::Acknowledger for SyncPanicAck {
    #[allow(clippy::manual_async_fn)]
    fn ack(
        &self,
        settled: Vec<ingest::Settlement>,
    ) -> impl std::future::Future<Output = Result<(), ingest::AckError>> + Send {
        if settled.iter().any(|s| s.tag == 0) {
            panic!("the broker connection is gone");
        }
        std::future::ready(Ok(()))
    }
}

/// An acknowledger that panics before it returns its future is an error like any other: it
/// holds no other acknowledger back (the message of the good one in the same chunk is
/// acked), and the processor goes on.
#[tokio::test(start_paused = true)]
async fn an_acknowledger_panicking_before_its_future_holds_no_other_back() {
    let bad = ingest::Acker::new(SyncPanicAck);
    let journal = Journal::new();
    let good = journal.acker();
    let messages = vec![Message::new(0u64, &bad, 0), Message::new(1u64, &good, 1)];
    let pipeline = Pipeline::builder("sync-ack-panic", Probe::default())
        .producer(ingest::Producers::single(stage::IterProducer::new(
            messages.into_iter(),
        )))
        .processors(Processors::new().concurrency(1))
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!(
        journal.by_tag().get(&1),
        Some(&Outcome::Ack),
        "the good acknowledger never heard of tag 1: {:?} {report:?}",
        journal.calls()
    );
    assert!(report.stopped.is_empty(), "{report:?}");
    assert!(report.adds_up(), "{report:?}");
}

/// A handler whose `handle_batch` is a plain `fn` returning a future, and panics on the batch
/// holding 1 before it returns its future.
struct SyncPanicBatch;

impl Handler for SyncPanicBatch {
    type In = u64;
    type Out = u64;

    async fn handle_message(&self, msg: &mut Message<u64>, _: &Context) -> Result<u64, Failure> {
        Ok(msg.data)
    }

    #[allow(clippy::manual_async_fn)]
    fn handle_batch(
        &self,
        messages: &mut [Message<u64>],
        _: &ingest::BatchInfo,
        _: &Context,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
        assert!(messages[0].data != 1, "bad row");
        std::future::ready(Ok(()))
    }
}

/// A `handle_batch` that panics before it returns its future fails its batch
/// (`Nack { requeue: false }`), not the batch processor: the next batch is handled.
#[tokio::test(start_paused = true)]
async fn a_handle_batch_panicking_before_its_future_fails_only_its_batch() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("sync-batch-panic", SyncPanicBatch)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1))
        .batcher(Batcher::new("default").batch_size(1))
        .start()
        .unwrap();
    let first = within(5, source.push([1u64]).unwrap()).await;
    let second = tokio::time::timeout(secs(5), source.push([2u64]).unwrap()).await;
    let report = within(30, pipeline.shutdown(secs(5))).await;
    assert_eq!(first, vec![Outcome::Nack { requeue: false }], "{report:?}");
    assert_eq!(second.ok(), Some(vec![Outcome::Ack]), "{report:?}");
    assert!(report.stopped.is_empty(), "{report:?}");
}

/// A dead-letter sink written as a plain `fn` that panics before it returns its future.
struct SyncPanicSink;

impl ingest::DeadLetterSink<u64> for SyncPanicSink {
    #[allow(clippy::manual_async_fn)]
    fn dead_letter(
        &self,
        _: Vec<ingest::DeadLetter<u64>>,
    ) -> impl std::future::Future<Output = Result<(), ingest::AckError>> + Send {
        panic!("the dead-letter queue is not configured");
        #[allow(unreachable_code)]
        std::future::ready(Ok(()))
    }
}

/// A dead-letter sink that panics before it returns its future has failed, and its messages are
/// requeued, as with any failure of the sink.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_sink_panicking_before_its_future_requeues_its_messages() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder(
        "sync-sink-panic",
        Probe::default().on_message(|_, _| Err(Failure::new("poison"))),
    )
    .producer(source.producer())
    .processors(Processors::new().concurrency(1))
    .dead_letters(SyncPanicSink)
    .start()
    .unwrap();
    let outcomes = tokio::time::timeout(secs(5), source.push([1u64]).unwrap()).await;
    let report = within(30, pipeline.shutdown(secs(5))).await;
    assert_eq!(
        outcomes.ok(),
        Some(vec![Outcome::Nack { requeue: true }]),
        "settled: {} {report:?}",
        source.settled()
    );
}
