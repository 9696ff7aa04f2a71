//! Interleaved rounds of the pipeline benchmark, for comparing two commits on a noisy machine.
//!
//! Criterion measures ours and the baseline one after the other, seconds apart; on a shared
//! virtual machine the speed of the host changes faster than that. This runs one pipeline of
//! ours and one baseline pipeline alternately, `--rounds` times, on the benchmark's own
//! runtime and code (`run_stages`, `run_baseline`), and prints the medians and the median of
//! the per-round ratios. Build it once per commit and run the binaries alternately:
//!
//! ```sh
//! cargo build --release -p benches --bin pipeline_rounds && cp target/release/pipeline_rounds /tmp/new
//! # (the same in a checkout of the other commit, into /tmp/old)
//! for i in 1 2 3; do /tmp/old --rounds 7; /tmp/new --rounds 7; done
//! ```

use std::time::Instant;

use benches::{BATCH, CHANNEL_BATCHES, EVENTS, expected_sum, run_baseline, run_stages};
use clap::Parser;
use stage::SubscribeOptions;

/// Interleaved rounds of the `pipeline` benchmark's two scenarios.
#[derive(Parser, Debug)]
struct Args {
    /// Rounds per scenario (one run of ours and one of the baseline each).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Worker threads of the runtime (the benchmark's is 2).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    for (name, mapped) in [("producer_consumer", false), ("three_stage", true)] {
        let (mut ours, mut baseline, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            let start = Instant::now();
            let summed = rt.block_on(run_stages(EVENTS, mapped, SubscribeOptions::new()));
            let o = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(summed.sum, expected_sum(EVENTS, mapped));
            let start = Instant::now();
            let summed = rt.block_on(run_baseline(EVENTS, mapped, BATCH, CHANNEL_BATCHES));
            let b = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(summed.sum, expected_sum(EVENTS, mapped));
            ours.push(o);
            baseline.push(b);
            ratios.push(b / o);
        }
        println!(
            "{name}: ours median {:.2} ms, baseline median {:.2} ms, median ratio ours/baseline {:.2}",
            median(ours),
            median(baseline),
            median(ratios)
        );
    }
}
