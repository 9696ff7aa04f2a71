//! Windows and their triggers, as values (Flow's `Flow.Window`).

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stage::Packet;

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
    pub(crate) late: Option<LateEvents<T>>,
    lateness_misused: bool,
    custom: Option<Custom>,
}

pub(crate) enum Windowing<T> {
    Global,
    Count(usize),
    Periodic(Duration),
    Fixed {
        duration: Duration,
        by: Arc<dyn Fn(&T) -> u64 + Send + Sync>,
        lateness: Duration,
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
            } => Windowing::Fixed {
                duration: *duration,
                by: Arc::clone(by),
                lateness: *lateness,
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
            lateness_misused: self.lateness_misused,
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
                duration, lateness, ..
            } => format!("fixed({duration:?}, lateness {lateness:?})"),
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
            lateness_misused: false,
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
    /// milliseconds). A window is done once every upstream producer of the stage has sent an
    /// event of a later window. Must be set before the layer's operations, since `by` reads
    /// the layer's input events.
    pub fn fixed(duration: Duration, by: impl Fn(&T) -> u64 + Send + Sync + 'static) -> Self {
        Window::of(Windowing::Fixed {
            duration,
            by: Arc::new(by),
            lateness: Duration::ZERO,
        })
    }

    /// For fixed windows: when a window's watermark passes, fire
    /// [`Watermark`](crate::TriggerName::Watermark) and keep accepting its late events for
    /// `lateness` more (processing time) before it is done. An error for other windows.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        if let Windowing::Fixed { lateness: l, .. } = &mut self.windowing {
            *l = lateness;
        } else {
            self.lateness_misused = true;
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
    /// window older than any open one) go, instead of being dropped silently.
    pub fn late_events(mut self, sink: LateEvents<T>) -> Self {
        self.late = Some(sink);
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
        /// Where the batch is cut.
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
    /// An invalid setting, reported when the flow starts.
    pub(crate) invalid: Option<(&'static str, String)>,
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
            invalid: None,
        }
    }
}

impl<T: Send + 'static> Window<T> {
    pub(crate) fn erase(self) -> StageWindow {
        let mut invalid = None;
        if self.every == Some(0) {
            invalid = Some(("trigger_every", "must be at least 1, got 0".to_owned()));
        }
        if self.lateness_misused {
            invalid = Some(("allowed_lateness", "is only for fixed windows".to_owned()));
        }
        if self.periodically.contains(&Duration::ZERO) {
            invalid = Some((
                "trigger_periodically",
                "must be longer than zero".to_owned(),
            ));
        }
        let kind = match self.windowing {
            Windowing::Global => StageWindowing::Global,
            Windowing::Count(n) => {
                if n == 0 {
                    invalid = Some(("count", "must be at least 1, got 0".to_owned()));
                }
                StageWindowing::Count(n.max(1))
            }
            Windowing::Periodic(d) => {
                if d.is_zero() {
                    invalid = Some(("periodic", "must be longer than zero".to_owned()));
                }
                StageWindowing::Periodic(d)
            }
            Windowing::Fixed {
                duration,
                by,
                lateness,
            } => {
                let duration_ms = duration.as_millis() as u64;
                if duration_ms == 0 {
                    invalid = Some(("fixed", "must be at least 1 ms".to_owned()));
                }
                let ms = duration_ms.max(1);
                let split: Split = Arc::new(move |packet: Packet| split_runs(packet, &*by, ms));
                let late = self.late.map(|sink| {
                    Arc::new(move |packet: Packet| {
                        if let Ok(events) = packet.downcast::<T>() {
                            sink.push(events);
                        }
                    }) as LateSink
                });
                StageWindowing::Fixed {
                    duration_ms: ms,
                    lateness,
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
            invalid,
        }
    }

    pub(crate) fn is_fixed(&self) -> bool {
        matches!(self.windowing, Windowing::Fixed { .. })
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
