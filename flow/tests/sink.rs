//! `Flow::into_sink`: everything a flow emits reaches the sink (in order from one stage), a
//! slow sink holds the flow back instead of letting it run ahead, a sink that fails fails the
//! flow and stops it, and a tokio `mpsc::Sender` works through `PollSender`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flow::{ErrorKind, Flow, Partition};
use futures::StreamExt;
use support::{sorted, within};

#[tokio::test]
async fn into_sink_delivers_everything_in_order_from_one_stage() {
    let (tx, rx) = futures::channel::mpsc::channel::<u64>(4);
    let flow = Flow::from_iter(0..10_000u64).stages(1).map(|x| x * 3);
    let (sent, got) =
        within(async { tokio::join!(flow.into_sink(tx), rx.collect::<Vec<_>>()) }).await;
    sent.unwrap();
    assert_eq!(got, (0..10_000u64).map(|x| x * 3).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_sink_from_several_stages_loses_nothing() {
    let (tx, rx) = futures::channel::mpsc::channel::<u64>(16);
    let flow = Flow::from_iter(0..20_000u64)
        .stages(2)
        .partition(Partition::by_key(|x: &u64| x % 5).stages(3))
        .filter(|x| x % 2 == 0);
    let reader = tokio::spawn(rx.collect::<Vec<_>>());
    within(flow.into_sink(tx)).await.unwrap();
    let got = within(reader).await.unwrap();
    assert_eq!(
        sorted(got),
        (0..20_000u64).filter(|x| x % 2 == 0).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_sink_holds_the_flow_back_and_a_failed_one_fails_it() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let read = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&read);
    let (tx, mut rx) = futures::channel::mpsc::channel::<u64>(8);
    let flow = Flow::from_iter(0u64..) // endless
        .stages(1)
        .max_demand(10)
        .inspect(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
    let sending = tokio::spawn(flow.into_sink(tx));
    for expected in 0..500u64 {
        assert_eq!(within(rx.next()).await, Some(expected));
    }
    // Nothing else runs on this paused runtime, so the sleep ends only once every stage is
    // idle: the flow waits for the sink.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ahead = read.load(Ordering::SeqCst) - 500;
    // At most the channel's room, the batch the sink's consumer holds and what it asked for
    // (1,000 by default), and the demand of the stage in front of it (10).
    assert!(
        ahead <= 8 + 1 + 1_000 + 10 + 10,
        "the flow ran {ahead} events ahead of the sink"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(read.load(Ordering::SeqCst) - 500, ahead, "the flow went on");
    // The sink fails once its receiver is gone: the flow stops and says why.
    drop(rx);
    match within(sending)
        .await
        .unwrap()
        .map_err(flow::Error::into_kind)
    {
        Err(ErrorKind::Failed(stage::Reason::Error(why))) => {
            assert!(why.contains("sink"), "{why}")
        }
        other => panic!("expected the sink's failure, got {other:?}"),
    }
    within(async {
        while metrics.num_alive_tasks() > before {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_tokio_sender_is_a_sink_through_poll_sender() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(2);
    let sink = tokio_util::sync::PollSender::new(tx);
    let sending = tokio::spawn(Flow::from_iter(1..=100u32).stages(1).into_sink(sink));
    let mut got = Vec::new();
    while let Some(x) = within(rx.recv()).await {
        got.push(x);
    }
    within(sending).await.unwrap().unwrap();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_panic_in_the_flow_fails_into_sink() {
    let (tx, rx) = futures::channel::mpsc::channel::<u32>(4);
    let reader = tokio::spawn(rx.collect::<Vec<_>>());
    let result = within(
        Flow::from_iter(0..100u32)
            .stages(2)
            .map(|x| {
                if x == 42 {
                    panic!("boom before the sink")
                } else {
                    x
                }
            })
            .into_sink(tx),
    )
    .await;
    support::assert_panicked(result, "boom before the sink");
    // The sink was closed: its reader ends.
    within(reader).await.unwrap();
}
