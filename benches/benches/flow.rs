//! Throughput of `flow` over 10,000,000 `u64` events against rayon (and a sequential loop)
//! doing the same work on the same prebuilt `Vec`. See `benches/README.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{
    ELIXIR_MAP_FILTER_REDUCE, ELIXIR_PARTITION_REDUCE, EVENTS, Source, check_counts,
    expected_map_filter_sum, flow_map_filter_reduce, flow_partition_reduce, input,
    rayon_map_filter_reduce, rayon_partition_reduce, rayon_pool, runtime,
    sequential_partition_reduce,
};
use criterion::{Criterion, Throughput, criterion_main};
use rayon::ThreadPool;
use tokio::runtime::Runtime;

/// What every measurement runs on, built once: the input and both thread pools.
struct Fixture {
    data: Arc<Vec<u64>>,
    rt: Runtime,
    pool: ThreadPool,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            data: input(EVENTS),
            rt: runtime(),
            pool: rayon_pool(),
        }
    }
}

/// One measured implementation of a scenario.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// `map_filter_reduce` as a flow reading its input this way, with this `max_demand`
    /// (`None`: the default, 1000).
    MapFilterFlow(Source, Option<usize>),
    /// `map_filter_reduce` with rayon.
    MapFilterRayon,
    /// `partition_reduce` as a flow reading its input this way.
    PartitionFlow(Source),
    /// `partition_reduce` with rayon.
    PartitionRayon,
    /// `partition_reduce` as a loop on one thread.
    PartitionSequential,
}

impl Run {
    /// One run, timed; its result is checked after the clock stops.
    fn time(self, f: &Fixture) -> Duration {
        match self {
            Run::MapFilterFlow(source, max_demand) => {
                let data = Arc::clone(&f.data);
                let (elapsed, sum) = f.rt.block_on(async {
                    let start = Instant::now();
                    let sum = flow_map_filter_reduce(source, data, max_demand).await;
                    (start.elapsed(), sum)
                });
                assert_eq!(sum, expected_map_filter_sum(EVENTS));
                elapsed
            }
            Run::MapFilterRayon => {
                let start = Instant::now();
                let sum = rayon_map_filter_reduce(&f.pool, &f.data);
                let elapsed = start.elapsed();
                assert_eq!(sum, expected_map_filter_sum(EVENTS));
                elapsed
            }
            Run::PartitionFlow(source) => {
                let data = Arc::clone(&f.data);
                let (elapsed, pairs) = f.rt.block_on(async {
                    let start = Instant::now();
                    let pairs = flow_partition_reduce(source, data).await;
                    (start.elapsed(), pairs)
                });
                check_counts(EVENTS, pairs);
                elapsed
            }
            Run::PartitionRayon => {
                let start = Instant::now();
                let counts = rayon_partition_reduce(&f.pool, &f.data);
                let elapsed = start.elapsed();
                check_counts(EVENTS, counts);
                elapsed
            }
            Run::PartitionSequential => {
                let start = Instant::now();
                let counts = sequential_partition_reduce(&f.data);
                let elapsed = start.elapsed();
                check_counts(EVENTS, counts);
                elapsed
            }
        }
    }
}

/// `map_filter_reduce`'s measurements: criterion's names for them, and what they run.
const MAP_FILTER_REDUCE: [(&str, Run); 5] = [
    ("flow_from_shared", Run::MapFilterFlow(Source::Shared, None)),
    (
        "flow_from_shared_max_demand_10000",
        Run::MapFilterFlow(Source::Shared, Some(10_000)),
    ),
    ("flow_from_iter", Run::MapFilterFlow(Source::Iter, None)),
    (
        "flow_from_iter_max_demand_10000",
        Run::MapFilterFlow(Source::Iter, Some(10_000)),
    ),
    ("rayon", Run::MapFilterRayon),
];

/// `partition_reduce`'s measurements.
const PARTITION_REDUCE: [(&str, Run); 4] = [
    ("flow_from_shared", Run::PartitionFlow(Source::Shared)),
    ("flow_from_iter", Run::PartitionFlow(Source::Iter)),
    ("rayon", Run::PartitionRayon),
    ("sequential", Run::PartitionSequential),
];

/// Both scenarios: group name and measurements.
const SCENARIOS: [(&str, &[(&str, Run)]); 2] = [
    ("map_filter_reduce", &MAP_FILTER_REDUCE),
    ("partition_reduce", &PARTITION_REDUCE),
];

fn flows(c: &mut Criterion) {
    let fixture = Fixture::new();
    for (name, runs) in SCENARIOS {
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Elements(EVENTS))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(6));
        for &(id, run) in runs {
            group.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run.time(&fixture)).sum())
            });
        }
        group.finish();
    }
}

/// How many interleaved rounds (one run of each measurement of a scenario) the summary takes.
const SUMMARY_ROUNDS: usize = 5;

/// Millions of events per second of a run that took `elapsed`.
fn rate(elapsed: Duration) -> f64 {
    EVENTS as f64 / elapsed.as_secs_f64() / 1e6
}

/// The best rate of each of `runs` over [`SUMMARY_ROUNDS`] interleaved rounds, so that other
/// load on the machine hits them all alike.
fn best_rates<const N: usize>(f: &Fixture, runs: [Run; N]) -> [f64; N] {
    let mut best = [Duration::MAX; N];
    for _ in 0..SUMMARY_ROUNDS {
        for (best, run) in best.iter_mut().zip(runs) {
            *best = (*best).min(run.time(f));
        }
    }
    best.map(rate)
}

/// Prints one summary line per flow measured: its rate against rayon's (goal for
/// `map_filter_reduce`: ratio at least 1/3) and against Elixir Flow's reference figure (goal:
/// 10x), from a quick separate measurement.
fn summary(_: &mut Criterion) {
    let f = Fixture::new();
    println!();
    let runs = MAP_FILTER_REDUCE.map(|(_, run)| run);
    let rates = best_rates(&f, runs);
    let rayon = rates[runs.len() - 1];
    for ((name, _), ours) in MAP_FILTER_REDUCE
        .iter()
        .zip(rates)
        .filter(|((name, _), _)| *name != "rayon")
    {
        let name = format!("map_filter_reduce/{name}");
        println!(
            "{name}: ours {ours:.1} M events/s, baseline (rayon) {rayon:.1} M events/s, \
             ratio ours/baseline {:.2} (goal >= 0.33), ours/Elixir {:.1}x (Elixir \
             {ELIXIR_MAP_FILTER_REDUCE} M events/s, goal 10x)",
            ours / rayon,
            ours / ELIXIR_MAP_FILTER_REDUCE,
        );
    }
    let [shared, iter, rayon, sequential] = best_rates(&f, PARTITION_REDUCE.map(|(_, run)| run));
    for (name, ours) in [("flow_from_shared", shared), ("flow_from_iter", iter)] {
        println!(
            "partition_reduce/{name}: ours {ours:.1} M events/s, baseline (rayon) {rayon:.1} M events/s, \
         ratio ours/baseline {:.2}, sequential {sequential:.1} M events/s, ratio \
         ours/sequential {:.2}, ours/Elixir {:.1}x (Elixir {ELIXIR_PARTITION_REDUCE} M \
         events/s, goal 10x)",
            ours / rayon,
            ours / sequential,
            ours / ELIXIR_PARTITION_REDUCE,
        );
    }
}

/// The benchmark group; `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use criterion::criterion_group;

    criterion_group!(benches, super::flows, super::summary);
}

criterion_main!(group::benches);
