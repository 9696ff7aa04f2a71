//! ConsumerSupervisor: spec §2.15 (demand accounting, rules 1–6) and the §1.7 items that apply
//! to a Rust child (restart kinds, restart intensity, shutdown, `start_child`,
//! `terminate_child`, `count_children`, `which_children`). Cases ported from upstream's
//! `test/consumer_supervisor_test.exs` keep its names in their doc comments.
//!
//! Every test runs on tokio's paused clock: children sleep in virtual time, calls to the stages
//! are barriers, and each wait is guarded by a timeout so that a bug fails instead of hanging.

mod supervisor_fixtures;
mod support;

use std::time::Duration;

use stage::{
    CancelMode, ChildFailure, ChildState, ConsumerSupervisor, Contract, Dispatcher,
    DispatcherState, Outbox, Reason, Restart, StartChildError, StartError, SubscribeError,
    SubscribeOptions, SubscriptionId, SupervisorHandle, SupervisorReport, TerminateChildError,
};
use supervisor_fixtures::{
    Logs, Probe, Script, emit, guard, new_demands, opts, scripted, silent, sleeper, until,
};
use support::Source;
use tokio::time::{Instant, sleep};

// ----- §2.15 rule 1: subscribe asks max, manual mode -----

#[tokio::test(start_paused = true)]
async fn subscribing_asks_max_demand_at_once() {
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 10))
        .start()
        .unwrap();
    let id = guard(sup.subscribe(&p, opts(5, 2))).await.unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [5]);
    let counters = guard(sup.counters()).await.unwrap();
    assert_eq!(counters.producers, [(id, 5)], "asked 5, received nothing");
}

#[tokio::test(start_paused = true)]
async fn subscribe_to_at_start_asks_max_demand_once_the_supervisor_is_ready() {
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 10))
        .subscribe_to(&p, opts(4, 0))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [4]);
    emit(&p, 1..=4);
    guard(until(Instant::now(), 5)).await;
    assert_eq!(guard(sup.count_children()).await.unwrap().active, 4);
}

// ----- §2.15 rule 2: one child per event, at most max_demand at once -----

/// Upstream: "consumer supervisor starts children up to max demand".
#[tokio::test(start_paused = true)]
async fn at_most_max_demand_children_run_at_once() {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| 5 + n % 7))
        .subscribe_to(&p, opts(3, 1))
        .start()
        .unwrap();
    guard(sleep(Duration::from_secs(1))).await;
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(probe.peak(), 3, "never more than max_demand children");
    assert!(children.active <= 3);
    assert!(
        probe.finished().len() > 100,
        "{} children ran",
        probe.finished().len()
    );
    assert_eq!(children.completed, probe.finished().len() as u64);
    sup.stop(Reason::Shutdown).unwrap();
    assert_eq!(guard(sup.join()).await, Reason::Shutdown);
}

#[tokio::test(start_paused = true)]
async fn each_subscription_has_its_own_slots() {
    let a = stage::producer(Source::counter(0)).start().unwrap();
    let b = stage::producer(Source::counter(1000)).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 10))
        .subscribe_to(&a, opts(2, 0))
        .subscribe_to(&b, opts(3, 0))
        .start()
        .unwrap();
    guard(sleep(Duration::from_millis(95))).await;
    assert_eq!(probe.peak(), 5, "2 from one producer and 3 from the other");
    assert_eq!(guard(sup.count_children()).await.unwrap().active, 5);
    let finished = probe.finished();
    assert_eq!(finished.iter().filter(|&&n| n < 1000).count(), 2 * 9);
    assert_eq!(finished.iter().filter(|&&n| n >= 1000).count(), 3 * 9);
}

/// Upstream: "consumer supervisor ... start errors count as done at once".
#[tokio::test(start_paused = true)]
async fn children_that_fail_to_start_free_their_slot_at_once() {
    let p = silent();
    let probe = Probe::default();
    let child = scripted(&probe, |n, _| {
        if n % 2 == 1 {
            Script::PanicOnStart
        } else {
            Script::Sleep(1000)
        }
    });
    let sup = ConsumerSupervisor::new(child)
        .subscribe_to(&p, opts(4, 1))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [4]);
    emit(&p, 1..=4);
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [2],
        "two slots freed at once"
    );
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (children.active, children.started, children.failed),
        (2, 2, 2)
    );
}

/// A producer whose dispatcher ignores demand, to make a consumer receive events in excess.
#[derive(Debug, Default)]
struct Flood(Vec<SubscriptionId>);

impl<T: Send + 'static> Dispatcher<T> for Flood {
    fn contract(&self) -> Contract {
        Contract::Any
    }
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Outbox<T>,
    ) -> Result<(), SubscribeError> {
        self.0.push(id);
        Ok(())
    }
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, _: &mut Outbox<T>) -> Vec<T> {
        self.0.retain(|s| *s != id);
        returned
    }
    fn ask(&mut self, _: SubscriptionId, n: usize, out: &mut Outbox<T>) {
        out.demand(n);
    }
    fn capacity(&self) -> usize {
        usize::from(!self.0.is_empty()) * usize::MAX
    }
    fn dispatch(&mut self, events: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        match self.0.first() {
            Some(id) => {
                out.send(*id, events);
                Vec::new()
            }
            None => events,
        }
    }
    fn hold(&mut self, _: u64) -> bool {
        false
    }
    fn state(&self) -> DispatcherState {
        DispatcherState::default()
    }
}

/// Upstream: "ConsumerSupervisor has received N events in excess".
#[tokio::test(start_paused = true)]
async fn events_in_excess_are_reported_and_still_started() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let p = stage::producer(Source::silent())
        .dispatcher(Flood::default())
        .start()
        .unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 1000))
        .subscribe_to(&p, opts(2, 1))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, 1..=5);
    guard(new_demands(&p, &sup)).await;
    assert_eq!(guard(sup.count_children()).await.unwrap().active, 5);
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("in excess") && l.contains("excess=3")),
        "{lines:#?}"
    );
}

// ----- §2.15 rules 3 and 5: freed slots and min_demand -----

/// Upstream: "consumer supervisor with max 3 / min 2": three children run; one exits (no ask);
/// a second exits, so ask(2).
#[tokio::test(start_paused = true)]
async fn max_3_min_2_asks_two_once_two_children_have_exited() {
    let start = Instant::now();
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let probe = Probe::default();
    // Event n runs (n + 1) * 10 ms: 0 ends at 10 ms, 1 at 20 ms, 2 at 30 ms.
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| (n + 1) * 10))
        .subscribe_to(&p, opts(3, 2))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [3]);
    guard(until(start, 15)).await;
    assert_eq!(probe.finished(), [0]);
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [0usize; 0],
        "one free slot: no ask"
    );
    assert_eq!(guard(sup.count_children()).await.unwrap().active, 2);
    guard(until(start, 25)).await;
    assert_eq!(probe.finished(), [0, 1]);
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [2],
        "two free slots: ask 2"
    );
    assert_eq!(guard(sup.count_children()).await.unwrap().active, 3);
}

#[tokio::test(start_paused = true)]
async fn min_0_asks_one_for_each_freed_slot() {
    let start = Instant::now();
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| (n + 1) * 10))
        .subscribe_to(&p, opts(2, 0))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [2]);
    guard(until(start, 15)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [1], "child 0 ended");
    guard(until(start, 25)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [1], "child 1 ended");
    guard(until(start, 1000)).await;
    let asks = guard(new_demands(&p, &sup)).await;
    assert_eq!(asks.len(), probe.finished().len() - 2);
    assert!(asks.iter().all(|&n| n == 1), "{asks:?}");
}

/// Not GenStage's `max_demand / 2`: a supervisor's `min_demand` defaults to 0.
#[tokio::test(start_paused = true)]
async fn min_demand_defaults_to_0_so_each_freed_slot_is_asked_for_at_once() {
    let start = Instant::now();
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| (n + 1) * 10))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(4))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [4]);
    guard(until(start, 15)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [1], "child 0 ended");
    guard(until(start, 25)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [1], "child 1 ended");
    assert_eq!(guard(sup.count_children()).await.unwrap().active, 4);
}

#[tokio::test(start_paused = true)]
async fn a_min_demand_given_is_kept() {
    let start = Instant::now();
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| (n + 1) * 10))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(4).min_demand(2))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [4]);
    guard(until(start, 15)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [0usize; 0]);
    guard(until(start, 25)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [2]);
}

// ----- §2.15 rule 4 and §1.7: restart kinds -----

#[tokio::test(start_paused = true)]
async fn temporary_children_are_reported_and_not_restarted() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, |_, _| Script::Fail(10)))
        .subscribe_to(&p, opts(1, 0))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [7]);
    guard(sleep(Duration::from_millis(50))).await;
    assert_eq!(probe.calls(7), 1, "not restarted");
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (children.active, children.failed, children.restarted),
        (0, 1, 0)
    );
    assert_eq!(guard(new_demands(&p, &sup)).await, [1], "the slot is freed");
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERROR") && l.contains("child 7 failed on call 1")),
        "{lines:#?}"
    );
}

/// Upstream: "restarting children counted in max_demand" (issue 191).
#[tokio::test(start_paused = true)]
async fn transient_children_are_restarted_on_error_or_panic_and_keep_their_slot() {
    let start = Instant::now();
    let p = silent();
    let probe = Probe::default();
    let child = scripted(&probe, |_, call| match call {
        1 => Script::Fail(10),
        2 => Script::Panic(10),
        _ => Script::Sleep(10),
    });
    let sup = ConsumerSupervisor::new(child)
        .restart(Restart::Transient)
        .subscribe_to(&p, opts(1, 0))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [1]);
    emit(&p, [7]);
    guard(until(start, 15)).await;
    assert_eq!(probe.calls(7), 2, "restarted after its error");
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [0usize; 0],
        "a restart keeps its slot"
    );
    guard(until(start, 25)).await;
    assert_eq!(probe.calls(7), 3, "restarted after its panic");
    assert_eq!(guard(new_demands(&p, &sup)).await, [0usize; 0]);
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (children.active, children.restarted, children.failed),
        (1, 2, 2)
    );
    guard(until(start, 100)).await;
    assert_eq!(probe.calls(7), 3, "a child that succeeds is done");
    assert_eq!(probe.finished(), [7, 7], "the error run and the last one");
    assert_eq!(probe.interrupted(), [7], "the panic run");
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [1],
        "its slot is freed at last"
    );
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (children.active, children.started, children.completed),
        (0, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_that_fails_to_start_is_retried_in_the_same_slot() {
    let p = silent();
    let probe = Probe::default();
    let child = scripted(&probe, |_, call| match call {
        1 => Script::Fail(10),
        2 => Script::PanicOnStart,
        _ => Script::Sleep(10),
    });
    let sup = ConsumerSupervisor::new(child)
        .restart(Restart::Transient)
        .max_restarts(5)
        .subscribe_to(&p, opts(1, 0))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [3]);
    guard(sleep(Duration::from_millis(15))).await;
    assert_eq!(probe.calls(3), 3, "failed, failed to restart, retried");
    assert_eq!(guard(new_demands(&p, &sup)).await, [0usize; 0]);
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (
            children.active,
            children.restarting,
            children.restarted,
            children.failed
        ),
        (1, 0, 1, 2)
    );
    guard(sleep(Duration::from_millis(15))).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [1]);
}

// ----- §1.7: restart intensity -----

/// Upstream: "consumer supervisor exits :shutdown on max restarts".
#[tokio::test(start_paused = true)]
async fn exceeding_max_restarts_within_max_seconds_stops_with_shutdown() {
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, |_, _| Script::Fail(10)))
        .restart(Restart::Transient)
        .max_restarts(3)
        .max_seconds(Duration::from_secs(5))
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [1]);
    assert_eq!(guard(sup.join()).await, Reason::Shutdown);
    assert_eq!(probe.calls(1), 4, "the first run and three restarts");
    assert!(p.is_running(), "the producer does not care");
}

#[tokio::test(start_paused = true)]
async fn failed_restart_attempts_count_towards_the_intensity() {
    let p = silent();
    let probe = Probe::default();
    let child = scripted(&probe, |_, call| match call {
        1 => Script::Fail(10),
        _ => Script::PanicOnStart,
    });
    let sup = ConsumerSupervisor::new(child)
        .restart(Restart::Transient)
        .max_restarts(2)
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [1]);
    assert_eq!(guard(sup.join()).await, Reason::Shutdown);
    assert_eq!(
        probe.calls(1),
        3,
        "the run and two failed restarts; the third is refused"
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_spread_wider_than_max_seconds_never_stop_it() {
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(scripted(&probe, |_, _| Script::Fail(6_000)))
        .restart(Restart::Transient)
        .max_restarts(1)
        .max_seconds(Duration::from_secs(5))
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [1]);
    guard(sleep(Duration::from_secs(59))).await;
    assert!(sup.is_running());
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!((children.active, children.restarted), (1, 9));
}

#[tokio::test(start_paused = true)]
async fn invalid_options_are_rejected_by_name() {
    let probe = Probe::default();
    let err = ConsumerSupervisor::new(sleeper(&probe, |_| 1))
        .max_seconds(Duration::ZERO)
        .start()
        .unwrap_err();
    let StartError::Option(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.option, "max_seconds");
    let p = silent();
    let err = ConsumerSupervisor::new(sleeper(&probe, |_| 1))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(0))
        .start()
        .unwrap_err();
    assert!(
        matches!(err, StartError::Option(ref e) if e.option == "max_demand"),
        "{err:?}"
    );
    p.stop(Reason::Normal).unwrap();
    guard(p.join()).await;
    let err = ConsumerSupervisor::new(sleeper(&probe, |_| 1))
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap_err();
    assert_eq!(err, StartError::ProducerClosed);
}

// ----- §1.7: start_child, terminate_child, count_children, which_children -----

/// Upstream: "start_child/2" (children started outside demand accounting).
#[tokio::test(start_paused = true)]
async fn start_child_runs_outside_demand_accounting() {
    let start = Instant::now();
    let p = silent();
    let probe = Probe::default();
    let child = scripted(&probe, |n, _| match n {
        13 => Script::PanicOnStart,
        _ => Script::Sleep(n),
    });
    let sup = ConsumerSupervisor::new(child)
        .subscribe_to(&p, opts(1, 0))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [1]);
    emit(&p, [100]);
    let dynamic = guard(sup.start_child(50)).await.unwrap();
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (children.active, children.started),
        (2, 2),
        "beyond max_demand 1"
    );
    assert!(
        guard(sup.which_children())
            .await
            .unwrap()
            .contains(&(dynamic, ChildState::Running))
    );
    guard(until(start, 75)).await;
    assert_eq!(probe.finished(), [50]);
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [0usize; 0],
        "no slot to free"
    );
    guard(until(start, 150)).await;
    assert_eq!(guard(new_demands(&p, &sup)).await, [1]);
    let err = guard(sup.start_child(13)).await.unwrap_err();
    assert!(
        matches!(&err, StartChildError::Panicked(msg) if msg.contains("cannot start a child for 13")),
        "{err:?}"
    );
}

/// Upstream: "terminate_child/2" (`:ok`, then `{:error, :not_found}`).
#[tokio::test(start_paused = true)]
async fn terminate_child_frees_its_slot_and_then_is_not_found() {
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 3_600_000))
        .restart(Restart::Transient)
        .subscribe_to(&p, opts(1, 0))
        .start()
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [1]);
    emit(&p, [1, 2]);
    guard(new_demands(&p, &sup)).await;
    let which = guard(sup.which_children()).await.unwrap();
    assert_eq!(which.len(), 1);
    let (first, state) = which[0];
    assert_eq!(state, ChildState::Running);
    guard(sup.terminate_child(first)).await.unwrap();
    assert_eq!(probe.interrupted(), [1], "aborted, and not restarted");
    // The slot is asked for again: the producer sends event 2 from its buffer.
    guard(p.counters()).await.unwrap();
    let which = guard(sup.which_children()).await.unwrap();
    assert_eq!(which.len(), 1, "event 2 took the slot");
    assert_ne!(which[0].0, first);
    assert_eq!(
        guard(sup.terminate_child(first)).await,
        Err(TerminateChildError::NotFound(first))
    );
    let dynamic = guard(sup.start_child(3)).await.unwrap();
    guard(sup.terminate_child(dynamic)).await.unwrap();
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [0usize; 0],
        "a dynamic child holds no slot"
    );
    let children = guard(sup.count_children()).await.unwrap();
    assert_eq!(
        (
            children.active,
            children.started,
            children.completed,
            children.failed
        ),
        (1, 3, 0, 0)
    );
}

// ----- §2.15 rule 6 and §1.7: producer death, shutdown -----

/// Upstream: "children are not killed when the producer exits".
#[tokio::test(start_paused = true)]
async fn children_outlive_a_producer_that_ends_under_a_transient_or_temporary_subscription() {
    for (mode, reason) in [
        (CancelMode::Transient, Reason::Normal),
        (CancelMode::Temporary, Reason::error("producer crashed")),
    ] {
        let start = Instant::now();
        let p = silent();
        let probe = Probe::default();
        let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 1000))
            .subscribe_to(&p, opts(2, 0).cancel(mode))
            .start()
            .unwrap();
        guard(new_demands(&p, &sup)).await;
        emit(&p, [1, 2]);
        guard(sup.count_children()).await.unwrap();
        p.stop(reason.clone()).unwrap();
        assert_eq!(guard(p.join()).await, reason);
        assert_eq!(
            guard(sup.count_children()).await.unwrap().active,
            2,
            "{mode:?}"
        );
        guard(until(start, 1500)).await;
        assert!(sup.is_running(), "{mode:?}");
        let children = guard(sup.count_children()).await.unwrap();
        assert_eq!((children.active, children.completed), (0, 2), "{mode:?}");
        assert_eq!(probe.finished(), [1, 2]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_permanent_producer_end_stops_the_supervisor_once_its_children_are_done() {
    let start = Instant::now();
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n * 1000))
        .subscribe_to(&p, opts(3, 1))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [1, 2]);
    guard(sup.count_children()).await.unwrap();
    p.stop(Reason::Normal).unwrap();
    assert_eq!(guard(sup.join()).await, Reason::Normal);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "waited for the slower child"
    );
    assert_eq!(probe.finished(), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn children_still_running_after_the_shutdown_grace_are_aborted() {
    let start = Instant::now();
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |n| n * 1000))
        .shutdown(Duration::from_secs(3))
        .subscribe_to(&p, opts(5, 1))
        .start()
        .unwrap();
    guard(new_demands(&p, &sup)).await;
    emit(&p, [1, 2, 10, 20]);
    guard(sup.count_children()).await.unwrap();
    sup.stop(Reason::Shutdown).unwrap();
    assert_eq!(guard(sup.join()).await, Reason::Shutdown);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(probe.finished(), [1, 2]);
    let mut interrupted = probe.interrupted();
    interrupted.sort_unstable();
    assert_eq!(interrupted, [10, 20]);
    assert_eq!(probe.running(), 0, "no child outlives its supervisor");
    assert!(matches!(
        sup.count_children().await,
        Err(stage::CallError::Closed)
    ));
    assert_eq!(sup.start_child(1).await, Err(StartChildError::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_zero_shutdown_aborts_children_at_once() {
    let start = Instant::now();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 1000))
        .shutdown(Duration::ZERO)
        .name("brutal")
        .start()
        .unwrap();
    assert_eq!(sup.name(), "brutal");
    guard(sup.start_child(1)).await.unwrap();
    guard(sup.start_child(2)).await.unwrap();
    sup.stop(Reason::Normal).unwrap();
    assert_eq!(guard(sup.join()).await, Reason::Normal);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(probe.interrupted().len(), 2);
    assert_eq!(sup.exit_reason(), Some(Reason::Normal));
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_subscription_keeps_its_children_and_stops_its_asks() {
    let p = silent();
    let probe = Probe::default();
    let sup = ConsumerSupervisor::new(sleeper(&probe, |_| 100))
        .start()
        .unwrap();
    let id = guard(sup.subscribe(&p, opts(2, 0).cancel(CancelMode::Temporary)))
        .await
        .unwrap();
    assert_eq!(guard(new_demands(&p, &sup)).await, [2]);
    emit(&p, [1, 2]);
    guard(sup.count_children()).await.unwrap();
    sup.cancel(id, Reason::Normal).unwrap();
    guard(sleep(Duration::from_millis(200))).await;
    assert_eq!(probe.finished(), [1, 2]);
    assert_eq!(
        guard(new_demands(&p, &sup)).await,
        [0usize; 0],
        "no producer to ask"
    );
    assert!(sup.is_running());
}

#[test]
fn handles_are_send_sync_clone_and_debug() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<SupervisorHandle<String>>();
    check::<SupervisorReport>();
    check::<ChildFailure>();
    fn send<T: Send>() {}
    send::<ConsumerSupervisor<String>>();
}
