//! Throughput of `stage::channel` against a tokio `mpsc` channel of the same capacity, with 1
//! and 4 senders pushing 2,000,000 events in all. See `benches/README.md`.

use std::time::{Duration, Instant};

use benches::channel::{CHANNEL_EVENTS, expected, run_channel, run_mpsc};
use benches::runtime;
use criterion::{Criterion, Throughput, criterion_main};
use tokio::runtime::Runtime;

/// What is measured: our channel, or the tokio baselines.
#[derive(Clone, Copy)]
enum Side {
    Ours,
    Recv,
    RecvMany,
}

fn time(rt: &Runtime, side: Side, senders: u64) -> Duration {
    let per_sender = CHANNEL_EVENTS / senders;
    rt.block_on(async {
        let start = Instant::now();
        let sum = match side {
            Side::Ours => run_channel(senders, per_sender).await,
            Side::Recv => run_mpsc(senders, per_sender, false).await,
            Side::RecvMany => run_mpsc(senders, per_sender, true).await,
        };
        let elapsed = start.elapsed();
        assert_eq!(sum, expected(senders, per_sender));
        elapsed
    })
}

const SIDES: [(&str, Side); 3] = [
    ("ours", Side::Ours),
    ("mpsc_recv", Side::Recv),
    ("mpsc_recv_many", Side::RecvMany),
];

fn channels(c: &mut Criterion) {
    let rt = runtime();
    for senders in [1u64, 4] {
        let mut group = c.benchmark_group(format!("channel_{senders}_senders"));
        group
            .throughput(Throughput::Elements(CHANNEL_EVENTS))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        for (name, side) in SIDES {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| time(&rt, side, senders)).sum())
            });
        }
        group.finish();
    }
}

/// Prints one line per sender count: the best of 5 interleaved rounds of each side, and the
/// ratios of ours to each baseline.
fn summary(_: &mut Criterion) {
    let rt = runtime();
    println!();
    for senders in [1u64, 4] {
        let mut best = [Duration::MAX; 3];
        for _ in 0..5 {
            for (i, (_, side)) in SIDES.iter().enumerate() {
                best[i] = best[i].min(time(&rt, *side, senders));
            }
        }
        let rate = |d: Duration| CHANNEL_EVENTS as f64 / d.as_secs_f64() / 1e6;
        let [ours, recv, many] = best.map(rate);
        println!(
            "channel, {senders} sender(s): ours {ours:.1} M events/s, mpsc recv {recv:.1}, \
             mpsc recv_many {many:.1}; ratio ours/recv {:.2}, ours/recv_many {:.2}",
            ours / recv,
            ours / many
        );
    }
}

/// The benchmark group; `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use criterion::criterion_group;

    criterion_group!(benches, super::channels, super::summary);
}

criterion_main!(group::benches);
