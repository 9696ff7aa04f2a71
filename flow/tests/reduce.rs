//! Reducing in the global window (Flow rules R1–R7): reduce, group_by, group_by_key, the
//! emit_* choices, on_trigger and emit_and_reduce.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flow::{Flow, Partition, Trigger, TriggerName, WindowType};
use support::{assert_misuse, blocking, sorted};

// ----- reduce -----

#[test]
fn reduce_folds_each_stage_and_emit_state_gives_one_acc_per_stage() {
    let got = blocking(|| {
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .stages(2)
            .reduce(|| 0, |sum, x| *sum += x)
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 2, "one state per stage");
    assert_eq!(got.iter().sum::<i32>(), 21);
}

#[test]
fn one_stage_reduces_in_arrival_order() {
    let got = blocking(|| {
        Flow::from_iter(1..=10)
            .stages(1)
            .max_demand(3)
            .reduce(Vec::new, |v, x| v.push(x))
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [(1..=10).collect::<Vec<_>>()]);
}

#[test]
fn the_reducer_sees_only_what_survives_the_layer_s_mappers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let got = blocking(move || {
        Flow::from_iter(1..=100u32)
            .filter(|x| x % 10 == 0)
            .map(|x| x / 10)
            .stages(3)
            .reduce(
                || 0u32,
                move |sum, x| {
                    c.fetch_add(1, Ordering::SeqCst);
                    *sum += x
                },
            )
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.iter().sum::<u32>(), 55);
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[test]
fn the_accumulator_is_made_once_per_stage_with_on_trigger() {
    // R1: acc_fun runs once per stage at start (global window).
    let inits = Arc::new(AtomicUsize::new(0));
    let i = Arc::clone(&inits);
    let got = blocking(move || {
        Flow::from_iter(1..=100u32)
            .stages(3)
            .reduce(
                move || {
                    i.fetch_add(1, Ordering::SeqCst);
                    0u32
                },
                |sum, x| *sum += x,
            )
            .on_trigger(|sum, _| vec![*sum])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.iter().sum::<u32>(), 5050);
    assert_eq!(inits.load(Ordering::SeqCst), 3);
}

#[test]
fn the_accumulator_is_made_once_per_stage_with_emit_state_and_emit_events() {
    // R1 again: the global window's Done ends the stage, so nothing needs a fresh acc.
    let inits = Arc::new(AtomicUsize::new(0));
    let i = Arc::clone(&inits);
    blocking(move || {
        Flow::from_iter(1..=100u32)
            .stages(3)
            .reduce(
                move || {
                    i.fetch_add(1, Ordering::SeqCst);
                    Vec::new()
                },
                |v, x| v.push(x),
            )
            .emit_state()
            .run_blocking()
            .unwrap()
    });
    assert_eq!(
        inits.load(Ordering::SeqCst),
        3,
        "acc_fun calls with emit_state"
    );
    let inits = Arc::new(AtomicUsize::new(0));
    let i = Arc::clone(&inits);
    blocking(move || {
        Flow::from_iter(1..=100u32)
            .stages(3)
            .reduce(
                move || {
                    i.fetch_add(1, Ordering::SeqCst);
                    Vec::new()
                },
                |v, x| v.push(x),
            )
            .emit_events()
            .run_blocking()
            .unwrap()
    });
    assert_eq!(
        inits.load(Ordering::SeqCst),
        3,
        "acc_fun calls with emit_events"
    );
}

#[test]
fn partition_then_reduce_counts_words_exactly() {
    let text = ["the quick brown fox", "jumps over the lazy dog", "the end"];
    let got = blocking(move || {
        Flow::from_iter(text)
            .flat_map(|line| line.split_whitespace().collect::<Vec<_>>())
            .partition(Partition::by_key(|w: &&str| *w).stages(3))
            .reduce(HashMap::new, |acc, w| *acc.entry(w).or_insert(0) += 1)
            .emit_events()
            .collect_blocking()
            .unwrap()
    });
    let mut expected: HashMap<&str, i32> = HashMap::new();
    for w in text.iter().flat_map(|l| l.split_whitespace()) {
        *expected.entry(w).or_insert(0) += 1;
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "each word counted in one partition"
    );
    assert_eq!(got.into_iter().collect::<HashMap<_, _>>(), expected);
}

#[test]
fn a_reduce_after_a_partition_after_a_reduce_is_fine() {
    let got = blocking(|| {
        Flow::from_iter(1..=100u64)
            .stages(4)
            .reduce(|| 0u64, |s, x| *s += x)
            .emit_state()
            .partition(Partition::new().stages(1))
            .reduce(|| 0u64, |s, x| *s += x)
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [5050]);
}

// ----- R6: group_by / group_by_key (arrival order: our documented difference) -----

#[test]
fn group_by_keeps_values_in_arrival_order() {
    let got = blocking(|| {
        Flow::from_iter(["the", "quick", "brown", "fox"])
            .stages(1)
            .group_by(|w| w.len(), |w| w)
            .emit_events()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(
        sorted(got),
        [(3, vec!["the", "fox"]), (5, vec!["quick", "brown"])]
    );
}

#[test]
fn group_by_maps_values() {
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .stages(1)
            .group_by(|x| x % 3, |x| x * 10)
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 1);
    let groups: BTreeMap<_, _> = got.into_iter().next().unwrap().into_iter().collect();
    assert_eq!(
        groups,
        BTreeMap::from([
            (0, vec![30, 60, 90]),
            (1, vec![10, 40, 70, 100]),
            (2, vec![20, 50, 80]),
        ])
    );
}

#[test]
fn group_by_key_groups_pairs_in_arrival_order() {
    let got = blocking(|| {
        Flow::from_iter([("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5)])
            .stages(1)
            .group_by_key()
            .emit_events()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(
        sorted(got),
        [("a", vec![1, 3, 5]), ("b", vec![2]), ("c", vec![4])]
    );
}

#[test]
fn partitioned_group_by_key_puts_each_key_in_one_group() {
    let input: Vec<(u32, u32)> = (0..3000).map(|i| (i % 37, i)).collect();
    let got = blocking(move || {
        Flow::from_iter(input)
            .partition(Partition::by_key(|(k, _): &(u32, u32)| *k).stages(4))
            .group_by_key()
            .emit_events()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 37, "one group per key across partitions");
    for (k, values) in got {
        // One producer feeds one partition stage in order (O1), so each group is in order.
        let expected: Vec<u32> = (0..3000).filter(|i| i % 37 == k).collect();
        assert_eq!(values, expected, "group {k}");
    }
}

// ----- R2/R3: what a trigger emits -----

#[test]
fn emit_events_emits_the_accumulator_s_items() {
    let got = blocking(|| {
        Flow::from_iter(["ab", "ba", "cab"])
            .stages(1)
            .reduce(BTreeSet::new, |set, w: &str| set.extend(w.chars()))
            .emit_events()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, ['a', 'b', 'c']);
}

#[test]
fn emit_nothing_emits_nothing_but_still_reduces() {
    let total = Arc::new(Mutex::new(0));
    let t = Arc::clone(&total);
    let got = blocking(move || {
        Flow::from_iter(1..=10)
            .stages(2)
            .reduce(
                || 0,
                move |s, x| {
                    *s += x;
                    *t.lock().unwrap() += x;
                },
            )
            .emit_nothing()
            .collect_blocking()
            .unwrap()
    });
    assert!(got.is_empty());
    assert_eq!(*total.lock().unwrap(), 55);
}

#[test]
fn on_trigger_fires_done_once_per_stage_with_its_position() {
    let got = blocking(|| {
        Flow::from_iter(1..=100u32)
            .stages(3)
            .reduce(|| 0u32, |s, x| *s += x)
            .on_trigger(|s, t: &Trigger| vec![(t.clone(), *s)])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 3);
    let mut partitions: Vec<usize> = got.iter().map(|(t, _)| t.partition).collect();
    partitions.sort();
    assert_eq!(partitions, [0, 1, 2]);
    for (t, _) in &got {
        assert_eq!(t.partitions, 3);
        assert_eq!(t.window_type, WindowType::Global);
        assert_eq!(t.window, 0);
        assert_eq!(t.name, TriggerName::Done);
        assert!(t.is_done());
    }
    assert_eq!(got.iter().map(|(_, s)| s).sum::<u32>(), 5050);
}

#[test]
fn on_trigger_may_emit_any_number_of_events_in_order() {
    let got = blocking(|| {
        Flow::from_iter(1..=4)
            .stages(1)
            .reduce(|| 0, |s, x| *s += x)
            .on_trigger(|s, _| vec![*s, *s * 2, *s * 3])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [10, 20, 30]);
    let none = blocking(|| {
        Flow::from_iter(1..=4)
            .reduce(|| 0, |s, x| *s += x)
            .on_trigger(|_, _| Vec::<i32>::new())
            .collect_blocking()
            .unwrap()
    });
    assert!(none.is_empty());
}

// ----- mappers after the trigger -----

#[test]
fn map_after_on_trigger_applies_to_the_emitted_events() {
    let got = blocking(|| {
        Flow::from_iter(1..=10)
            .stages(2)
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .map(|s| s * 100)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 2);
    assert_eq!(got.iter().sum::<i32>(), 5500);
    assert!(got.iter().all(|s| s % 100 == 0));
    let words = blocking(|| {
        Flow::from_iter(["a", "b", "a"])
            .stages(1)
            .group_by(|w| *w, |_| 1)
            .emit_events()
            .map(|(w, ones)| format!("{w}={}", ones.len()))
            .filter(|s| s != "b=1")
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(words, ["a=2"]);
}

#[test]
fn a_second_reduce_in_the_same_layer_is_an_error() {
    let twice = blocking(|| {
        Flow::from_iter([1, 2, 3])
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .collect_blocking()
    });
    assert_misuse(twice);
    let after_map = blocking(|| {
        Flow::from_iter([1, 2, 3])
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .map(|x| x + 1)
            .group_by(|x| *x, |x| x)
            .emit_events()
            .collect_blocking()
    });
    assert_misuse(after_map);
    let emit_and_reduce = blocking(|| {
        Flow::from_iter([1, 2, 3])
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .emit_and_reduce(
                || 0,
                |s: &mut i32, x, out: &mut Vec<i32>| {
                    *s += x;
                    out.push(x)
                },
            )
            .emit_nothing()
            .collect_blocking()
    });
    assert_misuse(emit_and_reduce);
}

// ----- R7: emit_and_reduce -----

#[test]
fn emit_and_reduce_emits_at_once_then_the_accumulator_at_done() {
    // Upstream probe: fe(1..3, stages: 1) |> emit_and_reduce(...) gives [10,20,30,3,2,1].
    let got = blocking(|| {
        Flow::from_iter(1..=3)
            .stages(1)
            .emit_and_reduce(Vec::new, |seen: &mut Vec<i32>, x, out: &mut Vec<i32>| {
                out.push(x * 10);
                seen.insert(0, x);
            })
            .emit_events()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [10, 20, 30, 3, 2, 1]);
}

#[test]
fn emit_and_reduce_keeps_order_across_batches() {
    let got = blocking(|| {
        Flow::from_iter(1..=20)
            .stages(1)
            .max_demand(3)
            .min_demand(0)
            .emit_and_reduce(
                || 0,
                |count: &mut i32, x, out: &mut Vec<i32>| {
                    *count += 1;
                    out.push(x);
                },
            )
            .on_trigger(|count, _| vec![-*count])
            .collect_blocking()
            .unwrap()
    });
    let mut expected: Vec<i32> = (1..=20).collect();
    expected.push(-20);
    assert_eq!(got, expected);
}

#[test]
fn emit_and_reduce_with_emit_nothing_only_emits_what_the_reducer_pushed() {
    let got = blocking(|| {
        Flow::from_iter(1..=5)
            .stages(1)
            .emit_and_reduce(Vec::new, |seen: &mut Vec<i32>, x, out: &mut Vec<i32>| {
                if x % 2 == 1 {
                    out.push(x);
                }
                seen.push(x);
            })
            .emit_nothing()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [1, 3, 5]);
}

#[test]
fn emit_and_reduce_sums_over_stages() {
    // Upstream "emit_and_reduce/3": each event emitted once, plus each stage's sum at Done.
    let got = blocking(|| {
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .stages(2)
            .emit_and_reduce(
                || 0,
                |sum: &mut i32, x, out: &mut Vec<i32>| {
                    out.push(x);
                    *sum += x;
                },
            )
            .on_trigger(|sum, _| vec![*sum])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.iter().sum::<i32>(), 42);
    assert_eq!(got.len(), 6 + 2);
}

#[test]
fn map_after_emit_and_reduce_sees_both_kinds_of_output() {
    let got = blocking(|| {
        Flow::from_iter(1..=3)
            .stages(1)
            .emit_and_reduce(
                || 0,
                |sum: &mut i32, x, out: &mut Vec<i32>| {
                    out.push(x);
                    *sum += x;
                },
            )
            .on_trigger(|sum, _| vec![*sum])
            .map(|x| x * 2)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [2, 4, 6, 12]);
}
