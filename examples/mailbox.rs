//! The flooded mailbox: a fast producer and a slow consumer, run twice. Through an unbounded
//! channel every event the consumer has not reached yet waits in memory; through stage the
//! producer is held back by demand, and what waits stays bounded whatever the number of events.
//!
//! ```text
//! 1. producer ──send()──> tokio::sync::mpsc::unbounded_channel ──recv()──> slow consumer
//! 2. producer ──send().await──> stage::channel(--capacity) ──> consumer_fn (max_demand M)
//! ```
//!
//! Both runs use the same producer loop (send `--events` events, one after the other, as fast
//! as the channel takes them) and the same consumer (each event costs `--work-us`
//! microseconds of busy work, standing for parsing it or writing it somewhere). After each
//! send the producer notes how many events are *outstanding*: sent and not yet handled.
//!
//! - Unbounded: `send` never waits, so the producer is done almost at once and nearly every
//!   event sits in the channel until the consumer gets to it. The peak grows with `--events`.
//! - Stage: the consumer asks for `max_demand` events and asks again as it handles them; the
//!   channel's producer takes from the channel only what was asked for, and `send().await`
//!   waits while the channel holds `--capacity` events. So at most `max_demand + capacity`
//!   events are ever outstanding, for any `--events`.
//!
//! Usage, from the workspace root:
//!
//! ```text
//! cargo run --release --example mailbox
//! cargo run --release --example mailbox -- --events 200000 --work-us 5
//! cargo run --release --example mailbox -- --max-demand 10 --capacity 1
//! ```
//!
//! The log goes to stderr, with a line that tells the story. At the end a summary goes to
//! stdout, one `name: value` per line: `events`, `event_bytes`, `max_demand`, `min_demand`,
//! `capacity`, `bound` (`max_demand + capacity`), then for each run (`unbounded_`, `stage_`)
//! `peak` (the most events outstanding), `peak_bytes` (that many events' size, a lower bound on
//! the memory they held), `handled`, `sum` (of the events' sequence numbers, `0..events`) and
//! `out_of_order` (events that did not arrive next in sequence: 0 when each was handled once, in
//! order).

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use stage::{Consumer, Reason, StageHandle, StartError, SubscribeOptions};
use tokio::sync::mpsc;
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Floods a slow consumer twice: through an unbounded channel, then through stage.
///
/// A producer sends --events events as fast as it can to a consumer that spends --work-us
/// on each. Through tokio's unbounded channel the events pile up; through a stage::channel
/// of --capacity feeding a consumer with --max-demand, the producer waits and at most
/// max_demand + capacity events are ever outstanding. It prints both peaks, and checks
/// that both runs handled every event once, in a summary on stdout; the log goes to stderr
/// (RUST_LOG sets its level).
#[derive(Debug, Parser)]
#[command(name = "mailbox")]
struct Args {
    /// How many events the producer sends in each run.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// How long the consumer works on each event, in microseconds (busy, not asleep).
    #[arg(long, default_value_t = 20)]
    work_us: u64,
    /// The stage consumer's max_demand: how many events it asks for at once; at least 1.
    #[arg(long, default_value_t = 64)]
    max_demand: usize,
    /// How many events the stage channel holds before the producer waits; at least 1.
    #[arg(long, default_value_t = 32)]
    capacity: usize,
    /// Give up, and exit with status 2, if the runs take longer than this, in seconds.
    #[arg(long, default_value_t = 60)]
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

    let limit = Duration::from_secs(args.timeout_secs);
    match tokio::time::timeout(limit, run(&args)).await {
        Ok(Ok(summary)) => {
            summary.explain();
            summary.print();
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("mailbox: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "mailbox: the runs did not finish within {}s; giving up",
                args.timeout_secs
            );
            std::process::exit(2);
        }
    }
}

/// Runs the unbounded channel, then stage, and puts the figures together.
async fn run(args: &Args) -> Result<Summary, Error> {
    let work = Duration::from_micros(args.work_us);
    // Started first, idle, so that an invalid --max-demand or --capacity is reported before
    // any work is done.
    let staged = start_staged(args, work)?;
    info!(
        "run 1: {} events into an unbounded channel, {work:?} of work each",
        args.events
    );
    let unbounded = run_unbounded(args.events, work).await?;
    info!(
        "run 2: {} events into a stage::channel of {} feeding a consumer with max_demand {}",
        args.events, args.capacity, args.max_demand
    );
    let min_demand = staged.min_demand;
    let stage = staged.run(args.events).await?;
    Ok(Summary {
        events: args.events,
        max_demand: args.max_demand,
        min_demand,
        capacity: args.capacity,
        unbounded,
        stage,
    })
}

// ----- the event and its handling -----

/// What the producer sends: a sequence number and a payload, 64 bytes in all.
#[derive(Debug, Clone, Copy)]
struct Event {
    seq: u64,
    payload: [u64; 7],
}

impl Event {
    fn new(seq: u64) -> Event {
        Event {
            seq,
            payload: [seq; 7],
        }
    }
}

/// What one run counted, shared by its producer and its consumer.
#[derive(Debug, Default)]
struct Ledger {
    /// Events handled, the sum of their sequence numbers, and how many came out of sequence.
    handled: AtomicU64,
    sum: AtomicU64,
    out_of_order: AtomicU64,
    /// The most events sent and not yet handled, as the producer saw after each send.
    peak: AtomicU64,
}

impl Ledger {
    /// Called by the producer once `sent` events are in the channel.
    fn sent(&self, sent: u64) {
        // `handled` is read after the send, so this is never more than what is outstanding.
        let outstanding = sent.saturating_sub(self.handled.load(Ordering::SeqCst));
        self.peak.fetch_max(outstanding, Ordering::SeqCst);
    }

    /// The consumer's handler, the same in both runs: `work` of busy work, then the event is
    /// counted.
    fn handle(&self, event: Event, work: Duration) {
        busy(work, &event);
        let before = self.handled.fetch_add(1, Ordering::SeqCst);
        if before != event.seq {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(event.seq, Ordering::Relaxed);
    }

    fn report(&self, producer_done: Duration, done: Duration) -> RunReport {
        RunReport {
            peak: self.peak.load(Ordering::SeqCst),
            handled: self.handled.load(Ordering::SeqCst),
            sum: self.sum.load(Ordering::SeqCst),
            out_of_order: self.out_of_order.load(Ordering::SeqCst),
            producer_done,
            done,
        }
    }
}

/// Spins for `work`, reading the event: the consumer's cost per event. A real handler that
/// blocks much longer than this belongs on `spawn_blocking` or a thread pool.
fn busy(work: Duration, event: &Event) {
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::black_box(event.payload);
        std::hint::spin_loop();
    }
}

/// What one run measured.
#[derive(Debug)]
struct RunReport {
    peak: u64,
    handled: u64,
    sum: u64,
    out_of_order: u64,
    /// When the producer had sent its last event, and when the consumer had handled it.
    producer_done: Duration,
    done: Duration,
}

// ----- run 1: the unbounded channel -----

/// What a user might write first: an unbounded channel, a producer task and a consumer task.
async fn run_unbounded(events: u64, work: Duration) -> Result<RunReport, Error> {
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let consumer = tokio::spawn({
        let ledger = Arc::clone(&ledger);
        async move {
            while let Some(event) = rx.recv().await {
                ledger.handle(event, work);
            }
        }
    });
    let producer = tokio::spawn({
        let ledger = Arc::clone(&ledger);
        async move {
            for seq in 0..events {
                // Never waits: the event is queued whatever the consumer is doing.
                if tx.send(Event::new(seq)).is_err() {
                    return Err(Error::Closed { sent: seq });
                }
                ledger.sent(seq + 1);
            }
            Ok(started.elapsed())
        }
    });
    let producer_done = producer.await.map_err(Error::task)??;
    consumer.await.map_err(Error::task)?;
    Ok(ledger.report(producer_done, started.elapsed()))
}

// ----- run 2: stage -----

/// The stage run, started and waiting for events: a channel's producer and a consumer
/// subscribed to it. `C` is the consumer made from a closure, whose type has no name.
#[derive(Debug)]
struct Staged<C> {
    tx: stage::Sender<Event>,
    consumer: StageHandle<C>,
    /// The consumer's `min_demand` (the default, `max_demand / 2`).
    min_demand: usize,
    ledger: Arc<Ledger>,
}

/// Starts the channel's producer and the consumer.
///
/// # Errors
///
/// [`Error::Start`] for an invalid `--capacity` or `--max-demand`.
fn start_staged(args: &Args, work: Duration) -> Result<Staged<impl Consumer<In = Event>>, Error> {
    let (tx, channel) = stage::channel::<Event>(args.capacity);
    let source = channel.name("events").start()?;
    let opts = SubscribeOptions::new().max_demand(args.max_demand);
    let (_, min_demand) = opts.limits().map_err(StartError::Option)?;
    let ledger = Arc::new(Ledger::default());
    let handler = Arc::clone(&ledger);
    // The work is CPU work, so a plain `consumer_fn`; a consumer that awaits (a write
    // somewhere) is an `async_consumer_fn`, with the same back-pressure: the next events are
    // asked for only as these are handled. Permanent (the default): when the channel's producer
    // finishes, the consumer stops too, once it has handled what it received.
    let consumer = stage::consumer_fn(move |batch: Vec<Event>| {
        for event in batch {
            handler.handle(event, work);
        }
    })
    .name("slow consumer")
    .subscribe_to(&source, opts)
    .start()?;
    Ok(Staged {
        tx,
        consumer,
        min_demand,
        ledger,
    })
}

impl<C: Consumer<In = Event>> Staged<C> {
    /// Sends `events` events, waiting while the channel is full, then drops the sender and
    /// waits for the consumer to finish.
    async fn run(self, events: u64) -> Result<RunReport, Error> {
        let Staged {
            tx,
            consumer,
            ledger,
            ..
        } = self;
        let started = Instant::now();
        let producer = tokio::spawn({
            let ledger = Arc::clone(&ledger);
            async move {
                for seq in 0..events {
                    // Waits while the channel holds `capacity` events nobody has asked for.
                    if tx.send(Event::new(seq)).await.is_err() {
                        return Err(Error::Closed { sent: seq });
                    }
                    ledger.sent(seq + 1);
                }
                Ok(started.elapsed())
            }
        });
        let producer_done = producer.await.map_err(Error::task)??;
        let reason = consumer.join().await;
        if reason != Reason::Normal {
            return Err(Error::Abnormal(reason));
        }
        Ok(ledger.report(producer_done, started.elapsed()))
    }
}

// ----- the summary -----

/// The stable, parseable result printed to stdout, and the story told on stderr.
#[derive(Debug)]
struct Summary {
    events: u64,
    max_demand: usize,
    min_demand: usize,
    capacity: usize,
    unbounded: RunReport,
    stage: RunReport,
}

impl Summary {
    /// What stage allows to be outstanding at most.
    fn bound(&self) -> usize {
        self.max_demand + self.capacity
    }

    /// Tells on stderr what the figures mean.
    fn explain(&self) {
        for (name, run) in [("unbounded", &self.unbounded), ("stage", &self.stage)] {
            info!(
                "{name}: producer done after {:.0?}, consumer after {:.0?}; at most {} events ({}) outstanding",
                run.producer_done,
                run.done,
                run.peak,
                kib(run.peak)
            );
        }
        eprintln!(
            "The unbounded channel let {} of {} events pile up ({}) because nothing told the producer to wait; \
             with stage the producer waited whenever the consumer's demand ({}) and the channel ({}) were used up, \
             so at most {} events ({}) were ever outstanding, however many are sent",
            self.unbounded.peak,
            self.events,
            kib(self.unbounded.peak),
            self.max_demand,
            self.capacity,
            self.stage.peak,
            kib(self.stage.peak)
        );
    }

    fn print(&self) {
        println!("events: {}", self.events);
        println!("event_bytes: {}", size_of::<Event>());
        println!("max_demand: {}", self.max_demand);
        println!("min_demand: {}", self.min_demand);
        println!("capacity: {}", self.capacity);
        println!("bound: {}", self.bound());
        for (name, run) in [("unbounded", &self.unbounded), ("stage", &self.stage)] {
            println!("{name}_peak: {}", run.peak);
            println!(
                "{name}_peak_bytes: {}",
                run.peak * size_of::<Event>() as u64
            );
            println!("{name}_handled: {}", run.handled);
            println!("{name}_sum: {}", run.sum);
            println!("{name}_out_of_order: {}", run.out_of_order);
        }
    }
}

/// `events` events' size, in KiB, for people.
fn kib(events: u64) -> String {
    let bytes = events * size_of::<Event>() as u64;
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

// ----- errors -----

/// Why a run did not finish.
#[derive(Debug)]
enum Error {
    /// The stage run did not start: `--capacity 0` and `--max-demand 0` end here, as the
    /// invalid options `capacity` and `max_demand`.
    Start(StartError),
    /// A channel closed before every event was sent (its consumer stopped early).
    Closed { sent: u64 },
    /// A producer or consumer task panicked.
    Task(String),
    /// The stage consumer stopped abnormally.
    Abnormal(Reason),
}

impl Error {
    fn task(err: tokio::task::JoinError) -> Error {
        Error::Task(err.to_string())
    }
}

impl From<StartError> for Error {
    fn from(err: StartError) -> Self {
        Error::Start(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Start(StartError::Option(opt)) => {
                // Name the flag the user gave, not only the stage option it became.
                let flag = match opt.option {
                    "max_demand" => "--max-demand",
                    "capacity" => "--capacity",
                    other => other,
                };
                write!(f, "{flag} {} is not usable: {opt}", opt.value)
            }
            Error::Start(err) => write!(f, "the stage run did not start: {err}"),
            Error::Closed { sent } => write!(f, "the channel closed after {sent} events"),
            Error::Task(err) => write!(f, "a task failed: {err}"),
            Error::Abnormal(reason) => write!(f, "the stage consumer stopped: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
