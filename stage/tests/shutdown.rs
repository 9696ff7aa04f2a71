//! Stopping stages from outside: `abort` overtakes the mailbox and stops a consumer between
//! two batches of one message, giving the rest back; `shutdown` of a source drains the
//! pipeline behind it with nothing lost; `shutdown` of a consumer cancels its subscriptions and
//! handles what was already sent; a `CancellationToken` given to the sources stops a whole
//! pipeline, and no task is left running afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stage::{CancelMode, Reason, SubscribeOptions};
use tokio_util::sync::CancellationToken;

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out: a stage hung")
}

#[tokio::test]
async fn abort_stops_a_consumer_between_two_batches_and_gives_the_rest_back() {
    let numbers = stage::from_iter(0..100_000u64).start().unwrap();
    let batches = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&batches);
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let mut started_tx = Some(started_tx);
    let c = stage::async_consumer_fn(move |_events: Vec<u64>| {
        seen.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = started_tx.take() {
            let _ = tx.send(());
        }
        async {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    // One message of 10,000 events, cut into batches of 10.
    .subscribe_to(
        &numbers,
        SubscribeOptions::new().max_demand(10_000).min_demand(9_990),
    )
    .start()
    .unwrap();
    within(started).await.unwrap();
    c.abort().unwrap();
    assert_eq!(within(c.join()).await, Reason::Shutdown);
    let handled = batches.load(Ordering::SeqCst);
    assert!(handled <= 2, "{handled} batches handled after the abort");
    let counters = c.final_counters().unwrap();
    assert!(counters.returned >= 10_000 - 2 * 10, "{counters:?}");
    // The producer got them back: a new consumer sees them.
    let rest = numbers.counters().await.unwrap();
    assert!(rest.buffered as u64 >= counters.returned, "{rest:?}");
}

#[tokio::test]
async fn shutting_down_a_source_drains_the_pipeline_behind_it() {
    let numbers = stage::from_iter(0..u64::MAX)
        .name("numbers")
        .start()
        .unwrap();
    let doubled = stage::producer_consumer_fn(|b: Vec<u64>| b.into_iter().map(|n| n * 2).collect())
        .name("doubled")
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
        .start()
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let sink = stage::consumer_fn(move |events: Vec<u64>| {
        count.fetch_add(events.len() as u64, Ordering::SeqCst);
    })
    .subscribe_to(&doubled, SubscribeOptions::new().max_demand(50))
    .start()
    .unwrap();
    while handled.load(Ordering::SeqCst) < 10_000 {
        tokio::task::yield_now().await;
    }
    numbers.shutdown().unwrap();
    assert_eq!(within(numbers.join()).await, Reason::Shutdown);
    assert_eq!(within(doubled.join()).await, Reason::Shutdown);
    assert_eq!(within(sink.join()).await, Reason::Shutdown);
    let out = numbers.final_counters().unwrap();
    let mid = doubled.final_counters().unwrap();
    let end = sink.final_counters().unwrap();
    assert_eq!(out.dropped + mid.dropped + end.dropped, 0);
    assert_eq!(mid.events_in, out.events_out);
    assert_eq!(end.events_in, mid.events_out);
    assert_eq!(handled.load(Ordering::SeqCst), out.events_out);
}

#[tokio::test]
async fn shutting_down_a_consumer_handles_what_was_sent_and_leaves_the_producer_running() {
    let numbers = stage::from_iter(0..u64::MAX).start().unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let sink = stage::consumer_fn(move |events: Vec<u64>| {
        count.fetch_add(events.len() as u64, Ordering::SeqCst);
    })
    .subscribe_to(
        &numbers,
        SubscribeOptions::new()
            .max_demand(100)
            .cancel(CancelMode::Temporary),
    )
    .start()
    .unwrap();
    while handled.load(Ordering::SeqCst) < 1_000 {
        tokio::task::yield_now().await;
    }
    sink.shutdown().unwrap();
    // A temporary subscription would not stop it: a shutdown does, once it is cancelled.
    assert_eq!(within(sink.join()).await, Reason::Shutdown);
    let end = sink.final_counters().unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), end.events_in);
    assert_eq!(end.returned + end.dropped, 0);
    assert!(numbers.is_running());
    let out = numbers.counters().await.unwrap();
    assert_eq!(out.events_out, end.events_in);
}

#[tokio::test]
async fn a_token_given_to_the_sources_stops_the_whole_pipeline_and_leaves_no_task() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let token = CancellationToken::new();
    let (tx, builder) = stage::channel::<u64>(16);
    let requests = builder.cancel_on(token.clone()).start().unwrap();
    let numbers = stage::from_iter(0..u64::MAX)
        .cancel_on(token.clone())
        .start()
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let sink = stage::consumer_fn(move |events: Vec<u64>| {
        count.fetch_add(events.len() as u64, Ordering::SeqCst);
    })
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
    .subscribe_to(&requests, SubscribeOptions::new().max_demand(10))
    .start()
    .unwrap();
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        while tx.send(sent).await.is_ok() {
            sent += 1;
        }
        sent
    });
    while handled.load(Ordering::SeqCst) < 5_000 {
        tokio::task::yield_now().await;
    }
    token.cancel();
    assert_eq!(within(numbers.join()).await, Reason::Shutdown);
    assert_eq!(within(requests.join()).await, Reason::Shutdown);
    assert_eq!(within(sink.join()).await, Reason::Shutdown);
    within(sender).await.unwrap();
    // The sink stops when the first of its two permanent producers ends: what the other had
    // sent it by then and it had not handled is given back or, if that producer has gone
    // too, dropped; either way it is counted, never lost.
    let (numbers, requests) = (
        numbers.final_counters().unwrap(),
        requests.final_counters().unwrap(),
    );
    let sink = sink.final_counters().unwrap();
    let counted =
        handled.load(Ordering::SeqCst) + sink.dropped + numbers.dropped + requests.dropped;
    assert_eq!(
        counted,
        numbers.events_out + requests.events_out,
        "{numbers:?} {requests:?} {sink:?}"
    );
    // Feeders and token watchers end with their stages.
    within(async {
        while metrics.num_alive_tasks() > before {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_source_without_consumers_shuts_down_at_once() {
    let numbers = stage::from_iter(0..10u64).start().unwrap();
    numbers.shutdown().unwrap();
    assert_eq!(within(numbers.join()).await, Reason::Shutdown);
    let lonely = stage::consumer_fn(|_: Vec<u64>| {}).start().unwrap();
    lonely.shutdown().unwrap();
    assert_eq!(within(lonely.join()).await, Reason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn a_token_shuts_a_supervisor_down_after_its_children_finish() {
    let token = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::clone(&done);
    let jobs = stage::from_iter(0..u64::MAX).start().unwrap();
    let sup = stage::ConsumerSupervisor::new(move |_: u64| {
        let finished = Arc::clone(&finished);
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            finished.fetch_add(1, Ordering::SeqCst);
            Ok::<(), std::convert::Infallible>(())
        }
    })
    .cancel_on(token.clone())
    .subscribe_to(&jobs, SubscribeOptions::new().max_demand(3))
    .start()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel();
    let report = within(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Shutdown);
    // The three running when the token was cancelled finished; no new ones started.
    assert_eq!(report.children.completed, 3);
    assert_eq!(report.children.cancelled, 0);
    assert_eq!(done.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_token_stops_a_pipeline_whose_consumer_awaits_and_nothing_is_lost() {
    // The consumer yields inside its handler, so the token is cancelled while it is in the
    // middle of a message: what it was sent is still handled or given back, never dropped.
    let token = CancellationToken::new();
    let numbers = stage::from_iter(0..u64::MAX)
        .cancel_on(token.clone())
        .start()
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let sink = stage::async_consumer_fn(move |events: Vec<u64>| {
        let count = Arc::clone(&count);
        async move {
            tokio::task::yield_now().await;
            count.fetch_add(events.len() as u64, Ordering::SeqCst);
        }
    })
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
    .start()
    .unwrap();
    while handled.load(Ordering::SeqCst) < 5_000 {
        tokio::task::yield_now().await;
    }
    token.cancel();
    assert_eq!(within(numbers.join()).await, Reason::Shutdown);
    assert_eq!(within(sink.join()).await, Reason::Shutdown);
    let produced = numbers.final_counters().unwrap();
    let consumed = sink.final_counters().unwrap();
    assert_eq!(consumed.dropped, 0, "{consumed:?}");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        produced.events_out - consumed.returned,
        "{produced:?} {consumed:?}"
    );
}
