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
//! # Closures, channels and sinks
//!
//! Where a trait impl would be all boilerplate, [`consumer_fn`], [`producer_consumer_fn`] (a
//! map, filter or flat map over whole batches) and [`producer_fn`] (events on demand) make a
//! stage from a closure, and their `async_` forms from a closure returning a future.
//!
//! [`from_iter`] and [`from_stream`] turn iterators and streams into producers; [`stream`]
//! consumes producers as a `Stream`. [`channel`] is the way into a pipeline from the rest of a
//! program: its [`Sender`]s wait while the pipeline is slow, so a burst of requests is held
//! back at the door instead of filling memory. [`into_sink`] and [`into_sender`] are the ways
//! out, into any `futures::Sink` or a tokio channel, with the same back-pressure.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (tx, builder) = stage::channel::<u64>(64);
//! let incoming = builder.start().unwrap();
//! let squared = stage::producer_consumer_fn(|batch: Vec<u64>| batch.iter().map(|n| n * n).collect())
//!     .subscribe_to(&incoming, Default::default())
//!     .start()
//!     .unwrap();
//! let (out, mut results) = tokio::sync::mpsc::channel(16);
//! stage::into_sender(out).subscribe_to(&squared, Default::default()).start().unwrap();
//!
//! tokio::spawn(async move { tx.send_all(1..=3).await.unwrap() }); // then the sender is dropped
//! let mut got = Vec::new();
//! while let Some(n) = results.recv().await {
//!     got.push(n);
//! }
//! assert_eq!(got, [1, 4, 9]);
//! # }
//! ```
//!
//! # Stopping from outside
//!
//! [`StageHandle::stop`] stops a stage after the messages already in its mailbox;
//! [`StageHandle::abort`] stops it ahead of them, between two batches. Either way the events it
//! received and never handled go back to its producers, and what it holds in its buffer is
//! dropped and counted. [`StageHandle::shutdown`] is graceful: a source stops producing and
//! dispatches what it holds, a consumer cancels its subscriptions and handles what was already
//! sent to it. Shut down the sources of a pipeline, or give them a
//! `tokio_util::sync::CancellationToken` with `cancel_on`, and the pipeline drains: every
//! stage behind them stops once it has passed on what it received, and nothing is lost but
//! what a stream or channel source had not yet let in.
//!
//! # Seeing into a pipeline
//!
//! - Every stage runs in a `tracing` span named `stage`, with its `name` and `kind`; asks and
//!   dispatches are logged at TRACE, stops at DEBUG or INFO, failures at ERROR.
//! - [`topology`] is a snapshot of every running stage and subscription of the process, each
//!   edge with the credit its consumer holds, the demand its producer owes and the events in
//!   flight: a stalled pipeline shows which edge holds no credit.
//! - `stall_warning(after)` on a builder starts a watchdog that warns, naming the stage, the
//!   subscription and the peer, when events wait and a consumer has stopped asking, or demand
//!   is owed and nothing is sent, for longer than `after`.
//! - With the `metrics` cargo feature, every stage records `stage_events_in_total`,
//!   `stage_events_out_total`, `stage_events_dropped_total`, `stage_events_returned_total`
//!   and the gauge `stage_buffered_events`, labelled with its `stage` name and `kind`, into
//!   the recorder installed for the `metrics` facade.
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
mod channel;
mod closure;
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
mod sink;
mod start;
mod stream;
mod supervisor;
mod topology;

pub use address::{AsProducer, ProducerRef};
pub use channel::{ChannelBuilder, MAX_CHANNEL_CAPACITY, SendError, Sender, TrySendError, channel};
pub use closure::{
    ConsumerFn, ProducerConsumerFn, ProducerFn, async_consumer_fn, async_producer_consumer_fn,
    async_producer_fn, consumer_fn, producer_consumer_fn, producer_fn,
};
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
pub use sink::{SenderConsumer, SinkConsumer, into_sender, into_sink};
pub use start::{
    ConsumerBuilder, ProducerBuilder, ProducerConsumerBuilder, consumer, producer,
    producer_consumer,
};
pub use stream::{
    ConsumerStream, EventStream, Feed, IterProducer, StreamBuilder, StreamProducer, from_iter,
    from_stream, stream,
};
pub use supervisor::{
    ChildError, ChildFailure, ChildId, ChildState, Children, ConsumerSupervisor, Restart,
    StartChildError, SupervisorHandle, SupervisorReport, TerminateChildError,
};
pub use topology::{
    ConsumerLink, DEFAULT_TOPOLOGY_WAIT, EdgeInfo, ProducerLink, StageInfo, StageKind, Topology,
    topology, topology_within,
};
