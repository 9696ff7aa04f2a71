//! A producer for tests: push data in, get each message's outcome back.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use stage::{CallError, Cast, Context, Producer, StageHandle};
use tokio::sync::oneshot;

use crate::ack::{AckError, Acker, Acknowledger, Outcome, Settlement};
use crate::message::{BatchMode, Message};
use crate::producers::Producers;

/// A source for tests: [`push`](TestSource::push) hands it data, and the returned
/// [`Outcomes`] resolves with each message's outcome, in push order, once every one of them is
/// settled.
///
/// Pushed messages go through the pipeline like any others: they wait for demand, and the
/// rate limit applies to them. [`finish`](TestSource::finish) makes the producer end once it
/// has sent everything pushed, and with it the pipeline. The source also counts messages
/// settled more than once ([`duplicates`](TestSource::duplicates)), which the pipeline promises
/// never happens.
///
/// # Examples
///
/// ```
/// use ingest::{Context, Failure, Handler, Message, Outcome, Pipeline, TestSource};
///
/// struct Even;
///
/// impl Handler for Even {
///     type In = u32;
///     type Out = u32;
///
///     async fn handle_message(&self, msg: &mut Message<u32>, _: &Context) -> Result<u32, Failure> {
///         if msg.data % 2 == 0 { Ok(msg.data) } else { Err(Failure::new("odd")) }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let source = TestSource::new();
/// let pipeline = Pipeline::builder("even", Even).producer(source.producer()).start().unwrap();
/// let outcomes = source.push([2, 3]).unwrap().await;
/// assert_eq!(outcomes, vec![Outcome::Ack, Outcome::Nack { requeue: false }]);
/// source.finish().unwrap();
/// let report = pipeline.join().await;
/// assert_eq!((report.acked, report.failed), (1, 1));
/// # }
/// ```
pub struct TestSource<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    stage: Mutex<Option<StageHandle<TestProducer<T>>>>,
    acker: Acker,
    journal: Arc<Journal>,
    next_push: AtomicU64,
}

impl<T> Clone for TestSource<T> {
    fn clone(&self) -> Self {
        TestSource {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for TestSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSource")
            .field(
                "duplicates",
                &self.inner.journal.duplicates.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl<T: Send + 'static> Default for TestSource<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> TestSource<T> {
    /// A source whose producer is not running yet (see [`producer`](TestSource::producer)).
    pub fn new() -> Self {
        let journal = Arc::new(Journal::default());
        TestSource {
            inner: Arc::new(Inner {
                stage: Mutex::new(None),
                acker: Acker::new(Arc::clone(&journal)),
                journal,
                next_push: AtomicU64::new(0),
            }),
        }
    }

    /// The producer to give the pipeline (one; pushes go to the last one started).
    pub fn producer(&self) -> Producers<TestProducer<T>> {
        let inner = Arc::clone(&self.inner);
        Producers::new(|_| TestProducer::default())
            .name("test")
            .on_start(move |_, handle| {
                *inner.stage.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.clone());
            })
    }

    /// Pushes messages in [`BatchMode::Bulk`].
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the producer is not running.
    pub fn push(&self, data: impl IntoIterator<Item = T>) -> Result<Outcomes, CallError> {
        self.push_with(data, |_| {})
    }

    /// Pushes messages in [`BatchMode::Flush`]: each flushes its batch once it reaches its
    /// batcher, so tests need not wait for the batch timeout.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the producer is not running.
    pub fn push_flush(&self, data: impl IntoIterator<Item = T>) -> Result<Outcomes, CallError> {
        self.push_with(data, |msg| msg.put_batch_mode(BatchMode::Flush))
    }

    /// Pushes messages, each set up by `f` first (metadata, batch key, batch mode...).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the producer is not running.
    pub fn push_with(
        &self,
        data: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Message<T>),
    ) -> Result<Outcomes, CallError> {
        let stage = self
            .inner
            .stage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(CallError::Closed)?;
        if !stage.is_running() {
            return Err(CallError::Closed);
        }
        let push = self.inner.next_push.fetch_add(1, Ordering::Relaxed);
        let messages: Vec<Message<T>> = data
            .into_iter()
            .enumerate()
            .map(|(i, data)| {
                let mut msg = Message::new(data, &self.inner.acker, (push << 32) | i as u64);
                f(&mut msg);
                msg
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        if messages.is_empty() {
            let _ = tx.send(Vec::new());
            return Ok(Outcomes { rx });
        }
        self.inner.journal.expect(push, messages.len(), tx);
        stage.cast(Push(messages))?;
        Ok(Outcomes { rx })
    }

    /// Makes the producer finish once it has sent everything pushed so far; the pipeline then
    /// drains and ends.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the producer is not running.
    pub fn finish(&self) -> Result<(), CallError> {
        let stage = self
            .inner
            .stage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        stage.ok_or(CallError::Closed)?.cast(Finish)
    }

    /// How many settlements came for messages already settled (never, if the pipeline keeps
    /// its promise).
    pub fn duplicates(&self) -> u64 {
        self.inner.journal.duplicates.load(Ordering::Relaxed)
    }

    /// How many messages have been settled so far.
    pub fn settled(&self) -> u64 {
        self.inner.journal.settled.load(Ordering::Relaxed)
    }
}

/// Each pushed message's outcome, in push order, once all of them are settled.
#[must_use = "outcomes do nothing unless awaited"]
pub struct Outcomes {
    rx: oneshot::Receiver<Vec<Outcome>>,
}

impl fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outcomes")
    }
}

impl Future for Outcomes {
    type Output = Vec<Outcome>;

    /// Ready once every message of the push is settled. (Should the source itself be dropped
    /// with messages unsettled, which the pipeline never lets happen, it is ready with nothing.)
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Vec<Outcome>> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(Result::unwrap_or_default)
    }
}

/// The test source's acknowledger: the outcomes of each push, as they come.
#[derive(Default)]
struct Journal {
    pushes: Mutex<HashMap<u64, Pending>>,
    duplicates: AtomicU64,
    settled: AtomicU64,
}

struct Pending {
    outcomes: Vec<Option<Outcome>>,
    left: usize,
    tx: Option<oneshot::Sender<Vec<Outcome>>>,
}

impl Journal {
    fn expect(&self, push: u64, n: usize, tx: oneshot::Sender<Vec<Outcome>>) {
        self.pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                push,
                Pending {
                    outcomes: vec![None; n],
                    left: n,
                    tx: Some(tx),
                },
            );
    }
}

impl Acknowledger for Journal {
    async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
        let mut pushes = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        self.settled
            .fetch_add(settled.len() as u64, Ordering::Relaxed);
        for s in settled {
            let (push, index) = (s.tag >> 32, (s.tag & 0xffff_ffff) as usize);
            let Some(pending) = pushes.get_mut(&push) else {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match pending.outcomes.get_mut(index) {
                Some(slot @ None) => {
                    *slot = Some(s.outcome);
                    pending.left -= 1;
                }
                _ => {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if pending.left == 0 {
                // Every one is there now. The emptied entry stays, so that a late duplicate is
                // still noticed.
                let outcomes = pending.outcomes.drain(..).flatten().collect();
                if let Some(tx) = pending.tx.take() {
                    let _ = tx.send(outcomes);
                }
            }
        }
        Ok(())
    }
}

/// Messages for the test producer.
struct Push<T>(Vec<Message<T>>);
/// Finish once everything pushed has been sent.
struct Finish;

/// The producer of a [`TestSource`]: emits what is pushed at once, so that what its consumers
/// have not asked for yet waits in its (unbounded) buffer, in order.
pub struct TestProducer<T> {
    _messages: std::marker::PhantomData<fn() -> T>,
}

impl<T> Default for TestProducer<T> {
    fn default() -> Self {
        TestProducer {
            _messages: std::marker::PhantomData,
        }
    }
}

impl<T> fmt::Debug for TestProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestProducer")
    }
}

impl<T: Send + 'static> Producer for TestProducer<T> {
    type Out = Message<T>;
}

impl<T: Send + 'static> Cast<Push<T>> for TestProducer<T> {
    async fn handle_cast(&mut self, Push(messages): Push<T>, ctx: &mut Context<Self>) {
        ctx.emit(messages);
    }
}

impl<T: Send + 'static> Cast<Finish> for TestProducer<T> {
    async fn handle_cast(&mut self, _: Finish, ctx: &mut Context<Self>) {
        ctx.finish();
    }
}
