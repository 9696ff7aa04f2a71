//! Partition routing (Flow rules P1, P2, M4) and shuffle. Our hash is not Erlang's phash2, so
//! exact placements use explicit hashes and everything else asserts hash-independent facts.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flow::{Flow, Partition, Trigger, TriggerName, WindowType};
use support::{blocking, sorted};

/// What each partition of `flow` received: partition index -> sorted events.
fn per_partition<T>(flow: Flow<T>) -> BTreeMap<usize, Vec<T>>
where
    T: Ord + Clone + Send + 'static,
{
    let got = blocking(move || {
        flow.reduce(Vec::new, |v: &mut Vec<T>, x| v.push(x))
            .on_trigger(|v, t: &Trigger| vec![(t.partition, std::mem::take(v))])
            .collect_blocking()
            .unwrap()
    });
    let mut out = BTreeMap::new();
    for (p, events) in got {
        assert!(
            out.insert(p, sorted(events)).is_none(),
            "partition {p} fired Done twice"
        );
    }
    out
}

#[test]
fn an_explicit_hash_routes_each_event_to_hash_mod_stages() {
    // Upstream's [[1,5,7,9],[2,6,8],[3,4],[10]] depends on phash2; with rem(x, 4):
    let got = per_partition(
        Flow::from_iter(1..=10u32).partition(Partition::by_hash(|x: &u32| *x as usize).stages(4)),
    );
    let expected: BTreeMap<usize, Vec<u32>> = [
        (0, vec![4, 8]),
        (1, vec![1, 5, 9]),
        (2, vec![2, 6, 10]),
        (3, vec![3, 7]),
    ]
    .into();
    assert_eq!(got, expected);
}

#[test]
fn hashes_beyond_the_stage_count_wrap_around() {
    let got = per_partition(
        Flow::from_iter(0..30u32)
            .partition(Partition::by_hash(|x: &u32| *x as usize * 7 + 1_000_000).stages(3)),
    );
    for (p, events) in &got {
        for x in events {
            assert_eq!(
                (*x as usize * 7 + 1_000_000) % 3,
                *p,
                "{x} in partition {p}"
            );
        }
    }
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 30);
}

#[test]
fn every_partition_fires_done_even_when_it_got_nothing() {
    let got = blocking(|| {
        Flow::from_iter(1..=10u32)
            .partition(Partition::by_hash(|_: &u32| 0).stages(4))
            .reduce(|| 0u32, |n, _| *n += 1)
            .on_trigger(|n, t| vec![(t.clone(), *n)])
            .collect_blocking()
            .unwrap()
    });
    let mut got: Vec<(usize, usize, WindowType, u64, TriggerName, u32)> = got
        .into_iter()
        .map(|(t, n)| {
            (
                t.partition,
                t.partitions,
                t.window_type,
                t.window,
                t.name,
                n,
            )
        })
        .collect();
    got.sort_by_key(|g| g.0);
    let expected: Vec<_> = (0..4)
        .map(|p| {
            (
                p,
                4,
                WindowType::Global,
                0,
                TriggerName::Done,
                if p == 0 { 10 } else { 0 },
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_tuple_key_routes_by_that_element() {
    // Upstream "allows key based partitioning", with an explicit hash of the key.
    let events = vec![vec![(1, 1), (2, 2), (3, 3)], vec![(1, 4), (2, 5), (3, 6)]];
    let got = per_partition(
        Flow::from_iters(events)
            .partition(Partition::by_hash(|(k, _): &(u32, u32)| (*k % 2) as usize).stages(2)),
    );
    let values: BTreeMap<usize, Vec<u32>> = got
        .into_iter()
        .map(|(p, evs)| (p, sorted(evs.into_iter().map(|(_, v)| v).collect())))
        .collect();
    assert_eq!(
        values,
        BTreeMap::from([(0, vec![2, 5]), (1, vec![1, 3, 4, 6])])
    );
}

#[test]
fn equal_keys_meet_in_one_partition() {
    let input: Vec<(u32, u32)> = (0..5000).map(|i| ((i * 31) % 97, i)).collect();
    let got = per_partition(
        Flow::from_iter(input.clone())
            .stages(3)
            .map(|e| e)
            .partition(Partition::by_key(|(k, _): &(u32, u32)| *k).stages(4)),
    );
    let mut home: HashMap<u32, usize> = HashMap::new();
    for (p, events) in &got {
        for (k, _) in events {
            if let Some(other) = home.insert(*k, *p) {
                assert_eq!(other, *p, "key {k} reached partitions {other} and {p}");
            }
        }
    }
    assert_eq!(home.len(), 97);
    let all: Vec<_> = got.into_values().flatten().collect();
    assert_eq!(sorted(all), sorted(input));
}

#[test]
fn the_default_partition_hashes_the_whole_event() {
    let input: Vec<String> = (0..3000).map(|i| format!("w{}", i % 40)).collect();
    let got = per_partition(
        Flow::from_iters([input[..1500].to_vec(), input[1500..].to_vec()])
            .partition(Partition::new().stages(3)),
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (p, words) in &got {
        for w in words {
            assert_eq!(*seen.entry(w.clone()).or_insert(*p), *p, "{w} split");
        }
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 3000);
}

#[test]
fn the_hash_is_the_same_in_every_run() {
    let run = || {
        per_partition(
            Flow::from_iter(0..500u32).partition(Partition::by_key(|x: &u32| x % 50).stages(4)),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn one_stage_means_no_hashing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let got = blocking(move || {
        Flow::from_iter(1..=10u32)
            .partition(
                Partition::by_hash(move |_: &u32| -> usize {
                    c.fetch_add(1, Ordering::SeqCst);
                    panic!("the hash must not run with one stage")
                })
                .stages(1),
            )
            .map(|x| x)
            .collect_blocking()
            .unwrap()
    });
    // O1: one stage keeps its input's order.
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn the_hash_runs_with_several_stages() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let got = blocking(move || {
        Flow::from_iter(0..100u32)
            .partition(
                Partition::by_hash(move |x: &u32| {
                    c.fetch_add(1, Ordering::SeqCst);
                    *x as usize
                })
                .stages(2),
            )
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(sorted(got), (0..100).collect::<Vec<_>>());
    assert!(calls.load(Ordering::SeqCst) >= 100);
}

#[test]
fn partitioning_twice_regroups_by_the_second_key() {
    let got = per_partition(
        Flow::from_iter(0..1000u32)
            .partition(Partition::by_hash(|x: &u32| *x as usize).stages(3))
            .map(|x| x * 2)
            .partition(Partition::by_hash(|x: &u32| (*x / 2 % 5) as usize).stages(5)),
    );
    assert_eq!(got.len(), 5);
    for (p, events) in &got {
        assert!(events.iter().all(|x| (x / 2 % 5) as usize == *p));
        assert_eq!(events.len(), 200);
    }
}

#[test]
fn partition_demand_options_bound_the_batches() {
    let sizes = blocking(|| {
        Flow::from_iter(0..200u32)
            .map(|x| x)
            .stages(2)
            .partition(
                Partition::by_hash(|x: &u32| *x as usize)
                    .stages(2)
                    .max_demand(8)
                    .min_demand(3),
            )
            .map_batch(|b: Vec<u32>| vec![b.len()])
            .collect_blocking()
            .unwrap()
    });
    assert!(sizes.iter().all(|&n| (1..=5).contains(&n)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 200);
}

// ----- shuffle -----

#[test]
fn shuffle_delivers_everything_to_its_stages() {
    let got = per_partition(Flow::from_iter(0..2000u32).shuffle().stages(3));
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    let all: Vec<u32> = got.into_values().flatten().collect();
    assert_eq!(sorted(all), (0..2000).collect::<Vec<_>>());
}

#[test]
fn shuffle_then_partition_still_groups_keys() {
    // Upstream "allows function based partitioning after shuffling".
    let events = vec![vec![(1, 1), (2, 2), (3, 3)], vec![(1, 4), (2, 5), (3, 6)]];
    let got = per_partition(
        Flow::from_iters(events)
            .shuffle()
            .stages(2)
            .partition(Partition::by_key(|(k, _): &(u32, u32)| *k).stages(2)),
    );
    let mut groups: Vec<Vec<u32>> = Vec::new();
    for events in got.into_values() {
        let keys: HashSet<u32> = events.iter().map(|(k, _)| *k).collect();
        for k in keys {
            groups.push(sorted(
                events
                    .iter()
                    .filter(|(key, _)| *key == k)
                    .map(|(_, v)| *v)
                    .collect(),
            ));
        }
    }
    assert_eq!(sorted(groups), [vec![1, 4], vec![2, 5], vec![3, 6]]);
}

#[test]
fn one_shuffled_stage_keeps_order() {
    let got = blocking(|| {
        Flow::from_iter(1..=1000u32)
            .shuffle()
            .stages(1)
            .map(|x| x + 1)
            .collect_blocking()
            .unwrap()
    });
    assert_eq!(got, (2..=1001).collect::<Vec<_>>());
}

// ----- layers whose stages finish early -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_after_idle_stages_never_fails() {
    // Most of the 8 first-layer stages get no events and finish at once, possibly before the
    // next layer has subscribed to them. That must not fail the flow or lose events.
    let mut failures = Vec::new();
    for round in 0..2000u32 {
        let n = round % 3;
        let result = support::within(
            Flow::from_iter(0..n)
                .map(|x| x)
                .stages(8)
                .partition(Partition::by_hash(|x: &u32| *x as usize).stages(4))
                .collect(),
        )
        .await;
        match result {
            Ok(got) => assert_eq!(sorted(got), (0..n).collect::<Vec<_>>()),
            Err(e) => failures.push(format!("round {round}: {e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 2000 runs failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
