//! Accumulated demand: spec §2.6 (rules 1–5) with [`DemandMode::Accumulate`], set at start
//! with `Builder::demand` or at run time with `set_demand`, and the switch back to
//! [`DemandMode::Forward`] that replays the log in order. Also §2.4 rule 2's accumulate branch
//! (an ask takes from the buffer first and logs only the rest).

mod support;

use std::sync::{Arc, Mutex};

use stage::{CancelMode, Cast, Context, DemandMode, Producer, Reason, SubscribeOptions};
use support::{
    Ask, Msg, ProducerHandle, Seen, Sink, Source, batch_sizes, demand_log, events, flow,
    manual_sink,
};

async fn accumulating(source: Source) -> ProducerHandle<Source> {
    stage::producer(source)
        .demand(DemandMode::Accumulate)
        .start()
        .unwrap()
}

#[tokio::test]
async fn accumulating_producer_never_calls_handle_demand_but_records_the_ask() {
    let p = accumulating(Source::counter(0)).await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c
        .subscribe(&p, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    support::settle().await;
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    // The dispatcher was told: the consumer's demand is open.
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 10)]);
    assert!(events(&c.call(Ask::Log).await.unwrap()).is_empty());
}

#[tokio::test]
async fn events_emitted_while_accumulating_are_neither_dispatched_nor_buffered() {
    let p = accumulating(Source::silent()).await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    c.subscribe(&p, SubscribeOptions::new().max_demand(10))
        .await
        .unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.info(Msg::Emit(vec![4])).unwrap();
    support::settle().await;
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.events_out), (0, 0));
    assert!(events(&c.call(Ask::Log).await.unwrap()).is_empty());
}

#[tokio::test]
async fn events_logged_while_accumulating_are_not_subject_to_buffer_size() {
    let p = stage::producer(Source::silent())
        .buffer_size(2)
        .demand(DemandMode::Accumulate)
        .start()
        .unwrap();
    p.cast(Msg::Emit((1..=5).collect())).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (0, 0));

    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    p.set_demand(DemandMode::Forward).unwrap();
    p.counters().await.unwrap();
    assert_eq!(
        c.call(Ask::Log).await.unwrap()[1..],
        [Seen::Events(id, (1..=5).collect())]
    );
    assert_eq!(p.counters().await.unwrap().dropped, 0);
    // The logged ask was replayed after the logged events.
    assert_eq!(demand_log(&p).await, [5]);
}

#[tokio::test]
async fn separate_asks_are_replayed_as_separate_handle_demand_calls() {
    let p = accumulating(Source::silent()).await;
    let opts = SubscribeOptions::new().max_demand(2);
    let c1 = stage::consumer(Sink::new()).start().unwrap();
    let c2 = stage::consumer(Sink::new()).start().unwrap();
    c1.subscribe(&p, opts.clone()).await.unwrap();
    c2.subscribe(&p, opts).await.unwrap();
    p.counters().await.unwrap();
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, [2, 2]);
}

#[tokio::test]
async fn two_asks_from_one_consumer_are_replayed_separately() {
    let p = accumulating(Source::silent()).await;
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 3).unwrap();
    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, [3, 4]);
}

#[tokio::test]
async fn forward_replays_the_log_in_order_events_and_demand_interleaved() {
    let p = accumulating(Source::counter(100)).await;
    let (c, id) = manual_sink(&p).await;
    p.cast(Msg::Emit(vec![1, 2])).unwrap(); // log: events [1, 2]
    p.counters().await.unwrap();
    c.ask(id, 2).unwrap(); // log: demand 2
    flow(&p, &c).await;
    p.cast(Msg::Emit(vec![3, 4])).unwrap(); // log: events [3, 4]
    p.counters().await.unwrap();
    assert!(events(&c.call(Ask::Log).await.unwrap()).is_empty());

    p.set_demand(DemandMode::Forward).unwrap();
    p.counters().await.unwrap();
    // [1, 2] met the open demand of 2; then handle_demand(2) produced [100, 101], which had
    // no demand left and was buffered, and [3, 4] queued behind them.
    assert_eq!(
        c.call(Ask::Log).await.unwrap(),
        [Seen::Events(id, vec![1, 2])]
    );
    assert_eq!(demand_log(&p).await, [2]);
    assert_eq!(p.buffered().await.unwrap(), 4);

    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    assert_eq!(
        c.call(Ask::Log).await.unwrap(),
        [Seen::Events(id, vec![100, 101, 3, 4])]
    );
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
}

#[tokio::test]
async fn ask_while_accumulating_takes_from_the_buffer_first_and_logs_only_the_rest() {
    let p = stage::producer(Source::counter(100)).start().unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    assert_eq!(p.buffered().await.unwrap(), 3);
    p.set_demand(DemandMode::Accumulate).unwrap();

    let (c, id) = manual_sink(&p).await;
    c.ask(id, 5).unwrap();
    flow(&p, &c).await;
    // Buffered events flow even while accumulating.
    assert_eq!(
        c.call(Ask::Log).await.unwrap()[1..],
        [Seen::Events(id, vec![1, 2, 3])]
    );
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());

    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, [2]);
    c.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [100, 101]);
}

#[tokio::test]
async fn ask_fully_met_by_the_buffer_while_accumulating_logs_nothing() {
    let p = stage::producer(Source::counter(100)).start().unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.set_demand(DemandMode::Accumulate).unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 2).unwrap();
    flow(&p, &c).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [1, 2]);
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    assert_eq!(p.buffered().await.unwrap(), 1);
}

/// A producer that stops in its first `handle_demand`, recording demands outside the stage.
struct StopOnDemand {
    demands: Arc<Mutex<Vec<usize>>>,
}

impl Producer for StopOnDemand {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<u64> {
        self.demands.lock().unwrap().push(demand);
        ctx.stop(Reason::error("stopped during replay"));
        Vec::new()
    }
}

impl Cast<Msg<u64>> for StopOnDemand {
    async fn handle_cast(&mut self, msg: Msg<u64>, ctx: &mut Context<Self>) {
        if let Msg::Emit(events) = msg {
            ctx.emit(events);
        }
    }
}

#[tokio::test]
async fn replay_stops_when_a_handler_stops_the_producer() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = stage::producer(StopOnDemand {
        demands: Arc::clone(&seen),
    })
    .demand(DemandMode::Accumulate)
    .start()
    .unwrap();
    let opts = SubscribeOptions::new()
        .max_demand(3)
        .cancel(CancelMode::Temporary);
    let c1 = stage::consumer(Sink::new()).start().unwrap();
    let c2 = stage::consumer(Sink::new()).start().unwrap();
    c1.subscribe(&p, opts.clone()).await.unwrap();
    c2.subscribe(&p, opts).await.unwrap();
    p.cast(Msg::Emit(vec![9])).unwrap();
    p.counters().await.unwrap(); // log: demand 3, demand 3, events [9]

    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(p.join().await, Reason::error("stopped during replay"));
    assert_eq!(
        *seen.lock().unwrap(),
        [3],
        "the second demand was not replayed"
    );
    for c in [&c1, &c2] {
        let log = c.call(Ask::Log).await.unwrap();
        assert!(
            events(&log).is_empty(),
            "logged events were not dispatched: {log:?}"
        );
    }
}

#[tokio::test]
async fn accumulate_while_accumulating_keeps_the_existing_log() {
    let p = accumulating(Source::silent()).await;
    let c1 = stage::consumer(Sink::new()).start().unwrap();
    c1.subscribe(&p, SubscribeOptions::new().max_demand(2))
        .await
        .unwrap();
    p.set_demand(DemandMode::Accumulate).unwrap();
    let c2 = stage::consumer(Sink::new()).start().unwrap();
    c2.subscribe(&p, SubscribeOptions::new().max_demand(3))
        .await
        .unwrap();
    p.set_demand(DemandMode::Accumulate).unwrap();
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, [2, 3]);
}

#[tokio::test]
async fn forward_while_forwarding_is_a_no_op() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    c.subscribe(&p, SubscribeOptions::new().max_demand(4))
        .await
        .unwrap();
    assert_eq!(demand_log(&p).await, [4]);
    p.set_demand(DemandMode::Forward).unwrap();
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    // Still forwarding: new events and asks flow as usual.
    p.cast(Msg::Emit(vec![1, 2, 3, 4])).unwrap();
    p.counters().await.unwrap();
    c.counters().await.unwrap();
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [1, 2, 3, 4]);
    // Two batches of max - min = 2, each refilling with 2.
    assert_eq!(demand_log(&p).await, [2, 2]);
}

#[tokio::test]
async fn switching_to_forward_twice_replays_the_log_once() {
    let p = accumulating(Source::silent()).await;
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    p.set_demand(DemandMode::Forward).unwrap();
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, [4]);
    p.set_demand(DemandMode::Forward).unwrap();
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
}

#[tokio::test]
async fn accumulate_can_be_switched_on_at_run_time() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.set_demand(DemandMode::Accumulate).unwrap();
    let (c, id) = manual_sink(&p).await;
    c.ask(id, 4).unwrap();
    flow(&p, &c).await;
    p.cast(Msg::Emit(vec![1])).unwrap();
    p.counters().await.unwrap();
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    assert!(events(&c.call(Ask::Log).await.unwrap()).is_empty());
    p.set_demand(DemandMode::Forward).unwrap();
    p.counters().await.unwrap();
    assert_eq!(demand_log(&p).await, [4]);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), [1]);
}

#[tokio::test]
async fn accumulate_then_forward_lets_every_consumer_subscribe_before_anything_flows() {
    let p = accumulating(Source::counter(0)).await;
    let (c1, id1) = manual_sink(&p).await;
    let (c2, id2) = manual_sink(&p).await;
    c1.ask(id1, 5).unwrap();
    c2.ask(id2, 5).unwrap();
    flow(&p, &c1).await;
    flow(&p, &c2).await;
    let mut expected = vec![(id1, 5), (id2, 5)];
    expected.sort();
    assert_eq!(p.counters().await.unwrap().consumers, expected);
    assert!(events(&c1.call(Ask::Log).await.unwrap()).is_empty());
    assert!(events(&c2.call(Ask::Log).await.unwrap()).is_empty());

    p.set_demand(DemandMode::Forward).unwrap();
    p.counters().await.unwrap();
    // One handle_demand(5) per logged ask; each consumer gets one full batch.
    assert_eq!(demand_log(&p).await, [5, 5]);
    let l1 = c1.call(Ask::Log).await.unwrap();
    let l2 = c2.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&l1), [5]);
    assert_eq!(batch_sizes(&l2), [5]);
    let mut all = [events(&l1), events(&l2)].concat();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

/// A producer switched from accumulating to forwarding while it shuts down does not replay the
/// logged demand into handle_demand: it produces nothing more.
#[tokio::test]
async fn a_shutting_down_producer_does_not_replay_demand_into_handle_demand() {
    support::within(async {
        let p = stage::producer(support::Source::counter(0))
            .demand(stage::DemandMode::Accumulate)
            .start()
            .unwrap();
        let opts = stage::SubscribeOptions::new().cancel(stage::CancelMode::Temporary);
        let (c, id) = support::manual(&p, opts).await;
        support::ask_settled(&c, id, 5, &p).await;
        assert!(support::demand_log(&p).await.is_empty(), "accumulated");
        p.shutdown().unwrap();
        p.set_demand(stage::DemandMode::Forward).unwrap();
        p.join().await;
        let got = support::received(&c).await;
        assert!(
            got.is_empty(),
            "handle_demand called during shutdown produced {got:?}"
        );
    })
    .await;
}
