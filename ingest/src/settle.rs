//! Settling messages at the end of their journey: grouped by acknowledger, one call per group,
//! each group on its own; dead letters go to the sink first. And the counters every stage adds
//! to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{error, warn};

use crate::ack::{AckError, Acker, Outcome, Settlement, Taken};
use crate::decide::{outcome_of, reason_of};
use crate::guard::{Guarded, KillSwitch, guarded};
use crate::handler::{DeadLetter, DeadLetterSink};
use crate::message::Message;

/// What a pipeline's stages have done, counted as they go (once per chunk or batch, not per
/// message), and passed on to the `metrics` facade when that feature is on.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    processed: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    abandoned: AtomicU64,
    ack_errors: AtomicU64,
    dead_letter_errors: AtomicU64,
    dead_lettered: AtomicU64,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<crate::telemetry::Metrics>,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) processed: u64,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    pub(crate) retried: u64,
    pub(crate) abandoned: u64,
    pub(crate) ack_errors: u64,
    pub(crate) dead_letter_errors: u64,
    pub(crate) dead_lettered: u64,
}

fn bump(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Stats {
    /// Counters for the pipeline `pipeline` (the name labels its metrics).
    pub(crate) fn new(pipeline: &str) -> Self {
        let _ = pipeline;
        Stats {
            #[cfg(feature = "metrics")]
            metrics: Some(crate::telemetry::Metrics::new(pipeline)),
            ..Stats::default()
        }
    }

    pub(crate) fn processed(&self, n: u64) {
        bump(&self.processed, n);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.processed.increment(n);
        }
    }

    pub(crate) fn retried(&self, n: u64) {
        bump(&self.retried, n);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.retried.increment(n);
        }
    }

    fn settled(&self, acked: u64, failed: u64, abandoned: u64) {
        bump(&self.acked, acked);
        bump(&self.failed, failed);
        bump(&self.abandoned, abandoned);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.acked.increment(acked);
            m.failed.increment(failed);
            m.abandoned.increment(abandoned);
        }
    }

    fn ack_error(&self) {
        bump(&self.ack_errors, 1);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.ack_errors.increment(1);
        }
    }

    fn dead_lettered(&self, n: u64) {
        bump(&self.dead_lettered, n);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.dead_lettered.increment(n);
        }
    }

    fn dead_letter_error(&self) {
        bump(&self.dead_letter_errors, 1);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.dead_letter_errors.increment(1);
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            processed: get(&self.processed),
            acked: get(&self.acked),
            failed: get(&self.failed),
            retried: get(&self.retried),
            abandoned: get(&self.abandoned),
            ack_errors: get(&self.ack_errors),
            dead_letter_errors: get(&self.dead_letter_errors),
            dead_lettered: get(&self.dead_lettered),
        }
    }
}

/// A dead-letter sink behind a pointer.
pub(crate) trait ErasedSink<T>: Send + Sync + 'static {
    fn send(
        &self,
        letters: Vec<DeadLetter<T>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), AckError>> + Send + '_>>;
}

impl<T: Send + 'static, S: DeadLetterSink<T>> ErasedSink<T> for S {
    fn send(
        &self,
        letters: Vec<DeadLetter<T>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), AckError>> + Send + '_>> {
        Box::pin(self.dead_letter(letters))
    }
}

pub(crate) type Sink<T> = Arc<dyn ErasedSink<T>>;

/// A pipeline's dead-letter sink, as its processors (`In`) and its batch processors (`Out`)
/// see it: both or neither.
pub(crate) struct Sinks<In, Out> {
    pub(crate) input: Sink<In>,
    pub(crate) output: Sink<Out>,
}

/// Settlements collected for one chunk or batch, grouped by acknowledger, with what they add
/// to the counters.
#[derive(Default)]
pub(crate) struct Settle {
    groups: Vec<(Acker, Vec<Settlement>)>,
    /// How many settlements a group is made room for.
    hint: usize,
    acked: u64,
    failed: u64,
    abandoned: u64,
}

/// How a settlement counts in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    /// As its outcome says: acked, or failed.
    ByOutcome,
    /// As abandoned (the pipeline gave up on it unhandled).
    Abandoned,
}

impl Settle {
    /// Settles `msg` as successful.
    pub(crate) fn ack<T>(&mut self, msg: &mut Message<T>) {
        self.add(msg, Outcome::Ack, None, Count::ByOutcome);
    }

    /// Settles a failed message with the outcome of its failure.
    pub(crate) fn failed<T>(&mut self, msg: &mut Message<T>, dead_letters: bool) {
        let (outcome, reason) = match msg.failure() {
            Some(failure) => (outcome_of(failure, dead_letters), reason_of(failure)),
            None => (Outcome::Ack, None),
        };
        self.add(msg, outcome, reason, Count::ByOutcome);
    }

    /// Gives `msg` back to its source unhandled: the pipeline is past its deadline.
    pub(crate) fn abandon<T>(&mut self, msg: &mut Message<T>) {
        let reason = Some(Arc::from(
            "abandoned: the pipeline shut down before it was handled",
        ));
        self.add(
            msg,
            Outcome::Nack { requeue: true },
            reason,
            Count::Abandoned,
        );
    }

    pub(crate) fn add<T>(
        &mut self,
        msg: &mut Message<T>,
        outcome: Outcome,
        reason: Option<Arc<str>>,
        count: Count,
    ) {
        self.add_taken(msg.ack.take(), outcome, reason, count);
    }

    /// Settles the acknowledger taken from a message.
    pub(crate) fn add_taken(
        &mut self,
        taken: Taken,
        outcome: Outcome,
        reason: Option<Arc<str>>,
        count: Count,
    ) {
        match taken {
            Taken::Pending(acker, tag) => {
                self.count(&outcome, count);
                self.push(
                    acker,
                    Settlement {
                        tag,
                        outcome,
                        reason,
                    },
                );
            }
            // Settled early as a success: that is what its source heard.
            Taken::Early => self.acked += 1,
            Taken::Gone => warn!("a message was settled twice; the second time is ignored"),
        }
    }

    fn count(&mut self, outcome: &Outcome, count: Count) {
        match (count, outcome) {
            (Count::Abandoned, _) => self.abandoned += 1,
            (Count::ByOutcome, Outcome::Ack) => self.acked += 1,
            (Count::ByOutcome, _) => self.failed += 1,
        }
    }

    fn push(&mut self, acker: Acker, settlement: Settlement) {
        // Messages of one source come together: look at the last group first.
        match self.groups.iter_mut().rev().find(|(a, _)| a.same(&acker)) {
            Some((_, settled)) => settled.push(settlement),
            None => {
                let mut settled = Vec::with_capacity(self.hint.clamp(1, 1024));
                settled.push(settlement);
                self.groups.push((acker, settled));
            }
        }
    }

    /// Makes room for `n` settlements per acknowledger (the size of the chunk or batch to
    /// come), so that a group grows once.
    pub(crate) fn expect(&mut self, n: usize) {
        self.hint = n;
    }

    /// Whether nothing waits to be flushed.
    pub(crate) fn is_clear(&self) -> bool {
        self.groups.is_empty() && self.acked == 0 && self.failed == 0 && self.abandoned == 0
    }

    /// Calls each acknowledger once with its group, and adds to the counters. A failing
    /// acknowledger is logged and counted; the other groups go ahead regardless.
    pub(crate) async fn flush(&mut self, stats: &Stats, stage: &str) {
        if self.is_clear() {
            return;
        }
        for (acker, settled) in self.groups.drain(..) {
            let n = settled.len();
            if let Err(err) = acker.ack(settled).await {
                error!(stage, messages = n, %err, "the acknowledger failed");
                stats.ack_error();
            }
        }
        stats.settled(
            std::mem::take(&mut self.acked),
            std::mem::take(&mut self.failed),
            std::mem::take(&mut self.abandoned),
        );
    }
}

/// Settles messages failed for good (after `handle_failed`): those whose outcome is a dead
/// letter go to the sink first (and are requeued if it fails), the rest as their failure says.
pub(crate) async fn settle_failed<T: Send + 'static>(
    failed: Vec<Message<T>>,
    sink: Option<&Sink<T>>,
    stage: &Arc<str>,
    settle: &mut Settle,
    stats: &Stats,
    kill: &KillSwitch,
) {
    if failed.is_empty() {
        return;
    }
    let Some(sink) = sink else {
        for mut msg in failed {
            settle.failed(&mut msg, false);
        }
        return;
    };
    let mut letters = Vec::new();
    let mut slots = Vec::new();
    for mut msg in failed {
        let outcome = msg.failure().map_or(Outcome::Ack, |f| outcome_of(f, true));
        let reason = match outcome {
            // A message acked early was settled for good: it is not a dead letter any more.
            Outcome::DeadLetter { reason } if msg.is_pending() => reason,
            _ => {
                settle.failed(&mut msg, true);
                continue;
            }
        };
        let attempts = msg.attempt();
        let metadata = std::mem::take(msg.metadata_mut());
        let slot = msg.ack.take();
        letters.push(DeadLetter {
            data: msg.data,
            metadata,
            reason: Arc::clone(&reason),
            attempts,
            stage: Arc::clone(stage),
        });
        slots.push((slot, reason));
    }
    if letters.is_empty() {
        return;
    }
    let n = letters.len() as u64;
    let sent = match guarded(|| sink.send(letters), kill).await {
        Guarded::Done(result) => result,
        Guarded::Panicked(message) => Err(AckError::new(format_args!(
            "the dead-letter sink panicked: {message}"
        ))),
        Guarded::Killed => Err(AckError::new(
            "the stage was killed past its shutdown deadline while the dead-letter sink ran",
        )),
    };
    let requeue = match sent {
        Ok(()) => {
            stats.dead_lettered(n);
            false
        }
        Err(err) => {
            error!(stage = %stage, messages = n, %err, "the dead-letter sink failed; requeueing its messages");
            stats.dead_letter_error();
            true
        }
    };
    for (slot, reason) in slots {
        let outcome = if requeue {
            Outcome::Nack { requeue: true }
        } else {
            Outcome::DeadLetter {
                reason: Arc::clone(&reason),
            }
        };
        settle.add_taken(slot, outcome, Some(reason), Count::ByOutcome);
    }
}
