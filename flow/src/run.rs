//! Finishers: what starts a flow and reads its results.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Sink, Stream};
use stage::{
    AsProducer, CancelMode, Consumer, ConsumerStream, Producer, ProducerRef, StageHandle,
    SubscribeOptions,
};

use crate::error::{Error, ErrorKind};
use crate::flow::Flow;
use crate::materialise::Stages;

impl<T: Send + 'static> Flow<T> {
    /// Starts the flow and returns its results as a stream (GenStage's `stream`).
    ///
    /// The stream asks for more only as it is polled. Dropping it early stops the flow. Once it
    /// ends, [`FlowStream::result`] tells whether the flow finished or failed.
    ///
    /// # Errors
    ///
    /// An invalid option, or no tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut stream = flow::Flow::from_iter(1..=1_000_000u64).stages(1).into_stream().unwrap();
    /// let first: Vec<u64> = stream.by_ref().take(3).collect().await;
    /// assert_eq!(first, [1, 2, 3]);
    /// drop(stream); // stops the flow
    /// # }
    /// ```
    pub fn into_stream(self) -> Result<FlowStream<T>, Error> {
        let stages = Stages::default();
        let producers = self.start(&stages)?;
        // Temporary: a last stage that already failed is reported through `stages`, with its
        // own reason, instead of failing the subscription.
        let subs = producers
            .iter()
            .map(|p| (p, SubscribeOptions::new().cancel(CancelMode::Temporary)));
        Ok(FlowStream {
            inner: stage::stream(subs)?,
            stages,
            ending: Ending::Running,
        })
    }

    /// Starts the flow and returns the producers of its last layer, to subscribe anything to.
    ///
    /// # Errors
    ///
    /// An invalid option, or no tokio runtime.
    pub fn into_producers(self) -> Result<Vec<ProducerRef<T>>, Error> {
        self.start(&Stages::default())
    }

    /// Runs the flow and collects what it emits, in no particular order across stages.
    ///
    /// # Errors
    ///
    /// An invalid option, or [`ErrorKind::Failed`] when a stage fails (a closure panicked).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// let mut got = flow::Flow::from_iter(1..=3).map(|x| x + 1).collect().await.unwrap();
    /// got.sort();
    /// assert_eq!(got, [2, 3, 4]);
    /// # }
    /// ```
    pub async fn collect(self) -> Result<Vec<T>, Error> {
        let mut stream = self.into_stream()?;
        let mut out = Vec::new();
        while let Some(mut batch) = stream.next_batch().await {
            if out.is_empty() {
                std::mem::swap(&mut out, &mut batch);
            } else {
                out.append(&mut batch);
            }
        }
        stream.result()?;
        Ok(out)
    }

    /// Runs the flow for its side effects.
    ///
    /// # Errors
    ///
    /// As [`collect`](Flow::collect).
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::ErrorKind;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// // A panic in a closure fails the flow instead of hanging it.
    /// let failed = flow::Flow::from_iter(0..10).map(|x| if x == 7 { panic!("seven") } else { x }).run().await;
    /// assert!(matches!(failed.unwrap_err().kind(), ErrorKind::Failed(_)));
    /// # }
    /// ```
    pub async fn run(self) -> Result<(), Error> {
        let mut stream = self.into_stream()?;
        while stream.next_batch().await.is_some() {}
        stream.result()
    }

    /// [`collect`](Flow::collect) for plain `main` functions and tests: runs the flow on a new
    /// multi-thread runtime and waits.
    ///
    /// # Errors
    ///
    /// As [`collect`](Flow::collect), and [`ErrorKind::BlockingInRuntime`] when called from
    /// inside a tokio runtime.
    pub fn collect_blocking(self) -> Result<Vec<T>, Error> {
        block_on(self.collect())
    }

    /// [`run`](Flow::run), blocking.
    ///
    /// # Errors
    ///
    /// As [`collect_blocking`](Flow::collect_blocking).
    pub fn run_blocking(self) -> Result<(), Error> {
        block_on(self.run())
    }

    /// Starts the flow as a task; the handle joins it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let running = flow::Flow::from_iter(0..100).map(|x| x * 2).spawn();
    /// assert!(running.join().await.is_ok());
    /// # }
    /// ```
    pub fn spawn(self) -> FlowHandle {
        match self.into_stream() {
            Ok(mut stream) => {
                let stages = stream.stages.clone();
                let task = tokio::spawn(async move {
                    while stream.next_batch().await.is_some() {}
                    stream.result()
                });
                FlowHandle { task, stages }
            }
            Err(e) => FlowHandle {
                task: tokio::spawn(async move { Err(e) }),
                stages: Stages::default(),
            },
        }
    }

    /// Runs the flow into a [`Sink`], in the order each stage of the last layer emits: every
    /// result is fed to the sink, which is flushed after each batch and closed at the end.
    /// Returns once the sink has taken (and flushed) everything, or the flow failed.
    ///
    /// A tokio `mpsc::Sender` becomes a `Sink` with `tokio_util::sync::PollSender`. For a
    /// sink that is not `Unpin`, pass `Box::pin(sink)`.
    ///
    /// # Back-pressure
    ///
    /// The sink is driven by a consumer stage ([`stage::into_sink`]) subscribed to every stage
    /// of the last layer: it asks for another batch only once the sink has taken the last one,
    /// so a slow sink slows the whole flow down, and nothing piles up in between.
    ///
    /// # Errors
    ///
    /// As [`collect`](Flow::collect); [`ErrorKind::Failed`] with [`Reason::Error`](stage::Reason::Error)
    /// when the sink fails (the flow then stops, and the events of the batch the sink did not
    /// take are lost).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (tx, rx) = futures::channel::mpsc::channel::<u64>(4);
    /// let (sent, got) = tokio::join!(
    ///     flow::Flow::from_iter(1..=100u64).stages(1).map(|x| x * 2).into_sink(tx),
    ///     rx.collect::<Vec<u64>>(),
    /// );
    /// sent.unwrap();
    /// assert_eq!(got, (1..=100).map(|x| x * 2).collect::<Vec<_>>());
    /// # }
    /// ```
    pub async fn into_sink<S>(self, sink: S) -> Result<(), Error>
    where
        S: Sink<T> + Send + Unpin + 'static,
        S::Error: fmt::Display,
    {
        let stages = Stages::default();
        let producers = self.start(&stages)?;
        // Temporary: the sink's consumer neither stops when the first of several last stages
        // finishes nor fails to subscribe to one that already has; it is shut down once every
        // stage of the flow has exited. If it fails (the sink did), the last stages lose
        // their only consumer and stop, and with them the flow.
        let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
        let mut builder = stage::into_sink(sink).name("flow.sink");
        for producer in &producers {
            builder = builder.subscribe_to(producer, opts.clone());
        }
        let consumer = match builder.start() {
            Ok(consumer) => consumer,
            Err(e) => {
                stages.abort();
                return Err(e.into());
            }
        };
        // Dropping this future stops the flow, as dropping a stream does.
        let mut guard = AbortOnDrop(Some(consumer.clone()));
        stages.exited().await;
        // Every last stage has exited, after sending what it had: the consumer has it all in
        // its mailbox, ahead of this shutdown.
        let _ = consumer.shutdown();
        let sunk = consumer.join().await;
        guard.0 = None;
        if let Some(reason) = stages.failure() {
            return Err(ErrorKind::Failed(reason).into());
        }
        if !sunk.is_normal() {
            return Err(ErrorKind::Failed(sunk).into());
        }
        Ok(())
    }

    /// Starts the flow feeding running consumers (or producer-consumers), each subscribed to
    /// every stage of the flow's last layer with `opts` (GenStage's `into_stages`).
    ///
    /// # Errors
    ///
    /// An invalid option, or a subscription that fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use stage::{Call, CancelMode, Consumer, Context, ReplyTo, SubscribeOptions, SubscriptionId};
    ///
    /// struct Count(usize);
    ///
    /// impl Consumer for Count {
    ///     type In = u32;
    ///     async fn handle_events(&mut self, events: Vec<u32>, _: SubscriptionId, _: &mut Context<Self>) {
    ///         self.0 += events.len();
    ///     }
    /// }
    ///
    /// impl Call<()> for Count {
    ///     type Reply = usize;
    ///     async fn handle_call(&mut self, _: (), reply: ReplyTo<usize>, _: &mut Context<Self>) {
    ///         reply.send(self.0);
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let count = stage::consumer(Count(0)).start().unwrap();
    /// let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
    /// flow::Flow::from_iter(0..50u32).stages(2).into_stages(&[count.clone()], opts).await.unwrap();
    /// # for _ in 0..1000 { tokio::task::yield_now().await; }
    /// assert_eq!(count.call(()).await, Ok(50));
    /// # }
    /// ```
    pub async fn into_stages<S>(
        self,
        consumers: &[StageHandle<S>],
        opts: SubscribeOptions,
    ) -> Result<(), Error>
    where
        S: Consumer<In = T>,
    {
        let producers = self.into_producers()?;
        for consumer in consumers {
            for producer in &producers {
                consumer
                    .subscribe(producer, opts.clone())
                    .await
                    .map_err(|e| Error::misuse(format!("into_stages: {e}")))?;
            }
        }
        Ok(())
    }

    /// Pipes the flow through running producer-consumers and continues from what they emit
    /// (GenStage's `through_stages`).
    ///
    /// # Errors
    ///
    /// As [`into_stages`](Flow::into_stages).
    pub async fn through_stages<S, R>(
        self,
        stages: &[StageHandle<S>],
        opts: SubscribeOptions,
    ) -> Result<Flow<R>, Error>
    where
        S: Consumer<In = T> + Producer<Out = R>,
        R: Send + 'static,
    {
        self.into_stages(stages, opts).await?;
        Ok(Flow::from_stages(stages.iter().map(|s| s.as_producer())))
    }
}

fn block_on<R>(future: impl std::future::Future<Output = Result<R, Error>>) -> Result<R, Error> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(ErrorKind::BlockingInRuntime.into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ErrorKind::Runtime(e.to_string()))?;
    runtime.block_on(future)
}

/// The results of a running flow, as a `Stream`. Made by [`Flow::into_stream`].
///
/// The stream ends once every stage of the flow has exited, so that
/// [`result`](FlowStream::result) then knows how each of them ended.
pub struct FlowStream<T: Send + 'static> {
    inner: ConsumerStream<T>,
    stages: Stages,
    ending: Ending,
}

/// How far the end of a [`FlowStream`] has come.
enum Ending {
    /// Results may still come.
    Running,
    /// The last stages have all ended; waiting for every stage's exit to be known.
    Waiting(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Every stage has exited.
    Ended,
}

impl<T: Send + 'static> FlowStream<T> {
    /// Once the stream has ended: whether the flow finished or failed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Failed`] with the failing stage's reason, [`ErrorKind::Aborted`] for a flow
    /// stopped with [`FlowHandle::abort`].
    pub fn result(&self) -> Result<(), Error> {
        if let Some(reason) = self.stages.failure() {
            return Err(ErrorKind::Failed(reason).into());
        }
        if self.stages.aborted() {
            return Err(ErrorKind::Aborted.into());
        }
        match self.inner.exit_reason() {
            Some(reason) if !reason.is_normal() => Err(ErrorKind::Failed(reason).into()),
            _ => Ok(()),
        }
    }

    /// The next whole batch of results.
    pub async fn next_batch(&mut self) -> Option<Vec<T>> {
        if let Some(batch) = self.inner.next_batch().await {
            return Some(batch);
        }
        std::future::poll_fn(|cx| self.poll_ended(cx)).await;
        None
    }

    /// Once the last stages have ended: waits until every stage's exit is known.
    fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.ending {
                Ending::Running => {
                    let stages = self.stages.clone();
                    self.ending = Ending::Waiting(Box::pin(async move { stages.exited().await }));
                }
                Ending::Waiting(exited) => {
                    ready!(exited.as_mut().poll(cx));
                    self.ending = Ending::Ended;
                }
                Ending::Ended => return Poll::Ready(()),
            }
        }
    }

    /// Fires the trigger `name` (as [`TriggerName::Custom`](crate::TriggerName::Custom)) on
    /// every stage of every layer of the running flow (Flow's `{:trigger, name}` message):
    /// a reducing layer's `on_trigger` runs for its current window (for fixed windows, every
    /// window it holds) and what it returns is emitted. Returns how many stages it reached
    /// (stages that have finished are not).
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, TriggerName};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A reduce over an endless source, sampled on demand.
    /// let mut stream = Flow::from_iter(0u64..)
    ///     .stages(1)
    ///     .reduce(|| 0u64, |n, _| *n += 1)
    ///     .on_trigger(|n, t| if t.name == TriggerName::Custom("sample".into()) { vec![*n] } else { vec![] })
    ///     .into_stream()
    ///     .unwrap();
    /// assert!(stream.trigger("sample") >= 1);
    /// let sampled = stream.next().await.unwrap();
    /// assert!(sampled < u64::MAX);
    /// # }
    /// ```
    pub fn trigger(&self, name: &str) -> usize {
        self.stages.fire(name)
    }
}

impl<T: Send + 'static> fmt::Debug for FlowStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowStream").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Stream for FlowStream<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = self.get_mut();
        if let Ending::Running = this.ending {
            if let Some(item) = ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                return Poll::Ready(Some(item));
            }
        }
        ready!(this.poll_ended(cx));
        Poll::Ready(None)
    }
}

/// A flow running as a task. Made by [`Flow::spawn`].
///
/// [`abort`](FlowHandle::abort) stops it now, [`shutdown`](FlowHandle::shutdown) stops it
/// gracefully, [`join`](FlowHandle::join) waits for it.
///
/// Dropping the handle does not stop the flow: like tokio's `JoinHandle`, it detaches it,
/// and the flow runs on until it finishes. To stop a flow whose handle is gone, give it a
/// token with [`Flow::cancel_on`] before spawning it.
pub struct FlowHandle {
    task: tokio::task::JoinHandle<Result<(), Error>>,
    stages: Stages,
}

impl fmt::Debug for FlowHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowHandle")
            .field("finished", &self.task.is_finished())
            .finish_non_exhaustive()
    }
}

impl FlowHandle {
    /// Fires the trigger `name` on every stage of every layer of the running flow, as
    /// [`FlowStream::trigger`] does. Returns how many stages it reached.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, TriggerName};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let record = Arc::clone(&seen);
    /// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    /// let source = futures::stream::once(async move { let _ = rx.await; 1u64 });
    /// let running = Flow::from_stream(source)
    ///     .stages(1)
    ///     .reduce(|| 0u64, |n, x| *n += x)
    ///     .on_trigger(move |n, t| {
    ///         record.lock().unwrap().push((t.name.clone(), *n));
    ///         Vec::<u64>::new()
    ///     })
    ///     .spawn();
    /// while running.trigger("flush") == 0 {
    ///     tokio::task::yield_now().await;
    /// }
    /// let _ = tx.send(());
    /// running.join().await.unwrap();
    /// let seen = seen.lock().unwrap();
    /// assert_eq!(seen[0].0, TriggerName::Custom("flush".into()));
    /// assert_eq!(seen.last().unwrap(), &(TriggerName::Done, 1));
    /// # }
    /// ```
    pub fn trigger(&self, name: &str) -> usize {
        self.stages.fire(name)
    }

    /// Stops the flow now: every stage stops as soon as the handler it is running returns
    /// (for a stage handling a message of many events, between two of its batches), ahead of
    /// the messages waiting for it. [`join`](FlowHandle::join) then returns
    /// [`ErrorKind::Aborted`].
    ///
    /// # What happens to events in flight
    ///
    /// They are dropped: the events a stage had received and not handled, what it held in
    /// its buffer, and what its windows had accumulated (no `Done` trigger fires). The
    /// sources stop reading: an iterator or stream source is dropped with what it had not
    /// yet produced.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::ErrorKind;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let running = flow::Flow::from_iter(0u64..).map(|x| x + 1).spawn(); // endless
    /// running.abort();
    /// assert!(matches!(running.join().await.unwrap_err().kind(), ErrorKind::Aborted));
    /// # }
    /// ```
    pub fn abort(&self) {
        self.stages.abort();
    }

    /// Stops the flow gracefully: its sources stop taking in more, and the rest of the flow
    /// finishes as if they had run out. [`join`](FlowHandle::join) then returns as for a flow
    /// that finished.
    ///
    /// # What happens to events in flight
    ///
    /// Nothing is lost that entered the flow: an iterator or stream source stops reading
    /// (what it had not yet read stays unread) and sends on what it holds; a collection
    /// source ([`Flow::from_vec`], [`Flow::from_shared`]) stops handing out batches. Every
    /// event already taken in goes through every layer, each window fires its `Done`
    /// trigger as at the end of the input, and what the triggers emit reaches the finisher.
    /// Running producers the flow reads ([`Flow::from_stages`]) are not the flow's to stop:
    /// the flow goes on until they finish (stop them with their own handles or tokens).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (seen, counted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    /// let (s, c) = (Arc::clone(&seen), Arc::clone(&counted));
    /// let running = flow::Flow::from_iter(0u64..) // endless
    ///     .inspect(move |_| { s.fetch_add(1, Ordering::Relaxed); })
    ///     .reduce(|| 0u64, |n, _| *n += 1)
    ///     .on_trigger(move |n, _| { c.fetch_add(*n, Ordering::Relaxed); Vec::<u64>::new() })
    ///     .spawn();
    /// running.shutdown();
    /// running.join().await.unwrap();
    /// // Every event that entered the flow was counted at its `Done` trigger.
    /// assert_eq!(counted.load(Ordering::Relaxed), seen.load(Ordering::Relaxed));
    /// # }
    /// ```
    pub fn shutdown(&self) {
        self.stages.drain();
    }

    /// Whether the flow has finished (the task that runs it has returned).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the flow to finish.
    ///
    /// # Errors
    ///
    /// As [`Flow::run`]; [`ErrorKind::Aborted`] after [`abort`](FlowHandle::abort);
    /// [`ErrorKind::Failed`] if the task itself panicked or was cancelled.
    pub async fn join(self) -> Result<(), Error> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ErrorKind::Failed(stage::Reason::error(e.to_string())).into()),
        }
    }
}

/// Aborts a consumer when dropped while it holds it (a finisher's future dropped before it
/// finished).
struct AbortOnDrop<S>(Option<StageHandle<S>>);

impl<S> Drop for AbortOnDrop<S> {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let _ = consumer.abort();
        }
    }
}
