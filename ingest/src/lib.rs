//! Acknowledged ingestion pipelines on `stage`: Broadway for Rust.
//!
//! # A pipeline
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
