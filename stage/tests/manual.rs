//! Manual demand: spec §2.3 (rules 1–4), and the manual half of §2.1 rule 1 (a manual
//! subscription records no demand). Also the §1.5 `ask/3` edge case: asking 0 does nothing.
//!
//! Asks go through [`stage::StageHandle::ask`] (from outside the stage, like GenStage's
//! `ask/3` from any process) or [`stage::Context::ask`] (from a handler, via the fixtures'
//! `Msg::AskFor` cast).

mod support;

use stage::{
    Call, Cancel, CancelMode, Consumer, Context, Reason, ReplyTo, SubscribeOptions, SubscriptionId,
    SubscriptionMode,
};
use support::{
    Ask, ConsumerHandle, Msg, Peer, ProducerHandle, Seen, Sink, Source, batch_sizes, demands,
    events, flow,
};

/// A manual consumer subscribed to `source` with `opts`.
async fn manual_pair(
    source: Source,
    opts: SubscribeOptions,
) -> (ProducerHandle<Source>, ConsumerHandle<Sink>, SubscriptionId) {
    let p = stage::producer(source).start().unwrap();
    let c = stage::consumer(Sink::manual()).start().unwrap();
    let id = c.subscribe(&p, opts).await.unwrap();
    (p, c, id)
}

#[tokio::test]
async fn manual_subscription_asks_nothing_not_even_max_demand() {
    let (p, c, id) = manual_pair(Source::counter(0), SubscribeOptions::new().max_demand(10)).await;
    support::settle().await;
    assert_eq!(
        p.call(Ask::Log).await.unwrap(),
        [Seen::Subscribed(Peer::Consumer, id)],
        "no handle_demand"
    );
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 0)]);
    assert_eq!(
        c.call(Ask::Log).await.unwrap(),
        [Seen::Subscribed(Peer::Producer, id)],
        "no events"
    );
    assert_eq!(c.counters().await.unwrap().producers, [(id, 0)]);
}

#[tokio::test]
async fn manual_subscription_leaves_emitted_events_in_the_producer_buffer() {
    let (p, c, _) = manual_pair(Source::silent(), SubscribeOptions::new()).await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    support::settle().await;
    assert_eq!(p.buffered().await.unwrap(), 3);
    assert!(events(&c.call(Ask::Log).await.unwrap()).is_empty());
}

#[tokio::test]
async fn ask_from_the_handle_reaches_handle_demand_with_exactly_that_count() {
    let (p, c, id) = manual_pair(Source::counter(0), SubscribeOptions::new()).await;
    c.ask(id, 7).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [7]);
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(clog[1..], [Seen::Events(id, (0..7).collect())], "{clog:?}");
}

#[tokio::test]
async fn ask_from_a_handler_through_the_context_works_too() {
    let (p, c, id) = manual_pair(Source::counter(0), SubscribeOptions::new()).await;
    c.cast(Msg::AskFor(id, 4)).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [4]);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [0, 1, 2, 3]);
}

#[tokio::test]
async fn each_message_is_one_whole_batch_with_no_splitting() {
    // Automatic mode would cut at max - min = 2.
    let opts = SubscribeOptions::new().max_demand(10).min_demand(8);
    let (p, c, id) = manual_pair(Source::silent(), opts).await;
    c.ask(id, 10).unwrap();
    flow(&p, &c).await;
    p.cast(Msg::Emit((0..10).collect())).unwrap();
    p.cast(Msg::Emit(vec![10])).unwrap();
    flow(&p, &c).await;
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&clog), [10]);
    assert_eq!(events(&clog), (0..10).collect::<Vec<_>>());
    // [10] had no demand left: it waits in the producer's buffer.
    assert_eq!(p.buffered().await.unwrap(), 1);
}

#[tokio::test]
async fn handling_events_sends_no_asks() {
    let opts = SubscribeOptions::new().max_demand(4).min_demand(0);
    let (p, c, id) = manual_pair(Source::silent(), opts).await;
    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [4]);
    p.cast(Msg::Emit(vec![1, 2, 3, 4])).unwrap();
    flow(&p, &c).await;
    p.counters().await.unwrap();
    // Credit is used up and, unlike automatic mode (min 0 would refill), nothing is asked.
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 0)]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 0)]);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [1, 2, 3, 4]);
}

#[tokio::test]
async fn producer_honours_an_ask_beyond_max_demand() {
    let opts = SubscribeOptions::new().max_demand(5);
    let (p, c, id) = manual_pair(Source::counter(0), opts).await;
    c.ask(id, 50).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [50]);
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&clog), [50], "one message, one batch");
    assert_eq!(events(&clog), (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn successive_asks_add_up_as_credit_and_each_reaches_handle_demand() {
    let (p, c, id) = manual_pair(Source::silent(), SubscribeOptions::new()).await;
    c.ask(id, 3).unwrap();
    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [3, 4]);
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 7)]);

    p.cast(Msg::Emit((0..10).collect())).unwrap();
    flow(&p, &c).await;
    assert_eq!(
        batch_sizes(&c.call(Ask::Log).await.unwrap()),
        [7],
        "exactly the credit"
    );
    assert_eq!(p.buffered().await.unwrap(), 3);

    // A later ask is served from the buffer first; handle_demand is not called for it.
    c.ask(id, 2).unwrap();
    flow(&p, &c).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [7, 8]);
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    assert_eq!(p.buffered().await.unwrap(), 1);
}

#[tokio::test]
async fn asking_zero_does_nothing() {
    let (p, c, id) = manual_pair(Source::counter(0), SubscribeOptions::new()).await;
    assert_eq!(c.ask(id, 0), Ok(()));
    c.cast(Msg::AskFor(id, 0)).unwrap();
    flow(&p, &c).await;
    support::settle().await;
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    assert!(events(&c.call(Ask::Log).await.unwrap()).is_empty());
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 0)]);
}

#[tokio::test]
async fn manual_subscription_still_gets_handle_cancel_and_no_cleanup_asks() {
    let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let (p, c, id) = manual_pair(Source::silent(), opts).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    p.call(Ask::Log).await.unwrap();
    c.call(Ask::Log).await.unwrap();

    // The producer cancels the subscription.
    p.cancel(id, Reason::Normal).unwrap();
    p.counters().await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        clog,
        [Seen::Cancelled(
            Peer::Producer,
            Cancel::Cancelled(Reason::Normal),
            id
        )]
    );
    assert!(c.is_running(), "temporary");
    assert!(c.counters().await.unwrap().producers.is_empty());

    // Asking on the cancelled subscription reaches nobody.
    c.ask(id, 3).unwrap();
    flow(&p, &c).await;
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(demands(&plog), Vec::<usize>::new(), "{plog:?}");
}

/// A consumer whose first subscription is manual and every later one automatic.
#[derive(Default)]
struct FirstManual {
    subscribed: usize,
    log: Vec<Seen<u64>>,
}

impl Consumer for FirstManual {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, id: SubscriptionId, _: &mut Context<Self>) {
        self.log.push(Seen::Events(id, events));
    }

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.subscribed += 1;
        if self.subscribed == 1 {
            SubscriptionMode::Manual
        } else {
            SubscriptionMode::Automatic
        }
    }
}

impl Call<Ask> for FirstManual {
    type Reply = Vec<Seen<u64>>;

    async fn handle_call(&mut self, _: Ask, reply: ReplyTo<Vec<Seen<u64>>>, _: &mut Context<Self>) {
        reply.send(std::mem::take(&mut self.log));
    }
}

#[tokio::test]
async fn manual_and_automatic_modes_are_per_subscription() {
    let pm = stage::producer(Source::silent()).start().unwrap();
    let pa = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(FirstManual::default()).start().unwrap();
    let opts = SubscribeOptions::new().max_demand(10).min_demand(5);
    let manual = c.subscribe(&pm, opts.clone()).await.unwrap();
    let auto = c.subscribe(&pa, opts).await.unwrap();
    assert_eq!(
        demands(&pm.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    assert_eq!(demands(&pa.call(Ask::Log).await.unwrap()), [10]);

    c.ask(manual, 10).unwrap();
    c.counters().await.unwrap();
    pm.cast(Msg::Emit((0..10).collect())).unwrap();
    pa.cast(Msg::Emit((100..110).collect())).unwrap();
    pm.counters().await.unwrap();
    pa.counters().await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    let sizes = |id| -> Vec<usize> {
        clog.iter()
            .filter_map(|s| match s {
                Seen::Events(from, e) if *from == id => Some(e.len()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(sizes(manual), [10], "manual: the whole message");
    assert_eq!(sizes(auto), [5, 5], "automatic: cut at max - min");
    assert_eq!(demands(&pm.call(Ask::Log).await.unwrap()), [10]);
    assert_eq!(demands(&pa.call(Ask::Log).await.unwrap()), [5, 5]);
}
