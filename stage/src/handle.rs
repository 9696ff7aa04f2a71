//! Handles to running stages.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use crate::Reason;
use crate::engine::await_reply;
use crate::error::{CallError, SubscribeError};
use crate::kind::{ConsumerStage, Emits, Kind, ProducerConsumerStage, ProducerStage, Receives};
use crate::mailbox::{AsProducer, Envelope, Mailbox, ProducerRef};
use crate::options::{DemandMode, SubscribeOptions, SubscriptionId};

/// A handle to a running producer.
pub type ProducerHandle<P> = StageHandle<P, ProducerStage>;
/// A handle to a running consumer.
pub type ConsumerHandle<C> = StageHandle<C, ConsumerStage>;
/// A handle to a running producer-consumer.
pub type ProducerConsumerHandle<S> = StageHandle<S, ProducerConsumerStage>;

/// A handle to a running stage: call, cast, subscribe, cancel, stop, join. Cheap to clone.
///
/// Every method that talks to the stage fails with [`CallError::Closed`] (or returns the exit
/// reason) once the stage has exited: nothing waits on a stage that is gone. Dropping every
/// handle does not stop the stage; [`stop`](StageHandle::stop) does.
pub struct StageHandle<S, K: Kind<S>> {
    tx: Mailbox<S, K>,
    exit: watch::Receiver<Option<Reason>>,
    name: Arc<str>,
    _stage: PhantomData<fn() -> S>,
}

impl<S, K: Kind<S>> Clone for StageHandle<S, K> {
    fn clone(&self) -> Self {
        StageHandle {
            tx: self.tx.clone(),
            exit: self.exit.clone(),
            name: Arc::clone(&self.name),
            _stage: PhantomData,
        }
    }
}

impl<S, K: Kind<S>> fmt::Debug for StageHandle<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageHandle")
            .field("name", &self.name)
            .field("running", &self.is_running())
            .finish()
    }
}

/// A snapshot of a stage's counters, from [`StageHandle::counters`].
///
/// When a pipeline stalls, `consumers` and `producers` show which edge holds no credit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Events received from producers.
    pub events_in: u64,
    /// Events sent to consumers.
    pub events_out: u64,
    /// Events waiting in the buffer.
    pub buffered: usize,
    /// Events the buffer dropped since the stage started.
    pub dropped: u64,
    /// Upstream messages a producer-consumer holds while downstream has no demand.
    pub inbox: usize,
    /// For each consumer of this stage, the demand it has asked for and not yet received.
    pub consumers: Vec<(SubscriptionId, usize)>,
    /// For each producer of this stage, the events asked for and not yet received.
    pub producers: Vec<(SubscriptionId, usize)>,
}

impl<S, K: Kind<S>> StageHandle<S, K> {
    pub(crate) fn new(
        tx: Mailbox<S, K>,
        exit: watch::Receiver<Option<Reason>>,
        name: Arc<str>,
    ) -> Self {
        StageHandle {
            tx,
            exit,
            name,
            _stage: PhantomData,
        }
    }

    fn send(&self, msg: Envelope<S, K>) -> Result<(), CallError> {
        self.tx.send(msg).map_err(|_| CallError::Closed)
    }

    /// The name given when the stage was started.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the stage is still running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Sends a request to `handle_call` and waits for the reply.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running or exits before replying,
    /// [`CallError::NoReply`] if it drops the [`ReplyTo`](crate::ReplyTo).
    pub async fn call(&self, request: K::Call) -> Result<K::Reply, CallError> {
        let (tx, rx) = oneshot::channel();
        self.send(Envelope::Call(request, tx))?;
        await_reply(rx, || self.tx.is_closed()).await
    }

    /// Sends a message to `handle_cast` without waiting.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn cast(&self, msg: K::Msg) -> Result<(), CallError> {
        self.send(Envelope::Cast(msg))
    }

    /// Sends a message to `handle_info`, delivered after the events the stage holds now
    /// (GenStage's `async_info`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn info(&self, msg: K::Msg) -> Result<(), CallError> {
        self.send(Envelope::Info(msg))
    }

    /// Cancels one of the stage's subscriptions, to a producer or from a consumer.
    ///
    /// A consumer's cancel goes to the producer, which confirms it; the consumer then runs
    /// `handle_cancel` and applies the subscription's cancel mode, so cancelling a permanent
    /// subscription stops the consumer.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn cancel(&self, subscription: SubscriptionId, reason: Reason) -> Result<(), CallError> {
        self.send(Envelope::CancelSubscription(subscription, reason))
    }

    /// A snapshot of the stage's counters.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub async fn counters(&self) -> Result<Counters, CallError> {
        let (tx, rx) = oneshot::channel();
        self.send(Envelope::Counters(tx))?;
        await_reply(rx, || true).await
    }

    /// Asks the stage to stop with `reason` once it has handled the messages sent before this
    /// one; [`join`](StageHandle::join) waits for it. Its consumers then act on their cancel
    /// mode.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn stop(&self, reason: Reason) -> Result<(), CallError> {
        self.send(Envelope::Stop(reason))
    }

    /// Waits until the stage exits and returns why.
    pub async fn join(&self) -> Reason {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().expect("waited for Some"),
            // The task was dropped without finishing: its runtime shut down.
            Err(_) => Reason::Shutdown,
        }
    }

    /// The exit reason, if the stage has exited.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.exit.borrow().clone()
    }
}

impl<S: Send + 'static, K: Kind<S> + Emits> StageHandle<S, K> {
    /// The stage's address as a producer, for subscribing to it.
    pub fn producer(&self) -> ProducerRef<K::Out> {
        ProducerRef(Arc::new(self.tx.clone()))
    }

    /// How many events wait in the stage's buffer (GenStage's `estimate_buffered_count`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub async fn buffered(&self) -> Result<usize, CallError> {
        Ok(self.counters().await?.buffered)
    }
}

impl<S: Send + 'static, K: Kind<S> + Emits> AsProducer<K::Out> for StageHandle<S, K> {
    fn as_producer(&self) -> ProducerRef<K::Out> {
        self.producer()
    }
}

impl<P: crate::Producer> StageHandle<P, ProducerStage> {
    /// Switches between forwarding and accumulating demand (GenStage's `demand/2`).
    /// Going back to [`DemandMode::Forward`] replays what was accumulated, in order.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn set_demand(&self, mode: DemandMode) -> Result<(), CallError> {
        self.send(Envelope::SetDemand(mode))
    }
}

impl<S: Send + 'static, K: Kind<S> + Receives> StageHandle<S, K> {
    /// Subscribes the stage to `producer` and returns the subscription's id once the producer
    /// has accepted it (GenStage's `sync_subscribe`).
    ///
    /// # Errors
    ///
    /// An invalid option, a producer or consumer that is not running, or a subscription the
    /// producer's dispatcher refuses. A consumer whose permanent or transient subscription
    /// finds its producer not running also stops, with [`Reason::NoProc`].
    pub async fn subscribe(
        &self,
        producer: &impl AsProducer<K::In>,
        opts: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        opts.limits()?;
        let (ack, rx) = oneshot::channel();
        let msg = Envelope::SubscribeTo {
            producer: producer.as_producer(),
            opts,
            ack,
        };
        self.tx
            .send(msg)
            .map_err(|_| SubscribeError::ConsumerClosed)?;
        rx.await.unwrap_or(Err(SubscribeError::ConsumerClosed))
    }

    /// Asks the producer of a manual subscription for `n` more events (GenStage's `ask/3`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn ask(&self, subscription: SubscriptionId, n: usize) -> Result<(), CallError> {
        if n == 0 {
            return Ok(());
        }
        self.send(Envelope::ManualAsk(subscription, n))
    }
}
