//! Back-pressured stages for tokio: GenStage's producers, producer-consumers and consumers.
//!
//! # Hello, stages
//!
//! ```
//! use stage::{Consumer, Context, SubscribeOptions, SubscriptionId};
//!
//! /// Adds up what it receives.
//! struct Sum(u64);
//!
//! impl Consumer for Sum {
//!     type In = u64;
//!     type Call = ();
//!     type Reply = u64;
//!     type Msg = ();
//!
//!     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context) {
//!         self.0 += events.iter().sum::<u64>();
//!     }
//!
//!     async fn terminate(&mut self, _: &stage::Reason) {
//!         println!("sum: {}", self.0);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let numbers = stage::from_iter(1..=1000u64).start().unwrap();
//! let sum = stage::consumer(Sum(0))
//!     .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
//!     .start()
//!     .unwrap();
//! // The producer finishes, and its permanent consumer stops with it.
//! assert_eq!(sum.join().await, stage::Reason::Normal);
//! # }
//! ```
//!
//! # Stages and demand
//!
//! A [`Producer`] emits events, a [`Consumer`] receives them and a [`ProducerConsumer`] does
//! both. Each running stage is one tokio task with a mailbox; stages share nothing but
//! messages. A consumer *subscribes* to a producer with [`SubscribeOptions`] and asks it for
//! events: demand is credit, and a producer never sends a consumer more events than it has
//! asked for. With the defaults (`max_demand` 1000, `min_demand` 500) a consumer asks for 1000
//! events, handles what arrives in batches of at most 500, and asks for more each time its
//! credit falls to 500. That is all the back-pressure there is, and all that is needed: a slow
//! consumer slows its producer down instead of filling memory.
//!
//! Events travel as `Vec` batches and demand as counts, so the cost of the protocol is per
//! batch, not per event.
//!
//! # Buffering
//!
//! Events a producer emits that no consumer has asked for yet wait in its buffer (10,000 by
//! default, keeping the newest; see [`Builder::buffer_size`] and [`Keep`]). What does not fit is
//! dropped, counted in [`Counters::dropped`] and reported through `tracing`. The buffer is
//! always drained before newer events are sent, so order is kept even across a consumer that
//! leaves and another that subscribes (unlike upstream GenStage, issue 311).
//!
//! # Dispatchers
//!
//! A producer's [`Dispatcher`] decides which consumer gets which events. The default
//! [`DemandDispatcher`] sends each event to one consumer, the one that asked for the most.
//!
//! # Ending
//!
//! A stage ends when a handler asks it to ([`Context::stop`]), when a finite producer has
//! dispatched everything ([`Context::finish`]), when it is told to ([`StageHandle::stop`]), or when
//! a handler panics. Its consumers then act on their [`CancelMode`]: permanent ones stop with
//! the same reason, transient ones only if it is abnormal, temporary ones never.
//! [`StageHandle::join`] waits for the end and returns the [`Reason`].
//!
//! # Streams
//!
//! [`from_iter`] and [`from_stream`] turn iterators and streams into producers; [`stream`]
//! consumes producers as a `Stream`.
//!
//! # Consumer supervisor
//!
//! A [`ConsumerSupervisor`] is a consumer that starts one tokio task per event, with at most
//! `max_demand` running per subscription: demand is the number of children, and a slot is
//! asked for again when its child ends. Failed children are logged, counted and, with
//! [`Restart::Transient`], run again within a restart intensity; [`SupervisorHandle`] counts,
//! starts and terminates them.
//!
//! # Differences from GenStage
//!
//! - Invalid options are rejected with an [`OptionError`] that names the option, when the stage
//!   starts or the subscription is made; a buffer size of 0 means "no buffer".
//! - The buffer is drained before newer events overtake it (issue 311).
//! - A subscription the producer refuses never stops the consumer.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod buffer;
mod consumer;
mod context;
pub mod demand;
mod dispatcher;
mod engine;
mod error;
mod handle;
mod kind;
mod mailbox;
mod options;
mod packet;
mod producer;
mod producer_consumer;
mod start;
mod stream;
mod supervisor;

pub use consumer::Consumer;
pub use context::{Cancel, CancelKind, Context, Peer, ReplyTo};
pub use dispatcher::{
    BoxedHash, BroadcastDispatcher, DemandDispatcher, Dispatcher, PartitionDispatcher,
};
pub use error::{CallError, OptionError, Reason, StartError, SubscribeError};
pub use handle::{ConsumerHandle, Counters, ProducerConsumerHandle, ProducerHandle, StageHandle};
pub use kind::{ConsumerStage, Emits, Kind, ProducerConsumerStage, ProducerStage, Receives};
pub use mailbox::{AsProducer, ProducerRef};
pub use options::{
    BufferSize, CancelMode, DEFAULT_BUFFER_SIZE, DEFAULT_MAX_DEMAND, DemandMode, Keep, Selector,
    SubscribeOptions, SubscriptionId, SubscriptionMode,
};
pub use packet::Packet;
pub use producer::Producer;
pub use producer_consumer::ProducerConsumer;
pub use start::{Builder, consumer, producer, producer_consumer};
pub use stream::{
    ConsumerStream, Feed, IterProducer, StreamProducer, from_iter, from_stream, from_stream_with,
    stream,
};
pub use supervisor::{
    ChildId, ChildState, Children, ConsumerSupervisor, Restart, StartChildError, SupervisorHandle,
    TerminateChildError,
};
