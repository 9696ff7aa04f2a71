//! An inner join of two 1 M-event sides over 10 k keys: `Flow::bounded_join` against a
//! hand-written rayon `HashMap` join, in the same run. See `benches/README.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::join::{Event, Joined, SIDE, expected_pairs, flow_join, rayon_join, sides};
use benches::{rayon_pool, runtime};
use criterion::{Criterion, Throughput, criterion_main};
use rayon::ThreadPool;
use tokio::runtime::Runtime;

/// What every measurement runs on, built once: both sides, the runtime, the pool, and the
/// answer (from one rayon run, outside any timing).
struct Fixture {
    left: Arc<Vec<Event>>,
    right: Arc<Vec<Event>>,
    rt: Runtime,
    pool: ThreadPool,
    expected: Joined,
}

impl Fixture {
    fn new() -> Self {
        let (left, right) = sides();
        let pool = rayon_pool();
        let expected = rayon_join(&pool, &left, &right);
        assert_eq!(expected.pairs, expected_pairs());
        Fixture {
            left,
            right,
            rt: runtime(),
            pool,
            expected,
        }
    }

    /// One run of the flow, timed from building it to `collect` returning; checked after.
    fn flow(&self) -> Duration {
        let (left, right) = (Arc::clone(&self.left), Arc::clone(&self.right));
        let (elapsed, joined) = self.rt.block_on(async {
            let start = Instant::now();
            let joined = flow_join(left, right).await;
            (start.elapsed(), joined)
        });
        assert_eq!(joined, self.expected);
        elapsed
    }

    /// One run of the rayon join, timed; checked after.
    fn rayon(&self) -> Duration {
        let start = Instant::now();
        let joined = rayon_join(&self.pool, &self.left, &self.right);
        let elapsed = start.elapsed();
        assert_eq!(joined, self.expected);
        elapsed
    }
}

fn join(c: &mut Criterion) {
    let f = Fixture::new();
    let mut group = c.benchmark_group("join");
    group
        .throughput(Throughput::Elements(2 * SIDE))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("flow_bounded_join", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| f.flow()).sum())
    });
    group.bench_function("rayon_hash_join", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| f.rayon()).sum())
    });
    group.finish();
}

/// How many interleaved rounds (one run of each) the summary takes.
const SUMMARY_ROUNDS: usize = 5;

/// Prints the best time of each over interleaved rounds, the pairs per second, and the ratio.
fn summary(_: &mut Criterion) {
    let f = Fixture::new();
    let (mut flow, mut rayon) = (Duration::MAX, Duration::MAX);
    for _ in 0..SUMMARY_ROUNDS {
        flow = flow.min(f.flow());
        rayon = rayon.min(f.rayon());
    }
    let pairs = |d: Duration| expected_pairs() as f64 / d.as_secs_f64() / 1e6;
    println!();
    println!(
        "join: flow {:.1} ms ({:.0} M pairs/s), rayon {:.1} ms ({:.0} M pairs/s), \
         ratio flow/rayon throughput {:.2} (best of {SUMMARY_ROUNDS} interleaved rounds; \
         {SIDE} events a side, {} pairs)",
        flow.as_secs_f64() * 1e3,
        pairs(flow),
        rayon.as_secs_f64() * 1e3,
        pairs(rayon),
        rayon.as_secs_f64() / flow.as_secs_f64(),
        expected_pairs(),
    );
}

/// The benchmark group; `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use criterion::criterion_group;

    criterion_group!(benches, super::join, super::summary);
}

criterion_main!(group::benches);
