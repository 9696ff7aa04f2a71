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
//! # Running
//!
//! [`Flow::collect`], [`Flow::run`], [`Flow::into_stream`] and [`Flow::spawn`] run on the
//! current tokio runtime; [`Flow::collect_blocking`] and [`Flow::run_blocking`] make one.
//! [`Flow::into_stages`] and [`Flow::through_stages`] connect running stages. A panic in any
//! closure fails the flow with [`ErrorKind::Failed`], and the finisher returns it.
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
