//! Finishers, ordering and termination (Flow rules O1, O2, O3): collect, collect_blocking, run,
//! spawn/join, into_stream, into_stages and through_stages.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flow::{ErrorKind, Flow, Partition};
use futures::StreamExt;
use stage::{
    Cancel, CancelMode, Consumer, Context, Producer, Reason, SubscribeOptions, SubscriptionId,
};
use support::{Watched, assert_panicked, blocking, sorted, within};

// ----- O1: order within one stage -----

#[test]
fn one_stage_keeps_its_input_order() {
    let partitioned = blocking(|| {
        Flow::from_iter(1..=10u32)
            .partition(Partition::new().stages(1))
            .map(|x| x)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(partitioned, (1..=10).collect::<Vec<_>>());
    let layer = blocking(|| {
        Flow::from_iter(0..5000u32)
            .stages(1)
            .max_demand(7)
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .collect_blocking()
            .unwrap()
    });
    let expected: Vec<u32> = (0..5000).map(|x| x * 3).filter(|x| x % 2 == 0).collect();
    assert_eq!(layer, expected);
}

#[test]
fn a_bare_source_keeps_its_order() {
    let got = blocking(|| Flow::from_iter(0..3000u32).collect_blocking().unwrap());
    assert_eq!(got, (0..3000).collect::<Vec<_>>());
}

#[test]
fn each_partition_sees_one_producer_s_events_in_order() {
    let got = blocking(|| {
        Flow::from_iter(0..4000u32)
            .partition(Partition::by_hash(|x: &u32| *x as usize).stages(4))
            .reduce(Vec::new, |v, x| v.push(x))
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 4);
    for events in got {
        assert!(events.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert_eq!(events.len(), 1000);
    }
}

// ----- finishers agree -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collect_run_and_spawn_agree() {
    let make = || {
        Flow::from_iter(1..=1000u64)
            .map(|x| x * 2)
            .partition(Partition::by_key(|x: &u64| x % 7).stages(3))
            .filter(|x| x % 3 != 0)
    };
    let expected: Vec<u64> = (1..=1000u64)
        .map(|x| x * 2)
        .filter(|x| x % 3 != 0)
        .collect();
    let collected = within(make().collect()).await.unwrap();
    assert_eq!(sorted(collected), expected);

    let sum = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sum);
    let flow = make().map(move |x| {
        s.fetch_add(x as usize, Ordering::SeqCst);
        x
    });
    within(flow.run()).await.unwrap();
    let total: u64 = expected.iter().sum();
    assert_eq!(sum.load(Ordering::SeqCst) as u64, total);

    let sum = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sum);
    let handle = make()
        .map(move |x| {
            s.fetch_add(x as usize, Ordering::SeqCst);
            x
        })
        .spawn();
    within(handle.join()).await.unwrap();
    assert_eq!(sum.load(Ordering::SeqCst) as u64, total);

    let streamed: Vec<u64> = within(make().into_stream().unwrap().collect()).await;
    assert_eq!(sorted(streamed), expected);
}

#[test]
fn collect_blocking_and_run_blocking_work_outside_a_runtime() {
    let got = blocking(|| {
        Flow::from_iter(1..=100)
            .map(|x| x + 1)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (2..=101).collect::<Vec<_>>());
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    blocking(move || {
        Flow::from_iter(1..=100)
            .inspect(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
            })
            .run_blocking()
            .unwrap()
    });
    assert_eq!(seen.load(Ordering::SeqCst), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_finishers_inside_a_runtime_are_refused() {
    let read = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&read);
    let result = Flow::from_iter((0..10).inspect(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    }))
    .map(|x| x)
    .collect_blocking();
    assert!(matches!(
        result.map_err(flow::Error::into_kind),
        Err(ErrorKind::BlockingInRuntime)
    ));
    let result = Flow::from_iter(0..10).run_blocking();
    assert!(matches!(
        result.map_err(flow::Error::into_kind),
        Err(ErrorKind::BlockingInRuntime)
    ));
    assert_eq!(
        read.load(Ordering::SeqCst),
        0,
        "the refused flow never started"
    );
}

#[test]
fn async_finishers_outside_a_runtime_fail_to_start() {
    let result = Flow::from_iter(0..10).map(|x| x).into_stream();
    match result.map_err(flow::Error::into_kind) {
        Err(ErrorKind::Start(stage::StartError::NoRuntime)) => {}
        other => panic!("expected a NoRuntime start error, got {other:?}"),
    }
}

// ----- O2: a panic anywhere fails the finisher; nothing hangs -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_mapper_fails_collect() {
    let result = within(
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .stages(2)
            .map(|x| if x == 5 { panic!("boom in map") } else { x })
            .collect(),
    )
    .await;
    assert_panicked(result, "boom in map");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_fails_run_and_join() {
    let result = within(
        Flow::from_iter(0..1000u32)
            .partition(Partition::new().stages(4))
            .filter(|x| {
                if *x == 999 {
                    panic!("boom in filter")
                } else {
                    true
                }
            })
            .run(),
    )
    .await;
    assert_panicked(result, "boom in filter");
    let handle = Flow::from_iter(0..1000u32)
        .stages(3)
        .inspect(|x| assert_ne!(*x, 500, "boom in inspect"))
        .spawn();
    assert_panicked(within(handle.join()).await, "boom in inspect");
}

#[test]
fn a_panic_fails_collect_blocking() {
    let result = blocking(|| {
        Flow::from_iter(0..100)
            .map(|x: i32| if x == 42 { panic!("boom blocking") } else { x })
            .collect_blocking()
    });
    assert_panicked(result, "boom blocking");
}

/// Runs the flow `make` builds a few times: each run must fail with the panic `needle`.
async fn assert_each_run_panics<T, F>(make: F, needle: &str)
where
    T: Send + std::fmt::Debug + 'static,
    F: Fn(u32) -> Flow<T>,
{
    for round in 0..10 {
        assert_panicked(within(make(round).collect()).await, needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_reducer_is_reported_as_that_panic() {
    assert_each_run_panics(
        |_| {
            Flow::from_iter(0..100u32)
                .stages(2)
                .reduce(
                    || 0u32,
                    |s, x| {
                        assert_ne!(x, 77, "boom in reduce");
                        *s += x
                    },
                )
                .emit_state()
        },
        "boom in reduce",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_on_trigger_is_reported_as_that_panic() {
    // The final trigger can fire (and panic) before the finisher has subscribed to the last
    // stages: the flow must still report the panic, not that a stage was missing.
    assert_each_run_panics(
        |round| {
            let input = if round % 2 == 0 { 0..0u32 } else { 0..100u32 };
            Flow::from_iter(input)
                .stages(2)
                .reduce(|| 0u32, |s, x| *s += x)
                .on_trigger(|_, t| -> Vec<u32> {
                    assert_ne!(t.partition, 1, "boom in on_trigger");
                    vec![]
                })
        },
        "boom in on_trigger",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_partition_hash_is_reported_as_that_panic() {
    assert_each_run_panics(
        |_| {
            Flow::from_iter(0..100u32).map(|x| x).partition(
                Partition::by_hash(|x: &u32| {
                    assert_ne!(*x, 50, "boom in hash");
                    *x as usize
                })
                .stages(3),
            )
        },
        "boom in hash",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_source_iterator_is_reported_as_that_panic() {
    assert_each_run_panics(
        |_| {
            Flow::from_iter((0..100u32).inspect(|x| assert_ne!(*x, 60, "boom in source")))
                .map(|x| x + 1)
        },
        "boom in source",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_bare_source_iterator_is_reported_as_that_panic() {
    assert_each_run_panics(
        |_| Flow::from_iter((0..100u32).inspect(|x| assert_ne!(*x, 61, "boom in bare source"))),
        "boom in bare source",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_departition_merge_is_reported_as_that_panic() {
    assert_each_run_panics(
        |_| {
            Flow::from_iter(0..100u32)
                .stages(3)
                .reduce(|| 0u32, |s, x| *s += x)
                .emit_state()
                .departition(|| 0u32, |_, _| panic!("boom in merge"), |t| t)
        },
        "boom in merge",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_take_sort_comparison_is_reported_as_that_panic() {
    assert_each_run_panics(
        |_| {
            Flow::from_iter(0..100u32)
                .stages(2)
                .take_sort(3, |_: &u32, _: &u32| panic!("boom in cmp"))
        },
        "boom in cmp",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_over_an_endless_source_stops_everything() {
    let (iter, dropped) = Watched::new(0u64..);
    let result = within(
        Flow::from_iter(iter)
            .stages(4)
            .max_demand(10)
            .map(|x| if x == 5000 { panic!("boom endless") } else { x })
            .partition(Partition::by_hash(|x: &u64| *x as usize).stages(3))
            .collect(),
    )
    .await;
    assert_panicked(result, "boom endless");
    within(dropped)
        .await
        .expect("the source's producer stopped and dropped its iterator");
}

// ----- dropping an into_stream stops the flow -----

/// Emits 0, 1, 2, ... on demand; reports the first cancel and then stops.
struct Endless {
    next: u64,
    cancelled: Option<tokio::sync::oneshot::Sender<Cancel>>,
}

impl Producer for Endless {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<u64> {
        let start = self.next;
        self.next += demand as u64;
        (start..self.next).collect()
    }

    async fn handle_cancel(&mut self, cancel: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        if let Some(tx) = self.cancelled.take() {
            let _ = tx.send(cancel);
        }
        ctx.stop(Reason::Shutdown);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_stream_stops_the_flow_and_cancels_its_producers() {
    let (tx, cancelled) = tokio::sync::oneshot::channel();
    let producer = stage::producer(Endless {
        next: 0,
        cancelled: Some(tx),
    })
    .start()
    .unwrap();
    let mut stream = Flow::from_stages([producer.producer()])
        .stages(2)
        .max_demand(20)
        .map(|x| x * 2)
        .partition(Partition::by_hash(|x: &u64| *x as usize / 2).stages(2))
        .into_stream()
        .unwrap();
    let mut first = Vec::new();
    for _ in 0..50 {
        first.push(within(stream.next()).await.expect("an endless flow"));
    }
    assert!(first.iter().all(|x| x % 2 == 0));
    drop(stream);
    within(cancelled)
        .await
        .expect("the producer saw its consumer leave");
    assert_eq!(within(producer.join()).await, Reason::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_stream_stops_an_endless_iterator_source() {
    let read = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&read);
    let (iter, dropped) = Watched::new((0u64..).inspect(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    }));
    let mut stream = Flow::from_iter(iter)
        .stages(3)
        .max_demand(10)
        .filter(|x| x % 3 == 0)
        .into_stream()
        .unwrap();
    for _ in 0..30 {
        assert!(within(stream.next()).await.is_some());
    }
    drop(stream);
    within(dropped).await.expect("the iterator was dropped");
    // Back-pressure: the source was read only as far as demand reached, not without end.
    let read = read.load(Ordering::SeqCst);
    assert!(read < 20_000, "read {read} items of an endless source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_bare_source_stream_stops_the_source() {
    let (iter, dropped) = Watched::new(0u64..);
    let mut stream = Flow::from_iter(iter).into_stream().unwrap();
    assert_eq!(within(stream.next()).await, Some(0));
    drop(stream);
    within(dropped).await.expect("the iterator was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reports_the_result_once_it_ends() {
    let mut ok = Flow::from_iter(0..10).map(|x| x).into_stream().unwrap();
    let mut n = 0;
    while within(ok.next()).await.is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    assert!(ok.result().is_ok());
    let mut failing = Flow::from_iter(0..10)
        .map(|x| if x == 3 { panic!("boom stream") } else { x })
        .into_stream()
        .unwrap();
    within(async { while failing.next().await.is_some() {} }).await;
    assert_panicked(failing.result(), "boom stream");
}

// ----- into_stages / through_stages -----

/// Collects what it receives; stops once `expected` producers have all cancelled.
struct Collector {
    out: Arc<Mutex<Vec<u64>>>,
    expected: usize,
    ended: usize,
}

impl Consumer for Collector {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        self.out.lock().unwrap().extend(events);
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        self.ended += 1;
        if self.ended == self.expected {
            ctx.stop(Reason::Normal);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn into_stages_feeds_a_running_consumer() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let consumer = stage::consumer(Collector {
        out: Arc::clone(&out),
        expected: 1,
        ended: 0,
    })
    .start()
    .unwrap();
    within(
        Flow::from_iter(1..=1000u64)
            .map(|x| x * 10)
            .stages(1)
            .into_stages(std::slice::from_ref(&consumer), SubscribeOptions::new()),
    )
    .await
    .unwrap();
    assert_eq!(within(consumer.join()).await, Reason::Normal);
    let got = out.lock().unwrap().clone();
    assert_eq!(got, (1..=1000).map(|x| x * 10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn into_stages_loses_nothing_from_several_last_stages() {
    let out = Arc::new(Mutex::new(Vec::new()));
    let consumer = stage::consumer(Collector {
        out: Arc::clone(&out),
        expected: 3,
        ended: 0,
    })
    .start()
    .unwrap();
    within(
        Flow::from_iter(0..50_000u64)
            .partition(Partition::by_hash(|x: &u64| *x as usize).stages(3))
            .map(|x| x + 1)
            .into_stages(
                std::slice::from_ref(&consumer),
                SubscribeOptions::new().cancel(CancelMode::Transient),
            ),
    )
    .await
    .unwrap();
    assert_eq!(within(consumer.join()).await, Reason::Normal);
    let got = sorted(out.lock().unwrap().clone());
    assert_eq!(got, (1..=50_000).collect::<Vec<_>>());
}

/// Doubles what passes through; finishes once `expected` producers have all ended.
struct Doubler {
    expected: usize,
    ended: usize,
    seen: Arc<AtomicUsize>,
}

impl Producer for Doubler {
    type Out = u64;
}

impl Consumer for Doubler {
    type In = u64;

    async fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        self.seen.fetch_add(events.len(), Ordering::SeqCst);
        ctx.emit(events.into_iter().map(|x| x * 2).collect());
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        self.ended += 1;
        if self.ended == self.expected {
            ctx.finish();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_stages_pipes_the_flow_through_running_stages() {
    let seen = Arc::new(AtomicUsize::new(0));
    let doubler = stage::producer_consumer(Doubler {
        expected: 2,
        ended: 0,
        seen: Arc::clone(&seen),
    })
    .start()
    .unwrap();
    let flow = within(
        Flow::from_iter(1..=3000u64)
            .filter(|x| x % 3 == 0)
            .stages(2)
            .through_stages(
                std::slice::from_ref(&doubler),
                SubscribeOptions::new().cancel(CancelMode::Transient),
            ),
    )
    .await
    .unwrap();
    let got = within(flow.map(|x| x + 1).stages(2).collect())
        .await
        .unwrap();
    let expected: Vec<u64> = (1..=3000u64)
        .filter(|x| x % 3 == 0)
        .map(|x| x * 2 + 1)
        .collect();
    assert_eq!(sorted(got), expected);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1000,
        "every event went through"
    );
    assert_eq!(within(doubler.join()).await, Reason::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_stages_with_one_last_stage_and_permanent_subscriptions() {
    let seen = Arc::new(AtomicUsize::new(0));
    let doubler = stage::producer_consumer(Doubler {
        expected: usize::MAX,
        ended: 0,
        seen: Arc::clone(&seen),
    })
    .start()
    .unwrap();
    let flow = within(
        Flow::from_iter(1..=100u64)
            .map(|x| x)
            .stages(1)
            .through_stages(std::slice::from_ref(&doubler), SubscribeOptions::new()),
    )
    .await
    .unwrap();
    let got = within(flow.stages(1).map(|x| x).collect()).await.unwrap();
    assert_eq!(got, (1..=100).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(within(doubler.join()).await, Reason::Normal);
}
