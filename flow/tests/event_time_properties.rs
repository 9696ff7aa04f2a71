//! Property test of event time through `partition` + fixed windows: random event-time
//! streams (out of order, late, in bursts), 1-3 sources, some silent for long stretches,
//! random partition counts, demand (batch sizes) and idle timeouts. Every event is either
//! counted in exactly one window or reported late, never both and never lost, and what each
//! stage counts per window equals a sequential reference that applies the same watermark
//! rule (`docs/semantics.md`, *Flow: event time and watermarks*).
//!
//! Each case runs on tokio's paused clock, and only one source acts at an instant; idle
//! deadlines fall at instants where nothing else happens. A stage sends its watermark after
//! each batch it emits, not after each event: the stages reading the sources ask for at least
//! 8 events (refilling at half), so a burst (at most 4 events of one source at one instant)
//! always reaches them as one batch, and the reference sends a watermark per burst.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow::{Flow, Partition, Trigger, TriggerName, Window};
use proptest::prelude::*;
use support::timed;

/// An event: its id and its event time in ms.
type Event = (u32, u64);

/// Something that happens at one instant.
#[derive(Clone, Debug)]
enum Action {
    /// Source `source` emits these events (sorted by time).
    Burst { source: usize, events: Vec<Event> },
    /// Source `source` ends.
    End { source: usize },
}

#[derive(Clone, Debug)]
struct Case {
    sources: usize,
    /// `(instant in ms, action)`, instants increasing, multiples of 10.
    timeline: Vec<(u64, Action)>,
    window_ms: u64,
    partitions: usize,
    /// The idle timeout, 5 ms off the 10 ms grid of the timeline.
    idle: Option<u64>,
    /// `max_demand` of the stages that read the sources, and of the partition layer.
    source_demand: usize,
    demand: (usize, usize),
    /// Whether each source goes through a mapping stage of its own (or a relay).
    via_layer: bool,
}

fn route(e: &Event) -> usize {
    (e.1 / 3 + e.1 / 17) as usize
}

/// One burst, before times are fixed: gap (in 10 ms), source pick, first time change, and the
/// increments of the rest of the burst.
type RawStep = (u64, usize, i64, Vec<u64>);

fn raw_steps() -> impl Strategy<Value = Vec<RawStep>> {
    let gap = prop_oneof![4 => 1u64..5, 1 => 40u64..150];
    let delta = prop_oneof![3 => 0i64..1500, 2 => -800i64..0, 1 => -6000i64..-800];
    prop::collection::vec(
        (
            gap,
            0usize..3,
            delta,
            prop::collection::vec(0u64..400, 0..4),
        ),
        0..30,
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=3,
        raw_steps(),
        prop::collection::vec((0usize..40, 1u64..60), 3),
        prop::sample::select(vec![100u64, 250, 1000]),
        1usize..=4,
        prop::option::of(5u64..60),
        8usize..40,
        (1usize..30).prop_flat_map(|max| (Just(max), 0..max)),
        any::<bool>(),
    )
        .prop_map(
            |(
                sources,
                steps,
                ends,
                window_ms,
                partitions,
                idle,
                source_demand,
                demand,
                via_layer,
            )| {
                build(
                    sources,
                    steps,
                    ends,
                    window_ms,
                    partitions,
                    idle.map(|k| k * 10 + 5),
                    source_demand,
                    demand,
                    via_layer,
                )
            },
        )
}

#[allow(clippy::too_many_arguments)]
fn build(
    sources: usize,
    steps: Vec<RawStep>,
    ends: Vec<(usize, u64)>,
    window_ms: u64,
    partitions: usize,
    idle: Option<u64>,
    source_demand: usize,
    demand: (usize, usize),
    via_layer: bool,
) -> Case {
    let mut progress = vec![1000u64; sources];
    let mut next_id = 0u32;
    let mut bursts: Vec<(u64, usize, Vec<Event>)> = Vec::new();
    for (gap, pick, delta, rest) in steps {
        let source = pick % sources;
        let mut t = (progress[source] as i64 + delta).max(0) as u64;
        let mut events = Vec::new();
        for inc in std::iter::once(0).chain(rest) {
            t += inc;
            events.push((next_id, t));
            next_id += 1;
        }
        progress[source] = progress[source].max(t);
        bursts.push((gap, source, events));
    }
    // Each source ends some steps after its last burst (or before any): `(position, source,
    // gap)`, ending before burst `position` (or after the last).
    let mut end_queue: Vec<(usize, usize, u64)> = (0..sources)
        .map(|s| {
            let after_last = bursts.iter().rposition(|b| b.1 == s).map_or(0, |i| i + 1);
            (after_last.max(ends[s].0.min(bursts.len())), s, ends[s].1)
        })
        .collect();
    end_queue.sort();
    let mut ends_iter = end_queue.into_iter().peekable();
    let mut timeline = Vec::new();
    let mut now = 0u64;
    for (i, (gap, source, events)) in bursts.into_iter().enumerate() {
        while let Some(&(at, s, g)) = ends_iter.peek() {
            if at > i {
                break;
            }
            now += g * 10;
            timeline.push((now, Action::End { source: s }));
            ends_iter.next();
        }
        now += gap * 10;
        timeline.push((now, Action::Burst { source, events }));
    }
    for (_, s, g) in ends_iter {
        now += g * 10;
        timeline.push((now, Action::End { source: s }));
    }
    Case {
        sources,
        timeline,
        window_ms,
        partitions,
        idle,
        source_demand,
        demand,
        via_layer,
    }
}

/// What a run gives: per `(stage, window start)` the ids counted, and the late ids.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    counted: BTreeMap<(usize, u64), Vec<u32>>,
    late: Vec<u32>,
}

// ----- the reference -----

#[derive(Clone, Debug, Default)]
struct Input {
    latest: Option<u64>,
    last_active: u64,
    idle: bool,
    present: bool,
}

#[derive(Debug, Default)]
struct Stage {
    inputs: Vec<Input>,
    held: BTreeMap<u64, Vec<u32>>,
    all: Option<u64>,
    floor: Option<u64>,
}

impl Stage {
    fn least(&self) -> Option<u64> {
        let mut least: Option<u64> = None;
        for i in self.inputs.iter().filter(|i| i.present && !i.idle) {
            let l = i.latest?;
            least = Some(least.map_or(l, |x| x.min(l)));
        }
        least
    }

    fn watermark(&mut self, me: usize, window_ms: u64, out: &mut BTreeMap<(usize, u64), Vec<u32>>) {
        let Some(m) = self.least() else { return };
        self.floor = Some(self.floor.map_or(m, |f| f.max(m)));
        let Some(from) = self.all.or_else(|| self.held.keys().next().copied()) else {
            return;
        };
        if from >= m {
            return;
        }
        self.all = Some(m);
        let closing: Vec<u64> = self.held.range(from..m).map(|(w, _)| *w).collect();
        for w in closing {
            let ids = self.held.remove(&w).expect("held");
            out.insert((me, w * window_ms), ids);
        }
    }

    fn touch(&mut self, s: usize, now: u64) {
        self.inputs[s].last_active = now;
        self.inputs[s].idle = false;
    }

    /// Inputs whose idle deadline falls before `now`, one at a time, in deadline order.
    fn expire_before(
        &mut self,
        now: u64,
        idle: u64,
        me: usize,
        window_ms: u64,
        out: &mut BTreeMap<(usize, u64), Vec<u32>>,
    ) {
        loop {
            let next = self
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, i)| i.present && !i.idle)
                .map(|(s, i)| (i.last_active + idle, s))
                .min();
            match next {
                Some((deadline, s)) if deadline < now => {
                    self.inputs[s].idle = true;
                    self.watermark(me, window_ms, out);
                }
                _ => return,
            }
        }
    }
}

fn reference(case: &Case) -> Outcome {
    let p = case.partitions;
    let d = case.window_ms;
    let mut stages: Vec<Stage> = (0..p)
        .map(|_| Stage {
            inputs: vec![
                Input {
                    present: true,
                    ..Input::default()
                };
                case.sources
            ],
            ..Stage::default()
        })
        .collect();
    let mut counted = BTreeMap::new();
    let mut late = Vec::new();
    let mut sent = vec![None::<u64>; case.sources];
    for (now, action) in &case.timeline {
        let now = *now;
        if let Some(idle) = case.idle {
            for (j, stage) in stages.iter_mut().enumerate() {
                stage.expire_before(now, idle, j, d, &mut counted);
            }
        }
        match action {
            Action::Burst { source, events } => {
                let s = *source;
                for &(id, t) in events {
                    let w = t / d;
                    let j = if p == 1 { 0 } else { route(&(id, t)) % p };
                    let stage = &mut stages[j];
                    if stage.inputs[s].idle {
                        // Back: it holds the watermark again before its event is judged.
                        stage.touch(s, now);
                        stage.watermark(j, d, &mut counted);
                    }
                    stage.touch(s, now);
                    if let Some(ids) = stage.held.get_mut(&w) {
                        ids.push(id);
                    } else {
                        let open = stage.inputs[s].latest.is_none_or(|l| w >= l)
                            && stage.floor.is_none_or(|f| w >= f);
                        if open {
                            stage.held.insert(w, vec![id]);
                        } else {
                            late.push(id);
                        }
                    }
                }
                // The stage feeding the partitions sends every one of them its watermark,
                // after the batch (a burst arrives as one).
                let newest = events
                    .iter()
                    .map(|e| e.1)
                    .max()
                    .expect("bursts are not empty");
                let mark = sent[s].map_or(newest, |x: u64| x.max(newest));
                sent[s] = Some(mark);
                for (k, stage) in stages.iter_mut().enumerate() {
                    stage.touch(s, now);
                    let latest = &mut stage.inputs[s].latest;
                    *latest = Some(latest.map_or(mark / d, |l| l.max(mark / d)));
                    stage.watermark(k, d, &mut counted);
                }
            }
            Action::End { source } => {
                for (k, stage) in stages.iter_mut().enumerate() {
                    stage.inputs[*source].present = false;
                    if stage.inputs.iter().any(|i| i.present) {
                        stage.watermark(k, d, &mut counted);
                    }
                }
            }
        }
    }
    for (k, stage) in stages.iter_mut().enumerate() {
        for (w, ids) in std::mem::take(&mut stage.held) {
            counted.insert((k, w * d), ids);
        }
    }
    for ids in counted.values_mut() {
        ids.sort_unstable();
    }
    late.sort_unstable();
    Outcome { counted, late }
}

// ----- the flow -----

fn run(case: &Case) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut streams = Vec::new();
        for s in 0..case.sources {
            let mut events = Vec::new();
            let mut end = 0;
            for (at, action) in &case.timeline {
                match action {
                    Action::Burst {
                        source,
                        events: burst,
                    } if *source == s => {
                        events.extend(burst.iter().map(|e| (*at, *e)));
                    }
                    Action::End { source } if *source == s => end = *at,
                    _ => {}
                }
            }
            streams.push(timed(events, Some(end)));
        }
        let late = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&late);
        let mut window = Window::fixed(Duration::from_millis(case.window_ms), |e: &Event| e.1)
            .on_late(move |events: Vec<Event>| {
                sink.lock().unwrap().extend(events.into_iter().map(|e| e.0))
            });
        if let Some(idle) = case.idle {
            window = window.idle_timeout(Duration::from_millis(idle));
        }
        let partition = Partition::by_hash(route)
            .stages(case.partitions)
            .max_demand(case.demand.0)
            .min_demand(case.demand.1);
        let partitioned = if case.via_layer {
            let flows = streams.into_iter().map(|s| {
                Flow::from_stream(s)
                    .stages(1)
                    .max_demand(case.source_demand)
                    .map(|e| e)
            });
            Flow::merge_partitioned(flows, partition)
        } else {
            Flow::from_streams(streams)
                .max_demand(case.source_demand)
                .partition(partition)
        };
        let flow = partitioned
            .window(window)
            .reduce(Vec::new, |ids: &mut Vec<u32>, e: Event| ids.push(e.0))
            .on_trigger(|ids, t: &Trigger| {
                if t.name == TriggerName::Done && !ids.is_empty() {
                    vec![(t.partition, t.window, std::mem::take(ids))]
                } else {
                    Vec::new()
                }
            });
        let got = tokio::time::timeout(Duration::from_secs(24 * 3600), flow.collect())
            .await
            .expect("the flow hung")
            .expect("the flow failed");
        let mut counted = BTreeMap::new();
        for (stage, window, mut ids) in got {
            ids.sort_unstable();
            assert!(
                counted.insert((stage, window), ids).is_none(),
                "window {window} of stage {stage} done twice"
            );
        }
        let mut late = late.lock().unwrap().clone();
        late.sort_unstable();
        Outcome { counted, late }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_event_is_counted_once_or_late_as_the_reference_says(case in case()) {
        let got = run(&case);
        let all: Vec<u32> = case
            .timeline
            .iter()
            .flat_map(|(_, a)| match a {
                Action::Burst { events, .. } => events.iter().map(|e| e.0).collect(),
                Action::End { .. } => Vec::new(),
            })
            .collect();
        let mut seen: Vec<u32> = got.counted.values().flatten().copied().chain(got.late.iter().copied()).collect();
        seen.sort_unstable();
        let mut all_sorted = all.clone();
        all_sorted.sort_unstable();
        prop_assert_eq!(&seen, &all_sorted, "every event once, counted or late");
        let expected = reference(&case);
        prop_assert_eq!(got, expected);
    }
}
