//! Event time across layers: watermarks that travel with the data, to every stage of a
//! fixed-window layer (the two defects of issue 12 as regression tests), the idle-input
//! timeout, and late events consumed as they happen.
//!
//! Every test runs on tokio's paused clock: sources built with `timed` place their events at
//! fixed points of virtual time, and each flow is guarded by a (virtual) timeout.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow::{Flow, Partition, Trigger, TriggerName, Window};
use support::{since, timed};
use tokio::time::Instant;

/// How long (virtual time) a flow may take before the test calls it hung.
const LIMIT: Duration = Duration::from_secs(3600);

const SECOND: Duration = Duration::from_secs(1);

async fn run<T: Send + 'static>(flow: Flow<T>) -> Vec<T> {
    tokio::time::timeout(LIMIT, flow.collect())
        .await
        .expect("the flow hung")
        .expect("the flow failed")
}

/// One trigger: stage, window start, trigger, events counted, virtual time (ms).
type Fired = (usize, u64, TriggerName, u64, u64);

/// An `on_trigger` over a count that records each trigger with its virtual time.
fn record(start: Instant) -> impl Fn(&mut u64, &Trigger) -> Vec<Fired> + Send + Sync + 'static {
    move |n: &mut u64, t: &Trigger| vec![(t.partition, t.window, t.name.clone(), *n, since(start))]
}

/// Collects late events with the virtual time they were reported at.
#[derive(Clone, Default)]
struct Late(Arc<Mutex<Vec<(u64, u64)>>>);

impl Late {
    fn window(&self, start: Instant, window: Window<u64>) -> Window<u64> {
        let late = self.clone();
        window.on_late(move |events: Vec<u64>| {
            let at = since(start);
            late.0
                .lock()
                .unwrap()
                .extend(events.into_iter().map(|t| (t, at)));
        })
    }

    fn events(&self) -> Vec<(u64, u64)> {
        self.0.lock().unwrap().clone()
    }
}

/// Events that are their own time: `t % 1000 < 500` to stage 0, the rest to stage 1.
fn halves() -> Partition<u64> {
    Partition::by_hash(|t: &u64| usize::from(t % 1000 >= 500)).stages(2)
}

/// The events counted per window start, over every stage.
fn totals(got: &[Fired]) -> Vec<(u64, u64)> {
    let mut per: std::collections::BTreeMap<u64, u64> = Default::default();
    for (_, w, name, n, _) in got {
        if *name == TriggerName::Done {
            *per.entry(*w).or_default() += n;
        }
    }
    per.into_iter().filter(|(_, n)| *n > 0).collect()
}

// ----- defect 1: a source without operations no longer hides its producers' watermarks -----

/// `from_stages([a, b]).partition(..).window(fixed)`: `a` runs ahead of `b` in event time,
/// and both send most of their events to stage 0. Every event is on time for its own
/// producer's progress, so none may be late: each producer keeps its own watermark (one relay
/// stage each), and a window closes once both have passed it. (A layer of stages between the
/// producers and the partition, each reading both, mixed their progress and dropped `b`'s
/// 1100 as late.)
#[tokio::test(start_paused = true)]
async fn from_stages_then_partition_keeps_each_producers_watermark() {
    let start = Instant::now();
    let a = timed(
        vec![(0, 0u64), (10, 1200), (20, 2400), (30, 3300)],
        Some(300),
    );
    let b = vec![
        (0, 100u64),
        (100, 1100),
        (120, 1600),
        (150, 2100),
        (200, 3100),
    ];
    let a = stage::from_stream(a).start().unwrap();
    let b = stage::from_stream(timed(b, None)).start().unwrap();
    let late = Late::default();
    let got = run(Flow::from_stages([a.producer(), b.producer()])
        .partition(halves())
        .window(late.window(start, Window::fixed(SECOND, |t: &u64| *t)))
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(record(start)))
    .await;
    assert_eq!(late.events(), [], "on-time events reported late");
    assert_eq!(totals(&got), [(0, 2), (1000, 3), (2000, 2), (3000, 2)]);
    let closes: Vec<(usize, u64)> = got
        .iter()
        .filter(|f| f.1 == 0 && f.2 == TriggerName::Done && f.3 > 0)
        .map(|f| (f.0, f.4))
        .collect();
    assert_eq!(closes, [(0, 100)], "window 0 closes when `b` passes it");
}

/// The same with the flow's own sources, and through a mapping layer of several stages.
#[tokio::test(start_paused = true)]
async fn a_layer_between_the_sources_and_the_windows_keeps_their_watermarks() {
    let start = Instant::now();
    let a = timed(
        vec![(0, 0u64), (10, 1200), (20, 2400), (30, 3300)],
        Some(300),
    );
    let b = vec![
        (0, 100u64),
        (100, 1100),
        (120, 1600),
        (150, 2100),
        (200, 3100),
    ];
    let late = Late::default();
    let got = run(Flow::from_streams([a, timed(b, None)])
        .stages(1)
        .map(|t| t + 1)
        .partition(halves())
        .window(late.window(start, Window::fixed(SECOND, |t: &u64| *t)))
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(record(start)))
    .await;
    assert_eq!(late.events(), []);
    assert_eq!(totals(&got), [(0, 2), (1000, 3), (2000, 2), (3000, 2)]);
}

// ----- defect 2: idle partitions close their windows, and late events are late -----

/// Stage 1 gets one event (at 600 ms of event time) and nothing after. It still closes its
/// window 0 as soon as the source passes it, not when the source ends.
#[tokio::test(start_paused = true)]
async fn a_partition_that_gets_no_more_events_still_closes_its_windows() {
    let start = Instant::now();
    let events = vec![(0, 0u64), (5, 600), (10, 1200), (20, 2100), (30, 3300)];
    let got = run(Flow::from_stream(timed(events, Some(500)))
        .partition(halves())
        .window(Window::fixed(SECOND, |t: &u64| *t))
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(record(start)))
    .await;
    let stage1: Vec<&Fired> = got.iter().filter(|f| f.0 == 1 && f.3 > 0).collect();
    assert_eq!(
        stage1,
        [&(1, 0, TriggerName::Done, 1, 10)],
        "closed when the source reached window 1 (at 10 ms), not at its end (500 ms)"
    );
    // Then it closes the (empty) windows the source passes, as they pass.
    let gaps: Vec<(u64, u64)> = got
        .iter()
        .filter(|f| f.0 == 1 && f.3 == 0)
        .map(|f| (f.1, f.4))
        .collect();
    assert_eq!(gaps, [(1000, 20), (2000, 30)]);
    assert_eq!(totals(&got), [(0, 2), (1000, 1), (2000, 1), (3000, 1)]);
}

/// The case issue 12 reports: 1 s windows with 100 ms of allowed lateness over 2 stages. The
/// source passes window 0 at 10 ms, so window 0 is done at 110 ms in every stage; an event
/// of window 0 arriving at 385 ms (275 ms after that) is late, as it is with one stage.
#[tokio::test(start_paused = true)]
async fn a_late_event_is_late_in_a_partition_too() {
    for stages in [1, 2] {
        let start = Instant::now();
        let late = Late::default();
        let events = vec![(0, 0u64), (10, 1500), (385, 200), (400, 2100)];
        let window =
            Window::fixed(SECOND, |t: &u64| *t).allowed_lateness(Duration::from_millis(100));
        let got = run(Flow::from_stream(timed(events, None))
            .partition(Partition::by_hash(|t: &u64| usize::from(t % 1000 >= 500)).stages(stages))
            .window(late.window(start, window))
            .reduce(|| 0u64, |n, _| *n += 1)
            .on_trigger(record(start)))
        .await;
        assert_eq!(late.events(), [(200, 385)], "{stages} stages");
        let done0: Vec<&Fired> = got
            .iter()
            .filter(|f| f.1 == 0 && f.2 == TriggerName::Done && f.3 > 0)
            .collect();
        assert_eq!(
            done0,
            [&(0, 0, TriggerName::Done, 1, 110)],
            "{stages} stages"
        );
    }
}

// ----- the idle-input timeout -----

/// Two sources; one sends an event at the start and then nothing until it ends at 5 s. By
/// default it holds every window open until then; with a 300 ms idle timeout it is left out
/// after 300 ms, and comes back (with its old events late) when it sends again.
#[tokio::test(start_paused = true)]
async fn an_idle_source_holds_windows_open_only_until_the_idle_timeout() {
    let busy = || {
        timed(
            vec![(0, 0u64), (50, 1500), (100, 2500), (150, 3500)],
            Some(5000),
        )
    };
    let quiet = || timed(vec![(0, 100u64), (4000, 1200), (4100, 4600)], None);
    for idle in [None, Some(Duration::from_millis(300))] {
        let start = Instant::now();
        let late = Late::default();
        let mut window = Window::fixed(SECOND, |t: &u64| *t);
        if let Some(idle) = idle {
            window = window.idle_timeout(idle);
        }
        let got = run(Flow::from_streams([busy(), quiet()])
            .partition(Partition::new().stages(2))
            .window(late.window(start, window))
            .reduce(|| 0u64, |n, _| *n += 1)
            .on_trigger(record(start)))
        .await;
        let first_close = got
            .iter()
            .filter(|f| f.1 == 0 && f.2 == TriggerName::Done && f.3 > 0)
            .map(|f| f.4)
            .next();
        match idle {
            None => {
                assert_eq!(first_close, Some(4000), "held open by the quiet source");
                assert_eq!(late.events(), []);
                assert_eq!(
                    totals(&got),
                    [(0, 2), (1000, 2), (2000, 1), (3000, 1), (4000, 1)]
                );
            }
            Some(_) => {
                assert_eq!(first_close, Some(300), "left out after 300 ms of silence");
                assert_eq!(late.events(), [(1200, 4000)], "back with an old event");
                assert_eq!(
                    totals(&got),
                    [(0, 2), (1000, 1), (2000, 1), (3000, 1), (4000, 1)]
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_on_another_window_or_of_zero_is_an_option_error() {
    let bad = |w: Window<u64>| {
        Flow::from_iter([1u64])
            .stages(1)
            .window(w)
            .reduce(|| 0, |n, _| *n += 1)
            .emit_state()
    };
    for (window, option) in [
        (Window::global().idle_timeout(SECOND), "idle_timeout"),
        (
            Window::fixed(SECOND, |t: &u64| *t).idle_timeout(Duration::ZERO),
            "idle_timeout",
        ),
        (Window::count(3).on_late(|_| ()), "on_late"),
    ] {
        match tokio::time::timeout(LIMIT, bad(window).collect()).await {
            Ok(Err(e)) => match e.into_kind() {
                flow::ErrorKind::Option(e) => assert_eq!(e.option, option),
                other => panic!("expected an option error, got {other:?}"),
            },
            other => panic!("expected an option error, got {other:?}"),
        }
    }
}

// ----- late events as they happen -----

/// `on_late` runs when the late event arrives, not at the end.
#[tokio::test(start_paused = true)]
async fn late_events_are_reported_as_they_arrive() {
    let start = Instant::now();
    let late = Late::default();
    let events = vec![(0, 0u64), (10, 1500), (20, 200), (30, 2600), (40, 700)];
    let got = run(Flow::from_stream(timed(events, Some(1000)))
        .stages(1)
        .window(late.window(start, Window::fixed(SECOND, |t: &u64| *t)))
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(record(start)))
    .await;
    assert_eq!(late.events(), [(200, 20), (700, 40)]);
    assert_eq!(totals(&got), [(0, 1), (1000, 1), (2000, 1)]);
}

/// A panic in `on_late` fails the flow, it does not hang it.
#[tokio::test(start_paused = true)]
async fn a_panic_in_on_late_fails_the_flow() {
    let window = Window::fixed(SECOND, |t: &u64| *t).on_late(|_| panic!("late broke"));
    let result = tokio::time::timeout(
        LIMIT,
        Flow::from_iter([0u64, 1500, 200])
            .stages(1)
            .max_demand(1)
            .window(window)
            .reduce(|| 0u64, |n, _| *n += 1)
            .emit_state()
            .collect(),
    )
    .await
    .expect("the flow hung");
    support::assert_panicked(result, "late broke");
}
