//! GenStage §2.8, the DemandDispatcher (default) through running stages: subscribing adds no
//! upstream demand, asks are forwarded one by one, the consumer with the highest outstanding
//! demand gets the next contiguous slice (FIFO among ties), leftovers are buffered, a cancelled
//! consumer's unmet demand is kept as pending and reused by later asks, and an ask above the
//! first one's size logs a warning. Also §2.4 rule 3 (asks are not summed).

mod support;

use std::cell::RefCell;
use std::fmt;
use std::sync::Once;

use stage::{CancelMode, Reason, SubscribeOptions};
use support::{Ask, Sink, Source, ask, batches, demands, emit, events, manual_sink_with, settle};

thread_local! {
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Starts capturing WARN messages logged on this thread (where the current-thread runtime runs
/// every stage). One global subscriber for the binary avoids tracing's interest-cache races.
fn capture_warnings() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        tracing::subscriber::set_global_default(Global).expect("no other global subscriber");
    });
    tracing::callsite::rebuild_interest_cache();
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

fn warnings() -> Vec<String> {
    CAPTURED.with(|c| c.borrow().clone().unwrap_or_default())
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

struct Global;

impl tracing::Subscriber for Global {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        CAPTURED.with(|c| {
            if let Some(all) = c.borrow_mut().as_mut() {
                let mut message = Message(String::new());
                event.record(&mut message);
                all.push(message.0);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn rule1_2_subscribing_adds_no_demand_and_each_ask_is_forwarded_on_its_own() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    let (b, b_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    p.counters().await.unwrap();
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    ask(&a, a_id, 5, &p).await;
    ask(&b, b_id, 5, &p).await;
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        vec![5, 5],
        "two asks of 5 are two calls of handle_demand(5), not one of 10"
    );
}

#[tokio::test]
async fn rule3_the_consumer_with_the_highest_demand_gets_the_first_contiguous_slice() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    let (b, b_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    ask(&a, a_id, 3, &p).await;
    ask(&b, b_id, 2, &p).await;
    emit(&p, vec![1, 2, 3, 4, 5]).await;
    assert_eq!(batches(&a).await, vec![vec![1, 2, 3]]);
    assert_eq!(batches(&b).await, vec![vec![4, 5]]);
}

#[tokio::test]
async fn rule3_demand_not_subscription_order_decides_who_goes_first() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    let (b, b_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    ask(&a, a_id, 2, &p).await;
    ask(&b, b_id, 5, &p).await;
    emit(&p, vec![1, 2, 3, 4]).await;
    assert_eq!(batches(&a).await, Vec::<Vec<u64>>::new());
    assert_eq!(batches(&b).await, vec![vec![1, 2, 3, 4]]);
    // Now a has 2 and b has 1 outstanding.
    emit(&p, vec![5, 6, 7]).await;
    assert_eq!(batches(&a).await, vec![vec![5, 6]]);
    assert_eq!(batches(&b).await, vec![vec![7]]);
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule3_ties_are_served_first_come_first_and_leftovers_are_buffered() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    let (b, b_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    ask(&a, a_id, 3, &p).await;
    ask(&b, b_id, 3, &p).await;
    emit(&p, vec![1, 2]).await;
    emit(&p, vec![3, 4]).await;
    emit(&p, vec![5, 6, 7]).await;
    assert_eq!(batches(&a).await, vec![vec![1, 2], vec![5]]);
    assert_eq!(batches(&b).await, vec![vec![3, 4], vec![6]]);
    assert_eq!(p.buffered().await.unwrap(), 1);
    let counters = p.counters().await.unwrap();
    assert!(
        counters.consumers.iter().all(|&(_, d)| d == 0),
        "{counters:?}"
    );

    ask(&a, a_id, 1, &p).await;
    assert_eq!(batches(&a).await, vec![vec![7]]);
}

#[tokio::test]
async fn rule3_two_automatic_consumers_share_the_events_without_loss_or_duplication() {
    let p = stage::producer(Source {
        queue: (0..200).collect(),
        ..Source::default()
    })
    .start()
    .unwrap();
    let opts = SubscribeOptions::new().max_demand(10).min_demand(5);
    let a = stage::consumer(Sink::new())
        .subscribe_to(&p, opts.clone())
        .start()
        .unwrap();
    let b = stage::consumer(Sink::new())
        .subscribe_to(&p, opts)
        .start()
        .unwrap();
    for _ in 0..4 {
        settle().await;
    }
    let got_a = events(&a.call(Ask::Log).await.unwrap());
    let got_b = events(&b.call(Ask::Log).await.unwrap());
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "{got_a:?} {got_b:?}"
    );
    let mut all = [got_a, got_b].concat();
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn rule4_a_cancelled_consumers_unmet_demand_is_reused_by_later_asks() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Temporary)).await;
    ask(&a, a_id, 10, &p).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), vec![10]);
    a.cancel(a_id, Reason::Normal).unwrap();
    settle().await;
    p.counters().await.unwrap();
    assert!(a.is_running(), "temporary");

    // b's asks are netted against the 10 still pending: handle_demand sees only the excess.
    let (b, b_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    ask(&b, b_id, 4, &p).await;
    assert_eq!(
        demands(&p.call(Ask::Log).await.unwrap()),
        Vec::<usize>::new()
    );
    ask(&b, b_id, 10, &p).await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), vec![4]);

    // The producer's late answer to a's demand goes to b.
    emit(&p, (1..=14).collect()).await;
    assert_eq!(
        events(&b.call(Ask::Log).await.unwrap()),
        (1..=14).collect::<Vec<_>>()
    );
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule5_an_ask_bigger_than_the_first_logs_a_max_demand_warning() {
    capture_warnings();
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    let (b, b_id) =
        manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Permanent)).await;
    ask(&a, a_id, 5, &p).await;
    ask(&b, b_id, 5, &p).await;
    let expects = |w: &Vec<String>| w.iter().any(|m| m.contains("maximum demand of 5"));
    assert!(!expects(&warnings()), "{:?}", warnings());
    ask(&b, b_id, 6, &p).await;
    assert!(expects(&warnings()), "{:?}", warnings());
}
