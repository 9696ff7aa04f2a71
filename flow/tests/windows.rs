//! Windows and triggers (Flow rules R4, T1–T3, W-G1, W-C1, W-P1, W-F1–W-F8, W-X) and
//! `departition` / `take_sort` per window (DP1–DP6).
//!
//! Every test runs on tokio's paused clock: periodic windows, `trigger_periodically` and
//! allowed lateness are driven by tokio timers inside the stages, and sources built with
//! [`timed`] place their events at fixed points of virtual time. Flows are guarded by a
//! (virtual) timeout so a hang fails instead of blocking.

use std::time::Duration;

mod support;

use flow::{ErrorKind, Flow, LateEvents, Partition, Trigger, TriggerName, Window, WindowType};
use support::timed;
use tokio::time::Instant;

// ----- helpers -----

/// How long (virtual time) a flow may take before the test calls it hung.
const LIMIT: Duration = Duration::from_secs(3 * 3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs a flow to the end and returns what it emitted.
async fn run<T: Send + 'static>(flow: Flow<T>) -> Vec<T> {
    tokio::time::timeout(LIMIT, flow.collect())
        .await
        .expect("the flow hung")
        .expect("the flow failed")
}

/// Runs a flow expected to fail when it starts and returns the error's kind.
async fn run_err<T: Send + std::fmt::Debug + 'static>(flow: Flow<T>) -> ErrorKind {
    match tokio::time::timeout(LIMIT, flow.collect())
        .await
        .expect("the flow hung")
    {
        Ok(v) => panic!("expected the flow to fail, it emitted {v:?}"),
        Err(e) => e.into_kind(),
    }
}

/// The option an [`ErrorKind::Option`] names.
fn option_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Option(e) => e.option,
        other => panic!("expected an option error, got {other:?}"),
    }
}

/// Batches of exactly 5 (`max_demand 5, min_demand 0`) or the defaults (one big batch).
#[derive(Clone, Copy, Debug)]
enum Demand {
    Small,
    Large,
}

const DEMANDS: [Demand; 2] = [Demand::Small, Demand::Large];

fn pin<T: Send + 'static>(flow: Flow<T>, demand: Demand) -> Flow<T> {
    match demand {
        Demand::Small => flow.max_demand(5).min_demand(0),
        Demand::Large => flow,
    }
}

/// One trigger as seen by `on_trigger`: which window, which trigger, the acc at that point
/// and the virtual time (ms since the flow was built).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fired<A> {
    window: u64,
    name: TriggerName,
    acc: A,
    at: u64,
}

fn fired<A>(window: u64, name: TriggerName, acc: A, at: u64) -> Fired<A> {
    Fired {
        window,
        name,
        acc,
        at,
    }
}

/// An `on_trigger` that records each trigger (keeping the acc as it is).
fn record<A: Clone + Send + 'static>()
-> impl Fn(&mut A, &Trigger) -> Vec<Fired<A>> + Send + Sync + 'static {
    let start = Instant::now();
    move |acc: &mut A, t: &Trigger| {
        vec![Fired {
            window: t.window,
            name: t.name.clone(),
            acc: acc.clone(),
            at: start.elapsed().as_millis() as u64,
        }]
    }
}

/// The `(window, name)` pairs of a record, dropping the accs and times.
fn names<A>(got: &[Fired<A>]) -> Vec<(u64, TriggerName)> {
    got.iter().map(|f| (f.window, f.name.clone())).collect()
}

fn accs<A: Clone>(got: &[Fired<A>]) -> Vec<A> {
    got.iter().map(|f| f.acc.clone()).collect()
}

fn sum(acc: &mut u64, x: u64) {
    *acc += x;
}

fn push(acc: &mut Vec<u64>, x: u64) {
    acc.push(x);
}

const DONE: TriggerName = TriggerName::Done;

fn every(n: usize) -> TriggerName {
    TriggerName::Every(n)
}

const WATERMARK: TriggerName = TriggerName::Watermark;

const SECOND: Duration = Duration::from_secs(1);

/// A fixed window of 1 s over events that are their own timestamp in ms.
fn fixed_1s() -> Window<u64> {
    Window::fixed(SECOND, |t: &u64| *t)
}

// ----- W-G1, T1: the global window and trigger_every -----

/// 1..=100 in one global-window stage with `trigger_every(10)`, either straight from the
/// source or through `partition(stages 1)`.
fn global_every_10(demand: Demand, partitioned: bool) -> Flow<u64> {
    let flow = if partitioned {
        Flow::from_iter(1..=100u64).partition(Partition::new().stages(1))
    } else {
        Flow::from_iter(1..=100u64).stages(1)
    };
    pin(flow, demand).window(Window::global().trigger_every(10))
}

#[tokio::test(start_paused = true)]
async fn w_g1_trigger_every_with_emit_state_is_cumulative() {
    for demand in DEMANDS {
        for partitioned in [false, true] {
            let got = run(global_every_10(demand, partitioned)
                .reduce(|| 0u64, sum)
                .emit_state())
            .await;
            assert_eq!(
                got,
                [55, 210, 465, 820, 1275, 1830, 2485, 3240, 4095, 5050, 5050],
                "{demand:?}, partitioned: {partitioned}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn w_g1_trigger_every_resetting_the_acc_gives_per_interval_sums() {
    let expected: Vec<u64> = (0..10)
        .map(|k| (k * 10 + 1..=k * 10 + 10).sum())
        .chain([0])
        .collect();
    assert_eq!(expected[..3], [55, 155, 255]);
    for demand in DEMANDS {
        for partitioned in [false, true] {
            let got = run(global_every_10(demand, partitioned)
                .reduce(|| 0u64, sum)
                .on_trigger(|acc: &mut u64, _: &Trigger| vec![std::mem::take(acc)]))
            .await;
            assert_eq!(got, expected, "{demand:?}, partitioned: {partitioned}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn w_g1_trigger_names_and_fields_of_the_global_window() {
    let got = run(global_every_10(Demand::Small, true)
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.clone(), *acc)]))
    .await;
    assert_eq!(got.len(), 11);
    for (i, (t, acc)) in got.iter().enumerate() {
        assert_eq!(t.window_type, WindowType::Global);
        assert_eq!(t.window, 0);
        assert_eq!((t.partition, t.partitions), (0, 1));
        if i < 10 {
            assert_eq!(t.name, every(10), "trigger {i}");
            assert!(!t.is_done());
        } else {
            assert_eq!(t.name, DONE);
            assert!(t.is_done());
        }
        let n = (i as u64 + 1).min(10) * 10;
        assert_eq!(*acc, n * (n + 1) / 2);
    }
}

/// T1 example: `trigger_every` counts the raw events entering the stage, before the filter.
#[tokio::test(start_paused = true)]
async fn t1_trigger_every_counts_events_before_the_layer_s_filter() {
    for demand in [Demand::Small, Demand::Large] {
        let flow = pin(
            Flow::from_iter(1..=20u64).partition(Partition::new().stages(1)),
            demand,
        );
        let got = run(flow
            .window(Window::global().trigger_every(5))
            .filter(|x| x % 2 == 0)
            .reduce(|| 0u64, sum)
            .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.name.clone(), std::mem::take(acc))]))
        .await;
        assert_eq!(
            got,
            [
                (every(5), 6),
                (every(5), 24),
                (every(5), 26),
                (every(5), 54),
                (DONE, 0)
            ],
            "{demand:?}"
        );
    }
}

/// T1: batches are split to fire right after the n-th event, whatever the batch size.
#[tokio::test(start_paused = true)]
async fn t1_trigger_every_does_not_depend_on_batch_size() {
    for max in [1, 2, 3, 5, 7, 1000] {
        let got = run(Flow::from_iter(1..=20u64)
            .stages(1)
            .max_demand(max)
            .min_demand(0)
            .window(Window::global().trigger_every(5))
            .reduce(Vec::new, push)
            .on_trigger(|acc: &mut Vec<u64>, _: &Trigger| vec![std::mem::take(acc)]))
        .await;
        assert_eq!(
            got,
            [
                vec![1, 2, 3, 4, 5],
                vec![6, 7, 8, 9, 10],
                vec![11, 12, 13, 14, 15],
                vec![16, 17, 18, 19, 20],
                vec![],
            ],
            "max_demand {max}"
        );
    }
}

/// T1 / W-X: the count is per stage; each stage fires its own triggers.
#[tokio::test(start_paused = true)]
async fn t1_trigger_every_counts_per_stage() {
    let mut got = run(Flow::from_iter(1..=20u64)
        .partition(Partition::by_hash(|x: &u64| (*x % 2) as usize).stages(2))
        .max_demand(5)
        .min_demand(0)
        .window(Window::global().trigger_every(5))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| {
            vec![(
                t.partition,
                t.partitions,
                t.name.clone(),
                std::mem::take(acc),
            )]
        }))
    .await;
    got.sort_by_key(|(p, ..)| *p);
    assert_eq!(
        got,
        [
            (0, 2, every(5), 2 + 4 + 6 + 8 + 10),
            (0, 2, every(5), 12 + 14 + 16 + 18 + 20),
            (0, 2, DONE, 0),
            (1, 2, every(5), 1 + 3 + 5 + 7 + 9),
            (1, 2, every(5), 11 + 13 + 15 + 17 + 19),
            (1, 2, DONE, 0),
        ]
    );
}

/// W-X: a global window fires `Done` once per stage, even for a stage that got nothing.
#[tokio::test(start_paused = true)]
async fn w_x_global_window_fires_once_per_stage() {
    let mut got = run(Flow::from_iter(1..=9u64)
        .partition(Partition::by_hash(|x: &u64| (*x % 2) as usize).stages(3))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| {
            vec![(t.partition, t.partitions, t.name.clone(), *acc)]
        }))
    .await;
    got.sort_by_key(|(p, ..)| *p);
    assert_eq!(
        got,
        [(0, 3, DONE, 20), (1, 3, DONE, 25), (2, 3, DONE, 0)],
        "stage 2 received nothing but still fires its global Done"
    );
}

// ----- W-C1: count windows -----

#[tokio::test(start_paused = true)]
async fn w_c1_count_windows_end_with_an_empty_done() {
    let expected: Vec<u64> = (0..10)
        .map(|k| (k * 10 + 1..=k * 10 + 10).sum())
        .chain([0])
        .collect();
    for demand in DEMANDS {
        for partitioned in [false, true] {
            let flow = if partitioned {
                Flow::from_iter(1..=100u64).partition(Partition::new().stages(1))
            } else {
                Flow::from_iter(1..=100u64).stages(1)
            };
            let got = run(pin(flow, demand)
                .window(Window::count(10))
                .reduce(|| 0u64, sum)
                .emit_state())
            .await;
            assert_eq!(got, expected, "{demand:?}, partitioned: {partitioned}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn w_c1_count_window_triggers_carry_the_window_index() {
    let got = run(Flow::from_iter(1..=25u64)
        .stages(1)
        .max_demand(5)
        .min_demand(0)
        .window(Window::count(10))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.clone(), *acc)]))
    .await;
    let summary: Vec<_> = got
        .iter()
        .map(|(t, acc)| {
            (
                t.window_type,
                t.window,
                t.name.clone(),
                t.partition,
                t.partitions,
                *acc,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (WindowType::Count, 0, DONE, 0, 1, 55),
            (WindowType::Count, 1, DONE, 0, 1, 155),
            (WindowType::Count, 2, DONE, 0, 1, 21 + 22 + 23 + 24 + 25),
        ]
    );
}

/// W-C1: a count window counts raw events, before the layer's filter.
#[tokio::test(start_paused = true)]
async fn w_c1_count_counts_events_before_the_filter() {
    for demand in DEMANDS {
        let got = run(pin(Flow::from_iter(1..=20u64).stages(1), demand)
            .window(Window::count(5))
            .filter(|x| x % 2 == 0)
            .reduce(|| 0u64, sum)
            .emit_state())
        .await;
        assert_eq!(got, [6, 24, 26, 54, 0], "{demand:?}");
    }
}

/// T1: the `trigger_every` counter restarts at each new count window.
#[tokio::test(start_paused = true)]
async fn t1_trigger_every_restarts_in_each_count_window() {
    for demand in DEMANDS {
        let got = run(pin(Flow::from_iter(1..=20u64).stages(1), demand)
            .window(Window::count(10).trigger_every(3))
            .reduce(|| 0u64, sum)
            .on_trigger(record()))
        .await;
        assert_eq!(
            names(&got),
            [
                (0, every(3)),
                (0, every(3)),
                (0, every(3)),
                (0, DONE),
                (1, every(3)),
                (1, every(3)),
                (1, every(3)),
                (1, DONE),
                (2, DONE),
            ],
            "{demand:?}"
        );
        assert_eq!(
            accs(&got),
            [6, 21, 45, 55, 36, 81, 135, 155, 0],
            "{demand:?}"
        );
    }
}

/// R4: what `on_trigger` leaves in the acc is kept after `Every`, dropped after a count
/// window's `Done` (the next window starts from `init`).
#[tokio::test(start_paused = true)]
async fn r4_count_done_discards_the_returned_acc_every_keeps_it() {
    let got = run(Flow::from_iter(1..=8u64)
        .stages(1)
        .window(Window::count(4).trigger_every(2))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| {
            let out = (t.window, t.name.clone(), *acc);
            *acc = 1000;
            vec![out]
        }))
    .await;
    assert_eq!(
        got,
        [
            (0, every(2), 1 + 2),
            (0, every(2), 1000 + 3 + 4),
            (0, DONE, 1000),
            (1, every(2), 5 + 6),
            (1, every(2), 1000 + 7 + 8),
            (1, DONE, 1000),
            (2, DONE, 0),
        ]
    );
}

/// W-X: count windows are per stage.
#[tokio::test(start_paused = true)]
async fn w_x_count_windows_are_per_stage() {
    let mut got = run(Flow::from_iter(1..=20u64)
        .partition(Partition::by_hash(|x: &u64| (*x % 2) as usize).stages(2))
        .max_demand(5)
        .min_demand(0)
        .window(Window::count(5))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| {
            vec![(t.partition, t.window, t.name.clone(), *acc)]
        }))
    .await;
    got.sort_by_key(|(p, w, ..)| (*p, *w));
    assert_eq!(
        got,
        [
            (0, 0, DONE, 30),
            (0, 1, DONE, 80),
            (0, 2, DONE, 0),
            (1, 0, DONE, 25),
            (1, 1, DONE, 75),
            (1, 2, DONE, 0),
        ]
    );
}

// ----- W-P1: periodic windows -----

#[tokio::test(start_paused = true)]
async fn w_p1_periodic_windows_hold_what_arrives_in_each_period() {
    let source = timed(
        vec![(10, 1u64), (20, 2), (150, 3), (160, 4), (250, 5)],
        None,
    );
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::periodic(ms(100)))
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    assert_eq!(
        got,
        [
            fired(0, DONE, vec![1, 2], 100),
            fired(1, DONE, vec![3, 4], 200),
            fired(2, DONE, vec![5], 250),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn w_p1_empty_periods_fire_done_with_a_fresh_acc() {
    let source = timed(vec![(10, 1u64), (350, 2)], None);
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::periodic(ms(100)))
        .reduce(Vec::new, push)
        .on_trigger(|acc: &mut Vec<u64>, t: &Trigger| {
            assert_eq!(t.window_type, WindowType::Periodic);
            assert_eq!((t.partition, t.partitions), (0, 1));
            vec![(t.window, t.name.clone(), acc.clone())]
        }))
    .await;
    assert_eq!(
        got,
        [
            (0, DONE, vec![1]),
            (1, DONE, vec![]),
            (2, DONE, vec![]),
            (3, DONE, vec![2]),
        ]
    );
}

/// R4: a periodic window's `Done` discards what `on_trigger` left in the acc.
#[tokio::test(start_paused = true)]
async fn r4_periodic_done_discards_the_returned_acc() {
    let source = timed(vec![(10, 1u64), (150, 2), (160, 3)], None);
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::periodic(ms(100)))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| {
            let out = (t.window, *acc);
            *acc = 1000;
            vec![out]
        }))
    .await;
    assert_eq!(got, [(0, 1), (1, 5)]);
}

/// W-P1: at the end the current window is done at once; the period's timer does not hold the
/// flow open.
#[tokio::test(start_paused = true)]
async fn w_p1_the_current_window_is_done_when_the_input_ends() {
    let start = Instant::now();
    let source = timed(vec![(10, 1u64), (15, 2)], Some(20));
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::periodic(Duration::from_secs(3600)))
        .reduce(|| 0u64, sum)
        .on_trigger(record()))
    .await;
    assert_eq!(got, [fired(0, DONE, 3, 20)]);
    assert_eq!(start.elapsed(), ms(20), "the flow ended with its input");
}

/// T1 in periodic windows: the `trigger_every` counter restarts with each window.
#[tokio::test(start_paused = true)]
async fn t1_trigger_every_restarts_in_each_periodic_window() {
    let source = timed(vec![(10, 1u64), (20, 2), (30, 3), (150, 4)], None);
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::periodic(ms(100)).trigger_every(2))
        .reduce(|| 0u64, sum)
        .on_trigger(record()))
    .await;
    assert_eq!(
        got,
        [
            fired(0, every(2), 3, 20),
            fired(0, DONE, 6, 100),
            fired(1, DONE, 4, 150),
        ]
    );
}

// ----- T2: trigger_periodically -----

#[tokio::test(start_paused = true)]
async fn t2_trigger_periodically_fires_whether_or_not_data_changed() {
    let period = ms(100);
    let source = timed(vec![(10, 1u64), (20, 2), (250, 4)], Some(350));
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::global().trigger_periodically(period))
        .reduce(|| 0u64, sum)
        .on_trigger(record()))
    .await;
    let tick = TriggerName::Periodically(period);
    assert_eq!(
        got,
        [
            fired(0, tick.clone(), 3, 100),
            fired(0, tick.clone(), 3, 200),
            fired(0, tick, 7, 300),
            fired(0, DONE, 7, 350),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn t2_trigger_periodically_resetting_gives_per_period_sums() {
    let period = ms(100);
    let source = timed(vec![(10, 1u64), (20, 2), (250, 4)], Some(350));
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::global().trigger_periodically(period))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.name.clone(), std::mem::take(acc))]))
    .await;
    let tick = TriggerName::Periodically(period);
    assert_eq!(
        got,
        [(tick.clone(), 3), (tick.clone(), 0), (tick, 4), (DONE, 0)]
    );
}

/// T2: the tick fires on the current count window.
#[tokio::test(start_paused = true)]
async fn t2_trigger_periodically_fires_on_the_current_count_window() {
    let period = ms(100);
    let source = timed(vec![(10, 1u64), (20, 2), (150, 3), (160, 4)], Some(250));
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(Window::count(3).trigger_periodically(period))
        .reduce(|| 0u64, sum)
        .on_trigger(record()))
    .await;
    let tick = TriggerName::Periodically(period);
    assert_eq!(
        got,
        [
            fired(0, tick.clone(), 3, 100),
            fired(0, DONE, 6, 150),
            fired(1, tick, 4, 200),
            fired(1, DONE, 4, 250),
        ]
    );
}

/// T2: on fixed windows a tick fires for every held window, lowest to highest, gaps
/// included. Nothing closes here: the second producer sends nothing until it ends.
#[tokio::test(start_paused = true)]
async fn t2_trigger_periodically_fires_for_every_held_fixed_window_gaps_included() {
    let period = ms(100);
    let busy = timed(vec![(0, 0u64), (0, 3500)], None);
    let idle = timed(vec![], Some(150));
    let got = run(Flow::from_streams([busy, idle])
        .stages(1)
        .window(fixed_1s().trigger_periodically(period))
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    let tick = TriggerName::Periodically(period);
    assert_eq!(
        got,
        [
            fired(0, tick.clone(), vec![0], 100),
            fired(1000, tick.clone(), vec![], 100),
            fired(2000, tick.clone(), vec![], 100),
            fired(3000, tick, vec![3500], 100),
            fired(0, DONE, vec![0], 150),
            fired(1000, DONE, vec![], 150),
            fired(2000, DONE, vec![], 150),
            fired(3000, DONE, vec![3500], 150),
        ]
    );
}

/// T2: on fixed windows a tick fires for every held window (here without gaps), and the
/// returned acc is kept.
#[tokio::test(start_paused = true)]
async fn t2_trigger_periodically_fires_for_every_held_fixed_window() {
    let period = ms(100);
    let busy = timed(vec![(0, 0u64), (0, 1500), (120, 1600)], None);
    let idle = timed(vec![], Some(250));
    let got = run(Flow::from_streams([busy, idle])
        .stages(1)
        .window(fixed_1s().trigger_periodically(period))
        .reduce(Vec::new, push)
        .on_trigger(|acc: &mut Vec<u64>, t: &Trigger| {
            assert_eq!(t.window_type, WindowType::Fixed);
            vec![(t.window, t.name.clone(), std::mem::take(acc))]
        }))
    .await;
    let tick = TriggerName::Periodically(period);
    assert_eq!(
        got,
        [
            (0, tick.clone(), vec![0]),
            (1000, tick.clone(), vec![1500]),
            (0, tick.clone(), vec![]),
            (1000, tick, vec![1600]),
            (0, DONE, vec![]),
            (1000, DONE, vec![]),
        ]
    );
}

// ----- W-F: fixed windows -----

#[tokio::test(start_paused = true)]
async fn w_f_fixed_windows_reduce_per_window() {
    for demand in DEMANDS {
        for partitioned in [false, true] {
            let flow = if partitioned {
                Flow::from_iter(1..=100u64).partition(Partition::new().stages(1))
            } else {
                Flow::from_iter(1..=100u64).stages(1)
            };
            let got = run(pin(flow, demand)
                .window(Window::fixed(ms(10), |t: &u64| *t))
                .reduce(|| 0u64, sum)
                .on_trigger(record()))
            .await;
            let expected: Vec<(u64, TriggerName)> = (0..=10).map(|k| (k * 10, DONE)).collect();
            assert_eq!(
                names(&got),
                expected,
                "{demand:?}, partitioned: {partitioned}"
            );
            assert_eq!(
                accs(&got),
                [45, 145, 245, 345, 445, 545, 645, 745, 845, 945, 100],
                "{demand:?}, partitioned: {partitioned}"
            );
        }
    }
}

/// W-F1: the trigger reports the window's start in ms; the Trigger has the fixed kind and its
/// stage's partition.
#[tokio::test(start_paused = true)]
async fn w_f1_trigger_fields_of_fixed_windows() {
    // 4 events in each of windows 0..=3; even windows go to stage 0, odd ones to stage 1.
    let events: Vec<u64> = (0..16).map(|k| k * 250).collect();
    let mut got = run(Flow::from_iter(events)
        .partition(Partition::by_hash(|t: &u64| (*t / 1000 % 2) as usize).stages(2))
        .window(fixed_1s())
        .reduce(Vec::new, push)
        .on_trigger(|acc: &mut Vec<u64>, t: &Trigger| vec![(t.clone(), acc.clone())]))
    .await;
    for (t, _) in &got {
        assert_eq!(t.window_type, WindowType::Fixed);
        assert_eq!(t.partitions, 2);
        assert_eq!(t.name, DONE);
    }
    got.sort_by_key(|(t, _)| (t.partition, t.window));
    let summary: Vec<_> = got
        .iter()
        .map(|(t, acc)| (t.partition, t.window, acc.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, 0, vec![0, 250, 500, 750]),
            (0, 1000, vec![]),
            (0, 2000, vec![2000, 2250, 2500, 2750]),
            (1, 1000, vec![1000, 1250, 1500, 1750]),
            (1, 2000, vec![]),
            (1, 3000, vec![3000, 3250, 3500, 3750]),
        ]
    );
}

/// W-F3: a run for a window that is still held is reduced there, even when it is older
/// than the producer's most recent window.
#[tokio::test(start_paused = true)]
async fn w_f3_out_of_order_events_for_a_held_window_are_kept() {
    let late = LateEvents::new();
    let got = run(Flow::from_iter([0u64, 1500, 200, 3000])
        .stages(1)
        .window(fixed_1s().late_events(late.clone()))
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    assert_eq!(
        names(&got),
        [(0, DONE), (1000, DONE), (2000, DONE), (3000, DONE)]
    );
    assert_eq!(accs(&got), [vec![0, 200], vec![1500], vec![], vec![3000]]);
    assert_eq!(late.count(), 0);
    assert!(late.take().is_empty());
}

/// W-F3: a late event for a window no longer held is dropped and counted.
#[tokio::test(start_paused = true)]
async fn w_f3_late_events_for_closed_windows_are_dropped_and_counted() {
    let late = LateEvents::new();
    let got = run(Flow::from_iter([0u64, 1500, 200, 3000])
        .stages(1)
        .max_demand(1)
        .window(fixed_1s().late_events(late.clone()))
        .reduce(Vec::new, push)
        .emit_state())
    .await;
    assert_eq!(got, [vec![0], vec![1500], vec![], vec![3000]]);
    assert_eq!(late.count(), 1);
    assert_eq!(late.take(), [200]);
    assert!(late.take().is_empty(), "take() empties the collector");
    assert_eq!(late.count(), 1, "the count is since the start");
}

/// W-F3 / flow#125: a late event for a window that was never opened is dropped even with
/// allowed lateness.
#[tokio::test(start_paused = true)]
async fn w_f3_late_event_for_a_never_opened_window_is_dropped_despite_lateness() {
    let late = LateEvents::new();
    let got = run(Flow::from_iter([1500u64, 200, 1600])
        .stages(1)
        .max_demand(1)
        .window(
            fixed_1s()
                .allowed_lateness(Duration::from_secs(3600))
                .late_events(late.clone()),
        )
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    assert_eq!(names(&got), [(1000, DONE)]);
    assert_eq!(accs(&got), [vec![1500, 1600]]);
    assert_eq!(late.count(), 1);
    assert_eq!(late.take(), [200]);
}

/// W-F5 with lateness: `Watermark` when the watermark passes, late events accepted until
/// `Done` fires `lateness` later; after that they are late.
#[tokio::test(start_paused = true)]
async fn w_f5_lateness_fires_watermark_then_done_later() {
    let late = LateEvents::new();
    let source = timed(
        vec![
            (0, 0u64),
            (10, 1500),
            (20, 300),
            (50, 2100),
            (120, 400),
            (130, 1600),
            (300, 3000),
        ],
        None,
    );
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(
            fixed_1s()
                .allowed_lateness(ms(100))
                .late_events(late.clone()),
        )
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    assert_eq!(
        got,
        [
            fired(0, WATERMARK, vec![0], 10),
            fired(1000, WATERMARK, vec![1500], 50),
            fired(0, DONE, vec![0, 300], 110),
            fired(1000, DONE, vec![1500, 1600], 150),
            fired(2000, WATERMARK, vec![2100], 300),
            fired(2000, DONE, vec![2100], 300),
            fired(3000, DONE, vec![3000], 300),
        ]
    );
    assert_eq!(late.take(), [400]);
}

/// R4: the acc `on_trigger` leaves at a watermark is kept for the window.
#[tokio::test(start_paused = true)]
async fn r4_watermark_keeps_the_returned_acc() {
    let source = timed(vec![(0, 0u64), (0, 100), (10, 1500), (20, 300)], Some(500));
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(fixed_1s().allowed_lateness(ms(100)))
        .reduce(Vec::new, push)
        .on_trigger(|acc: &mut Vec<u64>, t: &Trigger| {
            vec![(t.window, t.name.clone(), std::mem::take(acc))]
        }))
    .await;
    assert_eq!(
        got,
        [
            (0, WATERMARK, vec![0, 100]),
            (0, DONE, vec![300]),
            (1000, DONE, vec![1500]),
        ]
    );
}

/// T1: the `trigger_every` counter does not restart on a watermark.
#[tokio::test(start_paused = true)]
async fn t1_trigger_every_counter_survives_a_watermark() {
    let source = timed(vec![(0, 0u64), (10, 1500), (20, 300)], Some(500));
    let got = run(Flow::from_stream(source)
        .stages(1)
        .window(fixed_1s().allowed_lateness(ms(100)).trigger_every(2))
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    assert_eq!(
        got,
        [
            fired(0, WATERMARK, vec![0], 10),
            fired(0, every(2), vec![0, 300], 20),
            fired(0, DONE, vec![0, 300], 110),
            fired(1000, DONE, vec![1500], 500),
        ]
    );
}

/// W-F6: the example: events at 0, 500 and 3500 ms in 1 s windows.
#[tokio::test(start_paused = true)]
async fn w_f6_gap_windows_fire_done_with_a_fresh_acc() {
    for demand in DEMANDS {
        let got = run(pin(Flow::from_iter([0u64, 500, 3500]).stages(1), demand)
            .window(fixed_1s())
            .reduce(|| 0u64, sum)
            .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.window, t.name.clone(), *acc)]))
        .await;
        assert_eq!(
            got,
            [
                (0, DONE, 500),
                (1000, DONE, 0),
                (2000, DONE, 0),
                (3000, DONE, 3500)
            ],
            "{demand:?}"
        );
    }
}

/// W-F6 with lateness: gap windows get a watermark (fresh acc) and their done later.
#[tokio::test(start_paused = true)]
async fn w_f6_gap_windows_with_lateness() {
    let source = timed(vec![(0, 0u64), (10, 2500), (20, 1200)], Some(500));
    let mut got = run(Flow::from_stream(source)
        .stages(1)
        .window(fixed_1s().allowed_lateness(ms(100)))
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    // The two lateness timers end at the same instant, in no defined order.
    got.sort_by_key(|f| (f.at, f.window));
    assert_eq!(
        got,
        [
            fired(0, WATERMARK, vec![0], 10),
            fired(1000, WATERMARK, vec![], 10),
            fired(0, DONE, vec![0], 110),
            fired(1000, DONE, vec![1200], 110),
            fired(2000, DONE, vec![2500], 500),
        ]
    );
}

/// W-F8: inside one batch, first what the runs' reductions emit (their `Every` triggers),
/// then the window-closing triggers; with small batches they interleave.
#[tokio::test(start_paused = true)]
async fn w_f8_emission_order_depends_on_batches() {
    let flow = |demand| {
        pin(Flow::from_iter(1..=30u64).stages(1), demand)
            .window(Window::fixed(ms(10), |t: &u64| *t).trigger_every(5))
            .reduce(|| 0u64, sum)
            .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.window, t.name.clone(), *acc)])
    };
    assert_eq!(
        run(flow(Demand::Large)).await,
        [
            (0, every(5), 15),
            (10, every(5), 60),
            (10, every(5), 145),
            (20, every(5), 110),
            (20, every(5), 245),
            (0, DONE, 45),
            (10, DONE, 145),
            (20, DONE, 245),
            (30, DONE, 30),
        ]
    );
    assert_eq!(
        run(flow(Demand::Small)).await,
        [
            (0, every(5), 15),
            (0, DONE, 45),
            (10, every(5), 60),
            (10, every(5), 145),
            (10, DONE, 145),
            (20, every(5), 110),
            (20, every(5), 245),
            (20, DONE, 245),
            (30, DONE, 30),
        ]
    );
}

/// W-F4: a window closes only once every upstream producer has moved past it; a producer
/// that finishes leaves the watermark.
#[tokio::test(start_paused = true)]
async fn w_f4_fixed_window_closes_after_both_producers_pass_it() {
    for partitioned in [false, true] {
        let a = timed(vec![(0, 0u64), (10, 1500), (20, 2500), (200, 3500)], None);
        let b = timed(vec![(0, 100u64), (100, 1200), (150, 2100)], None);
        let flow = if partitioned {
            Flow::from_streams([a, b]).partition(Partition::new().stages(1))
        } else {
            Flow::from_streams([a, b]).stages(1)
        };
        let got = run(flow
            .window(fixed_1s())
            .reduce(|| 0u64, sum)
            .on_trigger(record()))
        .await;
        assert_eq!(
            got,
            [
                fired(0, DONE, 100, 100),
                fired(1000, DONE, 2700, 150),
                fired(2000, DONE, 4600, 200),
                fired(3000, DONE, 3500, 200),
            ],
            "partitioned: {partitioned}"
        );
    }
}

/// W-F4 / W-F7: nothing closes until every producer has sent data; at the end every held
/// window fires `Done`, ascending.
#[tokio::test(start_paused = true)]
async fn w_f7_at_the_end_every_held_window_is_done_in_ascending_order() {
    let busy = timed(vec![(0, 0u64), (0, 1000), (5, 2000), (5, 3000)], None);
    let idle = timed(vec![], Some(100));
    let got = run(Flow::from_streams([busy, idle])
        .stages(1)
        .window(fixed_1s())
        .reduce(|| 0u64, sum)
        .on_trigger(record()))
    .await;
    assert_eq!(
        got,
        [
            fired(0, DONE, 0, 100),
            fired(1000, DONE, 1000, 100),
            fired(2000, DONE, 2000, 100),
            fired(3000, DONE, 3000, 100),
        ]
    );
}

/// W-F7: windows still in their lateness are done at the end too, without waiting.
#[tokio::test(start_paused = true)]
async fn w_f7_windows_in_lateness_are_done_at_the_end() {
    let start = Instant::now();
    let got = run(Flow::from_iter([0u64, 1500])
        .stages(1)
        .window(fixed_1s().allowed_lateness(Duration::from_secs(3600)))
        .reduce(Vec::new, push)
        .on_trigger(record()))
    .await;
    assert_eq!(
        got,
        [
            fired(0, WATERMARK, vec![0], 0),
            fired(0, DONE, vec![0], 0),
            fired(1000, DONE, vec![1500], 0),
        ]
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// W-F7: a stage that received nothing emits nothing (unlike global and count windows).
#[tokio::test(start_paused = true)]
async fn w_f7_a_stage_that_received_nothing_emits_nothing() {
    let events: Vec<u64> = (0..10).map(|k| k * 300).collect();
    let all_to_0 = || Partition::by_hash(|_: &u64| 0).stages(2);
    let partitions = |got: &[(usize, u64)]| {
        let mut p: Vec<usize> = got.iter().map(|(p, _)| *p).collect();
        p.sort();
        p.dedup();
        p
    };
    let fixed = run(Flow::from_iter(events.clone())
        .partition(all_to_0())
        .window(fixed_1s())
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.partition, *acc)]))
    .await;
    assert_eq!(partitions(&fixed), [0]);
    assert_eq!(
        fixed.len(),
        3,
        "windows 0, 1000 and 2000 of stage 0: {fixed:?}"
    );

    let count = run(Flow::from_iter(events.clone())
        .partition(all_to_0())
        .window(Window::count(100))
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.partition, *acc)]))
    .await;
    assert_eq!(partitions(&count), [0, 1], "count windows: {count:?}");

    let global = run(Flow::from_iter(events)
        .partition(all_to_0())
        .reduce(|| 0u64, sum)
        .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.partition, *acc)]))
    .await;
    assert_eq!(partitions(&global), [0, 1], "global window: {global:?}");
}

// ----- DP: departition and take_sort per window -----

fn by_parity_of_hundreds() -> Partition<u64> {
    Partition::by_hash(|t: &u64| (*t / 100 % 2) as usize).stages(2)
}

/// DP2: one result per window, once every partition has sent that window's `Done`.
#[tokio::test(start_paused = true)]
async fn dp2_departition_gives_one_result_per_fixed_window() {
    for demand in DEMANDS {
        let events: Vec<u64> = (0..40).map(|k| k * 100).collect();
        let got = run(pin(
            Flow::from_iter(events).partition(by_parity_of_hundreds()),
            demand,
        )
        .window(fixed_1s())
        .reduce(|| 0u64, sum)
        .emit_state()
        .departition(
            || 0u64,
            |total: &mut u64, sums: Vec<u64>| *total += sums.iter().sum::<u64>(),
            |total| total,
        ))
        .await;
        assert_eq!(got, [4500, 14500, 24500, 34500], "{demand:?}");
    }
}

/// DP2: count windows departition to one result per window, the trailing empty one included.
#[tokio::test(start_paused = true)]
async fn dp2_departition_of_count_windows() {
    let got = run(Flow::from_iter(1..=20u64)
        .partition(Partition::by_hash(|x: &u64| (*x % 2) as usize).stages(2))
        .window(Window::count(5))
        .reduce(|| 0u64, sum)
        .emit_state()
        .departition(
            || 0u64,
            |total: &mut u64, sums: Vec<u64>| *total += sums.iter().sum::<u64>(),
            |total| total,
        ))
    .await;
    assert_eq!(got, [55, 155, 0]);
}

/// DP2: what a layer emits as its events arrive (`emit_and_reduce`) belongs to the window
/// those events entered, so each window's departition result holds exactly its own events.
#[tokio::test(start_paused = true)]
async fn dp2_events_emitted_while_reducing_merge_into_their_own_window() {
    let got = run(Flow::from_iter(1..=4u64)
        .stages(1)
        .window(Window::count(2))
        .emit_and_reduce(|| (), |_: &mut (), x: u64, out: &mut Vec<u64>| out.push(x))
        .emit_nothing()
        .departition_with_window(
            Vec::new,
            |all: &mut Vec<u64>, xs: Vec<u64>| all.extend(xs),
            |all, window| (window, all),
        ))
    .await;
    assert_eq!(got, [(0, vec![1, 2]), (1, vec![3, 4]), (2, vec![])]);
}

/// DP2: non-done triggers only merge; the window's result comes once, at `Done`.
#[tokio::test(start_paused = true)]
async fn dp2_every_triggers_only_merge_into_the_window() {
    let got = run(Flow::from_iter(1..=20u64)
        .partition(Partition::by_hash(|x: &u64| (*x % 2) as usize).stages(2))
        .max_demand(5)
        .min_demand(0)
        .window(Window::global().trigger_every(5))
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(|n: &mut u64, t: &Trigger| vec![(t.name.clone(), std::mem::take(n))])
        .departition(
            Vec::new,
            |all: &mut Vec<(TriggerName, u64)>, items| all.extend(items),
            |all| all,
        ))
    .await;
    assert_eq!(got.len(), 1, "one result for the global window: {got:?}");
    let mut items = got[0].clone();
    items.sort_by_key(|(_, n)| *n);
    assert_eq!(
        items,
        [
            (DONE, 0),
            (DONE, 0),
            (every(5), 5),
            (every(5), 5),
            (every(5), 5),
            (every(5), 5)
        ]
    );
}

/// DP3: a window some partition never sent `Done` for comes out at the end.
#[tokio::test(start_paused = true)]
async fn dp3_uneven_windows_are_flushed_at_the_end() {
    let got = run(Flow::from_iter([0u64, 100, 1000, 1100, 1200])
        .partition(Partition::by_hash(|t: &u64| usize::from(*t == 1100)).stages(2))
        .window(fixed_1s())
        .reduce(|| 0u64, sum)
        .emit_state()
        .departition(
            || 0u64,
            |total: &mut u64, sums: Vec<u64>| *total += sums.iter().sum::<u64>(),
            |total| total,
        ))
    .await;
    assert_eq!(
        got,
        [3300, 100],
        "window 1000 completes first; window 0 (stage 1 never had it) is flushed at the end"
    );
}

/// DP6: take_sort gives one sorted list per fixed window.
#[tokio::test(start_paused = true)]
async fn dp6_take_sort_per_fixed_window() {
    for demand in DEMANDS {
        let events: Vec<u64> = (0..40).map(|k| k * 100).collect();
        let got = run(pin(
            Flow::from_iter(events).partition(by_parity_of_hundreds()),
            demand,
        )
        .window(fixed_1s())
        .take_sort(3, |a: &u64, b: &u64| b.cmp(a)))
        .await;
        assert_eq!(
            got,
            [
                vec![900, 800, 700],
                vec![1900, 1800, 1700],
                vec![2900, 2800, 2700],
                vec![3900, 3800, 3700],
            ],
            "{demand:?}"
        );
    }
}

/// DP6: take_sort per count window, after a reduce (it sorts what the triggers emit).
#[tokio::test(start_paused = true)]
async fn dp6_take_sort_per_count_window_after_a_reduce() {
    let got = run(Flow::from_iter(1..=30u64)
        .stages(1)
        .max_demand(5)
        .min_demand(0)
        .window(Window::count(10))
        .reduce(Vec::new, push)
        .emit_events()
        .take_sort(3, |a: &u64, b: &u64| b.cmp(a)))
    .await;
    assert_eq!(
        got,
        [vec![10, 9, 8], vec![20, 19, 18], vec![30, 29, 28], vec![]]
    );
}

/// DP6: take_sort over a global window with `trigger_every` still gives a single list.
#[tokio::test(start_paused = true)]
async fn dp6_take_sort_global_window_gives_one_list() {
    let got = run(Flow::from_iter(1..=50u64)
        .partition(Partition::by_hash(|x: &u64| (*x % 3) as usize).stages(3))
        .window(Window::global().trigger_every(4))
        .take_sort(4, |a: &u64, b: &u64| b.cmp(a)))
    .await;
    assert_eq!(got, [vec![50, 49, 48, 47]]);
}

// ----- invalid windows: errors naming the option when the flow starts -----

#[tokio::test(start_paused = true)]
async fn invalid_windows_are_errors_naming_the_option() {
    let reduce = |w: Window<u64>| {
        Flow::from_iter(1..=10u64)
            .stages(1)
            .window(w)
            .reduce(|| 0u64, sum)
            .emit_state()
    };
    assert_eq!(option_of(run_err(reduce(Window::count(0))).await), "count");
    assert_eq!(
        option_of(run_err(reduce(Window::global().trigger_every(0))).await),
        "trigger_every"
    );
    assert_eq!(
        option_of(run_err(reduce(Window::count(3).trigger_every(0))).await),
        "trigger_every"
    );
    assert_eq!(
        option_of(run_err(reduce(Window::fixed(Duration::ZERO, |t: &u64| *t))).await),
        "fixed"
    );
    assert_eq!(
        option_of(
            run_err(reduce(Window::fixed(
                Duration::from_micros(500),
                |t: &u64| *t
            )))
            .await
        ),
        "fixed",
        "less than a millisecond is no window either"
    );
    assert_eq!(
        option_of(run_err(reduce(Window::periodic(Duration::ZERO))).await),
        "periodic"
    );
    assert_eq!(
        option_of(
            run_err(reduce(
                Window::global().trigger_periodically(Duration::ZERO)
            ))
            .await
        ),
        "trigger_periodically"
    );
    for w in [
        Window::global(),
        Window::count(3),
        Window::periodic(ms(100)),
    ] {
        let label = format!("{w:?}");
        assert_eq!(
            option_of(run_err(reduce(w.allowed_lateness(ms(10)))).await),
            "allowed_lateness",
            "{label}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_window_on_a_partition_layer_is_an_error_at_start() {
    let flow = Flow::from_iter(1..=10u64)
        .partition(Partition::new().stages(2))
        .window(Window::count(0))
        .reduce(|| 0u64, sum)
        .emit_state();
    assert_eq!(option_of(run_err(flow).await), "count");
}

#[tokio::test(start_paused = true)]
async fn fixed_window_after_a_map_is_an_error_at_start() {
    let flow = Flow::from_iter(1..=10u64)
        .stages(1)
        .map(|x| x * 1000)
        .window(fixed_1s())
        .reduce(|| 0u64, sum)
        .emit_state();
    match run_err(flow).await {
        ErrorKind::Misuse(msg) => assert!(msg.contains("fixed window"), "{msg}"),
        other => panic!("expected a misuse error, got {other:?}"),
    }
    // Set before the map, it is fine: `by` reads the layer's input.
    let got = run(Flow::from_iter([0u64, 1500])
        .stages(1)
        .window(fixed_1s())
        .map(|x| x + 1)
        .reduce(|| 0u64, sum)
        .emit_state())
    .await;
    assert_eq!(got, [1, 1501]);
}

/// Fires "zero" before every 0 of the input, remembering in its state that it cut before the
/// event at the head of the rest (or it would be asked again, and cut again, for ever).
fn before_each_zero(events: &[u64], cut: &mut bool) -> flow::Punctuation<u64> {
    let from = usize::from(std::mem::take(cut));
    match events.iter().skip(from).position(|&x| x == 0) {
        Some(at) => {
            *cut = true;
            flow::Punctuation::TriggerAt {
                name: "zero".into(),
                at: from + at,
            }
        }
        None => flow::Punctuation::Cont,
    }
}

/// A custom trigger may cut a batch at its start (`at: 0`, firing before its first event);
/// one that keeps state fires once there, whatever the batches are.
#[tokio::test(start_paused = true)]
async fn a_custom_trigger_fires_before_an_event() {
    for demand in DEMANDS {
        let got = run(pin(Flow::from_iter([1u64, 0, 0, 2]).stages(1), demand)
            .window(Window::global().trigger(|| false, before_each_zero))
            .reduce(|| 0u64, sum)
            .on_trigger(|acc: &mut u64, t: &Trigger| vec![(t.name.clone(), std::mem::take(acc))]))
        .await;
        let zero = TriggerName::Custom("zero".into());
        assert_eq!(
            got,
            [(zero.clone(), 1), (zero, 0), (TriggerName::Done, 2)],
            "{demand:?}"
        );
    }
}

/// A custom trigger that answers `at: 0` again for the same events would fire for ever: the
/// flow fails with a panic that says so, instead of hanging.
#[test]
fn a_custom_trigger_that_cuts_at_the_start_for_ever_fails_the_flow() {
    let result = support::blocking(|| {
        Flow::from_iter([1u64, 0, 2])
            .stages(1)
            .window(Window::global().trigger(
                || (),
                |events: &[u64], _: &mut ()| match events.iter().position(|&x| x == 0) {
                    Some(at) => flow::Punctuation::TriggerAt {
                        name: "zero".into(),
                        at,
                    },
                    None => flow::Punctuation::Cont,
                },
            ))
            .reduce(|| 0u64, |acc, x| *acc += x)
            .emit_state()
            .collect_blocking()
    });
    support::assert_panicked(result, "fire for ever");
}
