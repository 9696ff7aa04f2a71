//! The processor stage: asks every producer for messages (held back by the rate limit and by
//! its retry backlog), runs `prepare_messages` and `handle_message` chunk by chunk, settles
//! what fails and, without batchers, what succeeds; with batchers, sends the rest on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stage::{
    Cancel, Cast, Consumer, Context as StageContext, Info, Producer, Reason, SubscribeOptions,
    SubscriptionId, SubscriptionMode, TimerRef,
};
use tokio::time::Instant;
use tracing::{Instrument, debug_span, error, trace_span};

use crate::credit::Credits;
use crate::decide::{Fate, decide};
use crate::failure::{Action, Failure};
use crate::guard::{Guarded, KillSwitch, guarded};
use crate::handler::{Context, Handler};
use crate::message::Message;
use crate::options::RetryPolicy;
use crate::settle::{Settle, settle_failed};
use crate::shared::{Jitter, Shared};

/// Retry messages whose wait is over (a timer).
pub(crate) struct RetryDue(u64);
/// The rate limit's budget is renewed (a timer).
pub(crate) struct RefillDue;
/// The rate limit was raised now: try asking again.
pub(crate) struct Refill;
/// The pipeline is shutting down: hand retries back to their sources now.
pub(crate) struct Drain;

struct Waiting<T> {
    messages: Vec<Message<T>>,
    timer: TimerRef,
    due: Instant,
}

pub(crate) struct ProcessorStage<H: Handler> {
    shared: Arc<Shared<H>>,
    ctx: Context,
    credits: Credits,
    max_demand: usize,
    retry: Option<RetryPolicy>,
    kill: Arc<KillSwitch>,
    has_batchers: bool,
    partitioned: bool,
    retrying: HashMap<u64, Waiting<H::In>>,
    retry_count: usize,
    next_retry: u64,
    refill_timer: bool,
    started: bool,
    done: bool,
    jitter: Jitter,
    settle: Settle,
    results: Vec<Option<H::Out>>,
    asks: Vec<(SubscriptionId, usize)>,
}

/// How a processor is set up.
pub(crate) struct ProcessorSetup {
    pub(crate) ctx: Context,
    pub(crate) limits: (usize, usize),
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) kill: Arc<KillSwitch>,
    pub(crate) has_batchers: bool,
    /// Whether the producers partition by the processors' `partition_by`.
    pub(crate) partitioned: bool,
}

impl<H: Handler> ProcessorStage<H> {
    pub(crate) fn new(shared: Arc<Shared<H>>, setup: ProcessorSetup) -> Self {
        let (max, min) = setup.limits;
        let seed = setup.ctx.index as u64;
        ProcessorStage {
            shared,
            ctx: setup.ctx,
            credits: Credits::new(max, min),
            max_demand: max,
            retry: setup.retry,
            kill: setup.kill,
            has_batchers: setup.has_batchers,
            partitioned: setup.partitioned,
            retrying: HashMap::new(),
            retry_count: 0,
            next_retry: 0,
            refill_timer: false,
            started: false,
            done: false,
            jitter: Jitter::new(seed),
            settle: Settle::default(),
            results: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// The options processors subscribe to a producer with.
    pub(crate) fn subscribe_options(
        limits: (usize, usize),
        partition: Option<usize>,
    ) -> SubscribeOptions {
        let opts = SubscribeOptions::new()
            .max_demand(limits.0)
            .min_demand(limits.1)
            .cancel(stage::CancelMode::Temporary);
        match partition {
            Some(p) => opts.partition(p),
            None => opts,
        }
    }

    /// Asks every subscription that is due, as far as the rate limit allows; sets a timer for
    /// the next interval if it did not allow all.
    fn refill(&mut self, ctx: &mut StageContext<Self>) {
        let short = match &self.shared.limiter {
            Some(limiter) => self
                .credits
                .refill(|want| limiter.take(want), &mut self.asks),
            None => self.credits.refill(|want| want, &mut self.asks),
        };
        for (id, n) in self.asks.drain(..) {
            ctx.ask(id, n);
        }
        if short && !self.refill_timer {
            if let Some(limiter) = &self.shared.limiter {
                let wait = limiter
                    .next_refill()
                    .saturating_duration_since(Instant::now());
                ctx.send_after(wait, RefillDue);
                self.refill_timer = true;
            }
        }
    }

    /// Holds asks back while too many messages wait for a retry.
    fn pace(&mut self) {
        self.credits.pause(self.retry_count >= self.max_demand);
    }

    /// Stops once no producer is left and nothing waits for a retry: a producer-consumer once
    /// what it emitted has gone to the batchers.
    fn maybe_finish(&mut self, ctx: &mut StageContext<Self>) {
        if self.started && !self.done && self.credits.is_empty() && self.retry_count == 0 {
            self.done = true;
            if self.has_batchers {
                ctx.finish();
            } else {
                ctx.stop(Reason::Normal);
            }
        }
    }

    /// Handles the first `len` messages of `events` (removing them).
    async fn process(
        &mut self,
        events: &mut Vec<Message<H::In>>,
        len: usize,
        ctx: &mut StageContext<Self>,
    ) {
        let span = debug_span!(
            "ingest.processor",
            pipeline = %self.shared.pipeline,
            stage = %self.ctx.stage,
            messages = len,
        );
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        self.process_chunk(events, len, ctx).instrument(span).await;
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.shared.stats.metrics {
            m.processor_seconds.record(started.elapsed().as_secs_f64());
        }
    }

    async fn process_chunk(
        &mut self,
        events: &mut Vec<Message<H::In>>,
        len: usize,
        ctx: &mut StageContext<Self>,
    ) {
        let shared = &*self.shared;
        let handler = &shared.handler;
        if !self.has_batchers {
            self.settle.expect(len);
        }
        let chunk = &mut events[..len];
        if self.partitioned {
            for msg in chunk.iter_mut().filter(|m| m.was_misrouted()) {
                msg.fail(Failure::new(
                    "the processors' partition_by panicked on this message",
                ));
            }
        }
        match guarded(|| handler.prepare_messages(chunk, &self.ctx), &self.kill).await {
            Guarded::Done(Ok(())) => {}
            Guarded::Done(Err(failure)) => chunk.iter_mut().for_each(|m| m.fail(failure.clone())),
            Guarded::Panicked(panic) => {
                let failure = Failure::panic(&panic);
                chunk.iter_mut().for_each(|m| m.fail(failure.clone()));
            }
            Guarded::Killed => {
                let stats = &shared.stats;
                abandon(
                    &mut self.settle,
                    stats,
                    &self.ctx.stage,
                    events.drain(..len),
                )
                .await;
                return;
            }
        }
        let handled =
            Self::handle_messages(handler, &self.ctx, &self.kill, chunk, &mut self.results).await;
        let killed = handled < len;
        let mut failed = Vec::new();
        let mut retries: Vec<(Message<H::In>, Duration)> = Vec::new();
        let draining = shared.draining();
        let mut results = std::mem::take(&mut self.results);
        // The handled messages, as a `Vec` of their own: the whole batch when it is one
        // chunk (the common case), so that what goes on to a batcher is collected into the
        // allocation it arrived in instead of a new one.
        let handled_messages = if handled == events.len() {
            std::mem::take(events)
        } else {
            events.drain(..handled).collect()
        };
        let (settle, jitter, retry) = (&mut self.settle, &mut self.jitter, self.retry.as_ref());
        let has_batchers = self.has_batchers;
        let out: Vec<Message<H::Out>> = handled_messages
            .into_iter()
            .zip(results.drain(..))
            .filter_map(|(mut msg, result)| {
                if let Some(data) = result {
                    if !has_batchers {
                        settle.ack(&mut msg.map(|_| data));
                        return None;
                    }
                    if killed {
                        settle.abandon(&mut msg);
                        return None;
                    }
                    match shared.route_of(&msg) {
                        Some(route) => {
                            let mut msg = msg.map(|_| data);
                            msg.route = route as u32;
                            // Attempts count per stage: the batcher's start from the first.
                            msg.set_attempt(1);
                            return Some(msg);
                        }
                        None => {
                            let known = shared.batchers.join(", ");
                            msg.fail(Failure::new(format_args!(
                                "the message was sent to the unknown batcher {:?} (the batchers are: {known})",
                                msg.batcher()
                            )));
                        }
                    }
                }
                let attempt = msg.attempt();
                let fate = match msg.failure_mut() {
                    Some(failure) if !killed => {
                        decide(failure, attempt, retry, draining, jitter.next())
                    }
                    _ => Fate::Final,
                };
                match fate {
                    Fate::Retry(after) => {
                        msg.set_attempt(attempt + 1);
                        retries.push((msg, after));
                    }
                    Fate::Final => failed.push(msg),
                }
                None
            })
            .collect();
        self.results = results;
        if killed {
            let stats = &shared.stats;
            abandon(
                &mut self.settle,
                stats,
                &self.ctx.stage,
                events.drain(..len - handled),
            )
            .await;
        }
        // The common chunk fails nothing and settles nothing here (its messages go on to a
        // batcher): the checks come first, so that it builds none of the futures below.
        if !failed.is_empty() {
            self.settle_for_good(failed, !killed).await;
        }
        if !self.settle.is_clear() {
            self.settle.flush(&self.shared.stats, &self.ctx.stage).await;
        }
        if !retries.is_empty() {
            self.wait_to_retry(retries, ctx);
        }
        if !out.is_empty() {
            ctx.emit(out);
        }
    }

    /// Runs `handle_message` on each message of `chunk` not failed yet, recording each one's
    /// result in `results`; returns how many it got through (fewer than all when the stage was
    /// killed). One guard covers the run of calls: after a panic the run goes on from the
    /// message after the one that panicked, so a panic costs a new guard and a success none.
    async fn handle_messages(
        handler: &H,
        ctx: &Context,
        kill: &KillSwitch,
        chunk: &mut [Message<H::In>],
        results: &mut Vec<Option<H::Out>>,
    ) -> usize {
        results.clear();
        while results.len() < chunk.len() {
            let start = results.len();
            // Whether the stage was killed before the run got through.
            let run = async {
                let mut traced = true;
                for msg in &mut chunk[start..] {
                    if kill.is_killed() {
                        return true;
                    }
                    if msg.is_failed() {
                        results.push(None);
                        continue;
                    }
                    // A TRACE span per message when they are enabled. Whether they are is
                    // asked once per run: the first disabled span turns them off for the rest.
                    let span = traced
                        .then(|| trace_span!("ingest.message", attempt = msg.attempt()))
                        .filter(|span| !span.is_disabled());
                    traced = span.is_some();
                    let call = handler.handle_message(msg, ctx);
                    let result = match span {
                        Some(span) => call.instrument(span).await,
                        None => call.await,
                    };
                    match result {
                        Ok(out) => results.push((!msg.is_failed()).then_some(out)),
                        Err(failure) => {
                            msg.fail(failure);
                            results.push(None);
                        }
                    }
                }
                false
            };
            match guarded(|| run, kill).await {
                Guarded::Done(false) => {}
                Guarded::Done(true) | Guarded::Killed => break,
                Guarded::Panicked(panic) => {
                    chunk[results.len()].fail(Failure::panic(&panic));
                    results.push(None);
                }
            }
        }
        results.len()
    }

    /// Sets a timer for each group of messages that wait the same time.
    fn wait_to_retry(
        &mut self,
        mut retries: Vec<(Message<H::In>, Duration)>,
        ctx: &mut StageContext<Self>,
    ) {
        if retries.is_empty() {
            return;
        }
        self.shared.stats.retried(retries.len() as u64);
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
            let timer = ctx.send_after(after, RetryDue(id));
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
        self.pace();
    }

    async fn abandon(&mut self, messages: impl IntoIterator<Item = Message<H::In>>) {
        abandon(
            &mut self.settle,
            &self.shared.stats,
            &self.ctx.stage,
            messages,
        )
        .await;
    }

    /// Settles what waits for a retry: handed back to its sources when draining, abandoned
    /// when killed or stopped.
    async fn give_back_retries(&mut self, ctx: Option<&mut StageContext<Self>>, abandon: bool) {
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
        self.pace();
        if let Some(ctx) = ctx {
            for timer in timers {
                ctx.cancel_timer(timer);
            }
        }
        if abandon {
            self.abandon(messages).await;
            return;
        }
        self.settle_for_good(messages, true).await;
        self.settle.flush(&self.shared.stats, &self.ctx.stage).await;
    }

    /// Settles messages failed for good, each as its failure says (dead letters go to the
    /// sink): after `handle_failed` has seen them, when `tell_handler`.
    async fn settle_for_good(&mut self, mut failed: Vec<Message<H::In>>, tell_handler: bool) {
        let shared = &*self.shared;
        if tell_handler {
            if let Guarded::Panicked(panic) = guarded(
                || shared.handler.handle_failed(&mut failed, &self.ctx),
                &self.kill,
            )
            .await
            {
                error!(stage = %self.ctx.stage, %panic, "handle_failed panicked; the failures stand as they were");
            }
        }
        settle_failed(
            failed,
            shared.sink_in.as_ref(),
            &self.ctx.stage,
            &mut self.settle,
            &shared.stats,
            &self.kill,
        )
        .await;
    }

    async fn stopping(&mut self) {
        let abandon = self.kill.is_killed() || !self.shared.draining();
        self.give_back_retries(None, abandon).await;
    }
}

/// Gives messages back to their sources unhandled.
pub(crate) async fn abandon<T>(
    settle: &mut Settle,
    stats: &crate::settle::Stats,
    stage: &str,
    messages: impl IntoIterator<Item = Message<T>>,
) {
    for mut msg in messages {
        settle.abandon(&mut msg);
    }
    settle.flush(stats, stage).await;
}

impl<H: Handler> Consumer for ProcessorStage<H> {
    type In = Message<H::In>;

    async fn handle_events(
        &mut self,
        mut events: Vec<Message<H::In>>,
        subscription: SubscriptionId,
        ctx: &mut StageContext<Self>,
    ) {
        let n = events.len();
        self.shared.stats.processed(n as u64);
        if self.kill.is_killed() {
            self.abandon(events).await;
            self.credits.received(subscription, n);
            return;
        }
        let chunk = self.credits.chunk();
        while !events.is_empty() {
            let len = events.len().min(chunk);
            self.process(&mut events, len, ctx).await;
            self.credits.received(subscription, len);
            self.refill(ctx);
        }
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
        if let Some(limiter) = &self.shared.limiter {
            let me = ctx.myself();
            limiter.on_renew(move || {
                let _ = me.cast(Refill);
            });
        }
        self.maybe_finish(ctx);
    }

    async fn terminate(&mut self, _: &Reason) {
        self.stopping().await;
    }
}

impl<H: Handler> Producer for ProcessorStage<H> {
    type Out = Message<H::Out>;

    async fn terminate(&mut self, _: &Reason) {
        self.stopping().await;
    }
}

impl<H: Handler> Info<RetryDue> for ProcessorStage<H> {
    async fn handle_info(&mut self, RetryDue(id): RetryDue, ctx: &mut StageContext<Self>) {
        let Some(waiting) = self.retrying.remove(&id) else {
            return;
        };
        let mut messages = waiting.messages;
        for msg in &mut messages {
            // A fresh attempt: the last one's failure is over.
            msg.clear_failure();
        }
        self.retry_count -= messages.len();
        self.pace();
        let chunk = self.credits.chunk();
        while !messages.is_empty() {
            let len = messages.len().min(chunk);
            self.process(&mut messages, len, ctx).await;
        }
        self.refill(ctx);
        self.maybe_finish(ctx);
    }
}

impl<H: Handler> Info<RefillDue> for ProcessorStage<H> {
    async fn handle_info(&mut self, _: RefillDue, ctx: &mut StageContext<Self>) {
        self.refill_timer = false;
        self.refill(ctx);
    }
}

impl<H: Handler> Cast<Refill> for ProcessorStage<H> {
    async fn handle_cast(&mut self, _: Refill, ctx: &mut StageContext<Self>) {
        self.refill(ctx);
    }
}

impl<H: Handler> Cast<Drain> for ProcessorStage<H> {
    async fn handle_cast(&mut self, _: Drain, ctx: &mut StageContext<Self>) {
        self.give_back_retries(Some(ctx), false).await;
        self.refill(ctx);
        self.maybe_finish(ctx);
    }
}
