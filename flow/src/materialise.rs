//! Materialisation: the typed parts of a plan (what feeds each layer, and its fused logic)
//! started as stages, each node looking its options up in the [`Plan`].
//!
//! A layer starts its inputs first, telling each how to feed it ([`Wiring`]): the dispatcher
//! its stages need (a partition dispatcher over as many partitions as the layer has stages, or
//! a demand dispatcher) and, for a layer with fixed windows, the clock to measure event time
//! with and where to send watermarks ([`Directory`]). Then it starts its own stages,
//! subscribed to every producer its inputs returned, and tells the inputs where its stages are.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use stage::{
    BufferSize, CancelMode, Contract, DemandDispatcher, Dispatcher, DispatcherState, Outbox,
    Packet, ProducerRef, SubscribeError, SubscribeOptions, SubscriptionId,
};

use crate::error::Error;
use crate::layer_stage::{Drain, Fire, LayerStage, Measure, Wired};
use crate::logic::{Factory, Input as InputLogic, Position};
use crate::partition::Route;
use crate::plan::{NodeId, Plan, SourceKind, relayed};
use crate::source::Chunks;
use crate::watermark::Mark;
use crate::window::StageWindow;

/// Makes the dispatcher of each stage that feeds the next layer.
pub(crate) type Dispatch<T> = Arc<dyn Fn() -> Box<dyn Dispatcher<T>> + Send + Sync>;

/// A demand dispatcher for each stage.
pub(crate) fn demand<T: Send + 'static>() -> Dispatch<T> {
    Arc::new(|| Box::new(DemandDispatcher::new()))
}

/// How a fixed window reads event time from a layer's input events: the stages that emit
/// those events measure their watermark with it.
pub(crate) struct Clock<T> {
    pub(crate) by: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
    pub(crate) idle: Option<Duration>,
}

impl<T> Clone for Clock<T> {
    fn clone(&self) -> Self {
        Clock {
            by: Arc::clone(&self.by),
            idle: self.idle,
        }
    }
}

/// A [`Clock`] of a layer's input type, erased.
pub(crate) type AnyClock = Arc<dyn Any + Send + Sync>;

/// What a node is told by the layer it feeds, when it starts.
pub(crate) struct Wiring<T> {
    /// The dispatcher of each of the node's last stages.
    pub(crate) dispatch: Dispatch<T>,
    /// The consumer follows event time read with this clock: measure what you emit with it...
    pub(crate) clock: Option<Clock<T>>,
    /// ...and send your watermarks here.
    pub(crate) marks: Option<Arc<Directory>>,
}

impl<T: Send + 'static> Wiring<T> {
    /// A consumer that neither routes nor follows event time (a finisher, say).
    pub(crate) fn plain() -> Self {
        Wiring {
            dispatch: demand(),
            clock: None,
            marks: None,
        }
    }
}

/// While starting: the plan (every node's options) and the registry of started stages.
pub(crate) struct Ctx<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) stages: &'a Stages,
}

// ----- the stages of a running flow -----

/// Fires a named trigger on a stage of a layer; `false` once the stage has exited.
type FireFn = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Tells a stage something, whatever its type.
type Signal = Box<dyn Fn() + Send + Sync>;

/// One stage of a running flow, as the flow keeps track of it.
struct Tracked {
    exit_reason: Box<dyn Fn() -> Option<stage::Reason> + Send + Sync>,
    stop: Box<dyn Fn(stage::Reason) + Send + Sync>,
    /// Stops the stage now ([`stage::StageHandle::abort`]).
    abort: Signal,
    /// Fires a named trigger on a stage of a layer.
    fire: Option<FireFn>,
    /// Stops a stage that reads a source from taking in more (a graceful stop).
    intake: Option<Signal>,
}

#[derive(Default)]
struct Registry {
    stages: Vec<Tracked>,
    /// The first abnormal exit, once one happened.
    failed: Option<stage::Reason>,
    /// The flow was aborted.
    aborted: bool,
    /// The flow's sources were told to stop taking in more.
    draining: bool,
}

/// Every stage a running flow started: a finisher reports the one that failed, and the first
/// stage to fail stops all the others, so that a failure anywhere ends the whole flow (its
/// stream ends and returns the error) instead of leaving stages waiting on one that is gone.
/// It also stops the flow from outside: [`abort`](Stages::abort) stops every stage now,
/// [`drain`](Stages::drain) stops only the stages that read sources from taking in more, so
/// that what is already in the flow goes through it.
///
/// A stage tells its consumers it has exited *before* its handle reports why, so the end of a
/// flow's stream does not mean every exit is known yet: a finisher waits for
/// [`exited`](Stages::exited) before it reads [`failure`](Stages::failure).
#[derive(Clone)]
pub(crate) struct Stages {
    registry: Arc<Mutex<Registry>>,
    /// How many tracked stages have not exited yet (as their watchers saw it).
    running: Arc<watch::Sender<usize>>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            registry: Arc::default(),
            running: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Stages {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a stage that reads a source (a producer over an iterator or a stream): a graceful
    /// stop shuts it down, and it dispatches what it holds before it stops.
    pub(crate) fn add_source<S: Send + 'static>(&self, handle: &stage::StageHandle<S>) {
        let target = handle.clone();
        let intake: Signal = Box::new(move || {
            let _ = target.shutdown();
        });
        self.track(handle, None, Some(intake));
    }

    /// Adds a stage of a layer, which also takes named triggers (and, when it reads a local
    /// source, stops reading it on a graceful stop).
    pub(crate) fn add_layer<O: Send + 'static>(
        &self,
        handle: &stage::StageHandle<LayerStage<O>>,
        local: bool,
    ) {
        let target = handle.clone();
        let fire = Box::new(move |name: &str| target.cast(Fire(name.to_owned())).is_ok());
        let intake = local.then(|| {
            let target = handle.clone();
            Box::new(move || {
                let _ = target.cast(Drain);
            }) as Signal
        });
        self.track(handle, Some(fire), intake);
    }

    fn track<S: Send + 'static>(
        &self,
        handle: &stage::StageHandle<S>,
        fire: Option<FireFn>,
        intake: Option<Signal>,
    ) {
        let probe = handle.clone();
        let stopper = handle.clone();
        let aborter = handle.clone();
        let (failed, aborted) = {
            let mut registry = self.lock();
            if registry.draining {
                if let Some(intake) = &intake {
                    intake();
                }
            }
            registry.stages.push(Tracked {
                exit_reason: Box::new(move || probe.exit_reason()),
                stop: Box::new(move |reason| {
                    let _ = stopper.stop(reason);
                }),
                abort: Box::new(move || {
                    let _ = aborter.abort();
                }),
                fire,
                intake,
            });
            (registry.failed.is_some(), registry.aborted)
        };
        if failed {
            let _ = handle.stop(stage::Reason::Shutdown);
        } else if aborted {
            let _ = handle.abort();
        }
        // One watcher per stage, ending with it: the first abnormal exit stops the others,
        // and is recorded before the stage counts as exited.
        self.running.send_modify(|n| *n += 1);
        let watched = handle.clone();
        let stages = self.clone();
        tokio::spawn(async move {
            let reason = watched.join().await;
            if !reason.is_normal() {
                stages.fail(reason);
            }
            stages.running.send_modify(|n| *n -= 1);
        });
    }

    /// Waits until every stage started so far has exited and its reason is known.
    pub(crate) async fn exited(&self) {
        let mut running = self.running.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    /// Stops every stage as soon as the handler it runs returns; what is in flight is
    /// dropped. Stages started later stop at once.
    pub(crate) fn abort(&self) {
        let mut registry = self.lock();
        registry.aborted = true;
        // Downstream first (stages are added upstream first): a stage is aborted before any
        // of its producers can end, so it never takes their end for the end of its input and
        // fires its final triggers.
        for stage in registry.stages.iter().rev() {
            (stage.abort)();
        }
    }

    /// Whether [`abort`](Stages::abort) was called.
    pub(crate) fn aborted(&self) -> bool {
        self.lock().aborted
    }

    /// Tells every stage that reads a source to stop taking in more: the sources end, and
    /// the rest of the flow finishes what it holds as if they had run out.
    pub(crate) fn drain(&self) {
        let mut registry = self.lock();
        registry.draining = true;
        for intake in registry.stages.iter().filter_map(|s| s.intake.as_ref()) {
            intake();
        }
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

    /// Fires the trigger `name` on every running stage of every layer; returns how many
    /// stages it reached.
    pub(crate) fn fire(&self, name: &str) -> usize {
        let registry = self.lock();
        registry
            .stages
            .iter()
            .filter_map(|s| s.fire.as_ref())
            .filter(|fire| fire(name))
            .count()
    }
}

// ----- watermarks between layers -----

/// Delivers a watermark to one stage of a consumer layer.
type MarkSink = Box<dyn Fn(Mark) + Send + Sync>;

/// Where the stages feeding a fixed-window layer send their watermarks: that layer's stages,
/// known once they have started. Each feeding stage sends every stage of the layer its marks,
/// whichever dispatcher it has, so that a stage that receives no events still learns how far
/// its inputs have come.
#[derive(Default)]
pub(crate) struct Directory {
    sinks: OnceLock<Vec<MarkSink>>,
    /// Tells a feeding stage that the sinks are known (it may have owed a mark before).
    wired: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Directory {
    /// Sends `mark` to every stage of the consumer layer; `false` while they are not known.
    pub(crate) fn send(&self, mark: &Mark) -> bool {
        match self.sinks.get() {
            Some(sinks) => {
                for sink in sinks {
                    sink(mark.clone());
                }
                true
            }
            None => false,
        }
    }

    /// Registers a feeding stage, to be told once the sinks are known.
    fn on_wired(&self, wake: Box<dyn Fn() + Send + Sync>) {
        self.wired
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(wake);
    }

    /// The consumer layer's stages have started: marks can go to them.
    fn wire(&self, sinks: Vec<MarkSink>) {
        let _ = self.sinks.set(sinks);
        let wakes = std::mem::take(&mut *self.wired.lock().unwrap_or_else(PoisonError::into_inner));
        for wake in wakes {
            wake();
        }
    }
}

/// How many events a stage has sent on each of its consumers' subscriptions, shared between
/// its dispatcher (which counts) and the stage (which puts the counts in its marks).
pub(crate) type SentCounts = Arc<Mutex<Vec<(SubscriptionId, u64)>>>;

/// A dispatcher that counts what the one it wraps sends to each consumer, a batch at a time
/// (one lock per call, nothing per event).
struct Counted<T> {
    inner: Box<dyn Dispatcher<T>>,
    counts: SentCounts,
}

impl<T> Counted<T> {
    fn count(&self, sends: &[(SubscriptionId, Vec<T>)]) {
        if sends.is_empty() {
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, events) in sends {
            if let Some((_, n)) = counts.iter_mut().find(|(s, _)| s == id) {
                *n += events.len() as u64;
            }
        }
    }
}

impl<T: Send + 'static> Dispatcher<T> for Counted<T> {
    fn contract(&self) -> Contract {
        self.inner.contract()
    }

    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<T>,
    ) -> Result<(), SubscribeError> {
        let before = out.sends().len();
        self.inner.subscribe(id, opts, out)?;
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, 0));
        self.count(&out.sends()[before..]);
        Ok(())
    }

    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<T>) {
        let before = out.sends().len();
        self.inner.ask(id, n, out);
        self.count(&out.sends()[before..]);
    }

    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        let before = out.sends().len();
        let requeue = self.inner.cancel(id, returned, out);
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(s, _)| *s != id);
        self.count(&out.sends()[before..]);
        requeue
    }

    fn dispatch(&mut self, events: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        let before = out.sends().len();
        let left = self.inner.dispatch(events, out);
        self.count(&out.sends()[before..]);
        left
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn hold(&mut self, token: u64) -> bool {
        self.inner.hold(token)
    }

    fn state(&self) -> DispatcherState {
        self.inner.state()
    }
}

// ----- the typed parts of a plan -----

/// What a node of a flow runs, by its type: producers with no operations yet, or a layer.
pub(crate) enum Open<T> {
    Source(Source<T>),
    Layer(Layer<T>),
}

/// Starts a source's producers of `T` with a dispatcher each.
/// Starts a source's producers of `T` with a dispatcher each, naming them after the source's
/// node number.
pub(crate) type SourceStart<T> =
    Box<dyn FnOnce(Dispatch<T>, &Stages, usize) -> Result<Vec<ProducerRef<T>>, Error> + Send>;

/// The name and parent span of stage `index` of node `layer`: `flow.L1.s0` is stage 0 of
/// node [1] (as `explain` numbers them); `role` is `s` for a layer's stages, `r` for a relay,
/// `p` for a source's producers. The span, `flow` with the layer and index, is the parent of
/// the stage's own `stage` span, so every line a stage logs says where in the flow it runs.
pub(crate) fn stage_name(layer: usize, role: char, index: usize) -> (String, tracing::Span) {
    let name = format!("flow.L{layer}.{role}{index}");
    let span = tracing::info_span!("flow", layer, index);
    (name, span)
}

/// Producers with no operations: they feed the next layer directly (or through a relay each).
pub(crate) struct Source<T> {
    pub(crate) node: NodeId,
    pub(crate) kind: SourceKind,
    pub(crate) start: SourceStart<T>,
}

/// A layer of stages: what feeds it, and the logic each of its stages runs.
pub(crate) struct Layer<T> {
    pub(crate) node: NodeId,
    pub(crate) feed: Feed,
    pub(crate) logic: Factory<T>,
    pub(crate) window: StageWindow,
    /// A fixed window's clock over the layer's input events.
    pub(crate) clock: Option<AnyClock>,
    /// Whether any operation was added (`map_batch` and fixed windows must come first).
    pub(crate) has_ops: bool,
    /// Whether a reducer runs in this layer.
    pub(crate) reduced: bool,
    /// Whether the layer's input events are of the flow's type before its first operation
    /// (not so for a departition or a join), so that a window may read them.
    pub(crate) reads_own_type: bool,
    /// A departition layer: always one stage.
    pub(crate) single: bool,
}

/// What a layer's stages read.
pub(crate) enum Feed {
    /// Producers the stages subscribe to, from each input.
    Inputs(Vec<Input>),
    /// A collection the stages read themselves, as producers.
    Local(Arc<dyn Chunks>),
}

/// What an input is told by the layer it feeds.
pub(crate) struct InputWiring {
    count: usize,
    clock: Option<AnyClock>,
    marks: Option<Arc<Directory>>,
}

type InputStart =
    Box<dyn FnOnce(InputWiring, &Ctx<'_>) -> Result<Vec<ProducerRef<Packet>>, Error> + Send>;

/// One input of a layer: starts what feeds it and returns those producers, erased.
pub(crate) struct Input {
    start: InputStart,
    /// Stage `i` subscribes with `partition(i)` (when the layer has several stages).
    partitioned: bool,
    /// Its producers send watermarks when the layer follows event time.
    marks: bool,
}

impl Input {
    /// A source's producers, read by the layer's stages directly (a source with operations).
    pub(crate) fn producers<T: Send + 'static>(node: NodeId, start: SourceStart<T>) -> Input {
        Input {
            start: Box::new(move |_, cx: &Ctx<'_>| {
                Ok(start(demand(), cx.stages, cx.plan.index(node))?
                    .iter()
                    .map(ProducerRef::erase)
                    .collect())
            }),
            partitioned: false,
            marks: false,
        }
    }

    /// Another flow, routed by `route` (or by demand).
    pub(crate) fn flow<T: Send + 'static>(open: Open<T>, route: Option<Route<T>>) -> Input {
        let partitioned = route.is_some();
        Input {
            start: Box::new(move |w: InputWiring, cx: &Ctx<'_>| {
                let routed = partitioned && w.count > 1;
                let dispatch: Dispatch<T> = match route {
                    Some(route) if routed => {
                        let count = w.count;
                        Arc::new(move || route(count))
                    }
                    _ => demand(),
                };
                let clock = w.clock.map(|c| {
                    c.downcast::<Clock<T>>()
                        .map(|c| (*c).clone())
                        .unwrap_or_else(|_| unreachable!("flow wiring: a clock of the input type"))
                });
                let wiring = Wiring {
                    dispatch,
                    clock,
                    marks: w.marks,
                };
                Ok(open
                    .start(wiring, cx)?
                    .iter()
                    .map(ProducerRef::erase)
                    .collect())
            }),
            partitioned,
            marks: true,
        }
    }
}

impl<T: Send + 'static> Open<T> {
    /// The node this is.
    pub(crate) fn node(&self) -> NodeId {
        match self {
            Open::Source(s) => s.node,
            Open::Layer(l) => l.node,
        }
    }

    /// Starts the node (and everything it reads); returns its last stages as producers.
    pub(crate) fn start(
        self,
        wiring: Wiring<T>,
        cx: &Ctx<'_>,
    ) -> Result<Vec<ProducerRef<T>>, Error> {
        match self {
            Open::Layer(layer) => layer.start(wiring, cx),
            Open::Source(source) => source.start(wiring, cx),
        }
    }
}

impl<T: Send + 'static> Source<T> {
    fn start(self, wiring: Wiring<T>, cx: &Ctx<'_>) -> Result<Vec<ProducerRef<T>>, Error> {
        let node = cx.plan.node(self.node);
        let relay = cx
            .plan
            .consumer(self.node)
            .is_some_and(|c| relayed(self.kind, c));
        if !relay {
            return (self.start)(wiring.dispatch, cx.stages, cx.plan.index(self.node));
        }
        let (max, min) = node.options.limits()?;
        let producers = (self.start)(demand(), cx.stages, cx.plan.index(self.node))?;
        // One relay per producer, so that each producer's progress stays its own.
        let count = producers.len();
        let mut relays = Vec::with_capacity(count);
        for (index, producer) in producers.iter().enumerate() {
            let stage = LayerStage::new(
                Position { index, count },
                max,
                StageWindow::default(),
                InputLogic::factory(),
            );
            let subscription = (producer.erase(), subscribe(max, min, None));
            let handle = start_stage(stage, &wiring, Some(subscription), (self.node, 'r'), cx)?;
            relays.push(handle.producer());
        }
        Ok(relays)
    }
}

fn subscribe(max: usize, min: usize, partition: Option<usize>) -> SubscribeOptions {
    // Temporary: the stage decides itself what a cancel means (see `LayerStage`).
    let mut opts = SubscribeOptions::new()
        .max_demand(max)
        .min_demand(min)
        .cancel(CancelMode::Temporary);
    if let Some(p) = partition {
        opts = opts.partition(p);
    }
    opts
}

/// Starts one stage of a layer (a producer-consumer of its subscriptions, or, without any, a
/// producer reading a local source), measuring and counting what it emits if its consumer
/// follows event time.
fn start_stage<O: Send + 'static>(
    mut stage: LayerStage<O>,
    wiring: &Wiring<O>,
    subscriptions: impl IntoIterator<Item = (ProducerRef<Packet>, SubscribeOptions)>,
    (node, role): (NodeId, char),
    cx: &Ctx<'_>,
) -> Result<stage::StageHandle<LayerStage<O>>, Error> {
    let (name, span) = stage_name(cx.plan.index(node), role, stage.position().index);
    let mut dispatcher = (wiring.dispatch)();
    if let (Some(clock), Some(marks)) = (&wiring.clock, &wiring.marks) {
        let counts = SentCounts::default();
        dispatcher = Box::new(Counted {
            inner: dispatcher,
            counts: Arc::clone(&counts),
        });
        stage = stage.measure(Measure::new(clock.clone(), counts, Arc::clone(marks)));
    }
    let local = stage.is_local();
    let handle = if local {
        // What a stage reads ahead of demand is at most one batch's output, held in its
        // buffer until asked for: never dropped.
        stage::producer(stage)
            .name(name)
            .parent_span(span)
            .dispatcher(dispatcher)
            .buffer_size(BufferSize::Unbounded)
            .start()?
    } else {
        let mut builder = stage::producer_consumer(stage)
            .name(name)
            .parent_span(span)
            .dispatcher(dispatcher);
        for (producer, opts) in subscriptions {
            builder = builder.subscribe_to(&producer, opts);
        }
        builder.start()?
    };
    cx.stages.add_layer(&handle, local);
    if let Some(marks) = &wiring.marks {
        let target = handle.clone();
        marks.on_wired(Box::new(move || {
            let _ = target.cast(Wired);
        }));
    }
    Ok(handle)
}

impl<T: Send + 'static> Layer<T> {
    /// Starts the layer's stages, subscribed to its inputs; returns them as producers.
    pub(crate) fn start(
        self,
        wiring: Wiring<T>,
        cx: &Ctx<'_>,
    ) -> Result<Vec<ProducerRef<T>>, Error> {
        let node = cx.plan.node(self.node);
        let (max, min) = node.options.limits()?;
        let count = node.options.stages;
        let stage = |index| {
            LayerStage::new(
                Position { index, count },
                max,
                self.window.clone(),
                Arc::clone(&self.logic),
            )
        };
        let mut handles = Vec::with_capacity(count);
        let mut directory = None;
        match self.feed {
            Feed::Inputs(inputs) => {
                let marked = self.clock.is_some() && inputs.iter().all(|i| i.marks);
                if marked {
                    directory = Some(Arc::new(Directory::default()));
                }
                let mut started = Vec::with_capacity(inputs.len());
                for input in inputs {
                    let w = InputWiring {
                        count,
                        clock: if marked { self.clock.clone() } else { None },
                        marks: directory.clone(),
                    };
                    started.push(((input.start)(w, cx)?, input.partitioned && count > 1));
                }
                for index in 0..count {
                    let subscriptions = started.iter().flat_map(|(producers, partitioned)| {
                        producers.iter().map(move |p| {
                            (p.clone(), subscribe(max, min, partitioned.then_some(index)))
                        })
                    });
                    let stage = stage(index).marked(marked);
                    handles.push(start_stage(
                        stage,
                        &wiring,
                        subscriptions,
                        (self.node, 's'),
                        cx,
                    )?);
                }
            }
            Feed::Local(chunks) => {
                for index in 0..count {
                    let stage = stage(index).local(Arc::clone(&chunks));
                    handles.push(start_stage(stage, &wiring, None, (self.node, 's'), cx)?);
                }
            }
        }
        if let Some(directory) = directory {
            let sinks = handles
                .iter()
                .map(|h| {
                    let target = h.clone();
                    Box::new(move |mark: Mark| {
                        let _ = target.cast(mark);
                    }) as MarkSink
                })
                .collect();
            directory.wire(sinks);
        }
        Ok(handles.iter().map(|h| h.producer()).collect())
    }
}
