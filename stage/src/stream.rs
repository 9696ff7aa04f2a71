//! Bridges between stages and iterators or streams.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::address::AsProducer;
use crate::consumer::Consumer;
use crate::context::Context;
use crate::dispatcher::Dispatcher;
use crate::error::{Cancel, Reason, StartError, panic_message};
use crate::handle::StageHandle;
use crate::message::Cast;
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};
use crate::producer::Producer;
use crate::start::ProducerBuilder;

/// A producer that emits the items of an iterator, exactly as many as are asked for, and
/// finishes (stops with [`Reason::Normal`] once its buffer is empty) when the iterator ends.
///
/// Made by [`from_iter`].
pub struct IterProducer<I> {
    iter: I,
    stop_on_cancel: bool,
    consumers: usize,
}

impl<I> IterProducer<I> {
    /// A producer over `iter` (what [`from_iter`] starts).
    pub fn new(iter: I) -> Self {
        IterProducer {
            iter,
            stop_on_cancel: false,
            consumers: 0,
        }
    }

    /// Stops normally when its last consumer cancels or exits (GenStage's
    /// `on_cancel: :stop`), instead of waiting for new consumers.
    pub fn stop_on_cancel(mut self) -> Self {
        self.stop_on_cancel = true;
        self
    }
}

impl<I> fmt::Debug for IterProducer<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IterProducer")
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

impl<I> Producer for IterProducer<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Out = I::Item;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<I::Item> {
        let events: Vec<_> = self.iter.by_ref().take(demand).collect();
        if events.len() < demand {
            ctx.finish();
        }
        events
    }

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) {
        self.consumers += 1;
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        self.consumers -= 1;
        if self.stop_on_cancel && self.consumers == 0 {
            ctx.stop(Reason::Normal);
        }
    }
}

/// Prepares a producer over an iterator (GenStage's `from_enumerable`). Each demand pulls
/// exactly that many items; when the iterator ends the producer stops normally after its buffer
/// has been dispatched, so its permanent consumers stop too. An iterator that panics fails the
/// producer with [`Reason::Panic`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// use stage::SubscribeOptions;
///
/// let numbers = stage::from_iter(1..=25).start().unwrap();
/// let got: Vec<u32> = stage::stream([(&numbers, SubscribeOptions::new().max_demand(10))])
///     .unwrap()
///     .collect()
///     .await;
/// assert_eq!(got, (1..=25).collect::<Vec<_>>());
/// # }
/// ```
pub fn from_iter<I>(iter: I) -> ProducerBuilder<IterProducer<I::IntoIter>>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    crate::producer(IterProducer::new(iter.into_iter()))
}

/// A [`Stream`] a producer can be made from: every `Stream` is one.
///
/// This trait exists so that passing something that is not a stream (a tokio channel's
/// `Receiver`, say) to [`from_stream`] gets an error that says which wrapper to use.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Stream`, so `from_stream` cannot make a producer of it",
    label = "not a `Stream`",
    note = "a tokio channel receiver is not a `Stream` itself: wrap it with `tokio_stream::wrappers::ReceiverStream::new(rx)` (or `UnboundedReceiverStream`, `BroadcastStream`, `WatchStream`, `IntervalStream`), or make the channel with `stage::channel`"
)]
pub trait EventStream: Stream {}

impl<St: Stream + ?Sized> EventStream for St {}

/// What feeds a [`StreamProducer`]: a batch of items, or the end of the stream.
#[derive(Debug)]
pub enum Feed<T> {
    /// Items the stream yielded.
    Batch(Vec<T>),
    /// The stream ended.
    End,
}

/// A producer that emits the items of a `Stream` as they come, never more than asked for.
///
/// A feeder task owns the stream and pulls from it only while there is unmet demand, taking at
/// once every item that is ready (up to the demand) so that items move in batches. The
/// producer never waits on the stream itself, so calls and cancels reach it whatever the stream
/// does. Made by [`from_stream`].
pub struct StreamProducer<T> {
    demand: mpsc::UnboundedSender<usize>,
    stop_on_cancel: bool,
    consumers: usize,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for StreamProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Producer for StreamProducer<T> {
    type Out = T;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<T> {
        let _ = self.demand.send(demand);
        Vec::new()
    }

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) {
        self.consumers += 1;
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        self.consumers -= 1;
        if self.stop_on_cancel && self.consumers == 0 {
            ctx.stop(Reason::Normal);
        }
    }
}

impl<T: Send + 'static> Cast<Feed<T>> for StreamProducer<T> {
    async fn handle_cast(&mut self, feed: Feed<T>, ctx: &mut Context<Self>) {
        match feed {
            Feed::Batch(items) => ctx.emit(items),
            Feed::End => ctx.finish(),
        }
    }
}

/// Configures a producer over a `Stream` before it starts. Made by [`from_stream`].
#[must_use = "a stage does nothing until it is started"]
pub struct StreamBuilder<St: Stream> {
    stream: St,
    dispatcher: Option<Box<dyn Dispatcher<St::Item>>>,
    name: Option<Arc<str>>,
    stop_on_cancel: bool,
    stall_warning: Option<std::time::Duration>,
    parent_span: Option<tracing::Span>,
    cancel_on: Option<tokio_util::sync::CancellationToken>,
}

impl<St: Stream> fmt::Debug for StreamBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBuilder")
            .field("name", &self.name)
            .field("stop_on_cancel", &self.stop_on_cancel)
            .finish_non_exhaustive()
    }
}

/// Prepares a producer over a `Stream`; once started it stops normally when the stream has
/// ended and its buffer has been dispatched. A stream that panics fails the producer with
/// [`Reason::Panic`].
///
/// A tokio channel receiver is not a `Stream` itself: wrap it in
/// `tokio_stream::wrappers::ReceiverStream` (or `UnboundedReceiverStream`, `BroadcastStream`,
/// `IntervalStream`, ...) first. For a channel into a pipeline, [`channel`](crate::channel)
/// also holds back its senders when the pipeline is slow.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
///
/// let words = stage::from_stream(futures::stream::iter(["a", "b", "c"])).start().unwrap();
/// let got: Vec<&str> = stage::stream([(&words, Default::default())]).unwrap().collect().await;
/// assert_eq!(got, ["a", "b", "c"]);
/// # }
/// ```
///
/// A channel's receiver needs its wrapper; without it the error says which one:
///
/// ```compile_fail
/// let (_tx, rx) = tokio::sync::mpsc::channel::<u32>(8);
/// let _ = stage::from_stream(rx); // `Receiver<u32>` is not a `Stream`: wrap it with `ReceiverStream`
/// ```
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (_tx, rx) = tokio::sync::mpsc::channel::<u32>(8);
/// let numbers = stage::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).start().unwrap();
/// # let _ = numbers;
/// # }
/// ```
pub fn from_stream<St>(stream: St) -> StreamBuilder<St>
where
    St: EventStream + Send + 'static,
    St::Item: Send + 'static,
{
    StreamBuilder {
        stream,
        dispatcher: None,
        name: None,
        stop_on_cancel: false,
        stall_warning: None,
        parent_span: None,
        cancel_on: None,
    }
}

impl<St> StreamBuilder<St>
where
    St: Stream + Send + 'static,
    St::Item: Send + 'static,
{
    /// The producer's dispatcher (default [`DemandDispatcher`](crate::DemandDispatcher)).
    pub fn dispatcher(mut self, dispatcher: impl Dispatcher<St::Item>) -> Self {
        self.dispatcher = Some(Box::new(dispatcher));
        self
    }

    /// A name for logs (default `stage::from_stream`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Stops normally, dropping the stream, when the last consumer cancels or exits, instead of
    /// waiting for new consumers.
    pub fn stop_on_cancel(mut self) -> Self {
        self.stop_on_cancel = true;
        self
    }

    /// See [`ProducerBuilder::stall_warning`]. The stream being slow to yield is not a stall
    /// the producer reports: its consumers' watchdogs do.
    pub fn stall_warning(mut self, after: std::time::Duration) -> Self {
        self.stall_warning = Some(after);
        self
    }

    /// See [`ProducerBuilder::parent_span`].
    pub fn parent_span(mut self, span: tracing::Span) -> Self {
        self.parent_span = Some(span);
        self
    }

    /// See [`ProducerBuilder::cancel_on`]: the producer shuts down (dropping the stream) when
    /// `token` is cancelled.
    pub fn cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel_on = Some(token);
        self
    }

    /// Starts the producer and the task that feeds it.
    ///
    /// # Errors
    ///
    /// [`StartError::NoRuntime`] outside a tokio runtime.
    pub fn start(self) -> Result<StageHandle<StreamProducer<St::Item>>, StartError> {
        self.start_with(feed)
    }

    /// Starts the producer, and `feeder` on a task of its own with the stream, the demand the
    /// producer receives, and the producer's handle to cast [`Feed`]s to.
    pub(crate) fn start_with<F, Fut>(
        self,
        feeder: F,
    ) -> Result<StageHandle<StreamProducer<St::Item>>, StartError>
    where
        F: FnOnce(St, mpsc::UnboundedReceiver<usize>, StageHandle<StreamProducer<St::Item>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (demand_tx, demand_rx) = mpsc::unbounded_channel();
        let producer = StreamProducer {
            demand: demand_tx,
            stop_on_cancel: self.stop_on_cancel,
            consumers: 0,
            _items: std::marker::PhantomData,
        };
        let mut builder = crate::producer(producer)
            .name(self.name.unwrap_or_else(|| Arc::from("stage::from_stream")));
        if let Some(dispatcher) = self.dispatcher {
            builder = builder.dispatcher(dispatcher);
        }
        if let Some(after) = self.stall_warning {
            builder = builder.stall_warning(after);
        }
        if let Some(span) = self.parent_span {
            builder = builder.parent_span(span);
        }
        if let Some(token) = self.cancel_on {
            builder = builder.cancel_on(token);
        }
        let handle = builder.start()?;
        tokio::spawn(feeder(self.stream, demand_rx, handle.clone()));
        Ok(handle)
    }
}

/// Runs the feeder; a panic in the stream fails the producer instead of leaving it waiting.
async fn feed<St>(
    stream: St,
    demand: mpsc::UnboundedReceiver<usize>,
    producer: StageHandle<StreamProducer<St::Item>>,
) where
    St: Stream + Send + 'static,
    St::Item: Send + 'static,
{
    let pumped = AssertUnwindSafe(pump(stream, demand, &producer))
        .catch_unwind()
        .await;
    if let Err(payload) = pumped {
        let reason = Reason::Panic(panic_message(&*payload));
        tracing::error!(stage = %producer.name(), %reason, "the stream panicked");
        let _ = producer.stop(reason);
    }
}

/// Pulls from the stream while there is unmet demand; ends once the stream ends or the
/// producer is gone (its demand channel closes with it, dropping the stream).
async fn pump<St>(
    stream: St,
    mut demand: mpsc::UnboundedReceiver<usize>,
    producer: &StageHandle<StreamProducer<St::Item>>,
) where
    St: Stream + Send + 'static,
    St::Item: Send + 'static,
{
    let mut stream = std::pin::pin!(stream);
    let mut wanted = 0usize;
    loop {
        while let Ok(n) = demand.try_recv() {
            wanted = wanted.saturating_add(n);
        }
        if wanted == 0 {
            match demand.recv().await {
                Some(n) => wanted = wanted.saturating_add(n),
                None => return,
            }
            continue;
        }
        let next = loop {
            tokio::select! {
                next = stream.next() => break next,
                more = demand.recv() => match more {
                    Some(n) => wanted = wanted.saturating_add(n),
                    // The producer stopped while the stream had nothing ready: let go of it.
                    None => return,
                },
            }
        };
        let Some(first) = next else {
            let _ = producer.cast(Feed::End);
            return;
        };
        let mut batch = vec![first];
        let mut ended = false;
        while batch.len() < wanted {
            match stream.next().now_or_never() {
                Some(Some(item)) => batch.push(item),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        wanted -= batch.len();
        if producer.cast(Feed::Batch(batch)).is_err() {
            return;
        }
        if ended {
            let _ = producer.cast(Feed::End);
            return;
        }
    }
}

/// The consumer behind [`stream`]: hands each batch to the stream and waits until the stream
/// has taken it before its demand is refilled.
struct Forward<T> {
    tx: mpsc::Sender<Vec<T>>,
    subscriptions: Vec<SubscriptionId>,
    closing: bool,
}

/// The stream was dropped: cancel every subscription.
struct Close;

impl<T: Send + 'static> Forward<T> {
    fn close(&mut self, ctx: &mut Context<Self>) {
        if !self.closing {
            self.closing = true;
            for id in &self.subscriptions {
                ctx.cancel(*id, Reason::Normal);
            }
        }
    }
}

impl<T: Send + 'static> Consumer for Forward<T> {
    type In = T;

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.subscriptions.push(id);
        SubscriptionMode::Automatic
    }

    async fn handle_start(&mut self, ctx: &mut Context<Self>) {
        if self.subscriptions.is_empty() {
            ctx.stop(Reason::Normal);
        }
    }

    async fn handle_events(&mut self, events: Vec<T>, _: SubscriptionId, ctx: &mut Context<Self>) {
        if self.tx.send(events).await.is_err() {
            self.close(ctx);
        }
    }

    async fn handle_cancel(&mut self, cancel: Cancel, id: SubscriptionId, ctx: &mut Context<Self>) {
        self.subscriptions.retain(|s| *s != id);
        if self.subscriptions.is_empty() {
            ctx.stop(cancel.into_reason());
        }
    }
}

impl<T: Send + 'static> Cast<Close> for Forward<T> {
    async fn handle_cast(&mut self, _: Close, ctx: &mut Context<Self>) {
        if self.subscriptions.is_empty() {
            ctx.stop(Reason::Normal);
        } else {
            self.close(ctx);
        }
    }
}

/// Consumes one or more producers as a `Stream`, with demand (GenStage's `stream`).
///
/// Each producer gets its own subscription and options; the stream asks for events only as it
/// is polled (one batch in hand, one waiting). It ends when no subscription is left: when every
/// producer has finished or cancelled. [`ConsumerStream::exit_reason`] then tells why.
/// Dropping the stream early cancels the subscriptions.
///
/// # Errors
///
/// [`StartError::Option`] naming an invalid option, [`StartError::ProducerClosed`] when a
/// producer is not running (unless its subscription is temporary).
pub fn stream<'a, T, P, I>(producers: I) -> Result<ConsumerStream<T>, StartError>
where
    T: Send + 'static,
    P: AsProducer<T> + 'a,
    I: IntoIterator<Item = (&'a P, SubscribeOptions)>,
{
    let (tx, rx) = mpsc::channel(1);
    let forward = Forward {
        tx,
        subscriptions: Vec::new(),
        closing: false,
    };
    let mut builder = crate::consumer(forward).name("stage::stream");
    for (producer, opts) in producers {
        builder = builder.subscribe_to(producer, opts);
    }
    let handle = builder.start()?;
    Ok(ConsumerStream {
        rx,
        current: Vec::new().into_iter(),
        handle,
    })
}

/// A stream of the events of one or more producers. Made by [`stream`].
pub struct ConsumerStream<T: Send + 'static> {
    rx: mpsc::Receiver<Vec<T>>,
    current: std::vec::IntoIter<T>,
    handle: StageHandle<Forward<T>>,
}

impl<T: Send + 'static> ConsumerStream<T> {
    /// Why the stream ended, once it has: the reason of the last subscription to end.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.handle.exit_reason()
    }

    /// The next whole batch, as the producers sent it (fewer wakes than item by item).
    pub async fn next_batch(&mut self) -> Option<Vec<T>> {
        let rest: Vec<T> = std::mem::replace(&mut self.current, Vec::new().into_iter()).collect();
        if !rest.is_empty() {
            return Some(rest);
        }
        self.rx.recv().await
    }
}

impl<T: Send + 'static> fmt::Debug for ConsumerStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerStream")
            .field("held", &self.current.len())
            .finish()
    }
}

// Nothing in the stream is pinned structurally.
impl<T: Send + 'static> Unpin for ConsumerStream<T> {}

impl<T: Send + 'static> Stream for ConsumerStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(item) = self.current.next() {
                return Poll::Ready(Some(item));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(batch) => self.current = batch.into_iter(),
                None => return Poll::Ready(None),
            }
        }
    }
}

impl<T: Send + 'static> Drop for ConsumerStream<T> {
    fn drop(&mut self) {
        let _ = self.handle.cast(Close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_dispatcher_is_a_demand_dispatcher() {
        let d: Box<dyn Dispatcher<u8>> = Box::new(crate::DemandDispatcher::new());
        assert!(matches!(
            d.contract(),
            crate::Contract::Plain {
                dispatcher: "DemandDispatcher"
            }
        ));
    }
}
