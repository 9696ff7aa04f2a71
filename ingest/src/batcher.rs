//! The batcher stage (one per batcher name) and its batch processors: the batcher groups the
//! processors' messages into batches by key (and partition), closes them by size, timeout,
//! flush or eviction, and holds a key's next batch until its batch in flight is done; each
//! batch processor runs `handle_batch` on one batch at a time, settles it and reports back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stage::{
    Cancel, Cast, Consumer, Context as StageContext, Info, Producer, Reason, StageHandle,
    SubscribeOptions, SubscriptionId, SubscriptionMode, TimerRef,
};
use tokio::time::Instant;
use tracing::{Instrument, debug_span, error};

use crate::batch::{Batches, Effect, Now, Slot};
use crate::credit::Credits;
use crate::decide::{Fate, decide};
use crate::failure::{Action, Failure};
use crate::guard::{Guarded, KillSwitch, guarded, guarded_sync};
use crate::handler::{BatchInfo, Context, Handler};
use crate::message::{BatchMode, Message};
use crate::options::{Partitioner, RetryPolicy};
use crate::processor::{Drain, abandon};
use crate::settle::{Settle, settle_failed};
use crate::shared::{Jitter, Shared};

/// A closed batch on its way to a batch processor.
pub(crate) struct BatchEvent<T> {
    messages: Vec<Message<T>>,
    info: BatchInfo,
    slot: Slot,
}

impl<T> BatchEvent<T> {
    pub(crate) fn partition(&self) -> Option<usize> {
        self.info.partition
    }
}

/// A batch's timer.
pub(crate) struct BatchTimeout {
    slot: Slot,
    serial: u64,
}

/// Messages back from a batch processor whose wait for a retry is over (a timer).
pub(crate) struct BatchRetryDue(u64);

/// A batch processor is done with a batch of `slot`; `retries` go into later batches after
/// their wait.
pub(crate) struct BatchDone<T> {
    slot: Slot,
    retries: Vec<(Message<T>, Duration)>,
}

struct Waiting<T> {
    messages: Vec<Message<T>>,
    timer: TimerRef,
    due: Instant,
}

/// How a batcher is set up.
pub(crate) struct BatcherSetup<T> {
    pub(crate) ctx: Context,
    pub(crate) batch_size: usize,
    pub(crate) timeout: Duration,
    pub(crate) key_concurrency: usize,
    pub(crate) max_open_keys: usize,
    pub(crate) limits: (usize, usize),
    pub(crate) partition: Option<(Partitioner<T>, usize)>,
    pub(crate) kill: Arc<KillSwitch>,
}

pub(crate) struct BatcherStage<H: Handler> {
    shared: Arc<Shared<H>>,
    ctx: Context,
    name: Arc<str>,
    batches: Batches<H::Out>,
    credits: Credits,
    max_demand: usize,
    timeout: Duration,
    partition: Option<(Partitioner<H::Out>, usize)>,
    kill: Arc<KillSwitch>,
    retrying: HashMap<u64, Waiting<H::Out>>,
    retry_count: usize,
    next_retry: u64,
    effects: Vec<Effect<H::Out>>,
    started: bool,
    done: bool,
    settle: Settle,
    asks: Vec<(SubscriptionId, usize)>,
    #[cfg(feature = "metrics")]
    metrics: crate::telemetry::BatchMetrics,
}

impl<H: Handler> BatcherStage<H> {
    pub(crate) fn new(shared: Arc<Shared<H>>, setup: BatcherSetup<H::Out>) -> Self {
        let (max, min) = setup.limits;
        let name: Arc<str> = setup.ctx.batcher.clone().unwrap_or_else(|| Arc::from(""));
        BatcherStage {
            #[cfg(feature = "metrics")]
            metrics: crate::telemetry::BatchMetrics::new(&shared.pipeline, &name),
            shared,
            ctx: setup.ctx,
            name,
            batches: Batches::new(setup.batch_size, setup.key_concurrency, setup.max_open_keys),
            credits: Credits::new(max, min),
            max_demand: max,
            timeout: setup.timeout,
            partition: setup.partition,
            kill: setup.kill,
            retrying: HashMap::new(),
            retry_count: 0,
            next_retry: 0,
            effects: Vec::new(),
            started: false,
            done: false,
            settle: Settle::default(),
            asks: Vec::new(),
        }
    }

    /// The options a batcher subscribes to a processor with.
    pub(crate) fn subscribe_options(
        limits: (usize, usize),
        partition: Option<usize>,
    ) -> SubscribeOptions {
        crate::processor::ProcessorStage::<H>::subscribe_options(limits, partition)
    }

    /// Takes messages into batches, in runs of consecutive messages of one slot.
    async fn intake(&mut self, events: Vec<Message<H::Out>>, ctx: &mut StageContext<Self>) {
        let mut now = Now::lazy();
        // Most often every message goes to one batch key, in bulk mode: one run, moved in at
        // once.
        if self.partition.is_none() {
            if let Some(first) = events.first() {
                let key = first.batch_key();
                let one_run = events
                    .iter()
                    .all(|m| m.batch_key() == key && m.batch_mode() == BatchMode::Bulk);
                if one_run {
                    let slot = Slot {
                        key: key.clone(),
                        partition: None,
                    };
                    self.batches
                        .push_all(&slot, events, &mut now, &mut self.effects);
                    self.apply(ctx);
                    return;
                }
            }
        }
        let parts: Option<Vec<Result<usize, String>>> = self.partition.as_ref().map(|(f, n)| {
            events
                .iter()
                .map(|m| guarded_sync(|| (f(m) % *n as u64) as usize))
                .collect()
        });
        let part_at = |i: usize| parts.as_ref().map(|p| p[i].clone());
        let mut failed = Vec::new();
        let mut iter = events.into_iter().enumerate().peekable();
        while let Some((i, mut first)) = iter.next() {
            let partition = match part_at(i) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(panic)) => {
                    first.fail(Failure::panic(&panic).with_action(Action::Default));
                    failed.push(first);
                    continue;
                }
            };
            let slot = Slot {
                key: first.batch_key().clone(),
                partition,
            };
            let mut flush = first.batch_mode() == BatchMode::Flush;
            let rest = std::iter::from_fn(|| {
                let (_, m) = iter.next_if(|(j, m)| {
                    m.batch_key() == &slot.key
                        && match part_at(*j) {
                            None => true,
                            Some(Ok(p)) => Some(p) == partition,
                            Some(Err(_)) => false,
                        }
                })?;
                flush |= m.batch_mode() == BatchMode::Flush;
                Some(m)
            });
            let run = std::iter::once(first).chain(rest);
            self.batches
                .push_run(&slot, run, &mut now, &mut self.effects);
            if flush {
                self.batches.flush(&slot, &mut now, &mut self.effects);
            }
        }
        self.apply(ctx);
        if !failed.is_empty() {
            self.settle_final(failed).await;
        }
    }

    /// Carries out what the batches asked for: timers for new batches, closed batches out.
    fn apply(&mut self, ctx: &mut StageContext<Self>) {
        let mut effects = std::mem::take(&mut self.effects);
        // A batch that opened and closed in one go needs no timer.
        let emitted: Vec<u64> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Emit(closed) => Some(closed.serial),
                Effect::Opened { .. } => None,
            })
            .collect();
        for effect in effects.drain(..) {
            match effect {
                Effect::Opened { slot, serial } => {
                    if emitted.contains(&serial) {
                        continue;
                    }
                    let timer = ctx.send_after(
                        self.timeout,
                        BatchTimeout {
                            slot: slot.clone(),
                            serial,
                        },
                    );
                    self.batches.set_timer(&slot, serial, timer);
                }
                Effect::Emit(closed) => {
                    if let Some(timer) = closed.timer {
                        ctx.cancel_timer(timer);
                    }
                    #[cfg(feature = "metrics")]
                    {
                        let age = closed.closed_at.duration_since(closed.opened_at);
                        self.metrics.age.record(age.as_secs_f64());
                        self.metrics.size.record(closed.messages.len() as f64);
                    }
                    let info = BatchInfo {
                        batcher: Arc::clone(&self.name),
                        batch_key: closed.slot.key.clone(),
                        partition: closed.slot.partition,
                        size: closed.messages.len(),
                        trigger: closed.trigger,
                        opened_at: closed.opened_at,
                        closed_at: closed.closed_at,
                    };
                    ctx.push(BatchEvent {
                        messages: closed.messages,
                        info,
                        slot: closed.slot,
                    });
                }
            }
        }
        self.effects = effects;
    }

    /// Settles messages the batcher itself failed for good.
    async fn settle_final(&mut self, mut failed: Vec<Message<H::Out>>) {
        let shared = &*self.shared;
        if let Guarded::Panicked(panic) = guarded(
            || shared.handler.handle_failed_batch(&mut failed, &self.ctx),
            &self.kill,
        )
        .await
        {
            error!(stage = %self.ctx.stage, %panic, "handle_failed_batch panicked; the failures stand as they were");
        }
        settle_failed(
            failed,
            shared.sink_out.as_ref(),
            &self.ctx.stage,
            &mut self.settle,
            &shared.stats,
            &self.kill,
        )
        .await;
        self.settle.flush(&shared.stats, &self.ctx.stage).await;
    }

    fn pace(&mut self) {
        let held = self.batches.waiting_messages() + self.retry_count;
        self.credits.pause(held >= self.max_demand);
    }

    fn refill(&mut self, ctx: &mut StageContext<Self>) {
        self.pace();
        self.credits.refill(|want| want, &mut self.asks);
        for (id, n) in self.asks.drain(..) {
            ctx.ask(id, n);
        }
    }

    fn maybe_finish(&mut self, ctx: &mut StageContext<Self>) {
        // The processors subscribe before the start and never again: once all have gone,
        // they are done for good.
        let upstream_done = self.started && self.credits.is_empty();
        // Once the processors are done nothing more joins a batch, so each goes at once: the
        // ones open then, and those a retry coming back opens later.
        if upstream_done && self.batches.has_open() {
            self.batches.drain(Instant::now(), &mut self.effects);
            self.apply(ctx);
        }
        if upstream_done && !self.done && self.batches.is_idle() && self.retry_count == 0 {
            self.done = true;
            ctx.finish();
        }
    }

    async fn give_back_retries(&mut self, ctx: Option<&mut StageContext<Self>>, abandon_all: bool) {
        if self.retrying.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut messages = Vec::new();
        let mut timers = Vec::new();
        for (_, waiting) in self.retrying.drain() {
            let left = waiting.due.saturating_duration_since(now);
            timers.push(waiting.timer);
            for mut msg in waiting.messages {
                if let Some(failure) = msg.failure_mut() {
                    *failure = failure
                        .clone()
                        .with_action(Action::Retry { after: Some(left) });
                }
                messages.push(msg);
            }
        }
        self.retry_count = 0;
        if let Some(ctx) = ctx {
            for timer in timers {
                ctx.cancel_timer(timer);
            }
        }
        if abandon_all {
            abandon(
                &mut self.settle,
                &self.shared.stats,
                &self.ctx.stage,
                messages,
            )
            .await;
        } else {
            self.settle_final(messages).await;
        }
    }

    async fn stopping(&mut self) {
        let abandon_all = self.kill.is_killed() || !self.shared.draining();
        self.give_back_retries(None, abandon_all).await;
        let held = self.batches.take_all();
        if !held.is_empty() {
            abandon(&mut self.settle, &self.shared.stats, &self.ctx.stage, held).await;
        }
    }
}

impl<H: Handler> Consumer for BatcherStage<H> {
    type In = Message<H::Out>;

    async fn handle_events(
        &mut self,
        events: Vec<Message<H::Out>>,
        subscription: SubscriptionId,
        ctx: &mut StageContext<Self>,
    ) {
        let n = events.len();
        if self.kill.is_killed() {
            abandon(
                &mut self.settle,
                &self.shared.stats,
                &self.ctx.stage,
                events,
            )
            .await;
        } else {
            self.intake(events, ctx).await;
        }
        self.credits.received(subscription, n);
        self.refill(ctx);
    }

    async fn handle_subscribe(
        &mut self,
        subscription: SubscriptionId,
        _: &SubscribeOptions,
        ctx: &mut StageContext<Self>,
    ) -> SubscriptionMode {
        self.credits.add(subscription);
        self.refill(ctx);
        SubscriptionMode::Manual
    }

    async fn handle_cancel(
        &mut self,
        _: Cancel,
        subscription: SubscriptionId,
        ctx: &mut StageContext<Self>,
    ) {
        self.credits.remove(subscription);
        self.maybe_finish(ctx);
    }

    async fn handle_start(&mut self, ctx: &mut StageContext<Self>) {
        self.started = true;
        self.maybe_finish(ctx);
    }

    async fn terminate(&mut self, _: &Reason) {
        self.stopping().await;
    }
}

impl<H: Handler> Producer for BatcherStage<H> {
    type Out = BatchEvent<H::Out>;

    async fn terminate(&mut self, _: &Reason) {
        self.stopping().await;
    }
}

impl<H: Handler> Info<BatchTimeout> for BatcherStage<H> {
    async fn handle_info(&mut self, timeout: BatchTimeout, ctx: &mut StageContext<Self>) {
        let now = Instant::now();
        self.batches
            .timeout(&timeout.slot, timeout.serial, now, &mut self.effects);
        self.apply(ctx);
    }
}

impl<H: Handler> Cast<BatchDone<H::Out>> for BatcherStage<H> {
    async fn handle_cast(&mut self, done: BatchDone<H::Out>, ctx: &mut StageContext<Self>) {
        self.batches.done(&done.slot, &mut self.effects);
        self.apply(ctx);
        let mut retries = done.retries;
        if !retries.is_empty() {
            if self.shared.draining() || self.kill.is_killed() {
                let left: Vec<_> = retries
                    .into_iter()
                    .map(|(mut msg, after)| {
                        if let Some(failure) = msg.failure_mut() {
                            *failure = failure
                                .clone()
                                .with_action(Action::Retry { after: Some(after) });
                        }
                        msg
                    })
                    .collect();
                self.settle_final(left).await;
            } else {
                retries.sort_by_key(|(_, after)| *after);
                let mut retries = retries.into_iter().peekable();
                while let Some((msg, after)) = retries.next() {
                    let mut messages = vec![msg];
                    while let Some((more, _)) = retries.next_if(|(_, a)| *a == after) {
                        messages.push(more);
                    }
                    let id = self.next_retry;
                    self.next_retry += 1;
                    self.retry_count += messages.len();
                    let timer = ctx.send_after(after, BatchRetryDue(id));
                    let due = Instant::now() + after;
                    self.retrying.insert(
                        id,
                        Waiting {
                            messages,
                            timer,
                            due,
                        },
                    );
                }
            }
        }
        self.refill(ctx);
        self.maybe_finish(ctx);
    }
}

impl<H: Handler> Info<BatchRetryDue> for BatcherStage<H> {
    async fn handle_info(
        &mut self,
        BatchRetryDue(id): BatchRetryDue,
        ctx: &mut StageContext<Self>,
    ) {
        let Some(waiting) = self.retrying.remove(&id) else {
            return;
        };
        self.retry_count -= waiting.messages.len();
        let mut messages = waiting.messages;
        for msg in &mut messages {
            // A fresh attempt: the last one's failure is over.
            msg.clear_failure();
        }
        self.intake(messages, ctx).await;
        self.refill(ctx);
        self.maybe_finish(ctx);
    }
}

impl<H: Handler> Cast<Drain> for BatcherStage<H> {
    async fn handle_cast(&mut self, _: Drain, ctx: &mut StageContext<Self>) {
        self.give_back_retries(Some(ctx), false).await;
        self.refill(ctx);
        self.maybe_finish(ctx);
    }
}

// ----- batch processors -----

pub(crate) struct BatchProcessorStage<H: Handler> {
    shared: Arc<Shared<H>>,
    ctx: Context,
    batcher: StageHandle<BatcherStage<H>>,
    retry: Option<RetryPolicy>,
    kill: Arc<KillSwitch>,
    jitter: Jitter,
    settle: Settle,
    #[cfg(feature = "metrics")]
    metrics: crate::telemetry::BatchMetrics,
}

impl<H: Handler> BatchProcessorStage<H> {
    pub(crate) fn new(
        shared: Arc<Shared<H>>,
        ctx: Context,
        batcher: StageHandle<BatcherStage<H>>,
        retry: Option<RetryPolicy>,
        kill: Arc<KillSwitch>,
    ) -> Self {
        let seed = 0x0b47_c400 ^ ctx.index as u64;
        BatchProcessorStage {
            #[cfg(feature = "metrics")]
            metrics: crate::telemetry::BatchMetrics::new(
                &shared.pipeline,
                ctx.batcher.as_deref().unwrap_or(""),
            ),
            shared,
            ctx,
            batcher,
            retry,
            kill,
            jitter: Jitter::new(seed),
            settle: Settle::default(),
        }
    }

    /// One batch at a time: max 1, min 0; permanent, so that it stops with its batcher.
    pub(crate) fn subscribe_options(partition: Option<usize>) -> SubscribeOptions {
        let opts = SubscribeOptions::new().max_demand(1).min_demand(0);
        match partition {
            Some(p) => opts.partition(p),
            None => opts,
        }
    }

    async fn handle_one(&mut self, event: BatchEvent<H::Out>) {
        let BatchEvent {
            mut messages,
            info,
            slot,
        } = event;
        let span = debug_span!(
            "ingest.batch",
            pipeline = %self.shared.pipeline,
            stage = %self.ctx.stage,
            batcher = %info.batcher,
            key = %info.batch_key,
            size = info.size,
            trigger = ?info.trigger,
        );
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let retries = self.run(&mut messages, &info).instrument(span).await;
        #[cfg(feature = "metrics")]
        self.metrics.seconds.record(started.elapsed().as_secs_f64());
        if let Err(err) = self.batcher.cast(BatchDone { slot, retries }) {
            // Only if the batcher is gone: the retries it would have taken are dropped, and
            // their guards give them back to their sources.
            error!(stage = %self.ctx.stage, %err, "could not report a batch to its batcher");
        }
    }

    /// Handles and settles a batch; returns the messages to retry.
    async fn run(
        &mut self,
        messages: &mut Vec<Message<H::Out>>,
        info: &BatchInfo,
    ) -> Vec<(Message<H::Out>, Duration)> {
        let shared = &*self.shared;
        let stats = &shared.stats;
        self.settle.expect(messages.len());
        match guarded(
            || shared.handler.handle_batch(messages, info, &self.ctx),
            &self.kill,
        )
        .await
        {
            Guarded::Done(Ok(())) => {}
            Guarded::Done(Err(failure)) => {
                messages.iter_mut().for_each(|m| m.fail(failure.clone()))
            }
            Guarded::Panicked(panic) => {
                let failure = Failure::panic(&panic);
                messages.iter_mut().for_each(|m| m.fail(failure.clone()));
            }
            Guarded::Killed => {
                abandon(&mut self.settle, stats, &self.ctx.stage, messages.drain(..)).await;
                return Vec::new();
            }
        }
        let draining = shared.draining();
        let mut failed = Vec::new();
        let mut retries = Vec::new();
        for mut msg in messages.drain(..) {
            let attempt = msg.attempt();
            let fate = match msg.failure_mut() {
                None => {
                    self.settle.ack(&mut msg);
                    continue;
                }
                Some(failure) => decide(
                    failure,
                    attempt,
                    self.retry.as_ref(),
                    draining,
                    self.jitter.next(),
                ),
            };
            match fate {
                Fate::Retry(after) => {
                    msg.set_attempt(attempt + 1);
                    retries.push((msg, after));
                }
                Fate::Final => failed.push(msg),
            }
        }
        if !failed.is_empty() {
            if let Guarded::Panicked(panic) = guarded(
                || shared.handler.handle_failed_batch(&mut failed, &self.ctx),
                &self.kill,
            )
            .await
            {
                error!(stage = %self.ctx.stage, %panic, "handle_failed_batch panicked; the failures stand as they were");
            }
        }
        settle_failed(
            failed,
            shared.sink_out.as_ref(),
            &self.ctx.stage,
            &mut self.settle,
            stats,
            &self.kill,
        )
        .await;
        self.settle.flush(stats, &self.ctx.stage).await;
        stats.retried(retries.len() as u64);
        retries
    }
}

impl<H: Handler> Consumer for BatchProcessorStage<H> {
    type In = BatchEvent<H::Out>;

    async fn handle_events(
        &mut self,
        events: Vec<BatchEvent<H::Out>>,
        _: SubscriptionId,
        _: &mut StageContext<Self>,
    ) {
        for event in events {
            self.handle_one(event).await;
        }
    }
}
