//! Runs the compiled `worker_pool` example and checks its summary: every job ran once, the
//! expected ones failed and were reported, the pool was full but never over-full, and the
//! submitter was held back by the channel.

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::cmd_for_example;

/// Runs the pool with `args` (and a timeout of its own, so a hang fails instead of blocking).
fn run(args: &[&str]) -> Output {
    cmd_for_example("worker_pool")
        .args(args)
        .args(["--timeout-secs", "30"])
        .stdin(Stdio::null())
        .output()
        .expect("run the worker_pool example")
}

/// Runs the pool, expects success within a few seconds, and returns its summary.
fn summary(args: &[&str]) -> HashMap<String, String> {
    let started = Instant::now();
    let output = run(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "worker_pool {args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "worker_pool {args:?} took {:?}",
        started.elapsed()
    );
    stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_string(), value.trim().to_string()))
        .collect()
}

fn number(summary: &HashMap<String, String>, key: &str) -> u64 {
    let value = summary
        .get(key)
        .unwrap_or_else(|| panic!("no {key}: {summary:?}"));
    value.parse().unwrap_or_else(|_| panic!("{key}: {value}"))
}

/// Checks a summary against the pool's rules for `jobs` jobs, `workers` workers, a channel of
/// `capacity`, and every `fail_every`-th job failing.
fn check(
    summary: &HashMap<String, String>,
    jobs: u64,
    workers: u64,
    capacity: u64,
    fail_every: u64,
) {
    let failing: Vec<u64> = (1..=jobs)
        .filter(|id| fail_every != 0 && id % fail_every == 0)
        .collect();
    let expected_sum: u64 = (1..=jobs).sum::<u64>() - failing.iter().sum::<u64>();
    let failed = failing.len() as u64;

    assert_eq!(number(summary, "submitted"), jobs, "{summary:?}");
    assert_eq!(number(summary, "workers"), workers, "{summary:?}");
    assert_eq!(
        number(summary, "completed") + number(summary, "failed"),
        jobs,
        "{summary:?}"
    );
    assert_eq!(number(summary, "failed"), failed, "{summary:?}");
    assert_eq!(number(summary, "reported"), failed, "{summary:?}");
    assert_eq!(number(summary, "cancelled"), 0, "{summary:?}");
    // Each job that completed ran once: the ids of the completed jobs add up.
    assert_eq!(
        number(summary, "completed_sum"),
        expected_sum,
        "{summary:?}"
    );
    // The pool was full (the submitter is much faster than the jobs) and never over-full.
    assert_eq!(
        number(summary, "most_at_once"),
        workers.min(jobs),
        "{summary:?}"
    );
    assert_eq!(number(summary, "capacity"), capacity, "{summary:?}");
    assert!(number(summary, "peak_queued") <= capacity, "{summary:?}");
    assert_eq!(summary.get("reason").map(String::as_str), Some("normal"));
}

#[test]
fn the_default_pool_runs_every_job_at_most_eight_at_once() {
    let summary = summary(&[]);
    check(&summary, 200, 8, 16, 7);
    // 200 jobs, 8 running and 16 waiting: the submitter had to wait for most of them.
    assert!(number(&summary, "sender_waited") > 0, "{summary:?}");
    assert_eq!(number(&summary, "peak_queued"), 16, "{summary:?}");
}

#[test]
fn a_small_pool_with_a_tiny_channel_holds_the_submitter_back() {
    let summary = summary(&[
        "--jobs",
        "60",
        "--workers",
        "3",
        "--capacity",
        "1",
        "--fail-every",
        "4",
        "--seed",
        "7",
    ]);
    check(&summary, 60, 3, 1, 4);
    assert!(number(&summary, "sender_waited") > 0, "{summary:?}");
}

#[test]
fn no_job_fails_with_fail_every_zero_and_every_job_fails_with_one() {
    let none = summary(&["--jobs", "30", "--fail-every", "0"]);
    check(&none, 30, 8, 16, 0);
    let all = summary(&["--jobs", "30", "--fail-every", "1"]);
    check(&all, 30, 8, 16, 1);
}

#[test]
fn zero_workers_or_zero_capacity_is_a_clean_error() {
    for (flag, option) in [("--workers", "max_demand"), ("--capacity", "capacity")] {
        let output = run(&[flag, "0"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag} 0: {stderr}");
        assert!(
            stderr.contains(&format!("worker_pool: {flag} 0 is not usable")),
            "{flag} 0: {stderr}"
        );
        assert!(
            stderr.contains(&format!("`{option}`")),
            "{flag} 0: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flag} 0: {stderr}");
        assert!(output.stdout.is_empty(), "{flag} 0");
    }
}

#[test]
fn help_describes_the_program() {
    let output = run(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    assert!(
        help.contains("Runs jobs through a bounded worker pool"),
        "{help}"
    );
    assert!(help.contains("--workers <WORKERS>"), "{help}");
    assert!(!help.contains("Runnable example programs"), "{help}");
}
