//! Fixture stages shared by the integration tests (GenStage's Counter, Forwarder, Doubler...).
//!
//! A `call` to a stage is answered only after every message sent to it before has been handled,
//! so tests use calls as barriers instead of sleeping.
#![allow(dead_code, unreachable_pub)]

pub mod checked;

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use stage::{
    AsProducer, Call, Cancel, Cast, Consumer, Context, Counters, Info, Producer, Reason, ReplyTo,
    StageHandle, SubscribeOptions, SubscriptionId, SubscriptionMode,
};

/// Which side of a subscription the other stage is on, as a fixture records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The other stage is our producer.
    Producer,
    /// The other stage is our consumer.
    Consumer,
}

/// A handle to a running producer fixture.
pub type ProducerHandle<P> = StageHandle<P>;
/// A handle to a running consumer fixture.
pub type ConsumerHandle<C> = StageHandle<C>;

/// What a test can ask a fixture stage.
#[derive(Debug)]
pub enum Ask {
    /// The fixture's log so far (and clear it).
    Log,
}

/// One thing a fixture saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<T> {
    Events(SubscriptionId, Vec<T>),
    Demand(usize),
    Subscribed(Peer, SubscriptionId),
    Cancelled(Peer, Cancel, SubscriptionId),
    Info(Msg<T>),
}

/// Messages fixtures take by cast and info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg<T> {
    /// Emit these events (producers and producer-consumers).
    Emit(Vec<T>),
    /// A tag, recorded when it arrives.
    Tag(&'static str),
    /// Stop with this reason.
    Stop(Reason),
    /// Manual demand: ask this subscription for n events.
    AskFor(SubscriptionId, usize),
}

fn log_reply<T: Clone>(log: &mut Vec<Seen<T>>, reply: ReplyTo<Vec<Seen<T>>>) {
    reply.send(std::mem::take(log));
}

fn on_msg<S>(log: &mut Vec<Seen<u64>>, msg: Msg<u64>, ctx: &mut Context<S>, info: bool)
where
    S: Producer<Out = u64>,
{
    if info {
        log.push(Seen::Info(msg.clone()));
    }
    match msg {
        Msg::Emit(events) => ctx.emit(events),
        Msg::Tag(_) => {}
        Msg::Stop(reason) => ctx.stop(reason),
        Msg::AskFor(id, n) => ctx.ask(id, n),
    }
}

/// A producer that emits only what it is told to (by cast), or, with `counting`, a counter that
/// answers every demand in full. It logs every demand it sees.
#[derive(Debug, Default)]
pub struct Source {
    pub log: Vec<Seen<u64>>,
    /// `Some(next)`: answer each demand with `next..next+demand`.
    pub counting: Option<u64>,
    /// Events to hand out as demand arrives, before counting.
    pub queue: VecDeque<u64>,
}

impl Source {
    pub fn counter(from: u64) -> Self {
        Source {
            counting: Some(from),
            ..Source::default()
        }
    }

    pub fn silent() -> Self {
        Source::default()
    }
}

impl Producer for Source {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<u64> {
        self.log.push(Seen::Demand(demand));
        let mut out: Vec<u64> = Vec::new();
        while out.len() < demand {
            match self.queue.pop_front() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        if let Some(next) = self.counting.as_mut() {
            let more = (demand - out.len()) as u64;
            out.extend(*next..*next + more);
            *next += more;
        }
        out
    }

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) {
        self.log.push(Seen::Subscribed(Peer::Consumer, id));
    }

    async fn handle_cancel(&mut self, cancel: Cancel, id: SubscriptionId, _: &mut Context<Self>) {
        self.log.push(Seen::Cancelled(Peer::Consumer, cancel, id));
    }
}

impl Call<Ask> for Source {
    type Reply = Vec<Seen<u64>>;

    async fn handle_call(&mut self, _: Ask, reply: ReplyTo<Self::Reply>, _: &mut Context<Self>) {
        log_reply(&mut self.log, reply);
    }
}

impl Cast<Msg<u64>> for Source {
    async fn handle_cast(&mut self, msg: Msg<u64>, ctx: &mut Context<Self>) {
        on_msg(&mut self.log, msg, ctx, false);
    }
}

impl Info<Msg<u64>> for Source {
    async fn handle_info(&mut self, msg: Msg<u64>, ctx: &mut Context<Self>) {
        on_msg(&mut self.log, msg, ctx, true);
    }
}

/// A consumer that logs every batch, subscription and cancel, in automatic or manual mode.
#[derive(Debug, Default)]
pub struct Sink {
    pub log: Vec<Seen<u64>>,
    pub manual: bool,
}

impl Sink {
    pub fn new() -> Self {
        Sink::default()
    }

    pub fn manual() -> Self {
        Sink {
            manual: true,
            ..Sink::default()
        }
    }
}

impl Consumer for Sink {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, id: SubscriptionId, _: &mut Context<Self>) {
        self.log.push(Seen::Events(id, events));
    }

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.log.push(Seen::Subscribed(Peer::Producer, id));
        if self.manual {
            SubscriptionMode::Manual
        } else {
            SubscriptionMode::Automatic
        }
    }

    async fn handle_cancel(&mut self, cancel: Cancel, id: SubscriptionId, _: &mut Context<Self>) {
        self.log.push(Seen::Cancelled(Peer::Producer, cancel, id));
    }
}

impl Call<Ask> for Sink {
    type Reply = Vec<Seen<u64>>;

    async fn handle_call(&mut self, _: Ask, reply: ReplyTo<Self::Reply>, _: &mut Context<Self>) {
        log_reply(&mut self.log, reply);
    }
}

impl Cast<Msg<u64>> for Sink {
    async fn handle_cast(&mut self, msg: Msg<u64>, ctx: &mut Context<Self>) {
        if let Msg::AskFor(id, n) = msg {
            ctx.ask(id, n);
        } else if let Msg::Stop(reason) = msg {
            ctx.stop(reason);
        }
    }
}

impl Info<Msg<u64>> for Sink {
    async fn handle_info(&mut self, msg: Msg<u64>, _: &mut Context<Self>) {
        self.log.push(Seen::Info(msg));
    }
}

/// A producer-consumer that applies `f` to each event (`None` drops it) and logs what it sees.
pub struct Through {
    pub log: Vec<Seen<u64>>,
    pub f: fn(u64) -> Vec<u64>,
}

impl std::fmt::Debug for Through {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Through").field("log", &self.log).finish()
    }
}

impl Through {
    /// Passes events on unchanged.
    pub fn forwarder() -> Self {
        Through {
            log: Vec::new(),
            f: |x| vec![x],
        }
    }

    /// Emits each event twice.
    pub fn doubler() -> Self {
        Through {
            log: Vec::new(),
            f: |x| vec![x, x],
        }
    }

    /// Emits nothing.
    pub fn discarder() -> Self {
        Through {
            log: Vec::new(),
            f: |_| vec![],
        }
    }
}

impl Producer for Through {
    type Out = u64;

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) {
        self.log.push(Seen::Subscribed(Peer::Consumer, id));
    }

    async fn handle_cancel(&mut self, cancel: Cancel, id: SubscriptionId, _: &mut Context<Self>) {
        self.log.push(Seen::Cancelled(Peer::Consumer, cancel, id));
    }
}

impl Consumer for Through {
    type In = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        id: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        let out = events.iter().flat_map(|&x| (self.f)(x)).collect();
        self.log.push(Seen::Events(id, events));
        ctx.emit(out);
    }

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.log.push(Seen::Subscribed(Peer::Producer, id));
        SubscriptionMode::Automatic
    }

    async fn handle_cancel(&mut self, cancel: Cancel, id: SubscriptionId, _: &mut Context<Self>) {
        self.log.push(Seen::Cancelled(Peer::Producer, cancel, id));
    }
}

impl Call<Ask> for Through {
    type Reply = Vec<Seen<u64>>;

    async fn handle_call(&mut self, _: Ask, reply: ReplyTo<Self::Reply>, _: &mut Context<Self>) {
        log_reply(&mut self.log, reply);
    }
}

impl Cast<Msg<u64>> for Through {
    async fn handle_cast(&mut self, msg: Msg<u64>, ctx: &mut Context<Self>) {
        on_msg(&mut self.log, msg, ctx, false);
    }
}

impl Info<Msg<u64>> for Through {
    async fn handle_info(&mut self, msg: Msg<u64>, ctx: &mut Context<Self>) {
        on_msg(&mut self.log, msg, ctx, true);
    }
}

/// The events in a log, in order.
pub fn events<T: Clone>(log: &[Seen<T>]) -> Vec<T> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Events(_, e) => Some(e.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The batch sizes in a log, in order.
pub fn batch_sizes<T>(log: &[Seen<T>]) -> Vec<usize> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Events(_, e) => Some(e.len()),
            _ => None,
        })
        .collect()
}

/// The demands a producer saw, in order.
pub fn demands<T>(log: &[Seen<T>]) -> Vec<usize> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Demand(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// Lets every stage run until all are idle (on a current-thread runtime).
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Awaits `f`, failing the test instead of hanging if it takes more than 5 seconds.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("timed out: a stage hung")
}

/// The events `start..end`, in order.
pub fn range(r: std::ops::Range<u64>) -> Vec<u64> {
    r.collect()
}

/// A manual sink subscribed to `p` with default options, with its subscription.
pub async fn manual_sink(p: &impl AsProducer<u64>) -> (ConsumerHandle<Sink>, SubscriptionId) {
    manual_sink_with(p, SubscribeOptions::new()).await
}

/// A manual sink subscribed to `p` with `opts`, with its subscription.
pub async fn manual_sink_with(
    p: &impl AsProducer<u64>,
    opts: SubscribeOptions,
) -> (ConsumerHandle<Sink>, SubscriptionId) {
    let c = stage::consumer(Sink::manual()).start().unwrap();
    let id = within(c.subscribe(p, opts)).await.unwrap();
    (c, id)
}

/// A manual sink subscribed to `p` with `opts`; returns once the producer has accepted it.
pub async fn manual<S: Send + 'static>(
    p: &StageHandle<S>,
    opts: SubscribeOptions,
) -> (ConsumerHandle<Sink>, SubscriptionId)
where
    StageHandle<S>: AsProducer<u64>,
{
    let (c, id) = manual_sink_with(p, opts).await;
    p.counters().await.unwrap();
    (c, id)
}

/// Asks `n` more on a manual subscription; returns once the producer `p` has handled the ask.
pub async fn ask<S: Send + 'static>(
    c: &ConsumerHandle<Sink>,
    id: SubscriptionId,
    n: usize,
    p: &StageHandle<S>,
) {
    c.ask(id, n).unwrap();
    c.counters().await.unwrap();
    p.counters().await.unwrap();
}

/// [`ask`], then lets the pipeline run until idle ([`settle`]).
pub async fn ask_settled<S: Send + 'static>(
    c: &ConsumerHandle<Sink>,
    id: SubscriptionId,
    n: usize,
    p: &StageHandle<S>,
) {
    ask(c, id, n, p).await;
    settle().await;
}

/// Emits `events` from a [`Source`] and returns once the producer has dispatched them.
pub async fn emit(p: &ProducerHandle<Source>, events: Vec<u64>) {
    p.cast(Msg::Emit(events)).unwrap();
    p.counters().await.unwrap();
}

/// [`emit`], then lets the pipeline run until idle ([`settle`]).
pub async fn emit_settled(p: &ProducerHandle<Source>, events: Vec<u64>) {
    emit(p, events).await;
    settle().await;
}

/// Barrier: the consumer forwarded its asks, the producer handled them, the consumer got the
/// events.
pub async fn flow<P: Producer>(p: &ProducerHandle<P>, c: &ConsumerHandle<Sink>) {
    c.counters().await.unwrap();
    p.counters().await.unwrap();
    c.counters().await.unwrap();
}

/// Lets the stages run until `h`'s counters stop changing.
pub async fn idle<S>(h: &StageHandle<S>) {
    within(async {
        let mut last: Option<Counters> = None;
        loop {
            settle().await;
            let now = h.counters().await.unwrap();
            if last.as_ref() == Some(&now) {
                return;
            }
            last = Some(now);
        }
    })
    .await;
}

/// The event messages a sink received since last asked, one batch per message.
pub async fn batches(c: &ConsumerHandle<Sink>) -> Vec<Vec<u64>> {
    c.call(Ask::Log)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Events(_, e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The events a sink received since last asked.
pub async fn received(c: &ConsumerHandle<Sink>) -> Vec<u64> {
    events(&c.call(Ask::Log).await.unwrap())
}

/// The demands a [`Source`]'s `handle_demand` saw since last asked.
pub async fn demand_log(p: &ProducerHandle<Source>) -> Vec<usize> {
    demands(&p.call(Ask::Log).await.unwrap())
}

/// The batches of one subscription in a consumer log.
pub fn batches_of<T: Clone>(log: &[Seen<T>], id: SubscriptionId) -> Vec<Vec<T>> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Events(from, e) if *from == id => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The info messages in a log, in order.
pub fn infos<T: Clone>(log: &[Seen<T>]) -> Vec<Msg<T>> {
    log.iter()
        .filter_map(|s| match s {
            Seen::Info(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}
