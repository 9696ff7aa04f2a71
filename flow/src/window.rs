//! Windows and their triggers, as values (Flow's `Flow.Window`).

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stage::Packet;

use crate::materialise::Clock;
use crate::plan::{WindowInfo, WindowKind};

/// How a layer's reducer splits its input into windows, and when it emits.
///
/// Each stage has its own windows: a window fires once per stage (partition). Every window
/// ends with a [`Done`](crate::TriggerName::Done) trigger; others can be added with
/// [`trigger_every`](Window::trigger_every) and
/// [`trigger_periodically`](Window::trigger_periodically).
///
/// | window | what a window holds | when it is done |
/// |---|---|---|
/// | [`global`](Window::global) | the whole input | the stage's inputs have finished |
/// | [`count(n)`](Window::count) | `n` events entering the stage | its `n`-th event, and the current (even empty) one at the end |
/// | [`periodic(d)`](Window::periodic) | what arrives in `d` of processing time | `d` after it started, and the current one at the end |
/// | [`fixed(d, by)`](Window::fixed) | events whose time `by(e)` (in ms) falls in `[k*d, (k+1)*d)` | every upstream producer has moved past it (its watermark), plus the allowed lateness |
///
/// # Examples
///
/// ```
/// use flow::{Flow, Window};
///
/// // Sum each window of 10 events.
/// let sums = Flow::from_iter(1..=25)
///     .stages(1)
///     .window(Window::count(10))
///     .reduce(|| 0, |sum, x| *sum += x)
///     .emit_state()
///     .collect_blocking()
///     .unwrap();
/// assert_eq!(sums, [55, 155, 115]);
/// ```
pub struct Window<T> {
    pub(crate) windowing: Windowing<T>,
    pub(crate) every: Option<usize>,
    pub(crate) periodically: Vec<Duration>,
    pub(crate) late: Option<LateCallback<T>>,
    /// An option given to a window that does not take it.
    misused: Option<&'static str>,
    custom: Option<Custom>,
}

/// Where a fixed window's late events go.
pub(crate) type LateCallback<T> = Arc<dyn Fn(Vec<T>) + Send + Sync>;

pub(crate) enum Windowing<T> {
    Global,
    Count(usize),
    Periodic(Duration),
    Fixed {
        duration: Duration,
        by: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
        lateness: Duration,
        idle: Option<Duration>,
    },
}

impl<T> Clone for Windowing<T> {
    fn clone(&self) -> Self {
        match self {
            Windowing::Global => Windowing::Global,
            Windowing::Count(n) => Windowing::Count(*n),
            Windowing::Periodic(d) => Windowing::Periodic(*d),
            Windowing::Fixed {
                duration,
                by,
                lateness,
                idle,
            } => Windowing::Fixed {
                duration: *duration,
                by: Arc::clone(by),
                lateness: *lateness,
                idle: *idle,
            },
        }
    }
}

impl<T> Clone for Window<T> {
    fn clone(&self) -> Self {
        Window {
            windowing: self.windowing.clone(),
            every: self.every,
            periodically: self.periodically.clone(),
            late: self.late.clone(),
            misused: self.misused,
            custom: self.custom.clone(),
        }
    }
}

impl<T> fmt::Debug for Window<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.windowing {
            Windowing::Global => "global".to_owned(),
            Windowing::Count(n) => format!("count({n})"),
            Windowing::Periodic(d) => format!("periodic({d:?})"),
            Windowing::Fixed {
                duration,
                lateness,
                idle,
                ..
            } => format!("fixed({duration:?}, lateness {lateness:?}, idle timeout {idle:?})"),
        };
        f.debug_struct("Window")
            .field("kind", &kind)
            .field("every", &self.every)
            .field("periodically", &self.periodically)
            .finish()
    }
}

impl<T> Window<T> {
    fn of(windowing: Windowing<T>) -> Self {
        Window {
            windowing,
            every: None,
            periodically: Vec::new(),
            late: None,
            misused: None,
            custom: None,
        }
    }

    /// The global window: the whole input of a stage, done when its inputs finish.
    pub fn global() -> Self {
        Window::of(Windowing::Global)
    }

    /// Windows of `n` events entering a stage (counted before the layer's mappers). `n` must
    /// be at least 1 (checked when the flow starts).
    pub fn count(n: usize) -> Self {
        Window::of(Windowing::Count(n))
    }

    /// Windows of `duration` of processing time, timed per stage from the stage's start.
    pub fn periodic(duration: Duration) -> Self {
        Window::of(Windowing::Periodic(duration))
    }

    /// Windows of event time: event `e` belongs to window `by(e) / duration` (`by` gives
    /// milliseconds). A window is done once every input of the stage has moved past it: its
    /// *watermark*. The stages feeding the window's layer measure event time with `by` on
    /// what they emit and send every stage of the layer their watermark, so a stage that gets
    /// no events (a partition no key reaches) still closes its windows as its inputs' time
    /// passes. Must be set before the layer's operations, since `by` reads the layer's input
    /// events. See `docs/semantics.md`, *Flow: event time and watermarks*.
    pub fn fixed(duration: Duration, by: impl Fn(&T) -> u64 + Send + Sync + 'static) -> Self {
        Window::of(Windowing::Fixed {
            duration,
            by: Arc::new(by),
            lateness: Duration::ZERO,
            idle: None,
        })
    }

    /// For fixed windows: when a window's watermark passes, fire
    /// [`Watermark`](crate::TriggerName::Watermark) and keep accepting its late events for
    /// `lateness` more (processing time) before it is done. An error for other windows.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        if let Windowing::Fixed { lateness: l, .. } = &mut self.windowing {
            *l = lateness;
        } else {
            self.misused = Some("allowed_lateness");
        }
        self
    }

    /// For fixed windows: an input that sends nothing (no event, no watermark) for
    /// `timeout` of processing time stops holding the watermark back until it sends again,
    /// so one idle source does not keep every window open. Off by default: an input that has
    /// not finished holds windows open however long it is silent. When an idle input comes
    /// back, the watermark does not go back: its events older than it are late. An error for
    /// other windows, and for a zero timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use flow::Window;
    ///
    /// let window = Window::fixed(Duration::from_secs(1), |t: &u64| *t)
    ///     .idle_timeout(Duration::from_secs(5));
    /// # let _ = window;
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        if let Windowing::Fixed { idle, .. } = &mut self.windowing {
            *idle = Some(timeout);
        } else {
            self.misused = Some("idle_timeout");
        }
        self
    }

    /// Fires an [`Every`](crate::TriggerName::Every) trigger each time `n` more events have
    /// entered a stage's current window (counted before the layer's mappers, so batches are
    /// split to fire right after the `n`-th). `n` must be at least 1.
    pub fn trigger_every(mut self, n: usize) -> Self {
        self.every = Some(n);
        self
    }

    /// Fires a [`Periodically`](crate::TriggerName::Periodically) trigger every `period` of
    /// processing time, per stage, on the current window (every held window, for fixed ones),
    /// whether or not anything changed.
    pub fn trigger_periodically(mut self, period: Duration) -> Self {
        self.periodically.push(period);
        self
    }

    /// A custom ("punctuation") trigger: `trigger_op` sees each batch of raw events entering
    /// the window, with a state made by `init` at the start of each window, and decides with
    /// a [`Punctuation`] whether to reduce the batch, reduce other events instead, or fire a
    /// [`Custom`](crate::TriggerName::Custom) trigger in the middle of it. Replaces
    /// [`trigger_every`](Window::trigger_every).
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Punctuation, Window};
    ///
    /// // Fire "zero" right after every 0 in the input.
    /// let sums = Flow::from_iter([1, 2, 0, 3, 0, 4])
    ///     .stages(1)
    ///     .window(Window::global().trigger(|| (), |events: &[i32], _: &mut ()| {
    ///         match events.iter().position(|&x| x == 0) {
    ///             Some(at) => Punctuation::TriggerAt { name: "zero".into(), at: at + 1 },
    ///             None => Punctuation::Cont,
    ///         }
    ///     }))
    ///     .reduce(|| 0, |sum, x| *sum += x)
    ///     .on_trigger(|sum, _| vec![std::mem::take(sum)])
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(sums, [3, 3, 4]);
    /// ```
    pub fn trigger<A, I, F>(mut self, init: I, trigger_op: F) -> Self
    where
        T: Send + 'static,
        A: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&[T], &mut A) -> Punctuation<T> + Send + Sync + 'static,
    {
        self.every = None;
        self.custom = Some(Custom {
            init: Arc::new(move || Box::new(init()) as TriggerAcc),
            step: Arc::new(move |packet: Packet, state: &mut TriggerAcc| {
                let Ok(mut events) = packet.downcast::<T>() else {
                    unreachable!("flow wiring: a custom trigger reads the layer's input events");
                };
                let state = state.downcast_mut::<A>().expect("the trigger's own state");
                let mut steps = Vec::new();
                // The op answered `TriggerAt { at: 0 }` for exactly these events: asked again,
                // the same answer would fire for ever.
                let mut fired_at_start = false;
                loop {
                    match trigger_op(&events, state) {
                        Punctuation::Cont => {
                            steps.push(Step::Process(Packet::new(events)));
                            return steps;
                        }
                        Punctuation::Replace(replaced) => {
                            steps.push(Step::Process(Packet::new(replaced)));
                            return steps;
                        }
                        Punctuation::TriggerAt { name, at } => {
                            if at == 0 && !events.is_empty() {
                                assert!(
                                    !fired_at_start,
                                    "the custom trigger answered TriggerAt {{ name: {name:?}, at: 0 }} \
                                     twice for the same events, so it would fire for ever: \
                                     remember in its state that it fired"
                                );
                                fired_at_start = true;
                            } else {
                                fired_at_start = false;
                            }
                            let pos = events.split_off(at.min(events.len()));
                            steps.push(Step::Process(Packet::new(events)));
                            steps.push(Step::Fire(name));
                            if pos.is_empty() {
                                return steps;
                            }
                            events = pos;
                        }
                    }
                }
            }),
        });
        self
    }

    /// For fixed windows: where events that arrive after their window was done (or for a
    /// window older than any open one) go, instead of being dropped silently. Replaces an
    /// [`on_late`](Window::on_late) callback.
    pub fn late_events(self, sink: LateEvents<T>) -> Self
    where
        T: Send + 'static,
    {
        self.on_late(move |events| sink.push(events))
    }

    /// For fixed windows: calls `late_op` with each run of late events as it arrives, in the
    /// stage that found them late (so a panic in it fails the flow). Replaces a
    /// [`late_events`](Window::late_events) collector. To consume late events as a stream,
    /// send them into a channel.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Window};
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let window = Window::fixed(Duration::from_secs(1), |t: &u64| *t)
    ///     .on_late(move |late: Vec<u64>| late.into_iter().for_each(|t| tx.send(t).unwrap()));
    /// Flow::from_iter([0u64, 1500, 200, 3000])
    ///     .stages(1)
    ///     .max_demand(1)
    ///     .window(window)
    ///     .reduce(|| 0, |n, _| *n += 1)
    ///     .emit_nothing()
    ///     .run_blocking()
    ///     .unwrap();
    /// assert_eq!(rx.try_iter().collect::<Vec<_>>(), [200]);
    /// ```
    pub fn on_late(mut self, late_op: impl Fn(Vec<T>) + Send + Sync + 'static) -> Self {
        if matches!(self.windowing, Windowing::Fixed { .. }) {
            self.late = Some(Arc::new(late_op));
        } else {
            self.misused = Some("on_late");
        }
        self
    }
}

/// What a custom trigger ([`Window::trigger`]) decides for a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Punctuation<T> {
    /// Reduce the batch.
    Cont,
    /// Reduce these events instead of the batch (which may drop or inject events).
    Replace(Vec<T>),
    /// Reduce the batch's first `at` events, fire the trigger `name`, then decide again for
    /// the rest.
    TriggerAt {
        /// The trigger's name, given to `on_trigger` as
        /// [`TriggerName::Custom`](crate::TriggerName::Custom).
        name: String,
        /// Where the batch is cut. `0` fires before the batch; the trigger is then asked
        /// again for the same events, and answering `0` once more fails the stage (it would
        /// fire for ever), so a trigger that fires before an event remembers, in its state,
        /// that it did.
        at: usize,
    },
}

/// A custom trigger's own state, type-erased.
pub(crate) type TriggerAcc = Box<dyn Any + Send>;

/// Runs a custom trigger over one batch.
pub(crate) type StepFn = dyn Fn(Packet, &mut TriggerAcc) -> Vec<Step> + Send + Sync;

/// A custom trigger with its types erased.
#[derive(Clone)]
pub(crate) struct Custom {
    pub(crate) init: Arc<dyn Fn() -> TriggerAcc + Send + Sync>,
    pub(crate) step: Arc<StepFn>,
}

/// What a custom trigger makes a stage do with a batch.
pub(crate) enum Step {
    Process(Packet),
    Fire(String),
}

/// Collects the events that arrived too late for their fixed window, and counts them.
///
/// # Examples
///
/// ```
/// use flow::{Flow, LateEvents, Window};
/// use std::time::Duration;
///
/// let late = LateEvents::new();
/// let _ = Flow::from_iter([0u64, 1500, 200, 3000])
///     .stages(1)
///     .max_demand(1)
///     .window(Window::fixed(Duration::from_secs(1), |t: &u64| *t).late_events(late.clone()))
///     .reduce(Vec::new, |v, t| v.push(t))
///     .emit_state()
///     .collect_blocking()
///     .unwrap();
/// assert_eq!(late.count(), 1);
/// assert_eq!(late.take(), [200]);
/// ```
pub struct LateEvents<T> {
    inner: Arc<Late<T>>,
}

struct Late<T> {
    count: AtomicU64,
    events: Mutex<Vec<T>>,
}

impl<T> Clone for LateEvents<T> {
    fn clone(&self) -> Self {
        LateEvents {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for LateEvents<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LateEvents")
            .field("count", &self.count())
            .finish()
    }
}

impl<T> Default for LateEvents<T> {
    fn default() -> Self {
        LateEvents::new()
    }
}

impl<T> LateEvents<T> {
    /// An empty collector.
    pub fn new() -> Self {
        LateEvents {
            inner: Arc::new(Late {
                count: AtomicU64::new(0),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    /// How many late events arrived since the start.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// Takes the late events collected so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.inner.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn push(&self, events: Vec<T>) {
        self.inner
            .count
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.inner
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(events);
    }
}

/// A window as a stage runs it, with the event type erased.
#[derive(Clone)]
pub(crate) struct StageWindow {
    pub(crate) windowing: StageWindowing,
    pub(crate) every: Option<usize>,
    pub(crate) periodically: Vec<Duration>,
    pub(crate) custom: Option<Custom>,
}

/// Cuts a packet into runs of events of the same fixed window: `(window id, run)`.
pub(crate) type Split = Arc<dyn Fn(Packet) -> Vec<(u64, Packet)> + Send + Sync>;
/// Takes a run of late events.
pub(crate) type LateSink = Arc<dyn Fn(Packet) + Send + Sync>;

#[derive(Clone)]
pub(crate) enum StageWindowing {
    Global,
    Count(usize),
    Periodic(Duration),
    Fixed {
        duration_ms: u64,
        lateness: Duration,
        idle: Option<Duration>,
        split: Split,
        late: Option<LateSink>,
    },
}

impl Default for StageWindow {
    fn default() -> Self {
        StageWindow {
            windowing: StageWindowing::Global,
            every: None,
            periodically: Vec::new(),
            custom: None,
        }
    }
}

impl<T: Send + 'static> Window<T> {
    /// The option of the window that breaks its rule, if one does.
    fn invalid(&self) -> Option<(&'static str, String)> {
        let mut invalid = None;
        if self.every == Some(0) {
            invalid = Some(("trigger_every", "must be at least 1, got 0".to_owned()));
        }
        if let Some(option) = self.misused {
            invalid = Some((option, "is only for fixed windows".to_owned()));
        }
        if self.periodically.contains(&Duration::ZERO) {
            invalid = Some((
                "trigger_periodically",
                "must be longer than zero".to_owned(),
            ));
        }
        match &self.windowing {
            Windowing::Global => {}
            Windowing::Count(0) => {
                invalid = Some(("count", "must be at least 1, got 0".to_owned()));
            }
            Windowing::Count(_) => {}
            Windowing::Periodic(d) => {
                if d.is_zero() {
                    invalid = Some(("periodic", "must be longer than zero".to_owned()));
                }
            }
            Windowing::Fixed { duration, idle, .. } => {
                if duration.as_millis() == 0 {
                    invalid = Some(("fixed", "must be at least 1 ms".to_owned()));
                }
                if idle.is_some_and(|d| d.is_zero()) {
                    invalid = Some(("idle_timeout", "must be longer than zero".to_owned()));
                }
            }
        }
        invalid
    }

    /// The window as the plan shows and checks it.
    pub(crate) fn info(&self) -> WindowInfo {
        let kind = match &self.windowing {
            Windowing::Global => WindowKind::Global,
            Windowing::Count(n) => WindowKind::Count(*n),
            Windowing::Periodic(d) => WindowKind::Periodic(*d),
            Windowing::Fixed {
                duration,
                lateness,
                idle,
                ..
            } => WindowKind::Fixed {
                duration_ms: duration.as_millis() as u64,
                lateness: *lateness,
                idle: *idle,
            },
        };
        WindowInfo {
            kind,
            every: self.every,
            periodically: self.periodically.clone(),
            custom: self.custom.is_some(),
            on_late: self.late.is_some(),
            invalid: self.invalid(),
        }
    }

    /// How the window reads event time, for the stages that feed its layer.
    pub(crate) fn clock(&self) -> Option<Clock<T>> {
        match &self.windowing {
            Windowing::Fixed { by, idle, .. } => Some(Clock {
                by: Arc::clone(by),
                idle: *idle,
            }),
            _ => None,
        }
    }

    /// Whether the window reads the layer's input events (a fixed window's `by`, a custom
    /// trigger), so that it must see them as they enter the layer.
    pub(crate) fn reads_events(&self) -> bool {
        matches!(self.windowing, Windowing::Fixed { .. }) || self.custom.is_some()
    }

    pub(crate) fn erase(self) -> StageWindow {
        let kind = match self.windowing {
            Windowing::Global => StageWindowing::Global,
            Windowing::Count(n) => StageWindowing::Count(n.max(1)),
            Windowing::Periodic(d) => StageWindowing::Periodic(d),
            Windowing::Fixed {
                duration,
                by,
                lateness,
                idle,
            } => {
                let ms = (duration.as_millis() as u64).max(1);
                let split: Split = Arc::new(move |packet: Packet| split_runs(packet, &*by, ms));
                let late = self.late.map(|sink| {
                    Arc::new(move |packet: Packet| {
                        if let Ok(events) = packet.downcast::<T>() {
                            sink(events);
                        }
                    }) as LateSink
                });
                StageWindowing::Fixed {
                    duration_ms: ms,
                    lateness,
                    idle,
                    split,
                    late,
                }
            }
        };
        StageWindow {
            windowing: kind,
            every: self.every,
            periodically: self.periodically,
            custom: self.custom,
        }
    }
}

fn split_runs<T: Send + 'static>(
    packet: Packet,
    by: &dyn Fn(&T) -> u64,
    ms: u64,
) -> Vec<(u64, Packet)> {
    let Ok(events) = packet.downcast::<T>() else {
        unreachable!("flow wiring: a fixed window reads the layer's input events");
    };
    let mut runs: Vec<(u64, Vec<T>)> = Vec::new();
    for e in events {
        let id = by(&e) / ms;
        match runs.last_mut() {
            Some((last, run)) if *last == id => run.push(e),
            _ => runs.push((id, vec![e])),
        }
    }
    runs.into_iter()
        .map(|(id, run)| (id, Packet::new(run)))
        .collect()
}
