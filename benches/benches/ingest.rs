//! Acknowledged messages through 2 processors and one batcher of 100: an `ingest` pipeline
//! against a hand-written tokio pipeline doing the same work. See `benches/README.md`.

use std::time::{Duration, Instant};

use benches::ingest::{
    BATCH_SIZE, BROADWAY_DEFAULT_DEMAND, BROADWAY_DEMAND_100, MESSAGES, Tally, run_handwritten,
    run_ingest,
};
use benches::runtime;
use criterion::{Criterion, Throughput, criterion_main};
use ingest::DEFAULT_PROCESSOR_MAX_DEMAND;
use tokio::runtime::Runtime;

/// The two scenarios: name, the processors' `max_demand` (`None`: their default, 10) and the
/// depth of the hand-written pipeline's processor channels (the same number of messages in
/// flight per processor).
const SCENARIOS: [(&str, Option<usize>, usize, f64); 2] = [
    (
        "ingest_default_demand",
        None,
        DEFAULT_PROCESSOR_MAX_DEMAND,
        BROADWAY_DEFAULT_DEMAND,
    ),
    ("ingest_max_demand_100", Some(100), 100, BROADWAY_DEMAND_100),
];

fn check(tally: &Tally) {
    let (acked, failed, calls, tags, sum) = tally.totals();
    let (want_tags, want_sum) = Tally::expected(MESSAGES);
    assert_eq!(
        (acked, failed, tags, sum),
        (MESSAGES, 0, want_tags, want_sum)
    );
    assert!(calls >= MESSAGES / BATCH_SIZE as u64, "{calls} ack calls");
}

/// One run of our pipeline, timed; checks what was acked.
fn time_ours(rt: &Runtime, max_demand: Option<usize>) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tally = run_ingest(MESSAGES, max_demand).await;
        let elapsed = start.elapsed();
        check(&tally);
        elapsed
    })
}

/// One run of the hand-written pipeline, timed; checks what was acked.
fn time_baseline(rt: &Runtime, depth: usize) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tally = run_handwritten(MESSAGES, depth).await;
        let elapsed = start.elapsed();
        check(&tally);
        elapsed
    })
}

fn pipelines(c: &mut Criterion) {
    for (name, max_demand, depth, _) in SCENARIOS {
        let rt = runtime();
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Elements(MESSAGES))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(6));
        group.bench_function("ours", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_ours(&rt, max_demand)).sum())
        });
        group.bench_function("baseline", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| time_baseline(&rt, depth)).sum())
        });
        group.finish();
    }
}

/// How many interleaved rounds (one run of ours, one of the baseline) the summary takes.
const SUMMARY_ROUNDS: usize = 5;

/// Millions of messages per second of a run that took `elapsed`.
fn rate(elapsed: Duration) -> f64 {
    MESSAGES as f64 / elapsed.as_secs_f64() / 1e6
}

/// One summary line per scenario: the best of [`SUMMARY_ROUNDS`] interleaved runs of each.
fn summary(_: &mut Criterion) {
    println!();
    for (name, max_demand, depth, broadway) in SCENARIOS {
        let rt = runtime();
        let (mut ours, mut baseline) = (Duration::MAX, Duration::MAX);
        for _ in 0..SUMMARY_ROUNDS {
            ours = ours.min(time_ours(&rt, max_demand));
            baseline = baseline.min(time_baseline(&rt, depth));
        }
        let (ours, baseline) = (rate(ours), rate(baseline));
        println!(
            "{name}: ours {ours:.2} M messages/s, baseline (hand-written tokio) {baseline:.2} M messages/s, \
             ratio ours/baseline {:.2} (goal >= 0.8), ours/Broadway {:.1}x (Broadway {broadway} M/s)",
            ours / baseline,
            ours / broadway,
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
