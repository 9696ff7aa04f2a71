//! The async shell: one tokio task per stage that owns the user's state, the pure cores
//! ([`Inlet`] for the consumer side, [`Outlet`] for the producer side) and a mailbox, and only
//! moves messages between them and the handlers.
//!
//! [`Inlet`]: crate::inlet::Inlet
//! [`Outlet`]: crate::outlet::Outlet

mod downstream;
pub(crate) mod drive;
mod mail;
pub(crate) mod mailbox;
mod meter;
mod upstream;
mod watchdog;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tokio::sync::watch;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::{debug, error, info, warn};

use crate::address::{Asks, Downstream, ProducerRef};
use crate::buffer::Buffer;
use crate::context::{Context, Job, TimerOp, TimerRef};
use crate::counters::Counters;
use crate::dispatcher::{Dispatcher, DispatcherState};
use crate::error::{Cancel, Reason, SubscribeError, panic_message};
use crate::handle::{Control, Exit, Shared, StageHandle};
use crate::inlet::{Batch, Inlet};
use crate::options::{BufferSize, DemandMode, Keep, SubscribeOptions, SubscriptionId};
use crate::outlet::Outlet;
use drive::Drive;
use mailbox::{Envelope, Mailbox, ProducerAddress, Subscription};

/// How many messages already in the mailbox a stage handles in a row before it sends what they
/// produced and looks at its timers.
const BURST: usize = 16;

/// The longest delay a timer waits in one go; a longer one waits in legs of this length.
/// tokio's timer wheel takes delays of up to about two years.
const TIMER_LEG: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The first leg of a timer of `delay`, and what is left after it.
fn timer_leg(delay: std::time::Duration) -> (std::time::Duration, std::time::Duration) {
    let leg = delay.min(TIMER_LEG);
    (leg, delay - leg)
}

/// How a stage is configured when it starts.
pub(crate) struct Setup<S, I, O> {
    pub(crate) stage: S,
    pub(crate) name: Arc<str>,
    pub(crate) dispatcher: Box<dyn Dispatcher<O>>,
    pub(crate) buffer_size: BufferSize,
    pub(crate) keep: Keep,
    pub(crate) mode: DemandMode,
    pub(crate) subscriptions: Vec<(ProducerRef<I>, SubscribeOptions)>,
    /// Warn when an edge makes no progress for this long.
    pub(crate) stall_warning: Option<std::time::Duration>,
    /// The span the stage's own span is a child of.
    pub(crate) parent_span: Option<tracing::Span>,
    /// Shuts the stage down when cancelled.
    pub(crate) cancel_on: Option<tokio_util::sync::CancellationToken>,
}

/// A consumer of the stage: its subscription, its address, and the queue of its asks.
pub(crate) struct Sink<T> {
    pub(crate) id: SubscriptionId,
    pub(crate) downstream: Box<dyn Downstream<T>>,
    pub(crate) asks: Asks,
    /// The events it asked for and the events sent to it, since it subscribed.
    pub(crate) asked: u64,
    pub(crate) sent: u64,
}

/// What woke the stage up.
enum Woken<S, O> {
    Mail(Envelope<S, O>),
    Timer(Job<S>),
    Watchdog,
    /// A long timer finished a leg and waits for the next.
    Nothing,
}

pub(crate) struct Engine<S, D: Drive<S>> {
    stage: S,
    ctx: Context<S>,
    name: Arc<str>,
    me: Mailbox<S, D::Out>,
    inlet: Inlet<D::In, Job<S>>,
    outlet: Outlet<D::Out, Job<S>>,
    /// The stage's consumers. Few in practice: a linear search beats hashing.
    sinks: Vec<Sink<D::Out>>,
    had_consumers: bool,
    /// Set when the stage should stop with this reason once everything it holds is sent.
    finishing: Option<Reason>,
    /// Set by a graceful shutdown: no new work is taken.
    shutting: bool,
    watchdog: Option<watchdog::Watchdog>,
    meter: meter::Meter,
    stop: Option<Reason>,
    /// Each timer with its job and what is left of its delay after the leg it waits now.
    timers: DelayQueue<(TimerRef, Job<S>, std::time::Duration)>,
    timer_keys: HashMap<TimerRef, delay_queue::Key>,
    /// Asks drained from a consumer's queue, kept for the allocation.
    asks: std::collections::VecDeque<usize>,
    /// The rest of a batch the stage was cutting when it was told to stop.
    unhandled: Vec<(SubscriptionId, Batch<D::In>)>,
    /// Batches taken from the queue of subscription `arrived_from` and not yet handled.
    arrived: std::collections::VecDeque<Batch<D::In>>,
    arrived_from: SubscriptionId,
    events_out: u64,
    returned: u64,
    dropped: u64,
}

/// Starts a stage on `runtime` and returns its handle.
pub(crate) fn spawn<S: Send + 'static, D: Drive<S>>(
    setup: Setup<S, D::In, D::Out>,
    runtime: &tokio::runtime::Handle,
) -> StageHandle<S> {
    let (tx, rx) = mail::channel();
    let (exit_tx, exit_rx) = watch::channel(None);
    let me = Mailbox(tx);
    let contract = setup.dispatcher.contract();
    let producer = D::EMITS.then(|| {
        let address = ProducerAddress {
            mailbox: me.clone(),
            contract,
            name: Arc::clone(&setup.name),
        };
        Box::new(ProducerRef::<D::Out>(Arc::new(address))) as Box<dyn std::any::Any + Send + Sync>
    });
    let handle = StageHandle::new(Shared {
        tx: Box::new(me.clone()),
        exit: exit_rx,
        name: Arc::clone(&setup.name),
        producer,
        role: D::ROLE,
        aborted: std::sync::atomic::AtomicBool::new(false),
    });
    let out = D::EMITS.then(|| Box::new(Vec::<D::Out>::new()) as Box<dyn std::any::Any + Send>);
    let name = Arc::clone(&setup.name);
    let engine = Engine::<S, D> {
        stage: setup.stage,
        ctx: Context::new(handle.clone(), out),
        name: setup.name,
        me,
        inlet: Inlet::default(),
        outlet: Outlet::new(
            Buffer::new(setup.buffer_size, setup.keep),
            setup.dispatcher,
            setup.mode,
            D::RECEIVES,
        ),
        sinks: Vec::new(),
        had_consumers: false,
        finishing: None,
        shutting: false,
        watchdog: setup.stall_warning.map(watchdog::Watchdog::new),
        meter: meter::Meter::new(&name, D::ROLE.as_str()),
        stop: None,
        timers: DelayQueue::new(),
        timer_keys: HashMap::new(),
        unhandled: Vec::new(),
        arrived: std::collections::VecDeque::new(),
        arrived_from: SubscriptionId::from_raw(0),
        asks: std::collections::VecDeque::new(),
        events_out: 0,
        returned: 0,
        dropped: 0,
    };
    let span = match &setup.parent_span {
        Some(parent) => {
            tracing::info_span!(parent: parent, "stage", name = %engine.name, kind = D::ROLE.as_str())
        }
        None => tracing::info_span!("stage", name = %engine.name, kind = D::ROLE.as_str()),
    };
    crate::topology::register(&handle);
    runtime.spawn(tracing::Instrument::instrument(
        engine.run(rx, setup.subscriptions, exit_tx),
        span,
    ));
    if let Some(token) = setup.cancel_on {
        let stage = handle.clone();
        runtime.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {
                    let _ = stage.shutdown();
                }
                _ = stage.join() => {}
            }
        });
    }
    handle
}

type Receiver<S, D> = mail::Receiver<Envelope<S, <D as Drive<S>>::Out>>;

impl<S: Send + 'static, D: Drive<S>> Engine<S, D> {
    async fn run(
        mut self,
        mut rx: Receiver<S, D>,
        subscriptions: Vec<(ProducerRef<D::In>, SubscribeOptions)>,
        exit: watch::Sender<Option<Exit>>,
    ) {
        debug!(stage = %self.name, "stage started");
        let served = AssertUnwindSafe(self.serve(&mut rx, subscriptions))
            .catch_unwind()
            .await;
        let reason = match served {
            Ok(reason) => {
                let terminate = AssertUnwindSafe(D::terminate(&mut self.stage, &reason));
                match terminate.catch_unwind().await {
                    Ok(()) => reason,
                    Err(payload) => self.panicked(&*payload, "terminate"),
                }
            }
            Err(payload) => self.panicked(&*payload, "a handler"),
        };
        let (reason, counters) = self.exit(reason, &mut rx);
        let _ = exit.send(Some(Exit { reason, counters }));
        // The user's state is dropped here, after `exiting` is set: a reply it still holds
        // tells its caller the stage is closed.
    }

    async fn serve(
        &mut self,
        rx: &mut Receiver<S, D>,
        subscriptions: Vec<(ProducerRef<D::In>, SubscribeOptions)>,
    ) -> Reason {
        for (producer, opts) in subscriptions {
            self.subscribe_to(producer, opts, None).await;
        }
        D::start(&mut self.stage, &mut self.ctx).await;
        self.apply();
        let mut burst = 0;
        loop {
            self.settle().await;
            self.halted();
            if let Some(reason) = self.stop.take() {
                self.deliver();
                return reason;
            }
            // Messages already waiting are handled in a burst, their output sent at its end;
            // the stage waits (and checks its timers) only once the mailbox is empty, or every
            // `BURST` messages.
            burst += 1;
            if burst < BURST {
                match rx.try_recv() {
                    Ok(envelope) => {
                        self.handle(envelope).await;
                        continue;
                    }
                    Err(mail::TryRecvError::Empty) => {}
                    Err(mail::TryRecvError::Disconnected) => {
                        self.deliver();
                        return Reason::Normal;
                    }
                }
            }
            self.deliver();
            burst = 0;
            match self.next(rx).await {
                Some(Woken::Mail(envelope)) => self.handle(envelope).await,
                Some(Woken::Timer(job)) => self.run_job(job).await,
                Some(Woken::Watchdog) => self.watch(),
                Some(Woken::Nothing) => {}
                None => return Reason::Normal,
            }
        }
    }

    /// Whether the stage is to stop now: told to by a handler or a message, or aborted from
    /// outside (which overtakes what waits in the mailbox).
    #[inline]
    pub(super) fn halted(&mut self) -> bool {
        if self.stop.is_none() && self.ctx.me.is_aborted() {
            self.stop = Some(Reason::Shutdown);
        }
        self.stop.is_some()
    }

    /// Starts a graceful shutdown: no new work, what is in flight is finished.
    async fn shutdown(&mut self) {
        if self.shutting {
            return;
        }
        debug!(stage = %self.name, "shutting down");
        self.shutting = true;
        let upstreams: Vec<SubscriptionId> = self.inlet.upstreams().iter().map(|u| u.id).collect();
        for id in upstreams {
            self.cancel(id, Reason::Shutdown).await;
        }
        self.shutdown_progress();
    }

    /// Once a shutting-down stage has no producer left, it stops: at once if it has no
    /// producer side, once its output is dispatched if it has.
    pub(super) fn shutdown_progress(&mut self) {
        if !self.shutting || !self.inlet.is_empty() {
            return;
        }
        if D::EMITS {
            self.finishing.get_or_insert(Reason::Shutdown);
        } else {
            self.stop.get_or_insert(Reason::Shutdown);
        }
    }

    /// The next message or expired timer. Timers are checked first, so a timer that is due
    /// runs before messages that keep arriving.
    async fn next(&mut self, rx: &mut Receiver<S, D>) -> Option<Woken<S, D::Out>> {
        if self.timers.is_empty() && self.watchdog.is_none() {
            return rx.recv().await.map(Woken::Mail);
        }
        let timers = &mut self.timers;
        let has_timers = !timers.is_empty();
        let watchdog = self.watchdog.as_mut();
        let has_watchdog = watchdog.is_some();
        tokio::select! {
            biased;
            Some(expired) = std::future::poll_fn(|cx| timers.poll_expired(cx)), if has_timers => {
                let (timer, job, left) = expired.into_inner();
                if left.is_zero() {
                    self.timer_keys.remove(&timer);
                    return Some(Woken::Timer(job));
                }
                let (leg, left) = timer_leg(left);
                self.timer_keys.insert(timer, timers.insert((timer, job, left), leg));
                Some(Woken::Nothing)
            }
            () = watchdog::tick(watchdog), if has_watchdog => Some(Woken::Watchdog),
            envelope = rx.recv() => envelope.map(Woken::Mail),
        }
    }

    async fn handle(&mut self, envelope: Envelope<S, D::Out>) {
        match envelope {
            Envelope::Batches(id) => self.batches_arrived(id).await,
            Envelope::ProducerCancel(id, cancel) => self.producer_cancel_arrived(id, *cancel).await,
            Envelope::Subscribe(subscription) => {
                let Subscription {
                    id,
                    sink,
                    asks,
                    opts,
                    ack,
                } = *subscription;
                let sink = Sink {
                    id,
                    downstream: sink,
                    asks,
                    asked: 0,
                    sent: 0,
                };
                self.consumer_subscribed(sink, opts, ack).await
            }
            Envelope::Asks(id) => self.asks_arrived(id).await,
            Envelope::ConsumerCancel(cancel) => {
                let (id, cancel, returned) = *cancel;
                self.consumer_cancelled(id, cancel, returned).await
            }
            Envelope::Control(control) => self.control(*control).await,
        }
    }

    async fn control(&mut self, control: Control<S>) {
        match control {
            Control::SubscribeTo {
                producer,
                opts,
                ack,
            } => match producer.downcast::<ProducerRef<D::In>>() {
                Ok(producer) => self.subscribe_to(*producer, opts, Some(ack)).await,
                Err(_) => {
                    let _ = ack.send(Err(SubscribeError::ConsumerClosed));
                }
            },
            Control::CancelSubscription(id, reason) => self.cancel(id, reason).await,
            Control::ManualAsk(id, n) => self.ask_upstream(id, n),
            Control::Now(job) => self.run_job(job).await,
            Control::Info(job) => self.info_arrived(job).await,
            Control::SetDemand(mode) => self.set_demand(mode).await,
            Control::Counters(reply) => {
                self.deliver();
                let _ = reply.send(self.counters());
            }
            Control::Snapshot(reply) => {
                self.deliver();
                let _ = reply.send(self.snapshot());
            }
            Control::Stop(reason) => {
                self.stop.get_or_insert(reason);
            }
            Control::Shutdown => self.shutdown().await,
        }
    }

    /// Runs a message against the stage and applies what the handler asked for. What the
    /// stage produced before is sent first: a call or cast from outside sees the stage's
    /// earlier output on its way.
    async fn run_job(&mut self, job: Job<S>) {
        self.deliver();
        job(&mut self.stage, &mut self.ctx).await;
        self.apply();
    }

    /// Runs what is due until the stage is idle: infos released by the producer side, demand
    /// for `handle_demand`, and a producer-consumer's queued upstream messages while it has
    /// downstream demand. Then stops a finishing stage once it holds nothing that can still
    /// reach a consumer.
    async fn settle(&mut self) {
        loop {
            if self.halted() {
                return;
            }
            if let Some(job) = self.outlet.next_info() {
                self.run_job(job).await;
                continue;
            }
            let demand = if self.shutting {
                0
            } else {
                self.outlet.take_produce()
            };
            if demand > 0 {
                let events = D::demand(&mut self.stage, demand, &mut self.ctx).await;
                self.apply();
                self.emit(events);
                continue;
            }
            if D::EMITS && D::RECEIVES && self.outlet.counter() > 0 {
                if let Some(item) = self.inlet.next_waiting() {
                    self.inbound(item).await;
                    continue;
                }
            }
            break;
        }
        if self.finishing.is_some() && (self.had_consumers || self.shutting) {
            let drained = self.outlet.is_drained() && self.inlet.inbox_is_empty();
            // A stage that never had a consumer waits for one, so that its end (and what it
            // holds) reaches somebody; one that had consumers and lost them all has nobody
            // left to finish for.
            if drained || self.sinks.is_empty() {
                self.stop = self.finishing.take();
            }
        }
        if D::EMITS && D::RECEIVES && self.sinks.is_empty() && !self.inlet.inbox_is_empty() {
            self.nobody_to_wait_for();
        }
    }

    /// A producer-consumer without consumers reads its inbox no more (it does so only with
    /// downstream demand), so a shutdown, or a producer's end, waiting there behind events
    /// would wait forever. Shutting down, or having lost all its consumers, it has nobody to
    /// finish for: it stops now, and its exit gives back the events that wait (or counts them
    /// as dropped if their producer is gone). One that never had a consumer waits for one.
    fn nobody_to_wait_for(&mut self) {
        if self.shutting {
            self.stop.get_or_insert(Reason::Shutdown);
        } else if self.had_consumers {
            if let Some(reason) = self.inlet.waiting_end() {
                debug!(stage = %self.name, %reason, "producer-consumer with no consumer left stopping after its producer ended");
                self.stop = Some(reason.clone());
            }
        }
    }

    /// Applies what the last handler asked of its context. Most handlers ask nothing, so the
    /// check is inline and only a dirty context costs a call.
    #[inline]
    fn apply(&mut self) {
        if std::mem::take(&mut self.ctx.dirty) {
            self.apply_dirty();
        }
    }

    fn apply_dirty(&mut self) {
        if D::EMITS {
            let events = self.ctx.take_out::<D::Out>();
            self.emit(events);
        }
        if !self.ctx.replies.is_empty() {
            // A reply goes after the events the handler emitted.
            self.deliver();
            for reply in self.ctx.replies.drain(..) {
                reply();
            }
        }
        // The context's queues are drained, not taken, so that the next handler's requests
        // find room instead of allocating.
        if !self.ctx.asks.is_empty() {
            let mut asks = std::mem::take(&mut self.ctx.asks);
            for (id, n) in asks.drain(..) {
                self.ask_upstream(id, n);
            }
            self.ctx.asks = asks;
        }
        for (id, reason) in self.ctx.cancels.drain(..) {
            // Through the mailbox, after what is already in it.
            self.me
                .send(Envelope::Control(Box::new(Control::CancelSubscription(
                    id, reason,
                ))));
        }
        for op in self.ctx.timers.drain(..) {
            match op {
                TimerOp::Start { timer, delay, job } => {
                    let (leg, left) = timer_leg(delay);
                    let key = self.timers.insert((timer, job, left), leg);
                    self.timer_keys.insert(timer, key);
                }
                TimerOp::Cancel(timer) => {
                    if let Some(key) = self.timer_keys.remove(&timer) {
                        self.timers.remove(&key);
                    }
                }
            }
        }
        if std::mem::take(&mut self.ctx.finish) {
            self.finishing.get_or_insert(Reason::Normal);
        }
        if let Some(reason) = self.ctx.stop.take() {
            self.stop.get_or_insert(reason);
        }
    }

    /// The watchdog's look at the stage's subscriptions.
    fn watch(&mut self) {
        let Some(watchdog) = self.watchdog.as_mut() else {
            return;
        };
        if D::EMITS {
            let owed = self.outlet.state().consumers;
            watchdog.look_at_consumers(&self.name, self.outlet.buffered(), &self.sinks, &owed);
        }
        if D::RECEIVES {
            watchdog.look_at_producers(&self.name, self.inlet.upstreams());
        }
    }

    /// What the stage is and where its subscriptions stand, for [`crate::topology`].
    fn snapshot(&self) -> crate::topology::StageInfo {
        let counters = self.counters();
        let consumers = self
            .sinks
            .iter()
            .map(|sink| crate::topology::ConsumerLink {
                subscription: sink.id,
                consumer: Arc::from(sink.downstream.name()),
                owed: counters
                    .consumers
                    .iter()
                    .find(|(id, _)| *id == sink.id)
                    .map_or(0, |(_, n)| *n),
                asked: sink.asked,
                sent: sink.sent,
            })
            .collect();
        let producers = self
            .inlet
            .upstreams()
            .iter()
            .map(|up| crate::topology::ProducerLink {
                subscription: up.id,
                producer: up.producer.name(),
                credit: up.credit(),
                received: up.received,
            })
            .collect();
        crate::topology::StageInfo {
            name: Arc::clone(&self.name),
            kind: D::ROLE.into(),
            counters,
            consumers,
            producers,
        }
    }

    fn counters(&self) -> Counters {
        self.counters_from(self.outlet.state(), self.outlet.buffered())
    }

    /// The counters, with what the outlet says of its dispatcher and buffer passed in.
    fn counters_from(&self, state: DispatcherState, buffered: usize) -> Counters {
        let mut consumers = state.consumers;
        consumers.sort();
        Counters {
            events_in: self.inlet.events_in(),
            events_out: self.events_out,
            buffered,
            dropped: state.dropped + self.dropped + self.ctx.misplaced,
            returned: self.returned,
            inbox: self.inlet.inbox_len(),
            consumers,
            producers: self.inlet.credits(),
        }
    }

    // ----- exit -----

    /// Tells every peer the stage is down, gives the events it never handled back to their
    /// producers, counts what it still held as dropped, and answers what is left in the
    /// mailbox, so that nobody waits on a stage that is gone. Returns the exit reason (a panic
    /// of the dispatcher in its last sends replaces a reason that was not already a panic) and
    /// the final counters.
    fn exit(&mut self, reason: Reason, rx: &mut Receiver<S, D>) -> (Reason, Counters) {
        self.ctx.exiting.store(true, Ordering::Release);
        // What a handler emitted before it panicked never reached the outlet.
        if D::EMITS {
            let unsent = self.ctx.take_out::<D::Out>().len() as u64;
            if unsent > 0 {
                warn!(stage = %self.name, %reason, dropped = unsent, "events emitted by a handler that did not return; dropped");
                self.dropped += unsent;
            }
        }
        // The dispatcher is the user's code too. Everything the exit asks of it comes first, so
        // that a panic in it is the reason every peer hears; after one, it is not called again,
        // and what it held is not known.
        let dispatcher = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.deliver();
            self.outlet.dispatcher_state()
        }));
        let (dispatcher, reason) = match dispatcher {
            Ok(state) => (Some(state), reason),
            Err(payload) => {
                let panic = self.panicked(&*payload, "the dispatcher, while the stage exited,");
                // The first panic is the one that stopped the stage.
                let first = if matches!(reason, Reason::Panic(_)) {
                    reason
                } else {
                    panic
                };
                (None, first)
            }
        };
        let last = self.outlet.last_figures(dispatcher);
        for sink in self.sinks.drain(..) {
            sink.downstream
                .cancel(sink.id, Cancel::Down(reason.clone()));
            // Its asks from now on fail, and the news it sends itself of that arrives after
            // the down just sent, which carries the real reason.
            sink.asks.close();
        }
        rx.close();
        let mut unhandled = std::mem::take(&mut self.unhandled);
        unhandled.extend(self.inlet.take_waiting_events());
        let from = self.arrived_from;
        unhandled.extend(self.arrived.drain(..).map(|batch| (from, batch)));
        while let Ok(envelope) = rx.try_recv() {
            match envelope {
                Envelope::Subscribe(subscription) => {
                    let Subscription { id, sink, ack, .. } = *subscription;
                    sink.cancel(id, Cancel::Down(reason.clone()));
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(SubscribeError::ProducerClosed));
                    }
                }
                Envelope::ConsumerCancel(cancel) => self.dropped += cancel.2.len() as u64,
                Envelope::Control(control) => {
                    if let Control::SubscribeTo { ack, .. } = *control {
                        let _ = ack.send(Err(SubscribeError::ConsumerClosed));
                    }
                }
                // Dropping a call's job drops its reply: the caller gets `Closed`.
                _ => {}
            }
        }
        self.return_unhandled(&reason, unhandled);
        if last.held > 0 {
            warn!(stage = %self.name, %reason, dropped = last.held, "stage exited with events it had not sent; dropped");
        }
        self.dropped += last.held as u64;
        let counters = self.counters_from(last.state, last.buffered);
        self.meter.exited(counters.dropped, counters.returned);
        if reason.is_normal() {
            debug!(stage = %self.name, %reason, "stage exited");
        } else {
            info!(stage = %self.name, %reason, "stage exited");
        }
        (reason, counters)
    }

    /// The reason a panic of `what` gives the stage, logged.
    fn panicked(&self, payload: &(dyn std::any::Any + Send), what: &str) -> Reason {
        let reason = Reason::Panic(panic_message(payload));
        error!(stage = %self.name, %reason, "{what} panicked");
        reason
    }

    /// Gives each producer back the events of its subscription the stage never handled, with
    /// the news that the stage is down. What is returned or dropped is counted in events, read
    /// from the batches: a consumer of packets holds each batch as one packet of many events.
    fn return_unhandled(
        &mut self,
        reason: &Reason,
        unhandled: Vec<(SubscriptionId, Batch<D::In>)>,
    ) {
        // Each subscription's events, and how many events they are.
        let mut by_sub: Vec<(SubscriptionId, Vec<D::In>, u64)> = Vec::new();
        for (id, batch) in unhandled {
            let n = batch.len() as u64;
            let events = batch.into_events();
            match by_sub.iter_mut().find(|(s, _, _)| *s == id) {
                Some((_, all, count)) => {
                    all.extend(events);
                    *count += n;
                }
                None => by_sub.push((id, events, n)),
            }
        }
        for up in self.inlet.take_all() {
            let (mut returned, mut n) = by_sub
                .iter()
                .position(|(s, _, _)| *s == up.id)
                .map(|i| {
                    let (_, events, n) = by_sub.swap_remove(i);
                    (events, n)
                })
                .unwrap_or_default();
            // What waits in its queue came after what is already unhandled.
            for batch in up.queue.close() {
                n += batch.len() as u64;
                returned.extend(batch.into_events());
            }
            match up
                .producer
                .cancel(up.id, Cancel::Down(reason.clone()), returned)
            {
                Ok(()) => self.returned += n,
                Err(_) => self.dropped += n,
            }
        }
        // Events of subscriptions already removed: their producer is gone or has let go.
        let orphans: u64 = by_sub.iter().map(|(_, _, n)| n).sum();
        if orphans > 0 {
            warn!(stage = %self.name, dropped = orphans, "events of ended subscriptions were never handled; dropped");
            self.dropped += orphans;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every message of the mailbox is an envelope, and the mailbox's slots are as wide as
    /// the widest: the rare messages are boxed so that events and asks move in 32 bytes.
    #[test]
    fn envelopes_stay_small() {
        struct S;
        let size = std::mem::size_of::<super::Envelope<S, u64>>();
        assert!(size <= 32, "an envelope is {size} bytes");
    }
}
