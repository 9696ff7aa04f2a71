//! The one mailbox of a running stage, and the type-erased addresses peers hold.
//!
//! A producer holds a [`Downstream`] for each of its consumers and a consumer a
//! [`ProducerRef`] for each of its producers. Both are the peer's mailbox sender behind a trait
//! object that knows only the event type, so a consumer of `T` can subscribe to any producer of
//! `T` whatever else their types are. Every message carries a whole batch or a demand count:
//! nothing here is sent per event.

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::Reason;
use crate::context::{Cancel, CancelKind};
use crate::error::SubscribeError;
use crate::handle::Counters;
use crate::kind::Kind;
use crate::options::{DemandMode, SubscribeOptions, SubscriptionId};

pub(crate) type Ack = oneshot::Sender<Result<SubscriptionId, SubscribeError>>;

/// Everything a stage can be sent.
pub(crate) enum Envelope<S, K: Kind<S>> {
    // From our producers.
    Events(SubscriptionId, Vec<K::In>),
    ProducerCancel(SubscriptionId, Cancel),
    // From our consumers.
    Subscribe {
        id: SubscriptionId,
        sink: Box<dyn Downstream<K::Out>>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    },
    Ask(SubscriptionId, usize),
    ConsumerCancel(SubscriptionId, Cancel),
    // From handles.
    SubscribeTo {
        producer: ProducerRef<K::In>,
        opts: SubscribeOptions,
        ack: Ack,
    },
    CancelSubscription(SubscriptionId, Reason),
    ManualAsk(SubscriptionId, usize),
    Call(K::Call, oneshot::Sender<K::Reply>),
    Cast(K::Msg),
    Info(K::Msg),
    SetDemand(DemandMode),
    Counters(oneshot::Sender<Counters>),
    Stop(Reason),
    #[allow(dead_code)]
    Never(Infallible, PhantomData<fn() -> S>),
}

pub(crate) type Mailbox<S, K> = mpsc::UnboundedSender<Envelope<S, K>>;

/// A consumer's address, as its producer holds it.
pub(crate) trait Downstream<T>: Send + Sync {
    fn events(&self, id: SubscriptionId, events: Vec<T>) -> bool;
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool;
}

impl<S: Send + 'static, K: Kind<S>> Downstream<K::In> for Mailbox<S, K> {
    fn events(&self, id: SubscriptionId, events: Vec<K::In>) -> bool {
        self.send(Envelope::Events(id, events)).is_ok()
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.send(Envelope::ProducerCancel(id, cancel)).is_ok()
    }
}

/// A producer's address, as its consumers hold it.
pub(crate) trait Upstream<T>: Send + Sync {
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<T>>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool;
    fn ask(&self, id: SubscriptionId, n: usize) -> bool;
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool;
    fn is_closed(&self) -> bool;
}

impl<S: Send + 'static, K: Kind<S>> Upstream<K::Out> for Mailbox<S, K> {
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<K::Out>>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        self.send(Envelope::Subscribe {
            id,
            sink,
            opts,
            ack,
        })
        .is_ok()
    }
    fn ask(&self, id: SubscriptionId, n: usize) -> bool {
        self.send(Envelope::Ask(id, n)).is_ok()
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.send(Envelope::ConsumerCancel(id, cancel)).is_ok()
    }
    fn is_closed(&self) -> bool {
        mpsc::UnboundedSender::is_closed(self)
    }
}

/// The address of a running producer of `T` (a producer or a producer-consumer), for
/// subscribing to it. Cheap to clone.
pub struct ProducerRef<T>(pub(crate) Arc<dyn Upstream<T>>);

impl<T> ProducerRef<T> {
    /// Whether the producer has exited.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    pub(crate) fn ask(&self, id: SubscriptionId, n: usize) -> bool {
        self.0.ask(id, n)
    }

    pub(crate) fn cancel(&self, id: SubscriptionId, kind: CancelKind, reason: Reason) -> bool {
        self.0.cancel(id, Cancel { kind, reason })
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
