//! The plan as data: `explain()` (and `Debug`) print what will run, and the plan is checked
//! in one pass before anything starts.

mod support;

use std::time::Duration;

use flow::{Flow, JoinKind, Partition, Side, Window};

/// A word count: two iterators, a mapping layer, a partition by key, a reduce.
fn word_count() -> Flow<(String, usize)> {
    Flow::from_iters([vec!["a b", "c"], vec!["b a"]])
        .flat_map(|line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .stages(2)
        .partition(Partition::by_key(|w: &String| w.clone()).stages(3))
        .reduce(std::collections::HashMap::new, |m, w| {
            *m.entry(w).or_insert(0) += 1
        })
        .emit_events()
}

/// Event time over running producers: relays, a partition with watermarks, fixed windows
/// with lateness and a trigger, and a departition.
fn event_time(producers: Vec<stage::ProducerRef<u64>>) -> Flow<u64> {
    Flow::from_stages(producers)
        .partition(
            Partition::by_hash(|t: &u64| *t as usize)
                .stages(2)
                .max_demand(100),
        )
        .window(
            Window::fixed(Duration::from_secs(1), |t: &u64| *t)
                .allowed_lateness(Duration::from_millis(100))
                .trigger_every(10)
                .on_late(|_| ()),
        )
        .reduce(|| 0u64, |n, _| *n += 1)
        .emit_state()
        .departition(|| 0u64, |t, ns| *t += ns.iter().sum::<u64>(), |t| t)
}

/// A window join of a local collection and an iterator, with an operation after it.
fn join() -> Flow<u64> {
    let orders = Flow::from_vec(vec![(1u32, 10u64)]).stages(2);
    let prices = Flow::from_iter([(1u32, 5u64)]).stages(1);
    Flow::window_join(
        JoinKind::LeftOuter,
        orders,
        prices,
        Window::fixed(
            Duration::from_millis(500),
            |e: &Side<(u32, u64), (u32, u64)>| e.either(|o| o.1, |p| p.1),
        )
        .idle_timeout(Duration::from_secs(2)),
        |o: &(u32, u64)| o.0,
        |p: &(u32, u64)| p.0,
        |o, p| o.map_or(0, |o| o.1) * p.map_or(1, |p| p.1),
    )
    .stages(4)
    .filter(|x| *x > 0)
}

#[test]
fn explain_a_word_count() {
    assert_eq!(
        word_count().explain(),
        "\
[0] from_iters: 2 stages, reading 2 producers
    demand: max 1000, min 500
    window: global
    ops: flat_map
    emits to [1] through a partition dispatcher (by key, 3 partitions)
[1] layer: 3 stages, reading [0] by partition
    demand: max 1000, min 500
    window: global
    ops: reduce, emit_events
    emits to the finisher
"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_event_time_over_running_producers() {
    let a = stage::from_iter(0..10u64).start().unwrap();
    let b = stage::from_iter(0..10u64).start().unwrap();
    assert_eq!(
        event_time(vec![a.producer(), b.producer()]).explain(),
        "\
[0] from_stages: 2 producers, each relayed by a stage of its own
    emits to [1] through a partition dispatcher (by hash, 2 partitions), with watermarks
[1] layer: 2 stages, reading [0] by partition
    demand: max 100, min 50
    window: fixed, 1000 ms of event time, allowed lateness 100 ms; triggers: every 10 events; late events reported
    ops: reduce, emit_state, tag for departition
    emits to [2] through a demand dispatcher
[2] departition: 1 stage, reading [1]
    demand: max 1000, min 500
    window: global
    emits to the finisher
"
    );
}

#[test]
fn explain_a_window_join() {
    let plan = "\
[0] from_vec: 2 stages
    demand: max 1000, min 500
    window: global
    ops: left side
    emits to [2] through a partition dispatcher (by key, 4 partitions), with watermarks
[1] from_iters: 1 stage, reading 1 producer
    demand: max 1000, min 500
    window: global
    ops: right side
    emits to [2] through a partition dispatcher (by key, 4 partitions), with watermarks
[2] left outer join: 4 stages, reading [0], [1] by key
    demand: max 1000, min 500
    window: fixed, 500 ms of event time, idle inputs left out after 2000 ms
    ops: join, filter
    emits to the finisher
";
    assert_eq!(join().explain(), plan);
    assert_eq!(format!("{:?}", join()), format!("Flow\n{plan}"));
}

#[test]
fn explain_shows_what_runs_directly_and_what_merges() {
    // Without operations the sources feed the next layer (and the finisher) directly.
    let merged = Flow::merge([
        Flow::from_iter(0..3u32),
        Flow::from_iter(0..3u32).map(|x| x + 1).stages(2),
    ])
    .stages(2);
    assert_eq!(
        merged.explain(),
        "\
[0] from_iters: 1 producer
    emits to [2] through a demand dispatcher
[1] from_iters: 2 stages, reading 1 producer
    demand: max 1000, min 500
    window: global
    ops: map
    emits to [2] through a demand dispatcher
[2] layer: 2 stages, reading [0], [1]
    demand: max 1000, min 500
    window: global
    emits to the finisher
"
    );
    let bare = Flow::from_iter(0..3u32);
    assert_eq!(
        bare.explain(),
        "[0] from_iters: 1 producer\n    emits to the finisher\n"
    );
    let failed = Flow::from_iters(Vec::<Vec<u32>>::new());
    assert!(
        failed.explain().starts_with("invalid flow:"),
        "{}",
        failed.explain()
    );
}

#[test]
fn the_plan_is_checked_in_one_pass_before_anything_runs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let read = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&read);
    let left = Flow::from_iter((0..100u32).inspect(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    }))
    .map(|x| (x, x));
    let right = Flow::from_iter([(1u32, 1u32)]).map(|x| x).min_demand(2000);
    let joined = Flow::bounded_join(
        JoinKind::Inner,
        left,
        right,
        |l: &(u32, u32)| l.0,
        |r: &(u32, u32)| r.0,
        |l, r| (l.copied(), r.copied()),
    )
    .stages(0);
    let result = support::blocking(move || joined.collect_blocking());
    assert_eq!(support::option_name(result), "min_demand", "upstream first");
    assert_eq!(read.load(Ordering::SeqCst), 0, "nothing ran");
}

#[test]
fn a_window_that_reads_events_is_refused_where_the_events_are_not_the_flows() {
    let departitioned = support::blocking(|| {
        Flow::from_iter(0..10u64)
            .stages(2)
            .reduce(|| 0u64, |n, _| *n += 1)
            .emit_state()
            .departition(|| 0u64, |t, ns| *t += ns.iter().sum::<u64>(), |t| t)
            .window(Window::fixed(Duration::from_secs(1), |t: &u64| *t))
            .collect_blocking()
    });
    support::assert_misuse(departitioned);
    let custom_after_map = support::blocking(|| {
        Flow::from_iter(0..10u64)
            .map(|x| x)
            .window(
                Window::global().trigger(|| (), |_: &[u64], _: &mut ()| flow::Punctuation::Cont),
            )
            .collect_blocking()
    });
    support::assert_misuse(custom_after_map);
}
