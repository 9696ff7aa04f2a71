//! GenStage §2.9, the BroadcastDispatcher, through running stages: every consumer gets every
//! event, upstream demand follows the least demand across consumers (a slow consumer holds a
//! fast one back, nothing is requested twice), a new subscriber blocks broadcasting until it
//! asks, selectors filter and give their unused credit back, cancelling the slowest consumer
//! releases demand, and info is delivered at once. Also the crate's documented differences:
//! refused options (a selector over another type, a `partition`) are `SubscribeError::Option`
//! and stop nobody, a consumer may subscribe twice, buffered events are broadcast before newer
//! ones (the fix of rule 10), and the Accumulate-then-Forward pattern (§2.6 rule 5).

mod support;

use stage::{
    BroadcastDispatcher, Cancel, CancelMode, DemandMode, Reason, StartError, SubscribeError,
    SubscribeOptions, SubscriptionId,
};
use support::{
    Ask, ConsumerHandle, Msg, Peer, ProducerHandle, Seen, Sink, Source, ask_settled, batches,
    demand_log, demands, emit_settled, idle, manual, range, received, settle, within,
};

fn broadcast(source: Source) -> ProducerHandle<Source> {
    stage::producer(source)
        .dispatcher(BroadcastDispatcher::new())
        .start()
        .unwrap()
}

/// An automatic consumer subscribed at run time; returns once its first ask has been handled.
async fn automatic(
    p: &ProducerHandle<Source>,
    opts: SubscribeOptions,
) -> (ConsumerHandle<Sink>, SubscriptionId) {
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = within(c.subscribe(p, opts)).await.unwrap();
    p.counters().await.unwrap();
    settle().await;
    (c, id)
}

fn max(n: usize) -> SubscribeOptions {
    SubscribeOptions::new().max_demand(n)
}

/// The outstanding demand the producer holds for `id`.
async fn outstanding(p: &ProducerHandle<Source>, id: SubscriptionId) -> Option<usize> {
    let counters = p.counters().await.unwrap();
    counters
        .consumers
        .iter()
        .find(|(c, _)| *c == id)
        .map(|&(_, d)| d)
}

fn rejections(log: &[Seen<u64>]) -> usize {
    log.iter()
        .filter(|s| {
            matches!(
                s,
                Seen::Cancelled(Peer::Producer, Cancel::Cancelled(Reason::Rejected(_)), _,)
            )
        })
        .count()
}

#[tokio::test]
async fn rule3_4_every_consumer_gets_every_event_and_the_rest_is_buffered() {
    let p = broadcast(Source::silent());
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 3, &p).await;
    ask_settled(&b, b_id, 3, &p).await;
    emit_settled(&p, vec![1, 2, 3, 4, 5]).await;
    assert_eq!(batches(&a).await, vec![vec![1, 2, 3]]);
    assert_eq!(batches(&b).await, vec![vec![1, 2, 3]]);
    assert_eq!(p.buffered().await.unwrap(), 2, "[4, 5] wait for demand");
    let counters = p.counters().await.unwrap();
    assert_eq!(
        counters.events_out, 6,
        "3 events sent to each of 2 consumers"
    );

    ask_settled(&a, a_id, 5, &p).await;
    assert_eq!(batches(&a).await, Vec::<Vec<u64>>::new(), "b has not asked");
    ask_settled(&b, b_id, 2, &p).await;
    assert_eq!(batches(&a).await, vec![vec![4, 5]]);
    assert_eq!(batches(&b).await, vec![vec![4, 5]]);
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn automatic_consumers_each_receive_the_whole_stream_in_order() {
    let p = broadcast(Source::silent());
    let a = stage::consumer(Sink::new())
        .subscribe_to(&p, max(10))
        .start()
        .unwrap();
    let b = stage::consumer(Sink::new())
        .subscribe_to(&p, max(4).min_demand(1))
        .start()
        .unwrap();
    settle().await;
    emit_settled(&p, range(0..25)).await;
    emit_settled(&p, range(25..40)).await;
    idle(&p).await;
    assert_eq!(received(&a).await, range(0..40));
    assert_eq!(received(&b).await, range(0..40));
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule1_upstream_demand_follows_the_least_demand() {
    let p = broadcast(Source::silent());
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 10, &p).await;
    assert_eq!(demand_log(&p).await, Vec::<usize>::new(), "b asked nothing");
    ask_settled(&b, b_id, 4, &p).await;
    ask_settled(&b, b_id, 4, &p).await;
    ask_settled(&b, b_id, 4, &p).await;
    assert_eq!(
        demand_log(&p).await,
        vec![4, 4, 2],
        "a only asked for 10, so the last 2 of b's are not requested"
    );
    assert_eq!(outstanding(&p, a_id).await, Some(10));
    assert_eq!(outstanding(&p, b_id).await, Some(12));
}

#[tokio::test]
async fn rule1_a_slow_consumer_holds_a_fast_one_back() {
    let p = broadcast(Source::counter(0));
    let (slow, slow_id) = manual(&p, SubscribeOptions::new()).await;
    let (fast, fast_id) = automatic(&p, max(10)).await;
    idle(&p).await;
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    assert_eq!(received(&fast).await, Vec::<u64>::new());
    assert_eq!(outstanding(&p, fast_id).await, Some(10));
    assert_eq!(outstanding(&p, slow_id).await, Some(0));

    ask_settled(&slow, slow_id, 3, &p).await;
    idle(&p).await;
    assert_eq!(demand_log(&p).await, vec![3]);
    assert_eq!(received(&slow).await, vec![0, 1, 2]);
    assert_eq!(
        received(&fast).await,
        vec![0, 1, 2],
        "the fast consumer gets no more than the slow one asked for"
    );

    ask_settled(&slow, slow_id, 10, &p).await;
    idle(&p).await;
    let asked: usize = demand_log(&p).await.iter().sum();
    assert_eq!(asked, 10);
    assert_eq!(received(&slow).await, range(3..13));
    assert_eq!(received(&fast).await, range(3..13));
    assert_eq!(outstanding(&p, slow_id).await, Some(0));
    assert!(
        outstanding(&p, fast_id).await.unwrap() > 0,
        "the fast consumer still has demand but gets nothing"
    );
}

#[tokio::test]
async fn rule1_nothing_is_requested_twice() {
    let p = broadcast(Source::silent());
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 5, &p).await;
    assert_eq!(demand_log(&p).await, vec![5]);
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&b, b_id, 5, &p).await;
    assert_eq!(
        demand_log(&p).await,
        Vec::<usize>::new(),
        "the 5 already requested cover b too"
    );
    emit_settled(&p, vec![1, 2, 3, 4, 5]).await;
    assert_eq!(received(&a).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(received(&b).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn rule2_a_new_subscriber_blocks_broadcast_until_it_asks() {
    let p = broadcast(Source::silent());
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 5, &p).await;
    assert_eq!(demand_log(&p).await, vec![5]);
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    emit_settled(&p, vec![1, 2, 3]).await;
    assert_eq!(received(&a).await, Vec::<u64>::new(), "b has not asked yet");
    assert_eq!(p.buffered().await.unwrap(), 3);
    assert_eq!(outstanding(&p, a_id).await, Some(5), "a's demand is kept");
    assert_eq!(outstanding(&p, b_id).await, Some(0));

    ask_settled(&b, b_id, 2, &p).await;
    assert_eq!(received(&a).await, vec![1, 2]);
    assert_eq!(received(&b).await, vec![1, 2]);
    assert_eq!(p.buffered().await.unwrap(), 1);
    ask_settled(&b, b_id, 5, &p).await;
    assert_eq!(received(&a).await, vec![3]);
    assert_eq!(received(&b).await, vec![3]);
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule2_a_late_subscriber_gets_only_what_is_broadcast_after_it_asks() {
    let p = broadcast(Source::silent());
    let (a, _) = automatic(&p, max(10)).await;
    emit_settled(&p, range(0..10)).await;
    let (b, _) = automatic(&p, max(10)).await;
    emit_settled(&p, range(10..20)).await;
    idle(&p).await;
    assert_eq!(received(&a).await, range(0..20));
    assert_eq!(
        received(&b).await,
        range(10..20),
        "without accumulate, what went out before b subscribed is not replayed"
    );
}

#[tokio::test]
async fn accumulate_then_forward_every_consumer_sees_the_first_events() {
    let p = stage::producer(Source {
        queue: (0..30).collect(),
        ..Source::default()
    })
    .demand(DemandMode::Accumulate)
    .dispatcher(BroadcastDispatcher::new())
    .start()
    .unwrap();
    let a = stage::consumer(Sink::new())
        .subscribe_to(&p, max(10))
        .start()
        .unwrap();
    settle().await;
    let (b, _) = automatic(&p, max(10)).await;
    let (c, _) = automatic(&p, max(6)).await;
    idle(&p).await;
    assert_eq!(p.counters().await.unwrap().consumers.len(), 3);
    assert_eq!(demand_log(&p).await, Vec::<usize>::new(), "accumulating");
    for sink in [&a, &b, &c] {
        assert_eq!(received(sink).await, Vec::<u64>::new());
    }

    p.set_demand(DemandMode::Forward).unwrap();
    idle(&p).await;
    for sink in [&a, &b, &c] {
        assert_eq!(received(sink).await, range(0..30));
    }
}

#[tokio::test]
async fn rule5_selectors_filter_and_give_credit_back_spec_example() {
    // The spec's example with numbers for strings: "pre" is "12xx", "pref" is "123x".
    let p = broadcast(Source::silent());
    let pre = SubscribeOptions::new().selector(|e: &u64| e / 100 == 12);
    let pref = SubscribeOptions::new().selector(|e: &u64| e / 10 == 123);
    let (a, a_id) = manual(&p, pre).await;
    let (b, b_id) = manual(&p, pref).await;
    ask_settled(&a, a_id, 4, &p).await;
    ask_settled(&b, b_id, 4, &p).await;
    assert_eq!(demand_log(&p).await, vec![4]);
    emit_settled(&p, vec![1234, 1235, 1200, 9900]).await;
    assert_eq!(received(&a).await, vec![1234, 1235, 1200]);
    assert_eq!(received(&b).await, vec![1234, 1235]);
    // a got 1 back and b 2: both can take 1 more, so 1 more is requested.
    assert_eq!(demand_log(&p).await, vec![1]);
    assert_eq!(outstanding(&p, a_id).await, Some(1));
    assert_eq!(outstanding(&p, b_id).await, Some(2));

    emit_settled(&p, vec![1239, 5]).await;
    assert_eq!(received(&a).await, vec![1239]);
    assert_eq!(received(&b).await, vec![1239]);
    assert_eq!(p.buffered().await.unwrap(), 1);
}

#[tokio::test]
async fn rule5_9_a_consumer_whose_selector_keeps_nothing_gets_no_message() {
    let p = broadcast(Source::silent());
    let none = SubscribeOptions::new().selector(|_: &u64| false);
    let (a, a_id) = manual(&p, none).await;
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 2, &p).await;
    ask_settled(&b, b_id, 2, &p).await;
    emit_settled(&p, vec![1, 2]).await;
    let log = a.call(Ask::Log).await.unwrap();
    assert!(
        !log.iter().any(|s| matches!(s, Seen::Events(..))),
        "no (empty) event message: {log:?}"
    );
    assert_eq!(received(&b).await, vec![1, 2]);
    assert_eq!(outstanding(&p, a_id).await, Some(2), "credit given back");
}

#[tokio::test]
async fn rule5_a_selective_consumer_does_not_stall_the_others() {
    // Without the credit given back, the picky consumer would take [0] out of the first 10
    // and never ask again, and the fast one would stall at 10.
    let p = broadcast(Source::silent());
    let tens = max(10).selector(|e: &u64| e % 10 == 0);
    let (fast, _) = automatic(&p, max(10)).await;
    let (picky, _) = automatic(&p, tens).await;
    emit_settled(&p, range(0..200)).await;
    idle(&p).await;
    assert_eq!(received(&fast).await, range(0..200));
    assert_eq!(
        received(&picky).await,
        (0..200).filter(|e| e % 10 == 0).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_selector_over_another_event_type_is_refused_naming_the_option() {
    let p = broadcast(Source::silent());
    let (ok, ok_id) = manual(&p, SubscribeOptions::new()).await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().selector(|s: &String| s.is_empty());
    match within(c.subscribe(&p, opts)).await {
        Err(SubscribeError::Option(e)) => assert_eq!(e.option, "selector", "{e}"),
        other => panic!("expected a selector error, got {other:?}"),
    }
    settle().await;
    assert!(c.is_running(), "a refused subscription stops nobody");
    assert!(p.is_running());
    assert_eq!(rejections(&c.call(Ask::Log).await.unwrap()), 1);
    assert_eq!(p.counters().await.unwrap().consumers.len(), 1);

    ask_settled(&ok, ok_id, 2, &p).await;
    emit_settled(&p, vec![7, 8]).await;
    assert_eq!(received(&ok).await, vec![7, 8], "the producer still serves");
    // The same consumer can subscribe again with valid options.
    within(c.subscribe(&p, max(5))).await.unwrap();
    ask_settled(&ok, ok_id, 5, &p).await;
    emit_settled(&p, vec![9]).await;
    assert_eq!(received(&c).await, vec![9]);
}

#[tokio::test]
async fn a_partition_option_is_refused_naming_the_option() {
    let p = broadcast(Source::silent());
    let (ok, ok_id) = manual(&p, SubscribeOptions::new()).await;
    let c = stage::consumer(Sink::manual()).start().unwrap();
    match within(c.subscribe(&p, SubscribeOptions::new().partition(0))).await {
        Err(SubscribeError::Option(e)) => assert_eq!(e.option, "partition", "{e}"),
        other => panic!("expected a partition error, got {other:?}"),
    }
    settle().await;
    assert!(c.is_running());
    assert!(p.is_running());
    ask_settled(&ok, ok_id, 1, &p).await;
    emit_settled(&p, vec![1]).await;
    assert_eq!(received(&ok).await, vec![1]);
}

/// Issue 10 changed this: options the producer refuses at `start` used to come back as a
/// `Rejected` cancel once the consumer ran; `start` now refuses them itself.
#[tokio::test]
async fn a_refused_subscription_at_start_is_an_error_from_start() {
    let p = broadcast(Source::silent());
    let bad = SubscribeOptions::new()
        .cancel(CancelMode::Permanent)
        .selector(|_: &i32| true);
    let started = stage::consumer(Sink::new()).subscribe_to(&p, bad).start();
    match started {
        Err(StartError::Refused(SubscribeError::Option(e))) => assert_eq!(e.option, "selector"),
        other => panic!("expected a refused selector, got {other:?}"),
    }
    assert!(p.is_running());
    assert!(p.counters().await.unwrap().consumers.is_empty());
}

#[tokio::test]
async fn rule6_cancelling_the_slowest_consumer_releases_demand() {
    let p = broadcast(Source::counter(0));
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    let (b, b_id) = manual(&p, SubscribeOptions::new().cancel(CancelMode::Temporary)).await;
    ask_settled(&a, a_id, 10, &p).await;
    ask_settled(&b, b_id, 2, &p).await;
    assert_eq!(demand_log(&p).await, vec![2]);
    assert_eq!(received(&a).await, vec![0, 1]);
    assert_eq!(received(&b).await, vec![0, 1]);

    b.cancel(b_id, Reason::Normal).unwrap();
    b.counters().await.unwrap();
    p.counters().await.unwrap();
    settle().await;
    let log = p.call(Ask::Log).await.unwrap();
    assert_eq!(demands(&log), vec![8], "a's 8 left are now requested");
    assert!(log.iter().any(|s| matches!(
        s,
        Seen::Cancelled(Peer::Consumer, Cancel::Cancelled(_), id) if *id == b_id
    )));
    assert_eq!(received(&a).await, range(2..10));
    assert_eq!(received(&b).await, Vec::<u64>::new());
    assert!(b.is_running(), "temporary");
}

#[tokio::test]
async fn rule6_a_slow_consumer_that_exits_releases_demand() {
    let p = broadcast(Source::counter(0));
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 6, &p).await;
    ask_settled(&b, b_id, 1, &p).await;
    assert_eq!(received(&a).await, vec![0]);
    b.stop(Reason::Shutdown).unwrap();
    assert_eq!(within(b.join()).await, Reason::Shutdown);
    p.counters().await.unwrap();
    settle().await;
    assert_eq!(demand_log(&p).await, vec![1, 5]);
    assert_eq!(received(&a).await, range(1..6));
    assert_eq!(
        p.counters().await.unwrap().consumers,
        vec![(a_id, 0)],
        "b is gone"
    );
}

#[tokio::test]
async fn rule6_cancelling_the_last_consumer_keeps_what_was_requested() {
    let p = broadcast(Source::silent());
    let (a, a_id) = manual(&p, SubscribeOptions::new().cancel(CancelMode::Temporary)).await;
    ask_settled(&a, a_id, 10, &p).await;
    assert_eq!(demand_log(&p).await, vec![10]);
    a.cancel(a_id, Reason::Normal).unwrap();
    a.counters().await.unwrap();
    p.counters().await.unwrap();
    assert!(p.counters().await.unwrap().consumers.is_empty());

    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&b, b_id, 10, &p).await;
    assert_eq!(
        demand_log(&p).await,
        Vec::<usize>::new(),
        "the 10 requested for a are still coming"
    );
    emit_settled(&p, range(0..10)).await;
    assert_eq!(received(&b).await, range(0..10));
    assert_eq!(received(&a).await, Vec::<u64>::new());
}

#[tokio::test]
async fn rule8_info_is_delivered_at_once_when_nothing_is_buffered() {
    let p = broadcast(Source::silent());
    let (_a, _) = manual(&p, SubscribeOptions::new()).await;
    p.info(Msg::Tag("now")).unwrap();
    let log = p.call(Ask::Log).await.unwrap();
    assert!(log.contains(&Seen::Info(Msg::Tag("now"))), "{log:?}");
}

#[tokio::test]
async fn rule10_fixed_buffered_events_are_broadcast_before_newer_ones() {
    // The probe of §2.9 rule 10: upstream leaves 9 buffered and sends 10 before it.
    let p = broadcast(Source::silent());
    let (c1, _) = automatic(&p, max(10).min_demand(5)).await;
    emit_settled(&p, vec![1, 2, 3]).await;
    let (c2, _) = automatic(&p, max(4).min_demand(0)).await;
    emit_settled(&p, range(4..10)).await;
    emit_settled(&p, vec![10]).await;
    idle(&p).await;
    assert_eq!(p.buffered().await.unwrap(), 0, "nothing is stranded");
    assert_eq!(received(&c1).await, range(1..11));
    assert_eq!(received(&c2).await, range(4..11));
}

#[tokio::test]
async fn fifo_events_emitted_while_others_are_buffered_queue_behind_them() {
    let p = broadcast(Source::silent());
    let (a, a_id) = manual(&p, SubscribeOptions::new()).await;
    let (b, b_id) = manual(&p, SubscribeOptions::new()).await;
    ask_settled(&a, a_id, 2, &p).await;
    ask_settled(&b, b_id, 2, &p).await;
    emit_settled(&p, vec![1, 2, 3, 4, 5]).await;
    emit_settled(&p, vec![6]).await;
    assert_eq!(p.buffered().await.unwrap(), 4);
    ask_settled(&a, a_id, 10, &p).await;
    ask_settled(&b, b_id, 2, &p).await;
    emit_settled(&p, vec![7]).await;
    ask_settled(&b, b_id, 10, &p).await;
    assert_eq!(
        batches(&a).await,
        vec![vec![1, 2], vec![3, 4], vec![5, 6, 7]]
    );
    assert_eq!(
        batches(&b).await,
        vec![vec![1, 2], vec![3, 4], vec![5, 6, 7]]
    );
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn difference_a_consumer_subscribed_twice_receives_everything_twice() {
    let p = broadcast(Source::silent());
    let c = stage::consumer(Sink::manual()).start().unwrap();
    let first = within(c.subscribe(&p, SubscribeOptions::new()))
        .await
        .unwrap();
    let second = within(c.subscribe(&p, SubscribeOptions::new()))
        .await
        .unwrap();
    assert_ne!(first, second);
    ask_settled(&c, first, 3, &p).await;
    ask_settled(&c, second, 3, &p).await;
    emit_settled(&p, vec![1, 2, 3]).await;
    let log: Vec<_> = c
        .call(Ask::Log)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| matches!(s, Seen::Events(..)))
        .collect();
    assert_eq!(
        log,
        vec![
            Seen::Events(first, vec![1, 2, 3]),
            Seen::Events(second, vec![1, 2, 3])
        ]
    );
}
