//! The book's ticket bookings (*Concurrent Data Processing in Elixir*, chapter 5) as two
//! `ingest` pipelines, on in-memory queues instead of RabbitMQ, so it runs offline.
//!
//! ```text
//! bookings queue ─> processors ──┬─> batcher cinema  (75)  ─┐
//!   "<event>,<user>"  parse,     ├─> batcher musical (100) ─┼─> insert tickets ─> notifications queue
//!                     check      └─> batcher default (50)  ─┘    (one call a batch)   "email,<address>"
//!
//! notifications queue ─> processors ─> batcher email, keyed by recipient (10 s window, 5 at once)
//!                                        ─> one digest per recipient per window
//! ```
//!
//! - `prepare_messages` parses a chunk of payloads and loads its users with one query;
//!   `handle_message` takes a seat, or fails the booking `"bookings-closed"` once its event is
//!   sold out (`--seats`) or closed (`--closed cinema`, the book's change).
//! - `handle_failed` rejects closed bookings (they are dropped, not requeued: they would fail
//!   again); bookings that make no sense (every `--malformed-every`-th is broken) go to the
//!   queue's dead-letter list instead of being redelivered for ever (the book's RabbitMQ
//!   default, `reject_and_requeue`, loops on them).
//! - Each batch inserts its tickets in one call, then publishes a notification per booking.
//!   The notifications pipeline batches them by recipient and sends each a digest once its
//!   window closes.
//!
//! The fake ticket service sleeps where the book's does (100-200 ms to check a seat, 250 ms
//! per ticket inserted, 100-250 ms per email), times `--time-scale` (default 0.01).
//!
//! Usage, from the workspace root:
//!
//! ```text
//! cargo run --release --example tickets
//! cargo run --release --example tickets -- --bookings 2000 --seats 500 --closed cinema
//! RUST_LOG=debug cargo run --release --example tickets     # every batch and digest
//! ```
//!
//! The log goes to stderr. A summary goes to stdout, one `name: value` per line: how many
//! bookings were `published`, `acked` (a ticket was sold), `rejected` (bookings-closed) and
//! `dead_lettered` (malformed), how many were `requeued` (0: nothing loops), the tickets
//! inserted per event (`tickets_cinema`...), the number of batches and the largest per batcher
//! (`batches_cinema`, `largest_cinema`...), `notifications` published, `digests` sent,
//! `recipients`, and `settled_once` (1 when every message was settled exactly once).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use examples::tickets::{self, Event, Settings};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Books tickets through an ingest pipeline, then sends the notifications through a second one.
///
/// Bookings ("<event>,<user id>") are parsed, checked against the seats left, batched by event
/// type and inserted a batch at a time; each sold ticket queues an email, and emails are sent
/// as one digest per recipient per window. Runs offline on in-memory queues. Prints a summary
/// on stdout; the log goes to stderr (RUST_LOG sets its level).
#[derive(Debug, Parser)]
#[command(name = "tickets")]
struct Args {
    /// How many random bookings to publish.
    #[arg(long, default_value_t = 600)]
    bookings: usize,
    /// Seats per event; bookings beyond them fail with "bookings-closed".
    #[arg(long, default_value_t = 150)]
    seats: u64,
    /// Events closed from the start (cinema, musical, play; repeat or comma-separate).
    #[arg(long, value_delimiter = ',', value_parser = parse_event)]
    closed: Vec<Event>,
    /// Every Nth booking is malformed (0: none).
    #[arg(long, default_value_t = 50)]
    malformed_every: usize,
    /// The book's sleeps are multiplied by this (1: the book's own).
    #[arg(long, default_value_t = 0.01)]
    time_scale: f64,
    /// The seed of the bookings and of the service's latencies.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Give up, and exit with status 2, if the run takes longer than this, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

fn parse_event(name: &str) -> Result<Event, String> {
    Event::ALL
        .into_iter()
        .find(|e| e.name() == name)
        .ok_or_else(|| format!("unknown event {name:?} (cinema, musical or play)"))
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
    if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
        eprintln!("tickets: --time-scale must be a number of at least 0");
        return ExitCode::FAILURE;
    }

    let settings = Settings {
        seats: args.seats,
        closed: args.closed.clone(),
        time_scale: args.time_scale,
        seed: args.seed,
        ..Settings::default()
    };
    let payloads = tickets::bookings(args.bookings, args.seed, args.malformed_every);
    info!(
        bookings = payloads.len(),
        seats = args.seats,
        closed = ?args.closed,
        "publishing the bookings"
    );
    let limit = Duration::from_secs(args.timeout_secs);
    let outcome = match tokio::time::timeout(limit, tickets::run(payloads, &settings)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => {
            eprintln!("tickets: {err}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!(
                "tickets: the pipelines did not finish within {}s; giving up",
                args.timeout_secs
            );
            std::process::exit(2);
        }
    };
    for (booking, why) in outcome.rejected.iter().take(3) {
        info!("rejected {booking:?}: {why}");
    }
    for (booking, why) in &outcome.dead_letters {
        info!("dead-lettered {booking:?}: {why}");
    }
    print_summary(&outcome);
    ExitCode::SUCCESS
}

fn print_summary(o: &tickets::RunSummary) {
    let b = &o.bookings;
    println!("published: {}", b.published);
    println!("acked: {}", b.acked);
    println!("rejected: {}", b.rejected);
    println!("dead_lettered: {}", b.dead_lettered);
    println!("requeued: {}", b.requeued);
    for (event, n) in &o.inserted {
        println!("tickets_{}: {n}", event.name());
    }
    let mut by_batcher: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for name in ["cinema", "musical", "default"] {
        by_batcher.insert(name, (0, 0));
    }
    for batch in &o.batches {
        let entry = by_batcher.entry(&batch.batcher).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(batch.size);
    }
    for (name, (batches, largest)) in &by_batcher {
        println!("batches_{name}: {batches}");
        println!("largest_{name}: {largest}");
    }
    println!("notifications: {}", o.notifications.published);
    println!("digests: {}", o.digests.len());
    let mut recipients: Vec<&str> = o.digests.iter().map(|d| d.recipient.as_str()).collect();
    recipients.sort_unstable();
    recipients.dedup();
    println!("recipients: {}", recipients.len());
    // Every message settled once: each queue heard of every delivery exactly once, and each
    // pipeline's report adds up.
    let once = [&o.bookings, &o.notifications]
        .iter()
        .all(|q| q.unknown == 0 && q.done() == q.published)
        && o.bookings_report.adds_up()
        && o.notifications_report.adds_up();
    println!("settled_once: {}", u8::from(once));
}
