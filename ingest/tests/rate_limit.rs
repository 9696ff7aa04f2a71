//! The rate limit: one budget for all producers, taken when demand is sent, so that it holds
//! demand back instead of dropping; changed now or from the next interval (Broadway's rate
//! limiting rules, and what this crate does where they are weak).

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::{
    Acker, Apply, Message, Outcome, Pipeline, Processors, Producers, RateLimit, RateLimitError,
    TestSource,
};
use stage::Producer;
use support::{Journal, Probe, feed, within};
use tokio::time::Instant;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// How many messages were handled in each second of the run.
fn per_second(probe: &Probe) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for m in probe.messages() {
        *counts.entry(m.3.as_secs()).or_insert(0) += 1;
    }
    counts
}

/// The budget is shared by every producer of the pipeline: two groups of 30 messages under
/// 10 per second take 6 seconds, 10 a second.
#[tokio::test(start_paused = true)]
async fn one_budget_for_all_producers() {
    let journal = Journal::new();
    let acker = journal.acker();
    let pipeline = Pipeline::builder("shared", Probe::default())
        .producer(feed(0..30, &acker).name("a"))
        .producer(feed(100..130, &acker).name("b"))
        .processors(Processors::new().concurrency(2).max_demand(10))
        .rate_limit(RateLimit::new(10, secs(1)))
        .start()
        .unwrap();
    let report = within(30, pipeline.join()).await;
    assert_eq!(report.acked, 60);
    let counts = per_second(pipeline.handler());
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [10; 6],
        "{counts:?}"
    );
}

/// Records each demand it gets, with the paused clock's time.
struct Recorded {
    asked: Arc<Mutex<Vec<(Duration, usize)>>>,
    start: Instant,
    next: u64,
    acker: Acker,
}

impl Producer for Recorded {
    type Out = Message<u64>;

    async fn handle_demand(
        &mut self,
        demand: usize,
        _: &mut stage::Context<Self>,
    ) -> Vec<Message<u64>> {
        self.asked
            .lock()
            .unwrap()
            .push((self.start.elapsed(), demand));
        let start = self.next;
        self.next += demand as u64;
        (start..self.next)
            .map(|d| Message::new(d, &self.acker, d))
            .collect()
    }
}

/// While the budget is spent, the producer is not asked for more: demand waits, nothing is
/// dropped, and the asks of each interval add up to the budget.
#[tokio::test(start_paused = true)]
async fn demand_is_held_back_while_the_budget_is_spent() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let journal = Journal::new();
    let producer = Recorded {
        asked: Arc::clone(&asked),
        start: Instant::now(),
        next: 0,
        acker: journal.acker(),
    };
    let pipeline = Pipeline::builder("held", Probe::default())
        .producer(Producers::single(producer))
        .processors(Processors::new().concurrency(3).max_demand(10))
        .rate_limit(RateLimit::new(7, secs(1)))
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut by_second: BTreeMap<u64, usize> = BTreeMap::new();
    for (at, n) in asked.lock().unwrap().iter() {
        *by_second.entry(at.as_secs()).or_insert(0) += n;
    }
    assert_eq!(
        by_second.values().copied().collect::<Vec<_>>(),
        [7, 7, 7, 7],
        "{by_second:?}"
    );
    let report = within(5, pipeline.shutdown(secs(5))).await;
    assert_eq!(report.processed, 28);
    assert!(report.adds_up());
    assert_eq!(journal.by_tag().len(), 28);
}

/// An update waits for the next interval, unless applied now; the limit in force and the one
/// waiting can be read.
#[tokio::test(start_paused = true)]
async fn an_update_applies_next_interval_or_now() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("update", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(100))
        .rate_limit(RateLimit::new(5, secs(1)))
        .start()
        .unwrap();
    let outcomes = source.push(0..100).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let faster = RateLimit::new(20, secs(1));
    pipeline
        .update_rate_limit(faster, Apply::NextInterval)
        .unwrap();
    assert_eq!(
        pipeline.rate_limit(),
        Ok((RateLimit::new(5, secs(1)), Some(faster)))
    );
    tokio::time::sleep(secs(1)).await;
    // 5 in the first second, 20 in the second.
    assert_eq!(pipeline.handler().messages().len(), 25);
    assert_eq!(pipeline.rate_limit(), Ok((faster, None)));
    // Now: a new interval starts at once, with the new budget.
    pipeline
        .update_rate_limit(RateLimit::new(50, secs(10)), Apply::Now)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pipeline.handler().messages().len(), 75);
    let report = within(30, pipeline.shutdown(secs(30))).await;
    assert!(report.adds_up());
    drop(outcomes);
}

/// Without a rate limit, reading or changing it says so; a bad new limit names its option.
#[tokio::test(start_paused = true)]
async fn a_pipeline_without_a_limit_says_so() {
    let source = TestSource::<u64>::new();
    let pipeline = Pipeline::builder("unlimited", Probe::default())
        .producer(source.producer())
        .start()
        .unwrap();
    assert_eq!(pipeline.rate_limit(), Err(RateLimitError::NotEnabled));
    let limit = RateLimit::new(1, secs(1));
    assert_eq!(
        pipeline.update_rate_limit(limit, Apply::Now),
        Err(RateLimitError::NotEnabled)
    );
    let source = TestSource::<u64>::new();
    let limited = Pipeline::builder("limited", Probe::default())
        .producer(source.producer())
        .rate_limit(limit)
        .start()
        .unwrap();
    match limited.update_rate_limit(RateLimit::new(0, secs(1)), Apply::Now) {
        Err(RateLimitError::Config(err)) => assert_eq!(err.option, "allowed"),
        other => panic!("{other:?}"),
    }
}

/// Pushed test messages obey the limit like any others (upstream's test messages bypass it).
#[tokio::test(start_paused = true)]
async fn test_messages_obey_the_limit() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("obey", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(10))
        .rate_limit(RateLimit::new(2, secs(1)))
        .start()
        .unwrap();
    let outcomes = source.push(0..6).unwrap();
    let outcomes = within(10, outcomes).await;
    assert_eq!(outcomes, vec![Outcome::Ack; 6]);
    let counts = per_second(pipeline.handler());
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{counts:?}"
    );
}

/// A rate-limited pipeline drains on shutdown: what its processors received is handled and
/// what its producer still held is given back, without waiting for more budget.
#[tokio::test(start_paused = true)]
async fn a_limited_pipeline_drains_promptly() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("limited-drain", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(10))
        .rate_limit(RateLimit::new(3, secs(60)))
        .start()
        .unwrap();
    let outcomes = source.push(0..10).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    let report = within(5, pipeline.shutdown(secs(120))).await;
    assert!(
        started.elapsed() < secs(1),
        "{:?} {report:?}",
        started.elapsed()
    );
    assert_eq!((report.acked, report.unprocessed), (3, 7), "{report:?}");
    let outcomes = within(1, outcomes).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_ack()).count(), 3);
}
