//! The async shell: one tokio task per stage that owns the user's state, the pure cores and the
//! mailbox, and turns messages into handler calls.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::Reason;
use crate::buffer::Buffer;
use crate::context::{Cancel, CancelKind, Context, Peer, ReplyTo};
use crate::demand::Demand;
use crate::dispatcher::Dispatcher;
use crate::error::{SubscribeError, panic_message};
use crate::handle::Counters;
use crate::kind::Kind;
use crate::mailbox::{Ack, Downstream, Envelope, Mailbox, ProducerRef};
use crate::options::{CancelMode, DemandMode, SubscribeOptions, SubscriptionId, SubscriptionMode};

/// One of our subscriptions to a producer.
struct Upstream<I> {
    producer: ProducerRef<I>,
    /// `None` for manual subscriptions.
    demand: Option<Demand>,
    /// Events asked for and not received, for manual subscriptions.
    manual_credit: usize,
    cancel: CancelMode,
}

/// What a producer-consumer's inbox holds while downstream has no demand (§2.7).
enum Inbound<I, M> {
    Events(SubscriptionId, Vec<I>),
    Cancel(SubscriptionId, Cancel),
    Info(M),
}

/// What an accumulating producer logs (§2.6).
enum Logged<O> {
    Demand(usize),
    Events(Vec<O>),
}

#[derive(Default)]
struct Stats {
    events_in: u64,
    events_out: u64,
    dropped: u64,
}

/// How a stage is configured when it starts.
pub(crate) struct Setup<S, K: Kind<S>> {
    pub(crate) stage: S,
    pub(crate) name: Arc<str>,
    pub(crate) dispatcher: Box<dyn Dispatcher<K::Out>>,
    pub(crate) buffer: Buffer<K::Out, K::Msg>,
    pub(crate) mode: DemandMode,
    pub(crate) subscriptions: Vec<(ProducerRef<K::In>, SubscribeOptions)>,
}

pub(crate) struct Engine<S, K: Kind<S>> {
    stage: S,
    name: Arc<str>,
    me: Mailbox<S, K>,
    ctx: Context<K::Out>,
    producers: HashMap<SubscriptionId, Upstream<K::In>>,
    inbox: VecDeque<Inbound<K::In, K::Msg>>,
    consumers: HashMap<SubscriptionId, Box<dyn Downstream<K::Out>>>,
    had_consumers: bool,
    dispatcher: Box<dyn Dispatcher<K::Out>>,
    buffer: Buffer<K::Out, K::Msg>,
    mode: DemandMode,
    log: VecDeque<Logged<K::Out>>,
    /// Producer-consumers: downstream demand not yet used (§2.7).
    counter: usize,
    /// Set when the stage should stop with this reason once everything it holds is sent.
    finishing: Option<Reason>,
    stop: Option<Reason>,
    infos: VecDeque<K::Msg>,
    /// Infos the dispatcher holds behind its own queues, by token.
    held: HashMap<u64, K::Msg>,
    /// Infos the dispatcher has released, to run next.
    ready: VecDeque<K::Msg>,
    next_token: u64,
    /// Upstream demand the dispatcher created while dispatching, not yet acted on.
    owed: usize,
    stats: Stats,
}

/// Starts the task. Returns the mailbox and the exit watch.
pub(crate) fn spawn<S: Send + 'static, K: Kind<S>>(
    setup: Setup<S, K>,
    runtime: &tokio::runtime::Handle,
) -> (Mailbox<S, K>, watch::Receiver<Option<Reason>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (exit_tx, exit_rx) = watch::channel(None);
    let engine = Engine::<S, K> {
        stage: setup.stage,
        name: setup.name,
        me: tx.clone(),
        ctx: Context::default(),
        producers: HashMap::new(),
        inbox: VecDeque::new(),
        consumers: HashMap::new(),
        had_consumers: false,
        dispatcher: setup.dispatcher,
        buffer: setup.buffer,
        mode: setup.mode,
        log: VecDeque::new(),
        counter: 0,
        finishing: None,
        stop: None,
        infos: VecDeque::new(),
        held: HashMap::new(),
        ready: VecDeque::new(),
        next_token: 0,
        owed: 0,
        stats: Stats::default(),
    };
    runtime.spawn(engine.run(rx, setup.subscriptions, exit_tx));
    (tx, exit_rx)
}

impl<S: Send + 'static, K: Kind<S>> Engine<S, K> {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Envelope<S, K>>,
        subscriptions: Vec<(ProducerRef<K::In>, SubscribeOptions)>,
        exit: watch::Sender<Option<Reason>>,
    ) {
        debug!(stage = %self.name, "stage started");
        let served = AssertUnwindSafe(self.serve(&mut rx, subscriptions))
            .catch_unwind()
            .await;
        let reason = match served {
            Ok(reason) => {
                let terminate = AssertUnwindSafe(K::terminate(&mut self.stage, &reason));
                if let Err(payload) = terminate.catch_unwind().await {
                    error!(stage = %self.name, "terminate panicked: {}", panic_message(&*payload));
                }
                reason
            }
            Err(payload) => {
                let reason = Reason::Panic(panic_message(&*payload));
                error!(stage = %self.name, %reason, "stage handler panicked");
                reason
            }
        };
        self.exit(&reason, &mut rx);
        let _ = exit.send(Some(reason));
    }

    async fn serve(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Envelope<S, K>>,
        subscriptions: Vec<(ProducerRef<K::In>, SubscribeOptions)>,
    ) -> Reason {
        for (producer, opts) in subscriptions {
            self.subscribe_to(producer, opts, None).await;
        }
        loop {
            self.settle().await;
            if let Some(reason) = self.stop.take() {
                return reason;
            }
            let Some(msg) = rx.recv().await else {
                return Reason::Normal;
            };
            self.handle(msg).await;
        }
    }

    /// Runs the infos that are due, acts on demand the dispatcher created, and stops a
    /// finishing stage once it holds nothing more.
    async fn settle(&mut self) {
        loop {
            self.run_infos().await;
            if self.stop.is_some() {
                break;
            }
            if self.owed > 0 {
                let owed = std::mem::take(&mut self.owed);
                self.demand_arrived(owed).await;
            } else if !self.buffer.is_empty() && self.dispatcher.demand() > 0 && self.drain() > 0 {
                // Demand the dispatcher regained without new upstream demand (a broadcast
                // selector's credit for events already requested and buffered).
                self.process_inbox().await;
            } else {
                break;
            }
        }
        if self.stop.is_none() && self.finishing.is_some() {
            let drained = self.buffer.is_idle()
                && self.log.is_empty()
                && self.inbox.is_empty()
                && self.dispatcher.queued() == 0;
            // A stage that never had a consumer waits for one, so that its end (and anything it
            // holds) reaches somebody; one that had consumers and lost them all has nobody
            // left to finish for.
            if self.had_consumers && (drained || self.consumers.is_empty()) {
                self.stop = self.finishing.take();
            }
        }
    }

    /// Runs the infos the buffer has released, unless the dispatcher holds them behind its own
    /// queues (§2.12, §2.10 rule 6), in order.
    async fn run_infos(&mut self) {
        while self.stop.is_none() {
            let msg = if let Some(msg) = self.ready.pop_front() {
                msg
            } else if let Some(msg) = self.infos.pop_front() {
                let token = self.next_token;
                self.next_token += 1;
                if self.dispatcher.hold(token) {
                    self.held.insert(token, msg);
                    self.collect_released();
                    continue;
                }
                msg
            } else {
                break;
            };
            K::info(&mut self.stage, msg, &mut self.ctx).await;
            self.apply();
        }
    }

    fn collect_released(&mut self) {
        for token in self.dispatcher.released() {
            if let Some(msg) = self.held.remove(&token) {
                self.ready.push_back(msg);
            }
        }
    }

    async fn handle(&mut self, msg: Envelope<S, K>) {
        match msg {
            Envelope::Events(id, events) => {
                if K::EMITS && (self.counter == 0 || !self.inbox.is_empty()) {
                    self.inbox.push_back(Inbound::Events(id, events));
                } else {
                    self.consume(id, events, false).await;
                }
            }
            Envelope::ProducerCancel(id, cancel) => {
                if K::EMITS && !self.inbox.is_empty() {
                    self.inbox.push_back(Inbound::Cancel(id, cancel));
                } else {
                    self.producer_cancelled(id, cancel).await;
                }
            }
            Envelope::Subscribe {
                id,
                sink,
                opts,
                ack,
            } => self.consumer_subscribed(id, sink, opts, ack).await,
            Envelope::Ask(id, n) => self.asked(id, n).await,
            Envelope::ConsumerCancel(id, cancel) => self.consumer_cancelled(id, cancel).await,
            Envelope::SubscribeTo {
                producer,
                opts,
                ack,
            } => self.subscribe_to(producer, opts, Some(ack)).await,
            Envelope::CancelSubscription(id, reason) => self.cancel(id, reason).await,
            Envelope::ManualAsk(id, n) => self.ask_upstream(id, n),
            Envelope::Call(request, reply) => {
                K::call(&mut self.stage, request, ReplyTo(reply), &mut self.ctx).await;
                self.apply();
            }
            Envelope::Cast(msg) => {
                K::cast(&mut self.stage, msg, &mut self.ctx).await;
                self.apply();
            }
            Envelope::Info(msg) => {
                if K::EMITS && !self.inbox.is_empty() {
                    self.inbox.push_back(Inbound::Info(msg));
                } else {
                    self.info(msg).await;
                }
            }
            Envelope::SetDemand(mode) => self.set_demand(mode).await,
            Envelope::Counters(reply) => {
                let _ = reply.send(self.counters());
            }
            Envelope::Stop(reason) => {
                self.stop.get_or_insert(reason);
            }
            Envelope::Never(never, _) => match never {},
        }
    }

    /// Applies what the last handler asked of its context.
    fn apply(&mut self) {
        let events = std::mem::take(&mut self.ctx.events);
        self.emit(events);
        for reply in self.ctx.replies.drain(..) {
            reply();
        }
        for (id, n) in std::mem::take(&mut self.ctx.asks) {
            self.ask_upstream(id, n);
        }
        for (id, reason) in self.ctx.cancels.drain(..) {
            let _ = self.me.send(Envelope::CancelSubscription(id, reason));
        }
        if std::mem::take(&mut self.ctx.finish) {
            self.finishing.get_or_insert(Reason::Normal);
        }
        if let Some(reason) = self.ctx.stop.take() {
            self.stop.get_or_insert(reason);
        }
    }

    // ----- consumer side -----

    async fn subscribe_to(
        &mut self,
        producer: ProducerRef<K::In>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) {
        let (max, min) = match opts.limits() {
            Ok(limits) => limits,
            Err(err) => {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(err.into()));
                }
                return;
            }
        };
        let id = SubscriptionId::next();
        if producer.is_closed() {
            self.no_producer(opts.cancel_mode(), ack);
            return;
        }
        // The subscription exists (as manual) before the handler runs, so that asks the handler
        // makes through its context reach the producer, after the subscribe message.
        self.producers.insert(
            id,
            Upstream {
                producer: producer.clone(),
                demand: None,
                manual_credit: 0,
                cancel: opts.cancel_mode(),
            },
        );
        let sink: Box<dyn Downstream<K::In>> = Box::new(self.me.clone());
        if !producer.0.subscribe(id, sink, opts.clone(), ack) {
            // The producer exited in between: it is down.
            let down = Cancel {
                kind: CancelKind::Down,
                reason: Reason::NoProc,
            };
            let _ = self.me.send(Envelope::ProducerCancel(id, down));
        }
        let mode = K::subscribe(&mut self.stage, Peer::Producer, id, &opts, &mut self.ctx).await;
        if mode == SubscriptionMode::Automatic {
            if let Some(up) = self.producers.get_mut(&id) {
                up.demand = Some(Demand::new(max, min));
                up.producer.ask(id, max);
            }
        }
        self.apply();
    }

    fn no_producer(&mut self, cancel: CancelMode, ack: Option<Ack>) {
        if cancel != CancelMode::Temporary {
            info!(stage = %self.name, "could not subscribe: the producer is not running; stopping");
            self.stop.get_or_insert(Reason::NoProc);
        }
        if let Some(ack) = ack {
            let _ = ack.send(Err(SubscribeError::ProducerClosed));
        }
    }

    fn ask_upstream(&mut self, id: SubscriptionId, n: usize) {
        let Some(up) = self.producers.get_mut(&id) else {
            return;
        };
        if up.demand.is_some() {
            warn!(stage = %self.name, %id, "ask on an automatic subscription ignored");
            return;
        }
        up.manual_credit += n;
        if !up.producer.ask(id, n) {
            let down = Cancel {
                kind: CancelKind::Down,
                reason: Reason::NoProc,
            };
            let _ = self.me.send(Envelope::ProducerCancel(id, down));
        }
    }

    /// Handles one message of events from a producer (§2.2, §2.3).
    async fn consume(&mut self, id: SubscriptionId, events: Vec<K::In>, queued: bool) {
        let len = events.len();
        if len == 0 {
            return;
        }
        let Some(up) = self.producers.get_mut(&id) else {
            if queued {
                // §2.7 rule 8: queued events of a subscription removed since are passed whole.
                self.stats.events_in += len as u64;
                self.handle_batch(events, id).await;
            } else {
                debug!(stage = %self.name, %id, "events for an unknown subscription dropped");
            }
            return;
        };
        self.stats.events_in += len as u64;
        let Some(demand) = up.demand.as_mut() else {
            up.manual_credit = up.manual_credit.saturating_sub(len);
            self.handle_batch(events, id).await;
            return;
        };
        let mut message = demand.message(len);
        if len <= demand.batch_size() {
            // The common case: the whole message is one batch, handed over without a copy.
            let batch = demand
                .next_batch(&mut message)
                .expect("a non-empty message");
            if batch.excess > 0 {
                error!(stage = %self.name, %id, excess = batch.excess, "consumer received events in excess of its demand");
            }
            self.handle_batch(events, id).await;
            self.send_ask(id, batch.ask);
            return;
        }
        let mut rest = events.into_iter();
        loop {
            let Some(demand) = self
                .producers
                .get_mut(&id)
                .and_then(|up| up.demand.as_mut())
            else {
                return;
            };
            let Some(batch) = demand.next_batch(&mut message) else {
                return;
            };
            if batch.excess > 0 {
                error!(stage = %self.name, %id, excess = batch.excess, "consumer received events in excess of its demand");
            }
            let chunk: Vec<_> = rest.by_ref().take(batch.len).collect();
            self.handle_batch(chunk, id).await;
            self.send_ask(id, batch.ask);
            if self.stop.is_some() {
                return;
            }
        }
    }

    fn send_ask(&mut self, id: SubscriptionId, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(up) = self.producers.get(&id) {
            if !up.producer.ask(id, n) {
                let down = Cancel {
                    kind: CancelKind::Down,
                    reason: Reason::NoProc,
                };
                let _ = self.me.send(Envelope::ProducerCancel(id, down));
            }
        }
    }

    async fn handle_batch(&mut self, events: Vec<K::In>, id: SubscriptionId) {
        let out = K::events(&mut self.stage, events, id, &mut self.ctx).await;
        self.ctx.emit(out);
        self.apply();
    }

    async fn producer_cancelled(&mut self, id: SubscriptionId, cancel: Cancel) {
        let Some(up) = self.producers.remove(&id) else {
            return;
        };
        let reason = cancel.reason.clone();
        K::cancel(&mut self.stage, Peer::Producer, cancel, id, &mut self.ctx).await;
        self.apply();
        if self.stop.is_none() && up.cancel.exits_on(&reason) {
            if K::EMITS && reason.is_normal() {
                // Upstream ended normally: send on what this stage still holds, then stop.
                debug!(stage = %self.name, %id, %reason, "producer-consumer finishing after its producer ended");
                self.finishing.get_or_insert(reason);
            } else {
                info!(stage = %self.name, %id, %reason, "consumer stopping after its producer cancelled");
                self.stop = Some(reason);
            }
        }
    }

    async fn cancel(&mut self, id: SubscriptionId, reason: Reason) {
        if let Some(up) = self.producers.get(&id) {
            if !up.producer.cancel(id, CancelKind::Cancel, reason) {
                let down = Cancel {
                    kind: CancelKind::Down,
                    reason: Reason::NoProc,
                };
                self.producer_cancelled(id, down).await;
            }
        } else if self.consumers.contains_key(&id) {
            self.consumer_cancelled(
                id,
                Cancel {
                    kind: CancelKind::Cancel,
                    reason,
                },
            )
            .await;
        }
    }

    /// Runs the producer-consumer's queued upstream messages while downstream has demand.
    async fn process_inbox(&mut self) {
        while self.counter > 0 && self.stop.is_none() {
            let Some(item) = self.inbox.pop_front() else {
                break;
            };
            match item {
                Inbound::Events(id, events) => self.consume(id, events, true).await,
                Inbound::Cancel(id, cancel) => self.producer_cancelled(id, cancel).await,
                Inbound::Info(msg) => self.info(msg).await,
            }
        }
    }

    // ----- producer side -----

    async fn consumer_subscribed(
        &mut self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<K::Out>>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) {
        let demand = match self.dispatcher.subscribe(id, &opts) {
            Ok(demand) => demand,
            Err(err) => {
                let reason = Reason::Rejected(Arc::from(err.to_string()));
                sink.cancel(
                    id,
                    Cancel {
                        kind: CancelKind::Cancel,
                        reason,
                    },
                );
                if let Some(ack) = ack {
                    let _ = ack.send(Err(err));
                }
                return;
            }
        };
        self.consumers.insert(id, sink);
        self.had_consumers = true;
        if let Some(ack) = ack {
            let _ = ack.send(Ok(id));
        }
        K::subscribe(&mut self.stage, Peer::Consumer, id, &opts, &mut self.ctx).await;
        self.apply();
        self.demand_arrived(demand).await;
    }

    async fn asked(&mut self, id: SubscriptionId, n: usize) {
        if !self.consumers.contains_key(&id) {
            debug!(stage = %self.name, %id, "ask for an unknown subscription ignored");
            return;
        }
        let demand = self.dispatcher.ask(id, n);
        self.flush();
        self.demand_arrived(demand).await;
    }

    async fn consumer_cancelled(&mut self, id: SubscriptionId, cancel: Cancel) {
        let Some(sink) = self.consumers.remove(&id) else {
            return;
        };
        if cancel.kind == CancelKind::Cancel {
            sink.cancel(id, cancel.clone());
        }
        // The dispatcher forgets the consumer before `handle_cancel` runs, so that events the
        // handler emits go to the consumers that remain (upstream routes them to the one that
        // left, and they are lost).
        let demand = self.dispatcher.cancel(id);
        K::cancel(&mut self.stage, Peer::Consumer, cancel, id, &mut self.ctx).await;
        self.apply();
        self.demand_arrived(demand).await;
    }

    /// New upstream demand: drain the buffer with all the demand there is, then produce (or,
    /// for a producer-consumer, pull from the inbox) for what is left (§2.4, §2.5 rule 6).
    async fn demand_arrived(&mut self, demand: usize) {
        if K::RECEIVES {
            self.counter += demand;
            self.drain();
            self.process_inbox().await;
            return;
        }
        let taken = self.drain();
        let rest = if self.dispatcher.buffered_were_requested() {
            demand
        } else {
            demand.saturating_sub(taken)
        };
        if rest == 0 {
            return;
        }
        if self.mode == DemandMode::Accumulate {
            self.log.push_back(Logged::Demand(rest));
            return;
        }
        let out = K::demand(&mut self.stage, rest, &mut self.ctx).await;
        self.ctx.emit(out);
        self.apply();
    }

    /// Sends events downstream, keeping FIFO with what is buffered.
    fn emit(&mut self, events: Vec<K::Out>) {
        if events.is_empty() {
            return;
        }
        if self.mode == DemandMode::Accumulate {
            self.log.push_back(Logged::Events(events));
        } else if !self.buffer.is_empty() {
            self.store(events);
            self.drain();
        } else {
            let left = self.dispatch(events);
            if !left.is_empty() {
                self.store(left);
            }
        }
    }

    fn store(&mut self, events: Vec<K::Out>) {
        let stored = self.buffer.push(events);
        if stored.dropped > 0 {
            self.stats.dropped += stored.dropped as u64;
            if K::discarded(&mut self.stage, stored.dropped) {
                warn!(stage = %self.name, dropped = stored.dropped, "producer has discarded events from buffer");
            }
        }
        self.infos.extend(stored.released);
    }

    /// Dispatches from the buffer while there is demand. Returns how many were delivered.
    fn drain(&mut self) -> usize {
        let mut delivered = 0;
        while !self.buffer.is_empty() {
            let n = self.dispatcher.demand();
            if n == 0 {
                break;
            }
            // `take` stops at the next info marker, so events on either side of an info
            // travel in separate messages (§2.12 rule 4).
            let (events, released) = self.buffer.take(n);
            self.infos.extend(released);
            if events.is_empty() {
                break;
            }
            let offered = events.len();
            let left = self.dispatch(events);
            delivered += offered - left.len();
            if !left.is_empty() {
                self.buffer.push_front(left);
                break;
            }
        }
        delivered
    }

    /// Offers events to the dispatcher; returns what it could not place.
    fn dispatch(&mut self, events: Vec<K::Out>) -> Vec<K::Out> {
        let offered = events.len();
        let consumers = &self.consumers;
        let out = &mut self.stats.events_out;
        let left = self.dispatcher.dispatch(events, &mut |id, batch| {
            *out += batch.len() as u64;
            if let Some(sink) = consumers.get(&id) {
                sink.events(id, batch);
            }
        });
        self.counter = self.counter.saturating_sub(offered - left.len());
        self.owed += self.dispatcher.take_demand();
        self.collect_released();
        left
    }

    /// Lets the dispatcher send what it holds itself (partition queues) to new demand.
    fn flush(&mut self) {
        let consumers = &self.consumers;
        let out = &mut self.stats.events_out;
        self.dispatcher.flush(&mut |id, batch| {
            *out += batch.len() as u64;
            if let Some(sink) = consumers.get(&id) {
                sink.events(id, batch);
            }
        });
        self.collect_released();
    }

    /// An info from a handle: a consumer runs it now; a stage with a producer side runs it
    /// once the events it holds now have been dispatched.
    async fn info(&mut self, msg: K::Msg) {
        if !K::EMITS {
            K::info(&mut self.stage, msg, &mut self.ctx).await;
            self.apply();
        } else if let Some(msg) = self.buffer.push_marker(msg) {
            self.infos.push_back(msg);
            self.run_infos().await;
        }
    }

    async fn set_demand(&mut self, mode: DemandMode) {
        if !K::EMITS || K::RECEIVES {
            if mode == DemandMode::Accumulate {
                warn!(stage = %self.name, "demand mode can only be set for producers");
            }
            return;
        }
        match (self.mode, mode) {
            (DemandMode::Accumulate, DemandMode::Forward) => {
                self.mode = DemandMode::Forward;
                while self.stop.is_none() {
                    match self.log.pop_front() {
                        Some(Logged::Demand(n)) => self.demand_arrived(n).await,
                        Some(Logged::Events(events)) => self.emit(events),
                        None => break,
                    }
                }
            }
            (_, mode) => self.mode = mode,
        }
    }

    fn counters(&self) -> Counters {
        let mut consumers = self.dispatcher.demands();
        consumers.sort();
        let mut producers: Vec<_> = self
            .producers
            .iter()
            .map(|(id, up)| (*id, up.demand.map_or(up.manual_credit, |d| d.credit())))
            .collect();
        producers.sort();
        Counters {
            events_in: self.stats.events_in,
            events_out: self.stats.events_out,
            buffered: self.buffer.len() + self.dispatcher.queued(),
            dropped: self.stats.dropped + self.dispatcher.dropped(),
            inbox: self.inbox.len(),
            consumers,
            producers,
        }
    }

    // ----- exit -----

    /// Tells every peer this stage is down and answers what is left in the mailbox, so that
    /// nobody waits on a stage that is gone.
    fn exit(&mut self, reason: &Reason, rx: &mut mpsc::UnboundedReceiver<Envelope<S, K>>) {
        let down = Cancel {
            kind: CancelKind::Down,
            reason: reason.clone(),
        };
        for (id, sink) in self.consumers.drain() {
            sink.cancel(id, down.clone());
        }
        for (id, up) in self.producers.drain() {
            up.producer.cancel(id, CancelKind::Down, reason.clone());
        }
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Envelope::Subscribe { id, sink, ack, .. } => {
                    sink.cancel(id, down.clone());
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(SubscribeError::ProducerClosed));
                    }
                }
                Envelope::SubscribeTo { ack, .. } => {
                    let _ = ack.send(Err(SubscribeError::ConsumerClosed));
                }
                _ => {}
            }
        }
        if reason.is_normal() {
            debug!(stage = %self.name, %reason, "stage exited");
        } else {
            info!(stage = %self.name, %reason, "stage exited");
        }
    }
}

/// Used by handles to wait for a reply that a stage may never send.
pub(crate) async fn await_reply<R>(
    rx: oneshot::Receiver<R>,
    closed: impl FnOnce() -> bool,
) -> Result<R, crate::CallError> {
    rx.await.map_err(|_| {
        if closed() {
            crate::CallError::Closed
        } else {
            crate::CallError::NoReply
        }
    })
}
