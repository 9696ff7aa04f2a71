//! GenStage §2.7, producer-consumers: a PC pulls from upstream only while downstream has demand
//! and stops asking when its consumer stops asking; its output beyond downstream demand waits in
//! its own buffer, which a downstream ask drains before more upstream events are processed; with
//! no consumers nothing is processed (`counters().inbox`); upstream cancels and infos queued
//! behind events run in order; fan-out may emit more, fewer or zero events, and emitting zero
//! still asks upstream.

mod support;

use stage::{Cancel, CancelMode, Reason, SubscribeOptions};
use support::{
    Ask, Msg, Peer, Seen, Sink, Source, Through, ask_settled, demands, events, manual_sink, settle,
    within,
};

/// The log without subscription entries.
fn without_subscribes(log: Vec<Seen<u64>>) -> Vec<Seen<u64>> {
    log.into_iter()
        .filter(|s| !matches!(s, Seen::Subscribed(..)))
        .collect()
}

fn up10() -> SubscribeOptions {
    SubscribeOptions::new().max_demand(10).min_demand(5)
}

#[tokio::test]
async fn rule1_3_pulls_from_upstream_only_while_downstream_has_demand() {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, up10())
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    settle().await;

    // Downstream has asked nothing: the first upstream message waits, unprocessed and unasked-for.
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), vec![10]);
    let counters = pc.counters().await.unwrap();
    assert_eq!(counters.inbox, 1);
    assert_eq!(counters.events_in, 0);
    assert_eq!(without_subscribes(pc.call(Ask::Log).await.unwrap()), vec![]);

    ask_settled(&c, id, 3, &pc).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![0, 1, 2]);
    let counters = pc.counters().await.unwrap();
    assert_eq!(
        counters.events_in, 10,
        "the popped message is processed whole"
    );
    assert!(counters.inbox > 0, "the next upstream messages wait again");
}

#[tokio::test]
async fn rule3_stops_asking_upstream_when_the_consumer_stops_asking() {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, up10())
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    for _ in 0..4 {
        ask_settled(&c, id, 7, &pc).await;
    }
    let got = events(&c.call(Ask::Log).await.unwrap());
    assert_eq!(got, (0..28).collect::<Vec<_>>());

    // The consumer has stopped asking: upstream demand stops growing.
    let asked: usize = demands(&p.call(Ask::Log).await.unwrap()).iter().sum();
    for _ in 0..5 {
        settle().await;
    }
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    let counters = pc.counters().await.unwrap();
    let credit: usize = counters.producers.iter().map(|&(_, n)| n).sum();
    assert!(
        credit <= 10,
        "outstanding upstream credit {credit} > max_demand"
    );
    // Everything asked upstream was either handled by the PC or is still owed / queued.
    assert_eq!(asked as u64, counters.events_in + credit as u64);
    assert!(
        counters.events_in <= 28 + 10,
        "the PC processed {} events for 28 asked downstream",
        counters.events_in
    );
}

#[tokio::test]
async fn rule2_4_output_beyond_downstream_demand_is_buffered_and_drained_before_more_is_pulled() {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let pc = stage::producer_consumer(Through::doubler())
        .subscribe_to(&p, up10())
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    settle().await;

    ask_settled(&c, id, 3, &pc).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![0, 0, 1]);
    let counters = pc.counters().await.unwrap();
    assert_eq!(counters.events_in, 10);
    assert_eq!(counters.buffered, 17, "20 emitted, 3 delivered");
    let before = counters.events_in;

    // Downstream asks for what is buffered: the PC drains its buffer and pulls nothing new.
    ask_settled(&c, id, 17, &pc).await;
    let got = events(&c.call(Ask::Log).await.unwrap());
    assert_eq!(got.len(), 17);
    assert_eq!(got[..3], [1, 2, 2]);
    assert_eq!(got[16], 9);
    let counters = pc.counters().await.unwrap();
    assert_eq!(counters.buffered, 0);
    assert_eq!(
        counters.events_in, before,
        "no queued upstream event processed"
    );

    // One more: the PC resumes processing what it had queued, in order.
    ask_settled(&c, id, 1, &pc).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![10]);
    assert!(pc.counters().await.unwrap().events_in > before);
}

#[tokio::test]
async fn rule5_with_no_consumers_nothing_is_processed() {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, up10())
        .start()
        .unwrap();
    for _ in 0..3 {
        settle().await;
    }
    let counters = pc.counters().await.unwrap();
    assert_eq!(counters.inbox, 1);
    assert_eq!((counters.events_in, counters.events_out), (0, 0));
    assert_eq!(without_subscribes(pc.call(Ask::Log).await.unwrap()), vec![]);
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), vec![10]);

    // A consumer arrives: processing starts, in order.
    let c = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new().max_demand(4))
        .start()
        .unwrap();
    settle().await;
    let got = events(&c.call(Ask::Log).await.unwrap());
    assert!(got.len() >= 10, "got {got:?}");
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn rule7_queued_cancels_and_infos_run_in_order_behind_events() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, up10().cancel(CancelMode::Temporary))
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    settle().await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.counters().await.unwrap();
    pc.counters().await.unwrap();
    pc.info(Msg::Tag("x")).unwrap();
    p.stop(Reason::Shutdown).unwrap();
    assert_eq!(within(p.join()).await, Reason::Shutdown);
    settle().await;

    // No downstream demand: the events, the info and the upstream's Down all wait.
    assert_eq!(without_subscribes(pc.call(Ask::Log).await.unwrap()), vec![]);
    assert_eq!(pc.counters().await.unwrap().inbox, 3);

    ask_settled(&c, id, 10, &pc).await;
    let log = without_subscribes(pc.call(Ask::Log).await.unwrap());
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        matches!(&log[0], Seen::Events(_, e) if *e == vec![1, 2, 3]),
        "{log:?}"
    );
    assert_eq!(log[1], Seen::Info(Msg::Tag("x")));
    assert!(
        matches!(
            &log[2],
            Seen::Cancelled(Peer::Producer, Cancel::Down(Reason::Shutdown), _)
        ),
        "{log:?}"
    );
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3]);
    assert!(pc.is_running(), "a temporary upstream subscription");
}

#[tokio::test]
async fn rule9_fan_out_emits_more_events_than_it_receives() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::doubler())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    settle().await;
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        vec![1, 1, 2, 2, 3, 3]
    );
    let counters = pc.counters().await.unwrap();
    assert_eq!((counters.events_in, counters.events_out), (3, 6));
}

#[tokio::test]
async fn rule9_emitting_zero_events_still_asks_upstream() {
    let p = stage::producer(Source {
        queue: (0..40).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let pc = stage::producer_consumer(Through::discarder())
        .subscribe_to(&p, up10())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new())
        .start()
        .unwrap();
    for _ in 0..4 {
        settle().await;
    }
    let seen = events(&pc.call(Ask::Log).await.unwrap());
    assert_eq!(
        seen,
        (0..40).collect::<Vec<_>>(),
        "the PC kept pulling while discarding"
    );
    let asked = demands(&p.call(Ask::Log).await.unwrap());
    assert!(asked.iter().sum::<usize>() >= 40, "{asked:?}");
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![]);
    assert_eq!(pc.counters().await.unwrap().events_out, 0);
}

/// A silent producer and a forwarding producer-consumer subscribed to it (`max_demand` 10).
fn silent_into_forwarder() -> (
    stage::StageHandle<support::Source>,
    stage::StageHandle<support::Through>,
) {
    let p = stage::producer(support::Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(support::Through::forwarder())
        .subscribe_to(&p, stage::SubscribeOptions::new().max_demand(10))
        .start()
        .unwrap();
    (p, pc)
}

/// Asserts that `pc` ends within 30 s (of the paused clock).
async fn ends_within_30s(pc: &stage::StageHandle<support::Through>, what: &str) {
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), pc.join()).await;
    assert!(ended.is_ok(), "{what}: {:?}", pc.counters().await);
}

/// A producer-consumer without consumers reads its inbox no more, so a shutdown does not wait for
/// the producer's confirmation queued there behind events: the stage stops, giving the events
/// back.
#[tokio::test]
async fn shutdown_of_a_producer_consumer_with_events_waiting_and_no_consumer_ends() {
    tokio::time::pause();
    let (p, pc) = silent_into_forwarder();
    support::settle().await;
    support::emit_settled(&p, vec![1, 2, 3]).await;
    assert_eq!(pc.counters().await.unwrap().inbox, 1, "the events wait");
    pc.shutdown().unwrap();
    ends_within_30s(&pc, "shutdown never completed").await;
}

/// A shutting-down producer-consumer whose last consumer leaves while events wait in its inbox has
/// nobody left to dispatch to: it stops.
#[tokio::test]
async fn shutdown_of_a_producer_consumer_whose_consumer_leaves_ends() {
    tokio::time::pause();
    let (p, pc) = silent_into_forwarder();
    let (c, _id) = support::manual(&pc, stage::SubscribeOptions::new()).await;
    support::settle().await;
    support::emit_settled(&p, vec![1, 2, 3]).await;
    pc.shutdown().unwrap();
    support::settle().await;
    c.shutdown().unwrap();
    assert_eq!(support::within(c.join()).await, stage::Reason::Shutdown);
    support::settle().await;
    ends_within_30s(&pc, "shutdown never completed").await;
}

/// A producer-consumer whose producer ended normally while events waited in its inbox (the end
/// waiting behind them) stops once its consumers have all left, instead of living on with neither
/// producer nor consumer.
#[tokio::test]
async fn a_producer_consumer_whose_producer_ended_stops_once_its_consumers_leave() {
    tokio::time::pause();
    let (p, pc) = silent_into_forwarder();
    let (c, _id) = support::manual(&pc, stage::SubscribeOptions::new()).await;
    support::settle().await;
    support::emit_settled(&p, vec![1, 2, 3]).await;
    p.stop(stage::Reason::Normal).unwrap();
    p.join().await;
    support::settle().await;
    c.stop(stage::Reason::Normal).unwrap();
    c.join().await;
    support::settle().await;
    ends_within_30s(&pc, "never stopped").await;
}
