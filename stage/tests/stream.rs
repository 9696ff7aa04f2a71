//! GenStage §2.14, streams: `from_iter` (GenStage's `from_enumerable`) pulls exactly the demand,
//! gives batches 6, 4, 6, 6, 3 to a max 10 / min 4 consumer over 1..=25, and stops normally once
//! its buffer is flushed, so a permanent consumer stops with it; `from_stream` emits a `Stream`'s
//! items as they come and never more than asked; `stream()` consumes several producers, ends when
//! no subscription is left (temporary and transient-normal ends just remove one, permanent and
//! transient-abnormal end it), tells why in `exit_reason`, rejects bad options and dead producers
//! (a temporary dead producer gives an empty stream), and, dropped early, cancels its
//! subscriptions with a normal reason, leaving the producer running.

mod support;

use futures::StreamExt;
use stage::{Cancel, CancelMode, Cast, Context, Producer, Reason, StartError, SubscribeOptions};
use support::{
    Ask, Msg, Peer, Seen, Sink, Source, batch_sizes, events, manual_sink_with, settle, within,
};

/// Drains a stream, returning its items and why it ended.
async fn drain(mut s: stage::ConsumerStream<u64>) -> (Vec<u64>, Option<Reason>) {
    let mut got = Vec::new();
    while let Some(x) = within(s.next()).await {
        got.push(x);
    }
    (got, s.exit_reason())
}

// ----- from_iter -----

#[tokio::test(start_paused = true)]
async fn from_iter_gives_batches_6_4_6_6_3_to_a_max_10_min_4_consumer_over_1_to_25() {
    let numbers = stage::from_iter(1..=25u64).start().unwrap();
    let opts = SubscribeOptions::new()
        .max_demand(10)
        .min_demand(4)
        .cancel(CancelMode::Transient);
    let c = stage::consumer(Sink::new())
        .subscribe_to(&numbers, opts)
        .start()
        .unwrap();
    assert_eq!(within(numbers.join()).await, Reason::Normal);
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), vec![6, 4, 6, 6, 3]);
    assert_eq!(events(&log), (1..=25).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn from_iter_pulls_exactly_the_demand() {
    let numbers = stage::from_iter(1..=100u64).start().unwrap();
    let (c, id) = manual_sink_with(
        &numbers,
        SubscribeOptions::new().cancel(CancelMode::Permanent),
    )
    .await;
    c.ask(id, 3).unwrap();
    settle().await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(numbers.buffered().await.unwrap(), 0);
    c.ask(id, 4).unwrap();
    settle().await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![4, 5, 6, 7]);
    assert!(numbers.is_running());
}

#[tokio::test(start_paused = true)]
async fn from_iter_permanent_consumer_stops_normally_with_the_finished_producer() {
    let numbers = stage::from_iter(1..=5u64).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&numbers, SubscribeOptions::new())
        .start()
        .unwrap();
    assert_eq!(within(numbers.join()).await, Reason::Normal);
    assert_eq!(within(c.join()).await, Reason::Normal);
}

/// Emits `[1, 2, 3]` and finishes when cast; answers demand with nothing.
#[derive(Debug)]
struct Finisher;

impl Producer for Finisher {
    type Out = u64;

    async fn handle_demand(&mut self, _: usize, _: &mut Context<Self>) -> Vec<u64> {
        Vec::new()
    }
}

impl Cast<()> for Finisher {
    async fn handle_cast(&mut self, _: (), ctx: &mut Context<Self>) {
        ctx.emit(vec![1, 2, 3]);
        ctx.finish();
    }
}

#[tokio::test(start_paused = true)]
async fn a_finished_producer_stops_only_once_its_buffer_is_flushed() {
    let p = stage::producer(Finisher).start().unwrap();
    let (c, id) = manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Transient)).await;
    p.cast(()).unwrap();
    settle().await;
    assert!(p.is_running(), "three events still buffered");
    c.ask(id, 2).unwrap();
    settle().await;
    assert!(p.is_running(), "one event still buffered");
    c.ask(id, 1).unwrap();
    assert_eq!(within(p.join()).await, Reason::Normal);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3]);
}

// ----- from_stream -----

#[tokio::test(start_paused = true)]
async fn from_stream_emits_in_order_and_never_more_than_asked() {
    let p = stage::from_stream(futures::stream::iter(1..=20u64))
        .start()
        .unwrap();
    let (c, id) = manual_sink_with(&p, SubscribeOptions::new().cancel(CancelMode::Transient)).await;
    c.ask(id, 5).unwrap();
    settle().await;
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        vec![1, 2, 3, 4, 5]
    );
    settle().await;
    assert_eq!(
        p.buffered().await.unwrap(),
        0,
        "nothing pulled beyond demand"
    );
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![]);

    c.ask(id, 100).unwrap();
    assert_eq!(within(p.join()).await, Reason::Normal);
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        (6..=20).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn from_stream_forwards_items_as_they_come_and_stops_when_the_stream_ends() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let items =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let p = stage::from_stream(items).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Transient))
        .start()
        .unwrap();
    settle().await;
    tx.send(1).unwrap();
    settle().await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1]);
    tx.send(2).unwrap();
    tx.send(3).unwrap();
    settle().await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![2, 3]);
    assert!(p.is_running());
    drop(tx);
    assert_eq!(within(p.join()).await, Reason::Normal);
}

// ----- stream() -----

#[tokio::test(start_paused = true)]
async fn stream_of_several_producers_yields_all_and_ends_when_no_subscription_is_left() {
    let a = stage::from_iter(1..=30u64).start().unwrap();
    let b = stage::from_iter(101..=150u64).start().unwrap();
    let opts = || {
        SubscribeOptions::new()
            .max_demand(7)
            .cancel(CancelMode::Transient)
    };
    let s = stage::stream([(&a.producer(), opts()), (&b.producer(), opts())]).unwrap();
    let (got, why) = drain(s).await;
    let from_a: Vec<u64> = got.iter().copied().filter(|&x| x <= 30).collect();
    let from_b: Vec<u64> = got.iter().copied().filter(|&x| x > 100).collect();
    assert_eq!(from_a, (1..=30).collect::<Vec<_>>());
    assert_eq!(from_b, (101..=150).collect::<Vec<_>>());
    assert_eq!(why, Some(Reason::Normal));
}

#[tokio::test(start_paused = true)]
async fn stream_a_temporary_subscription_ending_abnormally_just_removes_it() {
    let a = stage::producer(Source::silent()).start().unwrap();
    let b = stage::producer(Source::silent()).start().unwrap();
    let mut s = stage::stream([
        (&a, SubscribeOptions::new().cancel(CancelMode::Temporary)),
        (&b, SubscribeOptions::new().cancel(CancelMode::Transient)),
    ])
    .unwrap();
    settle().await;
    a.cast(Msg::Emit(vec![1, 2])).unwrap();
    assert_eq!(within(s.next()).await, Some(1));
    assert_eq!(within(s.next()).await, Some(2));
    a.stop(Reason::error("boom")).unwrap();
    within(a.join()).await;
    settle().await;
    assert_eq!(s.exit_reason(), None, "still subscribed to b");
    b.cast(Msg::Emit(vec![3])).unwrap();
    assert_eq!(within(s.next()).await, Some(3));
    b.stop(Reason::Normal).unwrap();
    let (rest, why) = drain(s).await;
    assert_eq!(rest, vec![]);
    assert_eq!(why, Some(Reason::Normal));
}

#[tokio::test(start_paused = true)]
async fn stream_a_permanent_subscription_ending_ends_the_stream_even_with_others_left() {
    let a = stage::from_iter(1..=3u64).start().unwrap();
    let b = stage::producer(Source::silent()).start().unwrap();
    let s = stage::stream([
        (&a.producer(), SubscribeOptions::new()),
        (&b.producer(), SubscribeOptions::new()),
    ])
    .unwrap();
    let (got, why) = drain(s).await;
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(why, Some(Reason::Normal));
    assert!(b.is_running());
}

#[tokio::test(start_paused = true)]
async fn stream_a_transient_subscription_ending_abnormally_ends_the_stream_with_that_reason() {
    let a = stage::producer(Source::silent()).start().unwrap();
    let b = stage::producer(Source::silent()).start().unwrap();
    let mut s = stage::stream([
        (&a, SubscribeOptions::new().cancel(CancelMode::Transient)),
        (&b, SubscribeOptions::new().cancel(CancelMode::Transient)),
    ])
    .unwrap();
    settle().await;
    assert_eq!(s.exit_reason(), None);
    a.stop(Reason::error("boom")).unwrap();
    assert_eq!(within(s.next()).await, None);
    assert_eq!(s.exit_reason(), Some(Reason::error("boom")));
}

#[tokio::test(start_paused = true)]
async fn stream_exit_reason_is_none_while_running_and_the_reason_once_ended() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let mut s = stage::stream([(&p, SubscribeOptions::new())]).unwrap();
    settle().await;
    assert_eq!(s.exit_reason(), None);
    p.cast(Msg::Emit(vec![7])).unwrap();
    assert_eq!(within(s.next()).await, Some(7));
    assert_eq!(s.exit_reason(), None);
    p.stop(Reason::Shutdown).unwrap();
    assert_eq!(within(s.next()).await, None);
    assert_eq!(s.exit_reason(), Some(Reason::Shutdown));
}

/// Takes three events from a stream over a counting producer, drops the stream, and returns
/// the cancels the producer saw.
async fn take_three_and_drop() -> (support::ProducerHandle<Source>, Vec<Cancel>) {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let s = stage::stream([(&p, SubscribeOptions::new().max_demand(10))]).unwrap();
    let first: Vec<u64> = within(s.take(3).collect()).await;
    assert_eq!(first, vec![0, 1, 2]);
    settle().await;
    let cancels = p
        .call(Ask::Log)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Cancelled(Peer::Consumer, cancel, _) => Some(cancel),
            _ => None,
        })
        .collect();
    (p, cancels)
}

#[tokio::test(start_paused = true)]
async fn stream_dropped_early_ends_its_subscriptions_normally_and_the_producer_keeps_running() {
    let (p, cancels) = take_three_and_drop().await;
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(*cancels[0].reason(), Reason::Normal);
    assert!(
        p.is_running(),
        "a producer never exits because a consumer left"
    );
    assert!(p.counters().await.unwrap().consumers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn stream_dropped_early_cancels_its_subscriptions_so_the_producer_sees_a_cancel() {
    let (_p, cancels) = take_three_and_drop().await;
    assert_eq!(
        cancels,
        vec![Cancel::Cancelled(Reason::Normal)],
        "GenStage.stream's early stop calls GenStage.cancel(sub, :normal): {{:cancel, :normal}}"
    );
}

#[tokio::test(start_paused = true)]
async fn stream_with_invalid_options_is_rejected_naming_the_option() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let err = stage::stream([(&p, SubscribeOptions::new().max_demand(0))]).unwrap_err();
    match err {
        StartError::Option(e) => assert_eq!(e.option, "max_demand"),
        other => panic!("expected an option error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn stream_over_a_dead_producer_fails_unless_temporary_which_gives_an_empty_stream() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.stop(Reason::Normal).unwrap();
    within(p.join()).await;
    for mode in [CancelMode::Permanent, CancelMode::Transient] {
        let err = stage::stream([(&p, SubscribeOptions::new().cancel(mode))]).unwrap_err();
        assert_eq!(err, StartError::ProducerClosed, "{mode:?}");
    }
    let s = stage::stream([(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))]).unwrap();
    let (got, _) = drain(s).await;
    assert_eq!(got, vec![]);
}

/// GenStage's `on_cancel: :stop`: an iterator producer told to stop when unsubscribed ends
/// normally once its last consumer leaves; by default it keeps waiting for new consumers.
#[tokio::test(start_paused = true)]
async fn an_iter_producer_stops_on_cancel_only_when_told_to() {
    for stop in [true, false] {
        let producer = if stop {
            stage::IterProducer::new(0..u64::MAX).stop_on_cancel()
        } else {
            stage::IterProducer::new(0..u64::MAX)
        };
        let p = stage::producer(producer).start().unwrap();
        let opts = stage::SubscribeOptions::new().cancel(stage::CancelMode::Temporary);
        let c = stage::consumer(support::Sink::new()).start().unwrap();
        let id = c.subscribe(&p, opts).await.unwrap();
        c.cancel(id, stage::Reason::Normal).unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(1), p.join()).await;
        if stop {
            assert_eq!(ended, Ok(stage::Reason::Normal));
        } else {
            assert!(
                ended.is_err(),
                "a default iterator producer outlives its consumers"
            );
            assert!(p.is_running());
        }
    }
}
