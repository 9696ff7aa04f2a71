//! `Flow<T>`: the lazy description of a pipeline, its sources and its operators.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use futures::Stream;
use stage::{
    BufferSize, CancelMode, DemandDispatcher, Dispatcher, OptionError, Packet, ProducerRef,
    SubscribeOptions,
};

use crate::error::Error;
use crate::layer_stage::LayerStage;
use crate::logic::{Departition, Factory, Input, Position, Tag, Then, TopN, uniq_op};
use crate::partition::Partition;
use crate::reduce::Reduced;
use crate::source::{Chunks, Owned, Shared};
use crate::window::{StageWindow, Window};

/// Makes the dispatcher of each stage that feeds the next layer.
pub(crate) type Dispatch<T> = Arc<dyn Fn() -> Box<dyn Dispatcher<T>> + Send + Sync>;

/// Starts producers of `T` with the given dispatcher.
type Start<T> = Box<dyn FnOnce(Dispatch<T>, &Stages) -> Result<Vec<ProducerRef<T>>, Error> + Send>;

/// Starts what feeds a layer and returns it as producers of packets.
type Inputs = Box<dyn FnOnce(&Stages) -> Result<Vec<ProducerRef<Packet>>, Error> + Send>;

/// One stage of a running flow, as the flow keeps track of it.
struct Tracked {
    exit_reason: Box<dyn Fn() -> Option<stage::Reason> + Send + Sync>,
    stop: Box<dyn Fn(stage::Reason) + Send + Sync>,
}

#[derive(Default)]
struct Registry {
    stages: Vec<Tracked>,
    /// The first abnormal exit, once one happened.
    failed: Option<stage::Reason>,
}

/// Every stage a running flow started: a finisher reports the one that failed, and the first
/// stage to fail stops all the others, so that a failure anywhere ends the whole flow (its
/// stream ends and returns the error) instead of leaving stages waiting on one that is gone.
#[derive(Clone, Default)]
pub(crate) struct Stages(Arc<std::sync::Mutex<Registry>>);

impl Stages {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add<S: Send + 'static>(&self, handle: &stage::StageHandle<S>) {
        let probe = handle.clone();
        let stopper = handle.clone();
        let failed = {
            let mut registry = self.lock();
            registry.stages.push(Tracked {
                exit_reason: Box::new(move || probe.exit_reason()),
                stop: Box::new(move |reason| {
                    let _ = stopper.stop(reason);
                }),
            });
            registry.failed.clone()
        };
        if failed.is_some() {
            let _ = handle.stop(stage::Reason::Shutdown);
            return;
        }
        // One watcher per stage, ending with it: the first abnormal exit stops the others.
        let watched = handle.clone();
        let stages = self.clone();
        tokio::spawn(async move {
            let reason = watched.join().await;
            if !reason.is_normal() {
                stages.fail(reason);
            }
        });
    }

    fn fail(&self, reason: stage::Reason) {
        let mut registry = self.lock();
        if registry.failed.is_some() {
            return;
        }
        registry.failed = Some(reason);
        for stage in &registry.stages {
            (stage.stop)(stage::Reason::Shutdown);
        }
    }

    /// The reason of a stage that exited abnormally: a panic first, then the first failure.
    pub(crate) fn failure(&self) -> Option<stage::Reason> {
        let registry = self.lock();
        let failed: Vec<stage::Reason> = registry
            .stages
            .iter()
            .filter_map(|s| (s.exit_reason)())
            .filter(|r| !r.is_normal())
            .collect();
        failed
            .iter()
            .find(|r| matches!(r, stage::Reason::Panic(_)))
            .or(registry.failed.as_ref())
            .or(failed.first())
            .cloned()
    }
}

/// A lazy, parallel pipeline of `T`s: sources, then layers of stages.
///
/// Building a flow starts nothing. Each source, [`partition`](Flow::partition),
/// [`shuffle`](Flow::shuffle) and [`departition`](Flow::departition) begins a *layer* of
/// identical stages (by default one per core); the operators written after it run inside that
/// layer's stages, fused into one pass per batch. A finisher ([`collect`](Flow::collect),
/// [`run`](Flow::run), [`into_stream`](Flow::into_stream), ...) starts the stages on the current
/// tokio runtime.
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
    repr: Result<Repr<T>, Error>,
}

enum Repr<T> {
    /// Producers with no operations yet: they feed the next layer directly.
    Source { start: Start<T>, options: Options },
    /// A layer of stages.
    Layer(Layer<T>),
}

pub(crate) struct Layer<T> {
    feed: Feed,
    pub(crate) logic: Factory<T>,
    pub(crate) options: Options,
    /// Whether any operation was added (`map_batch` must come first).
    has_ops: bool,
    /// Whether a reducer runs in this layer.
    pub(crate) reduced: bool,
    /// A departition layer: always one stage.
    single: bool,
}

/// What a layer's stages read.
enum Feed {
    /// Producers the stages subscribe to.
    Upstream {
        inputs: Inputs,
        /// Stage `i` subscribes to each input with `partition(i)`.
        partitioned: bool,
    },
    /// A collection the stages read themselves, as producers.
    Local(Arc<dyn Chunks>),
}

/// Per-layer options.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) stages: usize,
    /// Whether `stages` was given (a bare source then runs as a layer of that many stages).
    pub(crate) stages_given: bool,
    pub(crate) max_demand: usize,
    pub(crate) min_demand: Option<usize>,
    pub(crate) window: StageWindow,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("stages", &self.stages)
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stages: default_stages(),
            stages_given: false,
            max_demand: stage::DEFAULT_MAX_DEMAND,
            min_demand: None,
            window: StageWindow::default(),
        }
    }
}

/// The most stages a layer may run: 65,536.
pub const MAX_STAGES: usize = stage::MAX_PARTITIONS;

/// The default number of stages in a layer: the number of cores.
pub fn default_stages() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Options {
    fn limits(&self) -> Result<(usize, usize), Error> {
        if self.stages == 0 {
            return Err(OptionError::new("stages", "must be at least 1", 0).into());
        }
        if self.stages > MAX_STAGES {
            let rule = format!("must be at most {MAX_STAGES}");
            return Err(OptionError::new("stages", rule, self.stages).into());
        }
        if let Some((option, rule)) = &self.window.invalid {
            return Err(OptionError::new(option, rule.clone(), "the window given").into());
        }
        let mut opts = SubscribeOptions::new().max_demand(self.max_demand);
        if let Some(min) = self.min_demand {
            opts = opts.min_demand(min);
        }
        Ok(opts.limits()?)
    }
}

impl<T> fmt::Debug for Flow<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Ok(Repr::Source { options, .. }) => {
                f.debug_struct("Flow").field("source", options).finish()
            }
            Ok(Repr::Layer(layer)) => f
                .debug_struct("Flow")
                .field("layer", &layer.options)
                .field("local", &matches!(layer.feed, Feed::Local(_)))
                .field("reduced", &layer.reduced)
                .finish(),
            Err(e) => f.debug_struct("Flow").field("error", e).finish(),
        }
    }
}

fn demand_dispatch<T: Send + 'static>() -> Dispatch<T> {
    Arc::new(|| Box::new(DemandDispatcher::new()))
}

impl<T: Send + 'static> Flow<T> {
    fn source(start: Start<T>) -> Self {
        Flow {
            repr: Ok(Repr::Source {
                start,
                options: Options::default(),
            }),
        }
    }

    pub(crate) fn from_layer(layer: Layer<T>) -> Self {
        Flow {
            repr: Ok(Repr::Layer(layer)),
        }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Flow { repr: Err(error) }
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
        Flow::source(Box::new(move |dispatch: Dispatch<T>, stages: &Stages| {
            iters
                .into_iter()
                .map(|iter| {
                    let handle = stage::producer(stage::IterProducer::new(iter).stop_on_cancel())
                        .dispatcher(dispatch())
                        .start()?;
                    stages.add(&handle);
                    Ok(handle.producer())
                })
                .collect()
        }))
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
        Flow::source(Box::new(move |dispatch: Dispatch<T>, stages: &Stages| {
            streams
                .into_iter()
                .map(|s| {
                    let handle = stage::from_stream(s)
                        .dispatcher(dispatch())
                        .stop_on_cancel()
                        .start()?;
                    stages.add(&handle);
                    Ok(handle.producer())
                })
                .collect()
        }))
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
        Flow::from_chunks(Arc::new(Owned::new(events)))
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
        Flow::from_chunks(Arc::new(Shared::new(events)))
    }

    fn from_chunks(chunks: Arc<dyn Chunks>) -> Self {
        Flow::from_layer(Layer {
            feed: Feed::Local(chunks),
            logic: Input::factory(),
            options: Options::default(),
            has_ops: false,
            reduced: false,
            single: false,
        })
    }

    /// A flow reading running producer stages (GenStage producers or producer-consumers). It
    /// subscribes transiently: a producer that stops normally ends its part of the flow.
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
        Flow::from_layer(Layer {
            feed: Feed::Upstream {
                inputs: Box::new(move |_: &Stages| {
                    Ok(producers.iter().map(ProducerRef::erase).collect())
                }),
                partitioned: false,
            },
            logic: Input::factory(),
            options: Options::default(),
            has_ops: false,
            reduced: false,
            single: false,
        })
    }

    // ----- options of the current layer -----

    fn options_mut(&mut self) -> Option<&mut Options> {
        match &mut self.repr {
            Ok(Repr::Source { options, .. }) => Some(options),
            Ok(Repr::Layer(layer)) => Some(&mut layer.options),
            Err(_) => None,
        }
    }

    /// How many stages the current layer runs (default: the number of cores). Must be at
    /// least 1; checked when the flow starts. A departition runs in one stage: another count
    /// there is an error.
    pub fn stages(mut self, stages: usize) -> Self {
        if let Ok(Repr::Layer(layer)) = &self.repr {
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
    /// window must be set before the layer's operations (its `by` reads the layer's input);
    /// otherwise the flow fails to start with an error.
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
        let fixed = window.is_fixed();
        let mut layer = match self.repr {
            Ok(Repr::Source { start, mut options }) => {
                options.window = window.erase();
                return Flow {
                    repr: Ok(Repr::Source { start, options }),
                };
            }
            Ok(Repr::Layer(layer)) => layer,
            Err(e) => return Flow::failed(e),
        };
        if fixed && layer.has_ops {
            return Flow::failed(Error::misuse(
                "a fixed window must be set before the layer's operations, since its `by` reads the layer's input events",
            ));
        }
        layer.options.window = window.erase();
        Flow::from_layer(layer)
    }

    // ----- layers -----

    /// The current layer, turning a bare source into a layer of stages that read it.
    pub(crate) fn into_layer(self) -> Result<Layer<T>, Error> {
        match self.repr? {
            Repr::Layer(layer) => Ok(layer),
            Repr::Source { start, options } => Ok(Layer {
                feed: Feed::Upstream {
                    inputs: Box::new(move |stages: &Stages| {
                        Ok(start(demand_dispatch(), stages)?
                            .iter()
                            .map(ProducerRef::erase)
                            .collect())
                    }),
                    partitioned: false,
                },
                logic: Input::factory(),
                options,
                has_ops: false,
                reduced: false,
                single: false,
            }),
        }
    }

    /// Starts the flow up to here; its last stages get `dispatch`'s dispatchers.
    pub(crate) fn start(
        self,
        dispatch: Dispatch<T>,
        stages: &Stages,
    ) -> Result<Vec<ProducerRef<T>>, Error> {
        match self.repr? {
            // A bare source asked for a number of stages runs them, as a layer.
            Repr::Source { start, options } if options.stages_given => {
                let source = Flow {
                    repr: Ok(Repr::Source { start, options }),
                };
                source.into_layer()?.start(dispatch, stages)
            }
            Repr::Source { start, options } => {
                options.limits()?;
                start(dispatch, stages)
            }
            Repr::Layer(layer) => layer.start(dispatch, stages),
        }
    }

    /// Adds a per-batch operation to the current layer.
    fn then<R, Op>(self, name: &str, make_op: impl Fn() -> Op + Send + Sync + 'static) -> Flow<R>
    where
        R: Send + 'static,
        Op: FnMut(Vec<T>) -> Vec<R> + Send + 'static,
    {
        let layer = match self.into_layer() {
            Ok(layer) => layer,
            Err(e) => return Flow::failed(e),
        };
        if layer.reduced && name == "uniq" {
            return Flow::failed(Error::misuse(
                "uniq/uniq_by cannot be called after a reduce in the same layer",
            ));
        }
        if name == "map_batch" && layer.has_ops {
            return Flow::failed(Error::misuse(
                "map_batch can only be called at the beginning of a layer, before any other operation",
            ));
        }
        Flow::from_layer(Layer {
            feed: layer.feed,
            logic: Then::factory(layer.logic, make_op),
            options: layer.options,
            has_ops: layer.has_ops || name != "map_batch",
            reduced: layer.reduced,
            single: false,
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
        let map_op = Arc::new(map_op);
        self.then("map", move || {
            let f = Arc::clone(&map_op);
            move |events: Vec<T>| events.into_iter().map(|e| f(e)).collect()
        })
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
        self.then("filter", move || {
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
        self.filter(move |e| !reject_op(e))
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
        self.then("filter_map", move || {
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
        self.then("flat_map", move || {
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
        self.then("inspect", move || {
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
        self.then("map_batch", move || {
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
        self.then("uniq", move || uniq_op(Arc::clone(&key_fn)))
    }

    // ----- layer boundaries -----

    /// Starts a new layer whose stage `i` receives exactly the events that `partition` routes
    /// to `i`: events with equal keys always meet in the same stage.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Partition};
    ///
    /// // Count words per stage, partitioned so each word is counted in one place.
    /// let mut counts = Flow::from_iter(["a", "b", "a", "c", "a"])
    ///     .partition(Partition::by_key(|w: &&str| w.to_string()).stages(2))
    ///     .reduce(std::collections::HashMap::new, |acc, w| *acc.entry(w).or_insert(0) += 1)
    ///     .emit_events()
    ///     .collect_blocking()
    ///     .unwrap();
    /// counts.sort();
    /// assert_eq!(counts, [("a", 3), ("b", 1), ("c", 1)]);
    /// ```
    pub fn partition(self, partition: Partition<T>) -> Flow<T> {
        let stages = partition.stages.unwrap_or_else(default_stages);
        let defaults = Options::default();
        let options = Options {
            stages,
            stages_given: true,
            max_demand: partition.max_demand.unwrap_or(defaults.max_demand),
            min_demand: partition.min_demand,
            window: StageWindow::default(),
        };
        let route = partition.route;
        let dispatch: Dispatch<T> = if stages <= 1 {
            demand_dispatch()
        } else {
            Arc::new(move || route(stages))
        };
        self.next_layer(dispatch, stages > 1, options)
    }

    /// Starts a new layer fed by whichever of its stages asks (no routing by key).
    ///
    /// # Examples
    ///
    /// ```
    /// let n = flow::Flow::from_iter(0..100).shuffle().stages(3).collect_blocking().unwrap().len();
    /// assert_eq!(n, 100);
    /// ```
    pub fn shuffle(self) -> Flow<T> {
        self.next_layer(demand_dispatch(), false, Options::default())
    }

    fn next_layer(self, dispatch: Dispatch<T>, partitioned: bool, options: Options) -> Flow<T> {
        let upstream = match self.repr {
            Ok(repr) => Flow { repr: Ok(repr) },
            Err(e) => return Flow::failed(e),
        };
        Flow::from_layer(Layer {
            feed: Feed::Upstream {
                inputs: Box::new(move |stages: &Stages| {
                    Ok(upstream
                        .start(dispatch, stages)?
                        .iter()
                        .map(ProducerRef::erase)
                        .collect())
                }),
                partitioned,
            },
            logic: Input::factory(),
            options,
            has_ops: false,
            reduced: false,
            single: false,
        })
    }

    /// Merges what every stage of the current layer emits into one stage, window by window:
    /// each stage's output is folded into `init()` with `merge`, and once every stage has
    /// finished the window, `done` turns the result into one event.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::Flow;
    ///
    /// let total = Flow::from_iter(1..=100u64)
    ///     .stages(4)
    ///     .reduce(|| 0u64, |sum, x| *sum += x)
    ///     .emit_state()
    ///     .departition(|| 0u64, |total, sums| *total += sums.iter().sum::<u64>(), |total| total)
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(total, [5050]);
    /// ```
    pub fn departition<A, R, I, M, D>(self, init: I, merge: M, done: D) -> Flow<R>
    where
        A: Send + 'static,
        R: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        M: Fn(&mut A, Vec<T>) + Send + Sync + 'static,
        D: Fn(A) -> R + Send + Sync + 'static,
    {
        let layer = match self.into_layer() {
            Ok(layer) => layer,
            Err(e) => return Flow::failed(e),
        };
        let partitions = layer.options.stages;
        let tagged = Layer {
            feed: layer.feed,
            logic: Tag::factory(layer.logic),
            options: layer.options,
            has_ops: true,
            reduced: layer.reduced,
            single: layer.single,
        };
        let options = Options {
            stages: 1,
            ..Options::default()
        };
        Flow::from_layer(Layer {
            feed: Feed::Upstream {
                inputs: Box::new(move |stages: &Stages| {
                    Ok(tagged
                        .start(demand_dispatch(), stages)?
                        .iter()
                        .map(ProducerRef::erase)
                        .collect())
                }),
                partitioned: false,
            },
            logic: Departition::factory(
                partitions,
                Arc::new(init),
                Arc::new(merge),
                Arc::new(done),
            ),
            options,
            has_ops: false,
            reduced: false,
            single: true,
        })
    }

    /// The `n` first events in `cmp` order, as one sorted list per window, gathered from every
    /// stage of the layer (after a reduce: of what its triggers emit).
    ///
    /// # Examples
    ///
    /// ```
    /// let top = flow::Flow::from_iter([5, 1, 9, 3, 7])
    ///     .take_sort(3, |a: &i32, b: &i32| b.cmp(a))
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(top, [vec![9, 7, 5]]);
    /// ```
    pub fn take_sort<C>(self, n: usize, cmp: C) -> Flow<Vec<T>>
    where
        C: Fn(&T, &T) -> std::cmp::Ordering + Send + Sync + 'static,
    {
        if n == 0 {
            return Flow::failed(
                OptionError::new("n", "take_sort needs n of at least 1", 0).into(),
            );
        }
        let layer = match self.into_layer() {
            Ok(layer) => layer,
            Err(e) => return Flow::failed(e),
        };
        let cmp = Arc::new(cmp);
        let merge_cmp = Arc::clone(&cmp);
        let top = Layer {
            feed: layer.feed,
            logic: TopN::factory(layer.logic, n, cmp),
            options: layer.options,
            has_ops: true,
            reduced: true,
            single: layer.single,
        };
        Flow::from_layer(top).departition(
            Vec::new,
            move |acc: &mut Vec<T>, lists: Vec<Vec<T>>| {
                for list in lists {
                    merge_sorted(acc, list, n, &*merge_cmp);
                }
            },
            |acc| acc,
        )
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
        Reduced::new(self.into_layer(), Arc::new(init), reduce_op)
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

/// Merges a sorted `list` into the sorted `acc`, keeping the first `n`; ties favour `list`.
fn merge_sorted<T>(
    acc: &mut Vec<T>,
    list: Vec<T>,
    n: usize,
    cmp: &dyn Fn(&T, &T) -> std::cmp::Ordering,
) {
    let old = std::mem::take(acc);
    let mut a = old.into_iter().peekable();
    let mut b = list.into_iter().peekable();
    while acc.len() < n {
        let take_b = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => cmp(y, x) != std::cmp::Ordering::Greater,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => break,
        };
        let next = if take_b { b.next() } else { a.next() };
        acc.extend(next);
    }
}

impl<T: Send + 'static> Layer<T> {
    pub(crate) fn with_logic<R: Send + 'static>(
        self,
        logic: Factory<R>,
        reduced: bool,
    ) -> Layer<R> {
        Layer {
            feed: self.feed,
            logic,
            options: self.options,
            has_ops: true,
            reduced,
            single: self.single,
        }
    }

    /// Starts the layer's stages, subscribed to its inputs; returns them as producers.
    pub(crate) fn start(
        self,
        dispatch: Dispatch<T>,
        stages: &Stages,
    ) -> Result<Vec<ProducerRef<T>>, Error> {
        let (max, min) = self.options.limits()?;
        let count = self.options.stages;
        let stage = |index| {
            let pos = Position { index, count };
            let window = self.options.window.clone();
            LayerStage::new(pos, max, window, Arc::clone(&self.logic))
        };
        let name = |index| format!("flow stage {index}/{count}");
        let mut producers = Vec::with_capacity(count);
        match self.feed {
            Feed::Upstream {
                inputs,
                partitioned,
            } => {
                let inputs = inputs(stages)?;
                for index in 0..count {
                    let mut builder = stage::producer_consumer(stage(index))
                        .name(name(index))
                        .dispatcher(dispatch());
                    for input in &inputs {
                        let mut opts = SubscribeOptions::new()
                            .max_demand(max)
                            .min_demand(min)
                            .cancel(CancelMode::Temporary);
                        if partitioned {
                            opts = opts.partition(index);
                        }
                        builder = builder.subscribe_to(input, opts);
                    }
                    let handle = builder.start()?;
                    producers.push(wire(handle, stages));
                }
            }
            Feed::Local(chunks) => {
                for index in 0..count {
                    // What a stage reads ahead of demand is at most one batch's output, held
                    // in its buffer until asked for: never dropped.
                    let handle = stage::producer(stage(index).local(Arc::clone(&chunks)))
                        .name(name(index))
                        .dispatcher(dispatch())
                        .buffer_size(BufferSize::Unbounded)
                        .start()?;
                    producers.push(wire(handle, stages));
                }
            }
        }
        Ok(producers)
    }
}

/// Registers a started stage of a layer; returns it as a producer.
fn wire<T: Send + 'static>(
    handle: stage::StageHandle<LayerStage<T>>,
    stages: &Stages,
) -> ProducerRef<T> {
    stages.add(&handle);
    handle.producer()
}

#[cfg(test)]
mod tests {
    use super::merge_sorted;

    #[test]
    fn merge_sorted_keeps_n_and_favours_the_arriving_list_on_ties() {
        let mut acc = vec![(1, 'a'), (3, 'a'), (5, 'a')];
        merge_sorted(
            &mut acc,
            vec![(3, 'b'), (4, 'b')],
            4,
            &|x: &(i32, char), y| x.0.cmp(&y.0),
        );
        assert_eq!(acc, [(1, 'a'), (3, 'b'), (3, 'a'), (4, 'b')]);
    }
}
