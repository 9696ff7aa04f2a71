//! Throughput of stage pipelines over 10,000,000 `u64` events against hand-written
//! `tokio::sync::mpsc` pipelines doing the same work. See `benches/README.md`.

use std::time::{Duration, Instant};

use benches::{BATCH, CHANNEL_BATCHES, EVENTS, expected_sum, run_baseline, run_stages, runtime};
use criterion::{Criterion, Throughput, criterion_main};
use stage::SubscribeOptions;
use tokio::runtime::Runtime;

/// The two scenarios: name, and whether events go through the mapping middle stage.
const SCENARIOS: [(&str, bool); 2] = [("producer_consumer", false), ("three_stage", true)];

/// One run of our pipeline, timed; checks the sum.
fn time_ours(rt: &Runtime, mapped: bool) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let summed = run_stages(EVENTS, mapped, SubscribeOptions::new()).await;
        let elapsed = start.elapsed();
        assert_eq!(summed.sum, expected_sum(EVENTS, mapped));
        elapsed
    })
}

/// One run of the baseline, timed; checks the sum.
fn time_baseline(rt: &Runtime, mapped: bool) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let summed = run_baseline(EVENTS, mapped, BATCH, CHANNEL_BATCHES).await;
        let elapsed = start.elapsed();
        assert_eq!(summed.sum, expected_sum(EVENTS, mapped));
        elapsed
    })
}

fn pipelines(c: &mut Criterion) {
    for (name, mapped) in SCENARIOS {
        let rt = runtime();
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Elements(EVENTS))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(6));
        group.bench_function("ours", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_ours(&rt, mapped)).sum())
        });
        group.bench_function("baseline", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_baseline(&rt, mapped)).sum())
        });
        group.finish();
    }
}

/// How many interleaved rounds (one run of ours, one of the baseline) the summary takes.
const SUMMARY_ROUNDS: usize = 5;

/// Millions of events per second of a run that took `elapsed`.
fn rate(elapsed: Duration) -> f64 {
    EVENTS as f64 / elapsed.as_secs_f64() / 1e6
}

/// Prints one summary line per scenario from a quick separate measurement: the best of
/// [`SUMMARY_ROUNDS`] runs each, ours and the baseline interleaved so that other load on the
/// machine hits both alike.
fn summary(_: &mut Criterion) {
    println!();
    for (name, mapped) in SCENARIOS {
        let rt = runtime();
        let (mut ours, mut baseline) = (Duration::MAX, Duration::MAX);
        for _ in 0..SUMMARY_ROUNDS {
            ours = ours.min(time_ours(&rt, mapped));
            baseline = baseline.min(time_baseline(&rt, mapped));
        }
        let (ours, baseline) = (rate(ours), rate(baseline));
        println!(
            "{name}: ours {ours:.1} M events/s, baseline {baseline:.1} M events/s, \
             ratio ours/baseline {:.2}",
            ours / baseline
        );
    }
}

/// The benchmark group; `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use criterion::criterion_group;

    criterion_group!(benches, super::pipelines, super::summary);
}

criterion_main!(group::benches);
