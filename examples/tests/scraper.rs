//! Runs the compiled `scraper` example against its local test site and checks its summary
//! (rust-csv: `tests/tests.rs` runs its examples the same way).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The command for an example binary, which cargo builds before the integration tests:
/// `target/<profile>/examples/<name>`, next to this test's `target/<profile>/deps/`.
fn cmd_for_example(name: &str) -> Command {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    let exe = path
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.exists(), "example binary not built: {}", exe.display());
    Command::new(exe)
}

/// The test site's rules, as documented on `Site` in `scraper.rs`: every fifth page is offline,
/// page `n` is `256 * (1 + (37 * n) % 64)` bytes long.
fn online_pages(pages: usize) -> impl Iterator<Item = usize> {
    (1..=pages).filter(|n| n % 5 != 0)
}

fn page_size(n: usize) -> u64 {
    256 * (1 + (37 * n as u64) % 64)
}

#[test]
fn scraper_fetches_every_online_page_of_the_test_site() {
    let started = Instant::now();
    let output = cmd_for_example("scraper")
        .args(["--pages", "30", "--timeout-secs", "30"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run the scraper example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scraper failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the scraper took {:?}",
        started.elapsed()
    );

    let summary: HashMap<&str, u64> = stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key, value.trim().parse().expect("a number")))
        .collect();
    let expected_online = online_pages(30).count() as u64;
    let expected_bytes: u64 = online_pages(30).map(page_size).sum();
    assert_eq!(expected_online, 24);
    assert_eq!(summary.get("pages"), Some(&30), "stdout:\n{stdout}");
    assert_eq!(
        summary.get("online"),
        Some(&expected_online),
        "stdout:\n{stdout}"
    );
    assert_eq!(
        summary.get("fetched"),
        Some(&expected_online),
        "stdout:\n{stdout}"
    );
    assert_eq!(summary.get("failed"), Some(&0), "stdout:\n{stdout}");
    // The supervisor's concurrency: at most 2 children per filter, and both filters busy.
    let most = summary.get("most_at_once").copied().unwrap_or(0);
    assert!((2..=4).contains(&most), "most_at_once {most}:\n{stdout}");
    assert_eq!(
        summary.get("bytes"),
        Some(&expected_bytes),
        "stdout:\n{stdout}"
    );

    // Demand moves upstream, pages move downstream.
    for line in [
        "PageProducer received demand for",
        "PageProducer received 30 pages to scrape",
        "online",
        "child fetched http://127.0.0.1:",
        "children running)",
        "children completed, 0 failed, 0 cancelled",
    ] {
        assert!(stderr.contains(line), "no {line:?} in the log:\n{stderr}");
    }
    let filtered = stderr
        .lines()
        .filter(|line| line.contains("OnlinePageProducerConsumer") && line.contains(" online"))
        .count();
    assert!(
        filtered >= 2,
        "too few filter batches in the log:\n{stderr}"
    );
}
