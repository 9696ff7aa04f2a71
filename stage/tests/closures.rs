//! Stages from closures: `consumer_fn` sees every event once, in order; `producer_fn` is asked
//! for the demand, is called again for what a short answer left, and finishes on an empty
//! answer; `producer_consumer_fn` maps, filters and flat-maps whole batches; the `async_` forms
//! await their futures before asking for more; a panicking closure fails its stage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use stage::{Reason, SubscribeOptions};

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out: a stage hung")
}

#[tokio::test]
async fn consumer_fn_sees_every_event_once_in_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let numbers = stage::from_iter(0..10_000u64).start().unwrap();
    let c = stage::consumer_fn(move |events: Vec<u64>| {
        assert!(events.len() <= 100, "a batch beyond max_demand");
        log.lock().unwrap().extend(events);
    })
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
    .start()
    .unwrap();
    assert_eq!(within(c.join()).await, Reason::Normal);
    assert_eq!(*seen.lock().unwrap(), (0..10_000).collect::<Vec<_>>());
}

#[tokio::test]
async fn producer_fn_is_asked_for_the_demand_and_finishes_on_an_empty_answer() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let mut next = 0u64;
    let p = stage::producer_fn(move |n: usize| {
        log.lock().unwrap().push(n);
        // Never more than 7 at a time, and 25 in all.
        let end = (next + n.min(7) as u64).min(25);
        let events: Vec<u64> = (next..end).collect();
        next = end;
        events
    })
    .start()
    .unwrap();
    let opts = SubscribeOptions::new().max_demand(10).min_demand(0);
    let got: Vec<u64> = within(stage::stream([(&p, opts)]).unwrap().collect()).await;
    assert_eq!(got, (0..25).collect::<Vec<_>>());
    assert_eq!(within(p.join()).await, Reason::Normal);
    let asked = asked.lock().unwrap().clone();
    // 10 asked: 7, then the 3 left; and so on until the source runs dry.
    assert_eq!(&asked[..2], &[10, 3]);
    assert!(asked.iter().all(|&n| n <= 10), "{asked:?}");
}

#[tokio::test]
async fn producer_consumer_fn_maps_filters_and_flat_maps_batches() {
    let numbers = stage::from_iter(1..=1000u64).start().unwrap();
    let evens = stage::producer_consumer_fn(|batch: Vec<u64>| {
        batch.into_iter().filter(|n| n % 2 == 0).collect()
    })
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(50))
    .start()
    .unwrap();
    let twice = stage::producer_consumer_fn(|batch: Vec<u64>| {
        batch.into_iter().flat_map(|n| [n, n]).collect()
    })
    .subscribe_to(&evens, SubscribeOptions::new().max_demand(30))
    .start()
    .unwrap();
    let got: Vec<u64> = within(
        stage::stream([(&twice, SubscribeOptions::new().max_demand(20))])
            .unwrap()
            .collect(),
    )
    .await;
    let want: Vec<u64> = (1..=1000u64)
        .filter(|n| n % 2 == 0)
        .flat_map(|n| [n, n])
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn async_forms_await_their_future_before_asking_for_more() {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy = Arc::clone(&in_flight);
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sum = Arc::clone(&total);
    let mut next = 0u64;
    let p = stage::async_producer_fn(move |n: usize| {
        let end = (next + n as u64).min(500);
        let events: Vec<u64> = (next..end).collect();
        next = end;
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            events
        }
    })
    .start()
    .unwrap();
    let squares = stage::async_producer_consumer_fn(|batch: Vec<u64>| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        batch.into_iter().map(|n| n * n).collect::<Vec<u64>>()
    })
    .subscribe_to(&p, SubscribeOptions::new().max_demand(40))
    .start()
    .unwrap();
    let c = stage::async_consumer_fn(move |events: Vec<u64>| {
        let busy = Arc::clone(&busy);
        let sum = Arc::clone(&sum);
        async move {
            assert_eq!(busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
            tokio::time::sleep(Duration::from_millis(5)).await;
            sum.fetch_add(
                events.iter().sum::<u64>(),
                std::sync::atomic::Ordering::SeqCst,
            );
            busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    })
    .subscribe_to(&squares, SubscribeOptions::new().max_demand(25))
    .start()
    .unwrap();
    assert_eq!(within(c.join()).await, Reason::Normal);
    let want: u64 = (0..500u64).map(|n| n * n).sum();
    assert_eq!(total.load(std::sync::atomic::Ordering::SeqCst), want);
}

#[tokio::test]
async fn a_panicking_closure_fails_its_stage_and_what_waited_goes_back() {
    let numbers = stage::from_iter(0..100u64).start().unwrap();
    let c = stage::consumer_fn(|events: Vec<u64>| {
        if events.contains(&42) {
            panic!("no 42 here");
        }
    })
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(10))
    .start()
    .unwrap();
    assert!(matches!(within(c.join()).await, Reason::Panic(m) if m.contains("no 42")));
    // The producer keeps running, and a new consumer gets what was never handled.
    let rest: Vec<u64> = within(
        stage::stream([(&numbers, SubscribeOptions::new().max_demand(10))])
            .unwrap()
            .collect(),
    )
    .await;
    // The batch the closure panicked on was its own; what waited behind it was given back.
    assert!(rest.first().is_some_and(|&n| n > 42), "{rest:?}");
    assert!(rest.windows(2).all(|w| w[1] == w[0] + 1), "{rest:?}");
    assert_eq!(rest.last(), Some(&99));
}
