//! Which countries have the most working airports? The GenStage book's Flow pipeline over
//! OurAirports' `airports.csv`, done in parallel and fast.
//!
//! ```sh
//! cargo run --release --example airports -- --csv ../shared/data/airports.csv
//! cargo run --release --example airports            # downloads data/airports.csv once
//! cargo run --release --example airports -- --json --top 5 --snapshots 10000
//! ```
//!
//! Without `--csv` it reads `data/airports.csv` of the workspace (found from any working
//! directory; `--data DIR` for another), downloading it first (with a progress bar) if it is
//! not there. A download is kept only whole and checked: its announced length, a non-empty
//! body starting with OurAirports' header; a server that stalls for `--read-timeout` seconds
//! fails it. With no network, or a failed download, it falls back to
//! `data/airports-sample.csv`, a small file with a known answer, and says so on stderr. The
//! file is cut into chunks at record boundaries and parsed by one layer of stages; each open
//! airport's country goes to the stage that owns that country (partition), which counts;
//! `take_sort` gathers the top countries. A malformed row is reported with its line number
//! and skipped.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use examples::airports::{self, Report, Snapshots};
use examples::download::{self, download};

const URL: &str = "https://davidmegginson.github.io/ourairports-data/airports.csv";

/// The workspace's `data/` directory, where this example was built: not relative to the
/// working directory, so that the example runs from anywhere.
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data");

/// The downloaded file and the offline sample, in the data directory.
const CACHE: &str = "airports.csv";
const SAMPLE: &str = "airports-sample.csv";

/// Counts the open airports of each country in OurAirports' airports.csv, in parallel.
///
/// Reads the CSV file given with --csv, or else data/airports.csv of the workspace (any
/// working directory will do; --data for another directory), downloading it first from --url
/// if it is missing. A download is kept only if it is whole (its announced length), not
/// empty, and starts with OurAirports' header; if it fails, the count falls back to the small
/// offline sample data/airports-sample.csv and says so.
///
/// Prints the --top countries with the most open airports (type other than "closed"), then
/// the totals. Malformed rows are reported on stderr with their line number and skipped.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Read this CSV file instead of data/airports.csv.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The directory of airports.csv and airports-sample.csv (default: the workspace's data/).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// How many countries to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Print each counting stage's running counts every N airports.
    #[arg(long, value_name = "N")]
    snapshots: Option<usize>,
    /// Stages per layer (default: the number of cores).
    #[arg(long)]
    stages: Option<usize>,
    /// Where to download from when data/airports.csv is missing.
    #[arg(long, default_value = URL)]
    url: String,
    /// Give a download up after this many seconds without data.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    read_timeout: Duration,
}

/// A positive number of seconds (fractions allowed).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text:?}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("must be more than 0 seconds, and finite: {text:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.top == 0 {
        eprintln!("error: --top must be at least 1");
        return ExitCode::from(2);
    }
    if args.snapshots == Some(0) {
        eprintln!("error: --snapshots must be at least 1");
        return ExitCode::from(2);
    }
    if args.stages == Some(0) {
        eprintln!("error: --stages must be at least 1");
        return ExitCode::from(2);
    }
    let path = match input(&args).await {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let stages = args.stages.unwrap_or_else(flow::default_stages);
    let snapshots = args.snapshots.map(|every| Snapshots {
        every,
        on_snapshot: Arc::new(|partition, counts| {
            let mut counts: Vec<_> = counts.iter().collect();
            counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let top: Vec<String> = counts
                .iter()
                .take(5)
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            eprintln!(
                "snapshot partition {partition}: {} countries; {}",
                counts.len(),
                top.join(", ")
            );
        }),
    });
    let started = Instant::now();
    let block = airports::block_size(len, stages);
    let report = match airports::count_with(file, block, args.top, stages, snapshots).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let elapsed = started.elapsed();
    for m in &report.malformed {
        eprintln!("malformed row at {m}");
    }
    if args.json {
        println!("{}", json(&report));
    } else {
        print(&report);
    }
    eprintln!(
        "counted {} in {:.1} ms with {stages} stages per layer",
        path.display(),
        elapsed.as_secs_f64() * 1e3
    );
    ExitCode::SUCCESS
}

/// The file to read: `--csv`, or the cache, downloading it (or falling back to the sample).
async fn input(args: &Args) -> Result<PathBuf, String> {
    if let Some(path) = &args.csv {
        return Ok(path.clone());
    }
    let data = args.data.clone().unwrap_or_else(|| {
        // Without the `examples/..` in the paths printed.
        std::fs::canonicalize(DATA).unwrap_or_else(|_| PathBuf::from(DATA))
    });
    let cache = data.join(CACHE);
    if cache.exists() {
        return Ok(cache);
    }
    let options = download::Options {
        progress: true,
        read_timeout: args.read_timeout,
        check_start: airports::check_start,
        ..download::Options::default()
    };
    match download(&args.url, &cache, &options).await {
        Ok(bytes) => {
            eprintln!("downloaded {bytes} bytes to {}", cache.display());
            Ok(cache)
        }
        Err(e) => {
            let sample = data.join(SAMPLE);
            eprintln!("could not download {}: {e}", args.url);
            eprintln!(
                "falling back to the offline sample {} (not the real data)",
                sample.display()
            );
            Ok(sample)
        }
    }
}

fn print(report: &Report) {
    for (country, count) in &report.top {
        println!("{country} {count}");
    }
    println!("open airports: {}", report.open);
    println!("countries: {}", report.countries);
    println!("closed airports: {}", report.closed);
    println!("malformed rows: {}", report.malformed.len());
}

fn json(report: &Report) -> String {
    let top: Vec<_> = report
        .top
        .iter()
        .map(|(c, n)| serde_json::json!({ "country": c.as_str(), "airports": n }))
        .collect();
    let malformed: Vec<_> = report
        .malformed
        .iter()
        .map(|m| serde_json::json!({ "line": m.line, "reason": m.reason }))
        .collect();
    serde_json::json!({
        "top": top,
        "open_airports": report.open,
        "countries": report.countries,
        "closed_airports": report.closed,
        "malformed": malformed,
    })
    .to_string()
}
