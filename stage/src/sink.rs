//! Ways out of a pipeline: consumers that forward their events into a `futures::Sink` or a
//! tokio channel, with back-pressure.

use std::fmt;
use std::marker::PhantomData;

use futures::{Sink, SinkExt};
use tokio::sync::mpsc;

use crate::consumer::Consumer;
use crate::context::Context;
use crate::error::Reason;
use crate::options::SubscriptionId;
use crate::start::ConsumerBuilder;

/// A consumer that forwards every event into a [`Sink`]. Made by [`into_sink`].
pub struct SinkConsumer<T, S> {
    sink: S,
    _events: PhantomData<fn(T)>,
}

impl<T, S> fmt::Debug for SinkConsumer<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkConsumer")
    }
}

impl<T, S> Consumer for SinkConsumer<T, S>
where
    T: Send + 'static,
    S: Sink<T> + Send + Unpin + 'static,
    S::Error: fmt::Display,
{
    type In = T;

    async fn handle_events(&mut self, events: Vec<T>, _: SubscriptionId, ctx: &mut Context<Self>) {
        let total = events.len();
        let mut fed = 0;
        let mut failed = None;
        for event in events {
            if let Err(error) = self.sink.feed(event).await {
                failed = Some(error.to_string());
                break;
            }
            fed += 1;
        }
        if failed.is_none() {
            failed = self.sink.flush().await.err().map(|e| e.to_string());
        }
        if let Some(error) = failed {
            // The event the sink refused and those after it never get anywhere.
            let lost = total - fed;
            ctx.count_dropped(lost);
            tracing::error!(stage = %ctx.name(), %error, dropped = lost, "the sink failed");
            ctx.stop(Reason::error(format!("the sink failed: {error}")));
        }
    }

    async fn terminate(&mut self, _: &Reason) {
        if let Err(error) = self.sink.close().await {
            tracing::warn!(%error, "the sink failed to close");
        }
    }
}

/// Prepares a consumer that forwards every event it receives into `sink`, in order, flushing
/// after each batch; it asks for more only once the sink has taken the batch, so a slow sink
/// slows the pipeline down. The sink is closed when the consumer stops.
///
/// A sink that fails stops the consumer with [`Reason::Error`]; the events of that batch it
/// did not take are counted as dropped. The sink must be `Unpin`: pin a sink that is not with
/// `Box::pin`.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = futures::channel::mpsc::channel::<u64>(8);
/// let numbers = stage::from_iter(1..=100u64).start().unwrap();
/// stage::into_sink(tx).subscribe_to(&numbers, Default::default()).start().unwrap();
/// let got: Vec<u64> = rx.collect().await;
/// assert_eq!(got, (1..=100).collect::<Vec<_>>());
/// # }
/// ```
pub fn into_sink<T, S>(sink: S) -> ConsumerBuilder<SinkConsumer<T, S>>
where
    T: Send + 'static,
    S: Sink<T> + Send + Unpin + 'static,
    S::Error: fmt::Display,
{
    crate::consumer(SinkConsumer {
        sink,
        _events: PhantomData,
    })
}

/// A consumer that forwards every event into a tokio [`mpsc::Sender`]. Made by
/// [`into_sender`].
pub struct SenderConsumer<T> {
    tx: mpsc::Sender<T>,
}

impl<T> fmt::Debug for SenderConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderConsumer")
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl<T: Send + 'static> Consumer for SenderConsumer<T> {
    type In = T;

    async fn handle_events(&mut self, events: Vec<T>, _: SubscriptionId, ctx: &mut Context<Self>) {
        let total = events.len();
        let mut events = events.into_iter();
        let mut sent = 0;
        while sent < total {
            let room = (total - sent).min(self.tx.max_capacity());
            let Ok(permits) = self.tx.reserve_many(room).await else {
                let lost = total - sent;
                ctx.count_dropped(lost);
                tracing::warn!(stage = %ctx.name(), dropped = lost, "the receiver was dropped");
                ctx.stop(Reason::Normal);
                return;
            };
            for (permit, event) in permits.zip(events.by_ref()) {
                permit.send(event);
            }
            sent += room;
        }
    }
}

/// Prepares a consumer that forwards every event it receives into a tokio channel, in order,
/// waiting for room (it reserves room for a whole batch at a time where the channel's capacity
/// allows). When the receiver is dropped the consumer stops normally; the events of that batch
/// it could not send are counted as dropped.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(16);
/// let numbers = stage::from_iter(1..=100u64).start().unwrap();
/// stage::into_sender(tx).subscribe_to(&numbers, Default::default()).start().unwrap();
/// let mut total = 0;
/// while let Some(n) = rx.recv().await {
///     total += n;
/// }
/// assert_eq!(total, 5050);
/// # }
/// ```
pub fn into_sender<T: Send + 'static>(tx: mpsc::Sender<T>) -> ConsumerBuilder<SenderConsumer<T>> {
    crate::consumer(SenderConsumer { tx })
}
