//! The web scraper from the GenStage book, running for real: a producer fed through its API,
//! two filtering producer-consumers, and a `ConsumerSupervisor` that starts one task per page.
//!
//! ```text
//!                 ┌─> OnlinePageProducerConsumer 1 ─┐
//! PageProducer ───┤                                 ├─> PageConsumerSupervisor ─> child per page
//!                 └─> OnlinePageProducerConsumer 2 ─┘      (max_demand 2 per producer)
//! ```
//!
//! - `PageProducer` holds the URLs handed to it with [`Pages::scrape_pages`] (a cast) and emits
//!   them only as its consumers ask. As GenStage's docs advise, it keeps the demand it cannot meet
//!   and serves it when pages arrive.
//! - Each `OnlinePageProducerConsumer` sends a HEAD request (with a short timeout) for each page
//!   it receives and passes on only the pages whose server answers with a success.
//! - `PageConsumerSupervisor` asks each producer-consumer for 2 pages at a time, so at most 4
//!   children run at once; a child GETs its page and reports its size.
//!
//! By default the program serves its own test site on `127.0.0.1` (an ephemeral port), so it
//! needs no network: `--pages N` pages, every fifth of which is offline (404 or 503), of
//! varied sizes, each request delayed by up to 50 ms drawn from a seeded RNG (`--seed`).
//! `--urls URL,URL,...` scrapes real addresses instead.
//!
//! Usage, from the workspace root:
//!
//! ```text
//! cargo run --release --example scraper
//! cargo run --release --example scraper -- --pages 100
//! cargo run --release --example scraper -- --urls https://www.rust-lang.org,https://tokio.rs
//! RUST_LOG=debug cargo run --release --example scraper    # the stages' own log too
//! ```
//!
//! The log goes to stderr; each child's start logs, at INFO, how many children are running
//! then. At the end a summary goes to stdout, one `name: value` per line: `pages` (handed to the
//! producer), `online` (passed the HEAD check), `fetched` (children that got their page),
//! `failed` (children that did not), `bytes` (the sum of the pages' sizes) and `most_at_once`
//! (the most children that ran at the same time: at most 4).
//!
//! Shutting down: once the URLs are handed over, the producer is told to finish; it stops with
//! `Reason::Normal` when it has emitted them all. Its permanent subscribers, the
//! producer-consumers, send on what they still hold and stop too. The supervisor subscribed to
//! them as transient, so that the first one to stop does not take it down while the other still
//! holds pages; once both have stopped it is shut down, and it waits for its running children
//! (for at most `--grace-secs`) before it exits with its report.

use std::collections::VecDeque;
use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use examples::site::Site;
use stage::{
    CallError, CancelMode, Cast, Consumer, ConsumerSupervisor, Context, Producer, Reason,
    StageHandle, StartError, SubscribeOptions, SubscriptionId, SupervisorHandle,
};
use tracing::{debug, info};
use tracing_subscriber::EnvFilter;

/// Scrapes pages through a GenStage pipeline: producer -> 2 HEAD filters -> consumer supervisor.
///
/// A producer hands out page addresses as they are asked for; two producer-consumers send a
/// HEAD request for each and pass on the pages that answer; a consumer supervisor GETs each
/// page in a task of its own, at most 2 per filter at once. By default the pages come from a
/// test site the program serves itself on 127.0.0.1, so it needs no network. It prints a
/// summary (pages, online, fetched, failed, bytes, most_at_once) on stdout; the log goes to
/// stderr (RUST_LOG sets its level).
#[derive(Debug, Parser)]
#[command(name = "scraper")]
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
    /// How long a HEAD request may take before its page counts as offline, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    head_timeout_ms: u64,
    /// How long a GET request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    get_timeout_ms: u64,
    /// Give up, and exit with status 2, if the run takes longer than this, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// How long the supervisor waits for its running children once shut down, in seconds;
    /// children still running then are cancelled and reported.
    #[arg(long, default_value_t = 10)]
    grace_secs: u64,
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
            eprintln!("scraper: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "scraper: the pipeline did not finish within {}s; giving up",
                args.timeout_secs
            );
            // Not a return: a stuck task (a DNS lookup, say) must not hold up the exit.
            std::process::exit(2);
        }
    }
}

/// Builds the pipeline, feeds it, shuts it down and counts what happened.
async fn run(args: &Args) -> Result<Summary, Box<dyn Error>> {
    let urls = if args.urls.is_empty() {
        let site = Site {
            pages: args.pages,
            seed: args.seed,
        };
        site.serve().await?
    } else {
        args.urls.clone()
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.get_timeout_ms))
        .connect_timeout(Duration::from_millis(args.head_timeout_ms))
        .build()?;
    let tally = Arc::new(Tally::default());

    let producer = PageProducer::start()?;
    let head_timeout = Duration::from_millis(args.head_timeout_ms);
    let mut online = Vec::new();
    for id in 1..=2 {
        let stage = OnlinePageProducerConsumer {
            id,
            client: client.clone(),
            head_timeout,
            tally: Arc::clone(&tally),
        };
        online.push(stage.start(&producer).await?);
    }
    let grace = Duration::from_secs(args.grace_secs);
    let supervisor =
        start_page_consumer_supervisor(client, Arc::clone(&tally), &online, grace).await?;

    let pages = urls.len() as u64;
    producer.scrape_pages(urls)?;
    producer.finish()?;

    shut_down(&producer, &online, &supervisor).await?;
    Ok(Summary {
        pages,
        online: tally.online.load(Ordering::SeqCst),
        fetched: tally.fetched.load(Ordering::SeqCst),
        failed: tally.failed.load(Ordering::SeqCst),
        bytes: tally.bytes.load(Ordering::SeqCst),
        most_at_once: tally.most_at_once.load(Ordering::SeqCst),
    })
}

/// Waits for the producer and the producer-consumers to finish, then shuts the supervisor down
/// once it holds every page they sent: it waits for its children (within its grace) and
/// reports how they ended.
async fn shut_down(
    producer: &Pages,
    online: &[StageHandle<OnlinePageProducerConsumer>],
    supervisor: &SupervisorHandle<String>,
) -> Result<(), Box<dyn Error>> {
    expect_normal("PageProducer", producer.join().await)?;
    for stage in online {
        expect_normal(stage.name(), stage.join().await)?;
    }
    // The producer-consumers told the supervisor they were down after their last pages, and
    // before `join` returned: this call is answered after every page has started its child.
    let counters = supervisor.counters().await?;
    let children = supervisor.count_children().await?;
    info!(
        "PageConsumerSupervisor received {} pages, started {} children, {} still running; shutting it down",
        counters.events_in, children.started, children.active
    );
    supervisor.shutdown()?;
    let report = supervisor.join_report().await;
    let children = &report.children;
    info!(
        "PageConsumerSupervisor exited ({}): {} children completed, {} failed, {} cancelled",
        report.reason, children.completed, children.failed, children.cancelled
    );
    expect_normal(supervisor.name(), report.reason)?;
    Ok(())
}

fn expect_normal(name: &str, reason: Reason) -> Result<(), String> {
    if reason.is_normal() {
        debug!("{name} stopped: {reason}");
        Ok(())
    } else {
        Err(format!("{name} stopped abnormally: {reason}"))
    }
}

/// What the stages counted, shared with them.
#[derive(Debug, Default)]
struct Tally {
    online: AtomicU64,
    fetched: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    /// Children running now, and the most that ever ran at once.
    running: AtomicU64,
    most_at_once: AtomicU64,
}

/// The stable, parseable result printed to stdout.
#[derive(Debug)]
struct Summary {
    pages: u64,
    online: u64,
    fetched: u64,
    failed: u64,
    bytes: u64,
    most_at_once: u64,
}

impl Summary {
    fn print(&self) {
        println!("pages: {}", self.pages);
        println!("online: {}", self.online);
        println!("fetched: {}", self.fetched);
        println!("failed: {}", self.failed);
        println!("bytes: {}", self.bytes);
        println!("most_at_once: {}", self.most_at_once);
    }
}

// ----- PageProducer -----

/// Emits the page URLs handed to it, as many as its consumers ask for.
#[derive(Debug, Default)]
struct PageProducer {
    /// Pages handed over and not asked for yet.
    pages: VecDeque<String>,
    /// Pages asked for and not handed over yet.
    pending: usize,
    /// Whether to stop once every page has been emitted.
    finishing: bool,
}

/// What [`Pages`] casts to the producer.
#[derive(Debug)]
enum PageMsg {
    Scrape(Vec<String>),
    Finish,
}

impl PageProducer {
    fn start() -> Result<Pages, StartError> {
        let handle = stage::producer(PageProducer::default())
            .name("PageProducer")
            .start()?;
        Ok(Pages(handle))
    }

    /// Emits as many held pages as are asked for, and finishes once none are left to emit.
    fn serve(&mut self, ctx: &mut Context<Self>) {
        let n = self.pending.min(self.pages.len());
        self.pending -= n;
        ctx.emit(self.pages.drain(..n).collect());
        if self.finishing && self.pages.is_empty() {
            // Stops with `Reason::Normal` once what it emitted has been dispatched.
            ctx.finish();
        }
    }
}

impl Producer for PageProducer {
    type Out = String;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<String> {
        info!(
            "PageProducer received demand for {demand} pages ({} held)",
            self.pages.len()
        );
        self.pending += demand;
        self.serve(ctx);
        Vec::new()
    }
}

impl Cast<PageMsg> for PageProducer {
    async fn handle_cast(&mut self, msg: PageMsg, ctx: &mut Context<Self>) {
        match msg {
            PageMsg::Scrape(urls) => {
                let sent = self.pending.min(self.pages.len() + urls.len());
                info!(
                    "PageProducer received {} pages to scrape: emitting {sent}, the rest wait for demand",
                    urls.len()
                );
                self.pages.extend(urls);
            }
            PageMsg::Finish => {
                info!(
                    "PageProducer will stop once its {} held pages are emitted",
                    self.pages.len()
                );
                self.finishing = true;
            }
        }
        self.serve(ctx);
    }
}

/// The producer's API, like the book's `PageProducer.scrape_pages/1`.
#[derive(Debug, Clone)]
struct Pages(StageHandle<PageProducer>);

impl Pages {
    /// Hands pages to the producer (a cast: it does not wait). They are emitted as consumers
    /// ask for them.
    fn scrape_pages(&self, urls: Vec<String>) -> Result<(), CallError> {
        self.0.cast(PageMsg::Scrape(urls))
    }

    /// Tells the producer to stop with `Reason::Normal` once it has emitted every page handed
    /// to it. (`StageHandle::stop` would stop it at once, dropping the pages it still holds.)
    fn finish(&self) -> Result<(), CallError> {
        self.0.cast(PageMsg::Finish)
    }

    async fn join(&self) -> Reason {
        self.0.join().await
    }
}

impl stage::AsProducer<String> for Pages {
    fn as_producer(&self) -> stage::ProducerRef<String> {
        self.0.producer()
    }
}

// ----- OnlinePageProducerConsumer -----

/// Passes on the pages whose server answers a HEAD request with a success.
#[derive(Debug)]
struct OnlinePageProducerConsumer {
    id: usize,
    client: reqwest::Client,
    head_timeout: Duration,
    tally: Arc<Tally>,
}

impl OnlinePageProducerConsumer {
    /// Starts the stage and subscribes it to `producer`, returning once the producer has
    /// accepted the subscription (so no page can be emitted before a consumer is there).
    async fn start(
        self,
        producer: &Pages,
    ) -> Result<StageHandle<OnlinePageProducerConsumer>, Box<dyn Error>> {
        let name = format!("OnlinePageProducerConsumer {}", self.id);
        let handle = stage::producer_consumer(self).name(name).start()?;
        // Permanent (the default): when the producer finishes, this stage sends on what it
        // holds and stops too.
        handle
            .subscribe(producer, SubscribeOptions::new().max_demand(4))
            .await?;
        Ok(handle)
    }

    async fn is_online(&self, url: &str) -> bool {
        let head = self.client.head(url).timeout(self.head_timeout).send();
        match head.await {
            Ok(response) => {
                debug!("HEAD {url}: {}", response.status());
                response.status().is_success()
            }
            Err(err) => {
                debug!("HEAD {url} failed: {err}");
                false
            }
        }
    }
}

impl Producer for OnlinePageProducerConsumer {
    type Out = String;

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        opts: &SubscribeOptions,
        _: &mut Context<Self>,
    ) {
        if let Ok((max, min)) = opts.limits() {
            info!(
                "OnlinePageProducerConsumer {} subscribed by a consumer (max_demand {max}, min_demand {min})",
                self.id
            );
        }
    }
}

impl Consumer for OnlinePageProducerConsumer {
    type In = String;

    async fn handle_events(
        &mut self,
        pages: Vec<String>,
        _: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        let checks = futures::future::join_all(pages.iter().map(|url| self.is_online(url))).await;
        let received = pages.len();
        let online: Vec<String> = pages
            .into_iter()
            .zip(checks)
            .filter_map(|(url, up)| up.then_some(url))
            .collect();
        info!(
            "OnlinePageProducerConsumer {} received {received} pages, {} online",
            self.id,
            online.len()
        );
        self.tally
            .online
            .fetch_add(online.len() as u64, Ordering::SeqCst);
        ctx.emit(online);
    }
}

// ----- PageConsumerSupervisor -----

/// Starts the supervisor, one child per page, and subscribes it to the producer-consumers with
/// at most 2 children from each running at once.
async fn start_page_consumer_supervisor(
    client: reqwest::Client,
    tally: Arc<Tally>,
    online: &[StageHandle<OnlinePageProducerConsumer>],
    grace: Duration,
) -> Result<SupervisorHandle<String>, Box<dyn Error>> {
    let child = move |url: String| fetch(client.clone(), url, Arc::clone(&tally));
    let supervisor = ConsumerSupervisor::new(child)
        .name("PageConsumerSupervisor")
        .shutdown(grace)
        .start()?;
    // Transient: a producer-consumer that ends normally does not stop the supervisor, which
    // may still get pages from the other one.
    let opts = SubscribeOptions::new()
        .max_demand(2)
        .cancel(CancelMode::Transient);
    for stage in online {
        supervisor.subscribe(stage, opts.clone()).await?;
    }
    Ok(supervisor)
}

/// A child: GETs one page and reports its size.
async fn fetch(client: reqwest::Client, url: String, tally: Arc<Tally>) -> Result<(), String> {
    let running = tally.running.fetch_add(1, Ordering::SeqCst) + 1;
    tally.most_at_once.fetch_max(running, Ordering::SeqCst);
    info!("child fetching {url} ({running} of at most 4 children running)");
    let body = async {
        let response = client.get(&url).send().await?.error_for_status()?;
        response.bytes().await
    };
    let body = body.await;
    tally.running.fetch_sub(1, Ordering::SeqCst);
    match body {
        Ok(body) => {
            info!("child fetched {url}: {} bytes", body.len());
            tally.fetched.fetch_add(1, Ordering::SeqCst);
            tally.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
            Ok(())
        }
        Err(err) => {
            tally.failed.fetch_add(1, Ordering::SeqCst);
            Err(format!("GET {url}: {err}"))
        }
    }
}
