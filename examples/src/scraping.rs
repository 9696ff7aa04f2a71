//! The book's last section: the web scraper rebuilt as an `ingest` pipeline, for
//! `examples/scraper_ingest.rs` and its test.
//!
//! Pages come from an in-memory queue. Two processors (`max_demand` 1, as in the book) check
//! each page with a HEAD request: an online page is keyed by its address and sent on, an
//! offline one fails (`"offline"`) and is rejected. One batcher makes batches of one page and
//! has two batch processors, so at most two pages are fetched at once, however many pages are
//! online: the batcher is what limits the scrapers. A fetch that fails is retried once in a
//! later batch, then rejected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ingest::{
    Backoff, BatchInfo, Batcher, Context, Failure, Handler, Message, Pipeline, Processors, Report,
    RetryPolicy,
};
use tracing::{debug, info};

use crate::queue::{Queue, QueueCounts};

/// What the stages counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Pages that answered the HEAD request.
    pub online: AtomicU64,
    /// Pages fetched.
    pub fetched: AtomicU64,
    /// Fetches that failed.
    pub failed: AtomicU64,
    /// The bytes fetched.
    pub bytes: AtomicU64,
    /// Fetches running now.
    running: AtomicU64,
    /// The most fetches that ran at once.
    pub most_at_once: AtomicU64,
}

/// The scraping pipeline's work: check in the processors, fetch in the batch processors.
#[derive(Debug)]
pub struct Scraping {
    client: reqwest::Client,
    head_timeout: Duration,
    tally: Arc<Tally>,
}

impl Handler for Scraping {
    type In = String;
    type Out = String;

    async fn handle_message(
        &self,
        msg: &mut Message<String>,
        _: &Context,
    ) -> Result<String, Failure> {
        let url = msg.data.clone();
        let head = self.client.head(&url).timeout(self.head_timeout).send();
        let online = match head.await {
            Ok(response) => response.status().is_success(),
            Err(err) => {
                debug!("HEAD {url} failed: {err}");
                false
            }
        };
        if !online {
            // The book's `Message.failed(msg, "offline")`; an offline page is not requeued.
            return Err(Failure::new("offline").nack(false));
        }
        self.tally.online.fetch_add(1, Ordering::SeqCst);
        msg.put_batch_key(url.as_str());
        Ok(url)
    }

    async fn handle_batch(
        &self,
        batch: &mut [Message<String>],
        info: &BatchInfo,
        ctx: &Context,
    ) -> Result<(), Failure> {
        for msg in batch.iter_mut() {
            let running = self.tally.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.tally.most_at_once.fetch_max(running, Ordering::SeqCst);
            info!(
                stage = ctx.stage(),
                key = %info.batch_key,
                "fetching {} ({running} of at most 2 running)",
                msg.data
            );
            let body = async {
                let response = self.client.get(&msg.data).send().await?;
                response.error_for_status()?.bytes().await
            };
            let body = body.await;
            self.tally.running.fetch_sub(1, Ordering::SeqCst);
            match body {
                Ok(body) => {
                    info!("fetched {}: {} bytes", msg.data, body.len());
                    self.tally.fetched.fetch_add(1, Ordering::SeqCst);
                    self.tally
                        .bytes
                        .fetch_add(body.len() as u64, Ordering::SeqCst);
                }
                Err(err) => {
                    self.tally.failed.fetch_add(1, Ordering::SeqCst);
                    msg.fail(Failure::new(format_args!("GET {}: {err}", msg.data)));
                }
            }
        }
        Ok(())
    }
}

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a HEAD request may take before its page counts as offline.
    pub head_timeout: Duration,
    /// How long a GET request may take.
    pub get_timeout: Duration,
    /// How many pages are fetched at once (the book's 2).
    pub scrapers: usize,
    /// How long the shutdown may take once the queue is drained.
    pub deadline: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            head_timeout: Duration::from_secs(2),
            get_timeout: Duration::from_secs(10),
            scrapers: 2,
            deadline: Duration::from_secs(30),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    /// Pages published.
    pub pages: u64,
    /// What the stages counted.
    pub tally: Arc<Tally>,
    /// What the queue heard.
    pub queue: QueueCounts,
    /// The pipeline's report.
    pub report: Report,
}

/// Scrapes `urls` until each has been settled for good, then shuts the pipeline down.
///
/// # Errors
///
/// If the HTTP client cannot be built or the pipeline does not start.
pub async fn run(
    urls: Vec<String>,
    settings: &Settings,
) -> Result<RunSummary, Box<dyn std::error::Error>> {
    let client = reqwest::Client::builder()
        .timeout(settings.get_timeout)
        .connect_timeout(settings.head_timeout)
        .build()?;
    let tally = Arc::new(Tally::default());
    let pages = Queue::new("pages");
    let handler = Scraping {
        client,
        head_timeout: settings.head_timeout,
        tally: Arc::clone(&tally),
    };
    let pipeline = Pipeline::builder("scraping", handler)
        .producer(pages.producer(|url| url))
        .processors(Processors::new().concurrency(2).max_demand(1))
        .batcher(
            Batcher::new("default")
                .batch_size(1)
                .concurrency(settings.scrapers)
                .retry(RetryPolicy::new(2).backoff(Backoff::fixed(Duration::from_millis(100)))),
        )
        .start()?;
    info!("{}", pipeline.topology());
    let n = urls.len() as u64;
    pages.publish(urls);
    pages.drained().await;
    let report = pipeline.shutdown(settings.deadline).await;
    Ok(RunSummary {
        pages: n,
        tally,
        queue: pages.counts(),
        report,
    })
}
