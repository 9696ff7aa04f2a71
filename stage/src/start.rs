//! Starting stages: a by-value builder per stage, validated once by `start`.

use std::fmt;
use std::sync::Arc;

use crate::buffer::Buffer;
use crate::dispatcher::{DemandDispatcher, Dispatcher};
use crate::engine::{Setup, spawn};
use crate::error::StartError;
use crate::handle::StageHandle;
use crate::kind::{ConsumerStage, Emits, Kind, ProducerConsumerStage, ProducerStage, Receives};
use crate::mailbox::{AsProducer, ProducerRef};
use crate::options::{
    BufferSize, CancelMode, DEFAULT_BUFFER_SIZE, DemandMode, Keep, SubscribeOptions,
};
use crate::{Consumer, Producer, ProducerConsumer};

/// Configures a stage before it starts. Made by [`producer`], [`consumer`] or
/// [`producer_consumer`]; [`start`](Builder::start) spawns it on the current tokio runtime.
#[must_use = "a stage does nothing until it is started"]
pub struct Builder<S, K: Kind<S>> {
    stage: S,
    name: Option<Arc<str>>,
    buffer_size: BufferSize,
    keep: Keep,
    mode: DemandMode,
    dispatcher: Option<Box<dyn Dispatcher<K::Out>>>,
    subscriptions: Vec<(ProducerRef<K::In>, SubscribeOptions)>,
}

impl<S, K: Kind<S>> fmt::Debug for Builder<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("buffer_size", &self.buffer_size)
            .field("keep", &self.keep)
            .field("mode", &self.mode)
            .field("subscriptions", &self.subscriptions.len())
            .finish()
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
/// #     type Out = u64; type Call = (); type Reply = (); type Msg = ();
/// #     async fn handle_demand(&mut self, n: usize, _: &mut Context<u64>) -> Vec<u64> { vec![0; n] }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use stage::Keep;
///
/// let counter = stage::producer(Counter).buffer_size(100).buffer_keep(Keep::First).start().unwrap();
/// assert!(counter.is_running());
/// # }
/// ```
pub fn producer<P: Producer>(stage: P) -> Builder<P, ProducerStage> {
    Builder::new(stage, BufferSize::Bounded(DEFAULT_BUFFER_SIZE))
}

/// Prepares a consumer. Subscribe it with [`subscribe_to`](Builder::subscribe_to) now or with
/// [`StageHandle::subscribe`] once it runs.
pub fn consumer<C: Consumer>(stage: C) -> Builder<C, ConsumerStage> {
    Builder::new(stage, BufferSize::Bounded(0))
}

/// Prepares a producer-consumer: unbounded buffer, demand dispatcher.
pub fn producer_consumer<S: ProducerConsumer>(stage: S) -> Builder<S, ProducerConsumerStage> {
    Builder::new(stage, BufferSize::Unbounded)
}

impl<S: Send + 'static, K: Kind<S>> Builder<S, K> {
    fn new(stage: S, buffer_size: BufferSize) -> Self {
        Builder {
            stage,
            name: None,
            buffer_size,
            keep: Keep::Last,
            mode: DemandMode::Forward,
            dispatcher: None,
            subscriptions: Vec::new(),
        }
    }

    /// A name for logs and `Debug` output (default: the stage's type name).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Spawns the stage on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::Option`] naming an invalid subscription option,
    /// [`StartError::ProducerClosed`] when a producer to subscribe to with a permanent or
    /// transient cancel mode is not running, [`StartError::NoRuntime`] outside a runtime.
    pub fn start(self) -> Result<StageHandle<S, K>, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let mut subscriptions = Vec::with_capacity(self.subscriptions.len());
        for (producer, opts) in self.subscriptions {
            opts.limits()?;
            if producer.is_closed() {
                if opts.cancel_mode() != CancelMode::Temporary {
                    return Err(StartError::ProducerClosed);
                }
                continue;
            }
            subscriptions.push((producer, opts));
        }
        let name = self
            .name
            .unwrap_or_else(|| Arc::from(std::any::type_name::<S>()));
        let setup = Setup {
            stage: self.stage,
            name: Arc::clone(&name),
            dispatcher: self
                .dispatcher
                .unwrap_or_else(|| Box::new(DemandDispatcher::new())),
            buffer: Buffer::new(self.buffer_size, self.keep),
            mode: self.mode,
            subscriptions,
        };
        let (tx, exit) = spawn(setup, &runtime);
        Ok(StageHandle::new(tx, exit, name))
    }
}

impl<S: Send + 'static, K: Kind<S> + Emits> Builder<S, K> {
    /// How many events the buffer holds for consumers that have not asked yet. `0` means no
    /// buffer: what cannot be dispatched at once is dropped and counted. Default 10,000 for
    /// producers, unbounded for producer-consumers.
    pub fn buffer_size(mut self, size: impl Into<BufferSize>) -> Self {
        self.buffer_size = size.into();
        self
    }

    /// Which events a full buffer keeps (default [`Keep::Last`]).
    pub fn buffer_keep(mut self, keep: Keep) -> Self {
        self.keep = keep;
        self
    }

    /// The dispatcher that decides which consumer gets which events (default
    /// [`DemandDispatcher`]).
    pub fn dispatcher(mut self, dispatcher: impl Dispatcher<K::Out>) -> Self {
        self.dispatcher = Some(Box::new(dispatcher));
        self
    }
}

impl<P: Producer> Builder<P, ProducerStage> {
    /// Whether demand is forwarded to `handle_demand` or accumulated (default forward).
    pub fn demand(mut self, mode: DemandMode) -> Self {
        self.mode = mode;
        self
    }
}

impl<S: Send + 'static, K: Kind<S> + Receives> Builder<S, K> {
    /// Subscribes to `producer` as soon as the stage starts (GenStage's `subscribe_to`).
    pub fn subscribe_to(
        mut self,
        producer: &impl AsProducer<K::In>,
        opts: SubscribeOptions,
    ) -> Self {
        self.subscriptions.push((producer.as_producer(), opts));
        self
    }
}
