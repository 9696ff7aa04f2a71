//! The producers of a pipeline: any `stage` producer of messages, started by the pipeline (as
//! many as its concurrency), with the dispatcher the processors need and an unbounded buffer.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use stage::{
    BufferSize, Counters, Dispatcher, Producer, ProducerRef, Reason, StageHandle, StartError,
};

use crate::error::ConfigError;
use crate::message::Message;
use crate::options::MAX_CONCURRENCY;

type Factory<P> = Box<dyn FnMut(usize) -> P + Send>;
type OnStart<P> = Box<dyn FnMut(usize, &StageHandle<P>) + Send>;

/// A group of producers of one type: how to make each, how many, and what to do once each
/// runs.
///
/// The pipeline starts them itself, with an unbounded buffer (so that a producer never drops a
/// message it emitted beyond demand) and the dispatcher its processors need. A producer that
/// finishes ([`stage::Context::finish`]) ends its part of the pipeline normally; when every
/// producer has, the pipeline drains and ends.
///
/// # Examples
///
/// ```
/// use ingest::{Message, Producers};
///
/// // Three producers, each emitting 100 numbers and finishing.
/// let group = Producers::new(|i| {
///     let start = i as u64 * 100;
///     stage::IterProducer::new((start..start + 100).map(Message::unacked))
/// })
/// .name("numbers")
/// .concurrency(3);
/// assert_eq!(group.group_name(), "numbers");
/// ```
pub struct Producers<P: Producer> {
    name: Cow<'static, str>,
    concurrency: usize,
    single: bool,
    factory: Factory<P>,
    on_start: Option<OnStart<P>>,
}

impl<P: Producer> Producers<P> {
    /// Producers made by `factory`, which is given each one's index. One by default.
    pub fn new(factory: impl FnMut(usize) -> P + Send + 'static) -> Self {
        Producers {
            name: Cow::Borrowed("producer"),
            concurrency: 1,
            single: false,
            factory: Box::new(factory),
            on_start: None,
        }
    }

    /// One producer, this one.
    pub fn single(producer: P) -> Self {
        let mut producer = Some(producer);
        let mut group =
            Self::new(move |_| producer.take().expect("a single producer is made once"));
        group.single = true;
        group
    }

    /// The group's name, in its stages' names (default `producer`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The group's name.
    pub fn group_name(&self) -> &str {
        &self.name
    }

    /// How many producers to start (default 1). Every processor asks every producer, so more
    /// producers mean more messages in flight (up to the processors' `max_demand` each).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Runs `f` with each producer's index and handle once it has started (to keep the
    /// handle, for casting to it).
    pub fn on_start(mut self, f: impl FnMut(usize, &StageHandle<P>) + Send + 'static) -> Self {
        self.on_start = Some(Box::new(f));
        self
    }
}

impl<P: Producer> fmt::Debug for Producers<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producers")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

type JoinFuture<'a> = Pin<Box<dyn Future<Output = Reason> + Send + 'a>>;

/// A running producer, whatever its type.
pub(crate) trait Running<T>: Send + Sync {
    fn producer_ref(&self) -> ProducerRef<Message<T>>;
    fn stop(&self);
    fn join(&self) -> JoinFuture<'_>;
    fn exit_reason(&self) -> Option<Reason>;
    fn final_counters(&self) -> Option<Counters>;
    fn name(&self) -> &str;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Send + 'static, P: Producer<Out = Message<T>>> Running<T> for StageHandle<P> {
    fn producer_ref(&self) -> ProducerRef<Message<T>> {
        self.producer()
    }
    fn stop(&self) {
        let _ = StageHandle::stop(self, Reason::Shutdown);
    }
    fn join(&self) -> JoinFuture<'_> {
        Box::pin(StageHandle::join(self))
    }
    fn exit_reason(&self) -> Option<Reason> {
        StageHandle::exit_reason(self)
    }
    fn final_counters(&self) -> Option<Counters> {
        StageHandle::final_counters(self)
    }
    fn name(&self) -> &str {
        StageHandle::name(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A group of producers, whatever their type.
pub(crate) trait Group<T>: Send {
    fn name(&self) -> &str;
    fn concurrency(&self) -> usize;
    fn validate(&self) -> Result<(), ConfigError>;
    fn start(
        &mut self,
        index: usize,
        stage_name: String,
        dispatcher: Box<dyn Dispatcher<Message<T>>>,
    ) -> Result<Box<dyn Running<T>>, StartError>;
}

impl<T: Send + 'static, P: Producer<Out = Message<T>>> Group<T> for Producers<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let scope = format!("producer {:?}", self.name);
        if self.single && self.concurrency != 1 {
            let rule = "must be 1 for a single producer (use Producers::new with a factory)";
            return Err(ConfigError::new(
                scope,
                "concurrency",
                rule,
                self.concurrency,
            ));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            let rule = format!("must be between 1 and {MAX_CONCURRENCY}");
            return Err(ConfigError::new(
                scope,
                "concurrency",
                rule,
                self.concurrency,
            ));
        }
        if self.name.is_empty() {
            return Err(ConfigError::new(scope, "name", "must not be empty", ""));
        }
        Ok(())
    }

    fn start(
        &mut self,
        index: usize,
        stage_name: String,
        dispatcher: Box<dyn Dispatcher<Message<T>>>,
    ) -> Result<Box<dyn Running<T>>, StartError> {
        let producer = (self.factory)(index);
        let handle = stage::producer(producer)
            .name(stage_name)
            .buffer_size(BufferSize::Unbounded)
            .dispatcher(dispatcher)
            .start()?;
        if let Some(on_start) = &mut self.on_start {
            on_start(index, &handle);
        }
        Ok(Box::new(handle))
    }
}
