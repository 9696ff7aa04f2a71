//! The type-erased addresses peers hold of each other.
//!
//! A producer holds a [`Downstream`] for each of its consumers and a consumer a
//! [`ProducerRef`] for each of its producers. Both are the peer's mailbox behind a trait object
//! that knows only the event type, so a consumer of `T` can subscribe to any producer of `T`
//! whatever else their types are. Every message carries a whole batch or a demand count:
//! nothing here is sent per event.

use std::fmt;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::edge::Edge;
use crate::error::{Cancel, SubscribeError};
use crate::options::{SubscribeOptions, SubscriptionId};
use crate::packet::Packet;

/// Where a producer answers a subscription made through a handle.
pub(crate) type Ack = oneshot::Sender<Result<SubscriptionId, SubscribeError>>;

/// The asks of one subscription, from its consumer to its producer.
pub(crate) type Asks = Arc<Edge<usize>>;

/// A consumer's address for one subscription, as its producer holds it.
pub(crate) trait Downstream<T>: Send + Sync {
    /// Sends a batch; gives it back if the consumer is gone.
    fn events(&self, id: SubscriptionId, events: Vec<T>) -> Result<(), Vec<T>>;
    /// Sends a batch as one packet (to consumers of packets); gives it back if the consumer is
    /// gone.
    fn packet(&self, id: SubscriptionId, packet: Packet) -> Result<(), Packet>;
    /// Tells the consumer the subscription ended. `false` if the consumer is gone.
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool;
    /// The consumer's name.
    fn name(&self) -> &str;
}

/// A producer's address, as its consumers hold it.
pub(crate) trait Upstream<T>: Send + Sync {
    /// Sends a subscription, with the queue its asks will wait in. `false` if the producer is
    /// gone.
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<T>>,
        asks: Asks,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool;
    /// Tells the producer asks wait in the subscription's queue. `false` if the producer is
    /// gone.
    fn wake(&self, id: SubscriptionId) -> bool;
    /// Ends the subscription, giving back the events the consumer never handled; gives them
    /// back again if the producer is gone.
    fn cancel(&self, id: SubscriptionId, cancel: Cancel, returned: Vec<T>) -> Result<(), Vec<T>>;
    /// Checks options against the producer's dispatcher before subscribing.
    fn check(&self, opts: &SubscribeOptions) -> Result<(), SubscribeError>;
    /// Whether the producer has exited.
    fn is_closed(&self) -> bool;
    /// The producer's name.
    fn name(&self) -> Arc<str>;
}

/// The address of a running producer of `T` (a producer or a producer-consumer), for
/// subscribing to it. Cheap to clone.
pub struct ProducerRef<T>(pub(crate) Arc<dyn Upstream<T>>);

impl<T> ProducerRef<T> {
    /// Whether the producer has exited.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// The producer's name.
    pub fn name(&self) -> Arc<str> {
        self.0.name()
    }

    /// Checks subscription options against what the producer's dispatcher accepts (the
    /// partition it has, a selector's event type), without subscribing.
    ///
    /// # Errors
    ///
    /// The [`SubscribeError`] a subscription with `opts` would fail with.
    pub fn check(&self, opts: &SubscribeOptions) -> Result<(), SubscribeError> {
        opts.limits()?;
        self.0.check(opts)
    }

    pub(crate) fn wake(&self, id: SubscriptionId) -> bool {
        self.0.wake(id)
    }

    pub(crate) fn cancel(
        &self,
        id: SubscriptionId,
        cancel: Cancel,
        returned: Vec<T>,
    ) -> Result<(), Vec<T>> {
        self.0.cancel(id, cancel, returned)
    }
}

impl<T: 'static> ProducerRef<T> {
    /// What a handle gives for a stage that was not started with a producer side: always
    /// closed, so subscribing to it fails with `ProducerClosed`.
    pub(crate) fn not_a_producer(name: Arc<str>) -> Self {
        ProducerRef(Arc::new(NotAProducer(name)))
    }
}

struct NotAProducer(Arc<str>);

impl<T> Upstream<T> for NotAProducer {
    fn subscribe(
        &self,
        _: SubscriptionId,
        _: Box<dyn Downstream<T>>,
        _: Asks,
        _: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        if let Some(ack) = ack {
            let _ = ack.send(Err(SubscribeError::ProducerClosed));
        }
        false
    }
    fn wake(&self, _: SubscriptionId) -> bool {
        false
    }
    fn cancel(&self, _: SubscriptionId, _: Cancel, returned: Vec<T>) -> Result<(), Vec<T>> {
        Err(returned)
    }
    fn check(&self, _: &SubscribeOptions) -> Result<(), SubscribeError> {
        Err(SubscribeError::ProducerClosed)
    }
    fn is_closed(&self) -> bool {
        true
    }
    fn name(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl<T> Clone for ProducerRef<T> {
    fn clone(&self) -> Self {
        ProducerRef(Arc::clone(&self.0))
    }
}

impl<T> fmt::Debug for ProducerRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerRef")
            .field("name", &self.name())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Anything that names a running producer of `T`: its handle or a [`ProducerRef`].
pub trait AsProducer<T> {
    /// The producer's address.
    fn as_producer(&self) -> ProducerRef<T>;
}

impl<T> AsProducer<T> for ProducerRef<T> {
    fn as_producer(&self) -> ProducerRef<T> {
        self.clone()
    }
}

impl<T, P: AsProducer<T>> AsProducer<T> for &P {
    fn as_producer(&self) -> ProducerRef<T> {
        (**self).as_producer()
    }
}
