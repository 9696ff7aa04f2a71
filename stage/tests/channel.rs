//! A channel into a pipeline and the ways out of it: `channel` under concurrent senders and a
//! slow consumer holds no more than its capacity beyond what its consumer asked for, loses and
//! duplicates nothing, keeps each sender's order, and ends normally when the last sender is
//! dropped; `try_send` gives the event back when full or closed; an invalid capacity is a typed
//! error; `into_sink` and `into_sender` deliver everything in order, and stop when their
//! destination fails or goes away, counting what they could not deliver.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use stage::{Reason, StartError, SubscribeOptions, TrySendError};

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("timed out: a stage hung")
}

const SENDERS: u64 = 8;
const EACH: u64 = 5_000;
const CAPACITY: usize = 64;
const MAX_DEMAND: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_senders_and_a_slow_consumer_lose_nothing_and_hold_at_most_the_capacity() {
    let (tx, builder) = stage::channel::<(u64, u64)>(CAPACITY);
    let producer = builder.name("requests").start().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let (done, handled_at_end) = (Arc::clone(&accepted), Arc::clone(&handled));
    let mut last = vec![None::<u64>; SENDERS as usize];
    let mut worst = 0u64;
    let consumer = stage::async_consumer_fn(move |events: Vec<(u64, u64)>| {
        let now = handled.fetch_add(events.len() as u64, Ordering::SeqCst) + events.len() as u64;
        let held = done.load(Ordering::SeqCst).saturating_sub(now);
        worst = worst.max(held);
        assert!(
            held <= (CAPACITY + MAX_DEMAND) as u64,
            "{held} events held beyond what was asked"
        );
        for (sender, seq) in events {
            let prev = last[sender as usize].replace(seq);
            assert_eq!(
                prev.map_or(0, |p| p + 1),
                seq,
                "sender {sender} out of order"
            );
        }
        async {
            // A slow consumer: the senders outrun it.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
    })
    .subscribe_to(&producer, SubscribeOptions::new().max_demand(MAX_DEMAND))
    .start()
    .unwrap();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let tx = tx.clone();
        let accepted = Arc::clone(&accepted);
        senders.push(tokio::spawn(async move {
            for seq in 0..EACH {
                tx.send((sender, seq))
                    .await
                    .expect("the channel closed early");
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    drop(tx);
    for s in senders {
        within(s).await.unwrap();
    }
    // The last sender is gone: the producer finishes and its permanent consumer with it.
    assert_eq!(within(consumer.join()).await, Reason::Normal);
    assert_eq!(within(producer.join()).await, Reason::Normal);
    assert_eq!(handled_at_end.load(Ordering::SeqCst), SENDERS * EACH);
    let counters = producer.final_counters().unwrap();
    assert_eq!(counters.events_out, SENDERS * EACH);
    assert_eq!(counters.dropped, 0);
}

#[tokio::test]
async fn try_send_gives_the_event_back_when_full_or_closed() {
    let (tx, builder) = stage::channel::<u32>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.capacity(), 0);
    assert_eq!(tx.max_capacity(), 2);
    match tx.try_send(3) {
        Err(TrySendError::Full(3)) => {}
        other => panic!("expected Full(3), got {other:?}"),
    }
    let p = builder.start().unwrap();
    let got: Vec<u32> = within(
        stage::stream([(&p, SubscribeOptions::new().max_demand(1))])
            .unwrap()
            .take(2)
            .collect(),
    )
    .await;
    assert_eq!(got, [1, 2]);
    p.stop(Reason::Shutdown).unwrap();
    within(p.join()).await;
    within(tx.closed()).await;
    assert!(tx.is_closed());
    assert_eq!(tx.try_send(4).unwrap_err().into_inner(), 4);
    assert!(matches!(tx.try_send(5), Err(TrySendError::Closed(5))));
    assert_eq!(within(tx.send(6)).await.unwrap_err().into_inner(), 6);
}

#[tokio::test]
async fn dropping_every_sender_ends_the_pipeline_normally() {
    let (tx, builder) = stage::channel::<u64>(8);
    let p = builder.start().unwrap();
    let s = stage::stream([(&p, SubscribeOptions::new().max_demand(3))]).unwrap();
    let second = tx.clone();
    tokio::spawn(async move { second.send_all(0..50).await.unwrap() });
    tokio::spawn(async move { tx.send_all(100..150).await.unwrap() });
    let got: Vec<u64> = within(s.collect()).await;
    assert_eq!(within(p.join()).await, Reason::Normal);
    let (low, high): (Vec<u64>, Vec<u64>) = got.iter().partition(|&&n| n < 100);
    assert_eq!(low, (0..50).collect::<Vec<_>>());
    assert_eq!(high, (100..150).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_invalid_capacity_is_a_typed_error_and_closes_the_senders() {
    let (tx, builder) = stage::channel::<u8>(0);
    match builder.start() {
        Err(StartError::Option(e)) => {
            assert_eq!(e.option, "capacity");
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
        other => panic!("expected an option error, got {other:?}"),
    }
    assert!(tx.is_closed());
    assert!(matches!(tx.try_send(1), Err(TrySendError::Closed(1))));
}

#[tokio::test]
async fn into_sink_delivers_everything_in_order_with_back_pressure() {
    let (tx, rx) = futures::channel::mpsc::channel::<u64>(4);
    let numbers = stage::from_iter(0..20_000u64).start().unwrap();
    let c = stage::into_sink(tx)
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
        .start()
        .unwrap();
    let got: Vec<u64> = within(rx.collect()).await;
    assert_eq!(got, (0..20_000).collect::<Vec<_>>());
    assert_eq!(within(c.join()).await, Reason::Normal);
}

#[tokio::test]
async fn a_failing_sink_stops_its_consumer_and_counts_what_it_lost() {
    let sink = futures::sink::unfold(0u64, |taken, _: u64| async move {
        if taken == 25 {
            Err("disk full")
        } else {
            Ok(taken + 1)
        }
    });
    let numbers = stage::from_iter(0..100u64).start().unwrap();
    let c = stage::into_sink(Box::pin(sink))
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(10))
        .start()
        .unwrap();
    match within(c.join()).await {
        Reason::Error(m) => assert!(m.contains("disk full"), "{m}"),
        other => panic!("expected an error, got {other}"),
    }
    // Batches of 5 (max 10, min 5): the sink took 25, took the 26th and failed on it, so the
    // 4 after it in that batch were never handed to it.
    assert_eq!(c.final_counters().unwrap().dropped, 4);
}

#[tokio::test]
async fn into_sender_delivers_in_order_and_stops_when_the_receiver_goes() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(7);
    let numbers = stage::from_iter(0..1000u64).start().unwrap();
    let c = stage::into_sender(tx)
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(50))
        .start()
        .unwrap();
    for want in 0..300u64 {
        assert_eq!(within(rx.recv()).await, Some(want));
    }
    drop(rx);
    assert_eq!(within(c.join()).await, Reason::Normal);
    let counters = c.final_counters().unwrap();
    // It was waiting for room with part of a batch in hand: that part is counted as dropped.
    assert!((1..=25).contains(&counters.dropped), "{counters:?}");
}
