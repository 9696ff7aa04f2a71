//! Job throughput of a `ConsumerSupervisor` for each `min_demand` against a hand-written
//! `tokio::task::JoinSet` bounded by a `tokio::sync::Semaphore`. See `benches/README.md`.
//!
//! Every run starts 60 jobs that each sleep (real time) between 10 and 50 ms, at most 10 at
//! once: the supervisor with `max_demand` 10, the baseline with 10 permits. The time of a run
//! is mostly waiting, so what it measures is how well each keeps its 10 slots busy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::runtime;
use criterion::{Criterion, Throughput, criterion_main};
use stage::{ConsumerSupervisor, Reason, SubscribeOptions};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How many jobs a run starts.
const JOBS: u64 = 60;
/// How many run at once.
const SLOTS: usize = 10;

/// How long job `i` sleeps: 10 to 50 ms, spread evenly and the same in every run.
fn job_time(i: u64) -> Duration {
    Duration::from_millis(10 + (i * 37) % 41)
}

/// The supervisor's subscriptions measured: name, `min_demand` (`None`: the default).
const VARIANTS: [(&str, Option<usize>); 3] = [
    ("supervisor_min_demand_half", Some(SLOTS / 2)),
    ("supervisor_min_demand_0", Some(0)),
    ("supervisor_default", None),
];

/// One run of a supervisor over the jobs, timed from starting the producer to `join`.
fn time_supervisor(rt: &Runtime, min_demand: Option<usize>) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let jobs = stage::from_iter(0..JOBS).start().unwrap();
        let mut opts = SubscribeOptions::new().max_demand(SLOTS);
        if let Some(min) = min_demand {
            opts = opts.min_demand(min);
        }
        let sup = ConsumerSupervisor::new(|i: u64| async move {
            tokio::time::sleep(job_time(i)).await;
            Ok::<(), Infallible>(())
        })
        .subscribe_to(&jobs, opts)
        .start()
        .unwrap();
        assert_eq!(sup.join().await, Reason::Normal);
        start.elapsed()
    })
}

/// One run of the baseline: a permit per job, each job spawned into a `JoinSet` with its
/// permit, then all joined.
fn time_baseline(rt: &Runtime) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let slots = Arc::new(Semaphore::new(SLOTS));
        let mut set = JoinSet::new();
        for i in 0..JOBS {
            let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
            set.spawn(async move {
                tokio::time::sleep(job_time(i)).await;
                drop(permit);
            });
        }
        while let Some(done) = set.join_next().await {
            done.unwrap();
        }
        start.elapsed()
    })
}

/// The shortest a run can take: the jobs greedily packed into the slots in order (each job
/// starts as soon as a slot is free, as the baseline does).
fn ideal() -> Duration {
    let mut free_at = [Duration::ZERO; SLOTS];
    for i in 0..JOBS {
        let slot = free_at.iter_mut().min().expect("SLOTS > 0");
        *slot += job_time(i);
    }
    free_at.into_iter().max().unwrap_or_default()
}

fn jobs(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("supervisor_jobs");
    group
        .throughput(Throughput::Elements(JOBS))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(14));
    for (name, min) in VARIANTS {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_supervisor(&rt, min)).sum())
        });
    }
    group.bench_function("joinset_semaphore", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| time_baseline(&rt)).sum())
    });
    group.finish();
}

/// How many runs of each the summary averages.
const SUMMARY_ROUNDS: u32 = 5;

/// Prints the mean of [`SUMMARY_ROUNDS`] runs of each variant, interleaved so that other load
/// on the machine hits all alike, next to the ideal packing.
fn summary(_: &mut Criterion) {
    let rt = runtime();
    let mut totals = [Duration::ZERO; VARIANTS.len() + 1];
    for _ in 0..SUMMARY_ROUNDS {
        for (total, (_, min)) in totals.iter_mut().zip(VARIANTS) {
            *total += time_supervisor(&rt, min);
        }
        totals[VARIANTS.len()] += time_baseline(&rt);
    }
    println!();
    println!(
        "{JOBS} jobs of 10-50 ms, {SLOTS} at once; ideal packing {:.3} s",
        ideal().as_secs_f64()
    );
    let names = VARIANTS
        .iter()
        .map(|(name, _)| *name)
        .chain(["joinset_semaphore"]);
    for (name, total) in names.zip(totals) {
        let mean = total / SUMMARY_ROUNDS;
        println!("{name}: mean {:.3} s", mean.as_secs_f64());
    }
}

/// The benchmark group; `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use criterion::criterion_group;

    criterion_group!(benches, super::jobs, super::summary);
}

criterion_main!(group::benches);
