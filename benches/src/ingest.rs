//! The `ingest` benchmark (`benches/ingest.rs`): acknowledged messages through 2 processors and
//! one batcher of 100, as an `ingest` pipeline and as a hand-written tokio pipeline.
//!
//! Both do the same work per message: a producer makes numbered messages that carry what their
//! source needs to settle them (an acknowledger handle and a tag); two processors each apply
//! `x -> x + 1`; a batcher groups the results by 100, or by whatever a batch holds after one
//! second; each batch is summed and acknowledged with one call, given the tags of its messages.
//! The acknowledger counts what it is told, and the run checks that every message was acked
//! once and that the sums add up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ingest::{
    AckError, Acker, Acknowledger, BatchInfo, Batcher, Context as IngestContext, Failure, Handler,
    Message, Outcome, Pipeline, Processors, Producers, Settlement,
};
use stage::{Context, Producer};
use tokio::sync::mpsc;

/// How many messages each run moves.
pub const MESSAGES: u64 = 1_000_000;
/// The batch size.
pub const BATCH_SIZE: usize = 100;
/// How long a batch may wait for more messages.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(1);
/// Elixir Broadway on this workload and machine, processors at their default demand, in
/// millions of messages per second.
pub const BROADWAY_DEFAULT_DEMAND: f64 = 0.83;
/// The same at processors' `max_demand` 100.
pub const BROADWAY_DEMAND_100: f64 = 1.34;

/// Counts acknowledgements: messages acked, messages failed, and calls.
#[derive(Debug, Default)]
pub struct Tally {
    acked: AtomicU64,
    failed: AtomicU64,
    calls: AtomicU64,
    tags: AtomicU64,
    sum: AtomicU64,
}

impl Tally {
    /// What a run left: `(acked, failed, calls, sum of tags, sum of batch sums)`.
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&self.acked),
            get(&self.failed),
            get(&self.calls),
            get(&self.tags),
            get(&self.sum),
        )
    }

    /// The sum of the tags `0..total` and of the data `1..=total` a run must leave.
    pub fn expected(total: u64) -> (u64, u64) {
        let tags = total * total.saturating_sub(1) / 2;
        (tags, tags + total)
    }
}

/// The acknowledger of both pipelines: one call per batch.
#[derive(Debug, Clone, Default)]
pub struct CountingAcker(pub Arc<Tally>);

impl CountingAcker {
    /// The hand-written pipeline's ack call: the tags of one batch and what the batch summed to.
    pub async fn ack_tags(&self, tags: &[u64], sum: u64) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        self.0.acked.fetch_add(tags.len() as u64, Ordering::Relaxed);
        self.0
            .tags
            .fetch_add(tags.iter().sum::<u64>(), Ordering::Relaxed);
        self.0.sum.fetch_add(sum, Ordering::Relaxed);
    }
}

impl Acknowledger for CountingAcker {
    async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
        let tally = &self.0;
        tally.calls.fetch_add(1, Ordering::Relaxed);
        let mut acked = 0;
        let mut tags = 0;
        for s in &settled {
            tags += s.tag;
            if s.outcome == Outcome::Ack {
                acked += 1;
            }
        }
        tally.acked.fetch_add(acked, Ordering::Relaxed);
        tally
            .failed
            .fetch_add(settled.len() as u64 - acked, Ordering::Relaxed);
        tally.tags.fetch_add(tags, Ordering::Relaxed);
        Ok(())
    }
}

// ----- ours -----

/// Emits `Message`s tagged `0..total` (data = tag), as many as asked, then finishes.
#[derive(Debug)]
pub struct MessageCounter {
    next: u64,
    end: u64,
    acker: Acker,
}

impl Producer for MessageCounter {
    type Out = Message<u64>;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<Message<u64>> {
        let start = self.next;
        self.next = self.end.min(start.saturating_add(demand as u64));
        if self.next == self.end {
            ctx.finish();
        }
        (start..self.next)
            .map(|tag| Message::new(tag, &self.acker, tag))
            .collect()
    }
}

/// Adds one in the processors; sums each batch in the batch processor.
#[derive(Debug)]
pub struct AddOneAndSum(Arc<Tally>);

impl Handler for AddOneAndSum {
    type In = u64;
    type Out = u64;

    async fn handle_message(
        &self,
        msg: &mut Message<u64>,
        _: &IngestContext,
    ) -> Result<u64, Failure> {
        Ok(msg.data + 1)
    }

    async fn handle_batch(
        &self,
        batch: &mut [Message<u64>],
        _: &BatchInfo,
        _: &IngestContext,
    ) -> Result<(), Failure> {
        let sum: u64 = batch.iter().map(|m| m.data).sum();
        self.0.sum.fetch_add(sum, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs `total` messages through the ingest pipeline (processors at `max_demand`, or at their
/// default) and returns the tally once it has ended.
pub async fn run_ingest(total: u64, max_demand: Option<usize>) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let acker = Acker::new(CountingAcker(Arc::clone(&tally)));
    let mut processors = Processors::new().concurrency(2);
    if let Some(max) = max_demand {
        processors = processors.max_demand(max);
    }
    let producer = MessageCounter {
        next: 0,
        end: total,
        acker,
    };
    let pipeline = Pipeline::builder("bench", AddOneAndSum(Arc::clone(&tally)))
        .producer(Producers::single(producer))
        .processors(processors)
        .batcher(
            Batcher::new("default")
                .batch_size(BATCH_SIZE)
                .batch_timeout(BATCH_TIMEOUT),
        )
        .start()
        .expect("start the pipeline");
    let report = pipeline.join().await;
    assert_eq!(report.acked, total, "{report:?}");
    tally
}

// ----- hand-written -----

/// What the hand-written pipeline carries per message: the payload, the tag its source knows it
/// by and the acknowledger to tell (as a broker client would hand them over).
#[derive(Debug)]
struct Delivery {
    data: u64,
    tag: u64,
    acker: CountingAcker,
}

/// Runs `total` messages through a hand-written tokio pipeline: a producer task deals
/// messages round-robin to two processor tasks over bounded channels of `depth` messages; they
/// add one and send on to one batcher task over a bounded channel; the batcher makes batches of
/// 100, or sends what it has when a batch is one second old, sums each and makes one ack call
/// with its tags. Receivers take what is waiting in one go (`recv_many`).
pub async fn run_handwritten(total: u64, depth: usize) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let acker = CountingAcker(Arc::clone(&tally));
    let (to_batcher, mut batcher_rx) = mpsc::channel::<Delivery>(BATCH_SIZE);
    let mut processors = Vec::new();
    let mut inputs = Vec::new();
    for _ in 0..2 {
        let (tx, mut rx) = mpsc::channel::<Delivery>(depth);
        inputs.push(tx);
        let out = to_batcher.clone();
        processors.push(tokio::spawn(async move {
            let mut buf = Vec::with_capacity(depth);
            while rx.recv_many(&mut buf, depth).await > 0 {
                for mut delivery in buf.drain(..) {
                    delivery.data += 1;
                    if out.send(delivery).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    drop(to_batcher);
    let producer = tokio::spawn(async move {
        for tag in 0..total {
            let delivery = Delivery {
                data: tag,
                tag,
                acker: acker.clone(),
            };
            if inputs[(tag % 2) as usize].send(delivery).await.is_err() {
                return;
            }
        }
    });
    let batcher = tokio::spawn(async move {
        let mut batch: Vec<Delivery> = Vec::with_capacity(BATCH_SIZE);
        let mut incoming = Vec::with_capacity(BATCH_SIZE);
        let mut deadline = None;
        loop {
            let received = match deadline {
                None => batcher_rx.recv_many(&mut incoming, BATCH_SIZE).await,
                Some(at) => tokio::select! {
                    n = batcher_rx.recv_many(&mut incoming, BATCH_SIZE) => n,
                    () = tokio::time::sleep_until(at) => {
                        ship(&mut batch).await;
                        deadline = None;
                        continue;
                    }
                },
            };
            if received == 0 {
                ship(&mut batch).await;
                return;
            }
            for delivery in incoming.drain(..) {
                if batch.is_empty() {
                    deadline = Some(tokio::time::Instant::now() + BATCH_TIMEOUT);
                }
                batch.push(delivery);
                if batch.len() == BATCH_SIZE {
                    ship(&mut batch).await;
                    deadline = None;
                }
            }
        }
    });
    producer.await.expect("producer task");
    for p in processors {
        p.await.expect("processor task");
    }
    batcher.await.expect("batcher task");
    tally
}

/// Sums a batch and acks it with one call.
async fn ship(batch: &mut Vec<Delivery>) {
    let Some(first) = batch.first() else {
        return;
    };
    let acker = first.acker.clone();
    let sum = batch.iter().map(|d| d.data).sum();
    let tags: Vec<u64> = batch.iter().map(|d| d.tag).collect();
    batch.clear();
    acker.ack_tags(&tags, sum).await;
}
