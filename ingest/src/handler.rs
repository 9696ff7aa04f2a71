//! What a pipeline does with its messages: the [`Handler`] trait, and what its calls are told.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::failure::Failure;
use crate::message::{BatchKey, Message};

/// A pipeline's work: what its processors do with each message, and what its batch
/// processors do with each batch (Broadway's callbacks, with the same names).
///
/// One handler serves every stage of the pipeline at once (it is shared, hence `&self`):
/// state that changes goes behind a lock or an atomic.
///
/// A handler call that returns `Err` or panics fails what it was given (the message, the
/// chunk for `prepare_messages`, the batch for `handle_batch`), never the stage. See
/// `docs/semantics.md`, *Ingest: settlement*, for what is settled when.
///
/// # Examples
///
/// ```
/// use ingest::{Context, Failure, Handler, Message};
///
/// /// Parses numbers; a line that is not one fails.
/// struct Parse;
///
/// impl Handler for Parse {
///     type In = String;
///     type Out = u64;
///
///     async fn handle_message(&self, msg: &mut Message<String>, _: &Context) -> Result<u64, Failure> {
///         Ok(msg.data.trim().parse()?)
///     }
/// }
/// # let _ = Parse;
/// ```
pub trait Handler: Send + Sync + 'static {
    /// What the producers emit (as `Message<In>`).
    type In: Send + 'static;
    /// What the processors make of it, for the batchers (as `Message<Out>`).
    type Out: Send + 'static;

    /// Handles one message in a processor, in the order the processor received them, and
    /// returns its new payload. The message may be changed on the way: its batcher, batch
    /// key, batch mode and metadata. `Err` (or a panic, or failing the message with
    /// [`Message::fail`]) fails it: it is retried, or settled by this processor, and never
    /// forwarded.
    fn handle_message(
        &self,
        message: &mut Message<Self::In>,
        ctx: &Context,
    ) -> impl Future<Output = Result<Self::Out, Failure>> + Send;

    /// Runs in a processor before `handle_message`, once per chunk of messages (at most
    /// `max_demand - min_demand` of them, all from one producer): to load what the chunk needs
    /// in one go. Messages it fails skip `handle_message`; `Err` or a panic fails the whole
    /// chunk. The default does nothing.
    fn prepare_messages(
        &self,
        messages: &mut [Message<Self::In>],
        ctx: &Context,
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = (messages, ctx);
        async { Ok(()) }
    }

    /// Handles one batch in a batch processor. Fail single messages with [`Message::fail`];
    /// `Err` or a panic fails every message of the batch. The messages are lent, not given:
    /// none can go missing, and each is settled when this returns. The default does nothing
    /// (every message succeeds).
    fn handle_batch(
        &self,
        messages: &mut [Message<Self::Out>],
        info: &BatchInfo,
        ctx: &Context,
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        let _ = (messages, info, ctx);
        async { Ok(()) }
    }

    /// Runs in a processor on the messages it failed for good (retries over), just before it
    /// settles them: the place to change a failure's [`Action`](crate::Action) (to requeue
    /// some and reject others, say) with [`Message::fail`]. A panic here is logged and the
    /// failures stay as they were. The default does nothing.
    fn handle_failed(
        &self,
        messages: &mut [Message<Self::In>],
        ctx: &Context,
    ) -> impl Future<Output = ()> + Send {
        let _ = (messages, ctx);
        async {}
    }

    /// Like [`handle_failed`](Handler::handle_failed), for the messages a batch processor (or
    /// a batcher) failed for good.
    fn handle_failed_batch(
        &self,
        messages: &mut [Message<Self::Out>],
        ctx: &Context,
    ) -> impl Future<Output = ()> + Send {
        let _ = (messages, ctx);
        async {}
    }
}

/// Which kind of stage a handler call runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// A producer.
    Producer,
    /// A processor.
    Processor,
    /// A batcher.
    Batcher,
    /// A batch processor.
    BatchProcessor,
}

/// Where a handler call runs: the pipeline, the stage and its index.
#[derive(Clone)]
pub struct Context {
    pub(crate) pipeline: Arc<str>,
    pub(crate) stage: Arc<str>,
    pub(crate) kind: StageKind,
    pub(crate) index: usize,
    pub(crate) batcher: Option<Arc<str>>,
}

impl Context {
    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The stage's name (as listed by [`Pipeline::topology`](crate::Pipeline::topology)).
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The kind of stage.
    pub fn kind(&self) -> StageKind {
        self.kind
    }

    /// The stage's index among the stages of its kind (for a batch processor, among its
    /// batcher's).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The batcher, for a batcher or batch processor.
    pub fn batcher(&self) -> Option<&str> {
        self.batcher.as_deref()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("stage", &self.stage)
            .field("kind", &self.kind)
            .field("index", &self.index)
            .finish()
    }
}

/// Why a batch was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trigger {
    /// It was full.
    Size,
    /// Its timeout expired (counted from its first message).
    Timeout,
    /// A message in [`BatchMode::Flush`](crate::BatchMode::Flush) flushed it.
    Flush,
    /// The batcher needed room for another key (its `max_open_keys`).
    Evicted,
    /// The pipeline was draining: its producers were done or it was shutting down.
    Drain,
}

/// What a batch is: its batcher, key and partition, its size, and why and when it closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batcher's name.
    pub batcher: Arc<str>,
    /// The key its messages share.
    pub batch_key: BatchKey,
    /// The partition, when the batcher partitions.
    pub partition: Option<usize>,
    /// How many messages it holds.
    pub size: usize,
    /// Why it closed.
    pub trigger: Trigger,
    /// When its first message reached the batcher.
    pub opened_at: Instant,
    /// When it closed.
    pub closed_at: Instant,
}

/// Where messages given up on go (besides their acknowledger, which hears
/// [`Outcome::DeadLetter`](crate::Outcome::DeadLetter) once the sink has taken them).
///
/// A pipeline's sink takes the failed messages of its processors (`DeadLetter<In>`) and of its
/// batch processors (`DeadLetter<Out>`), so it implements this trait for both (one generic
/// impl does when the sink does not look at the payload's type).
pub trait DeadLetterSink<T>: Send + Sync + 'static {
    /// Stores `letters`.
    ///
    /// # Errors
    ///
    /// Any failure: the messages are then settled as
    /// [`Outcome::Nack`](crate::Outcome::Nack) with `requeue: true` instead, so that they are
    /// not lost, and the error is counted ([`Report::dead_letter_errors`](crate::Report::dead_letter_errors)).
    fn dead_letter(
        &self,
        letters: Vec<DeadLetter<T>>,
    ) -> impl Future<Output = Result<(), crate::AckError>> + Send;
}

impl<T, S: DeadLetterSink<T>> DeadLetterSink<T> for Arc<S> {
    fn dead_letter(
        &self,
        letters: Vec<DeadLetter<T>>,
    ) -> impl Future<Output = Result<(), crate::AckError>> + Send {
        (**self).dead_letter(letters)
    }
}

/// A message given up on, for a [`DeadLetterSink`].
#[derive(Debug)]
pub struct DeadLetter<T> {
    /// The payload.
    pub data: T,
    /// Its metadata.
    pub metadata: crate::Metadata,
    /// Why it was given up on.
    pub reason: Arc<str>,
    /// How many attempts were made at the stage that gave up.
    pub attempts: u32,
    /// The stage that gave up.
    pub stage: Arc<str>,
}
