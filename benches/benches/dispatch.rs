//! Fan-out throughput: broadcast to 2 consumers and partition to 2 consumers over 10,000,000
//! `u64`, beside hand-written tokio channel fan-outs doing the same work. See
//! `benches/README.md`.

use std::time::{Duration, Instant};

use benches::dispatch::{FanOut, check, run_baseline, run_stages};
use benches::{BATCH, CHANNEL_BATCHES, EVENTS, runtime};
use criterion::{Criterion, Throughput, criterion_main};
use tokio::runtime::Runtime;

/// Elixir GenStage on a 2-core machine, in millions of events per second.
const ELIXIR: [(FanOut, &str, f64); 2] = [
    (FanOut::Broadcast, "broadcast", 11.4),
    (FanOut::Partition, "partition", 5.3),
];

fn time(rt: &Runtime, fan_out: FanOut, ours: bool) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let sums = if ours {
            run_stages(EVENTS, fan_out).await
        } else {
            run_baseline(EVENTS, fan_out, BATCH, CHANNEL_BATCHES).await
        };
        let elapsed = start.elapsed();
        check(EVENTS, fan_out, sums);
        elapsed
    })
}

fn fan_outs(c: &mut Criterion) {
    for (fan_out, name, _) in ELIXIR {
        let rt = runtime();
        let mut group = c.benchmark_group(name);
        group
            .throughput(Throughput::Elements(EVENTS))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(6));
        group.bench_function("ours", |b| {
            b.iter_custom(|n| (0..n).map(|_| time(&rt, fan_out, true)).sum())
        });
        group.bench_function("baseline", |b| {
            b.iter_custom(|n| (0..n).map(|_| time(&rt, fan_out, false)).sum())
        });
        group.finish();
    }
}

/// Best of 5 interleaved runs of each, as events per second.
fn summary(_: &mut Criterion) {
    let rt = runtime();
    for (fan_out, name, elixir) in ELIXIR {
        let (mut ours, mut base) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            ours = ours.min(time(&rt, fan_out, true));
            base = base.min(time(&rt, fan_out, false));
        }
        let rate = |d: Duration| EVENTS as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{name}: ours {:.1} M events/s, baseline {:.1} M events/s, ratio ours/baseline {:.2}, {:.1}x Elixir ({elixir} M/s)",
            rate(ours),
            rate(base),
            rate(ours) / rate(base),
            rate(ours) / elixir
        );
    }
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::fan_outs, super::summary);
}

criterion_main!(harness::benches);
