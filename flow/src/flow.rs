//! `Flow<T>`: the lazy description of a pipeline, its sources and its operators.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use futures::Stream;
use stage::{OptionError, ProducerRef};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::logic::{Factory, Input as InputLogic, Then, uniq_op};
use crate::materialise::{
    AnyClock, Ctx, Feed, Input, Layer, Open, Source, SourceStart, Stages, Wiring, stage_name,
};
use crate::plan::{Node, NodeKind, Op, Plan, SourceKind};
use crate::reduce::Reduced;
use crate::source::{Chunks, Owned, Shared};
use crate::window::{StageWindow, Window};

/// A lazy, parallel pipeline of `T`s: sources, then layers of stages.
///
/// Building a flow starts nothing: it builds a *plan*, a graph of sources and layers that
/// [`explain`](Flow::explain) prints. Each source, [`partition`](Flow::partition),
/// [`shuffle`](Flow::shuffle), [`merge`](Flow::merge), join and
/// [`departition`](Flow::departition) begins a *layer* of identical stages (by default one
/// per core); the operators written after it run inside that layer's stages, fused into one
/// pass per batch. A finisher ([`collect`](Flow::collect), [`run`](Flow::run),
/// [`into_stream`](Flow::into_stream), ...) checks the whole plan, then starts its stages on
/// the current tokio runtime.
///
/// # Examples
///
/// ```
/// use flow::Flow;
///
/// let mut squares = Flow::from_iter(1..=10u64)
///     .map(|x| x * x)
///     .filter(|x| x % 2 == 0)
///     .collect_blocking()
///     .unwrap();
/// squares.sort();
/// assert_eq!(squares, [4, 16, 36, 64, 100]);
/// ```
#[must_use = "flows do nothing unless run"]
pub struct Flow<T> {
    pub(crate) inner: Result<Built<T>, Error>,
}

/// A flow as built so far: the plan of every node, and what its last node runs.
pub(crate) struct Built<T> {
    pub(crate) plan: Plan,
    pub(crate) open: Open<T>,
}

/// A flow whose last node is a layer (what operators add to).
pub(crate) struct Layered<T> {
    pub(crate) plan: Plan,
    pub(crate) layer: Layer<T>,
}

impl<T: Send + 'static> Layered<T> {
    /// The layer runs `logic` now (an operation `op` was added).
    pub(crate) fn with_logic<R: Send + 'static>(
        mut self,
        op: Op,
        logic: Factory<R>,
        reduced: bool,
    ) -> Layered<R> {
        self.plan.node_mut(self.layer.node).ops.push(op);
        let layer = self.layer;
        Layered {
            plan: self.plan,
            layer: Layer {
                node: layer.node,
                feed: layer.feed,
                logic,
                window: layer.window,
                clock: layer.clock,
                has_ops: layer.has_ops || op != Op::MapBatch,
                reduced,
                reads_own_type: layer.reads_own_type,
                single: layer.single,
            },
        }
    }

    /// Sets the layer's window, over the layer's input events `W` (checked by the caller
    /// against the layer's operations).
    pub(crate) fn set_window<W: Send + 'static>(&mut self, window: Window<W>) {
        self.plan.node_mut(self.layer.node).window = window.info();
        self.layer.clock = window.clock().map(|c| Arc::new(c) as AnyClock);
        self.layer.window = window.erase();
    }

    pub(crate) fn into_flow(self) -> Flow<T> {
        Flow {
            inner: Ok(Built {
                plan: self.plan,
                open: Open::Layer(self.layer),
            }),
        }
    }
}

/// Drains the flow of `stages` once any of `tokens` is cancelled; the task ends with the flow.
fn drain_on(tokens: Vec<CancellationToken>, stages: Stages) {
    tokio::spawn(async move {
        let cancelled = futures::future::select_all(tokens.iter().map(|t| Box::pin(t.cancelled())));
        tokio::select! {
            _ = cancelled => stages.drain(),
            () = stages.exited() => {}
        }
    });
}

/// The most stages a layer may run: 65,536.
pub const MAX_STAGES: usize = stage::MAX_PARTITIONS;

/// The default number of stages in a layer: the number of cores.
pub fn default_stages() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<T> fmt::Debug for Flow<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Ok(built) => write!(f, "Flow\n{}", built.plan.explain()),
            Err(e) => f.debug_struct("Flow").field("error", e).finish(),
        }
    }
}

impl<T: Send + 'static> Flow<T> {
    fn source(kind: SourceKind, producers: usize, start: SourceStart<T>) -> Self {
        let (plan, node) = Plan::with(Node::new(NodeKind::Source { kind, producers }));
        Flow {
            inner: Ok(Built {
                plan,
                open: Open::Source(Source { node, kind, start }),
            }),
        }
    }

    /// A new layer reading `feed`, as a node of `plan` made of `node`.
    pub(crate) fn layer(mut plan: Plan, node: Node, feed: Feed, logic: Factory<T>) -> Self {
        let reads_own_type = matches!(
            node.kind,
            NodeKind::Layer | NodeKind::Local { .. } | NodeKind::ReadsProducers { .. }
        );
        let single = node.kind == NodeKind::Departition;
        let node = plan.add(node);
        Layered {
            plan,
            layer: Layer {
                node,
                feed,
                logic,
                window: StageWindow::default(),
                clock: None,
                has_ops: false,
                reduced: false,
                reads_own_type,
                single,
            },
        }
        .into_flow()
    }

    pub(crate) fn failed(error: Error) -> Self {
        Flow { inner: Err(error) }
    }

    /// The plan of the flow as text: every source and layer, upstream first, with its stages,
    /// what it reads and how, its demand, window and triggers, its fused operations, and the
    /// dispatcher its stages emit through. Nothing is started.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Partition};
    ///
    /// let flow = Flow::from_iter(0..100u32)
    ///     .map(|x| x % 10)
    ///     .stages(2)
    ///     .partition(Partition::by_key(|x: &u32| *x).stages(3))
    ///     .reduce(|| 0u32, |n, _| *n += 1)
    ///     .emit_state();
    /// let plan = flow.explain();
    /// assert!(plan.contains("[1] layer: 3 stages, reading [0] by partition"), "{plan}");
    /// ```
    pub fn explain(&self) -> String {
        match &self.inner {
            Ok(built) => built.plan.explain(),
            Err(e) => format!("invalid flow: {e}\n"),
        }
    }

    // ----- sources -----

    /// A flow over the items of one iterator, read by one producer (GenStage's
    /// `from_enumerable`): it reads exactly as many items as its stages ask for.
    ///
    /// # Examples
    ///
    /// ```
    /// let n = flow::Flow::from_iter(0..1000).collect_blocking().unwrap().len();
    /// assert_eq!(n, 1000);
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Flow::from_iters([iter])
    }

    /// A flow over several iterators, one producer each, read concurrently.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut all = flow::Flow::from_iters([vec![1, 2], vec![3]]).collect_blocking().unwrap();
    /// all.sort();
    /// assert_eq!(all, [1, 2, 3]);
    /// ```
    pub fn from_iters<I>(iters: impl IntoIterator<Item = I>) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        let iters: Vec<I::IntoIter> = iters.into_iter().map(IntoIterator::into_iter).collect();
        if iters.is_empty() {
            return Flow::failed(Error::misuse("from_iters needs at least one iterator"));
        }
        let n = iters.len();
        Flow::source(
            SourceKind::Iters,
            n,
            Box::new(move |dispatch, stages: &Stages, layer: usize| {
                iters
                    .into_iter()
                    .enumerate()
                    .map(|(index, iter)| {
                        let (name, span) = stage_name(layer, 'p', index);
                        let handle =
                            stage::producer(stage::IterProducer::new(iter).stop_on_cancel())
                                .name(name)
                                .parent_span(span)
                                .dispatcher(dispatch())
                                .start()?;
                        stages.add_source(&handle);
                        Ok(handle.producer())
                    })
                    .collect()
            }),
        )
    }

    /// A flow over a `Stream`, pulled only as its stages ask.
    ///
    /// # Examples
    ///
    /// ```
    /// let got = flow::Flow::from_stream(futures::stream::iter(vec!["a", "b"])).collect_blocking().unwrap();
    /// assert_eq!(got.len(), 2);
    /// ```
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Flow::from_streams([stream])
    }

    /// A flow over several streams, one producer each.
    pub fn from_streams<S>(streams: impl IntoIterator<Item = S>) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        let streams: Vec<S> = streams.into_iter().collect();
        if streams.is_empty() {
            return Flow::failed(Error::misuse("from_streams needs at least one stream"));
        }
        let n = streams.len();
        Flow::source(
            SourceKind::Streams,
            n,
            Box::new(move |dispatch, stages: &Stages, layer: usize| {
                streams
                    .into_iter()
                    .enumerate()
                    .map(|(index, s)| {
                        let (name, span) = stage_name(layer, 'p', index);
                        let handle = stage::from_stream(s)
                            .name(name)
                            .parent_span(span)
                            .dispatcher(dispatch())
                            .stop_on_cancel()
                            .start()?;
                        stages.add_source(&handle);
                        Ok(handle.producer())
                    })
                    .collect()
            }),
        )
    }

    /// A flow over the events of a `Vec`, read by the stages of the first layer themselves:
    /// whichever stage has room takes the next `max_demand` events, moved out of the `Vec`
    /// without cloning. No producer stage sits in between, so the reading is as parallel as
    /// the layer (rayon's `into_par_iter`, with back-pressure).
    ///
    /// # Examples
    ///
    /// ```
    /// let sum: u64 = flow::Flow::from_vec((1..=100u64).collect())
    ///     .map(|x| x * 2)
    ///     .reduce(|| 0u64, |sum, x| *sum += x)
    ///     .emit_state()
    ///     .collect_blocking()
    ///     .unwrap()
    ///     .iter()
    ///     .sum();
    /// assert_eq!(sum, 10_100);
    /// ```
    pub fn from_vec(events: Vec<T>) -> Self {
        Flow::from_chunks("from_vec", Arc::new(Owned::new(events)))
    }

    /// A flow over a shared slice (an `Arc<Vec<T>>`, `Arc<[T]>`, ...) that stays the caller's:
    /// like [`from_vec`](Flow::from_vec), but each batch is cloned (one `memcpy` for `Copy`
    /// events) and the data is left intact, for rereading it or sharing it with other work.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let data: Arc<Vec<u32>> = Arc::new((0..1000).collect());
    /// let evens = flow::Flow::from_shared(Arc::clone(&data))
    ///     .filter(|x| x % 2 == 0)
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(evens.len(), 500);
    /// assert_eq!(data.len(), 1000);
    /// ```
    pub fn from_shared<S>(events: Arc<S>) -> Self
    where
        S: AsRef<[T]> + Send + Sync + ?Sized + 'static,
        T: Clone,
    {
        Flow::from_chunks("from_shared", Arc::new(Shared::new(events)))
    }

    fn from_chunks(what: &'static str, chunks: Arc<dyn Chunks>) -> Self {
        Flow::layer(
            Plan::default(),
            Node::new(NodeKind::Local { what }),
            Feed::Local(chunks),
            InputLogic::factory(),
        )
    }

    /// A flow reading running producer stages (GenStage producers or producer-consumers). It
    /// subscribes transiently: a producer that stops normally ends its part of the flow.
    ///
    /// Without operations, the next layer (or the finisher) subscribes to the producers
    /// directly; a [`partition`](Flow::partition) or event-time windows after it put one relay
    /// stage per producer in between (the producers' own dispatchers cannot route, and each
    /// producer's event time must stay its own).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let numbers = stage::from_iter(1..=3).start().unwrap();
    /// let doubled = flow::Flow::from_stages([numbers.producer()]).map(|x| x * 2);
    /// let mut got = doubled.collect().await.unwrap();
    /// got.sort();
    /// assert_eq!(got, [2, 4, 6]);
    /// # }
    /// ```
    pub fn from_stages(producers: impl IntoIterator<Item = ProducerRef<T>>) -> Self {
        let producers: Vec<ProducerRef<T>> = producers.into_iter().collect();
        if producers.is_empty() {
            return Flow::failed(Error::misuse("from_stages needs at least one producer"));
        }
        let n = producers.len();
        Flow::source(
            SourceKind::Stages,
            n,
            Box::new(move |_, _: &Stages, _| Ok(producers)),
        )
    }

    // ----- options of the current layer -----

    fn options_mut(&mut self) -> Option<&mut crate::plan::Options> {
        let built = self.inner.as_mut().ok()?;
        let node = built.open.node();
        Some(&mut built.plan.node_mut(node).options)
    }

    /// How many stages the current layer runs (default: the number of cores). Must be at
    /// least 1; checked when the flow starts. A departition runs in one stage: another count
    /// there is an error.
    pub fn stages(mut self, stages: usize) -> Self {
        if let Ok(Built {
            open: Open::Layer(layer),
            ..
        }) = &self.inner
        {
            if layer.single && stages != 1 {
                return Flow::failed(
                    OptionError::new("stages", "a departition runs in exactly 1 stage", stages)
                        .into(),
                );
            }
        }
        if let Some(o) = self.options_mut() {
            o.stages = stages;
            o.stages_given = true;
        }
        self
    }

    /// The current layer's `max_demand` towards what feeds it (default 1000).
    pub fn max_demand(mut self, max: usize) -> Self {
        if let Some(o) = self.options_mut() {
            o.max_demand = max;
        }
        self
    }

    /// The current layer's `min_demand` (default `max_demand / 2`).
    pub fn min_demand(mut self, min: usize) -> Self {
        if let Some(o) = self.options_mut() {
            o.min_demand = Some(min);
        }
        self
    }

    /// The windows of the current layer's reducer (default: [`Window::global`]). A fixed
    /// window or a custom trigger must be set before the layer's operations (they read the
    /// layer's input events), and not on a departition or a join (give a join its window in
    /// [`window_join`](Flow::window_join)); otherwise the flow fails to start with an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Window};
    ///
    /// let snapshots = Flow::from_iter(1..=4)
    ///     .stages(1)
    ///     .window(Window::global().trigger_every(2))
    ///     .reduce(|| 0, |sum, x| *sum += x)
    ///     .emit_state()
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(snapshots, [3, 10, 10]);
    /// ```
    pub fn window(self, window: Window<T>) -> Self {
        let mut layered = match self.into_layered() {
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        if window.reads_events() {
            if !layered.layer.reads_own_type {
                return Flow::failed(Error::misuse(
                    "a fixed window or a custom trigger cannot be set on a departition or a join (give a join its window in window_join)",
                ));
            }
            if layered.layer.has_ops {
                return Flow::failed(Error::misuse(
                    "a fixed window (or a custom trigger) must be set before the layer's operations, since it reads the layer's input events",
                ));
            }
        }
        layered.set_window(window);
        layered.into_flow()
    }

    // ----- layers -----

    /// The current layer, turning a bare source into a layer of stages that read its
    /// producers.
    pub(crate) fn into_layered(self) -> Result<Layered<T>, Error> {
        let Built { mut plan, open } = self.inner?;
        let layer = match open {
            Open::Layer(layer) => layer,
            Open::Source(source) => {
                let node = plan.node_mut(source.node);
                if let NodeKind::Source { kind, producers } = node.kind {
                    node.kind = NodeKind::ReadsProducers { kind, producers };
                }
                Layer {
                    node: source.node,
                    feed: Feed::Inputs(vec![Input::producers(source.node, source.start)]),
                    logic: InputLogic::factory(),
                    window: StageWindow::default(),
                    clock: None,
                    has_ops: false,
                    reduced: false,
                    reads_own_type: true,
                    single: false,
                }
            }
        };
        Ok(Layered { plan, layer })
    }

    /// The flow as built, a bare source asked for a number of stages turned into a layer of
    /// that many stages (what it runs as).
    pub(crate) fn into_built(self) -> Result<Built<T>, Error> {
        let stages_given = match &self.inner {
            Ok(Built {
                plan,
                open: Open::Source(source),
            }) => plan.node(source.node).options.stages_given,
            Ok(_) => false,
            Err(_) => false,
        };
        if stages_given {
            let layered = self.into_layered()?;
            return Ok(Built {
                plan: layered.plan,
                open: Open::Layer(layered.layer),
            });
        }
        self.inner
    }

    /// Checks the whole plan, then starts the flow; its last stages get demand dispatchers.
    pub(crate) fn start(self, stages: &Stages) -> Result<Vec<ProducerRef<T>>, Error> {
        let Built { plan, open } = self.into_built()?;
        plan.validate()?;
        let started = open.start(
            Wiring::plain(),
            &Ctx {
                plan: &plan,
                stages,
            },
        );
        if started.is_err() {
            // What did start has no consumer and would wait for one for ever.
            stages.abort();
        } else if !plan.cancel.is_empty() {
            drain_on(plan.cancel, stages.clone());
        }
        started
    }

    /// Stops the flow gracefully when `token` is cancelled, whichever finisher runs it: its
    /// sources stop taking in more, and everything already in the flow goes through it as if
    /// the sources had run out (see [`FlowHandle::shutdown`](crate::FlowHandle::shutdown)). The finisher then returns as
    /// for a flow that finished. Several tokens may be given; any of them stops the flow.
    ///
    /// Only the sources the flow owns stop: a flow over running producers
    /// ([`from_stages`](Flow::from_stages)) goes on until they finish, so give them the same
    /// token (`cancel_on` of their builders).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_util::sync::CancellationToken;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let token = CancellationToken::new();
    /// let mut stream = flow::Flow::from_iter(0u64..) // endless
    ///     .stages(1)
    ///     .reduce(|| 0u64, |n, _| *n += 1)
    ///     .emit_state()
    ///     .cancel_on(token.clone())
    ///     .into_stream()
    ///     .unwrap();
    /// token.cancel();
    /// // The count of every event that entered the flow, at its `Done` trigger.
    /// let counted = futures::StreamExt::collect::<Vec<u64>>(&mut stream).await;
    /// assert_eq!(counted.len(), 1);
    /// assert!(stream.result().is_ok());
    /// # }
    /// ```
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        if let Ok(built) = &mut self.inner {
            built.plan.cancel.push(token);
        }
        self
    }

    /// Adds a per-batch operation to the current layer.
    fn then<R, O>(self, op: Op, make_op: impl Fn() -> O + Send + Sync + 'static) -> Flow<R>
    where
        R: Send + 'static,
        O: FnMut(Vec<T>) -> Vec<R> + Send + 'static,
    {
        let layered = match self.into_layered() {
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        if layered.layer.reduced && op == Op::Uniq {
            return Flow::failed(Error::misuse(
                "uniq/uniq_by cannot be called after a reduce in the same layer",
            ));
        }
        if op == Op::MapBatch && layered.layer.has_ops {
            return Flow::failed(Error::misuse(
                "map_batch can only be called at the beginning of a layer, before any other operation",
            ));
        }
        let logic = Then::factory(Arc::clone(&layered.layer.logic), make_op);
        let reduced = layered.layer.reduced;
        layered.with_logic(op, logic, reduced).into_flow()
    }

    /// Applies `map_op` to each event, shown in the plan as `op`.
    pub(crate) fn map_as<R, F>(self, op: Op, map_op: F) -> Flow<R>
    where
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        let map_op = Arc::new(map_op);
        self.then(op, move || {
            let f = Arc::clone(&map_op);
            move |events: Vec<T>| events.into_iter().map(|e| f(e)).collect()
        })
    }

    // ----- mappers -----

    /// Applies `map_op` to each event.
    ///
    /// After [`on_trigger`](Reduced::on_trigger) or an `emit_*`, it applies to what the triggers
    /// emit.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut got = flow::Flow::from_iter(1..=3).map(|x| x * 10).collect_blocking().unwrap();
    /// got.sort();
    /// assert_eq!(got, [10, 20, 30]);
    /// ```
    pub fn map<R, F>(self, map_op: F) -> Flow<R>
    where
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        self.map_as(Op::Map, map_op)
    }

    /// Keeps the events for which `filter_op` is true.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut got = flow::Flow::from_iter(1..=6).filter(|x| x % 3 == 0).collect_blocking().unwrap();
    /// got.sort();
    /// assert_eq!(got, [3, 6]);
    /// ```
    pub fn filter<F>(self, filter_op: F) -> Flow<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let filter_op = Arc::new(filter_op);
        self.then(Op::Filter, move || {
            let f = Arc::clone(&filter_op);
            move |mut events: Vec<T>| {
                events.retain(|e| f(e));
                events
            }
        })
    }

    /// Drops the events for which `reject_op` is true.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut got = flow::Flow::from_iter(1..=6).reject(|x| x % 3 == 0).collect_blocking().unwrap();
    /// got.sort();
    /// assert_eq!(got, [1, 2, 4, 5]);
    /// ```
    pub fn reject<F>(self, reject_op: F) -> Flow<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let reject_op = Arc::new(reject_op);
        self.then(Op::Reject, move || {
            let f = Arc::clone(&reject_op);
            move |mut events: Vec<T>| {
                events.retain(|e| !f(e));
                events
            }
        })
    }

    /// Maps each event to `Some(new)` to keep or `None` to drop.
    ///
    /// # Examples
    ///
    /// ```
    /// let got = flow::Flow::from_iter(["1", "x", "3"])
    ///     .filter_map(|s| s.parse::<u32>().ok())
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(got.iter().sum::<u32>(), 4);
    /// ```
    pub fn filter_map<R, F>(self, filter_map_op: F) -> Flow<R>
    where
        R: Send + 'static,
        F: Fn(T) -> Option<R> + Send + Sync + 'static,
    {
        let op = Arc::new(filter_map_op);
        self.then(Op::FilterMap, move || {
            let f = Arc::clone(&op);
            move |events: Vec<T>| events.into_iter().filter_map(|e| f(e)).collect()
        })
    }

    /// Maps each event to any number of events.
    ///
    /// # Examples
    ///
    /// ```
    /// let got = flow::Flow::from_iter(["a b", "c"])
    ///     .flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(got.len(), 3);
    /// ```
    pub fn flat_map<R, I, F>(self, flat_map_op: F) -> Flow<R>
    where
        R: Send + 'static,
        I: IntoIterator<Item = R>,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let op = Arc::new(flat_map_op);
        self.then(Op::FlatMap, move || {
            let f = Arc::clone(&op);
            move |events: Vec<T>| events.into_iter().flat_map(|e| f(e)).collect()
        })
    }

    /// Calls `inspect_op` on each event and passes it on (GenStage's `each`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = Arc::clone(&seen);
    /// flow::Flow::from_iter(0..5).inspect(move |_| { counter.fetch_add(1, Ordering::Relaxed); }).run_blocking().unwrap();
    /// assert_eq!(seen.load(Ordering::Relaxed), 5);
    /// ```
    pub fn inspect<F>(self, inspect_op: F) -> Flow<T>
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let op = Arc::new(inspect_op);
        self.then(Op::Inspect, move || {
            let f = Arc::clone(&op);
            move |events: Vec<T>| {
                events.iter().for_each(|e| f(e));
                events
            }
        })
    }

    /// Applies `batch_op` to each whole batch as it arrives. Must be the first operation of
    /// its layer (an error when the flow starts otherwise).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sums = flow::Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
    ///     .stages(2)
    ///     .map_batch(|batch| vec![batch.iter().sum::<i32>()])
    ///     .collect_blocking()
    ///     .unwrap();
    /// sums.sort();
    /// assert_eq!(sums, [6, 15]);
    /// ```
    pub fn map_batch<R, F>(self, batch_op: F) -> Flow<R>
    where
        R: Send + 'static,
        F: Fn(Vec<T>) -> Vec<R> + Send + Sync + 'static,
    {
        let op = Arc::new(batch_op);
        self.then(Op::MapBatch, move || {
            let f = Arc::clone(&op);
            move |events: Vec<T>| f(events)
        })
    }

    /// Drops events equal to one already seen by the same stage. Only exact across the whole
    /// flow when equal events share a partition (see [`partition`](Flow::partition)).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut got = flow::Flow::from_iter([3, 1, 3, 2, 1, 5]).stages(1).uniq().collect_blocking().unwrap();
    /// got.sort();
    /// assert_eq!(got, [1, 2, 3, 5]);
    /// ```
    pub fn uniq(self) -> Flow<T>
    where
        T: Hash + Eq + Clone,
    {
        self.uniq_by(T::clone)
    }

    /// Drops events whose `key_fn` value was already seen by the same stage.
    ///
    /// # Examples
    ///
    /// ```
    /// let got = flow::Flow::from_iter(["apple", "avocado", "banana"])
    ///     .stages(1)
    ///     .uniq_by(|s| s.chars().next())
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(got.len(), 2);
    /// ```
    pub fn uniq_by<K, F>(self, key_fn: F) -> Flow<T>
    where
        K: Hash + Eq + Send + 'static,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let key_fn = Arc::new(key_fn);
        self.then(Op::Uniq, move || uniq_op(Arc::clone(&key_fn)))
    }

    // ----- reducers -----

    /// Folds the events of each stage (per window) into an accumulator made by `init`.
    /// What the accumulator emits, and when, is chosen on the returned [`Reduced`].
    ///
    /// # Examples
    ///
    /// ```
    /// let sums = flow::Flow::from_iter(1..=10u64)
    ///     .stages(2)
    ///     .reduce(|| 0u64, |sum, x| *sum += x)
    ///     .emit_state()
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(sums.iter().sum::<u64>(), 55);
    /// assert_eq!(sums.len(), 2, "one sum per stage");
    /// ```
    pub fn reduce<A, I, F>(self, init: I, reduce_op: F) -> Reduced<T, A, F>
    where
        A: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&mut A, T) + Send + Sync + 'static,
    {
        Reduced::new(self.into_layered(), Arc::new(init), reduce_op)
    }

    /// Groups the values (`value_fn`) of each stage's events by key (`key_fn`), in arrival
    /// order. Emits `(key, values)` pairs by default.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut groups = flow::Flow::from_iter(["the", "quick", "brown", "fox"])
    ///     .stages(1)
    ///     .group_by(|w| w.len(), |w| w)
    ///     .emit_events()
    ///     .collect_blocking()
    ///     .unwrap();
    /// groups.sort();
    /// assert_eq!(groups, [(3, vec!["the", "fox"]), (5, vec!["quick", "brown"])]);
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn group_by<K, V, KF, VF>(
        self,
        key_fn: KF,
        value_fn: VF,
    ) -> Reduced<T, HashMap<K, Vec<V>>, impl Fn(&mut HashMap<K, Vec<V>>, T) + Send + Sync + 'static>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
        KF: Fn(&T) -> K + Send + Sync + 'static,
        VF: Fn(T) -> V + Send + Sync + 'static,
    {
        self.reduce(
            HashMap::new,
            move |groups: &mut HashMap<K, Vec<V>>, e: T| {
                groups.entry(key_fn(&e)).or_default().push(value_fn(e));
            },
        )
    }
}

impl<K, V> Flow<(K, V)>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
{
    /// Groups `(key, value)` events by key, in arrival order.
    ///
    /// # Examples
    ///
    /// ```
    /// let groups = flow::Flow::from_iter([("a", 1), ("b", 2), ("a", 3)])
    ///     .stages(1)
    ///     .group_by_key()
    ///     .emit_state()
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(groups[0]["a"], [1, 3]);
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn group_by_key(
        self,
    ) -> Reduced<
        (K, V),
        HashMap<K, Vec<V>>,
        impl Fn(&mut HashMap<K, Vec<V>>, (K, V)) + Send + Sync + 'static,
    > {
        self.reduce(
            HashMap::new,
            |groups: &mut HashMap<K, Vec<V>>, (k, v): (K, V)| {
                groups.entry(k).or_default().push(v);
            },
        )
    }
}
