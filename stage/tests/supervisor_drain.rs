//! How a ConsumerSupervisor stops: on a producer's end (as its subscription's cancel mode
//! says), on `shutdown` and on `stop`, its running children finish by default; the
//! `shutdown(grace)` option bounds the wait, and the children it cancels are counted, logged
//! and reported. The final counts stay readable once it has exited.
//!
//! Every test runs on tokio's paused clock: children sleep in virtual time, and each wait is
//! guarded by a timeout so that a bug fails instead of hanging.

mod supervisor_fixtures;
mod support;

use std::time::Duration;

use stage::{
    CallError, CancelMode, ChildError, ConsumerSupervisor, Reason, Restart, StartChildError,
    SubscribeError, SubscribeOptions,
};
use supervisor_fixtures::{
    Failures, Logs, Probe, Script, emit, guard, new_demands, opts, scripted, silent, sleeper,
};
use support::{Ask, Peer, Seen, Source};
use tokio::time::{Instant, sleep};

// ----- a producer that ends normally -----

/// The case: a 7 s job and a 100 ms job, and the producer ends normally at once.
#[tokio::test(start_paused = true)]
async fn a_producer_end_lets_running_children_finish_by_default() {
    let start = Instant::now();
    let jobs = stage::from_iter([7000u64, 100]).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |ms| ms))
        .subscribe_to(&jobs, opts(10, 0))
        .start()
        .unwrap();
    assert_eq!(sup.final_report(), None, "still running");
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(7),
        "waited for the long job"
    );
    assert_eq!(probe.finished(), [100, 7000]);
    assert_eq!(probe.interrupted(), [0u64; 0]);
    let children = &report.children;
    assert_eq!(
        (children.started, children.completed, children.cancelled),
        (2, 2, 0)
    );
    assert_eq!((children.active, children.restarting), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn with_a_grace_the_children_still_running_at_its_end_are_cancelled_counted_logged_and_reported()
 {
    let logs = Logs::default();
    let _capture = logs.capture();
    let start = Instant::now();
    let jobs = stage::from_iter([7000u64, 100]).start().unwrap();
    let probe = Probe::default();
    let failures = Failures::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |ms| ms))
        .name("jobs")
        .shutdown(Duration::from_secs(1))
        .on_failure(failures.callback())
        .subscribe_to(&jobs, opts(10, 0))
        .start()
        .unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal, "the producer's reason");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(probe.finished(), [100]);
    assert_eq!(probe.interrupted(), [7000]);
    assert_eq!(probe.running(), 0, "no child outlives its supervisor");
    let children = &report.children;
    assert_eq!(
        (children.started, children.completed, children.cancelled),
        (2, 1, 1)
    );
    assert_eq!(children.failed, 0, "a cancelled child has not failed");
    let failures = failures.all();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].error, ChildError::Cancelled);
    assert!(!failures[0].restarting);
    let lines = logs.lines();
    let warned: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains("cancelled=1"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    assert!(warned[0].contains("supervisor=jobs"), "{warned:?}");
}

#[tokio::test(start_paused = true)]
async fn the_final_counts_stay_readable_after_exit() {
    let jobs = stage::from_iter(1..=3u64).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n * 10))
        .subscribe_to(&jobs, opts(2, 0))
        .start()
        .unwrap();
    let running = guard(sup.count_children()).await.unwrap();
    assert_eq!(running.completed, 0, "counts work while it runs");
    assert_eq!(guard(sup.join()).await, Reason::Normal);
    assert_eq!(
        sup.count_children().await,
        Err(CallError::Closed),
        "the supervisor is gone"
    );
    let report = sup.final_report().expect("it has exited");
    assert_eq!(report.reason, Reason::Normal);
    assert_eq!((report.children.started, report.children.completed), (3, 3));
    assert_eq!(guard(sup.join_report()).await, report);
    assert_eq!(
        sup.clone().final_report(),
        Some(report),
        "every handle sees it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_producer_end_cancels_the_other_subscriptions_and_starts_what_is_in_flight() {
    let start = Instant::now();
    let first = silent();
    let second = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .subscribe_to(&first, opts(2, 0))
        .subscribe_to(&second, opts(2, 0).cancel(CancelMode::Temporary))
        .start()
        .unwrap();
    guard(new_demands(&first, &sup)).await;
    emit(&first, [300]);
    emit(&second, [500]);
    guard(sup.count_children()).await.unwrap();
    first.stop(Reason::Normal).unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal);
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(probe.finished(), [300, 500]);
    let log = guard(second.call(Ask::Log)).await.unwrap();
    assert!(
        log.iter().any(|seen| matches!(
            seen,
            Seen::Cancelled(Peer::Consumer, stage::Cancel::Cancelled(Reason::Normal), _)
        )),
        "the supervisor cancelled its other subscription: {log:?}"
    );
    assert!(
        second.is_running(),
        "a producer does not stop with its consumer"
    );
}

// ----- cancel modes -----

#[tokio::test(start_paused = true)]
async fn a_transient_subscription_stops_it_on_an_abnormal_end_once_its_children_are_done() {
    let start = Instant::now();
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .subscribe_to(&p, opts(2, 0).cancel(CancelMode::Transient))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [200, 400]);
    guard(sup.count_children()).await.unwrap();
    let crash = Reason::error("producer crashed");
    p.stop(crash.clone()).unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, crash, "the producer's reason");
    assert_eq!(start.elapsed(), Duration::from_millis(400));
    assert_eq!(report.children.completed, 2);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_permanent_subscription_stops_it_once_its_children_are_done() {
    let start = Instant::now();
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .start()
        .unwrap();
    let id = guard(sup.subscribe(&p, opts(2, 0))).await.unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [250]);
    guard(sup.count_children()).await.unwrap();
    sup.cancel(id, Reason::Normal).unwrap();
    assert_eq!(guard(sup.join()).await, Reason::Normal);
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(probe.finished(), [250]);
}

#[tokio::test(start_paused = true)]
async fn subscribing_to_a_producer_that_is_not_running() {
    let p = silent();
    p.stop(Reason::Normal).unwrap();
    guard(p.join()).await;
    let probe = Probe::default();
    // Temporary: refused, and nothing else happens.
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .start()
        .unwrap();
    let temporary = SubscribeOptions::new().cancel(CancelMode::Temporary);
    assert_eq!(
        guard(sup.subscribe(&p, temporary)).await,
        Err(SubscribeError::ProducerClosed)
    );
    assert!(guard(sup.count_children()).await.is_ok(), "still running");
    // Permanent: refused, and the supervisor stops once its children are done.
    let start = Instant::now();
    guard(sup.start_child(300)).await.unwrap();
    assert_eq!(
        guard(sup.subscribe(&p, SubscribeOptions::new())).await,
        Err(SubscribeError::ProducerClosed)
    );
    assert_eq!(guard(sup.join()).await, Reason::NoProc);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(probe.finished(), [300]);
}

// ----- shutdown -----

#[tokio::test(start_paused = true)]
async fn shutdown_stops_taking_events_and_waits_for_the_running_children() {
    let start = Instant::now();
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 100))
        .subscribe_to(&p, opts(2, 0))
        .start()
        .unwrap();
    guard(tokio::time::sleep_until(start + Duration::from_millis(250))).await;
    sup.shutdown().unwrap();
    let draining = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (draining.active, draining.started),
        (2, 6),
        "it answers calls while it waits"
    );
    assert_eq!(
        guard(sup.start_child(1)).await,
        Err(StartChildError::ShuttingDown)
    );
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Shutdown);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(
        (report.children.started, report.children.completed),
        (6, 6),
        "no child started after the shutdown"
    );
    assert_eq!(probe.finished(), [0, 1, 2, 3, 4, 5]);
    assert!(p.is_running());
    assert!(guard(p.counters()).await.unwrap().consumers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_a_grace_cancels_what_is_left_at_its_end() {
    let start = Instant::now();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .shutdown(Duration::from_secs(2))
        .start()
        .unwrap();
    for ms in [1000, 5000, 9000] {
        guard(sup.start_child(ms)).await.unwrap();
    }
    sup.shutdown().unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Shutdown);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        (report.children.completed, report.children.cancelled),
        (1, 2)
    );
    let mut interrupted = probe.interrupted();
    interrupted.sort_unstable();
    assert_eq!(interrupted, [5000, 9000]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_of_an_idle_supervisor_stops_it_at_once() {
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .start()
        .unwrap();
    sup.shutdown().unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Shutdown);
    assert_eq!(report.children, Default::default());
    assert_eq!(sup.shutdown(), Err(CallError::Closed));
}

/// A child that fails while the supervisor drains is still restarted: its work is not done.
#[tokio::test(start_paused = true)]
async fn a_transient_child_failing_during_the_drain_is_restarted_and_waited_for() {
    let start = Instant::now();
    let jobs = stage::from_iter([1u64]).start().unwrap();
    let probe = Probe::default();
    let child = scripted(&probe, |_, call| match call {
        1 => Script::Fail(100),
        _ => Script::Sleep(100),
    });
    let sup = ConsumerSupervisor::new(child)
        .restart(Restart::Transient)
        .subscribe_to(&jobs, opts(1, 0))
        .start()
        .unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    let children = &report.children;
    assert_eq!(
        (children.failed, children.restarted, children.completed),
        (1, 1, 1)
    );
}

// ----- stop -----

#[tokio::test(start_paused = true)]
async fn stop_gives_the_grace_and_counts_what_it_aborts() {
    let start = Instant::now();
    let probe = Probe::default();
    let failures = Failures::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .shutdown(Duration::from_secs(3))
        .on_failure(failures.callback())
        .start()
        .unwrap();
    for ms in [1000, 2000, 10_000, 20_000] {
        guard(sup.start_child(ms)).await.unwrap();
    }
    sup.stop(Reason::Shutdown).unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Shutdown);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(
        (report.children.completed, report.children.cancelled),
        (2, 2)
    );
    let cancelled = failures.all();
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled.iter().all(|f| f.error == ChildError::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn stop_during_a_drain_keeps_the_drain_deadline() {
    let start = Instant::now();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n))
        .shutdown(Duration::from_secs(3))
        .start()
        .unwrap();
    guard(sup.start_child(10_000)).await.unwrap();
    sup.shutdown().unwrap();
    sleep(Duration::from_secs(1)).await;
    sup.stop(Reason::Normal).unwrap();
    let report = guard(sup.join_report()).await;
    assert_eq!(report.reason, Reason::Normal, "stop's reason");
    assert_eq!(start.elapsed(), Duration::from_secs(3), "not 1 + 3 s");
    assert_eq!(report.children.cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn children_of_a_supervisor_that_panics_are_cancelled_and_counted() {
    let probe = Probe::default();
    let child = scripted(&probe, |n, _| match n {
        1 => Script::Fail(10),
        _ => Script::Sleep(60_000),
    });
    let sup = ConsumerSupervisor::new(child)
        .on_failure(|failure| panic!("the callback panicked on {}", failure.child))
        .start()
        .unwrap();
    guard(sup.start_child(2)).await.unwrap();
    guard(sup.start_child(1)).await.unwrap();
    let report = guard(sup.join_report()).await;
    assert!(
        matches!(&report.reason, Reason::Panic(msg) if msg.contains("the callback panicked")),
        "{:?}",
        report.reason
    );
    assert_eq!((report.children.failed, report.children.cancelled), (1, 1));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(probe.running(), 0, "no child outlives its supervisor");
}
