//! Acknowledged ingestion pipelines on [`stage`]: Broadway for Rust.
//!
//! A pipeline takes messages from producers (a broker's consumer, a queue, a test source),
//! handles them concurrently in processors, groups them into batches, handles each batch, and
//! settles every message with its source exactly once: acknowledged, rejected, handed back to
//! be redelivered, or dead-lettered. Back-pressure runs all the way to the source: a producer
//! is only ever asked for what the stages after it can take.
//!
//! ```
//! use std::time::Duration;
//! use ingest::{Batcher, BatchInfo, Context, Failure, Handler, Message, Outcome, Pipeline, TestSource};
//!
//! /// Parses numbers, and stores them a batch at a time.
//! struct Numbers;
//!
//! impl Handler for Numbers {
//!     type In = String;
//!     type Out = u64;
//!
//!     async fn handle_message(&self, msg: &mut Message<String>, _: &Context) -> Result<u64, Failure> {
//!         Ok(msg.data.trim().parse()?) // a line that is not a number fails
//!     }
//!
//!     async fn handle_batch(&self, batch: &mut [Message<u64>], info: &BatchInfo, _: &Context) -> Result<(), Failure> {
//!         println!("storing {} numbers ({:?})", batch.len(), info.trigger);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let source = TestSource::new();
//! let pipeline = Pipeline::builder("numbers", Numbers)
//!     .producer(source.producer())
//!     .batcher(Batcher::new("default").batch_size(2).batch_timeout(Duration::from_millis(10)))
//!     .start()
//!     .unwrap();
//! let outcomes = source.push(["1", "2", "three"].map(String::from)).unwrap().await;
//! assert_eq!(outcomes[..2], [Outcome::Ack, Outcome::Ack]);
//! assert_eq!(outcomes[2], Outcome::Nack { requeue: false });
//! let report = pipeline.shutdown(Duration::from_secs(5)).await;
//! assert_eq!((report.processed, report.acked, report.failed), (3, 2, 1));
//! # }
//! ```
//!
//! # The pipeline
//!
//! ```text
//! producers ──> processors ──┬─> batcher "a" ──> batch processors
//!  (any stage   handle_message └─> batcher "b" ──> batch processors
//!   producer)   (in chunks)        (by key, size, time)  handle_batch
//! ```
//!
//! - [`Producers`]: any [`stage::Producer`] of [`Message`]s, as many as its concurrency. A
//!   producer that finishes ends its part of the pipeline; when all have, the pipeline drains
//!   and ends on its own.
//! - [`Processors`]: each asks every producer for up to `max_demand` messages (default 10) and
//!   works in chunks of at most `max_demand - min_demand` (5): one
//!   [`prepare_messages`](Handler::prepare_messages) call per chunk, then
//!   [`handle_message`](Handler::handle_message) per message, in order.
//!   [`partition_by`](Processors::partition_by) keeps each key on one processor, in order.
//! - [`Batcher`]s, by name: each message goes to the one it names
//!   ([`Message::put_batcher`]), into a batch of its [batch key](Message::put_batch_key) that
//!   closes when full (`batch_size`, default 100), when its timeout expires (counted from its
//!   first message, default 1 s), or when a [flush](BatchMode::Flush) message arrives. Each
//!   batch goes to one of the batcher's batch processors for
//!   [`handle_batch`](Handler::handle_batch).
//! - Without batchers, processors settle what they handle; with them, processors settle only
//!   what failed, and batch processors settle each batch.
//!
//! The [`Builder`] checks every option when the pipeline starts: a bad one is a
//! [`ConfigError`] that names it, and nothing starts.
//!
//! # What is acked when
//!
//! Every message is settled exactly once, whatever happens: a message carries a guard that
//! settles it as `Nack { requeue: true }` if it is ever dropped unsettled.
//!
//! | what happens | the source hears | settled by |
//! |---|---|---|
//! | handled (and, with batchers, its batch succeeded) | [`Outcome::Ack`] | the processor's chunk, or the batch |
//! | `handle_message` returns `Err`, or panics | the failure's outcome: retried while the [`RetryPolicy`] allows, then [`Outcome::DeadLetter`] (with a [dead-letter sink](Builder::dead_letters)) or `Nack { requeue: false }`; or the [`Action`] the failure asks for | its processor |
//! | `prepare_messages` fails | the same, for the whole chunk | its processor |
//! | `handle_batch` returns `Err` or panics | the same, for the whole batch (its retries join a later batch) | its batch processor |
//! | `handle_batch` fails one message ([`Message::fail`]) | the same, for that message | its batch processor |
//! | the acknowledger returns an error | nothing more: it was told once; the error is counted ([`Report::ack_errors`], or [`Acker::errors`] for a guard's call) | |
//! | [`shutdown`](Pipeline::shutdown) within its deadline | everything handled and settled; retries waiting, [`Outcome::Retry`]; what producers held unsent, `Nack { requeue: true }` | each stage |
//! | `shutdown` past its deadline | what is left, `Nack { requeue: true }` ([`Report::abandoned`]) | each stage |
//! | a producer panics | what it held, `Nack { requeue: true }`; the pipeline goes on | the messages' guards |
//! | the process crashes | nothing: the broker redelivers what was not acked | the broker |
//!
//! Settlements of a chunk or a batch are grouped by [`Acker`]: one
//! [`Acknowledger::ack`] call per acknowledger, each on its own, so one
//! that fails holds no other back. [`Message::ack_now`] settles a message early, for good.
//!
//! # Failures, retries and dead letters
//!
//! A handler fails a message with `Err(`[`Failure`]`)` (any error converts with `?`), with
//! [`Message::fail`], or by panicking; a panic fails the message or the batch, never the
//! stage. A failure's [`Action`] asks for a retry (now or after a delay), a rejection (with or
//! without a requeue) or a dead letter; by default the stage's [`RetryPolicy`] decides
//! (attempts, [`Backoff`] with jitter). [`Handler::handle_failed`] sees what failed for good
//! just before it is settled, and may change each failure's outcome.
//!
//! # Batches of one key
//!
//! Batches of one [`BatchKey`] are handled one at a time, in the order they closed, whatever
//! the batcher's concurrency ([`Batcher::key_concurrency`] allows more); batches of the
//! default key go to any free batch processor. ([`Batcher::partition_by`] pins each partition
//! to one batch processor.) [`Batcher::max_open_keys`] bounds how many keys hold an open
//! batch.
//!
//! # Rate limiting
//!
//! [`Builder::rate_limit`] gives all of a pipeline's producers one budget of messages per
//! interval. It is taken before demand is sent upstream, so a spent budget holds the producers
//! back instead of dropping or queueing anything; [`Pipeline::update_rate_limit`] changes it
//! from the next interval or now ([`Apply`]).
//!
//! # Shutting down
//!
//! [`Pipeline::shutdown`] stops intake, lets the processors finish, flushes every open batch,
//! settles everything and returns a [`Report`] (processed, acked, failed, retried, abandoned,
//! and more). It is idempotent and safe to call from many tasks, for many pipelines at once.
//! A pipeline whose producers all finish ends by itself; [`Pipeline::join`] waits for it.
//!
//! # Testing
//!
//! [`TestSource::push`] returns [`Outcomes`], a future of each pushed message's outcome;
//! [`TestSource::push_flush`] pushes in flush mode, so batches do not wait for their timeout.
//! Pipelines run on tokio's paused clock (`#[tokio::test(start_paused = true)]`), so timeouts,
//! backoffs and rate limits are deterministic.
//!
//! # Seeing into a pipeline
//!
//! Spans: `ingest.processor` around each chunk and `ingest.batch` around each batch (DEBUG),
//! `ingest.message` around each `handle_message` call (TRACE). [`Pipeline::topology`] lists
//! the stages and their names; [`Pipeline::stats`] counts what happened so far. With the
//! `metrics` feature, counters and latency histograms go through the
//! [`metrics`](https://docs.rs/metrics) facade (`ingest_messages_acked_total`,
//! `ingest_batch_seconds`, ...).
//!
//! `docs/semantics.md` in the repository states every rule, and where this crate differs from
//! Broadway and why.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod ack;
mod batch;
mod batcher;
mod credit;
mod decide;
mod error;
mod failure;
mod guard;
mod handler;
mod limiter;
mod message;
mod options;
mod pipeline;
mod processor;
mod producers;
mod settle;
mod shared;
#[cfg(feature = "metrics")]
mod telemetry;
mod test_source;
mod topology;

pub use ack::{AckError, Acker, Acknowledger, Outcome, Settlement};
pub use error::{BuildError, ConfigError, RateLimitError};
pub use failure::{Action, Failure};
pub use handler::{BatchInfo, Context, DeadLetter, DeadLetterSink, Handler, StageKind, Trigger};
pub use message::{BatchKey, BatchMode, DEFAULT_BATCHER, Message, Metadata, Status, Value};
pub use options::{
    Apply, Backoff, Batcher, DEFAULT_BATCH_SIZE, DEFAULT_BATCH_TIMEOUT,
    DEFAULT_PROCESSOR_MAX_DEMAND, MAX_CONCURRENCY, MAX_WAIT, Processors, RateLimit, RetryPolicy,
};
pub use pipeline::{Builder, KILL_GRACE, Pipeline, Report};
pub use producers::Producers;
pub use test_source::{Outcomes, TestProducer, TestSource};
pub use topology::{BatcherTopology, StageGroup, Topology};
