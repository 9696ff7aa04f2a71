//! Faults outside the handler: a producer that crashes, and many pipelines shutting down at
//! once on a multi-thread runtime. Every message is still settled exactly once.

mod support;

use std::time::Duration;

use futures::future::join_all;
use ingest::{Batcher, Message, Outcome, Pipeline, Processors, Producers, TestSource};
use stage::{Cast, Context, Producer};
use support::{Journal, Probe, within};

/// Emits what it is told to at once, whatever the demand (the surplus waits in its buffer),
/// and panics when told to.
struct Fragile {
    acker: ingest::Acker,
}

struct Burst(std::ops::Range<u64>);
struct Crash;

impl Producer for Fragile {
    type Out = Message<u64>;
}

impl Cast<Burst> for Fragile {
    async fn handle_cast(&mut self, Burst(range): Burst, ctx: &mut Context<Self>) {
        ctx.emit(range.map(|d| Message::new(d, &self.acker, d)).collect());
    }
}

impl Cast<Crash> for Fragile {
    async fn handle_cast(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("the broker connection is gone");
    }
}

/// A producer that panics takes nothing down with it: the messages its processors received
/// are handled and acked, the ones it still held are given back to their source (requeued, so
/// the broker delivers them again), and the pipeline goes on with its other producers until
/// they finish. The report names the producer that stopped. (Upstream restarts the producer and
/// loses what it held, un-acked.)
#[tokio::test(start_paused = true)]
async fn a_crashing_producer_loses_nothing() {
    std::panic::set_hook(Box::new(|_| {}));
    let journal = Journal::new();
    let source = TestSource::new();
    let probe = Probe::default().message_delay(|_| Duration::from_millis(10));
    let pipeline = Pipeline::builder("fragile", probe)
        .producer(
            Producers::single(Fragile {
                acker: journal.acker(),
            })
            .name("fragile"),
        )
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(4).min_demand(2))
        .batcher(Batcher::new("default").batch_size(5))
        .start()
        .unwrap();
    let fragile = pipeline.producer::<Fragile>(0).unwrap();
    fragile.cast(Burst(0..40)).unwrap();
    tokio::time::sleep(Duration::from_millis(45)).await;
    fragile.cast(Crash).unwrap();
    within(5, fragile.join()).await;
    // The pipeline goes on with the test source.
    let pushed = within(5, source.push(100..110).unwrap()).await;
    assert_eq!(pushed, vec![Outcome::Ack; 10]);
    source.finish().unwrap();
    let report = within(10, pipeline.join()).await;
    let _ = std::panic::take_hook();

    let settled = journal.by_tag();
    assert_eq!(
        settled.len(),
        40,
        "every message of the crashed producer is settled once"
    );
    let acked = settled.values().filter(|o| o.is_ack()).count();
    let requeued = settled
        .values()
        .filter(|o| **o == Outcome::Nack { requeue: true })
        .count();
    assert_eq!(acked + requeued, 40, "{settled:?}");
    assert!(
        acked >= 4 && requeued > 0,
        "acked {acked}, requeued {requeued}"
    );
    assert!(report.adds_up(), "{report:?}");
    assert_eq!(report.acked, acked as u64 + 10, "{report:?}");
    assert!(!report.timed_out);
    let stopped: Vec<&str> = report.stopped.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stopped, ["fragile.fragile.0"], "{report:?}");
}

/// Upstream issue 362, on a multi-thread runtime and the real clock: 50 pipelines, each with
/// messages in its processors and open batches, are shut down at once from 50 tasks. Every
/// one drains completely and reports what it did.
#[test]
fn fifty_pipelines_shut_down_at_once_on_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut running = Vec::new();
        for i in 0..50u64 {
            let source = TestSource::new();
            let probe = Probe::default().message_delay(|d| Duration::from_micros(d % 3 * 100));
            let pipeline = Pipeline::builder(format!("at-once-{i}"), probe)
                .producer(source.producer())
                .processors(Processors::new().concurrency(2).max_demand(4))
                .batcher(
                    Batcher::new("default")
                        .batch_size(7)
                        .batch_timeout(Duration::from_secs(3600))
                        .concurrency(2),
                )
                .start()
                .unwrap();
            let n = 20 + i;
            let outcomes = source.push(0..n).unwrap();
            running.push((pipeline, source, outcomes, n));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let shutdowns = running.iter().map(|(pipeline, ..)| {
            let pipeline = pipeline.clone();
            tokio::spawn(async move { pipeline.shutdown(Duration::from_secs(30)).await })
        });
        let reports = within(30, join_all(shutdowns)).await;
        for ((pipeline, source, outcomes, n), report) in running.into_iter().zip(reports) {
            let report = report.expect("the shutdown task");
            let name = pipeline.name().to_string();
            assert!(!report.timed_out && report.adds_up(), "{name}: {report:?}");
            assert!(
                report.stopped.is_empty() && report.stuck.is_empty(),
                "{name}: {report:?}"
            );
            // The test producer's buffer is given back when it stops: what it had not sent is
            // requeued, the rest acked, each once.
            assert_eq!(
                report.processed + report.unprocessed,
                n,
                "{name}: {report:?}"
            );
            let outcomes = within(5, outcomes).await;
            assert_eq!(outcomes.len() as u64, n, "{name}");
            let acked = outcomes.iter().filter(|o| o.is_ack()).count() as u64;
            assert_eq!(acked, report.acked, "{name}: {report:?}");
            assert_eq!(report.acked, report.processed, "{name}: {report:?}");
            assert_eq!(source.duplicates(), 0, "{name}");
            assert!(!pipeline.is_running());
        }
    });
}
