//! The web scraper as an `ingest` pipeline, as the book's last section rebuilds it with
//! Broadway: processors check pages, and a batcher keyed by page limits the scrapers.
//!
//! ```text
//! pages queue ─> processor 1 ─┐ HEAD: online pages keyed    ┌─> batch processor 1 ─ GET
//!               processor 2 ─┴─> by address, offline ones ──> batcher (batches of 1) ─┤
//!              (max_demand 1)    rejected                    └─> batch processor 2 ─ GET
//! ```
//!
//! The batcher's two batch processors are the scrapers: whatever the number of pages and
//! processors, at most two pages are fetched at once. Each page is a message with an
//! acknowledger: fetched pages are acked, offline ones rejected, and a fetch that fails is
//! retried once before it is rejected too.
//!
//! By default the program serves its own test site on `127.0.0.1` (the one `scraper.rs`
//! uses), so it needs no network: `--pages N` pages, every fifth of which is offline, each
//! request delayed by up to 50 ms (`--seed`). `--urls URL,URL,...` scrapes real addresses.
//!
//! Usage, from the workspace root:
//!
//! ```text
//! cargo run --release --example scraper_ingest
//! cargo run --release --example scraper_ingest -- --pages 100 --scrapers 4
//! cargo run --release --example scraper_ingest -- --urls https://www.rust-lang.org,https://tokio.rs
//! ```
//!
//! The log goes to stderr. A summary goes to stdout, one `name: value` per line: `pages`,
//! `online`, `fetched`, `failed` (fetches), `bytes`, `most_at_once` (the most fetches at the
//! same time: at most `--scrapers`), `acked`, `rejected`, and `settled_once` (1 when every
//! page was settled exactly once).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use examples::scraping::{self, Settings};
use examples::site::Site;
use tracing_subscriber::EnvFilter;

/// Scrapes pages through an ingest pipeline: HEAD checks in two processors, GETs in a
/// batcher's batch processors, at most --scrapers at once.
///
/// By default the pages come from a test site the program serves itself on 127.0.0.1, so it
/// needs no network. It prints a summary on stdout; the log goes to stderr (RUST_LOG sets its
/// level).
#[derive(Debug, Parser)]
#[command(name = "scraper_ingest")]
struct Args {
    /// Scrape these addresses (comma-separated) instead of the local test site.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    urls: Vec<String>,
    /// How many pages the local test site serves.
    #[arg(long, default_value_t = 40, conflicts_with = "urls")]
    pages: usize,
    /// Seed of the local test site's latencies.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How many pages may be fetched at once.
    #[arg(long, default_value_t = 2)]
    scrapers: usize,
    /// How long a HEAD request may take before its page counts as offline, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    head_timeout_ms: u64,
    /// How long a GET request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    get_timeout_ms: u64,
    /// Give up, and exit with status 2, if the run takes longer than this, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let settings = Settings {
        head_timeout: Duration::from_millis(args.head_timeout_ms),
        get_timeout: Duration::from_millis(args.get_timeout_ms),
        scrapers: args.scrapers,
        ..Settings::default()
    };
    let run = async {
        let urls = if args.urls.is_empty() {
            let site = Site {
                pages: args.pages,
                seed: args.seed,
            };
            site.serve().await?
        } else {
            args.urls.clone()
        };
        scraping::run(urls, &settings).await
    };
    let limit = Duration::from_secs(args.timeout_secs);
    let outcome = match tokio::time::timeout(limit, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => {
            eprintln!("scraper_ingest: {err}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!(
                "scraper_ingest: the pipeline did not finish within {}s; giving up",
                args.timeout_secs
            );
            std::process::exit(2);
        }
    };
    let t = &outcome.tally;
    let q = &outcome.queue;
    println!("pages: {}", outcome.pages);
    println!("online: {}", t.online.load(Ordering::SeqCst));
    println!("fetched: {}", t.fetched.load(Ordering::SeqCst));
    println!("failed: {}", t.failed.load(Ordering::SeqCst));
    println!("bytes: {}", t.bytes.load(Ordering::SeqCst));
    println!("most_at_once: {}", t.most_at_once.load(Ordering::SeqCst));
    println!("acked: {}", q.acked);
    println!("rejected: {}", q.rejected);
    let once = q.unknown == 0 && q.done() == q.published && outcome.report.adds_up();
    println!("settled_once: {}", u8::from(once));
    ExitCode::SUCCESS
}
