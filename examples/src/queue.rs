//! An in-memory message queue standing in for a broker (RabbitMQ in the book), for the
//! `ingest` examples: messages are published to it, a consumer ([`Queue::producer`]) takes
//! them as its pipeline asks, and each one stays *unacked* until its acknowledger settles it.
//!
//! How the queue treats each [`Outcome`], like a broker would:
//!
//! | outcome | the queue |
//! |---|---|
//! | `Ack` | forgets the message |
//! | `Nack { requeue: true }` | delivers it again (to the back of the queue, marked redelivered) |
//! | `Nack { requeue: false }` | drops it, and counts it rejected |
//! | `Retry { after }` | delivers it again once `after` has passed |
//! | `DeadLetter { reason }` | moves it to its dead-letter list, with the reason |
//!
//! [`Queue::drained`] waits until nothing is ready, out with the consumer or waiting for a
//! retry: every message published has been settled for good.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use ingest::{AckError, Acker, Acknowledger, Message, Outcome, Producers, Settlement};
use stage::{Cast, Context, Producer};
use tokio::sync::watch;

/// What happened to a queue's messages so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages published.
    pub published: u64,
    /// Deliveries to the consumer (redeliveries included).
    pub delivered: u64,
    /// Settled as handled.
    pub acked: u64,
    /// Rejected without a requeue: dropped.
    pub rejected: u64,
    /// Rejected with a requeue: delivered again.
    pub requeued: u64,
    /// Handed back to be delivered again later.
    pub retried: u64,
    /// Moved to the dead-letter list.
    pub dead_lettered: u64,
    /// Settlements for a delivery the queue did not have out (never, if the pipeline settles
    /// each message once).
    pub unknown: u64,
}

impl QueueCounts {
    /// Messages settled for good: acked, rejected or dead-lettered.
    pub fn done(&self) -> u64 {
        self.acked + self.rejected + self.dead_lettered
    }
}

/// An in-memory queue of `String` payloads. Cheap to clone: clones are the same queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    state: Mutex<State>,
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct State {
    ready: VecDeque<(u64, String, bool)>,
    /// Delivered and not settled yet, by delivery tag.
    unacked: HashMap<u64, String>,
    /// Waiting for a retry's delay.
    delayed: usize,
    next_tag: u64,
    counts: QueueCounts,
    dead: Vec<(String, String)>,
    rejected: Vec<(String, String)>,
    /// Wakes the consumer.
    consumer: Option<Box<dyn Fn() + Send>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("counts", &self.counts())
            .finish()
    }
}

impl Queue {
    /// An empty queue called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Queue {
            inner: Arc::new(Inner {
                name: name.into(),
                state: Mutex::default(),
                changed: watch::Sender::new(()),
            }),
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes messages: they are delivered once the consumer asks.
    pub fn publish(&self, payloads: impl IntoIterator<Item = String>) {
        let mut state = self.state();
        for payload in payloads {
            let tag = state.next_tag;
            state.next_tag += 1;
            state.counts.published += 1;
            state.ready.push_back((tag, payload, false));
        }
        Self::wake(&state);
        drop(state);
        self.inner.changed.send_replace(());
    }

    /// Tells the consumer that messages are ready.
    fn wake(state: &State) {
        if let (Some(wake), false) = (&state.consumer, state.ready.is_empty()) {
            wake();
        }
    }

    /// What happened to the queue's messages so far.
    pub fn counts(&self) -> QueueCounts {
        self.state().counts
    }

    /// The messages moved to the dead-letter list, with why.
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        self.state().dead.clone()
    }

    /// The messages rejected (dropped), with why.
    pub fn rejected(&self) -> Vec<(String, String)> {
        self.state().rejected.clone()
    }

    /// Waits until every message published has been settled for good: none is ready, out with
    /// the consumer, or waiting for a retry.
    pub async fn drained(&self) {
        let mut changed = self.inner.changed.subscribe();
        loop {
            {
                let state = self.state();
                if state.ready.is_empty() && state.unacked.is_empty() && state.delayed == 0 {
                    return;
                }
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// The queue's consumer, for a pipeline: one producer that delivers ready messages as it
    /// is asked for them, each made into a message of the pipeline's type by `make` (whose
    /// acknowledger settles it with this queue).
    pub fn producer<T: Send + 'static>(
        &self,
        make: fn(String) -> T,
    ) -> Producers<QueueProducer<T>> {
        let acker = Acker::new(QueueAcker {
            queue: self.clone(),
        });
        Producers::single(QueueProducer {
            queue: self.clone(),
            acker,
            pending: 0,
            make,
        })
        .name(self.inner.name.clone())
    }

    /// Takes up to `n` ready messages, now unacked.
    fn take(&self, n: usize) -> Vec<(u64, String, bool)> {
        let mut state = self.state();
        let n = n.min(state.ready.len());
        let taken: Vec<_> = state.ready.drain(..n).collect();
        for (tag, payload, _) in &taken {
            state.unacked.insert(*tag, payload.clone());
        }
        state.counts.delivered += taken.len() as u64;
        taken
    }

    fn settle(&self, settled: Vec<Settlement>) {
        let mut state = self.state();
        let mut later = Vec::new();
        for s in settled {
            let Some(payload) = state.unacked.remove(&s.tag) else {
                state.counts.unknown += 1;
                continue;
            };
            let reason = s.reason.as_deref().unwrap_or("").to_string();
            match s.outcome {
                Outcome::Ack => state.counts.acked += 1,
                Outcome::Nack { requeue: true } => {
                    state.counts.requeued += 1;
                    state.ready.push_back((s.tag, payload, true));
                }
                Outcome::Nack { requeue: false } => {
                    state.counts.rejected += 1;
                    state.rejected.push((payload, reason));
                }
                Outcome::Retry { after } => {
                    state.counts.retried += 1;
                    state.delayed += 1;
                    later.push((after, s.tag, payload));
                }
                Outcome::DeadLetter { reason } => {
                    state.counts.dead_lettered += 1;
                    state.dead.push((payload, reason.to_string()));
                }
            }
        }
        Self::wake(&state);
        drop(state);
        for (after, tag, payload) in later {
            let queue = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let mut state = queue.state();
                state.delayed -= 1;
                state.ready.push_back((tag, payload, true));
                Self::wake(&state);
                drop(state);
                queue.inner.changed.send_replace(());
            });
        }
        self.inner.changed.send_replace(());
    }
}

/// Settles deliveries with their queue.
struct QueueAcker {
    queue: Queue,
}

impl Acknowledger for QueueAcker {
    async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
        self.queue.settle(settled);
        Ok(())
    }
}

/// Messages are ready: deliver what is asked for.
struct Ready;

/// A [`Queue`]'s consumer (from [`Queue::producer`]): remembers the demand it could not meet,
/// and meets it when messages are published or redelivered.
pub struct QueueProducer<T> {
    queue: Queue,
    acker: Acker,
    pending: usize,
    make: fn(String) -> T,
}

impl<T> fmt::Debug for QueueProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueProducer")
            .field("queue", &self.queue.name())
            .field("pending", &self.pending)
            .finish()
    }
}

impl<T> QueueProducer<T> {
    fn deliver(&mut self) -> Vec<Message<T>> {
        let taken = self.queue.take(self.pending);
        self.pending -= taken.len();
        taken
            .into_iter()
            .map(|(tag, payload, redelivered)| {
                Message::new((self.make)(payload), &self.acker, tag)
                    .with_metadata("queue", self.queue.name().to_string())
                    .with_metadata("redelivered", redelivered)
            })
            .collect()
    }
}

impl<T: Send + 'static> Producer for QueueProducer<T> {
    type Out = Message<T>;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<Message<T>> {
        self.pending += demand;
        self.deliver()
    }

    async fn handle_start(&mut self, ctx: &mut Context<Self>) {
        // The queue tells its consumer when messages are ready.
        let me = ctx.myself();
        self.queue.state().consumer = Some(Box::new(move || {
            let _ = me.cast(Ready);
        }));
    }
}

impl<T: Send + 'static> Cast<Ready> for QueueProducer<T> {
    async fn handle_cast(&mut self, _: Ready, ctx: &mut Context<Self>) {
        if self.pending > 0 {
            let messages = self.deliver();
            ctx.emit(messages);
        }
    }
}
