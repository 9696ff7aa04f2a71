//! Starting stages: a by-value builder per kind of stage, validated once by `start`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::address::{AsProducer, ProducerRef};
use crate::consumer::Consumer;
use crate::dispatcher::{DemandDispatcher, Dispatcher};
use crate::engine::drive::{AsConsumerStage, AsProducerConsumerStage, AsProducerStage, Drive};
use crate::engine::{Setup, spawn};
use crate::error::{OptionError, StartError};
use crate::handle::StageHandle;
use crate::options::{
    BufferSize, CancelMode, DEFAULT_BUFFER_SIZE, DemandMode, Keep, SubscribeOptions,
};
use crate::producer::Producer;

/// What every builder holds.
struct Common<S, I, O> {
    stage: S,
    name: Option<Arc<str>>,
    buffer_size: BufferSize,
    keep: Keep,
    mode: DemandMode,
    dispatcher: Option<Box<dyn Dispatcher<O>>>,
    subscriptions: Vec<(ProducerRef<I>, SubscribeOptions)>,
    stall_warning: Option<Duration>,
    parent_span: Option<tracing::Span>,
    cancel_on: Option<CancellationToken>,
}

impl<S, I, O> fmt::Debug for Common<S, I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("buffer_size", &self.buffer_size)
            .field("keep", &self.keep)
            .field("mode", &self.mode)
            .field("subscriptions", &self.subscriptions.len())
            .field("stall_warning", &self.stall_warning)
            .finish_non_exhaustive()
    }
}

impl<S: Send + 'static, I: Send + 'static, O: Send + 'static> Common<S, I, O> {
    fn new(stage: S, buffer_size: BufferSize) -> Self {
        Common {
            stage,
            name: None,
            buffer_size,
            keep: Keep::Last,
            mode: DemandMode::Forward,
            dispatcher: None,
            subscriptions: Vec::new(),
            stall_warning: None,
            parent_span: None,
            cancel_on: None,
        }
    }

    fn start<D: Drive<S, In = I, Out = O>>(self) -> Result<StageHandle<S>, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        if let Some(after) = self.stall_warning {
            if after.is_zero() {
                return Err(StartError::Option(OptionError::new(
                    "stall_warning",
                    "must be longer than zero",
                    after,
                )));
            }
        }
        let mut subscriptions = Vec::with_capacity(self.subscriptions.len());
        for (producer, opts) in self.subscriptions {
            opts.limits()?;
            if producer.is_closed() {
                if opts.cancel_mode() != CancelMode::Temporary {
                    return Err(StartError::ProducerClosed);
                }
                continue;
            }
            producer.check(&opts).map_err(StartError::Refused)?;
            subscriptions.push((producer, opts));
        }
        let name = self
            .name
            .unwrap_or_else(|| Arc::from(std::any::type_name::<S>()));
        let setup = Setup {
            stage: self.stage,
            name,
            dispatcher: self
                .dispatcher
                .unwrap_or_else(|| Box::new(DemandDispatcher::new())),
            buffer_size: self.buffer_size,
            keep: self.keep,
            mode: self.mode,
            subscriptions,
            stall_warning: self.stall_warning,
            parent_span: self.parent_span,
            cancel_on: self.cancel_on,
        };
        Ok(spawn::<S, D>(setup, &runtime))
    }
}

macro_rules! doc_start_errors {
    () => {
        "[`StartError::Option`] naming an invalid subscription option, [`StartError::Refused`] \
         when a producer's dispatcher does not accept a subscription's options (a partition it \
         does not have, a selector it cannot use), [`StartError::ProducerClosed`] when a \
         producer to subscribe to with a permanent or transient cancel mode is not running, \
         [`StartError::NoRuntime`] outside a tokio runtime."
    };
}

/// The options every builder has: name, stall watchdog, span, cancellation token.
macro_rules! common_options {
    () => {
        /// A name for logs, spans, the [`topology`](crate::topology) and `Debug` output
        /// (default: the stage's type name).
        pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
            self.0.name = Some(name.into());
            self
        }

        /// Warns (through `tracing`, at WARN) when one of the stage's subscriptions makes no
        /// progress for `after`: events wait in its buffer and a consumer has stopped asking,
        /// a consumer is owed events and none are sent to it, or its producer owes it events
        /// and sends none. The warning names the stage, the subscription and the peer; an INFO
        /// line says when the subscription moves again. Off by default: a source that is
        /// quiet for a while is not stalled. Must be longer than zero.
        pub fn stall_warning(mut self, after: Duration) -> Self {
            self.0.stall_warning = Some(after);
            self
        }

        /// The span the stage's own `stage` span (with its `name` and `kind`) is a child of,
        /// to give its logs more context (which pipeline, which layer).
        pub fn parent_span(mut self, span: tracing::Span) -> Self {
            self.0.parent_span = Some(span);
            self
        }

        /// Shuts the stage down gracefully ([`StageHandle::shutdown`]) when `token` is
        /// cancelled. Give one token to the sources of a pipeline to drain it from outside.
        pub fn cancel_on(mut self, token: CancellationToken) -> Self {
            self.0.cancel_on = Some(token);
            self
        }
    };
}

// ----- producers -----

/// Configures a producer before it starts. Made by [`producer`];
/// [`start`](ProducerBuilder::start) spawns it on the current tokio runtime.
#[must_use = "a stage does nothing until it is started"]
pub struct ProducerBuilder<P: Producer>(Common<P, std::convert::Infallible, P::Out>);

impl<P: Producer> fmt::Debug for ProducerBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Prepares a producer: buffer of 10,000 keeping the last events, demand dispatcher, forward
/// demand.
///
/// # Examples
///
/// ```
/// # use stage::{Context, Producer};
/// # struct Counter;
/// # impl Producer for Counter {
/// #     type Out = u64;
/// #     async fn handle_demand(&mut self, n: usize, _: &mut Context<Self>) -> Vec<u64> { vec![0; n] }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use stage::Keep;
///
/// let counter = stage::producer(Counter).buffer_size(100).buffer_keep(Keep::First).start().unwrap();
/// assert!(counter.is_running());
/// # }
/// ```
pub fn producer<P: Producer>(stage: P) -> ProducerBuilder<P> {
    ProducerBuilder(Common::new(stage, BufferSize::Bounded(DEFAULT_BUFFER_SIZE)))
}

impl<P: Producer> ProducerBuilder<P> {
    common_options!();

    /// How many events the buffer holds for consumers that have not asked yet. `0` means no
    /// buffer: what cannot be dispatched at once is dropped and counted. Default 10,000.
    pub fn buffer_size(mut self, size: impl Into<BufferSize>) -> Self {
        self.0.buffer_size = size.into();
        self
    }

    /// Which events a full buffer keeps (default [`Keep::Last`]).
    pub fn buffer_keep(mut self, keep: Keep) -> Self {
        self.0.keep = keep;
        self
    }

    /// The dispatcher that decides which consumer gets which events (default
    /// [`DemandDispatcher`]).
    pub fn dispatcher(mut self, dispatcher: impl Dispatcher<P::Out>) -> Self {
        self.0.dispatcher = Some(Box::new(dispatcher));
        self
    }

    /// Whether demand is forwarded to `handle_demand` or accumulated (default forward).
    pub fn demand(mut self, mode: DemandMode) -> Self {
        self.0.mode = mode;
        self
    }

    /// Spawns the producer on the current tokio runtime.
    ///
    /// # Errors
    ///
    #[doc = doc_start_errors!()]
    pub fn start(self) -> Result<StageHandle<P>, StartError> {
        self.0.start::<AsProducerStage>()
    }
}

// ----- consumers -----

/// Configures a consumer before it starts. Made by [`consumer`];
/// [`start`](ConsumerBuilder::start) spawns it on the current tokio runtime.
#[must_use = "a stage does nothing until it is started"]
pub struct ConsumerBuilder<C: Consumer>(Common<C, C::In, std::convert::Infallible>);

impl<C: Consumer> fmt::Debug for ConsumerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Prepares a consumer. Subscribe it with [`subscribe_to`](ConsumerBuilder::subscribe_to) now
/// or with [`StageHandle::subscribe`] once it runs.
pub fn consumer<C: Consumer>(stage: C) -> ConsumerBuilder<C> {
    ConsumerBuilder(Common::new(stage, BufferSize::Bounded(0)))
}

impl<C: Consumer> ConsumerBuilder<C> {
    common_options!();

    /// Subscribes to `producer` as soon as the stage starts (GenStage's `subscribe_to`),
    /// before its `handle_start` runs.
    pub fn subscribe_to(
        mut self,
        producer: &impl AsProducer<C::In>,
        opts: SubscribeOptions,
    ) -> Self {
        self.0.subscriptions.push((producer.as_producer(), opts));
        self
    }

    /// Spawns the consumer on the current tokio runtime.
    ///
    /// # Errors
    ///
    #[doc = doc_start_errors!()]
    pub fn start(self) -> Result<StageHandle<C>, StartError> {
        self.0.start::<AsConsumerStage>()
    }
}

// ----- producer-consumers -----

/// Configures a producer-consumer before it starts. Made by [`producer_consumer`];
/// [`start`](ProducerConsumerBuilder::start) spawns it on the current tokio runtime.
#[must_use = "a stage does nothing until it is started"]
pub struct ProducerConsumerBuilder<S: Producer + Consumer>(
    Common<S, <S as Consumer>::In, <S as Producer>::Out>,
);

impl<S: Producer + Consumer> fmt::Debug for ProducerConsumerBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Prepares a producer-consumer (a type that is both a [`Producer`] and a [`Consumer`]):
/// unbounded buffer, demand dispatcher.
pub fn producer_consumer<S: Producer + Consumer>(stage: S) -> ProducerConsumerBuilder<S> {
    ProducerConsumerBuilder(Common::new(stage, BufferSize::Unbounded))
}

impl<S: Producer + Consumer> ProducerConsumerBuilder<S> {
    common_options!();

    /// How many events the buffer holds for consumers that have not asked yet (default
    /// unbounded: it only ever holds what one upstream batch turned into).
    pub fn buffer_size(mut self, size: impl Into<BufferSize>) -> Self {
        self.0.buffer_size = size.into();
        self
    }

    /// Which events a full buffer keeps (default [`Keep::Last`]).
    pub fn buffer_keep(mut self, keep: Keep) -> Self {
        self.0.keep = keep;
        self
    }

    /// The dispatcher that decides which consumer gets which events (default
    /// [`DemandDispatcher`]).
    pub fn dispatcher(mut self, dispatcher: impl Dispatcher<<S as Producer>::Out>) -> Self {
        self.0.dispatcher = Some(Box::new(dispatcher));
        self
    }

    /// Subscribes to `producer` as soon as the stage starts (GenStage's `subscribe_to`),
    /// before its `handle_start` runs.
    pub fn subscribe_to(
        mut self,
        producer: &impl AsProducer<<S as Consumer>::In>,
        opts: SubscribeOptions,
    ) -> Self {
        self.0.subscriptions.push((producer.as_producer(), opts));
        self
    }

    /// Spawns the producer-consumer on the current tokio runtime.
    ///
    /// # Errors
    ///
    #[doc = doc_start_errors!()]
    pub fn start(self) -> Result<StageHandle<S>, StartError> {
        self.0.start::<AsProducerConsumerStage>()
    }
}
