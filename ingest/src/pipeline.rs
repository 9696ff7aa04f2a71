//! Building a pipeline, running it, and shutting it down.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use stage::{DemandDispatcher, Dispatcher, PartitionDispatcher, Producer, Reason, StageHandle};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::batcher::{BatchEvent, BatchProcessorStage, BatcherSetup, BatcherStage};
use crate::error::{BuildError, ConfigError, RateLimitError};
use crate::guard::{KillSwitch, guarded_sync};
use crate::handler::{Context, DeadLetterSink, Handler, StageKind};
use crate::limiter::RateLimiter;
use crate::message::Message;
use crate::options::{Apply, Batcher, Processors, RateLimit};
use crate::processor::{Drain, ProcessorSetup, ProcessorStage};
use crate::producers::{Group, Producers, Running};
use crate::settle::{Sink, Sinks, Stats};
use crate::shared::Shared;
use crate::topology::{BatcherTopology, StageGroup, Topology};

/// How long stages get to exit once a shutdown's deadline has passed and they have been told to
/// give up (and how long a finished pipeline waits for its producers to exit and for dropped
/// messages to be settled).
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// Configures a pipeline; [`start`](Builder::start) checks every option and starts it.
#[must_use = "a pipeline does nothing until it is started"]
pub struct Builder<H: Handler> {
    name: Arc<str>,
    handler: H,
    producers: Vec<Box<dyn Group<H::In>>>,
    processors: Processors<H::In>,
    batchers: Vec<Batcher<H::Out>>,
    rate_limit: Option<RateLimit>,
    sinks: Option<Sinks<H::In, H::Out>>,
}

impl<H: Handler> fmt::Debug for Builder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("producers", &self.producers.len())
            .field("processors", &self.processors)
            .field("batchers", &self.batchers)
            .field("rate_limit", &self.rate_limit)
            .field("dead_letters", &self.sinks.is_some())
            .finish()
    }
}

impl<H: Handler> Builder<H> {
    /// Adds a group of producers. A pipeline needs at least one; all of them feed every
    /// processor.
    pub fn producer<P>(mut self, producers: Producers<P>) -> Self
    where
        P: Producer<Out = Message<H::In>>,
    {
        self.producers.push(Box::new(producers));
        self
    }

    /// Configures the processors (default: [`Processors::new`]).
    pub fn processors(mut self, processors: Processors<H::In>) -> Self {
        self.processors = processors;
        self
    }

    /// Adds a batcher. Without batchers, the processors settle what they handle; with them,
    /// each successful message goes to the batcher it names (see
    /// [`Message::put_batcher`]).
    pub fn batcher(mut self, batcher: Batcher<H::Out>) -> Self {
        self.batchers.push(batcher);
        self
    }

    /// Limits how many messages all producers together are asked for per interval.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sends messages given up on to `sink` before their acknowledger hears of them.
    pub fn dead_letters<S>(mut self, sink: S) -> Self
    where
        S: DeadLetterSink<H::In> + DeadLetterSink<H::Out>,
    {
        let sink = Arc::new(sink);
        let sink_in: Sink<H::In> = sink.clone();
        let sink_out: Sink<H::Out> = sink;
        self.sinks = Some(Sinks {
            input: sink_in,
            output: sink_out,
        });
        self
    }

    /// Checks every option and starts the pipeline's stages on the current tokio runtime:
    /// producers, processors subscribed to every producer, batchers subscribed to every
    /// processor, and each batcher's batch processors.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] naming the first option that breaks its rule (nothing has
    /// started then), [`BuildError::NoRuntime`] outside a tokio runtime, and
    /// [`BuildError::Start`] if a stage does not start (the stages started before it are
    /// stopped).
    pub fn start(self) -> Result<Pipeline<H>, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let plan = self.validate()?;
        let mut started = Started::default();
        match self.launch(plan, &mut started) {
            Ok(pipeline) => {
                let _ = runtime;
                Ok(pipeline)
            }
            Err(err) => {
                started.stop_all();
                Err(err)
            }
        }
    }

    fn validate(&self) -> Result<Plan, BuildError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("pipeline", "name", "must not be empty", "").into());
        }
        if self.producers.is_empty() {
            let rule = "a pipeline needs at least one group (Builder::producer)";
            return Err(ConfigError::new("pipeline", "producer", rule, "none").into());
        }
        for group in &self.producers {
            group.validate()?;
        }
        for (i, group) in self.producers.iter().enumerate() {
            if self.producers[..i].iter().any(|g| g.name() == group.name()) {
                let scope = format!("producer {:?}", group.name());
                let rule = "must differ from the other producer groups' names";
                return Err(ConfigError::new(scope, "name", rule, group.name()).into());
            }
        }
        let processor_limits = self.processors.validate()?;
        let mut batcher_limits = Vec::new();
        for (i, batcher) in self.batchers.iter().enumerate() {
            batcher_limits.push(batcher.validate()?);
            if self.batchers[..i].iter().any(|b| b.name == batcher.name) {
                let scope = format!("batcher {:?}", batcher.name);
                let rule = "must differ from the other batchers' names";
                return Err(ConfigError::new(scope, "name", rule, &batcher.name).into());
            }
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        Ok(Plan {
            processor_limits,
            batcher_limits,
        })
    }

    fn launch(mut self, plan: Plan, started: &mut Started) -> Result<Pipeline<H>, BuildError> {
        let name = Arc::clone(&self.name);
        let stats = Stats::new(&name);
        let limiter = self.rate_limit.map(RateLimiter::new);
        let batcher_names = self.batchers.iter().map(|b| b.name.clone()).collect();
        let shared = Arc::new(Shared::new(
            Arc::clone(&name),
            self.handler,
            stats,
            self.sinks,
            limiter,
            batcher_names,
        ));
        let ctx = |stage: &str, kind, index, batcher: Option<&str>| Context {
            pipeline: Arc::clone(&name),
            stage: Arc::from(stage),
            kind,
            index,
            batcher: batcher.map(Arc::from),
        };
        let mut topology = Topology {
            pipeline: name.to_string(),
            producers: Vec::new(),
            processors: StageGroup::default(),
            batchers: Vec::new(),
        };

        // Producers, with the dispatcher the processors' partitioning needs.
        let processors = self.processors.concurrency;
        let partition_by = self.processors.partition_by.clone();
        let mut producers: Vec<Arc<dyn Running<H::In>>> = Vec::new();
        let mut index = 0;
        for group in &mut self.producers {
            let mut stages = Vec::new();
            for _ in 0..group.concurrency() {
                let stage_name = format!("{name}.{}.{index}", group.name());
                let dispatcher = producer_dispatcher(&partition_by, processors, &stage_name);
                let running =
                    group
                        .start(index, stage_name.clone(), dispatcher)
                        .map_err(|source| BuildError::Start {
                            stage: stage_name.clone(),
                            source,
                        })?;
                let running: Arc<dyn Running<H::In>> = Arc::from(running);
                started.stages.push(Box::new(Arc::clone(&running)));
                producers.push(running);
                stages.push(stage_name);
                index += 1;
            }
            topology.producers.push(StageGroup {
                name: group.name().to_string(),
                concurrency: group.concurrency(),
                stages,
            });
        }

        // Processors, each subscribed to every producer.
        let has_batchers = !self.batchers.is_empty();
        let mut processor_handles = Vec::new();
        let mut kills = Vec::new();
        topology.processors = StageGroup {
            name: "processor".to_string(),
            concurrency: processors,
            stages: Vec::new(),
        };
        for i in 0..processors {
            let stage_name = format!("{name}.processor.{i}");
            let kill = Arc::new(KillSwitch::default());
            kills.push(Arc::clone(&kill));
            let setup = ProcessorSetup {
                ctx: ctx(&stage_name, StageKind::Processor, i, None),
                limits: plan.processor_limits,
                retry: self.processors.retry.clone(),
                kill,
                has_batchers,
                partitioned: partition_by.is_some(),
            };
            let stage = ProcessorStage::new(Arc::clone(&shared), setup);
            let partition = partition_by.as_ref().map(|_| i);
            let opts = ProcessorStage::<H>::subscribe_options(plan.processor_limits, partition);
            let handle = if has_batchers {
                let mut builder = stage::producer_consumer(stage)
                    .name(stage_name.clone())
                    .dispatcher(processor_dispatcher::<H::Out>(self.batchers.len()));
                for producer in &producers {
                    builder = builder.subscribe_to(&producer.producer_ref(), opts.clone());
                }
                builder.start()
            } else {
                let mut builder = stage::consumer(stage).name(stage_name.clone());
                for producer in &producers {
                    builder = builder.subscribe_to(&producer.producer_ref(), opts.clone());
                }
                builder.start()
            }
            .map_err(|source| BuildError::Start {
                stage: stage_name.clone(),
                source,
            })?;
            started.stages.push(Box::new(handle.clone()));
            processor_handles.push(handle);
            topology.processors.stages.push(stage_name);
        }

        // Batchers, each subscribed to every processor, and their batch processors.
        let mut batcher_handles = Vec::new();
        let mut batch_processor_handles = Vec::new();
        for (b, (batcher, limits)) in self.batchers.iter().zip(plan.batcher_limits).enumerate() {
            let stage_name = format!("{name}.batcher.{}", batcher.name);
            let kill = Arc::new(KillSwitch::default());
            kills.push(Arc::clone(&kill));
            let concurrency = batcher.concurrency;
            let setup = BatcherSetup {
                ctx: ctx(&stage_name, StageKind::Batcher, b, Some(&batcher.name)),
                batch_size: batcher.batch_size,
                timeout: batcher.batch_timeout,
                key_concurrency: batcher.key_concurrency,
                max_open_keys: batcher.max_open_keys,
                limits,
                partition: batcher.partition_by.clone().map(|f| (f, concurrency)),
                kill,
            };
            let stage = BatcherStage::new(Arc::clone(&shared), setup);
            let partition = (self.batchers.len() > 1).then_some(b);
            let opts = BatcherStage::<H>::subscribe_options(limits, partition);
            let mut builder = stage::producer_consumer(stage)
                .name(stage_name.clone())
                .dispatcher(batcher_dispatcher::<H::Out>(
                    batcher.partition_by.is_some(),
                    concurrency,
                ));
            for processor in &processor_handles {
                builder = builder.subscribe_to(processor, opts.clone());
            }
            let handle = builder.start().map_err(|source| BuildError::Start {
                stage: stage_name.clone(),
                source,
            })?;
            started.stages.push(Box::new(handle.clone()));
            let mut batch_processors = Vec::new();
            for i in 0..concurrency {
                let bp_name = format!("{name}.batch_processor.{}.{i}", batcher.name);
                let kill = Arc::new(KillSwitch::default());
                kills.push(Arc::clone(&kill));
                let stage = BatchProcessorStage::new(
                    Arc::clone(&shared),
                    ctx(&bp_name, StageKind::BatchProcessor, i, Some(&batcher.name)),
                    handle.clone(),
                    batcher.retry.clone(),
                    kill,
                );
                let partition = batcher.partition_by.as_ref().map(|_| i);
                let bp = stage::consumer(stage)
                    .name(bp_name.clone())
                    .subscribe_to(
                        &handle,
                        BatchProcessorStage::<H>::subscribe_options(partition),
                    )
                    .start()
                    .map_err(|source| BuildError::Start {
                        stage: bp_name.clone(),
                        source,
                    })?;
                started.stages.push(Box::new(bp.clone()));
                batch_processor_handles.push(bp);
                batch_processors.push(bp_name);
            }
            topology.batchers.push(BatcherTopology {
                name: batcher.name.to_string(),
                stage: stage_name,
                batch_size: batcher.batch_size,
                batch_timeout: batcher.batch_timeout,
                concurrency,
                batch_processors,
            });
            batcher_handles.push(handle);
        }

        let (requests, requested) = watch::channel(None);
        let (report_tx, report) = watch::channel(None);
        let coordinator = Coordinator {
            shared: Arc::clone(&shared),
            producers: producers.clone(),
            processors: processor_handles,
            batchers: batcher_handles,
            batch_processors: batch_processor_handles,
            kills,
        };
        tokio::spawn(coordinator.run(requested, report_tx));
        info!(pipeline = %name, "pipeline started");
        Ok(Pipeline {
            inner: Arc::new(Inner {
                shared,
                topology,
                producers,
                requests,
                report,
            }),
        })
    }
}

struct Plan {
    processor_limits: (usize, usize),
    batcher_limits: Vec<(usize, usize)>,
}

/// The stages started so far, to stop if a later one does not start.
#[derive(Default)]
struct Started {
    stages: Vec<Box<dyn Stoppable>>,
}

trait Stoppable: Send {
    fn stop(&self);
}

impl<S: Send + 'static> Stoppable for StageHandle<S> {
    fn stop(&self) {
        let _ = StageHandle::stop(self, Reason::Shutdown);
    }
}

impl<T: Send + 'static> Stoppable for Arc<dyn Running<T>> {
    fn stop(&self) {
        Running::stop(&**self);
    }
}

impl Started {
    fn stop_all(&self) {
        for stage in &self.stages {
            stage.stop();
        }
    }
}

fn producer_dispatcher<T: Send + 'static>(
    partition_by: &Option<crate::options::Partitioner<T>>,
    processors: usize,
    stage_name: &str,
) -> Box<dyn Dispatcher<Message<T>>> {
    let Some(key) = partition_by.clone() else {
        return Box::new(DemandDispatcher::new());
    };
    let stage_name: Arc<str> = Arc::from(stage_name);
    let n = processors as u64;
    let hash = move |msg: &Message<T>| match guarded_sync(|| key(msg)) {
        Ok(hash) => Some((hash % n) as usize),
        Err(panic) => {
            warn!(stage = %stage_name, %panic, "the processors' partition_by panicked; the message fails");
            msg.misrouted
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Some(0)
        }
    };
    let dispatcher = PartitionDispatcher::with_hash(processors, hash)
        .expect("the processors' concurrency was checked")
        .queue_limit(usize::MAX);
    Box::new(dispatcher)
}

fn processor_dispatcher<T: Send + 'static>(batchers: usize) -> Box<dyn Dispatcher<Message<T>>> {
    if batchers <= 1 {
        return Box::new(DemandDispatcher::new());
    }
    let hash = |msg: &Message<T>| Some(msg.route as usize);
    Box::new(
        PartitionDispatcher::with_hash(batchers, hash)
            .expect("at most MAX_PARTITIONS batchers")
            .queue_limit(usize::MAX),
    )
}

fn batcher_dispatcher<T: Send + 'static>(
    partitioned: bool,
    concurrency: usize,
) -> Box<dyn Dispatcher<BatchEvent<T>>> {
    if !partitioned {
        return Box::new(DemandDispatcher::new());
    }
    let hash = |batch: &BatchEvent<T>| batch.partition();
    Box::new(
        PartitionDispatcher::with_hash(concurrency, hash)
            .expect("the batcher's concurrency was checked")
            .queue_limit(usize::MAX),
    )
}

/// A running pipeline. Cheap to clone; dropping every handle does not stop it (a pipeline
/// whose producers are finite ends on its own; [`shutdown`](Pipeline::shutdown) stops it).
pub struct Pipeline<H: Handler> {
    inner: Arc<Inner<H>>,
}

struct Inner<H: Handler> {
    shared: Arc<Shared<H>>,
    topology: Topology,
    producers: Vec<Arc<dyn Running<H::In>>>,
    requests: watch::Sender<Option<Instant>>,
    report: watch::Receiver<Option<Report>>,
}

impl<H: Handler> Clone for Pipeline<H> {
    fn clone(&self) -> Self {
        Pipeline {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H: Handler> fmt::Debug for Pipeline<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.inner.shared.pipeline)
            .field("running", &self.is_running())
            .finish()
    }
}

impl<H: Handler> Pipeline<H> {
    /// Starts configuring a pipeline named `name` that does `handler`'s work.
    pub fn builder(name: impl Into<Arc<str>>, handler: H) -> Builder<H> {
        Builder {
            name: name.into(),
            handler,
            producers: Vec::new(),
            processors: Processors::new(),
            batchers: Vec::new(),
            rate_limit: None,
            sinks: None,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.pipeline
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.inner.shared.handler
    }

    /// Whether the pipeline is still running (it has not ended nor finished shutting down).
    pub fn is_running(&self) -> bool {
        self.inner.report.borrow().is_none()
    }

    /// The running stages and their names.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The handle of producer `index` (counted across the groups, in the order they were
    /// added), if it is a `P`.
    pub fn producer<P: Producer>(&self, index: usize) -> Option<StageHandle<P>> {
        self.inner
            .producers
            .get(index)?
            .as_any()
            .downcast_ref::<StageHandle<P>>()
            .cloned()
    }

    /// What the pipeline has done so far.
    pub fn stats(&self) -> Report {
        Report::from_counts(self.inner.shared.stats.counts())
    }

    /// The rate limit in force, and the one that applies from the next interval if an update
    /// is waiting for it.
    ///
    /// # Errors
    ///
    /// [`RateLimitError::NotEnabled`] if the pipeline has none.
    pub fn rate_limit(&self) -> Result<(RateLimit, Option<RateLimit>), RateLimitError> {
        let limiter = self
            .inner
            .shared
            .limiter
            .as_ref()
            .ok_or(RateLimitError::NotEnabled)?;
        Ok(limiter.limits())
    }

    /// Changes the rate limit, from the next interval or now.
    ///
    /// # Errors
    ///
    /// [`RateLimitError::NotEnabled`] if the pipeline was built without one (it cannot be
    /// added later), [`RateLimitError::Config`] for a limit that breaks a rule.
    pub fn update_rate_limit(&self, limit: RateLimit, apply: Apply) -> Result<(), RateLimitError> {
        let limiter = self
            .inner
            .shared
            .limiter
            .as_ref()
            .ok_or(RateLimitError::NotEnabled)?;
        limit.validate()?;
        limiter.update(limit, apply);
        Ok(())
    }

    /// Shuts the pipeline down and returns its report: stops its producers (what they hold and
    /// have not sent is given back to its sources), lets the processors finish what they
    /// received, flushes every open batch, waits for every batch to be handled and settled,
    /// then stops. Messages waiting for a retry are handed back to their sources
    /// ([`Outcome::Retry`](crate::Outcome::Retry)).
    ///
    /// If that takes longer than `deadline`, every stage gives up: what it holds is settled
    /// as abandoned ([`Outcome::Nack`](crate::Outcome::Nack), `requeue: true`), a handler call
    /// still running is dropped, and the report says `timed_out`. Stages get [`KILL_GRACE`]
    /// to exit after that.
    ///
    /// Before it returns, messages dropped unsettled on the pipeline's runtime have been
    /// passed to their acknowledgers (it waits at most [`KILL_GRACE`] for those calls; other
    /// runtimes' dropped messages are not its to wait for).
    ///
    /// Idempotent and safe to call from many tasks: the first call's deadline applies, and
    /// every call returns the same report, also after the pipeline ended on its own.
    pub async fn shutdown(&self, deadline: Duration) -> Report {
        // A deadline too far to count to (`Duration::MAX` for "no deadline") is a century.
        let now = Instant::now();
        let at = now
            .checked_add(deadline)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        self.inner.requests.send_if_modified(|request| {
            if request.is_none() {
                *request = Some(at);
                true
            } else {
                false
            }
        });
        self.join().await
    }

    /// Waits until the pipeline has ended (its producers finished, or it was shut down) and
    /// returns its report.
    pub async fn join(&self) -> Report {
        let mut report = self.inner.report.clone();
        match report.wait_for(Option::is_some).await {
            Ok(report) => report.clone().expect("waited for Some"),
            // The coordinator was dropped without reporting: the runtime is shutting down.
            Err(_) => {
                let mut report = self.stats();
                report.timed_out = true;
                report
            }
        }
    }
}

/// What a pipeline did, from [`Pipeline::shutdown`], [`Pipeline::join`] or (so far)
/// [`Pipeline::stats`].
///
/// Once the pipeline has ended, `processed == acked + failed + abandoned`: every message that
/// entered the processors was settled once, one way or another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Messages that entered the processors.
    pub processed: u64,
    /// Settled as successful.
    pub acked: u64,
    /// Settled with any other outcome after they were handled (rejected, dead-lettered,
    /// handed back for a retry).
    pub failed: u64,
    /// Retries scheduled in the pipeline (a message retried twice counts twice; it is settled
    /// once all the same). A retry still waiting when the pipeline drains counts too, though
    /// it is handed back to its source (as `Outcome::Retry`) instead of run.
    pub retried: u64,
    /// Given back to their sources unhandled (`Nack`, `requeue: true`) because the shutdown
    /// deadline passed.
    pub abandoned: u64,
    /// Messages the producers held and never sent when they were stopped, given back to their
    /// sources when dropped (not counted in `processed`).
    pub unprocessed: u64,
    /// Messages the dead-letter sink took.
    pub dead_lettered: u64,
    /// Acknowledger calls of the pipeline's stages that failed. A message dropped unsettled
    /// (one a panicking producer held, say) is settled by its guard on a task of its own; a
    /// failure there is counted by that acknowledger's [`Acker::errors`](crate::Acker::errors)
    /// and logged, not here.
    pub ack_errors: u64,
    /// Dead-letter sink calls that failed.
    pub dead_letter_errors: u64,
    /// Whether the shutdown deadline passed before the pipeline had drained.
    pub timed_out: bool,
    /// Stages that ended abnormally, with their reasons.
    pub stopped: Vec<(String, Reason)>,
    /// Stages still running when the report was made (stuck in a handler that does not
    /// return, past the deadline and the grace).
    pub stuck: Vec<String>,
}

impl Report {
    fn from_counts(c: crate::settle::Counts) -> Self {
        Report {
            processed: c.processed,
            acked: c.acked,
            failed: c.failed,
            retried: c.retried,
            abandoned: c.abandoned,
            dead_lettered: c.dead_lettered,
            ack_errors: c.ack_errors,
            dead_letter_errors: c.dead_letter_errors,
            ..Report::default()
        }
    }

    /// Whether every message that entered the processors has been settled.
    pub fn adds_up(&self) -> bool {
        self.processed == self.acked + self.failed + self.abandoned
    }
}

/// Watches a pipeline's stages and runs its shutdown.
struct Coordinator<H: Handler> {
    shared: Arc<Shared<H>>,
    producers: Vec<Arc<dyn Running<H::In>>>,
    processors: Vec<StageHandle<ProcessorStage<H>>>,
    batchers: Vec<StageHandle<BatcherStage<H>>>,
    batch_processors: Vec<StageHandle<BatchProcessorStage<H>>>,
    kills: Vec<Arc<KillSwitch>>,
}

impl<H: Handler> Coordinator<H> {
    /// Every stage but the producers, as names, exit reasons, stops and joins.
    fn stages(&self) -> Vec<StageRef<'_>> {
        let mut stages: Vec<StageRef<'_>> = Vec::new();
        stages.extend(self.processors.iter().map(|h| StageRef(h)));
        stages.extend(self.batchers.iter().map(|h| StageRef(h)));
        stages.extend(self.batch_processors.iter().map(|h| StageRef(h)));
        stages
    }

    async fn run(
        self,
        mut requested: watch::Receiver<Option<Instant>>,
        report: watch::Sender<Option<Report>>,
    ) {
        let stages = self.stages();
        let all_done = join_all(stages.iter().map(|s| s.0.join_dyn()));
        tokio::pin!(all_done);
        let mut timed_out = false;
        let mut forced = false;
        let mut ended = false;
        let deadline = tokio::select! {
            _ = &mut all_done => { ended = true; None }
            request = requested.wait_for(Option::is_some) => match request {
                Ok(deadline) => *deadline,
                Err(_) => None,
            },
        };
        if let (Some(deadline), false) = (deadline, ended) {
            info!(pipeline = %self.shared.pipeline, "pipeline shutting down");
            self.shared.start_draining();
            for processor in &self.processors {
                let _ = processor.cast(Drain);
            }
            for batcher in &self.batchers {
                let _ = batcher.cast(Drain);
            }
            for producer in &self.producers {
                producer.stop();
            }
            tokio::select! {
                _ = &mut all_done => {}
                () = tokio::time::sleep_until(deadline) => timed_out = true,
            }
            if timed_out {
                warn!(pipeline = %self.shared.pipeline, "shutdown deadline passed; abandoning what is left");
                // Killed stages drop the user calls they wait for and abandon what they hold
                // and what still reaches them, then end as in a drain: every message is
                // settled, and counted, by a stage.
                for kill in &self.kills {
                    kill.kill();
                }
                if tokio::time::timeout(KILL_GRACE, &mut all_done)
                    .await
                    .is_err()
                {
                    // A stage that does not get there (stuck in user code that never yields)
                    // is stopped: what its buffers held is settled by the messages' guards.
                    forced = true;
                    for stage in &stages {
                        stage.0.stop_dyn();
                    }
                    let _ = tokio::time::timeout(KILL_GRACE, &mut all_done).await;
                }
            }
        } else if !ended {
            // Every handle to the pipeline is gone and nobody can ask for a shutdown: wait for
            // it to end.
            all_done.await;
        }
        for producer in &self.producers {
            producer.stop();
        }
        let joins = join_all(self.producers.iter().map(|p| p.join()));
        let _ = tokio::time::timeout(KILL_GRACE, joins).await;
        let _ = tokio::time::timeout(KILL_GRACE, crate::ack::orphans_settled()).await;

        let mut result = Report::from_counts(self.shared.stats.counts());
        result.timed_out = timed_out;
        for producer in &self.producers {
            result.unprocessed += producer.final_counters().map_or(0, |c| c.dropped);
            match producer.exit_reason() {
                Some(reason) if !reason.is_normal() => {
                    result.stopped.push((producer.name().to_string(), reason));
                }
                Some(_) => {}
                None => result.stuck.push(producer.name().to_string()),
            }
        }
        for stage in &stages {
            match stage.0.exit_reason_dyn() {
                Some(reason) if !reason.is_normal() => {
                    result
                        .stopped
                        .push((stage.0.name_dyn().to_string(), reason));
                }
                Some(_) => {}
                None => result.stuck.push(stage.0.name_dyn().to_string()),
            }
        }
        if forced && result.stuck.is_empty() {
            // The buffers of the stages that had to be stopped were settled by the messages'
            // guards, as requeued: abandoned, though no stage counted them.
            let counted = result.acked + result.failed + result.abandoned;
            result.abandoned += result.processed.saturating_sub(counted);
        }
        info!(
            pipeline = %self.shared.pipeline,
            processed = result.processed,
            acked = result.acked,
            failed = result.failed,
            abandoned = result.abandoned,
            "pipeline ended"
        );
        let _ = report.send(Some(result));
    }
}

/// A stage of the pipeline, whatever its type.
struct StageRef<'a>(&'a dyn AnyStage);

trait AnyStage: Send + Sync {
    fn join_dyn(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reason> + Send + '_>>;
    fn stop_dyn(&self);
    fn exit_reason_dyn(&self) -> Option<Reason>;
    fn name_dyn(&self) -> &str;
}

impl<S: Send + 'static> AnyStage for StageHandle<S> {
    fn join_dyn(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reason> + Send + '_>> {
        Box::pin(self.join())
    }
    fn stop_dyn(&self) {
        let _ = self.stop(Reason::Shutdown);
    }
    fn exit_reason_dyn(&self) -> Option<Reason> {
        self.exit_reason()
    }
    fn name_dyn(&self) -> &str {
        self.name()
    }
}
