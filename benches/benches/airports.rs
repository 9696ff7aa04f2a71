//! The airports count over OurAirports' real `airports.csv` (85,009 rows, 12.5 MB): the flow of
//! `examples::airports::count` against a single-threaded `csv` loop and rayon over chunks,
//! then a scale step over 1x, 10x and 100x copies of the file's rows, each run in a fresh
//! process for its peak RSS. See `benches/README.md`.
//!
//! Skipped, with a printed reason, when the file is absent (`$AIRPORTS_CSV` overrides its
//! path). The scale step re-executes this binary with [`SCALE_FILE`] set: the child runs one
//! flow count over that file and prints its time and peak RSS, so the baselines' memory does
//! not count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use benches::airports::{
    ELIXIR_MS, GOAL_MS, POLARS_MS, Tally, csv_loop, csv_path, flow_count, free_bytes, peak_rss_kib,
    rayon_chunks, write_copies,
};
use benches::{rayon_pool, runtime};
use criterion::{Criterion, Throughput};
use rayon::ThreadPool;
use tokio::runtime::Runtime;

/// What every measurement runs on, built once: the file's path and size, and both pools.
struct Fixture {
    path: PathBuf,
    len: u64,
    rt: Runtime,
    pool: ThreadPool,
}

impl Fixture {
    /// The fixture, or `None` when the file is absent (with the reason printed if `say`).
    fn new(say: bool) -> Option<Self> {
        let path = csv_path();
        match std::fs::metadata(&path) {
            Ok(meta) => Some(Fixture {
                path,
                len: meta.len(),
                rt: runtime(),
                pool: rayon_pool(),
            }),
            Err(e) => {
                if say {
                    println!(
                        "airports: skipped: cannot read {} ({e}); set AIRPORTS_CSV to the real \
                     airports.csv",
                        path.display()
                    );
                }
                None
            }
        }
    }
}

/// One measured implementation of the count.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// `examples::airports::count` on the 2-worker tokio runtime, from opening the file.
    Flow,
    /// The single-threaded `csv` loop.
    CsvLoop,
    /// rayon over chunks of the whole file read into memory.
    Rayon,
}

/// Every implementation, the flow first.
const RUNS: [Run; 3] = [Run::Flow, Run::CsvLoop, Run::Rayon];

impl Run {
    fn name(self) -> &'static str {
        match self {
            Run::Flow => "flow",
            Run::CsvLoop => "csv_loop",
            Run::Rayon => "rayon",
        }
    }

    /// One run over the whole file, timed.
    fn time(self, f: &Fixture) -> (Duration, Tally) {
        let (elapsed, tally) = match self {
            Run::Flow => f.rt.block_on(async {
                let start = Instant::now();
                let tally = flow_count(&f.path).await;
                (start.elapsed(), tally)
            }),
            Run::CsvLoop => {
                let start = Instant::now();
                let tally = csv_loop(&f.path);
                (start.elapsed(), tally)
            }
            Run::Rayon => {
                let start = Instant::now();
                let tally = rayon_chunks(&f.pool, &f.path);
                (start.elapsed(), tally)
            }
        };
        (
            elapsed,
            tally.unwrap_or_else(|e| panic!("{}: {e}", self.name())),
        )
    }
}

/// Checks once that all three give the known answer, the same top 10 and the same totals.
fn check(f: &Fixture) {
    let [flow, csv, rayon] = RUNS.map(|run| run.time(f).1);
    flow.check(1);
    assert_eq!(csv, flow, "the csv loop and the flow disagree");
    assert_eq!(rayon, flow, "rayon and the flow disagree");
}

fn counts(c: &mut Criterion) {
    let Some(f) = Fixture::new(true) else { return };
    check(&f);
    let mut group = c.benchmark_group("airports");
    group
        .throughput(Throughput::Bytes(f.len))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for run in RUNS {
        group.bench_function(run.name(), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run.time(&f).0).sum())
        });
    }
    group.finish();
}

/// How many interleaved rounds (one run of each implementation) the summary takes.
const SUMMARY_ROUNDS: usize = 15;

/// Milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The best and the median of `times`.
fn best_median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort_unstable();
    (times[0], times[times.len() / 2])
}

/// Prints one summary line per implementation from [`SUMMARY_ROUNDS`] interleaved rounds,
/// so that other load on the machine hits them all alike: best and median in ms, and for
/// the flow its ratios to both baselines (best against best) and its goals.
fn summary(_: &mut Criterion) {
    let Some(f) = Fixture::new(false) else { return };
    let mut times = [const { Vec::new() }; RUNS.len()];
    for _ in 0..SUMMARY_ROUNDS {
        for (times, run) in times.iter_mut().zip(RUNS) {
            times.push(run.time(&f).0);
        }
    }
    let [flow, csv, rayon] = times.map(best_median);
    println!();
    let met = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "airports/flow: best {:.1} ms, median {:.1} ms ({SUMMARY_ROUNDS} runs), ratio \
         flow/csv_loop {:.2}, flow/rayon {:.2}; goals: <= rayon {}, < {GOAL_MS} ms {}; \
         Elixir Flow {ELIXIR_MS} ms ({:.0}x faster), polars {POLARS_MS} ms",
        ms(flow.0),
        ms(flow.1),
        ms(flow.0) / ms(csv.0),
        ms(flow.0) / ms(rayon.0),
        met(flow.0 <= rayon.0),
        met(ms(flow.0) < GOAL_MS),
        ELIXIR_MS / ms(flow.0),
    );
    for (name, (best, median)) in [("csv_loop", csv), ("rayon", rayon)] {
        println!(
            "airports/{name}: best {:.1} ms, median {:.1} ms ({SUMMARY_ROUNDS} runs)",
            ms(best),
            ms(median)
        );
    }
}

/// Set in the scale step's child process: the file the child counts.
const SCALE_FILE: &str = "BENCHES_AIRPORTS_SCALE_FILE";

/// Set in the scale step's child process: how many copies of the rows the file holds.
const SCALE_COPIES: &str = "BENCHES_AIRPORTS_SCALE_COPIES";

/// The scale step's sizes: copies of the real file's rows, and runs (each a fresh process).
const SCALE: [(u64, usize); 3] = [(1, 5), (10, 3), (100, 1)];

/// The free space needed in the temporary directory to write the 100x file (~1.26 GB).
const SCALE_MIN_FREE: u64 = 3 << 30;

/// A generated file, deleted when dropped (also on a panic).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What one child process measured.
struct Measured {
    elapsed: Duration,
    /// Peak RSS before the count (the runtime built), KiB.
    before_kib: u64,
    /// Peak RSS after it, KiB.
    peak_kib: u64,
}

/// Runs one flow count over `file` in a fresh process (this binary, with [`SCALE_FILE`] set).
fn measure_in_child(file: &Path, copies: u64) -> Measured {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let out = Command::new(exe)
        .env(SCALE_FILE, file)
        .env(SCALE_COPIES, copies.to_string())
        .output()
        .expect("run the scale child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the scale child failed: {}{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<u64> = stdout
        .split_whitespace()
        .map(|s| s.parse().expect("the child prints numbers"))
        .collect();
    let [nanos, before_kib, peak_kib] = fields[..] else {
        panic!("unexpected scale child output: {stdout}")
    };
    Measured {
        elapsed: Duration::from_nanos(nanos),
        before_kib,
        peak_kib,
    }
}

/// The scale child: one flow count over `$SCALE_FILE`, checked against `$SCALE_COPIES` times
/// the known answer; prints `elapsed_ns peak_kib_before peak_kib_after`.
fn scale_child(file: &Path) {
    let copies: u64 = std::env::var(SCALE_COPIES)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("BENCHES_AIRPORTS_SCALE_COPIES");
    let rt = runtime();
    let before = peak_rss_kib().unwrap_or(0);
    let (elapsed, tally) = rt.block_on(async {
        let start = Instant::now();
        let tally = flow_count(file).await.expect("the flow counts");
        (start.elapsed(), tally)
    });
    let peak = peak_rss_kib().unwrap_or(0);
    tally.check(copies);
    println!("{} {before} {peak}", elapsed.as_nanos());
}

/// Generates 1x, 10x and 100x copies of the real file's rows (one header) in the temporary
/// directory, outside any timing, counts each with the flow in fresh processes, and prints
/// the time per copy and the peak RSS. Each file is deleted right after its runs.
fn scale(_: &mut Criterion) {
    let path = csv_path();
    let Ok(csv) = std::fs::read(&path) else {
        println!("airports/scale: skipped: cannot read {}", path.display());
        return;
    };
    let dir = std::env::temp_dir();
    println!();
    for (copies, runs) in SCALE {
        if copies == 100 {
            match free_bytes(&dir) {
                Some(free) if free >= SCALE_MIN_FREE => {}
                free => {
                    println!(
                        "airports/scale {copies}x: skipped: {} free in {} (need 3 GB)",
                        free.map_or("unknown space".to_owned(), |b| format!(
                            "{:.1} GB",
                            b as f64 / 1e9
                        )),
                        dir.display()
                    );
                    continue;
                }
            }
        }
        let file = TempFile(dir.join(format!(
            "benches-airports-{}-{copies}x.csv",
            std::process::id()
        )));
        let bytes = write_copies(&csv, copies, &file.0).expect("write the scale file");
        let measured: Vec<Measured> = (0..runs)
            .map(|_| measure_in_child(&file.0, copies))
            .collect();
        drop(file);
        let best = measured.iter().map(|m| m.elapsed).min().expect("runs");
        let peak = measured.iter().map(|m| m.peak_kib).max().expect("runs");
        let before = measured.iter().map(|m| m.before_kib).max().expect("runs");
        println!(
            "airports/scale {copies}x: {:.1} MB, best {:.1} ms of {runs} run(s), {:.2} ms per \
             copy, {:.0} MB/s, peak RSS {:.1} MB ({:.1} MB before the count)",
            bytes as f64 / 1e6,
            ms(best),
            ms(best) / copies as f64,
            bytes as f64 / 1e6 / best.as_secs_f64(),
            peak as f64 / 1024.0,
            before as f64 / 1024.0,
        );
    }
}

/// The benchmark group; `criterion_group!` makes an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use criterion::criterion_group;

    criterion_group!(benches, super::counts, super::summary, super::scale);
}

/// `criterion_main!`, except in the scale step's child process.
fn main() {
    if let Some(file) = std::env::var_os(SCALE_FILE) {
        scale_child(Path::new(&file));
        return;
    }
    group::benches();
    Criterion::default().configure_from_args().final_summary();
}
