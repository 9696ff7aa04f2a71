//! Failure paths of flows (issue 10): a panic anywhere fails the flow instead of hanging it or
//! its caller, options that cannot work are typed errors, and nothing outlives a dropped
//! stream.

mod support;

use std::time::Duration;

use flow::{ErrorKind, Flow, Partition, Window};
use futures::StreamExt;
use support::{Watched, assert_panicked, blocking, option_name, within};

fn panics_at_5001(x: u64) -> u64 {
    if x == 5001 {
        panic!("boom at 5001");
    }
    x
}

fn partitioned_then_panicking() -> Flow<u64> {
    Flow::from_iter(0..10_000u64)
        .stages(1)
        .partition(Partition::by_hash(|x: &u64| *x as usize).stages(2))
        .map(panics_at_5001)
}

#[test]
fn a_panic_in_a_partitioned_last_layer_fails_collect() {
    // Before: the other partition's stage waited for ever on a producer that waited for ever
    // on the dead stage's partition.
    assert_panicked(
        blocking(|| partitioned_then_panicking().collect_blocking()),
        "boom at 5001",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_partitioned_last_layer_fails_run_and_into_stream() {
    assert_panicked(
        within(partitioned_then_panicking().run()).await,
        "boom at 5001",
    );
    let mut stream = partitioned_then_panicking().into_stream().unwrap();
    within(async { while stream.next_batch().await.is_some() {} }).await;
    assert_panicked(stream.result(), "boom at 5001");
}

#[test]
fn a_stream_that_panics_fails_the_flow() {
    let result = blocking(|| {
        let items = futures::stream::iter(0..100u32).map(|x| {
            assert!(x != 42, "the stream broke");
            x
        });
        Flow::from_stream(items).stages(2).collect_blocking()
    });
    assert_panicked(result, "the stream broke");
}

#[test]
fn a_panic_in_reduces_init_fails_the_flow_not_the_caller() {
    let result = blocking(|| {
        Flow::from_iter(0..10u32)
            .stages(2)
            .reduce(|| -> u32 { panic!("init broke") }, |acc, x| *acc += x)
            .emit_state()
            .collect_blocking()
    });
    assert_panicked(result, "init broke");
}

#[test]
fn take_sort_of_usize_max_keeps_everything_sorted() {
    let got = blocking(|| {
        Flow::from_iter([5, 3, 9, 1])
            .stages(2)
            .take_sort(usize::MAX, |a: &i32, b: &i32| a.cmp(b))
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![1, 3, 5, 9]]);
}

#[test]
fn too_many_stages_is_an_option_error_not_a_crash() {
    let partitioned = blocking(|| {
        Flow::from_iter(0..10u32)
            .partition(Partition::new().stages(usize::MAX))
            .collect_blocking()
    });
    assert_eq!(option_name(partitioned), "stages");
    // On a bare source it used to be ignored silently.
    let bare = blocking(|| {
        Flow::from_iter(0..10u32)
            .stages(usize::MAX)
            .collect_blocking()
    });
    assert_eq!(option_name(bare), "stages");
    let huge_demand = blocking(|| {
        Flow::from_iter(0..10u32)
            .map(|x| x)
            .max_demand(usize::MAX)
            .collect_blocking()
    });
    assert_eq!(option_name(huge_demand), "max_demand");
}

#[test]
fn stages_on_a_bare_source_are_run() {
    let got = blocking(|| Flow::from_iter(0..1000u32).stages(3).collect_blocking());
    assert_eq!(got.unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_of_a_from_stream_flow_drops_the_users_stream() {
    let (items, dropped) = Watched::new(0..u64::MAX);
    let mut stream = Flow::from_stream(futures::stream::iter(items))
        .stages(2)
        .into_stream()
        .unwrap();
    let first: Vec<u64> = within(stream.by_ref().take(10).collect()).await;
    assert_eq!(first.len(), 10);
    drop(stream);
    // Before: its producer, its feeding task and the stream lived for ever.
    within(dropped).await.expect("the stream was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_far_ahead_in_event_time_does_not_block_a_stage() {
    // 1 ms windows and an event 10^9 ms ahead: a billion gap windows. They are closed a
    // thousand or so at a time, so the first ones come out at once and dropping the stream
    // stops the stage between two steps.
    let mut stream = Flow::from_iter([0u64, 1_000_000_000])
        .stages(1)
        .max_demand(1)
        .window(Window::fixed(Duration::from_millis(1), |t: &u64| *t))
        .reduce(|| 0u32, |n, _| *n += 1)
        .emit_state()
        .into_stream()
        .unwrap();
    let first: Vec<u32> = within(stream.by_ref().take(5_000).collect()).await;
    assert_eq!(first[0], 1, "window 0 holds one event");
    assert!(first[1..].iter().all(|&n| n == 0), "then empty gap windows");
    let handle = tokio::runtime::Handle::current();
    drop(stream);
    within(async {
        while handle.metrics().num_alive_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

#[test]
fn a_failed_flow_reports_the_first_failure() {
    let result = blocking(|| {
        Flow::from_iter(0..1000u64)
            .stages(2)
            .map(|x| if x == 10 { panic!("first") } else { x })
            .partition(Partition::new().stages(2))
            .collect_blocking()
    });
    match result.map_err(|e| e.into_kind()) {
        Err(ErrorKind::Failed(stage::Reason::Panic(msg))) => assert!(msg.contains("first")),
        other => panic!("expected the panic, got {other:?}"),
    }
}
