//! A channel into a pipeline: a producer fed by any number of senders, which wait while the
//! pipeline is slow instead of piling events up.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::dispatcher::Dispatcher;
use crate::error::{OptionError, StartError};
use crate::handle::StageHandle;
use crate::stream::{Feed, StreamBuilder, StreamProducer};

/// The largest channel capacity (tokio's limit for a bounded channel).
pub const MAX_CHANNEL_CAPACITY: usize = usize::MAX >> 3;

/// Makes a channel into a pipeline: a [`Sender`] to push events from anywhere (request
/// handlers, other tasks), and the builder of the producer that emits them.
///
/// The channel holds at most `capacity` events that no consumer has asked for yet: when it is
/// full, [`Sender::send`] waits (it never drops), and [`Sender::try_send`] gives the event back.
/// Events are emitted in the order the channel received them, and only as consumers ask for
/// them. Senders can be cloned; when the last one is dropped the producer finishes (it stops
/// normally once everything sent has been dispatched), and so do its permanent consumers.
///
/// `capacity` must be at least 1; an invalid capacity makes
/// [`start`](ChannelBuilder::start) fail with an [`OptionError`] (and the senders report the
/// channel closed).
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, builder) = stage::channel::<String>(100);
/// let requests = builder.name("requests").start().unwrap();
/// let mut handled = stage::stream([(&requests, Default::default())]).unwrap();
///
/// for who in ["ada", "grace"] {
///     let tx = tx.clone();
///     tokio::spawn(async move { tx.send(format!("hello {who}")).await.unwrap() });
/// }
/// drop(tx); // the spawned senders hold their own clones
///
/// let mut got: Vec<String> = (&mut handled).collect().await;
/// got.sort();
/// assert_eq!(got, ["hello ada", "hello grace"]);
/// # }
/// ```
pub fn channel<T: Send + 'static>(capacity: usize) -> (Sender<T>, ChannelBuilder<T>) {
    let invalid = if capacity == 0 {
        Some(OptionError::new("capacity", "must be at least 1", capacity))
    } else if capacity > MAX_CHANNEL_CAPACITY {
        Some(OptionError::new(
            "capacity",
            format!("must be at most {MAX_CHANNEL_CAPACITY}"),
            capacity,
        ))
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(capacity.clamp(1, MAX_CHANNEL_CAPACITY));
    let builder = ChannelBuilder {
        inner: crate::from_stream(ReceiverStream::new(rx)).name("stage::channel"),
        invalid,
    };
    (Sender { tx }, builder)
}

/// Configures the producer of a [`channel`] before it starts.
#[must_use = "a stage does nothing until it is started"]
pub struct ChannelBuilder<T: Send + 'static> {
    inner: StreamBuilder<ReceiverStream<T>>,
    invalid: Option<OptionError>,
}

impl<T: Send + 'static> fmt::Debug for ChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("inner", &self.inner)
            .field("invalid", &self.invalid)
            .finish()
    }
}

impl<T: Send + 'static> ChannelBuilder<T> {
    /// A name for logs (default `stage::channel`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.inner = self.inner.name(name);
        self
    }

    /// The producer's dispatcher (default [`DemandDispatcher`](crate::DemandDispatcher)).
    pub fn dispatcher(mut self, dispatcher: impl Dispatcher<T>) -> Self {
        self.inner = self.inner.dispatcher(dispatcher);
        self
    }

    /// Stops the producer normally when its last consumer leaves, instead of waiting for new
    /// consumers; senders then see the channel closed.
    pub fn stop_on_cancel(mut self) -> Self {
        self.inner = self.inner.stop_on_cancel();
        self
    }

    /// See [`ProducerBuilder::stall_warning`](crate::ProducerBuilder::stall_warning).
    pub fn stall_warning(mut self, after: std::time::Duration) -> Self {
        self.inner = self.inner.stall_warning(after);
        self
    }

    /// See [`ProducerBuilder::parent_span`](crate::ProducerBuilder::parent_span).
    pub fn parent_span(mut self, span: tracing::Span) -> Self {
        self.inner = self.inner.parent_span(span);
        self
    }

    /// Shuts the producer down when `token` is cancelled: senders see the channel closed, and
    /// events still in the channel are dropped.
    pub fn cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.inner = self.inner.cancel_on(token);
        self
    }

    /// Starts the producer.
    ///
    /// # Errors
    ///
    /// [`StartError::Option`] for an invalid capacity, [`StartError::NoRuntime`] outside a
    /// tokio runtime.
    pub fn start(self) -> Result<StageHandle<StreamProducer<T>>, StartError> {
        if let Some(invalid) = self.invalid {
            return Err(StartError::Option(invalid));
        }
        self.inner.start_with(pump)
    }
}

/// Feeds the producer from the channel: waits for demand, then takes up to that many events at
/// once (which also gives their room back to the senders at once).
async fn pump<T: Send + 'static>(
    stream: ReceiverStream<T>,
    mut demand: mpsc::UnboundedReceiver<usize>,
    producer: StageHandle<StreamProducer<T>>,
) {
    let mut rx = stream.into_inner();
    let mut wanted = 0usize;
    let mut batch = Vec::new();
    loop {
        while let Ok(n) = demand.try_recv() {
            wanted = wanted.saturating_add(n);
        }
        if wanted == 0 {
            match demand.recv().await {
                Some(n) => wanted = n,
                None => return,
            }
            continue;
        }
        let got = tokio::select! {
            got = rx.recv_many(&mut batch, wanted.min(rx.max_capacity())) => got,
            more = demand.recv() => match more {
                Some(n) => {
                    wanted = wanted.saturating_add(n);
                    continue;
                }
                // The producer stopped: the channel closes with the receiver.
                None => return,
            },
        };
        if got == 0 {
            // Every sender is gone and the channel is empty.
            let _ = producer.cast(Feed::End);
            return;
        }
        wanted -= got;
        if producer
            .cast(Feed::Batch(std::mem::take(&mut batch)))
            .is_err()
        {
            return;
        }
    }
}

/// The sending half of a [`channel`]. Cheap to clone; the producer finishes when every clone
/// has been dropped.
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.tx.capacity())
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<T> Sender<T> {
    /// Sends `event`, waiting while the channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`], with the event, when the producer has stopped (or never started).
    pub async fn send(&self, event: T) -> Result<(), SendError<T>> {
        self.tx.send(event).await.map_err(|e| SendError(e.0))
    }

    /// Sends every event of `events` in order, waiting while the channel is full. Reserves
    /// room for many events at a time, which is cheaper than sending them one by one.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the first event not sent when the producer has stopped; the events
    /// after it are dropped with the iterator. Events before it were sent.
    pub async fn send_all<I>(&self, events: I) -> Result<(), SendError<T>>
    where
        I: IntoIterator<Item = T>,
    {
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let (lower, _) = events.size_hint();
            let room = lower.clamp(1, self.tx.max_capacity());
            match self.tx.reserve_many(room).await {
                Ok(permits) => {
                    for permit in permits {
                        match events.next() {
                            Some(event) => permit.send(event),
                            None => break,
                        }
                    }
                }
                Err(_) => {
                    let first = events.next().expect("peeked");
                    return Err(SendError(first));
                }
            }
        }
        Ok(())
    }

    /// Sends `event` if the channel has room now.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], each with the event.
    pub fn try_send(&self, event: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(event) => TrySendError::Full(event),
            mpsc::error::TrySendError::Closed(event) => TrySendError::Closed(event),
        })
    }

    /// Whether the producer has stopped: every send fails from now on.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits until the producer has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// How many more events the channel has room for now.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// The channel's capacity, as given to [`channel`].
    pub fn max_capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// A [`Sender::send`] failed because the channel's producer has stopped. Holds the event.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("the channel's producer has stopped")]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The event that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// A [`Sender::try_send`] failed. Holds the event.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// The channel is full: the pipeline has not caught up yet.
    #[error("the channel is full")]
    Full(T),
    /// The channel's producer has stopped.
    #[error("the channel's producer has stopped")]
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The event that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(event) | TrySendError::Closed(event) => event,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}
