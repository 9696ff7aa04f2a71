//! Acknowledgement: where messages are settled, grouped by acknowledger, each exactly once,
//! and acknowledgers that fail, panic or are called early (Broadway's rules, and what this
//! crate does where upstream loses or double-acks messages).

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ingest::{
    Acker, Action, BatchInfo, Batcher, Context, Failure, Handler, Message, Outcome, Pipeline,
    Processors, Producers, TestSource,
};
use stage::Producer;
use support::{Journal, Probe, within};

fn one_processor() -> Processors<u64> {
    Processors::new().concurrency(1).max_demand(10)
}

/// Emits `items`, each settled by the acknowledger `pick` chooses for it, then finishes.
struct TwoSources {
    items: std::collections::VecDeque<u64>,
    a: Acker,
    b: Acker,
}

impl Producer for TwoSources {
    type Out = Message<u64>;

    async fn handle_demand(
        &mut self,
        demand: usize,
        ctx: &mut stage::Context<Self>,
    ) -> Vec<Message<u64>> {
        let n = demand.min(self.items.len());
        let out = self
            .items
            .drain(..n)
            .map(|d| Message::new(d, if d % 2 == 0 { &self.a } else { &self.b }, d))
            .collect();
        if self.items.is_empty() {
            ctx.finish();
        }
        out
    }
}

fn two_sources(
    items: std::ops::Range<u64>,
    a: &Arc<Journal>,
    b: &Arc<Journal>,
) -> Producers<TwoSources> {
    Producers::single(TwoSources {
        items: items.collect(),
        a: a.acker(),
        b: b.acker(),
    })
}

fn tags(call: &[ingest::Settlement]) -> Vec<u64> {
    call.iter().map(|s| s.tag).collect()
}

/// One chunk settles with one call per acknowledger, each with its own messages in the order
/// they were handled, successes and failures together.
#[tokio::test(start_paused = true)]
async fn a_chunk_makes_one_call_per_acknowledger() {
    let (a, b) = (Journal::new(), Journal::new());
    let probe = Probe::default().on_message(|msg, _| {
        if msg.data == 3 {
            return Err(Failure::new("three"));
        }
        Ok(msg.data)
    });
    let pipeline = Pipeline::builder("groups", probe)
        .producer(two_sources(0..5, &a, &b))
        .processors(
            Processors::new()
                .concurrency(1)
                .max_demand(10)
                .min_demand(5),
        )
        .start()
        .unwrap();
    within(5, pipeline.join()).await;
    let (a, b) = (a.calls(), b.calls());
    assert_eq!(
        a.iter().map(|c| tags(c)).collect::<Vec<_>>(),
        [vec![0, 2, 4]]
    );
    assert_eq!(b.iter().map(|c| tags(c)).collect::<Vec<_>>(), [vec![1, 3]]);
    assert_eq!(b[0][1].outcome, Outcome::Nack { requeue: false });
    assert_eq!(b[0][1].reason.as_deref(), Some("three"));
}

/// An acknowledger that fails does not delay or skip the others (upstream skips the rest of
/// the call and acks them with some later call, or never); its error is counted, and its
/// messages are not offered to it again.
#[tokio::test(start_paused = true)]
async fn a_failing_acknowledger_holds_nobody_back() {
    let (a, b) = (Journal::new(), Journal::new());
    a.fail.store(true, Ordering::Relaxed);
    let pipeline = Pipeline::builder("failing", Probe::default())
        .producer(two_sources(0..4, &a, &b))
        .processors(Processors::new().concurrency(1).max_demand(2).min_demand(0))
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    // Chunks [0, 1] and [2, 3]: each acknowledger called once per chunk, with its own.
    assert_eq!(
        a.calls().iter().map(|c| tags(c)).collect::<Vec<_>>(),
        [vec![0], vec![2]]
    );
    assert_eq!(
        b.calls().iter().map(|c| tags(c)).collect::<Vec<_>>(),
        [vec![1], vec![3]]
    );
    assert_eq!(report.ack_errors, 2);
    assert_eq!(report.acked, 4);
    assert!(report.adds_up());
}

/// An acknowledger that panics is an error like any other, not a crash of the stage.
#[tokio::test(start_paused = true)]
async fn a_panicking_acknowledger_is_an_error() {
    let journal = Journal::new();
    journal.panic.store(true, Ordering::Relaxed);
    let acker = journal.acker();
    let pipeline = Pipeline::builder("panicking", Probe::default())
        .producer(support::feed(0..3, &acker))
        .processors(one_processor())
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!(report.ack_errors, 1);
    assert!(report.stopped.is_empty(), "{:?}", report.stopped);
    assert_eq!(acker.errors(), 1);
}

/// Acks early, then fails, the message given.
struct EarlyAck;

impl Handler for EarlyAck {
    type In = u64;
    type Out = u64;

    async fn handle_message(&self, msg: &mut Message<u64>, _: &Context) -> Result<u64, Failure> {
        msg.ack_now().await.map_err(Failure::from)?;
        // A second early ack is a no-op.
        msg.ack_now().await.map_err(Failure::from)?;
        assert!(!msg.is_pending());
        Err(Failure::new("failed after its early ack"))
    }
}

/// A message acked early is settled once: upstream acks it again, as failed, when the
/// handler fails it afterwards.
#[tokio::test(start_paused = true)]
async fn an_early_ack_is_the_only_one() {
    let journal = Journal::new();
    let pipeline = Pipeline::builder("early", EarlyAck)
        .producer(support::feed([5], &journal.acker()))
        .processors(one_processor())
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    let calls = journal.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0][0].outcome, Outcome::Ack);
    assert_eq!((report.acked, report.failed), (1, 0));
    assert_eq!(journal.by_tag().len(), 1);
}

/// `handle_failed` runs before the settlement and can choose each failure's outcome (the
/// book's `configure_ack(on_failure: :reject)`): here, requeue all but the closed bookings.
#[tokio::test(start_paused = true)]
async fn handle_failed_chooses_the_outcome() {
    let probe = Probe::default()
        .on_message(|msg, _| match msg.data {
            1 => Err(Failure::new("bookings-closed")),
            2 => Err(Failure::new("database down")),
            n => Ok(n),
        })
        .on_failed(|msgs| {
            for m in msgs.iter_mut() {
                let f = m.failure().unwrap().clone();
                let requeue = f.reason() != "bookings-closed";
                m.fail(f.with_action(Action::Nack { requeue }));
            }
        });
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("configure", probe)
        .producer(source.producer())
        .processors(one_processor())
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2, 3]).unwrap()).await;
    assert_eq!(
        outcomes,
        [
            Outcome::Nack { requeue: false },
            Outcome::Nack { requeue: true },
            Outcome::Ack
        ]
    );
}

/// A batch processor settles its batch in one call per acknowledger, successes and failures
/// together (successes first, then failures, each in batch order), after
/// `handle_failed_batch` has had its say.
#[tokio::test(start_paused = true)]
async fn a_batch_is_settled_in_one_call() {
    let journal = Journal::new();
    let probe = Probe::default()
        .on_batch(|msgs, _| {
            msgs[1].fail("the second one");
            Ok(())
        })
        .on_failed_batch(|msgs| {
            for m in msgs.iter_mut() {
                let f = m.failure().unwrap().clone().nack(true);
                m.fail(f);
            }
        });
    let pipeline = Pipeline::builder("batch-acks", probe)
        .producer(support::feed(0..3, &journal.acker()))
        .processors(one_processor())
        .batcher(Batcher::new("default").batch_size(3))
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    let calls = journal.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let outcomes: Vec<_> = calls[0]
        .iter()
        .map(|s| (s.tag, s.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (0, Outcome::Ack),
            (2, Outcome::Ack),
            (1, Outcome::Nack { requeue: true })
        ]
    );
    assert_eq!((report.acked, report.failed), (2, 1));
}

/// `handle_batch` borrows its messages: it cannot drop one. A message replaced in the slice
/// (and so dropped) is still settled, by its guard, as requeued; upstream never acks a
/// message missing from `handle_batch`'s return.
#[tokio::test(start_paused = true)]
async fn a_message_dropped_by_user_code_is_settled_by_its_guard() {
    let probe = Probe::default().on_batch(|msgs, _| {
        msgs[0] = Message::unacked(99);
        Ok(())
    });
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("guard", probe)
        .producer(source.producer())
        .processors(one_processor())
        .batcher(Batcher::new("default").batch_size(2))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2]).unwrap()).await;
    assert_eq!(outcomes, [Outcome::Nack { requeue: true }, Outcome::Ack]);
    assert_eq!(source.duplicates(), 0);
}

/// A message dropped unsettled is settled by its guard, on a task of its own: a failure of
/// that call is counted by its acknowledger (and logged), not in the pipeline's report.
#[tokio::test(start_paused = true)]
async fn a_guards_failing_call_is_counted_by_its_acknowledger() {
    let journal = Journal::new();
    journal.fail.store(true, Ordering::Relaxed);
    let acker = journal.acker();
    let probe = Probe::default().on_batch(|msgs, _| {
        msgs[0] = Message::unacked(99);
        Ok(())
    });
    let pipeline = Pipeline::builder("guard-fails", probe)
        .producer(support::feed(0..2, &acker))
        .processors(one_processor())
        .batcher(Batcher::new("default").batch_size(2))
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    within(5, async {
        while acker.errors() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(acker.orphaned(), 1);
    assert_eq!(acker.errors(), 2, "the batch's call and the guard's");
    assert_eq!(report.ack_errors, 1, "the batch's call only");
    let outcomes = journal.by_tag();
    assert_eq!(outcomes[&0], Outcome::Nack { requeue: true });
    assert_eq!(outcomes[&1], Outcome::Ack);
}

/// A handler that returns `Err` for the whole batch fails every message of it; one that
/// panics too, with the panic as the reason.
#[tokio::test(start_paused = true)]
async fn a_failed_batch_fails_every_message() {
    let probe = Probe::default().on_batch(|msgs, _| {
        if msgs[0].data == 0 {
            panic!("the database is gone");
        }
        Err(Failure::new("the whole batch"))
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("batch-fail", probe)
        .producer(source.producer())
        .processors(one_processor())
        .batcher(Batcher::new("default").batch_size(2))
        .start()
        .unwrap();
    let rejected = Outcome::Nack { requeue: false };
    let outcomes = within(5, source.push([0, 1]).unwrap()).await;
    assert_eq!(outcomes, [rejected.clone(), rejected.clone()]);
    let outcomes = within(5, source.push([2, 3]).unwrap()).await;
    assert_eq!(outcomes, [rejected.clone(), rejected]);
    source.finish().unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!((report.failed, report.acked), (4, 0));
    assert!(report.stopped.is_empty());
}

/// Emits everything it is given at once, whatever the demand: the surplus waits in its
/// buffer.
struct Eager {
    acker: Acker,
}

struct Burst(std::ops::Range<u64>);

impl Producer for Eager {
    type Out = Message<u64>;
}

impl stage::Cast<Burst> for Eager {
    async fn handle_cast(&mut self, Burst(range): Burst, ctx: &mut stage::Context<Self>) {
        ctx.emit(range.map(|d| Message::new(d, &self.acker, d)).collect());
    }
}

/// Messages a producer holds when it is stopped (emitted beyond demand, never sent) are
/// given back to their source, requeued, and counted as unprocessed; nothing else is lost.
#[tokio::test(start_paused = true)]
async fn what_a_stopped_producer_held_is_given_back() {
    let journal = Journal::new();
    let probe = Probe::default().message_delay(|_| Duration::from_millis(100));
    let pipeline = Pipeline::builder("held", probe)
        .producer(Producers::single(Eager {
            acker: journal.acker(),
        }))
        .processors(Processors::new().concurrency(1).max_demand(2).min_demand(1))
        .start()
        .unwrap();
    let producer = pipeline.producer::<Eager>(0).unwrap();
    producer.cast(Burst(0..50)).unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let report = within(10, pipeline.shutdown(Duration::from_secs(5))).await;
    assert!(!report.timed_out);
    assert!(report.adds_up(), "{report:?}");
    assert_eq!(report.processed + report.unprocessed, 50, "{report:?}");
    assert!(report.unprocessed > 0);
    let settled = journal.by_tag();
    assert_eq!(settled.len(), 50);
    let requeued = settled
        .values()
        .filter(|o| **o == Outcome::Nack { requeue: true })
        .count();
    assert_eq!(requeued as u64, report.unprocessed);
}

/// Upstream's BatchInfo: batcher, key, partition, size and trigger.
#[tokio::test(start_paused = true)]
async fn batch_info_describes_the_batch() {
    let probe = Probe::default();
    let source = TestSource::new();
    let pipeline = Pipeline::builder("info", probe)
        .producer(source.producer())
        .processors(one_processor())
        .batcher(Batcher::new("default").batch_size(2))
        .start()
        .unwrap();
    within(5, source.push([1, 2]).unwrap()).await;
    let batches = pipeline.handler().batches();
    let info: &BatchInfo = &batches[0].1;
    assert_eq!(&*info.batcher, "default");
    assert_eq!(info.batch_key, ingest::BatchKey::Default);
    assert_eq!(info.partition, None);
    assert_eq!(info.size, 2);
    assert_eq!(info.trigger, ingest::Trigger::Size);
}
