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
//!
//!     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
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
//! A [`Producer`] emits events, a [`Consumer`] receives them, and a type that is both is a
//! *producer-consumer* ([`producer_consumer`]). Each running stage is one tokio task with a
//! mailbox; stages share nothing but messages. A consumer *subscribes* to a producer with
//! [`SubscribeOptions`] and asks it for events: demand is credit, and a producer never sends a
//! consumer more events than it has asked for. With the defaults (`max_demand` 1000,
//! `min_demand` 500) a consumer asks for 1000 events, handles what arrives in batches of at most
//! 500, and asks for more each time its credit falls to 500. That is all the back-pressure
//! there is, and all that is needed: a slow consumer slows its producer down instead of filling
//! memory.
//!
//! Events travel as `Vec` batches and demand as counts, so the cost of the protocol is per
//! batch, not per event. `docs/semantics.md` in the repository states every rule.
//!
//! # Messages, timers and the start hook
//!
//! A stage takes messages only of the types it implements [`Call`], [`Cast`] or [`Info`] for,
//! one impl per message type, each `Call` with its own reply type; a stage that takes none
//! declares none, and its handle has no `call` that compiles. This keeps GenStage's handler
//! names (`handle_call`, `handle_cast`, `handle_info`) while letting the compiler check every
//! request against its reply, where one request enum per stage would need a reply enum and
//! impossible match arms. Every handler gets a [`Context`]: [`Context::myself`] is the stage's
//! own handle (to send itself messages, or to give to tasks it spawns),
//! [`Context::send_after`] sets a cancellable timer on tokio's clock (so tests on a paused
//! clock control it), and `handle_start` runs once the initial subscriptions are made, before
//! anything else.
//!
//! # Buffering
//!
//! Events a producer emits that no consumer has asked for yet wait in its buffer (10,000 by
//! default, keeping the newest; see [`ProducerBuilder::buffer_size`] and [`Keep`]). What does
//! not fit is dropped, counted in [`Counters::dropped`] and reported through `tracing`. The
//! buffer is always drained before newer events are sent, so order is kept even across a
//! consumer that leaves and another that subscribes (unlike upstream GenStage, issue 311).
//!
//! # Dispatchers
//!
//! A producer's [`Dispatcher`] decides which consumer gets which events. The default
//! [`DemandDispatcher`] sends each event to one consumer, the one that asked for the most;
//! [`BroadcastDispatcher`] sends every event to every consumer; [`PartitionDispatcher`] routes
//! each event to the consumer of its partition.
//!
//! # Ending
//!
//! A stage ends when a handler asks it to ([`Context::stop`]), when a finite producer has
//! dispatched everything ([`Context::finish`]), when it is told to ([`StageHandle::stop`]), or
//! when a handler panics. Its consumers then act on their [`CancelMode`]: permanent ones stop
//! with the same reason, transient ones only if it is abnormal, temporary ones never.
//! [`StageHandle::join`] waits for the end and returns the [`Reason`]. Events a stopping stage
//! has received and not handled go back to their producers for their other consumers; events it
//! holds in its own buffer are dropped and counted ([`StageHandle::final_counters`]).
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
//! asked for again as soon as its child ends (a supervisor's `min_demand` defaults to 0).
//! Failed children are logged, counted, passed to an
//! [`on_failure`](ConsumerSupervisor::on_failure) callback and, with [`Restart::Transient`],
//! run again within a restart intensity; [`SupervisorHandle`] counts, starts and terminates
//! them.
//!
//! When its producer ends (as the subscription's cancel mode says) or on
//! [`SupervisorHandle::shutdown`], a supervisor stops taking events and stops once its running
//! children are done; a [`shutdown`](ConsumerSupervisor::shutdown) grace bounds the wait, and
//! the children still running at its end are aborted, counted and logged.
//! [`SupervisorHandle::join_report`] returns the exit reason with the final counts.
//!
//! # Differences from GenStage
//!
//! - Invalid options are rejected with an [`OptionError`] that names the option, when the stage
//!   starts or the subscription is made, checked against the producer's dispatcher before
//!   anything is sent; a buffer size of 0 means "no buffer".
//! - The buffer is drained before newer events overtake it (issue 311).
//! - A subscription the producer refuses never stops the consumer.
//! - Events in flight to a consumer that stops are given back, not lost.
//!
//! ```compile_fail
//! // A consumer of `u32`s cannot subscribe to a producer of `u64`s.
//! use stage::{Consumer, Context, SubscriptionId};
//! struct Small;
//! impl Consumer for Small {
//!     type In = u32;
//!     async fn handle_events(&mut self, _: Vec<u32>, _: SubscriptionId, _: &mut Context<Self>) {}
//! }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let numbers = stage::from_iter(0..10u64).start().unwrap();
//! let _ = stage::consumer(Small).subscribe_to(&numbers, Default::default());
//! # }
//! ```
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod address;
mod buffer;
mod consumer;
mod context;
mod counters;
pub mod demand;
mod dispatcher;
mod edge;
mod engine;
mod error;
mod handle;
mod inlet;
mod message;
mod options;
mod outlet;
mod packet;
mod producer;
mod start;
mod stream;
mod supervisor;

pub use address::{AsProducer, ProducerRef};
pub use consumer::Consumer;
pub use context::{Context, ReplyTo, TimerRef};
pub use counters::Counters;
pub use dispatcher::{
    BoxedHash, BroadcastDispatcher, Contract, DemandDispatcher, Dispatcher, DispatcherState,
    MAX_PARTITIONS, Outbox, PartitionDispatcher,
};
pub use error::{CallError, Cancel, OptionError, Reason, StartError, SubscribeError};
pub use handle::StageHandle;
pub use message::{Call, Cast, Info};
pub use options::{
    BufferSize, CancelMode, DEFAULT_BUFFER_SIZE, DEFAULT_MAX_DEMAND, DemandMode, Keep,
    MAX_DEMAND_LIMIT, Selector, SubscribeOptions, SubscriptionId, SubscriptionMode,
};
pub use packet::Packet;
pub use producer::Producer;
pub use start::{
    ConsumerBuilder, ProducerBuilder, ProducerConsumerBuilder, consumer, producer,
    producer_consumer,
};
pub use stream::{
    ConsumerStream, Feed, IterProducer, StreamBuilder, StreamProducer, from_iter, from_stream,
    stream,
};
pub use supervisor::{
    ChildError, ChildFailure, ChildId, ChildState, Children, ConsumerSupervisor, Restart,
    StartChildError, SupervisorHandle, SupervisorReport, TerminateChildError,
};
