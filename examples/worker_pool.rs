//! A bounded worker pool: jobs go in through a [`stage::channel`], and a `ConsumerSupervisor`
//! runs each in a task of its own, at most `--workers` at once.
//!
//! ```text
//! submitter ──send().await──> stage::channel(--capacity) ──> ConsumerSupervisor ──> task per job
//!                                                              (max_demand = --workers)
//! ```
//!
//! - The submitter task pushes `--jobs` jobs. It first tries `try_send`; when the channel is
//!   full (the pool is busy and the channel holds `--capacity` waiting jobs) it counts that
//!   and waits in `send().await` instead: that wait is the back-pressure.
//! - The supervisor asks the channel for `--workers` jobs and starts a task for each. Its
//!   `min_demand` defaults to 0, so every task that ends frees a slot that is asked for again
//!   at once: `--workers` tasks keep running while there is work.
//! - A job sleeps a few milliseconds (drawn from an RNG seeded with `--seed`; it stands for a
//!   call to a slow service) and then succeeds, except every `--fail-every`-th job, which
//!   fails. Failures are logged by the supervisor and reported through `on_failure`.
//! - Once every job is submitted the submitter drops its sender. The channel's producer then
//!   finishes when it has handed out the last job; the supervisor, subscribed as permanent,
//!   lets its running jobs finish and exits normally, and `join_report` gives the final counts.
//!
//! Usage, from the workspace root:
//!
//! ```text
//! cargo run --release --example worker_pool
//! cargo run --release --example worker_pool -- --jobs 1000 --workers 32 --fail-every 10
//! RUST_LOG=debug cargo run --release --example worker_pool    # every job's start too
//! ```
//!
//! The log goes to stderr. At the end a summary goes to stdout, one `name: value` per line:
//! `submitted`, `workers`, `completed`, `failed` (jobs that returned an error), `reported`
//! (failures seen by `on_failure`), `cancelled`, `completed_sum` (the sum of the completed
//! jobs' ids, 1-based, so a test can check each ran once), `most_at_once` (the most jobs that
//! ran at the same time: at most `--workers`), `capacity`, `peak_queued` (the most jobs seen
//! waiting in the channel), `sender_waited` (how many jobs found the channel full) and
//! `reason` (how the supervisor ended).

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use stage::{
    ConsumerSupervisor, Reason, StartError, SubscribeOptions, SupervisorReport, TrySendError,
};
use tracing::{debug, info};
use tracing_subscriber::EnvFilter;

/// Runs jobs through a bounded worker pool: a channel feeding a consumer supervisor.
///
/// A submitter pushes --jobs jobs into a stage::channel of --capacity; a ConsumerSupervisor
/// runs one task per job, at most --workers at once, and refills a slot as soon as a job
/// ends. Each job sleeps a few milliseconds (seeded by --seed); every --fail-every-th job
/// fails and is reported through on_failure. When the submitter is done, the pool drains and
/// exits. It prints a summary (submitted, workers, completed, failed, reported, cancelled,
/// completed_sum, most_at_once, capacity, peak_queued, sender_waited, reason) on stdout; the
/// log goes to stderr (RUST_LOG sets its level).
#[derive(Debug, Parser)]
#[command(name = "worker_pool")]
struct Args {
    /// How many jobs to submit.
    #[arg(long, default_value_t = 200)]
    jobs: u64,
    /// The most jobs that run at once (the supervisor's max_demand); at least 1.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// How many submitted jobs the channel holds before the submitter waits; at least 1.
    #[arg(long, default_value_t = 16)]
    capacity: usize,
    /// Every job whose id is a multiple of this fails (0: none fails).
    #[arg(long, default_value_t = 7)]
    fail_every: u64,
    /// Seed of the jobs' durations.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The longest a job sleeps, in milliseconds (the shortest is 2 ms, or this if less).
    #[arg(long, default_value_t = 12)]
    max_job_ms: u64,
    /// Give up, and exit with status 2, if the run takes longer than this, in seconds.
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
            summary.print();
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("worker_pool: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "worker_pool: the pool did not finish within {}s; giving up",
                args.timeout_secs
            );
            std::process::exit(2);
        }
    }
}

/// Starts the pool, submits the jobs, waits for the pool to drain and counts what happened.
async fn run(args: &Args) -> Result<Summary, Error> {
    let (tx, channel) = stage::channel::<Job>(args.capacity);
    let jobs = channel.name("jobs").start()?;
    let tally = Arc::new(Tally::default());

    let fail_every = args.fail_every;
    let child_tally = Arc::clone(&tally);
    let failure_tally = Arc::clone(&tally);
    // Permanent (the default): when the channel's producer finishes, the supervisor takes no
    // more jobs, lets the running ones finish, and exits with the producer's reason.
    let opts = SubscribeOptions::new().max_demand(args.workers);
    let pool =
        ConsumerSupervisor::new(move |job: Job| job.run(fail_every, Arc::clone(&child_tally)))
            .name("pool")
            .on_failure(move |failure| {
                // Runs in the supervisor's task: count, nothing slow.
                failure_tally.reported.fetch_add(1, Ordering::SeqCst);
                debug!("on_failure: {} failed: {}", failure.child, failure.error);
            })
            .subscribe_to(&jobs, opts)
            .start()?;
    let failing = match args.fail_every {
        0 => "none fails".to_string(),
        k => format!("every {k}th fails"),
    };
    info!(
        "pool of {} workers fed by a channel of {}; submitting {} jobs ({failing})",
        args.workers, args.capacity, args.jobs
    );

    let started = Instant::now();
    let work = plan(args);
    let submitter = tokio::spawn(submit(tx, work, Arc::clone(&tally)));
    let report = pool.join_report().await;
    let submitted = submitter
        .await
        .map_err(|e| Error::Submitter(e.to_string()))??;
    let children = &report.children;
    info!(
        "pool exited ({}) after {:.0?}: {} jobs completed, {} failed, {} cancelled",
        report.reason,
        started.elapsed(),
        children.completed,
        children.failed,
        children.cancelled
    );
    if !report.reason.is_normal() {
        return Err(Error::Abnormal(report.reason));
    }
    Ok(Summary::new(args, submitted, &report, &tally))
}

/// The jobs to submit, ids `1..=jobs`, each with a duration drawn from an RNG seeded with
/// `--seed`: the same flags give the same jobs.
fn plan(args: &Args) -> Vec<Job> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let longest = args.max_job_ms;
    let shortest = longest.min(2);
    (1..=args.jobs)
        .map(|id| Job {
            id,
            millis: rng.random_range(shortest..=longest),
        })
        .collect()
}

/// Pushes every job into the channel, trying `try_send` first and waiting in `send` when the
/// channel is full; then drops the sender, which lets the pool drain. Returns how many jobs
/// were submitted.
async fn submit(tx: stage::Sender<Job>, jobs: Vec<Job>, tally: Arc<Tally>) -> Result<u64, Error> {
    let mut submitted = 0;
    for job in jobs {
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                // The pool is busy and the channel holds `capacity` jobs: wait for room.
                tally.sender_waited.fetch_add(1, Ordering::SeqCst);
                tx.send(job)
                    .await
                    .map_err(|_| Error::Closed { submitted })?;
            }
            Err(TrySendError::Closed(_)) => return Err(Error::Closed { submitted }),
        }
        submitted += 1;
        let queued = (tx.max_capacity() - tx.capacity()) as u64;
        tally.peak_queued.fetch_max(queued, Ordering::SeqCst);
    }
    debug!("submitted {submitted} jobs; dropping the sender");
    Ok(submitted)
}

/// One job of the pool.
#[derive(Debug, Clone, Copy)]
struct Job {
    /// 1-based.
    id: u64,
    /// How long the job sleeps.
    millis: u64,
}

impl Job {
    /// The child the supervisor runs for this job: sleeps, then succeeds unless its id is a
    /// multiple of `fail_every`.
    async fn run(self, fail_every: u64, tally: Arc<Tally>) -> Result<(), String> {
        let slot = Slot::enter(tally);
        debug!("job {} started ({} running)", self.id, slot.running);
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        if fail_every != 0 && self.id % fail_every == 0 {
            return Err(format!("job {}: every {fail_every}th job fails", self.id));
        }
        slot.tally
            .completed_sum
            .fetch_add(self.id, Ordering::SeqCst);
        Ok(())
    }
}

/// What the jobs and the submitter counted, shared with them.
#[derive(Debug, Default)]
struct Tally {
    /// Jobs running now, and the most that ever ran at once.
    running: AtomicU64,
    most_at_once: AtomicU64,
    /// The sum of the ids of the jobs that completed.
    completed_sum: AtomicU64,
    /// Failures passed to `on_failure`.
    reported: AtomicU64,
    /// Jobs that found the channel full, and the most jobs seen waiting in it.
    sender_waited: AtomicU64,
    peak_queued: AtomicU64,
}

/// A running job, counted in [`Tally::running`] until it is dropped (when the job ends, fails
/// or is aborted).
#[derive(Debug)]
struct Slot {
    tally: Arc<Tally>,
    /// How many jobs were running once this one started.
    running: u64,
}

impl Slot {
    fn enter(tally: Arc<Tally>) -> Slot {
        let running = tally.running.fetch_add(1, Ordering::SeqCst) + 1;
        tally.most_at_once.fetch_max(running, Ordering::SeqCst);
        Slot { tally, running }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tally.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The stable, parseable result printed to stdout.
#[derive(Debug)]
struct Summary {
    submitted: u64,
    workers: usize,
    completed: u64,
    failed: u64,
    reported: u64,
    cancelled: u64,
    completed_sum: u64,
    most_at_once: u64,
    capacity: usize,
    peak_queued: u64,
    sender_waited: u64,
    reason: Reason,
}

impl Summary {
    fn new(args: &Args, submitted: u64, report: &SupervisorReport, tally: &Tally) -> Summary {
        let children = &report.children;
        Summary {
            submitted,
            workers: args.workers,
            completed: children.completed,
            failed: children.failed,
            reported: tally.reported.load(Ordering::SeqCst),
            cancelled: children.cancelled,
            completed_sum: tally.completed_sum.load(Ordering::SeqCst),
            most_at_once: tally.most_at_once.load(Ordering::SeqCst),
            capacity: args.capacity,
            peak_queued: tally.peak_queued.load(Ordering::SeqCst),
            sender_waited: tally.sender_waited.load(Ordering::SeqCst),
            reason: report.reason.clone(),
        }
    }

    fn print(&self) {
        println!("submitted: {}", self.submitted);
        println!("workers: {}", self.workers);
        println!("completed: {}", self.completed);
        println!("failed: {}", self.failed);
        println!("reported: {}", self.reported);
        println!("cancelled: {}", self.cancelled);
        println!("completed_sum: {}", self.completed_sum);
        println!("most_at_once: {}", self.most_at_once);
        println!("capacity: {}", self.capacity);
        println!("peak_queued: {}", self.peak_queued);
        println!("sender_waited: {}", self.sender_waited);
        println!("reason: {}", self.reason);
    }
}

/// Why the pool did not run to its end.
#[derive(Debug)]
enum Error {
    /// The channel or the supervisor did not start: `--capacity 0` and `--workers 0` end here,
    /// as the invalid options `capacity` and `max_demand`.
    Start(StartError),
    /// The channel closed before every job was submitted (the pool stopped early).
    Closed { submitted: u64 },
    /// The submitter task panicked.
    Submitter(String),
    /// The supervisor exited abnormally.
    Abnormal(Reason),
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
                    "max_demand" => "--workers",
                    "capacity" => "--capacity",
                    other => other,
                };
                write!(f, "{flag} {} is not usable: {opt}", opt.value)
            }
            Error::Start(err) => write!(f, "the pool did not start: {err}"),
            Error::Closed { submitted } => write!(
                f,
                "the pool stopped taking jobs after {submitted} were submitted"
            ),
            Error::Submitter(err) => write!(f, "the submitter failed: {err}"),
            Error::Abnormal(reason) => write!(f, "the pool exited abnormally: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
