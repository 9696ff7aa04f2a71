//! A producer's side of demand: spec §2.4 (rules 1–6): the buffer is drained before
//! `handle_demand` is called for what is left, `handle_demand` is called once per ask (asks are
//! not summed), a producer may return fewer or more events than asked, events from every
//! handler are dispatched, and a call's reply goes out after its events with
//! [`Context::reply`] but at once with [`ReplyTo::send`] (§2.4 rule 6, §2.13 rule 4).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use stage::{
    Call, Cancel, CancelMode, Context, Contract, DemandDispatcher, Dispatcher, DispatcherState,
    Outbox, Producer, ReplyTo, SubscribeError, SubscribeOptions, SubscriptionId,
};
use support::{
    Ask, ConsumerHandle, Msg, ProducerHandle, Seen, Sink, Source, batch_sizes, demands, events,
    flow, manual_sink,
};

/// A producer that logs demands and emits from every handler.
#[derive(Debug, Default)]
struct Talker {
    demands: Vec<usize>,
    /// How many events to answer each demand with: `None` is exactly the demand.
    answer: Option<usize>,
    next: u64,
    on_subscribe: Vec<u64>,
    on_cancel: Vec<u64>,
}

#[derive(Debug)]
enum Req {
    /// The demands seen so far (and clear them).
    Demands,
    /// Emit these events and reply with [`Context::reply`].
    EmitThenReply(Vec<u64>),
    /// Reply at once with [`ReplyTo::send`], then emit these events.
    ReplyThenEmit(Vec<u64>),
}

/// Lets other tasks run while a handler is still going.
async fn pause() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

impl Producer for Talker {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<u64> {
        self.demands.push(demand);
        let k = self.answer.unwrap_or(demand) as u64;
        let out = (self.next..self.next + k).collect();
        self.next += k;
        out
    }

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        ctx: &mut Context<Self>,
    ) {
        ctx.emit(std::mem::take(&mut self.on_subscribe));
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        ctx.emit(std::mem::take(&mut self.on_cancel));
    }
}

impl Call<Req> for Talker {
    type Reply = Vec<usize>;

    async fn handle_call(&mut self, req: Req, reply: ReplyTo<Vec<usize>>, ctx: &mut Context<Self>) {
        match req {
            Req::Demands => reply.send(std::mem::take(&mut self.demands)),
            Req::EmitThenReply(events) => {
                ctx.emit(events);
                ctx.reply(reply, Vec::new());
                pause().await;
            }
            Req::ReplyThenEmit(events) => {
                reply.send(Vec::new());
                ctx.emit(events);
                pause().await;
            }
        }
    }
}

// ----- rules 1–3: buffer first, then handle_demand, once per ask -----

#[tokio::test]
async fn ask_goes_to_handle_demand_with_the_asked_count() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 6).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [6]);
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 6)]);
}

#[tokio::test]
async fn buffered_events_are_sent_first_and_handle_demand_gets_only_the_rest() {
    let p = stage::producer(Source::counter(100)).start().unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    assert_eq!(p.buffered().await.unwrap(), 3, "no consumer yet: buffered");
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [2]);
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        clog[1..],
        [
            Seen::Events(id, vec![1, 2, 3]),
            Seen::Events(id, vec![100, 101])
        ]
    );
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn handle_demand_is_not_called_when_the_buffer_covers_the_ask() {
    let p = stage::producer(Source::counter(100)).start().unwrap();
    p.cast(Msg::Emit((1..=15).collect())).unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 10).unwrap();
    flow(&p, &c).await;
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(p.buffered().await.unwrap(), 5);

    // The next ask takes the last 5 buffered, then handle_demand(3).
    c.ask(id, 8).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [3]);
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        [11, 12, 13, 14, 15, 100, 101, 102]
    );
}

#[tokio::test]
async fn asks_from_two_consumers_give_two_handle_demand_calls_not_one_sum() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let opts = SubscribeOptions::new().max_demand(5);
    let c1 = stage::consumer(Sink::new()).start().unwrap();
    let c2 = stage::consumer(Sink::new()).start().unwrap();
    c1.subscribe(&p, opts.clone()).await.unwrap();
    c2.subscribe(&p, opts).await.unwrap();
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [5, 5]);
}

#[tokio::test]
async fn two_queued_asks_from_one_consumer_are_not_summed() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    // Both asks are in the producer's mailbox before it runs.
    c.ask(id, 3).unwrap();
    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [3, 4]);
}

// ----- rule 4: fewer or more than asked -----

#[tokio::test]
async fn returning_fewer_events_than_demand_gets_no_new_ask_and_the_demand_stays_open() {
    let source = Source {
        queue: [1, 2].into(),
        ..Source::silent()
    };
    let p = stage::producer(source).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c
        .subscribe(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();
    support::settle().await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [10]);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [1, 2]);
    // 8 of the 10 are still owed: the consumer does not ask again (8 > min 5).
    support::settle().await;
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 8)]);

    // Events the producer emits later still meet that open demand.
    p.cast(Msg::Emit((3..=10).collect())).unwrap();
    support::settle().await;
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        (3..=10).collect::<Vec<_>>()
    );
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn returning_more_events_than_demand_buffers_the_excess() {
    let talker = Talker {
        answer: Some(15),
        ..Talker::default()
    };
    let p = stage::producer(talker).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 10).unwrap();
    flow(&p, &c).await;
    assert_eq!(p.call(Req::Demands).await.unwrap(), [10]);
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&clog), [10]);
    assert_eq!(events(&clog), (0..10).collect::<Vec<_>>());
    assert_eq!(p.buffered().await.unwrap(), 5);
    // And the excess is what the next ask gets, without another handle_demand.
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        (10..15).collect::<Vec<_>>()
    );
    assert_eq!(p.call(Req::Demands).await.unwrap(), Vec::<usize>::new());
}

// ----- rule 5: events from any handler -----

#[tokio::test]
async fn events_emitted_from_handle_cast_are_dispatched() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    p.cast(Msg::Emit(vec![7, 8])).unwrap();
    p.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [7, 8]);
}

#[tokio::test]
async fn events_emitted_from_handle_info_are_dispatched() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    p.info(Msg::Emit(vec![7, 8])).unwrap();
    p.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [7, 8]);
    let plog = p.call(Ask::Log).await.unwrap();
    assert!(
        plog.contains(&Seen::Info(Msg::Emit(vec![7, 8]))),
        "{plog:?}"
    );
}

#[tokio::test]
async fn events_emitted_from_handle_call_are_dispatched() {
    let talker = Talker {
        answer: Some(0),
        ..Talker::default()
    };
    let p = stage::producer(talker).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    p.call(Req::EmitThenReply(vec![7, 8])).await.unwrap();
    p.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [7, 8]);
}

#[tokio::test]
async fn events_emitted_from_handle_cancel_are_dispatched() {
    let talker = Talker {
        answer: Some(0),
        on_cancel: vec![7, 8, 9],
        ..Talker::default()
    };
    let p = stage::producer(talker).start().unwrap();
    // The leaving consumer is manual and has asked for nothing, so only c2 has demand.
    let c1 = stage::consumer(Sink::manual()).start().unwrap();
    let c2 = stage::consumer(Sink::new()).start().unwrap();
    let temporary = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let id1 = c1.subscribe(&p, temporary).await.unwrap();
    let id2 = c2
        .subscribe(&p, SubscribeOptions::new().max_demand(5))
        .await
        .unwrap();
    assert_eq!(p.call(Req::Demands).await.unwrap(), [5]);

    c1.cancel(id1, stage::Reason::Normal).unwrap();
    c1.counters().await.unwrap();
    p.counters().await.unwrap();
    assert_eq!(
        c2.call(Ask::Log).await.unwrap()[1..],
        [Seen::Events(id2, vec![7, 8, 9])]
    );
}

#[tokio::test]
async fn events_emitted_from_handle_cancel_go_to_remaining_consumers_not_the_cancelled_one() {
    // Same as above, but the leaving consumer still has open demand (and subscribed first, so
    // it heads the dispatcher's queue): the events must not be sent to it, nor lost.
    let talker = Talker {
        answer: Some(0),
        on_cancel: vec![7, 8, 9],
        ..Talker::default()
    };
    let p = stage::producer(talker).start().unwrap();
    let opts = SubscribeOptions::new()
        .max_demand(5)
        .cancel(CancelMode::Temporary);
    let c1 = stage::consumer(Sink::new()).start().unwrap();
    let c2 = stage::consumer(Sink::new()).start().unwrap();
    let id1 = c1.subscribe(&p, opts.clone()).await.unwrap();
    let id2 = c2.subscribe(&p, opts).await.unwrap();
    assert_eq!(p.call(Req::Demands).await.unwrap(), [5, 5]);

    c1.cancel(id1, stage::Reason::Normal).unwrap();
    c1.counters().await.unwrap();
    let pc = p.counters().await.unwrap();
    assert_eq!(
        c2.call(Ask::Log).await.unwrap()[1..],
        [Seen::Events(id2, vec![7, 8, 9])],
        "producer buffered {} and counted {} events out",
        pc.buffered,
        pc.events_out
    );
    assert!(events(&c1.call(Ask::Log).await.unwrap()).is_empty());
}

#[tokio::test]
async fn events_emitted_from_handle_subscribe_wait_in_the_buffer_for_the_first_ask() {
    let talker = Talker {
        next: 100,
        on_subscribe: vec![1, 2, 3],
        ..Talker::default()
    };
    let p = stage::producer(talker).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    // The new consumer had no demand yet when handle_subscribe emitted.
    assert_eq!(p.buffered().await.unwrap(), 3);
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    assert_eq!(p.call(Req::Demands).await.unwrap(), [2]);
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        [1, 2, 3, 100, 101]
    );
}

// ----- rule 6: replies and events -----

/// A producer with no demand to fill and a consumer with 5 open demand.
async fn reply_setup() -> (ProducerHandle<Talker>, ConsumerHandle<Sink>, SubscriptionId) {
    let talker = Talker {
        answer: Some(0),
        ..Talker::default()
    };
    let p = stage::producer(talker).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    assert_eq!(p.call(Req::Demands).await.unwrap(), [5]);
    c.call(Ask::Log).await.unwrap();
    (p, c, id)
}

#[tokio::test]
async fn context_reply_is_sent_after_the_events_are_dispatched() {
    let (p, c, id) = reply_setup().await;
    p.call(Req::EmitThenReply(vec![1, 2, 3])).await.unwrap();
    // Straight after the reply, with no barrier on the producer: the events are already in
    // the consumer's mailbox, ahead of this call.
    assert_eq!(
        c.call(Ask::Log).await.unwrap(),
        [Seen::Events(id, vec![1, 2, 3])]
    );
}

#[tokio::test]
async fn reply_to_send_replies_before_the_events_are_dispatched() {
    let (p, c, id) = reply_setup().await;
    p.call(Req::ReplyThenEmit(vec![1, 2, 3])).await.unwrap();
    // The reply came while the handler was still running: its events are not out yet, so the
    // consumer sees this call first.
    assert_eq!(c.call(Ask::Log).await.unwrap(), []);
    p.counters().await.unwrap();
    assert_eq!(
        c.call(Ask::Log).await.unwrap(),
        [Seen::Events(id, vec![1, 2, 3])]
    );
}

/// The default dispatcher, counting the events it hands out.
struct Counting {
    inner: DemandDispatcher<u64>,
    sent: Arc<AtomicUsize>,
}

impl Dispatcher<u64> for Counting {
    fn contract(&self) -> Contract {
        self.inner.contract()
    }

    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<u64>,
    ) -> Result<(), SubscribeError> {
        self.inner.subscribe(id, opts, out)
    }

    fn cancel(
        &mut self,
        id: SubscriptionId,
        returned: Vec<u64>,
        out: &mut Outbox<u64>,
    ) -> Vec<u64> {
        self.inner.cancel(id, returned, out)
    }

    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<u64>) {
        self.inner.ask(id, n, out)
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn dispatch(&mut self, events: Vec<u64>, out: &mut Outbox<u64>) -> Vec<u64> {
        let offered = events.len();
        let left = self.inner.dispatch(events, out);
        self.sent.fetch_add(offered - left.len(), Ordering::SeqCst);
        left
    }

    fn hold(&mut self, token: u64) -> bool {
        self.inner.hold(token)
    }

    fn state(&self) -> DispatcherState {
        self.inner.state()
    }
}

/// A reply that, when dropped undelivered, records how many events had been dispatched.
struct Probe {
    sent: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<usize>>>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let sent = self.sent.load(Ordering::SeqCst);
        self.seen.lock().unwrap().push(sent);
    }
}

/// Emits on every call and replies with a [`Probe`], early or late.
struct Prober {
    sent: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<usize>>>,
}

impl Producer for Prober {
    type Out = u64;

    async fn handle_demand(&mut self, _: usize, _: &mut Context<Self>) -> Vec<u64> {
        Vec::new()
    }
}

impl Call<bool> for Prober {
    type Reply = Probe;

    /// `late`: reply with [`Context::reply`]; otherwise with [`ReplyTo::send`] first.
    async fn handle_call(&mut self, late: bool, reply: ReplyTo<Probe>, ctx: &mut Context<Self>) {
        let probe = Probe {
            sent: Arc::clone(&self.sent),
            seen: Arc::clone(&self.seen),
        };
        if late {
            ctx.emit(vec![1, 2, 3]);
            ctx.reply(reply, probe);
        } else {
            reply.send(probe);
            ctx.emit(vec![1, 2, 3]);
        }
    }
}

/// Sends a call whose caller has already gone, so the reply is dropped the moment it is sent,
/// and returns how many events had been dispatched at that moment.
async fn dispatched_when_replied(late: bool) -> usize {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let prober = Prober {
        sent: Arc::clone(&sent),
        seen: Arc::clone(&seen),
    };
    let dispatcher = Counting {
        inner: DemandDispatcher::new(),
        sent: Arc::clone(&sent),
    };
    let p = stage::producer(prober)
        .dispatcher(dispatcher)
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    c.subscribe(&p, SubscribeOptions::new()).await.unwrap();
    p.counters().await.unwrap();
    // Polled once (the request is sent), then dropped.
    assert!(p.call(late).now_or_never().is_none());
    p.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [1, 2, 3]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one reply");
    seen[0]
}

#[tokio::test]
async fn context_reply_goes_out_only_once_the_events_are_dispatched() {
    assert_eq!(dispatched_when_replied(true).await, 3);
}

#[tokio::test]
async fn reply_to_send_goes_out_before_the_events_are_dispatched() {
    assert_eq!(dispatched_when_replied(false).await, 0);
}
