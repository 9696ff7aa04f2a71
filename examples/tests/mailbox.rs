//! Runs the compiled `mailbox` example and checks its summary: the unbounded channel lets the
//! events pile up, stage keeps what is outstanding within `max_demand + capacity`, and both
//! runs handle every event exactly once, in order.

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::cmd_for_example;

/// Runs the example with `args` (and a timeout of its own, so a hang fails instead of
/// blocking).
fn run(args: &[&str]) -> Output {
    cmd_for_example("mailbox")
        .args(args)
        .args(["--timeout-secs", "30"])
        .stdin(Stdio::null())
        .output()
        .expect("run the mailbox example")
}

/// Runs the example, expects success within a few seconds, and returns its summary and log.
fn summary(args: &[&str]) -> (HashMap<String, u64>, String) {
    let started = Instant::now();
    let output = run(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "mailbox {args:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "mailbox {args:?} took {:?}",
        started.elapsed()
    );
    let summary = stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| (key.to_string(), value.trim().parse().expect("a number")))
        .collect();
    (summary, stderr)
}

fn get(summary: &HashMap<String, u64>, key: &str) -> u64 {
    *summary
        .get(key)
        .unwrap_or_else(|| panic!("no {key}: {summary:?}"))
}

/// Both runs handled each of the `events` events once, in order.
fn check_every_event_handled_once(summary: &HashMap<String, u64>, events: u64) {
    let expected_sum = events * events.saturating_sub(1) / 2;
    for run in ["unbounded", "stage"] {
        assert_eq!(
            get(summary, &format!("{run}_handled")),
            events,
            "{summary:?}"
        );
        assert_eq!(
            get(summary, &format!("{run}_sum")),
            expected_sum,
            "{summary:?}"
        );
        assert_eq!(
            get(summary, &format!("{run}_out_of_order")),
            0,
            "{summary:?}"
        );
    }
}

/// What stage lets be outstanding stays within its bound.
fn check_stage_bounded(summary: &HashMap<String, u64>, max_demand: u64, capacity: u64) {
    assert_eq!(get(summary, "max_demand"), max_demand, "{summary:?}");
    assert_eq!(get(summary, "capacity"), capacity, "{summary:?}");
    assert_eq!(get(summary, "bound"), max_demand + capacity, "{summary:?}");
    assert!(
        get(summary, "stage_peak") <= max_demand + capacity,
        "{summary:?}"
    );
    assert!(get(summary, "stage_peak") > 0, "{summary:?}");
}

#[test]
fn the_unbounded_mailbox_floods_and_stage_stays_bounded() {
    let (summary, stderr) = summary(&[]);
    assert_eq!(get(&summary, "events"), 20_000, "{summary:?}");
    check_every_event_handled_once(&summary, 20_000);
    check_stage_bounded(&summary, 64, 32);
    assert_eq!(get(&summary, "min_demand"), 32, "{summary:?}");
    let (unbounded, stage) = (get(&summary, "unbounded_peak"), get(&summary, "stage_peak"));
    assert!(unbounded > 10 * stage, "{summary:?}");
    assert_eq!(
        get(&summary, "unbounded_peak_bytes"),
        unbounded * get(&summary, "event_bytes")
    );
    assert!(
        stderr.contains("The unbounded channel let") && stderr.contains("were ever outstanding"),
        "{stderr}"
    );
}

#[test]
fn a_tiny_demand_and_channel_bound_the_stage_run_whatever_the_events() {
    for events in ["500", "5000"] {
        let args = [
            "--events",
            events,
            "--max-demand",
            "4",
            "--capacity",
            "1",
            "--work-us",
            "5",
        ];
        let (summary, _) = summary(&args);
        check_every_event_handled_once(&summary, events.parse().unwrap());
        check_stage_bounded(&summary, 4, 1);
    }
}

#[test]
fn no_events_is_two_empty_runs() {
    let (summary, _) = summary(&["--events", "0"]);
    check_every_event_handled_once(&summary, 0);
    assert_eq!(get(&summary, "unbounded_peak"), 0, "{summary:?}");
    assert_eq!(get(&summary, "stage_peak"), 0, "{summary:?}");
}

#[test]
fn zero_max_demand_or_zero_capacity_is_a_clean_error() {
    for (flag, option) in [("--max-demand", "max_demand"), ("--capacity", "capacity")] {
        let output = run(&[flag, "0"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag} 0: {stderr}");
        assert!(
            stderr.contains(&format!("mailbox: {flag} 0 is not usable")),
            "{flag} 0: {stderr}"
        );
        assert!(
            stderr.contains(&format!("`{option}`")),
            "{flag} 0: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flag} 0: {stderr}");
        // Nothing ran: the stage run is started, and checked, before the unbounded one.
        assert!(!stderr.contains("run 1"), "{flag} 0: {stderr}");
        assert!(output.stdout.is_empty(), "{flag} 0");
    }
}

#[test]
fn help_describes_the_program() {
    let output = run(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    assert!(
        help.contains(
            "Floods a slow consumer twice: through an unbounded channel, then through stage"
        ),
        "{help}"
    );
    assert!(help.contains("--max-demand <MAX_DEMAND>"), "{help}");
    assert!(!help.contains("Runnable example programs"), "{help}");
}
