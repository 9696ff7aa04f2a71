//! GenStage §2.12, info messages (`StageHandle::info`, GenStage's `async_info`): a consumer
//! handles one at once; a producer at once when its buffer is empty, otherwise when draining
//! passes the marker; a producer-consumer queues it behind its inbound events, or else follows
//! the producer rule; several infos keep FIFO order with each other and with events (the exact
//! example of rule 4, with a manual consumer); `info` returns without waiting for delivery.

mod support;

use stage::{CallError, Reason, SubscribeOptions};
use support::{
    Ask, Msg, Seen, Source, Through, ask_settled, events, infos, manual_sink, settle, within,
};

/// Event messages and infos in the order a stage saw them.
fn events_and_infos(log: Vec<Seen<u64>>) -> Vec<Seen<u64>> {
    log.into_iter()
        .filter(|s| matches!(s, Seen::Events(..) | Seen::Info(_)))
        .collect()
}

fn tags(names: &[&'static str]) -> Vec<Msg<u64>> {
    names.iter().map(|&n| Msg::Tag(n)).collect()
}

#[tokio::test]
async fn rule1_a_consumer_handles_an_info_at_once_in_mailbox_order() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    c.info(Msg::Tag("before")).unwrap();
    ask_settled(&c, id, 5, &p).await;
    p.cast(Msg::Emit(vec![1, 2])).unwrap();
    p.counters().await.unwrap();
    c.info(Msg::Tag("after")).unwrap();
    let log = events_and_infos(c.call(Ask::Log).await.unwrap());
    assert_eq!(
        log,
        vec![
            Seen::Info(Msg::Tag("before")),
            Seen::Events(id, vec![1, 2]),
            Seen::Info(Msg::Tag("after")),
        ]
    );
}

#[tokio::test]
async fn rule2_a_producer_with_an_empty_buffer_handles_an_info_at_once() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.info(Msg::Tag("now")).unwrap();
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), tags(&["now"]));

    // Also right after its buffer was drained.
    p.cast(Msg::Emit(vec![1])).unwrap();
    let (c, id) = manual_sink(&p).await;
    ask_settled(&c, id, 1, &p).await;
    p.info(Msg::Tag("drained")).unwrap();
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), tags(&["drained"]));
}

#[tokio::test]
async fn rule2_5_a_producer_info_waits_behind_buffered_events_and_info_does_not_wait_for_it() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    // Returns at once although the message cannot be handled yet.
    assert_eq!(p.info(Msg::Tag("a")), Ok(()));
    settle().await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);

    let (c, id) = manual_sink(&p).await;
    ask_settled(&c, id, 2, &p).await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);
    ask_settled(&c, id, 1, &p).await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), tags(&["a"]));
}

#[tokio::test]
async fn rule4_infos_keep_fifo_order_with_events_the_spec_example() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap(); // :a, :b, :c
    p.info(Msg::Tag("d")).unwrap();
    p.info(Msg::Tag("e")).unwrap();
    p.info(Msg::Tag("f")).unwrap();
    p.cast(Msg::Emit(vec![7, 8])).unwrap(); // :g, :h
    p.info(Msg::Tag("i")).unwrap();
    p.counters().await.unwrap();
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);

    ask_settled(&c, id, 5, &p).await;
    let log = events_and_infos(c.call(Ask::Log).await.unwrap());
    assert_eq!(
        log,
        vec![
            Seen::Events(id, vec![1, 2, 3]),
            Seen::Events(id, vec![7, 8])
        ],
        "the consumer gets [a, b, c] and [g, h]: draining stops at the markers between them"
    );
    assert_eq!(
        infos(&p.call(Ask::Log).await.unwrap()),
        tags(&["d", "e", "f", "i"])
    );
}

#[tokio::test]
async fn rule4_each_marker_is_handled_exactly_when_draining_passes_it() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.info(Msg::Tag("d")).unwrap();
    p.info(Msg::Tag("e")).unwrap();
    p.cast(Msg::Emit(vec![7, 8])).unwrap();
    p.info(Msg::Tag("i")).unwrap();

    ask_settled(&c, id, 2, &p).await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);
    ask_settled(&c, id, 1, &p).await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), tags(&["d", "e"]));
    ask_settled(&c, id, 1, &p).await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);
    ask_settled(&c, id, 1, &p).await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), tags(&["i"]));
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        vec![1, 2, 3, 7, 8]
    );
}

#[tokio::test]
async fn rule3_a_producer_consumer_info_waits_in_its_inbound_queue() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    settle().await;
    p.cast(Msg::Emit(vec![1, 2])).unwrap();
    p.counters().await.unwrap();
    pc.counters().await.unwrap();
    pc.info(Msg::Tag("x")).unwrap();
    p.cast(Msg::Emit(vec![3])).unwrap();
    settle().await;
    assert_eq!(events_and_infos(pc.call(Ask::Log).await.unwrap()), vec![]);

    ask_settled(&c, id, 10, &pc).await;
    let log = events_and_infos(pc.call(Ask::Log).await.unwrap());
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        matches!(&log[0], Seen::Events(_, e) if *e == vec![1, 2]),
        "{log:?}"
    );
    assert_eq!(log[1], Seen::Info(Msg::Tag("x")));
    assert!(
        matches!(&log[2], Seen::Events(_, e) if *e == vec![3]),
        "{log:?}"
    );
}

#[tokio::test]
async fn rule3_a_producer_consumer_with_an_empty_inbox_holds_the_info_in_its_buffer() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::doubler())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    ask_settled(&c, id, 1, &pc).await;
    p.cast(Msg::Emit(vec![5])).unwrap();
    settle().await;
    assert_eq!(pc.counters().await.unwrap().buffered, 1);
    assert_eq!(pc.counters().await.unwrap().inbox, 0);
    pc.info(Msg::Tag("x")).unwrap();
    settle().await;
    assert_eq!(infos(&pc.call(Ask::Log).await.unwrap()), vec![]);

    ask_settled(&c, id, 1, &pc).await;
    assert_eq!(infos(&pc.call(Ask::Log).await.unwrap()), tags(&["x"]));
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![5, 5]);
}

#[tokio::test]
async fn rule3_a_producer_consumer_with_nothing_queued_handles_an_info_at_once() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;
    pc.info(Msg::Tag("x")).unwrap();
    assert_eq!(infos(&pc.call(Ask::Log).await.unwrap()), tags(&["x"]));
}

#[tokio::test]
async fn info_to_a_stopped_stage_fails() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.stop(Reason::Normal).unwrap();
    within(p.join()).await;
    assert_eq!(p.info(Msg::Tag("late")), Err(CallError::Closed));
}
