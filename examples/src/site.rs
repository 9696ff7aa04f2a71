//! A test web site served on `127.0.0.1`, so that the scraping examples need no network.
//!
//! `/pages/{n}` for `n` in `1..=pages`. Page `n` is offline when `n` is a multiple of 5 (404
//! when `n` is odd, 503 when even) and otherwise `256 * (1 + (37 * n) % 64)` bytes long; the
//! examples' tests rely on both rules. Every request (HEAD and GET) waits 0-50 ms, drawn from
//! the site's seed, the page and the method, so a run's latencies do not depend on the order
//! of its requests.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::{info, warn};

/// The test site: how many pages, and the seed of its latencies.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// How many pages it serves.
    pub pages: usize,
    /// The seed of its latencies.
    pub seed: u64,
}

impl Site {
    /// Whether page `n` answers with a success, and with what status otherwise.
    pub fn status(n: usize) -> StatusCode {
        match (n % 5, n % 2) {
            (0, 1) => StatusCode::NOT_FOUND,
            (0, _) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::OK,
        }
    }

    /// The size of page `n`'s body, if it is online.
    pub fn size(n: usize) -> usize {
        256 * (1 + (37 * n) % 64)
    }

    fn latency(&self, n: usize, method: &Method) -> Duration {
        let head = u64::from(*method == Method::HEAD);
        let mut z = (self.seed ^ ((n as u64) << 1) ^ head).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Duration::from_millis((z ^ (z >> 31)) % 51)
    }

    /// Starts serving on an ephemeral port of 127.0.0.1 and returns the pages' URLs.
    ///
    /// # Errors
    ///
    /// If the port cannot be bound.
    pub async fn serve(self) -> std::io::Result<Vec<String>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/pages/{n}", get(page))
            .with_state(self);
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                warn!("the test site stopped: {err}");
            }
        });
        info!(
            "serving {} test pages at http://{addr}/pages/1..={}",
            self.pages, self.pages
        );
        Ok((1..=self.pages)
            .map(|n| format!("http://{addr}/pages/{n}"))
            .collect())
    }
}

/// Answers GET (and, through axum, HEAD) for one page of the test site.
async fn page(State(site): State<Site>, Path(n): Path<usize>, method: Method) -> Response {
    if n == 0 || n > site.pages {
        return StatusCode::NOT_FOUND.into_response();
    }
    tokio::time::sleep(site.latency(n, &method)).await;
    let status = Site::status(n);
    if status != StatusCode::OK {
        return status.into_response();
    }
    let mut body = format!("<!doctype html><title>Page {n}</title><p>").into_bytes();
    let end = b"</p>\n";
    body.resize(Site::size(n) - end.len(), b'.');
    body.extend_from_slice(end);
    body.into_response()
}
