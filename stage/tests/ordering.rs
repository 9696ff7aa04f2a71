//! GenStage §2.13, ordering guarantees: one producer to one consumer keeps emission order
//! (through the buffer too, §2.5 rule 6 fixed); several consumers of a DemandDispatcher each see
//! an increasing subsequence, nothing lost or duplicated; several producers into one consumer
//! keep each producer's order; a call's reply is sent after the events returned with it are
//! dispatched (§2.4 rule 6), while a reply sent early with `ReplyTo::send` goes first.

mod support;

use std::sync::{Arc, Mutex};

use futures::FutureExt;
use stage::{
    Call, Context, Contract, DemandDispatcher, Dispatcher, DispatcherState, Outbox, Producer,
    ReplyTo, SubscribeError, SubscribeOptions, SubscriptionId,
};
use support::{Ask, Msg, Seen, Sink, Source, events, settle, within};
use tokio::sync::oneshot;

fn increasing(xs: &[u64]) -> bool {
    xs.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn rule1_one_producer_one_consumer_keeps_emission_order_through_the_buffer() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(4).min_demand(1))
        .start()
        .unwrap();
    settle().await;
    p.cast(Msg::Emit((1..=3).collect())).unwrap();
    p.cast(Msg::Emit((4..=10).collect())).unwrap();
    p.cast(Msg::Emit(vec![11])).unwrap();
    p.cast(Msg::Emit((12..=30).collect())).unwrap();
    for _ in 0..4 {
        settle().await;
    }
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        (1..=30).collect::<Vec<_>>()
    );
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule1_a_counting_producer_arrives_in_order_in_batches_within_demand() {
    let p = stage::producer(Source {
        queue: (0..500).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(7).min_demand(2))
        .start()
        .unwrap();
    for _ in 0..8 {
        settle().await;
    }
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(events(&log), (0..500).collect::<Vec<_>>());
    assert!(
        log.iter()
            .all(|s| !matches!(s, Seen::Events(_, e) if e.len() > 5)),
        "batches never exceed max - min"
    );
}

#[tokio::test]
async fn rule2_several_consumers_each_see_an_increasing_subsequence_and_nothing_is_lost() {
    let p = stage::producer(Source {
        queue: (0..300).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let sinks: Vec<_> = [(10, 5), (4, 1), (25, 0)]
        .into_iter()
        .map(|(max, min)| {
            stage::consumer(Sink::new())
                .subscribe_to(&p, SubscribeOptions::new().max_demand(max).min_demand(min))
                .start()
                .unwrap()
        })
        .collect();
    for _ in 0..8 {
        settle().await;
    }
    let mut all = Vec::new();
    for c in &sinks {
        let got = events(&c.call(Ask::Log).await.unwrap());
        assert!(increasing(&got), "{got:?}");
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn rule3_several_producers_into_one_consumer_keep_each_producers_order() {
    let p1 = stage::producer(Source {
        queue: (0..100).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let p2 = stage::producer(Source {
        queue: (1000..1100).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().max_demand(7).min_demand(3);
    let id1 = within(c.subscribe(&p1, opts.clone())).await.unwrap();
    let id2 = within(c.subscribe(&p2, opts)).await.unwrap();
    for _ in 0..8 {
        settle().await;
    }
    let log = c.call(Ask::Log).await.unwrap();
    let from = |id: SubscriptionId| -> Vec<u64> {
        log.iter()
            .filter_map(|s| match s {
                Seen::Events(i, e) if *i == id => Some(e.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    assert_eq!(from(id1), (0..100).collect::<Vec<_>>());
    assert_eq!(from(id2), (1000..1100).collect::<Vec<_>>());
}

// ----- rule 4: replies versus events -----

type Journal = Arc<Mutex<Vec<&'static str>>>;

/// Journals "replied" when dropped: a reply to a caller that has gone is dropped by the send.
#[derive(Debug)]
struct Token(Journal);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.lock().unwrap().push("replied");
    }
}

/// The default dispatcher, journaling "dispatched" each time it sends a consumer events.
struct Journaled(DemandDispatcher<u64>, Journal);

impl Dispatcher<u64> for Journaled {
    fn contract(&self) -> Contract {
        self.0.contract()
    }
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<u64>,
    ) -> Result<(), SubscribeError> {
        self.0.subscribe(id, opts, out)
    }
    fn cancel(
        &mut self,
        id: SubscriptionId,
        returned: Vec<u64>,
        out: &mut Outbox<u64>,
    ) -> Vec<u64> {
        self.0.cancel(id, returned, out)
    }
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<u64>) {
        self.0.ask(id, n, out)
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn dispatch(&mut self, events: Vec<u64>, out: &mut Outbox<u64>) -> Vec<u64> {
        let before = out.sends().len();
        let left = self.0.dispatch(events, out);
        for _ in before..out.sends().len() {
            self.1.lock().unwrap().push("dispatched");
        }
        left
    }
    fn hold(&mut self, token: u64) -> bool {
        self.0.hold(token)
    }
    fn state(&self) -> DispatcherState {
        self.0.state()
    }
}

enum Req {
    /// Emit, reply with `Context::reply`, then wait for the gate before returning.
    Deferred(Vec<u64>, Journal, oneshot::Receiver<()>),
    /// Reply at once with `ReplyTo::send`, wait for the gate, then emit.
    Early(Vec<u64>, Journal, oneshot::Receiver<()>),
}

#[derive(Debug)]
struct Replier;

impl Producer for Replier {
    type Out = u64;
}

impl Call<Req> for Replier {
    type Reply = Token;

    async fn handle_call(&mut self, req: Req, reply: ReplyTo<Token>, ctx: &mut Context<Self>) {
        match req {
            Req::Deferred(events, journal, gate) => {
                ctx.emit(events);
                ctx.reply(reply, Token(journal));
                let _ = gate.await;
            }
            Req::Early(events, journal, gate) => {
                reply.send(Token(journal));
                let _ = gate.await;
                ctx.emit(events);
            }
        }
    }
}

#[tokio::test]
async fn rule4_a_call_reply_is_sent_after_the_events_returned_with_it_are_dispatched() {
    let journal = Journal::default();
    let p = stage::producer(Replier)
        .dispatcher(Journaled(DemandDispatcher::new(), Arc::clone(&journal)))
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;

    // The caller gives up at once, so the reply token is dropped, and journaled, when sent.
    let (open, gate) = oneshot::channel();
    let _ = p
        .call(Req::Deferred(vec![1, 2, 3], Arc::clone(&journal), gate))
        .now_or_never();
    open.send(()).unwrap();
    p.counters().await.unwrap();
    assert_eq!(*journal.lock().unwrap(), vec!["dispatched", "replied"]);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3]);
}

#[tokio::test]
async fn rule4_the_caller_gets_the_reply_only_once_the_events_are_on_their_way() {
    let journal = Journal::default();
    let p = stage::producer(Replier).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;

    let (open, gate) = oneshot::channel();
    let caller = p.clone();
    let call = tokio::spawn(async move {
        caller
            .call(Req::Deferred(vec![1, 2, 3], journal, gate))
            .await
            .map(drop)
    });
    settle().await;
    assert!(
        !call.is_finished(),
        "Context::reply must wait until the handler's events are dispatched"
    );
    open.send(()).unwrap();
    within(call).await.unwrap().unwrap();
    // Sent after the reply arrived, this call queues behind the events in the consumer.
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3]);
}

#[tokio::test]
async fn rule4_a_reply_sent_early_with_reply_to_send_goes_before_the_events() {
    let journal = Journal::default();
    let p = stage::producer(Replier)
        .dispatcher(Journaled(DemandDispatcher::new(), Arc::clone(&journal)))
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;

    let (open, gate) = oneshot::channel();
    let caller = p.clone();
    let early = Arc::clone(&journal);
    let call = tokio::spawn(async move {
        caller
            .call(Req::Early(vec![4, 5], early, gate))
            .await
            .map(drop)
    });
    within(call).await.unwrap().unwrap();
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        Vec::<u64>::new(),
        "the reply arrived while the handler still held its events"
    );
    open.send(()).unwrap();
    p.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![4, 5]);
    assert_eq!(*journal.lock().unwrap(), vec!["replied", "dispatched"]);
}

/// Batches a producer made for a consumer that has exited in the meantime go back to the
/// producer's buffer with their order kept: the next consumer receives the oldest events first,
/// none dropped.
#[tokio::test]
async fn failed_sends_to_a_gone_consumer_keep_their_order() {
    support::within(async {
        let p = stage::producer(support::Source::counter(0))
            .start()
            .unwrap();
        let c = stage::consumer(support::Sink::manual()).start().unwrap();
        let id = c
            .subscribe(&p, stage::SubscribeOptions::new())
            .await
            .unwrap();
        p.counters().await.unwrap();
        // One burst of the consumer: two asks (the second waits in the edge behind the first)
        // and its stop. It exits (closing its queue) before the producer runs.
        c.ask(id, 3).unwrap();
        c.ask(id, 3).unwrap();
        c.stop(stage::Reason::Normal).unwrap();
        c.join().await;
        support::settle().await;
        let d = stage::consumer(support::Sink::manual()).start().unwrap();
        let id_d = d
            .subscribe(&p, stage::SubscribeOptions::new())
            .await
            .unwrap();
        p.counters().await.unwrap();
        d.ask(id_d, 6).unwrap();
        d.counters().await.unwrap();
        p.counters().await.unwrap();
        support::settle().await;
        let got = support::received(&d).await;
        let counters = p.counters().await.unwrap();
        assert_eq!(counters.dropped, 0);
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5], "events out of order");
    })
    .await;
}
