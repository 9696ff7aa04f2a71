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
    type Call = ();
    type Reply = ();
    type Msg = ();

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<u64>) -> Vec<u64> {
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
