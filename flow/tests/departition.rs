//! `departition` and `take_sort` in the global window (Flow rules DP1–DP6).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow::{ErrorKind, Flow, Partition};
use support::{assert_misuse, blocking, option_name, sorted};

/// Routes `x` to partition `x % 4` (upstream's expected values use phash2; see rule P2).
fn rem4() -> Partition<u32> {
    Partition::by_hash(|x: &u32| *x as usize).stages(4)
}

#[test]
fn departition_merges_every_partition_into_one_event() {
    // Upstream "joins partitioned data" ([7,10,16,22] with phash2), with rem(x, 4).
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .partition(rem4())
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .departition(
                Vec::new,
                |acc: &mut Vec<u32>, sums| acc.extend(sums),
                sorted,
            )
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![10, 12, 15, 18]]);
}

#[test]
fn departition_gives_one_event_per_window_whatever_the_stage_count() {
    for stages in [1, 2, 5, 8] {
        let got = blocking(move || {
            Flow::from_iter(1..=100u64)
                .stages(stages)
                .reduce(|| 0u64, |s, x| *s += x)
                .emit_state()
                .departition(
                    || 0u64,
                    |total, sums| *total += sums.iter().sum::<u64>(),
                    |t| t,
                )
                .collect_blocking()
                .unwrap()
        });
        assert_eq!(got, [5050], "with {stages} stages");
    }
}

#[test]
fn merge_gets_each_partition_s_trigger_output_once() {
    // DP1/DP2: one merge per partition's Done, empty partitions included; done runs once.
    let merges = Arc::new(AtomicUsize::new(0));
    let dones = Arc::new(AtomicUsize::new(0));
    let (m, d) = (Arc::clone(&merges), Arc::clone(&dones));
    let got = blocking(move || {
        Flow::from_iter(1..=3u32)
            .partition(Partition::by_hash(|_: &u32| 0).stages(4))
            .reduce(Vec::new, |v, x| v.push(x))
            .emit_events()
            .departition(
                Vec::new,
                move |acc: &mut Vec<Vec<u32>>, items| {
                    m.fetch_add(1, Ordering::SeqCst);
                    acc.push(items);
                },
                move |acc| {
                    d.fetch_add(1, Ordering::SeqCst);
                    sorted(acc)
                },
            )
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![vec![], vec![], vec![], vec![1, 2, 3]]]);
    assert_eq!(merges.load(Ordering::SeqCst), 4);
    assert_eq!(dones.load(Ordering::SeqCst), 1);
}

#[test]
fn several_events_of_one_trigger_are_merged_as_one_unit() {
    // DP5: upstream runs `done` twice here ([[2,4,5,6],[1,3]]); we keep the trigger together.
    let got = blocking(|| {
        Flow::from_iter(1..=6u32)
            .partition(Partition::by_hash(|x: &u32| usize::from(*x > 3)).stages(2))
            .reduce(Vec::new, |v, x| v.push(x))
            .on_trigger(|v, _| {
                let (odd, even): (Vec<u32>, Vec<u32>) = v.iter().partition(|x| *x % 2 == 1);
                vec![odd, even]
            })
            .departition(
                Vec::new,
                |acc: &mut Vec<u32>, lists| acc.extend(lists.into_iter().flatten()),
                sorted,
            )
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![1, 2, 3, 4, 5, 6]]);
}

#[test]
fn departition_without_a_reduce_merges_the_raw_events() {
    let got = blocking(|| {
        Flow::from_iter(0..1000u32)
            .map(|x| x * 2)
            .stages(4)
            .departition(Vec::new, |acc: &mut Vec<u32>, xs| acc.extend(xs), sorted)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [(0..1000).map(|x| x * 2).collect::<Vec<_>>()]);
}

#[test]
fn departition_on_an_empty_flow_still_emits_once() {
    let got = blocking(|| {
        Flow::from_iter(Vec::<u32>::new())
            .partition(Partition::new().stages(3))
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .departition(
                Vec::new,
                |acc: &mut Vec<u32>, s| acc.extend(s),
                |acc| acc.len(),
            )
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [3]);
}

#[test]
fn word_counts_merge_into_one_map() {
    let text = ["a b c a", "b a", "c c c"];
    let got = blocking(move || {
        Flow::from_iter(text)
            .flat_map(|l| l.split_whitespace().collect::<Vec<_>>())
            .partition(Partition::by_key(|w: &&str| *w).stages(3))
            .reduce(HashMap::new, |m, w| *m.entry(w).or_insert(0) += 1)
            .emit_state()
            .departition(
                HashMap::new,
                |all: &mut HashMap<&str, i32>, maps| {
                    for m in maps {
                        for (w, n) in m {
                            assert!(all.insert(w, n).is_none(), "{w} in two partitions");
                        }
                    }
                },
                |all| all,
            )
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [HashMap::from([("a", 3), ("b", 2), ("c", 4)])]);
}

// ----- DP4: what follows a departition runs in its stage -----

#[test]
fn map_after_departition_applies_to_its_result() {
    // Upstream "joins partitioned data with map operations".
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .partition(rem4())
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .departition(Vec::new, |acc: &mut Vec<u32>, s| acc.extend(s), |acc| acc)
            .map(sorted)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![10, 12, 15, 18]]);
}

#[test]
fn reduce_after_departition_runs_in_its_stage() {
    // Upstream "joins partitioned data with reduce operations": departition |> reduce |>
    // on_trigger gives 55.
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .partition(rem4())
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .departition(Vec::new, |acc: &mut Vec<u32>, s| acc.extend(s), sorted)
            .reduce(
                || 0u32,
                |total, sums: Vec<u32>| *total += sums.iter().sum::<u32>(),
            )
            .emit_state()
            .collect_blocking()
    });
    assert_eq!(got.expect("departition |> reduce"), [55]);
}

#[test]
fn departition_runs_in_one_stage() {
    // 1.1: departition forces one stage. Asking for more must not split the merge.
    let got = blocking(|| {
        Flow::from_iter(1..=100u64)
            .stages(4)
            .reduce(|| 0u64, |s, x| *s += x)
            .emit_state()
            .departition(
                || 0u64,
                |total, sums| *total += sums.iter().sum::<u64>(),
                |t| t,
            )
            .stages(3)
            .collect_blocking()
    });
    assert_one_result_or_refused(got, 5050);
    // Many units per partition (raw events, batch by batch) spread over the stages asked for.
    let got = blocking(|| {
        Flow::from_iter(0..20_000u64)
            .stages(4)
            .max_demand(10)
            .departition(|| 0u64, |n, xs| *n += xs.len() as u64, |n| n)
            .stages(3)
            .collect_blocking()
    });
    assert_one_result_or_refused(got, 20_000);
}

/// `stages(n)` on a departition either is refused or still gives the one right result.
fn assert_one_result_or_refused(got: Result<Vec<u64>, flow::Error>, expected: u64) {
    match got {
        Ok(totals) => assert_eq!(totals, [expected], "departition split over several stages"),
        Err(e) => match e.into_kind() {
            ErrorKind::Option(o) => assert_eq!(o.option, "stages"),
            ErrorKind::Misuse(_) => {}
            other => panic!("unexpected error {other:?}"),
        },
    }
}

#[test]
fn departition_demand_options_are_checked() {
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .stages(2)
            .reduce(|| 0u32, |s, x| *s += x)
            .emit_state()
            .departition(|| 0u32, |t, s| *t += s.iter().sum::<u32>(), |t| t)
            .max_demand(0)
            .collect_blocking()
    });
    assert_eq!(option_name(got), "max_demand");
}

// ----- DP6: take_sort -----

#[test]
fn take_sort_gives_one_sorted_list_per_window() {
    let lists: Vec<Vec<u32>> = (0..4)
        .map(|i| {
            (0..1000)
                .map(|j| (j * 7919 + i * 104_729) % 10_000)
                .collect()
        })
        .collect();
    let mut all: Vec<u32> = lists.iter().flatten().copied().collect();
    all.sort();
    let ascending = {
        let lists = lists.clone();
        blocking(move || {
            Flow::from_iters(lists)
                .partition(Partition::new().stages(4))
                .take_sort(100, |a: &u32, b: &u32| a.cmp(b))
                .collect_blocking()
                .unwrap()
        })
    };
    assert_eq!(ascending, [all[..100].to_vec()]);
    let descending = blocking(move || {
        Flow::from_iters(lists)
            .partition(Partition::new().stages(4))
            .take_sort(100, |a: &u32, b: &u32| b.cmp(a))
            .collect_blocking()
            .unwrap()
    });
    all.reverse();
    assert_eq!(descending, [all[..100].to_vec()]);
}

#[test]
fn take_sort_after_a_reduce_sorts_what_the_triggers_emit() {
    let got = blocking(|| {
        Flow::from_iter(1..=1000u32)
            .partition(Partition::by_key(|x: &u32| x % 10).stages(3))
            .group_by(|x| x % 10, |_| 1u32)
            .emit_events()
            .map(|(k, ones)| (ones.len(), k))
            .take_sort(3, |a: &(usize, u32), b: &(usize, u32)| a.1.cmp(&b.1))
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![(100, 0), (100, 1), (100, 2)]]);
}

#[test]
fn take_sort_of_fewer_than_n_events_sorts_them_all() {
    let got = blocking(|| {
        Flow::from_iter([5, 1, 9, 3, 7])
            .stages(3)
            .take_sort(10, |a: &i32, b: &i32| a.cmp(b))
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![1, 3, 5, 7, 9]]);
    let empty = blocking(|| {
        Flow::from_iter(Vec::<i32>::new())
            .stages(2)
            .take_sort(3, |a: &i32, b: &i32| a.cmp(b))
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(empty, [Vec::<i32>::new()]);
}

#[test]
fn take_sort_of_zero_is_an_error_naming_n() {
    let got = blocking(|| {
        Flow::from_iter(1..=10)
            .take_sort(0, |a: &i32, b: &i32| a.cmp(b))
            .collect_blocking()
    });
    assert_eq!(option_name(got), "n");
}

#[test]
fn take_sort_needs_nothing_else_after_a_trigger() {
    // take_sort after on_trigger in the same layer is fine (it sorts what is emitted), but a
    // second reduce is not.
    let misuse = blocking(|| {
        Flow::from_iter(1..=10)
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .reduce(|| 0, |s, x| *s += x)
            .emit_state()
            .take_sort(1, |a: &i32, b: &i32| a.cmp(b))
            .collect_blocking()
    });
    assert_misuse(misuse);
}

#[test]
fn take_sort_ties_keep_arrival_order_within_a_stage() {
    // A stable sort keeps the first n equal keys in arrival order (Elixir's Enum.sort).
    let got = blocking(|| {
        Flow::from_iter((0..1000u32).map(|i| (i % 2, i)))
            .stages(1)
            .take_sort(5, |a: &(u32, u32), b: &(u32, u32)| a.0.cmp(&b.0))
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, [vec![(0, 0), (0, 2), (0, 4), (0, 6), (0, 8)]]);
}

#[test]
fn take_sort_ties_across_partitions_keep_the_right_keys() {
    let got = blocking(|| {
        Flow::from_iter((0..2000u32).map(|i| (i % 3, i)))
            .partition(Partition::by_hash(|(_, i): &(u32, u32)| *i as usize).stages(4))
            .take_sort(50, |a: &(u32, u32), b: &(u32, u32)| a.0.cmp(&b.0))
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 1);
    let top = &got[0];
    assert_eq!(top.len(), 50);
    assert!(top.iter().all(|(k, i)| *k == 0 && i % 3 == 0));
    let mut ids: Vec<u32> = top.iter().map(|(_, i)| *i).collect();
    ids.dedup();
    assert_eq!(ids.len(), 50, "no event twice");
}
