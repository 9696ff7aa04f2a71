//! Handles to running stages.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{oneshot, watch};

use crate::address::{AsProducer, ProducerRef};
use crate::consumer::Consumer;
use crate::context::{Context, Job};
use crate::counters::Counters;
use crate::error::{CallError, Reason, SubscribeError};
use crate::message::{Call, Cast, Info};
use crate::options::{DemandMode, SubscribeOptions, SubscriptionId};
use crate::producer::Producer;

/// What a handle (or the stage itself) asks of a stage, whatever its event types.
pub(crate) enum Control<S> {
    /// Subscribe to a producer (a `ProducerRef` of the stage's input type, erased).
    SubscribeTo {
        producer: Box<dyn Any + Send>,
        opts: SubscribeOptions,
        ack: oneshot::Sender<Result<SubscriptionId, SubscribeError>>,
    },
    CancelSubscription(SubscriptionId, Reason),
    ManualAsk(SubscriptionId, usize),
    /// Run now (calls and casts).
    Now(Job<S>),
    /// Run after the events the stage holds now (infos).
    Info(Job<S>),
    SetDemand(DemandMode),
    Counters(oneshot::Sender<Counters>),
    Snapshot(oneshot::Sender<crate::topology::StageInfo>),
    Stop(Reason),
    /// Stop taking new work, finish what is in flight, then stop with `Shutdown`.
    Shutdown,
}

/// Sends control messages into a stage's mailbox, whatever its event types.
pub(crate) trait ControlTx<S>: Send + Sync {
    fn send(&self, control: Control<S>) -> Result<(), Control<S>>;
    fn is_closed(&self) -> bool;
}

/// How a stage ended: its reason and its last counters.
#[derive(Clone, Debug)]
pub(crate) struct Exit {
    pub(crate) reason: Reason,
    pub(crate) counters: Counters,
}

/// What the stage runs as, for `Debug` and for refusing what does not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
    ProducerConsumer,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::ProducerConsumer => "producer_consumer",
        }
    }
}

pub(crate) struct Shared<S> {
    pub(crate) tx: Box<dyn ControlTx<S>>,
    pub(crate) exit: watch::Receiver<Option<Exit>>,
    pub(crate) name: Arc<str>,
    /// The stage's `ProducerRef` of its output type, for stages with a producer side.
    pub(crate) producer: Option<Box<dyn Any + Send + Sync>>,
    pub(crate) role: Role,
    /// Set by [`StageHandle::abort`]: the stage looks at it between batches.
    pub(crate) aborted: AtomicBool,
}

/// A handle to a running stage `S`: call, cast, subscribe, cancel, stop, join. Cheap to clone.
///
/// What a handle offers depends on the stage: `call` needs `S: Call<M>`, `subscribe` needs
/// `S: Consumer`, `producer` needs `S: Producer`, and so on, so a message the stage does not
/// take does not compile.
///
/// Every method that talks to the stage fails with [`CallError::Closed`] (or returns the exit
/// reason) once the stage has exited: nothing waits on a stage that is gone. Dropping every
/// handle does not stop the stage; [`stop`](StageHandle::stop) does.
pub struct StageHandle<S> {
    inner: Arc<Shared<S>>,
}

impl<S> Clone for StageHandle<S> {
    fn clone(&self) -> Self {
        StageHandle {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for StageHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageHandle")
            .field("name", &self.inner.name)
            .field("role", &self.inner.role)
            .field("running", &self.is_running())
            .finish()
    }
}

impl<S> StageHandle<S> {
    pub(crate) fn new(shared: Shared<S>) -> Self {
        StageHandle {
            inner: Arc::new(shared),
        }
    }

    fn send(&self, control: Control<S>) -> Result<(), CallError> {
        self.inner.tx.send(control).map_err(|_| CallError::Closed)
    }

    /// The name given when the stage was started.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the stage is still running.
    pub fn is_running(&self) -> bool {
        !self.inner.tx.is_closed()
    }

    /// Sends a request to the stage's [`Call::handle_call`] and waits for the reply.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running or exits before replying,
    /// [`CallError::NoReply`] if it drops the [`ReplyTo`](crate::ReplyTo).
    pub async fn call<M>(&self, request: M) -> Result<S::Reply, CallError>
    where
        S: Call<M>,
        M: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |stage: &mut S, ctx: &mut Context<S>| {
            let reply = ctx.reply_to(tx);
            Box::pin(stage.handle_call(request, reply, ctx))
        });
        self.send(Control::Now(job))?;
        rx.await.unwrap_or(Err(CallError::Closed))
    }

    /// Sends a message to the stage's [`Cast::handle_cast`] without waiting.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn cast<M>(&self, msg: M) -> Result<(), CallError>
    where
        S: Cast<M>,
        M: Send + 'static,
    {
        let job: Job<S> = Box::new(move |stage: &mut S, ctx: &mut Context<S>| {
            Box::pin(stage.handle_cast(msg, ctx))
        });
        self.send(Control::Now(job))
    }

    /// Sends a message to the stage's [`Info::handle_info`]: a stage with a producer side runs
    /// it once the events it holds now have been dispatched (GenStage's `async_info`); a
    /// consumer runs it at once.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn info<M>(&self, msg: M) -> Result<(), CallError>
    where
        S: Info<M>,
        M: Send + 'static,
    {
        let job: Job<S> = Box::new(move |stage: &mut S, ctx: &mut Context<S>| {
            Box::pin(stage.handle_info(msg, ctx))
        });
        self.send(Control::Info(job))
    }

    /// Cancels one of the stage's subscriptions, to a producer or from a consumer.
    ///
    /// A consumer's cancel goes to the producer, which confirms it after the events it has
    /// already sent; the consumer handles those, then runs `handle_cancel` and applies the
    /// subscription's cancel mode, so cancelling a permanent subscription stops the consumer.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn cancel(&self, subscription: SubscriptionId, reason: Reason) -> Result<(), CallError> {
        self.send(Control::CancelSubscription(subscription, reason))
    }

    /// A snapshot of the stage's counters.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running (see
    /// [`final_counters`](StageHandle::final_counters)).
    pub async fn counters(&self) -> Result<Counters, CallError> {
        let (tx, rx) = oneshot::channel();
        self.send(Control::Counters(tx))?;
        rx.await.map_err(|_| CallError::Closed)
    }

    /// The counters the stage had when it exited, once it has.
    pub fn final_counters(&self) -> Option<Counters> {
        self.inner
            .exit
            .borrow()
            .as_ref()
            .map(|exit| exit.counters.clone())
    }

    /// Asks the stage to stop with `reason` once it has handled the messages sent before this
    /// one; [`join`](StageHandle::join) waits for it. Its consumers then act on their cancel
    /// mode.
    ///
    /// # What happens to events in flight
    ///
    /// Events the stage has received and not handled (in its mailbox, or in a
    /// producer-consumer's inbox) go back to their producers, which send them to their other
    /// consumers (a demand dispatcher), keep them for the partition's next consumer (a
    /// partition dispatcher) or discard them, counted (a broadcast: every other consumer has
    /// its copy). Events the stage holds in its own buffer are dropped and counted in
    /// [`Counters::dropped`] ([`final_counters`](StageHandle::final_counters)).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn stop(&self, reason: Reason) -> Result<(), CallError> {
        self.send(Control::Stop(reason))
    }

    /// Stops the stage as soon as the handler running now returns, ahead of the messages
    /// waiting in its mailbox, with [`Reason::Shutdown`]. A stage handling a message of many
    /// events stops between two of its batches.
    ///
    /// What it has received and not handled goes back to its producers, and what it holds in
    /// its buffer is dropped and counted, as with [`stop`](StageHandle::stop). Its consumers
    /// then act on their cancel mode (a permanent one stops too).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn abort(&self) -> Result<(), CallError> {
        self.inner.aborted.store(true, Ordering::Relaxed);
        self.send(Control::Stop(Reason::Shutdown))
    }

    /// Stops the stage gracefully: it takes no new work, finishes what is in flight, and
    /// stops with [`Reason::Shutdown`].
    ///
    /// - A stage with producers cancels its subscriptions; each producer confirms after the
    ///   events it has already sent, which the stage handles.
    /// - A stage with a producer side stops calling `handle_demand`, dispatches what its
    ///   buffer holds to its consumers' demand, and stops once it holds nothing more that can
    ///   reach them (or at once, if it has no consumers).
    ///
    /// Shutting down the sources of a pipeline drains it: each stage downstream sees its
    /// producers end and, with a permanent subscription, stops once it has passed on what it
    /// received. A stream or channel producer drops the items its stream or channel still held.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn shutdown(&self) -> Result<(), CallError> {
        self.send(Control::Shutdown)
    }

    /// Whether [`abort`](StageHandle::abort) was called.
    pub(crate) fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::Relaxed)
    }

    /// Waits until the stage exits and returns why.
    pub async fn join(&self) -> Reason {
        let mut exit = self.inner.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(exit) => exit.as_ref().expect("waited for Some").reason.clone(),
            // The task was dropped without finishing: its runtime shut down.
            Err(_) => Reason::Shutdown,
        }
    }

    /// The exit reason, if the stage has exited.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.inner
            .exit
            .borrow()
            .as_ref()
            .map(|exit| exit.reason.clone())
    }
}

impl<S: Send + 'static> StageHandle<S> {
    /// The stage as the registry of running stages holds it.
    pub(crate) fn probe(&self) -> std::sync::Weak<dyn crate::topology::Probe> {
        let weak: std::sync::Weak<Shared<S>> = Arc::downgrade(&self.inner);
        weak
    }
}

impl<S: Send + 'static> crate::topology::Probe for Shared<S> {
    fn name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }
    fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }
    fn snapshot(&self) -> Option<oneshot::Receiver<crate::topology::StageInfo>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Control::Snapshot(tx)).ok()?;
        Some(rx)
    }
}

impl<S: Producer> StageHandle<S> {
    /// The stage's address as a producer, for subscribing to it.
    pub fn producer(&self) -> ProducerRef<S::Out> {
        match self
            .inner
            .producer
            .as_ref()
            .and_then(|p| p.downcast_ref::<ProducerRef<S::Out>>())
        {
            Some(producer) => producer.clone(),
            None => ProducerRef::not_a_producer(Arc::clone(&self.inner.name)),
        }
    }

    /// How many events wait in the stage's buffer (GenStage's `estimate_buffered_count`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub async fn buffered(&self) -> Result<usize, CallError> {
        Ok(self.counters().await?.buffered)
    }

    /// Switches between forwarding and accumulating demand (GenStage's `demand/2`).
    /// Going back to [`DemandMode::Forward`] replays what was accumulated, in order. Only for
    /// stages started as producers; a producer-consumer ignores it, with a warning.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the stage is not running.
    pub fn set_demand(&self, mode: DemandMode) -> Result<(), CallError> {
        self.send(Control::SetDemand(mode))
    }
}

impl<S: Producer> AsProducer<S::Out> for StageHandle<S> {
    fn as_producer(&self) -> ProducerRef<S::Out> {
        self.producer()
    }
}

impl<S: Consumer> StageHandle<S> {
    /// Subscribes the stage to `producer` and returns the subscription's id once the producer
    /// has accepted it (GenStage's `sync_subscribe`).
    ///
    /// # Errors
    ///
    /// An invalid option, a producer or consumer that is not running, a consumer that is
    /// shutting down ([`SubscribeError::ShuttingDown`]), or a subscription the
    /// producer's dispatcher refuses (the consumer's `handle_cancel` then sees the refusal, as
    /// [`Reason::Rejected`]; a refusal never stops it). A consumer whose permanent or transient
    /// subscription finds its producer not running stops, with [`Reason::NoProc`].
    pub async fn subscribe(
        &self,
        producer: &impl AsProducer<S::In>,
        opts: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        let producer = producer.as_producer();
        opts.limits()?;
        let (ack, rx) = oneshot::channel();
        let control = Control::SubscribeTo {
            producer: Box::new(producer),
            opts,
            ack,
        };
        self.inner
            .tx
            .send(control)
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
        self.send(Control::ManualAsk(subscription, n))
    }
}
