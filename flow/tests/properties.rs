//! Property tests: a flow computes what the sequential iterator computes, whatever the stage
//! count and demand options.

mod support;

use std::collections::HashMap;

use flow::{Flow, Partition};
use proptest::prelude::*;
use support::{blocking, sorted};

/// Stage count and `(max_demand, min_demand)` with `min < max`.
fn layout() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..=4, 1usize..200).prop_flat_map(|(stages, max)| (Just(stages), Just(max), 0..max))
}

fn input() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..500, 0..2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn mappers_give_the_sequential_multiset(
        input in input(),
        (stages, max, min) in layout(),
    ) {
        let expected: Vec<u64> = input
            .iter()
            .map(|x| u64::from(*x) * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .collect();
        let flow = Flow::from_iter(input)
            .map(|x| u64::from(x) * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .stages(stages)
            .max_demand(max)
            .min_demand(min);
        let got = blocking(move || flow.collect_blocking()).unwrap();
        prop_assert_eq!(sorted(got), sorted(expected));
    }

    #[test]
    fn partitioned_counts_equal_the_sequential_fold(
        input in input(),
        (stages, max, min) in layout(),
        modulus in 1u32..60,
    ) {
        let mut expected: HashMap<u32, usize> = HashMap::new();
        for x in &input {
            *expected.entry(x % modulus).or_insert(0) += 1;
        }
        let flow = Flow::from_iters([input[..input.len() / 2].to_vec(), input[input.len() / 2..].to_vec()])
            .map(move |x| x % modulus)
            .stages(stages)
            .partition(
                Partition::by_key(|k: &u32| *k)
                    .stages(stages)
                    .max_demand(max)
                    .min_demand(min),
            )
            .reduce(HashMap::new, |counts: &mut HashMap<u32, usize>, k| {
                *counts.entry(k).or_insert(0) += 1
            })
            .on_trigger(|counts, t| vec![(t.partition, std::mem::take(counts))]);
        let got = blocking(move || flow.collect_blocking()).unwrap();
        prop_assert_eq!(got.len(), stages, "one Done per partition");
        let mut partitions: Vec<usize> = got.iter().map(|(p, _)| *p).collect();
        partitions.sort();
        prop_assert_eq!(partitions, (0..stages).collect::<Vec<_>>());
        let mut merged: HashMap<u32, usize> = HashMap::new();
        for (p, counts) in got {
            for (k, n) in counts {
                prop_assert!(merged.insert(k, n).is_none(), "key {} also in partition {}", k, p);
            }
        }
        prop_assert_eq!(merged, expected);
    }

    #[test]
    fn local_sources_give_the_sequential_multiset_and_fold(
        input in input(),
        (stages, max, _) in layout(),
        shared in any::<bool>(),
        modulus in 1u32..60,
    ) {
        let source = |input: Vec<u32>| if shared {
            Flow::from_shared(std::sync::Arc::new(input))
        } else {
            Flow::from_vec(input)
        };
        let expected: Vec<u32> = input.iter().filter(|x| *x % 3 != 0).map(|x| x + 1).collect();
        let flow = source(input.clone())
            .stages(stages)
            .max_demand(max)
            .filter(|x| x % 3 != 0)
            .map(|x| x + 1);
        let got = blocking(move || flow.collect_blocking()).unwrap();
        prop_assert_eq!(sorted(got), sorted(expected));

        let mut expected: HashMap<u32, usize> = HashMap::new();
        for x in &input {
            *expected.entry(x % modulus).or_insert(0) += 1;
        }
        let flow = source(input)
            .stages(stages)
            .max_demand(max)
            .map(move |x| x % modulus)
            .partition(Partition::by_key(|k: &u32| *k).stages(stages))
            .reduce(HashMap::new, |counts: &mut HashMap<u32, usize>, k| {
                *counts.entry(k).or_insert(0) += 1
            })
            .emit_events();
        let got: HashMap<u32, usize> = blocking(move || flow.collect_blocking()).unwrap().into_iter().collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn departitioned_stage_sums_equal_the_sequential_sum(
        input in input(),
        (stages, max, min) in layout(),
    ) {
        let expected: u64 = input.iter().map(|x| u64::from(*x)).sum();
        let flow = Flow::from_iter(input)
            .shuffle()
            .stages(stages)
            .max_demand(max)
            .min_demand(min)
            .reduce(|| 0u64, |sum, x| *sum += u64::from(x))
            .emit_state()
            .departition(|| 0u64, |total, sums| *total += sums.iter().sum::<u64>(), |t| t);
        let got = blocking(move || flow.collect_blocking()).unwrap();
        prop_assert_eq!(got, vec![expected]);
    }

    #[test]
    fn one_stage_preserves_order(
        input in input(),
        (_, max, min) in layout(),
    ) {
        let expected: Vec<u32> = input.iter().map(|x| x + 1).collect();
        let flow = Flow::from_iter(input)
            .stages(1)
            .max_demand(max)
            .min_demand(min)
            .map(|x| x + 1);
        let got = blocking(move || flow.collect_blocking()).unwrap();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn take_sort_equals_the_sequential_top(
        input in input(),
        (stages, max, min) in layout(),
        n in 1usize..50,
    ) {
        let expected: Vec<u32> = sorted(input.clone()).into_iter().rev().take(n).collect();
        let flow = Flow::from_iter(input)
            .map(|x| x)
            .stages(stages)
            .max_demand(max)
            .min_demand(min)
            .take_sort(n, |a: &u32, b: &u32| b.cmp(a));
        let got = blocking(move || flow.collect_blocking()).unwrap();
        prop_assert_eq!(got, vec![expected]);
    }
}
