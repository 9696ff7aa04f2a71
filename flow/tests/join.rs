//! Joins (Flow rules J1-J5) of each kind, on the global window and on fixed windows, checked
//! against a nested-loop reference; the order and moment of pairing on tokio's paused clock.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow::{Flow, JoinKind, Side, Trigger, TriggerName, Window};
use support::{Tasks, blocking, since, sorted, timed};
use tokio::time::Instant;

const KINDS: [JoinKind; 4] = [
    JoinKind::Inner,
    JoinKind::LeftOuter,
    JoinKind::RightOuter,
    JoinKind::FullOuter,
];

/// An event of either side: key, event time (ms), and a name to tell it by.
type Event = (u32, u64, &'static str);

/// What a join emits here: the names of the left and right events paired.
type Pair = (Option<&'static str>, Option<&'static str>);

fn pair(l: Option<&Event>, r: Option<&Event>) -> Pair {
    (l.map(|e| e.2), r.map(|e| e.2))
}

fn key(e: &Event) -> u32 {
    e.0
}

/// Three windows of 1 s; key 1 on both sides in every window, key 2 only on the left (and
/// once on the right, in another window), key 3 only on the right, key 4 on both but never in
/// the same window.
fn left() -> Vec<Event> {
    vec![
        (1, 0, "l1a"),
        (2, 100, "l2a"),
        (1, 400, "l1b"),
        (4, 900, "l4a"),
        (1, 1100, "l1c"),
        (2, 1500, "l2b"),
        (1, 2200, "l1d"),
        (2, 2900, "l2c"),
    ]
}

fn right() -> Vec<Event> {
    vec![
        (1, 50, "r1a"),
        (3, 300, "r3a"),
        (1, 1200, "r1b"),
        (1, 1300, "r1c"),
        (4, 1400, "r4a"),
        (2, 2100, "r2a"),
        (1, 2500, "r1d"),
        (3, 2600, "r3b"),
    ]
}

/// The join of `left` and `right` by a nested loop, per window of `window_ms` (`None`: one
/// window for everything).
fn reference(kind: JoinKind, left: &[Event], right: &[Event], window_ms: Option<u64>) -> Vec<Pair> {
    let window = |e: &Event| window_ms.map_or(0, |ms| e.1 / ms);
    let mut out = Vec::new();
    for l in left {
        for r in right {
            if l.0 == r.0 && window(l) == window(r) {
                out.push(pair(Some(l), Some(r)));
            }
        }
    }
    let unpaired =
        |e: &Event, others: &[Event]| !others.iter().any(|o| o.0 == e.0 && window(o) == window(e));
    if matches!(kind, JoinKind::LeftOuter | JoinKind::FullOuter) {
        for l in left.iter().filter(|l| unpaired(l, right)) {
            out.push(pair(Some(l), None));
        }
    }
    if matches!(kind, JoinKind::RightOuter | JoinKind::FullOuter) {
        for r in right.iter().filter(|r| unpaired(r, left)) {
            out.push(pair(None, Some(r)));
        }
    }
    sorted(out)
}

fn by_time(e: &Side<Event, Event>) -> u64 {
    e.either(|l| l.1, |r| r.1)
}

/// J1, J3: every kind, on the global window (`bounded_join`), whatever the stage counts.
#[test]
fn j1_bounded_joins_of_every_kind_equal_the_nested_loop() {
    for kind in KINDS {
        for (sides, stages) in [(1, 1), (1, 3), (2, 2), (3, 4)] {
            let got = blocking(move || {
                Flow::bounded_join(
                    kind,
                    Flow::from_iter(left()).stages(sides).map(|e| e),
                    Flow::from_iter(right()),
                    key,
                    key,
                    pair,
                )
                .stages(stages)
                .collect_blocking()
                .unwrap()
            });
            assert_eq!(
                sorted(got),
                reference(kind, &left(), &right(), None),
                "{kind:?}, {sides} side stages, {stages} join stages"
            );
        }
    }
}

/// J3, J4: every kind on fixed windows of 1 s: events pair only within a window (`by` reads
/// the raw event, not its key), and a window's `Done` adds its unpaired events and forgets it.
#[test]
fn j3_window_joins_of_every_kind_pair_within_each_window() {
    for kind in KINDS {
        for stages in [1, 2, 3] {
            let got = blocking(move || {
                Flow::window_join(
                    kind,
                    Flow::from_iter(left()),
                    Flow::from_iter(right()).stages(2).filter(|_| true),
                    Window::fixed(Duration::from_secs(1), by_time),
                    key,
                    key,
                    pair,
                )
                .stages(stages)
                .collect_blocking()
                .unwrap()
            });
            assert_eq!(
                sorted(got),
                reference(kind, &left(), &right(), Some(1000)),
                "{kind:?}, {stages} join stages"
            );
        }
    }
}

/// Count windows count the events of both sides entering a join stage: with `count(2)` and
/// the left side first, the two lefts fill window 0 and the two rights window 1, so nothing
/// pairs (with `count(4)`, everything does).
#[tokio::test(start_paused = true)]
async fn j4_count_windows_count_both_sides() {
    for (n, pairs) in [(2, 0), (4, 4)] {
        let l = timed(vec![(0, (1u32, 0u64, "a")), (10, (1, 0, "b"))], None);
        let r = timed(vec![(20, (1u32, 0u64, "x")), (30, (1, 0, "y"))], None);
        let got = tokio::time::timeout(
            Duration::from_secs(60),
            Flow::window_join(
                JoinKind::Inner,
                Flow::from_stream(l),
                Flow::from_stream(r),
                Window::count(n),
                key,
                key,
                pair,
            )
            .stages(1)
            .collect(),
        )
        .await
        .expect("the flow hung")
        .expect("the flow failed");
        assert_eq!(got.len(), pairs, "count({n}): {got:?}");
    }
}

/// J2: each arrival is paired at once with every stored event of the other side, in their
/// arrival order, and then stored; outer rows come only at `Done`.
#[tokio::test(start_paused = true)]
async fn j2_pairs_are_emitted_when_the_second_event_arrives_in_arrival_order() {
    let start = Instant::now();
    let l = timed(
        vec![
            (0, (1u32, 0u64, "l1")),
            (10, (1, 0, "l2")),
            (30, (2, 0, "l3")),
        ],
        Some(100),
    );
    let r = timed(vec![(20, (1u32, 0u64, "r1")), (40, (1, 0, "r2"))], None);
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        Flow::bounded_join(
            JoinKind::FullOuter,
            Flow::from_stream(l),
            Flow::from_stream(r),
            key,
            key,
            pair,
        )
        .stages(1)
        .map(move |p| (p, since(start)))
        .collect(),
    )
    .await
    .expect("the flow hung")
    .expect("the flow failed");
    assert_eq!(
        got,
        [
            ((Some("l1"), Some("r1")), 20),
            ((Some("l2"), Some("r1")), 20),
            ((Some("l1"), Some("r2")), 40),
            ((Some("l2"), Some("r2")), 40),
            ((Some("l3"), None), 100),
        ]
    );
}

/// J3: triggers other than `Done` do not emit unpaired events nor clear the join's state.
#[tokio::test(start_paused = true)]
async fn j3_other_triggers_keep_the_join_state() {
    let start = Instant::now();
    let l = timed(vec![(0, (1u32, 0u64, "l1")), (0, (2, 0, "l2"))], Some(250));
    let r = timed(vec![(150, (1u32, 0u64, "r1"))], None);
    let period = Duration::from_millis(100);
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        Flow::window_join(
            JoinKind::LeftOuter,
            Flow::from_stream(l),
            Flow::from_stream(r),
            Window::global().trigger_periodically(period),
            key,
            key,
            pair,
        )
        .stages(1)
        .map(move |p| (p, since(start)))
        .collect(),
    )
    .await
    .expect("the flow hung")
    .expect("the flow failed");
    assert_eq!(
        got,
        [((Some("l1"), Some("r1")), 150), ((Some("l2"), None), 250)],
        "the ticks at 100 and 200 ms emit nothing and keep l1 for r1"
    );
}

/// J3 on fixed windows, live: a window's unpaired events come out once both sides have
/// passed it, and it is forgotten (a later event of the same key does not pair with it).
#[tokio::test(start_paused = true)]
async fn j3_a_fixed_window_emits_its_unpaired_events_when_both_sides_pass_it() {
    let start = Instant::now();
    let l = timed(
        vec![
            (0, (1u32, 100u64, "l1")),
            (10, (2, 200, "l2")),
            (50, (1, 1100, "l3")),
        ],
        Some(300),
    );
    let r = timed(
        vec![(20, (1u32, 300u64, "r1")), (100, (2, 1200, "r2"))],
        Some(300),
    );
    // One stage per side: a side stage that gets no events holds the windows back (until it
    // finishes, or for an idle timeout).
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        Flow::window_join(
            JoinKind::FullOuter,
            Flow::from_stream(l).stages(1),
            Flow::from_stream(r).stages(1),
            Window::fixed(Duration::from_secs(1), by_time),
            key,
            key,
            pair,
        )
        .stages(2)
        .map(move |p| (p, since(start)))
        .collect(),
    )
    .await
    .expect("the flow hung")
    .expect("the flow failed");
    let mut got = got;
    got.sort_by_key(|(p, at)| (*at, *p));
    assert_eq!(
        got,
        [
            ((Some("l1"), Some("r1")), 20),
            ((Some("l2"), None), 100),
            ((None, Some("r2")), 300),
            ((Some("l3"), None), 300),
        ],
        "window 0 closes at 100 ms, when the right side reaches window 1; window 1 at the end"
    );
}

/// J5: operations after a join run in the join's stages (a reduce there is per join stage).
#[test]
fn j5_operations_after_a_join_run_in_its_stages() {
    let join_stages = Tasks::new();
    let side_stages = Tasks::new();
    let (j, s) = (join_stages.clone(), side_stages.clone());
    let got = blocking(move || {
        let left = Flow::from_iter((0..300u32).map(|i| (i % 30, i)))
            .stages(2)
            .inspect(move |e| s.record(e.1));
        let right = Flow::from_iter((0..30u32).map(|k| (k, 1000 + k)));
        Flow::bounded_join(
            JoinKind::Inner,
            left,
            right,
            |l: &(u32, u32)| l.0,
            |r: &(u32, u32)| r.0,
            |l, r| (l.unwrap().1, r.unwrap().1),
        )
        .stages(3)
        .inspect(move |p| j.record(p.0))
        .reduce(|| 0u32, |n, _| *n += 1)
        .on_trigger(|n, t: &Trigger| vec![(t.partition, t.partitions, *n)])
        .collect_blocking()
        .unwrap()
    });
    let partitions: Vec<(usize, usize)> = sorted(got.iter().map(|&(p, n, _)| (p, n)).collect());
    assert_eq!(
        partitions,
        [(0, 3), (1, 3), (2, 3)],
        "one reduce per join stage"
    );
    assert_eq!(got.iter().map(|&(_, _, n)| n).sum::<u32>(), 300);
    assert!(join_stages.distinct().len() <= 3);
    assert!(join_stages.distinct().is_disjoint(&side_stages.distinct()));
}

/// J1: equal keys meet whatever the flows behind each side (a partition, a reduce).
#[test]
fn j1_sides_may_be_any_flow() {
    let got = blocking(|| {
        let totals = Flow::from_iter((0..100u32).map(|i| (i % 5, i)))
            .partition(flow::Partition::by_key(|e: &(u32, u32)| e.0).stages(2))
            .reduce(HashMap::new, |m: &mut HashMap<u32, u32>, (k, v)| {
                *m.entry(k).or_insert(0) += v
            })
            .emit_events();
        let names = Flow::from_iter([(0u32, "zero"), (3, "three"), (9, "nine")]);
        Flow::bounded_join(
            JoinKind::RightOuter,
            totals,
            names,
            |t: &(u32, u32)| t.0,
            |n: &(u32, &str)| n.0,
            |t, n| (n.unwrap().1, t.map(|t| t.1)),
        )
        .collect_blocking()
        .unwrap()
    });
    let sum = |k: u32| (0..100).filter(|i| i % 5 == k).sum::<u32>();
    assert_eq!(
        sorted(got),
        [
            ("nine", None),
            ("three", Some(sum(3))),
            ("zero", Some(sum(0)))
        ]
    );
}

/// A panic in the join function or a key function fails the flow.
#[test]
fn a_panic_in_a_join_fails_the_flow() {
    let result = blocking(|| {
        Flow::bounded_join(
            JoinKind::Inner,
            Flow::from_iter(left()),
            Flow::from_iter(right()),
            key,
            key,
            |l: Option<&Event>, _| -> u32 { panic!("join broke at {:?}", l.map(|e| e.2)) },
        )
        .collect_blocking()
    });
    support::assert_panicked(result, "join broke");
    let result = blocking(|| {
        Flow::bounded_join(
            JoinKind::Inner,
            Flow::from_iter(left()),
            Flow::from_iter(right()),
            |_: &Event| -> u32 { panic!("key broke") },
            key,
            pair,
        )
        .collect_blocking()
    });
    support::assert_panicked(result, "key broke");
}

/// A fixed window set after a join (on its output type) is refused: a join's window is given
/// to `window_join`.
#[test]
fn a_fixed_window_after_a_join_is_an_error() {
    let result = blocking(|| {
        Flow::bounded_join(
            JoinKind::Inner,
            Flow::from_iter(left()),
            Flow::from_iter(right()),
            key,
            key,
            pair,
        )
        .window(Window::fixed(Duration::from_secs(1), |_: &Pair| 0))
        .collect_blocking()
    });
    support::assert_misuse(result);
}

/// The join's `Done` reaches a departition after it once per window.
#[test]
fn a_departition_after_a_window_join_gets_one_result_per_window() {
    let got = blocking(|| {
        Flow::window_join(
            JoinKind::Inner,
            Flow::from_iter(left()),
            Flow::from_iter(right()),
            Window::fixed(Duration::from_secs(1), by_time),
            key,
            key,
            pair,
        )
        .stages(2)
        .reduce(|| 0u32, |n, _| *n += 1)
        .emit_state()
        .departition_with_window(|| 0u32, |t, ns| *t += ns.iter().sum::<u32>(), |t, w| (w, t))
        .collect_blocking()
        .unwrap()
    });
    let expected: Vec<(u64, u32)> = (0..3u64)
        .map(|w| {
            let pairs = left()
                .iter()
                .flat_map(|l| right().into_iter().map(move |r| (*l, r)))
                .filter(|(l, r)| l.0 == r.0 && l.1 / 1000 == w && r.1 / 1000 == w)
                .count();
            (w * 1000, pairs as u32)
        })
        .collect();
    assert_eq!(got, expected);
}

/// What a trigger name tells a join: only `Done` matters (a count of them per stage).
#[test]
fn only_done_ends_a_join_window() {
    let dones = Arc::new(Mutex::new(0));
    let d = Arc::clone(&dones);
    let got = blocking(move || {
        Flow::window_join(
            JoinKind::LeftOuter,
            Flow::from_iter((0..20u32).map(|i| (i, i as u64, "l"))),
            Flow::from_iter([(5u32, 5u64, "r")]),
            Window::global().trigger_every(3),
            key,
            key,
            pair,
        )
        .stages(1)
        .reduce(Vec::new, |v: &mut Vec<Pair>, p| v.push(p))
        .on_trigger(move |v, t| {
            if t.name == TriggerName::Done {
                *d.lock().unwrap() += 1;
                std::mem::take(v)
            } else {
                Vec::new()
            }
        })
        .collect_blocking()
        .unwrap()
    });
    assert_eq!(*dones.lock().unwrap(), 1);
    assert_eq!(got.len(), 20, "19 unpaired lefts and one pair: {got:?}");
    assert_eq!(got.iter().filter(|p| p.1.is_some()).count(), 1);
}
