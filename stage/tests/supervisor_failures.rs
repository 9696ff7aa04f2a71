//! A ConsumerSupervisor's failures, seen through its `on_failure` callback: every `Err`, every
//! panic (in a child's future or when the child function is called, on a first run or a
//! restart) and every child cancelled at the end of the grace, each exactly once, whether the
//! supervisor is running or stopping.
//!
//! Every test runs on tokio's paused clock, each wait guarded by a timeout.

mod supervisor_fixtures;
mod support;

use stage::{ConsumerSupervisor, Reason, Restart, SubscribeOptions};
use supervisor_fixtures::{Failures, Probe, Script, guard, opts, scripted};

/// What event `n` does on its `call`-th call, by `n % 5`: succeed; fail, then succeed; panic,
/// then succeed; panic when called; fail, panic when called again, then succeed.
fn mixed(n: u64, call: usize) -> Script {
    match (n % 5, call) {
        (1, 1) | (4, 1) => Script::Fail(10 + n),
        (2, 1) => Script::Panic(10 + n),
        (3, _) | (4, 2) => Script::PanicOnStart,
        _ => Script::Sleep(10 + n),
    }
}

/// The failures `mixed` makes for events `0..n`, as `(error text, restarting)`, sorted.
fn expected(n: u64) -> Vec<(String, bool)> {
    let mut all = Vec::new();
    for event in 0..n {
        let failed = (format!("child {event} failed on call 1"), true);
        let not_started = format!("panicked: cannot start a child for {event}");
        match event % 5 {
            1 => all.push(failed),
            2 => all.push((format!("panicked: child {event} panicked on call 1"), true)),
            3 => all.push((not_started, false)),
            4 => all.extend([failed, (not_started, true)]),
            _ => {}
        }
    }
    all.sort();
    all
}

#[tokio::test(start_paused = true)]
async fn every_err_and_panic_is_reported_exactly_once() {
    let jobs = stage::from_iter(0..40u64).start().unwrap();
    let probe = Probe::default();
    let failures = Failures::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, mixed))
        .restart(Restart::Transient)
        .max_restarts(1000)
        .on_failure(failures.callback())
        .subscribe_to(&jobs, opts(4, 0))
        .start()
        .unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal);
    assert_eq!(failures.texts(), expected(40));
    let children = &report.children;
    assert_eq!(children.failed, failures.all().len() as u64);
    // Kinds 0, 1, 2 and 4 end well (8 events each); kind 3 never starts.
    assert_eq!((children.started, children.completed), (32, 32));
    assert_eq!(children.restarted, 24, "kinds 1, 2 and 4 once each");
}

#[tokio::test(start_paused = true)]
async fn temporary_children_are_reported_as_not_restarting() {
    let jobs = stage::from_iter(0..10u64).start().unwrap();
    let probe = Probe::default();
    let failures = Failures::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, mixed))
        .on_failure(failures.callback())
        .subscribe_to(&jobs, opts(3, 0))
        .start()
        .unwrap();
    let report = guard(sup.join_report()).await;
    let texts = failures.texts();
    assert!(texts.iter().all(|(_, restarting)| !restarting), "{texts:?}");
    // Events 1, 2, 4, 6, 7, 9 fail in their future; 3 and 8 when called.
    assert_eq!(texts.len(), 8, "{texts:?}");
    assert_eq!(report.children.failed, 8);
}

#[tokio::test(start_paused = true)]
async fn the_failure_that_exceeds_the_restart_intensity_is_reported_as_not_restarting() {
    let probe = Probe::default();
    let failures = Failures::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, |_, _| Script::Fail(10)))
        .restart(Restart::Transient)
        .max_restarts(2)
        .on_failure(failures.callback())
        .start()
        .unwrap();
    let id = guard(sup.start_child(1)).await.unwrap();
    assert_eq!(guard(sup.join()).await, Reason::Shutdown);
    let all = failures.all();
    assert!(all.iter().all(|f| f.child == id), "one child, one id");
    let restarting: Vec<bool> = all.iter().map(|f| f.restarting).collect();
    assert_eq!(restarting, [true, true, false]);
}

/// Children that end while the supervisor is stopping are read from their task, not from the
/// message they send it (which it no longer handles): still reported once.
#[tokio::test(start_paused = true)]
async fn failures_while_stopping_are_reported_once() {
    let probe = Probe::default();
    let failures = Failures::default();
    let child = scripted(&probe, |n, _| match n {
        1 => Script::Fail(100),
        2 => Script::Panic(200),
        _ => Script::Sleep(300),
    });
    let sup = ConsumerSupervisor::new(child)
        .restart(Restart::Transient)
        .on_failure(failures.callback())
        .start()
        .unwrap();
    for n in [1, 2, 3] {
        guard(sup.start_child(n)).await.unwrap();
    }
    sup.stop(Reason::Shutdown).unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(
        failures.texts(),
        [
            ("child 1 failed on call 1".to_string(), false),
            ("panicked: child 2 panicked on call 1".to_string(), false),
        ],
        "not restarted: the supervisor is stopping"
    );
    let children = &report.children;
    assert_eq!(
        (children.failed, children.completed, children.restarted),
        (2, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn no_callback_no_problem() {
    let jobs = stage::from_iter(0..5u64).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, mixed))
        .subscribe_to(&jobs, SubscribeOptions::new())
        .start()
        .unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal);
    assert_eq!(
        report.children.failed, 4,
        "events 1, 2 and 4 in their future, 3 when called"
    );
}
