//! Runs the compiled `scraper_ingest` example against its local test site and checks its
//! summary: every online page fetched, offline ones rejected, never more than two fetches at
//! once, every page settled once.

mod support;

use std::time::Duration;

use examples::site::Site;
use support::run;

#[test]
fn the_batcher_limits_the_scrapers_to_two() {
    let out = run(
        "scraper_ingest",
        &["--pages", "30"],
        Duration::from_secs(20),
    );
    let online: Vec<usize> = (1..=30).filter(|&n| Site::status(n).is_success()).collect();
    let bytes: u64 = online.iter().map(|&n| Site::size(n) as u64).sum();
    assert_eq!(online.len(), 24);
    assert_eq!(out.get("pages"), 30);
    assert_eq!(out.get("online"), 24);
    assert_eq!(out.get("fetched"), 24);
    assert_eq!(out.get("failed"), 0);
    assert_eq!(out.get("bytes"), bytes);
    assert_eq!(out.get("acked"), 24);
    assert_eq!(out.get("rejected"), 6);
    assert_eq!(out.get("settled_once"), 1);
    let most = out.get("most_at_once");
    assert!((1..=2).contains(&most), "most_at_once {most}");
    for line in [
        "fetching http://127.0.0.1:",
        "of at most 2 running",
        "fetched http://",
    ] {
        assert!(
            out.log.contains(line),
            "no {line:?} in the log:\n{}",
            out.log
        );
    }
}

/// More scrapers, more at once: the limit is the batcher's concurrency.
#[test]
fn more_scrapers_fetch_more_at_once() {
    let out = run(
        "scraper_ingest",
        &["--pages", "40", "--scrapers", "4"],
        Duration::from_secs(20),
    );
    assert_eq!(out.get("fetched"), 32);
    assert!(out.get("most_at_once") <= 4);
    assert_eq!(out.get("settled_once"), 1);
}
