//! Sources: when they start (M1), how many producers (M3), empty sources, and the stage and
//! demand options checked when a flow starts.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow::{ErrorKind, Flow, Partition};
use futures::StreamExt;
use stage::{Context, Producer, Reason};
use support::{Tasks, Watched, assert_misuse, blocking, option_name, sorted, within};

/// An iterator over `0..n` that counts the items read from it.
fn counted(n: u32, read: &Arc<AtomicUsize>) -> impl Iterator<Item = u32> + Send + 'static {
    let read = Arc::clone(read);
    (0..n).inspect(move |_| {
        read.fetch_add(1, Ordering::SeqCst);
    })
}

// ----- M1: nothing starts before a finisher -----

#[test]
fn building_a_flow_outside_a_runtime_reads_nothing() {
    let read = Arc::new(AtomicUsize::new(0));
    let flow = Flow::from_iter(counted(100, &read))
        .map(|x| x + 1)
        .partition(Partition::new().stages(2))
        .reduce(|| 0u32, |s, x| *s += x)
        .emit_state();
    assert_eq!(read.load(Ordering::SeqCst), 0);
    let sums = blocking(move || flow.collect_blocking().unwrap());
    assert_eq!(sums.iter().sum::<u32>(), (1..=100).sum::<u32>());
    assert_eq!(read.load(Ordering::SeqCst), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_a_flow_inside_a_runtime_starts_nothing_until_collected() {
    let read = Arc::new(AtomicUsize::new(0));
    let flow = Flow::from_iter(counted(50, &read)).map(|x| x * 2).stages(2);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        read.load(Ordering::SeqCst),
        0,
        "the source was read before a finisher"
    );
    let got = within(flow.collect()).await.unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(read.load(Ordering::SeqCst), 50);
}

#[test]
fn a_flow_dropped_unrun_never_reads_its_source() {
    let read = Arc::new(AtomicUsize::new(0));
    let (iter, mut dropped) = Watched::new(counted(10, &read));
    let flow = Flow::from_iter(iter).map(|x| x + 1);
    drop(flow);
    assert!(
        dropped.try_recv().is_ok(),
        "the iterator is dropped with the flow"
    );
    assert_eq!(read.load(Ordering::SeqCst), 0);
}

// ----- M3: one producer per iterator -----

#[test]
fn each_iterator_gets_its_own_producer() {
    let readers = Tasks::new();
    let mappers = Tasks::new();
    let iters: Vec<_> = (0..3u32)
        .map(|i| {
            let r = readers.clone();
            (i * 1000..i * 1000 + 1000).inspect(move |x| r.record(*x))
        })
        .collect();
    let m = mappers.clone();
    let got = blocking(move || {
        Flow::from_iters(iters)
            .map(move |x| {
                m.record(x);
                x
            })
            .stages(2)
            .max_demand(50)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (0..3000).collect::<Vec<_>>());
    let by_item = readers.get();
    for i in 0..3u32 {
        let tasks: std::collections::HashSet<_> =
            (i * 1000..i * 1000 + 1000).map(|x| by_item[&x]).collect();
        assert_eq!(tasks.len(), 1, "iterator {i} is read by one producer");
    }
    assert_eq!(readers.distinct().len(), 3, "one producer per iterator");
    assert!(
        mappers.distinct().len() <= 2,
        "stages(2) runs two mapper stages"
    );
    assert!(readers.distinct().is_disjoint(&mappers.distinct()));
}

#[test]
fn a_bare_source_feeds_the_finisher_directly() {
    // M3: without operations the layer's `stages` is ignored; one producer per iterator.
    let readers = Tasks::new();
    let iters: Vec<_> = (0..2u32)
        .map(|i| {
            let r = readers.clone();
            (i * 100..i * 100 + 100).inspect(move |x| r.record(*x))
        })
        .collect();
    let got = blocking(move || {
        Flow::from_iters(iters)
            .stages(7)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (0..200).collect::<Vec<_>>());
    assert_eq!(readers.distinct().len(), 2);
}

#[test]
fn from_iter_yields_every_item() {
    let got = blocking(|| Flow::from_iter(0..10_000u64).collect_blocking().unwrap());
    assert_eq!(sorted(got), (0..10_000).collect::<Vec<_>>());
}

#[test]
fn from_stream_and_from_streams() {
    let got = blocking(|| {
        Flow::from_stream(futures::stream::iter(0..500u32))
            .map(|x| x + 1)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (1..=500).collect::<Vec<_>>());

    let readers = Tasks::new();
    let streams: Vec<_> = (0..3u32)
        .map(|i| {
            let r = readers.clone();
            futures::stream::iter(i * 100..i * 100 + 100).inspect(move |x| r.record(*x))
        })
        .collect();
    let got = blocking(move || {
        Flow::from_streams(streams)
            .filter(|x| x % 2 == 0)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(
        sorted(got),
        (0..300).filter(|x| x % 2 == 0).collect::<Vec<_>>()
    );
    assert_eq!(readers.distinct().len(), 3, "one producer per stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_stages_reads_running_producers() {
    let a = stage::from_iter(1..=100u32).start().unwrap();
    let b = stage::from_iter(101..=200u32).start().unwrap();
    let got = within(
        Flow::from_stages([a.producer(), b.producer()])
            .map(|x| x * 2)
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(sorted(got), (1..=200).map(|x| x * 2).collect::<Vec<_>>());
    assert_eq!(within(a.join()).await, Reason::Normal);
    assert_eq!(within(b.join()).await, Reason::Normal);
}

/// A producer of 0, 1, 2, ... for as long as it is asked.
struct Counter(u64);

impl Producer for Counter {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<u64> {
        let start = self.0;
        self.0 += demand as u64;
        (start..self.0).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_producer_that_shuts_down_ends_the_flow_normally() {
    let counter = stage::producer(Counter(0)).start().unwrap();
    let mut stream = Flow::from_stages([counter.producer()])
        .stages(2)
        .max_demand(10)
        .map(|x| x + 1)
        .into_stream()
        .unwrap();
    let first = within(stream.next()).await;
    assert!(first.is_some());
    counter.stop(Reason::Shutdown).unwrap();
    within(async { while stream.next().await.is_some() {} }).await;
    assert!(stream.result().is_ok(), "{:?}", stream.result());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_producer_that_fails_fails_the_flow() {
    let counter = stage::producer(Counter(0)).start().unwrap();
    let mut stream = Flow::from_stages([counter.producer()])
        .stages(2)
        .max_demand(10)
        .map(|x| x + 1)
        .into_stream()
        .unwrap();
    assert!(within(stream.next()).await.is_some());
    counter.stop(Reason::error("upstream broke")).unwrap();
    within(async { while stream.next().await.is_some() {} }).await;
    match stream.result().map_err(flow::Error::into_kind) {
        Err(ErrorKind::Failed(reason)) => assert_eq!(reason, Reason::error("upstream broke")),
        other => panic!("expected the producer's failure, got {other:?}"),
    }
}

// ----- empty sources -----

#[test]
fn empty_iterators_give_empty_flows() {
    let bare = blocking(|| {
        Flow::from_iter(Vec::<u32>::new())
            .collect_blocking()
            .unwrap()
    });
    assert!(bare.is_empty());
    let mapped = blocking(|| {
        Flow::from_iters([Vec::<u32>::new(), Vec::new()])
            .map(|x| x + 1)
            .partition(Partition::new().stages(3))
            .collect_blocking()
            .unwrap()
    });
    assert!(mapped.is_empty());
    let streamed = blocking(|| {
        Flow::from_stream(futures::stream::empty::<u32>())
            .collect_blocking()
            .unwrap()
    });
    assert!(streamed.is_empty());
}

#[test]
fn an_empty_source_still_fires_each_stage_s_final_trigger() {
    // R5: every stage of a global window fires Done once, even when it saw nothing.
    let got = blocking(|| {
        Flow::from_iter(Vec::<u32>::new())
            .stages(3)
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [0, 0, 0]);
    let got = blocking(|| {
        Flow::from_iter(Vec::<u32>::new())
            .partition(Partition::new().stages(2))
            .reduce(Vec::new, |v, x| v.push(x))
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [Vec::<u32>::new(), Vec::new()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sources_at_all_is_an_error() {
    assert_misuse(Flow::from_iters(Vec::<Vec<u32>>::new()).collect().await);
    assert_misuse(
        Flow::from_streams(Vec::<futures::stream::Iter<std::vec::IntoIter<u32>>>::new())
            .collect()
            .await,
    );
    assert_misuse(
        Flow::from_stages(Vec::<stage::ProducerRef<u32>>::new())
            .collect()
            .await,
    );
    // The error survives later operators.
    assert_misuse(
        Flow::from_iters(Vec::<Vec<u32>>::new())
            .map(|x| x + 1)
            .partition(Partition::new().stages(2))
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .collect()
            .await,
    );
}

// ----- options, checked when the flow starts -----

#[test]
fn zero_stages_is_an_option_error() {
    let read = Arc::new(AtomicUsize::new(0));
    let (r1, r2, r3) = (read.clone(), read.clone(), read.clone());
    let bare = blocking(move || {
        Flow::from_iter(counted(10, &r1))
            .stages(0)
            .collect_blocking()
    });
    assert_eq!(option_name(bare), "stages");
    let layer = blocking(move || {
        Flow::from_iter(counted(10, &r2))
            .map(|x| x)
            .stages(0)
            .collect_blocking()
    });
    assert_eq!(option_name(layer), "stages");
    let partition = blocking(move || {
        Flow::from_iter(counted(10, &r3))
            .partition(Partition::new().stages(0))
            .collect_blocking()
    });
    assert_eq!(option_name(partition), "stages");
    assert_eq!(read.load(Ordering::SeqCst), 0, "nothing ran");
}

#[test]
fn zero_max_demand_is_an_option_error() {
    let bare = blocking(|| Flow::from_iter(0..10).max_demand(0).collect_blocking());
    assert_eq!(option_name(bare), "max_demand");
    let layer = blocking(|| {
        Flow::from_iter(0..10)
            .filter(|_| true)
            .max_demand(0)
            .collect_blocking()
    });
    assert_eq!(option_name(layer), "max_demand");
    let partition = blocking(|| {
        Flow::from_iter(0..10)
            .partition(Partition::new().stages(2).max_demand(0))
            .collect_blocking()
    });
    assert_eq!(option_name(partition), "max_demand");
}

#[test]
fn min_demand_not_below_max_demand_is_an_option_error() {
    let equal = blocking(|| {
        Flow::from_iter(0..10)
            .map(|x| x)
            .max_demand(10)
            .min_demand(10)
            .collect_blocking()
    });
    assert_eq!(option_name(equal), "min_demand");
    let above_default = blocking(|| {
        Flow::from_iter(0..10)
            .map(|x| x)
            .min_demand(1000)
            .collect_blocking()
    });
    assert_eq!(option_name(above_default), "min_demand");
    let partition = blocking(|| {
        Flow::from_iter(0..10)
            .partition(Partition::new().stages(2).max_demand(5).min_demand(7))
            .collect_blocking()
    });
    assert_eq!(option_name(partition), "min_demand");
    // Just below is fine.
    let ok = blocking(|| {
        Flow::from_iter(0..10)
            .map(|x| x)
            .max_demand(10)
            .min_demand(9)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(ok), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_bad_option_upstream_fails_the_whole_flow_before_anything_runs() {
    let read = Arc::new(AtomicUsize::new(0));
    let r = read.clone();
    let result = blocking(move || {
        Flow::from_iter(counted(100, &r))
            .map(|x| x + 1)
            .max_demand(0)
            .partition(Partition::new().stages(2))
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .collect_blocking()
    });
    assert_eq!(option_name(result), "max_demand");
    assert_eq!(read.load(Ordering::SeqCst), 0);
}

#[test]
fn the_option_error_message_names_the_option() {
    let err = blocking(|| {
        Flow::from_iter(0..3)
            .map(|x| x)
            .stages(0)
            .collect_blocking()
            .unwrap_err()
    });
    assert!(err.to_string().contains("stages"), "{err}");
}

// ----- local sources: from_vec and from_shared -----
//
// The first layer's stages read these themselves (no producer stage), so the same rules must
// hold: every event once, reading only as far as downstream asks, windows counting the events
// as they are read, a failure reported.

/// `0..n`, as each local source reads it, mapped by every stage.
fn local_flows(n: u32) -> [(&'static str, Flow<u32>); 2] {
    let shared: Arc<Vec<u32>> = Arc::new((0..n).collect());
    [
        ("from_vec", Flow::from_vec((0..n).collect())),
        ("from_shared", Flow::from_shared(shared)),
    ]
}

#[test]
fn local_sources_yield_every_event_once_whatever_the_layout() {
    for stages in 1..=3 {
        for max in [1, 7, 1000] {
            for (name, flow) in local_flows(5000) {
                let flow = flow.stages(stages).max_demand(max).map(|x| x * 2);
                let got = blocking(move || flow.collect_blocking().unwrap());
                assert_eq!(
                    sorted(got),
                    (0..5000).map(|x| x * 2).collect::<Vec<_>>(),
                    "{name}, {stages} stages, max_demand {max}"
                );
            }
        }
    }
}

#[test]
fn from_shared_leaves_the_data_for_another_read() {
    let data: Arc<[u32]> = (1..=100).collect::<Vec<_>>().into();
    for _ in 0..2 {
        let data = Arc::clone(&data);
        let sums = blocking(move || {
            Flow::from_shared(data)
                .reduce(|| 0u32, |s, x| *s += x)
                .emit_state()
                .collect_blocking()
                .unwrap()
        });
        assert_eq!(sums.iter().sum::<u32>(), 5050);
    }
    assert_eq!(data.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_stages_read_only_as_far_as_downstream_asks() {
    let read = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&read);
    let data: Arc<Vec<u32>> = Arc::new((0..100_000).collect());
    let mut stream = Flow::from_shared(Arc::clone(&data))
        .stages(2)
        .max_demand(10)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .into_stream()
        .unwrap();
    let first: Vec<u32> = within(stream.by_ref().take(5).collect()).await;
    assert_eq!(first.len(), 5);
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    // The stream asks each stage for its default max_demand (1000); a stage reads whole
    // batches of 10, so at most one batch past what was asked.
    let bound = 2 * (1000 + 10);
    let n = read.load(Ordering::SeqCst);
    assert!(n <= bound, "read {n} ahead of demand");
    // Dropping the stream cancels its subscriptions (what its consumer still held is
    // discarded meanwhile): the stages stop short of the end, and let go of the data.
    drop(stream);
    within(async {
        while Arc::strong_count(&data) > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let n = read.load(Ordering::SeqCst);
    assert!(n < 100_000, "read everything ({n})");
}

#[test]
fn a_local_source_runs_in_as_many_stages_as_asked() {
    for (name, flow) in local_flows(1000) {
        let flow = flow
            .stages(3)
            .reduce(|| 0u32, |n, _| *n += 1)
            .on_trigger(|n, t| vec![(t.partition, t.partitions, std::mem::take(n))]);
        let got = blocking(move || flow.collect_blocking().unwrap());
        let stages: Vec<(usize, usize)> = sorted(got.iter().map(|&(p, c, _)| (p, c)).collect());
        assert_eq!(stages, [(0, 3), (1, 3), (2, 3)], "{name}");
        assert_eq!(got.iter().map(|&(_, _, n)| n).sum::<u32>(), 1000, "{name}");
    }
}

#[test]
fn a_partition_after_a_local_source_counts_exactly() {
    for (name, flow) in local_flows(10_000) {
        let flow = flow
            .partition(Partition::by_key(|x: &u32| x % 10).stages(3))
            .reduce(std::collections::HashMap::new, |m, x| {
                *m.entry(x % 10).or_insert(0u32) += 1
            })
            .emit_events();
        let got = blocking(move || flow.collect_blocking().unwrap());
        assert_eq!(
            sorted(got),
            (0..10).map(|k| (k, 1000)).collect::<Vec<_>>(),
            "{name}"
        );
    }
}

#[test]
fn trigger_every_counts_events_as_a_local_stage_reads_them() {
    // T1: the count is of raw events entering the stage, before the layer's filter.
    let got = blocking(|| {
        Flow::from_vec((1..=20u64).collect())
            .stages(1)
            .window(flow::Window::global().trigger_every(5))
            .filter(|x| x % 2 == 0)
            .reduce(|| 0u64, |s, x| *s += x)
            .on_trigger(|s, _| vec![std::mem::take(s)])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [6, 24, 26, 54, 0]);
}

#[test]
fn fixed_windows_close_in_order_over_a_local_source() {
    let got = blocking(|| {
        Flow::from_vec(vec![1u64, 2, 11, 12, 13, 25])
            .stages(1)
            .window(flow::Window::fixed(
                std::time::Duration::from_millis(10),
                |t: &u64| *t,
            ))
            .reduce(Vec::new, |v, t| v.push(t))
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![1, 2], vec![11, 12, 13], vec![25]]);
}

#[test]
fn a_panic_in_a_local_stage_fails_the_flow() {
    let result = blocking(|| {
        Flow::from_vec(vec![1u32, 2, 3])
            .map(|x| {
                if x == 2 {
                    panic!("two is right out")
                } else {
                    x
                }
            })
            .collect_blocking()
    });
    support::assert_panicked(result, "two is right out");
}

#[test]
fn empty_local_sources_still_fire_each_stage_s_final_trigger() {
    for (name, flow) in local_flows(0) {
        let flow = flow.stages(2).reduce(|| 0u32, |s, x| *s += x).emit_state();
        let got = blocking(move || flow.collect_blocking().unwrap());
        assert_eq!(got, [0, 0], "{name}");
    }
}

#[test]
fn local_sources_check_their_options() {
    let zero = blocking(|| Flow::from_vec(vec![1u32]).stages(0).collect_blocking());
    assert_eq!(option_name(zero), "stages");
    let zero = blocking(|| Flow::from_vec(vec![1u32]).max_demand(0).collect_blocking());
    assert_eq!(option_name(zero), "max_demand");
}
