//! Several flows into one layer (Flow's `merge`, and `partition` / `shuffle` of a list of
//! flows), and what a partition's stage count means.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use flow::{Flow, Partition, Trigger, TriggerName, Window};
use support::{assert_misuse, blocking, sorted, timed};

#[test]
fn merge_reads_every_event_of_every_flow_once() {
    for stages in [1, 2, 5] {
        let got = blocking(move || {
            Flow::merge([
                Flow::from_iter(0..1000u32),
                Flow::from_vec((1000..2000).collect()).map(|x| x),
                Flow::from_iters([2000..2500u32, 2500..3000])
                    .stages(2)
                    .filter(|_| true),
            ])
            .stages(stages)
            .map(|x| x * 2)
            .collect_blocking()
            .unwrap()
        });
        assert_eq!(
            sorted(got),
            (0..3000).map(|x| x * 2).collect::<Vec<_>>(),
            "{stages}"
        );
    }
}

#[test]
fn merge_partitioned_makes_equal_keys_of_every_flow_meet() {
    let got = blocking(|| {
        let a = Flow::from_iter((0..600u32).map(|i| (i % 7, 1u32)));
        let b = Flow::from_iter((0..400u32).map(|i| (i % 11, 10u32)))
            .stages(2)
            .map(|e| e);
        Flow::merge_partitioned([a, b], Partition::by_key(|e: &(u32, u32)| e.0).stages(3))
            .reduce(HashMap::new, |m: &mut HashMap<u32, u32>, (k, v)| {
                *m.entry(k).or_insert(0) += v
            })
            .on_trigger(|m, t: &Trigger| vec![(t.partition, std::mem::take(m))])
            .collect_blocking()
            .unwrap()
    });
    let mut home: BTreeMap<u32, (usize, u32)> = BTreeMap::new();
    for (p, counts) in got {
        for (k, n) in counts {
            assert!(
                home.insert(k, (p, n)).is_none(),
                "key {k} in two partitions"
            );
        }
    }
    for k in 0..11u32 {
        let a = (0..600u32).filter(|i| i % 7 == k).count() as u32;
        let b = (0..400u32).filter(|i| i % 11 == k).count() as u32 * 10;
        assert_eq!(home[&k].1, a + b, "key {k}");
    }
}

#[test]
fn merging_nothing_is_an_error() {
    assert_misuse(blocking(|| {
        Flow::merge(Vec::<Flow<u32>>::new()).collect_blocking()
    }));
    assert_misuse(blocking(|| {
        Flow::merge_partitioned(Vec::<Flow<u32>>::new(), Partition::new()).collect_blocking()
    }));
}

#[test]
fn an_error_in_one_merged_flow_fails_the_merge() {
    let result = blocking(|| {
        Flow::merge([
            Flow::from_iter(0..10u32),
            Flow::from_iter(0..10u32).map(|x| x).max_demand(0),
        ])
        .collect_blocking()
    });
    assert_eq!(support::option_name(result), "max_demand");
}

#[test]
fn stages_after_a_partition_sets_its_partitions() {
    // The partition's own count is replaced: 3 stages, and every event in its partition.
    let got = blocking(|| {
        Flow::from_iter(0..300u32)
            .partition(Partition::by_hash(|x: &u32| *x as usize).stages(2))
            .stages(3)
            .reduce(Vec::new, |v: &mut Vec<u32>, x| v.push(x))
            .on_trigger(|v, t: &Trigger| vec![(t.partition, t.partitions, std::mem::take(v))])
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got.len(), 3);
    for (p, n, events) in got {
        assert_eq!(n, 3);
        assert!(
            events.iter().all(|x| *x as usize % 3 == p),
            "{p}: {events:?}"
        );
        assert_eq!(events.len(), 100);
    }
}

/// Two live flows merged by key into fixed windows: each flow's watermark reaches every stage,
/// and the slower one holds the windows until it passes them.
#[tokio::test(start_paused = true)]
async fn fixed_windows_after_a_merge_follow_the_slowest_flow() {
    let start = tokio::time::Instant::now();
    let fast = timed(
        vec![(0, 0u64), (10, 1100), (20, 2200), (30, 3300)],
        Some(400),
    );
    let slow = timed(vec![(0, 50u64), (200, 1050), (300, 2050)], Some(350));
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        Flow::merge_partitioned(
            // One stage for the mapping: each of its stages holds the windows back until it
            // has sent something (or finishes).
            [
                Flow::from_stream(fast),
                Flow::from_stream(slow).stages(1).map(|t| t),
            ],
            Partition::by_hash(|t: &u64| (t / 1000) as usize).stages(2),
        )
        .window(Window::fixed(Duration::from_secs(1), |t: &u64| *t))
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(move |n, t: &Trigger| {
            vec![(t.window, t.name.clone(), *n, support::since(start))]
        })
        .collect(),
    )
    .await
    .expect("the flow hung")
    .expect("the flow failed");
    let mut done: Vec<(u64, u64, u64)> = got
        .into_iter()
        .filter(|(_, name, n, _)| *name == TriggerName::Done && *n > 0)
        .map(|(w, _, n, at)| (w, n, at))
        .collect();
    done.sort();
    assert_eq!(
        done,
        [(0, 2, 200), (1000, 2, 300), (2000, 2, 350), (3000, 1, 400)],
        "each window closes when the slow flow passes it (or at the end)"
    );
}
