//! Mappers and their fusion (Flow rules M2, M6, R8, R9, D1).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow::{Flow, Partition};
use support::{Tasks, assert_misuse, blocking, sorted};

// ----- M2: the mappers of one layer are fused into its stages -----

#[test]
fn mappers_of_one_layer_run_in_the_same_stage() {
    let first = Tasks::new();
    let second = Tasks::new();
    let third = Tasks::new();
    let source = Tasks::new();
    let (f, s, t, src) = (first.clone(), second.clone(), third.clone(), source.clone());
    let got = blocking(move || {
        Flow::from_iter((0..3000u32).inspect(move |x| src.record(*x)))
            .map(move |x| {
                f.record(x);
                x
            })
            .inspect(move |x| s.record(*x))
            .filter(move |x| {
                t.record(*x);
                true
            })
            .stages(3)
            .max_demand(10)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (0..3000).collect::<Vec<_>>());
    let (first, second, third) = (first.get(), second.get(), third.get());
    assert_eq!(first.len(), 3000);
    for (x, task) in &first {
        assert_eq!(
            second[x], *task,
            "map and inspect of {x} ran in different stages"
        );
        assert_eq!(
            third[x], *task,
            "map and filter of {x} ran in different stages"
        );
    }
    let stages: std::collections::HashSet<_> = first.values().copied().collect();
    assert!(
        (1..=3).contains(&stages.len()),
        "3 stages ran the layer, saw {} tasks",
        stages.len()
    );
    // M3: the source is never fused with the mappers.
    let readers = source.distinct();
    assert_eq!(readers.len(), 1, "one producer reads the iterator");
    assert!(readers.is_disjoint(&stages));
}

#[test]
fn one_stage_runs_every_mapper_of_its_layer() {
    let seen = Tasks::new();
    let again = Tasks::new();
    let (s, a) = (seen.clone(), again.clone());
    blocking(move || {
        Flow::from_iters([0..500u32, 500..1000])
            .stages(1)
            .map(move |x| {
                s.record(x);
                x + 1
            })
            .reject(move |x| {
                a.record(*x - 1);
                false
            })
            .run_blocking()
            .unwrap()
    });
    assert_eq!(seen.get().len(), 1000);
    assert_eq!(seen.distinct().len(), 1);
    assert_eq!(seen.distinct(), again.distinct());
}

#[test]
fn each_partition_starts_a_layer_of_other_stages() {
    let before = Tasks::new();
    let after = Tasks::new();
    let (b, a) = (before.clone(), after.clone());
    let got = blocking(move || {
        Flow::from_iter(0..1000u32)
            .map(move |x| {
                b.record(x);
                x
            })
            .stages(2)
            .partition(Partition::by_hash(|x: &u32| *x as usize).stages(2))
            .map(move |x| {
                a.record(x);
                x * 2
            })
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    let (before, after) = (before.distinct(), after.distinct());
    assert!(before.len() <= 2 && after.len() <= 2);
    assert!(
        before.is_disjoint(&after),
        "a partition must start new stages"
    );
}

#[test]
fn mappers_apply_in_written_order() {
    // Upstream "keeps ordering": filter, then +1, then *2.
    let got = blocking(|| {
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .stages(2)
            .filter(|x| x % 2 == 0)
            .map(|x| x + 1)
            .map(|x| x * 2)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), [6, 10, 14]);
}

// ----- the mappers themselves -----

#[test]
fn map_filter_reject() {
    let flow = || Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]]).stages(2);
    let mapped = blocking(move || flow().map(|x| x * 2).collect_blocking().unwrap());
    assert_eq!(sorted(mapped), [2, 4, 6, 8, 10, 12]);
    let kept = blocking(move || flow().filter(|x| x % 2 == 0).collect_blocking().unwrap());
    assert_eq!(sorted(kept), [2, 4, 6]);
    let rejected = blocking(move || flow().reject(|x| x % 2 == 0).collect_blocking().unwrap());
    assert_eq!(sorted(rejected), [1, 3, 5]);
}

#[test]
fn flat_map_flattens_one_level_and_may_drop() {
    let got = blocking(|| {
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .stages(2)
            .flat_map(|x| if x == 3 { vec![] } else { vec![x, x] })
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), [1, 1, 2, 2, 4, 4, 5, 5, 6, 6]);
    let words = blocking(|| {
        Flow::from_iter(["a b c", "", "d"])
            .flat_map(|line| {
                line.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(words), ["a", "b", "c", "d"]);
}

#[test]
fn filter_map_keeps_the_somes() {
    let got = blocking(|| {
        Flow::from_iter(["1", "x", "3", "", "10"])
            .stages(2)
            .filter_map(|s| s.parse::<u32>().ok())
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), [1, 3, 10]);
}

#[test]
fn inspect_sees_each_surviving_event_once() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let got = blocking(move || {
        Flow::from_iter(0..100u32)
            .filter(|x| x % 4 == 0)
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 25);
    assert_eq!(seen.load(Ordering::Relaxed), 25);
}

#[test]
fn mappers_after_a_shuffle_run_on_every_event() {
    let got = blocking(|| {
        Flow::from_iter(0..1000u32)
            .shuffle()
            .stages(3)
            .map(|x| x + 1)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (1..=1000).collect::<Vec<_>>());
}

// ----- R9 / M6: map_batch -----

#[test]
fn map_batch_gets_each_batch() {
    // Upstream map_batch/2 test: one batch per enumerable.
    let flow = || Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]]).stages(2);
    let sums = blocking(move || {
        flow()
            .map_batch(|b: Vec<i32>| vec![b.iter().sum::<i32>()])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(sums), [6, 15]);
    let doubled = blocking(move || {
        flow()
            .map_batch(|b: Vec<i32>| vec![b.iter().sum::<i32>()])
            .map(|x| x * 2)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(doubled), [12, 30]);
}

#[test]
fn map_batch_sees_batches_of_max_minus_min() {
    // D1/D3 "small demand": max_demand 5, min_demand 0 gives batches of exactly 5.
    let sizes = blocking(|| {
        Flow::from_iter(1..=20u32)
            .stages(1)
            .max_demand(5)
            .min_demand(0)
            .map_batch(|b: Vec<u32>| vec![b.len()])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sizes, [5, 5, 5, 5]);
    // Defaults (1000 / 500): 1000 events arrive at once and are cut into two batches of 500.
    let sizes = blocking(|| {
        Flow::from_iter(0..1000u32)
            .stages(1)
            .map_batch(|b: Vec<u32>| vec![b.len()])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sizes, [500, 500]);
    // ... and 100 events are one batch.
    let sizes = blocking(|| {
        Flow::from_iter(0..100u32)
            .stages(1)
            .map_batch(|b: Vec<u32>| vec![b.len()])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sizes, [100]);
}

#[test]
fn map_batch_output_feeds_the_rest_of_the_layer() {
    let got = blocking(|| {
        Flow::from_iter(1..=20u32)
            .stages(1)
            .max_demand(5)
            .min_demand(0)
            .map_batch(|b: Vec<u32>| {
                let last = *b.last().unwrap();
                b.into_iter().chain([last * 100]).collect()
            })
            .filter(|x| *x >= 100)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [500, 1000, 1500, 2000]);
}

#[test]
fn map_batch_after_another_operation_is_an_error() {
    let after_map = blocking(|| {
        Flow::from_iter([1, 2, 3])
            .map(|x| x)
            .map_batch(|b: Vec<i32>| b)
            .collect_blocking()
    });
    assert_misuse(after_map);
    let after_filter = blocking(|| {
        Flow::from_iter([1, 2, 3])
            .filter(|_| true)
            .map_batch(|b: Vec<i32>| b)
            .collect_blocking()
    });
    assert_misuse(after_filter);
    let after_reduce = blocking(|| {
        Flow::from_iter([1, 2, 3])
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .map_batch(|b: Vec<i32>| b)
            .collect_blocking()
    });
    assert_misuse(after_reduce);
}

#[test]
fn map_batch_first_in_a_new_layer_is_fine() {
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .map(|x| x * 10)
            .partition(Partition::by_hash(|x: &u32| *x as usize).stages(2))
            .map_batch(|b: Vec<u32>| b.into_iter().map(|x| x + 1).collect())
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(
        sorted(got),
        (1..=10).map(|x| x * 10 + 1).collect::<Vec<_>>()
    );
}

#[test]
fn several_map_batches_may_open_a_layer() {
    // M6: `map_batch*` comes first; upstream accepts map_batch after map_batch.
    let got = blocking(|| {
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .stages(2)
            .map_batch(|b: Vec<i32>| vec![b.iter().sum::<i32>()])
            .map_batch(|b: Vec<i32>| b.into_iter().map(|x| x * 2).collect())
            .collect_blocking()
    });
    assert_eq!(sorted(got.expect("map_batch |> map_batch")), [12, 30]);
}

// ----- R8: uniq / uniq_by -----

#[test]
fn uniq_in_one_stage_keeps_first_occurrences_in_arrival_order() {
    let got = blocking(|| {
        Flow::from_iter([3, 1, 3, 2, 1, 5])
            .stages(1)
            .uniq()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [3, 1, 2, 5]);
}

#[test]
fn uniq_by_drops_repeated_keys() {
    let got = blocking(|| {
        Flow::from_iter([
            "apple",
            "avocado",
            "banana",
            "blueberry",
            "cherry",
            "apricot",
        ])
        .stages(1)
        .uniq_by(|s| s.chars().next())
        .collect_blocking()
        .unwrap()
    });
    assert_eq!(got, ["apple", "banana", "cherry"]);
    // Upstream: uniq_by(rem 2) over two enumerables and 2 stages leaves 2 events... per stage.
    let got = blocking(|| {
        Flow::from_iters([vec![1, 2, 3], vec![4, 5, 6]])
            .partition(Partition::by_hash(|x: &i32| (*x % 2) as usize).stages(2))
            .uniq_by(|x| x % 2)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 2);
    assert_eq!(sorted(got.iter().map(|x| x % 2).collect()), [0, 1]);
}

#[test]
fn uniq_is_per_stage() {
    // Without partitioning, two stages may each let the same value through once.
    let input: Vec<u32> = (0..4000).map(|i| i % 50).collect();
    let got = blocking(move || {
        Flow::from_iter(input)
            .stages(4)
            .max_demand(20)
            .uniq()
            .collect_blocking()
            .unwrap()
    });
    assert!(got.len() >= 50 && got.len() <= 4 * 50, "{}", got.len());
    let mut counts = std::collections::HashMap::new();
    for x in &got {
        *counts.entry(*x).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 50, "every value survives somewhere");
    assert!(counts.values().all(|&n| n <= 4), "at most once per stage");
}

#[test]
fn uniq_after_partitioning_is_exact() {
    let input: Vec<u32> = (0..5000).map(|i| (i * 7919) % 300).collect();
    let got = blocking(move || {
        Flow::from_iter(input)
            .partition(Partition::new().stages(4))
            .uniq()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (0..300).collect::<Vec<_>>());
}

#[test]
fn uniq_before_a_reduce_feeds_it_unique_events() {
    let got = blocking(|| {
        Flow::from_iter([1, 1, 2, 3, 3, 3, 4])
            .stages(1)
            .uniq()
            .reduce(|| 0, |sum, x| *sum += x)
            .emit_state()
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [10]);
}

#[test]
fn uniq_after_a_reduce_in_the_same_layer_is_an_error() {
    let result = blocking(|| {
        Flow::from_iter([1, 1, 2])
            .reduce(Vec::new, |v, x| v.push(x))
            .emit_events()
            .uniq()
            .collect_blocking()
    });
    assert_misuse(result);
}
