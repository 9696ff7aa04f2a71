//! Parallel, back-pressured collections and streams over [`stage`]: Elixir's Flow for Rust.
//!
//! ```
//! use flow::{Flow, Partition};
//! use std::collections::HashMap;
//!
//! let text = ["the quick brown fox", "jumps over the lazy dog", "the end"];
//!
//! // Sequentially: text.iter().flat_map(words).fold(HashMap, count).
//! // As a flow: split in parallel, route each word to one stage, count there.
//! let counts = Flow::from_iter(text)
//!     .flat_map(|line| line.split_whitespace().collect::<Vec<_>>())
//!     .partition(Partition::by_key(|w: &&str| *w))
//!     .reduce(HashMap::new, |acc, w| *acc.entry(w).or_insert(0) += 1)
//!     .emit_events()
//!     .collect_blocking()
//!     .unwrap();
//! assert!(counts.contains(&("the", 3)));
//! assert_eq!(counts.len(), 9);
//! ```
//!
//! # Layers
//!
//! A [`Flow`] is a lazy description. It runs as layers of identical stages (by default one per
//! core) built on [`stage`]'s producers and producer-consumers, so every hop has GenStage's
//! demand-driven back-pressure: no stage ever holds more than it asked for. Sources
//! ([`Flow::from_iter`], [`Flow::from_stream`], [`Flow::from_stages`]) start the first layer;
//! [`Flow::partition`], [`Flow::shuffle`] and [`Flow::departition`] start new ones. Collections
//! already in memory ([`Flow::from_vec`], [`Flow::from_shared`]) are read by the first layer's
//! stages themselves, as their consumers ask, with no producer stage in between. The mappers
//! written in a layer (`map`, `filter`, `flat_map`, ...) are fused: each stage applies them to a
//! whole batch at a time, in one pass.
//!
//! # Partitioning
//!
//! Stages receive events in no particular order. To aggregate by key, route events so that
//! equal keys meet in one stage with [`Partition::by_key`]; results are then exact per key.
//!
//! # Reducing
//!
//! [`Flow::reduce`] (and [`group_by`](Flow::group_by), [`emit_and_reduce`](Flow::emit_and_reduce))
//! folds each stage's events into an accumulator. What it emits is chosen on the returned
//! [`Reduced`] with [`emit_events`](Reduced::emit_events), [`emit_state`](Reduced::emit_state),
//! [`emit_nothing`](Reduced::emit_nothing) or [`on_trigger`](Reduced::on_trigger), called when a
//! [`Trigger`] fires: each window's `Done` (for the global window, when the stage's inputs are
//! finished), and the triggers its [`Window`] adds (every `n` events, periodically, at a fixed
//! window's watermark, or custom). A mapper after `on_trigger` applies to what the triggers
//! emit; a mapper or a second reduce on a `Reduced` itself does not compile;
//! [`Flow::departition`] and [`Flow::take_sort`] combine the stages' results into one.
//!
//! ```compile_fail
//! // `map` on a `Reduced` does not compile: choose what the reduce emits first.
//! let _ = flow::Flow::from_iter(0..10).reduce(|| 0, |s, x| *s += x).map(|s| s + 1);
//! ```
//!
//! # Windows
//!
//! [`Flow::window`] sets the current layer's windows: [`Window::global`] (the default),
//! [`Window::count`], [`Window::periodic`] (processing time) and [`Window::fixed`] (event time,
//! closed by watermarks, with allowed lateness). `docs/semantics.md` in the repository has
//! every rule, with where this library differs from Flow.
//!
//! # Event time
//!
//! A fixed window is done once every input of its stage has moved past it. Watermarks travel
//! with the data: the stages feeding a fixed-window layer measure the event time of what they
//! emit and send every stage of the layer their watermark, a value per batch, whichever stage
//! their events went to. So a partition that no key reaches still closes its windows as time
//! passes, and each producer of [`Flow::from_stages`] keeps its own watermark.
//! [`Window::idle_timeout`] keeps a silent input from holding every window open;
//! [`Window::on_late`] and [`Window::late_events`] hand over the events that come too late.
//!
//! # Joins and merges
//!
//! [`Flow::bounded_join`] and [`Flow::window_join`] join two flows by key ([`JoinKind`]:
//! inner, left, right or full outer), each side partitioned over the join's stages; the
//! operations written after a join run in its stages. [`Flow::merge`] and
//! [`Flow::merge_partitioned`] start one layer that reads several flows.
//!
//! # The plan
//!
//! Building a flow builds a plan of sources and layers, checked as a whole when a finisher
//! starts it; [`Flow::explain`] prints it (stages per layer, what each reads and how,
//! dispatchers, windows, triggers, fused operations) without starting anything.
//!
//! # Running
//!
//! [`Flow::collect`], [`Flow::run`], [`Flow::into_stream`], [`Flow::into_sink`] and
//! [`Flow::spawn`] run on the current tokio runtime; [`Flow::collect_blocking`] and
//! [`Flow::run_blocking`] make one. [`Flow::into_stages`] and [`Flow::through_stages`]
//! connect running stages. A panic in any closure fails the flow with [`ErrorKind::Failed`],
//! and the finisher returns it, only once every stage of the flow has exited.
//!
//! [`FlowStream::trigger`] and [`FlowHandle::trigger`] fire a named trigger on every stage of
//! a running flow.
//!
//! # Stopping a flow
//!
//! ```
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let token = CancellationToken::new();
//! let running = flow::Flow::from_iter(0u64..) // endless
//!     .map(|x| x * 2)
//!     .cancel_on(token.clone())
//!     .spawn();
//! token.cancel(); // or running.shutdown(); running.abort() stops it without draining
//! running.join().await.unwrap();
//! # }
//! ```
//!
//! [`FlowHandle::shutdown`] (or a token given to [`Flow::cancel_on`]) stops a flow gracefully:
//! its sources stop taking in more, and every event already in the flow goes through it, its
//! windows firing `Done` as at the end of the input. [`FlowHandle::abort`] stops every stage
//! at once and drops what is in flight. Dropping a [`FlowStream`] stops its flow; dropping a
//! [`FlowHandle`] does not (it detaches it, like tokio's `JoinHandle`).
//!
//! # Seeing into a flow
//!
//! Every stage of a flow is named after where it runs: `flow.L1.s0` is stage 0 of the node
//! `explain` numbers `[1]` (`r` for a relay, `p` for a source's producer), and logs inside a
//! `flow` span with its `layer` and `index`, around `stage`'s own span; [`stage::topology`]
//! lists it under that name.
//!
//! # Performance
//!
//! A flow pays per *batch*, not per event: each batch is one message between stages and one
//! pass of the fused operators. The default `max_demand` (1000, as in Flow) keeps latency and
//! memory low; for cheap per-event work over many events, raise it on each layer
//! (`.max_demand(10_000)`; 1.4-2.6x faster on the `map_filter_reduce` benchmark). A
//! [`Flow::from_iter`] source is read by one producer task, which copies every event and sends
//! it on: for data already in a `Vec` or a shared slice, [`Flow::from_vec`] and
//! [`Flow::from_shared`] are 3-7x faster, since every stage takes its own batches straight from
//! the collection. `benches/README.md` has the figures against rayon.
//!
//! # Differences from Flow
//!
//! - Misuse is a compile error where the types allow (`map` after `reduce`), an [`Error`]
//!   when the flow starts otherwise, never a crash.
//! - `group_by` keeps values in arrival order (Elixir prepends, so its lists are newest first).
//! - A trigger's whole output reaches `departition` as one unit (in upstream Flow it can run
//!   `done` twice).
//! - A panic anywhere, `reduce`'s `init` included, fails the flow and stops all its stages.
//! - Fixed windows close at most 1,024 windows per turn, so a jump far ahead in event time
//!   never blocks a stage.
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod error;
mod flow;
mod join;
mod layer_stage;
mod logic;
mod materialise;
mod merge;
mod partition;
mod plan;
mod reduce;
mod run;
mod source;
mod trigger;
mod watermark;
mod window;

pub use crate::error::{Error, ErrorKind};
pub use crate::flow::{Flow, MAX_STAGES, default_stages};
pub use crate::join::{JoinKind, Side};
pub use crate::partition::Partition;
pub use crate::reduce::{EmitReduced, Reduced};
pub use crate::run::{FlowHandle, FlowStream};
pub use crate::trigger::{Trigger, TriggerName, WindowType};
pub use crate::window::{LateEvents, Punctuation, Window};
