//! GenStage §2.10, the PartitionDispatcher, through running stages: events are routed by hash
//! (the odd/even example with multiples of 3 dropped), only the first `waiting` events are
//! hashed and the rest are buffered, events for a partition without demand are queued and sent
//! in order when it asks (upstream demand is forwarded even then), a cancelled consumer's
//! demand is pending and netted against later asks, and info waits for the partition queues.
//! Also the crate's documented differences: `None` from the hash, an unknown index and a full
//! partition queue drop the event and count it in `counters().dropped`; a missing, unknown or
//! taken partition refuses the subscription (`SubscribeError::Option` naming `partition`, or
//! `Rejected`) and the producer keeps running; a partition's queue outlives its consumer and
//! goes to the next subscriber of that partition. Plus run-time subscribe/cancel and a
//! producer-consumer with a PartitionDispatcher in the middle of a pipeline.

mod support;

use stage::{
    Cancel, CancelMode, Dispatcher, PartitionDispatcher, Reason, StartError, SubscribeError,
    SubscribeOptions,
};
use support::{
    Ask, Msg, Peer, ProducerHandle, Seen, Sink, Source, Through, ask_settled, batches, demand_log,
    emit_settled, idle, manual, range, received, settle, within,
};

/// Even events to partition 0, odd ones to 1.
fn parity(e: &u64) -> Option<usize> {
    Some((e % 2) as usize)
}

/// The spec's example: by parity, and multiples of 3 dropped.
fn parity_no_threes(e: &u64) -> Option<usize> {
    (e % 3 != 0).then_some((e % 2) as usize)
}

fn partitioned(source: Source, dispatcher: impl Dispatcher<u64>) -> ProducerHandle<Source> {
    stage::producer(source)
        .dispatcher(dispatcher)
        .start()
        .unwrap()
}

fn by_parity() -> ProducerHandle<Source> {
    partitioned(
        Source::silent(),
        PartitionDispatcher::with_hash(2, parity).unwrap(),
    )
}

fn part(i: usize) -> SubscribeOptions {
    SubscribeOptions::new().partition(i)
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
async fn rule3_routes_by_hash_spec_example() {
    let p = partitioned(
        Source::silent(),
        PartitionDispatcher::with_hash(2, parity_no_threes).unwrap(),
    );
    let (even, even_id) = manual(&p, part(0)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&even, even_id, 4, &p).await;
    ask_settled(&odd, odd_id, 4, &p).await;
    assert_eq!(
        demand_log(&p).await,
        vec![4, 4],
        "asks are forwarded one by one"
    );
    emit_settled(&p, range(1..13)).await;
    assert_eq!(batches(&even).await, vec![vec![2, 4, 8, 10]]);
    assert_eq!(batches(&odd).await, vec![vec![1, 5, 7, 11]]);
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.dropped, 3, "3, 6 and 9 hashed to None");
    assert_eq!(
        counters.buffered, 1,
        "[12] is beyond the 8 asked for: buffered"
    );
    assert_eq!(counters.events_out, 8);
    assert_eq!(counters.consumers, vec![(even_id, 0), (odd_id, 0)]);

    // The buffered 12 is hashed once demand drains it: dropped as well.
    ask_settled(&even, even_id, 3, &p).await;
    assert_eq!(batches(&even).await, Vec::<Vec<u64>>::new());
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.dropped, counters.buffered), (4, 0));
    emit_settled(&p, vec![14, 17, 16]).await;
    assert_eq!(batches(&even).await, vec![vec![14, 16]]);
    assert_eq!(batches(&odd).await, Vec::<Vec<u64>>::new());
    assert_eq!(p.buffered().await.unwrap(), 1, "17 waits in partition 1");
}

#[tokio::test]
async fn rule2_queued_events_are_sent_in_order_when_the_partition_asks() {
    let p = by_parity();
    let (even, even_id) = manual(&p, part(0)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&odd, odd_id, 10, &p).await;
    emit_settled(&p, vec![2, 1, 4, 3, 6]).await;
    assert_eq!(batches(&odd).await, vec![vec![1, 3]]);
    assert_eq!(batches(&even).await, Vec::<Vec<u64>>::new());
    assert_eq!(
        p.buffered().await.unwrap(),
        3,
        "partition 0's queue is counted"
    );

    ask_settled(&even, even_id, 2, &p).await;
    assert_eq!(batches(&even).await, vec![vec![2, 4]], "one message");
    ask_settled(&even, even_id, 5, &p).await;
    assert_eq!(batches(&even).await, vec![vec![6]]);
    assert_eq!(p.buffered().await.unwrap(), 0);
    assert_eq!(
        demand_log(&p).await,
        vec![10, 2, 5],
        "demand is forwarded upstream even when the queue met it"
    );
    // The rest of the 5 is integer demand again.
    emit_settled(&p, vec![8, 10, 12, 14, 16]).await;
    assert_eq!(batches(&even).await, vec![vec![8, 10, 12, 14]]);
    assert_eq!(p.buffered().await.unwrap(), 1);
}

#[tokio::test]
async fn rule3_events_for_a_partition_without_consumer_wait_for_its_first_subscriber() {
    let p = by_parity();
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&odd, odd_id, 6, &p).await;
    emit_settled(&p, vec![1, 2, 3, 4, 5, 6]).await;
    assert_eq!(received(&odd).await, vec![1, 3, 5]);
    assert_eq!(p.buffered().await.unwrap(), 3);

    let (even, even_id) = manual(&p, part(0)).await;
    ask_settled(&even, even_id, 10, &p).await;
    assert_eq!(batches(&even).await, vec![vec![2, 4, 6]]);
    assert_eq!(p.counters().await.unwrap().dropped, 0);
}

#[tokio::test]
async fn default_hash_routes_each_event_to_one_partition_stably() {
    async fn run() -> Vec<Vec<u64>> {
        let p = partitioned(
            Source {
                queue: (0..300).collect(),
                ..Source::default()
            },
            PartitionDispatcher::new(3).unwrap(),
        );
        let mut sinks = Vec::new();
        for i in 0..3 {
            let c = stage::consumer(Sink::new()).start().unwrap();
            within(c.subscribe(&p, part(i).max_demand(10)))
                .await
                .unwrap();
            sinks.push(c);
        }
        idle(&p).await;
        let mut got = Vec::new();
        for c in &sinks {
            got.push(received(c).await);
        }
        got
    }

    let first = run().await;
    for got in &first {
        assert!(!got.is_empty(), "{first:?}");
        assert!(got.is_sorted(), "order is kept within a partition");
    }
    let mut all = first.concat();
    all.sort_unstable();
    assert_eq!(all, range(0..300), "each event once");
    assert_eq!(
        run().await,
        first,
        "the same key lands in the same partition"
    );
}

#[tokio::test]
async fn difference_a_full_partition_queue_drops_its_oldest_and_counts_them() {
    let p = partitioned(
        Source::silent(),
        PartitionDispatcher::with_hash(2, parity)
            .unwrap()
            .queue_limit(2),
    );
    let (even, even_id) = manual(&p, part(0)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&odd, odd_id, 10, &p).await;
    emit_settled(&p, vec![2, 4, 6, 8, 1]).await;
    assert_eq!(received(&odd).await, vec![1]);
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.dropped, 2);
    assert_eq!(counters.buffered, 2);
    ask_settled(&even, even_id, 10, &p).await;
    assert_eq!(received(&even).await, vec![6, 8], "the oldest were dropped");
    assert!(p.is_running());
}

#[tokio::test]
async fn difference_a_zero_queue_limit_drops_what_its_partition_cannot_take() {
    let p = partitioned(
        Source::silent(),
        PartitionDispatcher::with_hash(2, parity)
            .unwrap()
            .queue_limit(0),
    );
    let (even, even_id) = manual(&p, part(0)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&odd, odd_id, 10, &p).await;
    ask_settled(&even, even_id, 1, &p).await;
    emit_settled(&p, vec![2, 4, 6, 1]).await;
    assert_eq!(received(&even).await, vec![2]);
    assert_eq!(received(&odd).await, vec![1]);
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.dropped, 2);
    assert_eq!(counters.buffered, 0);
}

#[tokio::test]
async fn difference_an_unknown_partition_from_the_hash_is_dropped_and_counted() {
    let p = partitioned(
        Source::silent(),
        PartitionDispatcher::with_hash(2, |e: &u64| Some(*e as usize)).unwrap(),
    );
    let (zero, zero_id) = manual(&p, part(0)).await;
    let (one, one_id) = manual(&p, part(1)).await;
    ask_settled(&zero, zero_id, 5, &p).await;
    ask_settled(&one, one_id, 5, &p).await;
    emit_settled(&p, vec![0, 7, 1, 0]).await;
    assert!(p.is_running(), "upstream raises; here the event is dropped");
    assert_eq!(received(&zero).await, vec![0, 0]);
    assert_eq!(received(&one).await, vec![1]);
    assert_eq!(p.counters().await.unwrap().dropped, 1);
}

#[tokio::test]
async fn difference_a_partitions_queue_outlives_its_consumer() {
    let p = by_parity();
    let temporary = part(0).cancel(CancelMode::Temporary);
    let (even, even_id) = manual(&p, temporary).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&odd, odd_id, 5, &p).await;
    emit_settled(&p, vec![2, 4, 1]).await;
    assert_eq!(received(&odd).await, vec![1]);
    assert_eq!(demand_log(&p).await, vec![5]);

    even.cancel(even_id, Reason::Normal).unwrap();
    even.counters().await.unwrap();
    p.counters().await.unwrap();
    settle().await;
    assert!(even.is_running(), "temporary");
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.consumers, vec![(odd_id, 4)]);
    assert_eq!(counters.buffered, 2, "the queue is kept");
    assert_eq!(
        demand_log(&p).await,
        Vec::<usize>::new(),
        "upstream asks for the dropped queue again; here nothing is dropped"
    );

    let (next, next_id) = manual(&p, part(0)).await;
    ask_settled(&next, next_id, 5, &p).await;
    assert_eq!(batches(&next).await, vec![vec![2, 4]]);
    assert_eq!(received(&even).await, Vec::<u64>::new());
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule5_a_cancelled_consumers_demand_is_pending_and_netted_against_later_asks() {
    let p = by_parity();
    let (even, even_id) = manual(&p, part(0).cancel(CancelMode::Temporary)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&even, even_id, 6, &p).await;
    assert_eq!(demand_log(&p).await, vec![6]);
    even.cancel(even_id, Reason::Normal).unwrap();
    even.counters().await.unwrap();
    p.counters().await.unwrap();
    settle().await;

    ask_settled(&odd, odd_id, 4, &p).await;
    assert_eq!(
        demand_log(&p).await,
        Vec::<usize>::new(),
        "4 of the 6 pending"
    );
    ask_settled(&odd, odd_id, 4, &p).await;
    assert_eq!(demand_log(&p).await, vec![2]);
    emit_settled(&p, vec![1, 3, 5, 7, 9, 11, 13, 15]).await;
    assert_eq!(received(&odd).await, vec![1, 3, 5, 7, 9, 11, 13, 15]);
}

#[tokio::test]
async fn rule1_missing_unknown_and_taken_partitions_are_refused_and_nobody_stops() {
    let p = by_parity();
    let (even, even_id) = manual(&p, part(0)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    let c = stage::consumer(Sink::manual()).start().unwrap();

    match within(c.subscribe(&p, SubscribeOptions::new())).await {
        Err(SubscribeError::Option(e)) => assert_eq!(e.option, "partition", "{e}"),
        other => panic!("missing partition: {other:?}"),
    }
    match within(c.subscribe(&p, part(2))).await {
        Err(SubscribeError::Option(e)) => assert_eq!(e.option, "partition", "{e}"),
        other => panic!("unknown partition: {other:?}"),
    }
    match within(c.subscribe(&p, part(0))).await {
        Err(SubscribeError::Rejected(_)) => {}
        other => panic!("taken partition: {other:?}"),
    }
    let selector = part(1).selector(|_: &u64| true);
    match within(c.subscribe(&p, selector)).await {
        Err(SubscribeError::Option(e)) => assert_eq!(e.option, "selector", "{e}"),
        other => panic!("selector: {other:?}"),
    }
    settle().await;
    assert!(p.is_running());
    assert!(c.is_running(), "a refused subscription stops nobody");
    assert_eq!(rejections(&c.call(Ask::Log).await.unwrap()), 4);
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.consumers, vec![(even_id, 0), (odd_id, 0)]);

    ask_settled(&even, even_id, 5, &p).await;
    ask_settled(&odd, odd_id, 5, &p).await;
    emit_settled(&p, range(1..7)).await;
    assert_eq!(received(&even).await, vec![2, 4, 6]);
    assert_eq!(received(&odd).await, vec![1, 3, 5]);
}

/// Issue 10 changed the first half: a missing partition used to come back as a `Rejected`
/// cancel once the consumer ran; `start` now refuses it itself. A partition that is taken can
/// only be known by the producer, so that one is still a `Rejected` cancel.
#[tokio::test]
async fn rule1_a_refused_subscription_at_start_leaves_everyone_running() {
    let p = by_parity();
    let (odd, odd_id) = manual(&p, part(1)).await;
    let missing = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Permanent))
        .start();
    match missing {
        Err(StartError::Refused(SubscribeError::Option(e))) => assert_eq!(e.option, "partition"),
        other => panic!("expected a refused partition, got {other:?}"),
    }
    let taken = stage::consumer(Sink::new())
        .subscribe_to(&p, part(1))
        .start()
        .unwrap();
    settle().await;
    p.counters().await.unwrap();
    settle().await;
    assert!(p.is_running());
    assert!(taken.is_running());
    assert_eq!(rejections(&taken.call(Ask::Log).await.unwrap()), 1);
    assert_eq!(p.counters().await.unwrap().consumers, vec![(odd_id, 0)]);

    ask_settled(&odd, odd_id, 2, &p).await;
    emit_settled(&p, vec![1, 3]).await;
    assert_eq!(received(&odd).await, vec![1, 3]);
}

#[tokio::test]
async fn run_time_subscribe_and_cancel_free_and_reuse_partitions() {
    let p = by_parity();
    let (a, a_id) = manual(&p, part(0).cancel(CancelMode::Temporary)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    ask_settled(&a, a_id, 2, &p).await;
    ask_settled(&odd, odd_id, 10, &p).await;
    emit_settled(&p, vec![2, 1]).await;
    assert_eq!(received(&a).await, vec![2]);

    // Cancelled by the consumer.
    a.cancel(a_id, Reason::Normal).unwrap();
    a.counters().await.unwrap();
    p.counters().await.unwrap();
    settle().await;
    let log = p.call(Ask::Log).await.unwrap();
    assert!(log.iter().any(|s| matches!(
        s,
        Seen::Cancelled(Peer::Consumer, Cancel::Cancelled(_), id) if *id == a_id
    )));
    let (b, b_id) = manual(&p, part(0).cancel(CancelMode::Temporary)).await;
    ask_settled(&b, b_id, 3, &p).await;
    emit_settled(&p, vec![4, 3]).await;
    assert_eq!(received(&b).await, vec![4]);
    assert_eq!(received(&a).await, Vec::<u64>::new());

    // Cancelled by the producer.
    p.cancel(b_id, Reason::Shutdown).unwrap();
    p.counters().await.unwrap();
    settle().await;
    let log = b.call(Ask::Log).await.unwrap();
    assert!(log.iter().any(|s| matches!(
        s,
        Seen::Cancelled(Peer::Producer, Cancel::Cancelled(Reason::Shutdown), id) if *id == b_id
    )));
    assert!(b.is_running(), "temporary");
    let (c, c_id) = manual(&p, part(0)).await;
    ask_settled(&c, c_id, 5, &p).await;
    emit_settled(&p, vec![6, 5]).await;
    assert_eq!(received(&c).await, vec![6]);
    assert_eq!(received(&b).await, Vec::<u64>::new());
    assert_eq!(received(&odd).await, vec![1, 3, 5]);
}

#[tokio::test]
async fn a_producer_consumer_with_a_partition_dispatcher_in_a_pipeline() {
    let source = stage::producer(Source {
        queue: (0..100).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let tripler = Through {
        log: Vec::new(),
        f: |x| vec![x * 3],
    };
    let pc = stage::producer_consumer(tripler)
        .dispatcher(PartitionDispatcher::with_hash(2, parity).unwrap())
        .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
        .start()
        .unwrap();
    let even = stage::consumer(Sink::new())
        .subscribe_to(&pc, part(0).max_demand(4))
        .start()
        .unwrap();
    let odd = stage::consumer(Sink::new())
        .subscribe_to(&pc, part(1).max_demand(6))
        .start()
        .unwrap();
    idle(&pc).await;
    idle(&source).await;
    assert_eq!(
        received(&even).await,
        (0..100)
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        received(&odd).await,
        (0..100)
            .map(|x| x * 3)
            .filter(|x| x % 2 == 1)
            .collect::<Vec<_>>()
    );
    let counters = pc.counters().await.unwrap();
    assert_eq!(counters.buffered, 0);
    assert_eq!(counters.events_in, 100);
    assert_eq!(counters.events_out, 100);
}

#[tokio::test]
async fn rule6_info_is_delivered_after_the_partition_queues_before_it() {
    let p = by_parity();
    let (even, even_id) = manual(&p, part(0)).await;
    let (odd, odd_id) = manual(&p, part(1)).await;
    // No queue: at once.
    p.info(Msg::Tag("first")).unwrap();
    let log = p.call(Ask::Log).await.unwrap();
    assert!(log.contains(&Seen::Info(Msg::Tag("first"))), "{log:?}");

    ask_settled(&odd, odd_id, 4, &p).await;
    emit_settled(&p, vec![2, 4, 1]).await;
    assert_eq!(p.buffered().await.unwrap(), 2, "[2, 4] wait in partition 0");
    p.info(Msg::Tag("after")).unwrap();
    let log = p.call(Ask::Log).await.unwrap();
    assert!(
        !log.contains(&Seen::Info(Msg::Tag("after"))),
        "info ran before partition 0 got the events queued before it: {log:?}"
    );
    ask_settled(&even, even_id, 2, &p).await;
    assert_eq!(received(&even).await, vec![2, 4]);
    let log = p.call(Ask::Log).await.unwrap();
    assert!(log.contains(&Seen::Info(Msg::Tag("after"))), "{log:?}");
}

/// A manual consumer whose first batch's handler waits until the test lets it go.
struct Blocker {
    gate: std::sync::Arc<tokio::sync::Notify>,
    blocked: bool,
}

impl stage::Consumer for Blocker {
    type In = u64;

    async fn handle_events(
        &mut self,
        _: Vec<u64>,
        _: stage::SubscriptionId,
        _: &mut stage::Context<Self>,
    ) {
        if !self.blocked {
            self.blocked = true;
            self.gate.notified().await;
        }
    }

    async fn handle_subscribe(
        &mut self,
        _: stage::SubscriptionId,
        _: &stage::SubscribeOptions,
        _: &mut stage::Context<Self>,
    ) -> stage::SubscriptionMode {
        stage::SubscriptionMode::Manual
    }
}

/// Events a leaving consumer gives back to its partition go on to the partition's new consumer
/// when it already has demand for them, and so do the events that queue behind them.
#[tokio::test]
async fn events_given_back_to_a_partition_reach_its_new_consumer() {
    tokio::time::pause();
    support::within(async {
        let p = stage::producer(support::Source::silent())
            .dispatcher(stage::PartitionDispatcher::with_hash(1, |_: &u64| Some(0)).unwrap())
            .start()
            .unwrap();
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        let c = stage::consumer(Blocker {
            gate: gate.clone(),
            blocked: false,
        })
        .start()
        .unwrap();
        let id = c
            .subscribe(&p, stage::SubscribeOptions::new().partition(0))
            .await
            .unwrap();
        c.ask(id, 6).unwrap();
        support::settle().await;
        support::emit_settled(&p, vec![1, 2, 3]).await; // C handles these and blocks
        support::emit_settled(&p, vec![4, 5, 6]).await; // these wait in C's queue
        p.cancel(id, stage::Reason::Normal).unwrap();
        p.counters().await.unwrap();
        let (c2, id2) = support::manual(&p, stage::SubscribeOptions::new().partition(0)).await;
        support::ask_settled(&c2, id2, 10, &p).await;
        c.abort().unwrap();
        gate.notify_one();
        c.join().await;
        support::settle().await;
        support::emit_settled(&p, vec![7]).await;
        let pc = p.counters().await.unwrap();
        assert_eq!(
            support::received(&c2).await,
            vec![4, 5, 6, 7],
            "producer: {pc:?}"
        );
    })
    .await;
}
