//! The stage every layer of a flow runs: packets in, its windows' logic, events out.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use stage::{
    Cancel, Cast, Consumer, Context, Info, Packet, Producer, Reason, SubscribeOptions,
    SubscriptionId, SubscriptionMode, TimerRef,
};
use tokio::time::Instant;

use crate::logic::{Factory, Logic, Position};
use crate::materialise::{Clock, Directory, SentCounts};
use crate::source::{Chunks, Reader};
use crate::trigger::{Trigger, TriggerName, WindowType};
use crate::watermark::{Input, Mark, MarksIn, Watermarks};
use crate::window::{Custom, StageWindow, StageWindowing, Step};

type TriggerState = Option<Box<dyn std::any::Any + Send>>;

/// Makes the [`Trigger`]s of one stage.
#[derive(Clone, Copy)]
struct Triggers {
    pos: Position,
    window_type: WindowType,
    /// Fixed windows report their start in ms.
    scale: u64,
}

impl Triggers {
    fn make(&self, window: u64, name: TriggerName) -> Trigger {
        Trigger {
            partition: self.pos.index,
            partitions: self.pos.count,
            window_type: self.window_type,
            window: window * self.scale,
            name,
        }
    }
}

/// Feeds a batch to one window's logic, splitting it where `trigger_every` or a custom
/// trigger fires.
#[allow(clippy::too_many_arguments)]
fn feed_window<O>(
    logic: &mut Box<dyn Logic<O>>,
    since: &mut usize,
    state: &mut TriggerState,
    mut batch: Packet,
    every: Option<usize>,
    custom: Option<&Custom>,
    triggers: Triggers,
    window: u64,
    out: &mut Vec<O>,
) {
    if let Some(custom) = custom {
        let state = state.get_or_insert_with(|| (custom.init)());
        for step in (custom.step)(batch, state) {
            match step {
                Step::Process(events) if events.is_empty() => {}
                Step::Process(events) => append(out, logic.process(events)),
                Step::Fire(name) => append(
                    out,
                    logic.trigger(&triggers.make(window, TriggerName::Custom(name))),
                ),
            }
        }
        return;
    }
    let Some(every) = every else {
        append(out, logic.process(batch));
        return;
    };
    loop {
        let room = every - *since;
        if batch.len() < room {
            *since += batch.len();
            append(out, logic.process(batch));
            return;
        }
        let rest = batch.split_off(room);
        append(out, logic.process(batch));
        *since = 0;
        append(
            out,
            logic.trigger(&triggers.make(window, TriggerName::Every(every))),
        );
        if rest.is_empty() {
            return;
        }
        batch = rest;
    }
}

/// Timer `i` fired: 0 is the periodic window, `1 + k` is `trigger_periodically` number `k`.
pub(crate) struct Tick(usize);

/// A fixed window's allowed lateness is over.
pub(crate) struct LatenessOver(u64);

/// Read on from the local source.
pub(crate) struct Pull;

/// Fire the named trigger (from outside: `FlowHandle::trigger`).
pub(crate) struct Fire(pub(crate) String);

/// The consumer layer's stages are known: watermarks owed can go out.
pub(crate) struct Wired;

/// Stop reading the local source (a graceful stop of the flow): finish as if it had run out.
pub(crate) struct Drain;

/// Send the watermark now: every event emitted before it asked has been dispatched.
pub(crate) struct MarkDue(u64);

/// Some input may have been silent for the idle timeout.
pub(crate) struct IdleCheck;

/// What a stage feeding a fixed-window layer keeps to send it watermarks: the latest event
/// time it emitted for each of its inputs (measured with the window's clock), what its
/// dispatcher sent each consumer, and where the consumer's stages are.
pub(crate) struct Measure<O> {
    clock: Clock<O>,
    progress: Watermarks,
    counts: SentCounts,
    directory: Arc<Directory>,
    /// The last watermark sent: marks never go back.
    sent: Option<u64>,
    /// A [`MarkDue`] is on its way.
    queued: bool,
    /// Something was emitted (or changed) since it was asked for.
    again: bool,
    /// A mark could not go out yet: the consumer's stages were not known.
    owed: bool,
}

impl<O> Measure<O> {
    pub(crate) fn new(clock: Clock<O>, counts: SentCounts, directory: Arc<Directory>) -> Self {
        Measure {
            progress: Watermarks::new(clock.idle),
            clock,
            counts,
            directory,
            sent: None,
            queued: false,
            again: false,
            owed: false,
        }
    }

    /// The watermark to send: the least time over the inputs, never below the last sent.
    fn watermark(&self) -> Option<u64> {
        match (self.progress.least(), self.sent) {
            (Some(least), Some(sent)) => Some(least.max(sent)),
            (least, sent) => least.or(sent),
        }
    }
}

/// A periodic timer: when it fires next, and how to cancel it.
struct Periodic {
    period: Duration,
    next: Instant,
    timer: TimerRef,
}

/// The window the stage is filling (global, count, periodic).
struct Current<O> {
    id: u64,
    logic: Box<dyn Logic<O>>,
    count: usize,
    since: usize,
    state: TriggerState,
}

/// A fixed window the stage holds.
struct Held<O> {
    logic: Box<dyn Logic<O>>,
    since: usize,
    state: TriggerState,
}

/// Fixed windows (`docs/semantics.md`, *Flow: reducing, windows and triggers*).
struct Fixed<O> {
    held: BTreeMap<u64, Held<O>>,
    /// Each input's most recent window: from its events, or from its watermarks for inputs
    /// that send them.
    wm: Watermarks,
    /// The lowest window not closed yet.
    all: Option<u64>,
    /// The watermark the stage has reached (at least `all`): a window below it is late
    /// unless held, also in a stage that held no window when the watermark passed.
    floor: Option<u64>,
    /// Windows past their watermark, waiting for their lateness to end.
    in_lateness: std::collections::BTreeSet<u64>,
    /// Windows being closed, a step per turn.
    closing: Option<Closing>,
}

/// Windows a stage has yet to close: `next..end`, at the watermark or (`finish`) at the end.
#[derive(Clone, Copy, Debug)]
struct Closing {
    next: u64,
    end: u64,
    finish: bool,
}

/// How many fixed windows a stage closes in one turn. An event far ahead in event time closes
/// every window up to it, each empty one with a trigger of its own (a million for a 1,000 s
/// jump over 1 ms windows): they are closed this many at a time, the stage sending itself
/// [`CloseMore`] for the rest, so that cancels, calls and timers get in between.
const CLOSE_STEP: u64 = 1024;

/// Close the next [`CLOSE_STEP`] windows.
pub(crate) struct CloseMore;

/// How many batches a stage reads from its local source before it lets its other messages
/// (timers, cancellations) in: it goes on by sending itself [`Pull`].
const PULL_BATCHES: usize = 16;

/// A source the stage reads itself (it then runs as a producer, with no subscriptions).
struct Local {
    reader: Box<dyn Reader>,
    /// Events downstream asked for and not yet emitted (negative: emitted ahead, buffered).
    credit: i64,
    /// A [`Pull`] is on its way.
    pulling: bool,
}

enum State<O> {
    /// Before `handle_start`: the logic is made in the stage's own task, so that a panic in a
    /// user's `init` fails the stage (and the flow) instead of its caller.
    Unstarted,
    Single(Current<O>),
    Fixed(Fixed<O>),
}

/// One stage of a layer: a producer-consumer of packets, in automatic mode (the engine cuts
/// each packet into batches of `max - min` and refills at `min`), running its windows' logic.
/// A stage with a local source runs as a producer instead: it reads batches of `max` events
/// from the source while its consumers' demand is unmet.
pub(crate) struct LayerStage<O: Send + 'static> {
    pos: Position,
    max: usize,
    /// The subscriptions to its inputs (the producers whose watermarks it follows).
    inputs: Vec<SubscriptionId>,
    consumers: usize,
    finished: bool,
    factory: Factory<O>,
    window: StageWindow,
    state: State<O>,
    local: Option<Local>,
    periodic: Vec<Periodic>,
    /// Windows whose lateness timer must be set, by the handler that has a context.
    lateness_due: Vec<u64>,
    /// A [`CloseMore`] is on its way.
    closing_scheduled: bool,
    /// The inputs send watermarks, which the fixed windows follow instead of their events.
    marked: bool,
    marks_in: MarksIn,
    /// Set when the next layer follows event time: this stage sends it watermarks.
    measure: Option<Measure<O>>,
    /// Inputs silent this long stop holding windows back (fixed windows, measuring).
    idle_timer: Option<TimerRef>,
}

/// A fresh logic for window `id` of a stage (fixed windows report their start, `id * scale`).
fn make_logic<O>(factory: &Factory<O>, pos: Position, scale: u64, id: u64) -> Box<dyn Logic<O>> {
    let mut logic = factory(pos);
    logic.start(id.saturating_mul(scale));
    logic
}

fn append<O>(out: &mut Vec<O>, mut more: Vec<O>) {
    if out.is_empty() {
        std::mem::swap(out, &mut more);
    } else {
        out.append(&mut more);
    }
}

impl<O: Send + 'static> LayerStage<O> {
    pub(crate) fn new(pos: Position, max: usize, window: StageWindow, factory: Factory<O>) -> Self {
        LayerStage {
            pos,
            max,
            inputs: Vec::new(),
            consumers: 0,
            finished: false,
            factory,
            window,
            state: State::Unstarted,
            local: None,
            periodic: Vec::new(),
            lateness_due: Vec::new(),
            closing_scheduled: false,
            marked: false,
            marks_in: MarksIn::default(),
            measure: None,
            idle_timer: None,
        }
    }

    /// Where the stage sits in its layer.
    pub(crate) fn position(&self) -> Position {
        self.pos
    }

    /// Whether the stage reads a local source (and runs as a producer).
    pub(crate) fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The stage's inputs send watermarks (its fixed windows follow them).
    pub(crate) fn marked(mut self, marked: bool) -> Self {
        self.marked = marked;
        self
    }

    /// The stage sends the next layer watermarks of what it emits.
    pub(crate) fn measure(mut self, measure: Measure<O>) -> Self {
        self.measure = Some(measure);
        self
    }

    /// Every input the stage reads, its local source included.
    fn all_inputs(&self) -> impl Iterator<Item = Input> + '_ {
        let local = self.local.is_some().then_some(None);
        local
            .into_iter()
            .chain(self.inputs.iter().copied().map(Some))
    }

    /// The windows' initial state, made in the stage's task.
    fn initial_state(&self) -> State<O> {
        match self.window.windowing {
            StageWindowing::Fixed { idle, .. } => {
                let now = Instant::now();
                let mut fixed = empty_fixed(idle);
                for input in self.all_inputs() {
                    fixed.wm.add(input, now);
                }
                State::Fixed(fixed)
            }
            _ => State::Single(Current {
                id: 0,
                logic: (self.factory)(self.pos),
                count: 0,
                since: 0,
                state: None,
            }),
        }
    }

    /// The stage reads `chunks` itself rather than subscribing to producers.
    pub(crate) fn local(mut self, chunks: Arc<dyn Chunks>) -> Self {
        self.local = Some(Local {
            reader: chunks.reader(self.max),
            credit: 0,
            pulling: false,
        });
        self
    }

    fn window_type(&self) -> WindowType {
        match self.window.windowing {
            StageWindowing::Global => WindowType::Global,
            StageWindowing::Count(_) => WindowType::Count,
            StageWindowing::Periodic(_) => WindowType::Periodic,
            StageWindowing::Fixed { .. } => WindowType::Fixed,
        }
    }

    fn triggers(&self) -> Triggers {
        Triggers {
            pos: self.pos,
            window_type: self.window_type(),
            scale: match self.window.windowing {
                StageWindowing::Fixed { duration_ms, .. } => duration_ms,
                _ => 1,
            },
        }
    }

    fn trigger(&self, window: u64, name: TriggerName) -> Trigger {
        self.triggers().make(window, name)
    }

    /// The inputs are done: every window fires `Done`.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        for periodic in self.periodic.drain(..) {
            ctx.cancel_timer(periodic.timer);
        }
        if let Some(timer) = self.idle_timer.take() {
            ctx.cancel_timer(timer);
        }
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Unstarted) {
            State::Unstarted => {}
            State::Single(mut current) => {
                let done = self.trigger(current.id, TriggerName::Done);
                append(&mut out, current.logic.trigger(&done));
            }
            State::Fixed(mut fixed) => {
                // Every window from the lowest held (or still to close) to the highest held.
                let low = fixed.held.keys().next().copied();
                let low = match fixed.closing {
                    Some(c) => Some(low.map_or(c.next, |l| l.min(c.next))),
                    None => low,
                };
                if let (Some(low), Some(&high)) = (low, fixed.held.keys().next_back()) {
                    fixed.closing = Some(Closing {
                        next: low,
                        end: high + 1,
                        finish: true,
                    });
                } else {
                    fixed.closing = None;
                }
                self.state = State::Fixed(fixed);
            }
        }
        self.flush(out, ctx);
    }

    /// Closes the next [`CLOSE_STEP`] windows of the range being closed. Returns whether more
    /// remain.
    fn close_some(&mut self, out: &mut Vec<O>) -> bool {
        let lateness = match self.window.windowing {
            StageWindowing::Fixed { lateness, .. } => lateness,
            _ => return false,
        };
        let State::Fixed(fixed) = &mut self.state else {
            return false;
        };
        let Some(closing) = fixed.closing else {
            return false;
        };
        let scale = self.triggers().scale;
        let stop = closing.end.min(closing.next.saturating_add(CLOSE_STEP));
        for id in closing.next..stop {
            let State::Fixed(fixed) = &mut self.state else {
                return false;
            };
            if !closing.finish && fixed.in_lateness.contains(&id) {
                // Already past its watermark: its lateness timer closes it.
                continue;
            }
            fixed.in_lateness.remove(&id);
            if closing.finish || lateness.is_zero() {
                let mut logic = match fixed.held.remove(&id) {
                    Some(held) => held.logic,
                    None => make_logic(&self.factory, self.pos, scale, id),
                };
                let done = self.trigger(id, TriggerName::Done);
                append(out, logic.trigger(&done));
            } else {
                // The window (a gap one too) waits for late events until its lateness is over.
                let (factory, pos) = (&self.factory, self.pos);
                fixed.held.entry(id).or_insert_with(|| Held {
                    logic: make_logic(factory, pos, scale, id),
                    since: 0,
                    state: None,
                });
                fixed.in_lateness.insert(id);
                let mark = self.trigger(id, TriggerName::Watermark);
                let State::Fixed(fixed) = &mut self.state else {
                    return false;
                };
                let held = fixed.held.get_mut(&id).expect("held");
                append(out, held.logic.trigger(&mark));
                self.lateness_due.push(id);
            }
        }
        let State::Fixed(fixed) = &mut self.state else {
            return false;
        };
        if stop >= closing.end {
            fixed.closing = None;
            false
        } else {
            fixed.closing = Some(Closing {
                next: stop,
                ..closing
            });
            true
        }
    }

    /// One batch of raw input, into its window(s).
    fn process(&mut self, batch: Packet, sub: Input, out: &mut Vec<O>) {
        match &self.window.windowing {
            StageWindowing::Global | StageWindowing::Periodic(_) => {
                self.feed_current(batch, None, out)
            }
            StageWindowing::Count(n) => {
                let n = *n;
                self.feed_current(batch, Some(n), out)
            }
            StageWindowing::Fixed { split, .. } => {
                let len = batch.len();
                let runs = split(batch);
                for (window, run) in runs {
                    self.feed_fixed(sub, window, run, out);
                }
                if let (true, Some(id)) = (self.marked, sub) {
                    if let Some(time) = self.marks_in.handled(id, len) {
                        self.follow_mark(id, time);
                    }
                }
                self.watermark(out);
            }
        }
    }

    /// An input's watermark (event time in ms) is due: its fixed windows follow it.
    fn follow_mark(&mut self, id: SubscriptionId, time: u64) {
        let StageWindowing::Fixed { duration_ms, .. } = self.window.windowing else {
            return;
        };
        if let State::Fixed(fixed) = &mut self.state {
            fixed
                .wm
                .advance(Some(id), time / duration_ms, Instant::now());
        }
    }

    /// Feeds the current window, starting the next count window after its `n`-th event.
    fn feed_current(&mut self, mut batch: Packet, limit: Option<usize>, out: &mut Vec<O>) {
        let triggers = self.triggers();
        loop {
            let State::Single(current) = &mut self.state else {
                return;
            };
            let room = limit.map_or(usize::MAX, |n| n - current.count);
            let rest = (batch.len() > room).then(|| batch.split_off(room));
            current.count += batch.len();
            feed_window(
                &mut current.logic,
                &mut current.since,
                &mut current.state,
                batch,
                self.window.every,
                self.window.custom.as_ref(),
                triggers,
                current.id,
                out,
            );
            if let Some(n) = limit {
                self.end_current_if(n, out);
            }
            match rest {
                Some(rest) if !rest.is_empty() => batch = rest,
                _ => return,
            }
        }
    }

    /// Ends the current count window once it holds `n` events.
    fn end_current_if(&mut self, n: usize, out: &mut Vec<O>) {
        let State::Single(current) = &self.state else {
            return;
        };
        if current.count == n {
            self.next_window(out);
        }
    }

    /// The current (count or periodic) window is done; the next one starts fresh.
    fn next_window(&mut self, out: &mut Vec<O>) {
        let State::Single(current) = &mut self.state else {
            return;
        };
        let id = current.id;
        let fresh = make_logic(&self.factory, self.pos, 1, id + 1);
        let mut old = std::mem::replace(&mut current.logic, fresh);
        current.id += 1;
        current.count = 0;
        current.since = 0;
        current.state = None;
        let done = self.trigger(id, TriggerName::Done);
        append(out, old.trigger(&done));
    }

    /// A run of events of fixed window `window` from input `sub`.
    fn feed_fixed(&mut self, sub: Input, window: u64, run: Packet, out: &mut Vec<O>) {
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        let now = Instant::now();
        if fixed.wm.is_idle(sub) {
            // Back from idleness: it holds the watermark again (which may now move, if it
            // was the only input), before its events are judged, whatever the batch.
            fixed.wm.touch(sub, now);
            self.watermark(out);
        }
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        let latest = fixed.wm.latest(sub);
        if self.marked && sub.is_some() {
            // Its watermarks say how far it is, not its events.
            fixed.wm.touch(sub, now);
        } else {
            fixed.wm.advance(sub, window, now);
        }
        if !fixed.held.contains_key(&window) {
            let open =
                latest.is_none_or(|l| window >= l) && fixed.floor.is_none_or(|f| window >= f);
            if !open {
                if let StageWindowing::Fixed {
                    late: Some(late), ..
                } = &self.window.windowing
                {
                    late(run);
                }
                return;
            }
            let logic = make_logic(&self.factory, self.pos, self.triggers().scale, window);
            let State::Fixed(fixed) = &mut self.state else {
                return;
            };
            fixed.held.insert(
                window,
                Held {
                    logic,
                    since: 0,
                    state: None,
                },
            );
        }
        let triggers = self.triggers();
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        let held = fixed.held.get_mut(&window).expect("inserted above");
        feed_window(
            &mut held.logic,
            &mut held.since,
            &mut held.state,
            run,
            self.window.every,
            self.window.custom.as_ref(),
            triggers,
            window,
            out,
        );
    }

    /// Closes every fixed window all upstream producers have moved past: `Done` (or
    /// `Watermark` and a timer, with lateness), gaps included, [`CLOSE_STEP`] per turn.
    fn watermark(&mut self, out: &mut Vec<O>) {
        let StageWindowing::Fixed { .. } = self.window.windowing else {
            return;
        };
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        let Some(min) = fixed.wm.least() else {
            return;
        };
        fixed.floor = Some(fixed.floor.map_or(min, |f| f.max(min)));
        let Some(from) = fixed.all.or_else(|| fixed.held.keys().next().copied()) else {
            return;
        };
        if from >= min {
            return;
        }
        fixed.all = Some(min);
        fixed.closing = Some(match fixed.closing {
            Some(c) => Closing {
                end: c.end.max(min),
                ..c
            },
            None => Closing {
                next: from,
                end: min,
                finish: false,
            },
        });
        self.close_some(out);
    }

    /// Starts the periodic timers (a periodic window, `trigger_periodically`), each timed from
    /// the stage's start.
    fn start_timers(&mut self, ctx: &mut Context<Self>) {
        let mut periods = Vec::new();
        if let StageWindowing::Periodic(d) = self.window.windowing {
            periods.push(d);
        }
        periods.extend(self.window.periodically.iter().copied());
        let now = Instant::now();
        for (i, period) in periods.into_iter().enumerate() {
            let timer = ctx.send_after(period, Tick(i));
            self.periodic.push(Periodic {
                period,
                next: now + period,
                timer,
            });
        }
    }

    /// Sets the next tick of periodic timer `i`, from when it was due (no drift).
    fn rearm(&mut self, i: usize, ctx: &mut Context<Self>) {
        let Some(periodic) = self.periodic.get_mut(i) else {
            return;
        };
        periodic.next += periodic.period;
        let delay = periodic.next.saturating_duration_since(Instant::now());
        periodic.timer = ctx.send_after(delay, Tick(i));
    }

    /// Sets the timers of the windows that entered their lateness, emits `out`, and goes on
    /// with the windows still to close on the next turn; a finished stage whose windows are
    /// all closed finishes.
    fn flush(&mut self, out: Vec<O>, ctx: &mut Context<Self>) {
        self.flush_from(None, out, ctx);
    }

    /// [`flush`](Self::flush) of what the stage emitted for a batch of `input` (`Some`): a
    /// measuring stage records the latest event time it emitted for that input.
    fn flush_from(&mut self, input: Option<Input>, out: Vec<O>, ctx: &mut Context<Self>) {
        if let StageWindowing::Fixed { lateness, .. } = self.window.windowing {
            for window in self.lateness_due.drain(..) {
                ctx.send_after(lateness, LatenessOver(window));
            }
        }
        if let Some(measure) = &mut self.measure {
            if !out.is_empty() {
                measure.again = true;
                if let Some(input) = input {
                    let by = &measure.clock.by;
                    if let Some(time) = out.iter().map(|e| by(e)).max() {
                        measure.progress.advance(input, time, Instant::now());
                    }
                }
            }
            if measure.again {
                self.request_mark(ctx);
            }
        }
        ctx.emit(out);
        self.arm_idle(ctx);
        let closing = matches!(&self.state, State::Fixed(f) if f.closing.is_some());
        if closing {
            if !self.closing_scheduled {
                self.closing_scheduled = ctx.myself().cast(CloseMore).is_ok();
            }
        } else if self.finished {
            ctx.finish();
        }
    }

    /// Asks for a watermark once the stage's watermark has risen without it emitting
    /// anything (an input finished or went idle).
    fn request_mark_if_risen(&mut self, ctx: &mut Context<Self>) {
        if let Some(measure) = &self.measure {
            if measure.watermark() > measure.sent {
                self.request_mark(ctx);
            }
        }
    }

    /// Asks for a watermark to go out once what the stage emitted so far has been dispatched
    /// (at most one on its way; what happens meanwhile is sent after it).
    fn request_mark(&mut self, ctx: &mut Context<Self>) {
        let Some(measure) = &mut self.measure else {
            return;
        };
        measure.again = true;
        if measure.queued {
            return;
        }
        let Some(time) = measure.watermark() else {
            return;
        };
        measure.again = false;
        measure.queued = ctx.myself().info(MarkDue(time)).is_ok();
    }

    /// Sends the watermark `time` to every stage of the next layer, with how many events the
    /// dispatcher has sent each of them.
    fn send_mark(&mut self, time: u64, ctx: &mut Context<Self>) {
        let Some(measure) = &mut self.measure else {
            return;
        };
        measure.queued = false;
        let counts: Arc<[(SubscriptionId, u64)]> = measure
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_slice()
            .into();
        let mark = Mark { counts, time };
        if measure.directory.send(&mark) {
            measure.sent = Some(measure.sent.map_or(time, |s| s.max(time)));
        } else {
            measure.owed = true;
        }
        if measure.again {
            self.request_mark(ctx);
        }
    }

    /// Sets the idle timer, if inputs may go idle and none is set.
    fn arm_idle(&mut self, ctx: &mut Context<Self>) {
        if self.idle_timer.is_some() || self.finished {
            return;
        }
        let fixed = match &self.state {
            State::Fixed(fixed) => fixed.wm.next_idle(),
            _ => None,
        };
        let measured = self.measure.as_ref().and_then(|m| m.progress.next_idle());
        let Some(at) = fixed.into_iter().chain(measured).min() else {
            return;
        };
        let delay = at.saturating_duration_since(Instant::now());
        self.idle_timer = Some(ctx.send_after(delay, IdleCheck));
    }

    /// Leaves out the inputs silent for the idle timeout.
    fn idle_check(&mut self, out: &mut Vec<O>, ctx: &mut Context<Self>) {
        self.idle_timer = None;
        if self.finished {
            return;
        }
        let now = Instant::now();
        let expired = match &mut self.state {
            State::Fixed(fixed) => fixed.wm.expire(now),
            _ => false,
        };
        if expired {
            self.watermark(out);
        }
        if let Some(measure) = &mut self.measure {
            if measure.progress.expire(now) {
                self.request_mark_if_risen(ctx);
            }
        }
    }

    /// A watermark from one of the stage's inputs: due once the events it follows are in.
    fn mark_arrived(&mut self, mark: Mark, out: &mut Vec<O>) {
        let now = Instant::now();
        let mut changed = false;
        for &(id, after) in mark.counts.iter() {
            if !self.inputs.contains(&id) {
                continue;
            }
            if let State::Fixed(fixed) = &mut self.state {
                fixed.wm.touch(Some(id), now);
            }
            if let Some(time) = self.marks_in.mark(id, after, mark.time) {
                self.follow_mark(id, time);
                changed = true;
            }
        }
        if changed {
            self.watermark(out);
        }
    }

    fn tick(&mut self, timer: usize, out: &mut Vec<O>) {
        if self.finished {
            return;
        }
        let periodic_window = matches!(self.window.windowing, StageWindowing::Periodic(_));
        if periodic_window && timer == 0 {
            self.next_window(out);
            return;
        }
        let k = timer - usize::from(periodic_window);
        let Some(&period) = self.window.periodically.get(k) else {
            return;
        };
        self.fire_all(TriggerName::Periodically(period), out);
    }

    /// Fires `name` on the current window, or on every fixed window held (gaps included).
    fn fire_all(&mut self, name: TriggerName, out: &mut Vec<O>) {
        if self.finished {
            return;
        }
        match &self.state {
            State::Unstarted => {}
            State::Single(current) => {
                let trigger = self.trigger(current.id, name);
                let State::Single(current) = &mut self.state else {
                    return;
                };
                append(out, current.logic.trigger(&trigger));
            }
            State::Fixed(fixed) => {
                // Every window from the lowest held to the highest, gaps included: a gap
                // window is opened (fresh) and kept, as upstream does.
                let (Some(&low), Some(&high)) =
                    (fixed.held.keys().next(), fixed.held.keys().next_back())
                else {
                    return;
                };
                let triggers = self.triggers();
                let (factory, pos) = (&self.factory, self.pos);
                let State::Fixed(fixed) = &mut self.state else {
                    return;
                };
                for id in low..=high {
                    let held = fixed.held.entry(id).or_insert_with(|| Held {
                        logic: make_logic(factory, pos, triggers.scale, id),
                        since: 0,
                        state: None,
                    });
                    append(out, held.logic.trigger(&triggers.make(id, name.clone())));
                }
            }
        }
    }

    fn lateness_over(&mut self, window: u64, out: &mut Vec<O>) {
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        if !fixed.in_lateness.remove(&window) {
            return;
        }
        if let Some(mut held) = fixed.held.remove(&window) {
            let done = self.trigger(window, TriggerName::Done);
            append(out, held.logic.trigger(&done));
        }
    }
}

fn empty_fixed<O>(idle: Option<Duration>) -> Fixed<O> {
    Fixed {
        held: BTreeMap::new(),
        wm: Watermarks::new(idle),
        all: None,
        floor: None,
        in_lateness: Default::default(),
        closing: None,
    }
}

/// The producer side: a stage of a layer with upstreams, or one reading a local source.
impl<O: Send + 'static> Producer for LayerStage<O> {
    type Out = O;

    /// Only stages with a local source are asked: they read it as their consumers ask.
    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<O> {
        if let Some(local) = &mut self.local {
            local.credit = local.credit.saturating_add_unsigned(demand as u64);
            if !local.pulling {
                self.pull(ctx);
            }
        }
        Vec::new()
    }

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) {
        self.consumers += 1;
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        self.consumer_left(ctx);
    }

    /// Runs once the stage's subscriptions are made: makes the windows' logic here, in the
    /// stage's task, starts the timers, and finishes at once a stage with nothing to read.
    async fn handle_start(&mut self, ctx: &mut Context<Self>) {
        self.state = self.initial_state();
        self.start_timers(ctx);
        let now = Instant::now();
        let inputs: Vec<Input> = self.all_inputs().collect();
        if let Some(measure) = &mut self.measure {
            for input in inputs {
                measure.progress.add(input, now);
            }
        }
        if self.inputs.is_empty() && self.local.is_none() {
            self.finish(ctx);
        } else {
            self.arm_idle(ctx);
        }
    }
}

/// The consumer side: packets from the layer's inputs.
impl<O: Send + 'static> Consumer for LayerStage<O> {
    type In = Packet;

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.inputs.push(id);
        SubscriptionMode::Automatic
    }

    async fn handle_events(
        &mut self,
        packets: Vec<Packet>,
        id: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        let mut out = Vec::new();
        for packet in packets {
            self.process(packet, Some(id), &mut out);
        }
        self.flush_from(Some(Some(id)), out, ctx);
    }

    async fn handle_packet(&mut self, packet: Packet, id: SubscriptionId, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.process(packet, Some(id), &mut out);
        self.flush_from(Some(Some(id)), out, ctx);
    }

    async fn handle_cancel(&mut self, cancel: Cancel, id: SubscriptionId, ctx: &mut Context<Self>) {
        let Some(at) = self.inputs.iter().position(|i| *i == id) else {
            return;
        };
        self.inputs.swap_remove(at);
        // A producer that was gone when we subscribed (or asked) has finished as far as this
        // stage is concerned; if it failed, the flow reports it from its own exit.
        let reason = cancel.into_reason();
        if !reason.is_normal() && reason != Reason::NoProc {
            ctx.stop(reason);
            return;
        }
        if let State::Fixed(fixed) = &mut self.state {
            // A producer that finished leaves the watermark.
            fixed.wm.remove(Some(id));
        }
        self.marks_in.remove(id);
        if let Some(measure) = &mut self.measure {
            measure.progress.remove(Some(id));
            self.request_mark_if_risen(ctx);
        }
        if self.inputs.is_empty() && !matches!(self.state, State::Unstarted) {
            self.finish(ctx);
        } else {
            let mut out = Vec::new();
            self.watermark(&mut out);
            self.flush(out, ctx);
        }
    }
}

impl<O: Send + 'static> Info<Tick> for LayerStage<O> {
    async fn handle_info(&mut self, Tick(timer): Tick, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.rearm(timer, ctx);
        let mut out = Vec::new();
        self.tick(timer, &mut out);
        self.flush(out, ctx);
    }
}

impl<O: Send + 'static> Info<LatenessOver> for LayerStage<O> {
    async fn handle_info(&mut self, LatenessOver(window): LatenessOver, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.lateness_over(window, &mut out);
        self.flush(out, ctx);
    }
}

impl<O: Send + 'static> Cast<CloseMore> for LayerStage<O> {
    async fn handle_cast(&mut self, _: CloseMore, ctx: &mut Context<Self>) {
        self.closing_scheduled = false;
        let mut out = Vec::new();
        self.close_some(&mut out);
        self.flush(out, ctx);
    }
}

impl<O: Send + 'static> Cast<Fire> for LayerStage<O> {
    async fn handle_cast(&mut self, Fire(name): Fire, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.fire_all(TriggerName::Custom(name), &mut out);
        self.flush(out, ctx);
    }
}

impl<O: Send + 'static> Cast<Mark> for LayerStage<O> {
    async fn handle_cast(&mut self, mark: Mark, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.mark_arrived(mark, &mut out);
        self.flush(out, ctx);
    }
}

impl<O: Send + 'static> Cast<Wired> for LayerStage<O> {
    async fn handle_cast(&mut self, _: Wired, ctx: &mut Context<Self>) {
        if let Some(measure) = &mut self.measure {
            if std::mem::take(&mut measure.owed) {
                self.request_mark(ctx);
            }
        }
    }
}

impl<O: Send + 'static> Info<MarkDue> for LayerStage<O> {
    async fn handle_info(&mut self, MarkDue(time): MarkDue, ctx: &mut Context<Self>) {
        self.send_mark(time, ctx);
    }
}

impl<O: Send + 'static> Info<IdleCheck> for LayerStage<O> {
    async fn handle_info(&mut self, _: IdleCheck, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.idle_check(&mut out, ctx);
        self.flush(out, ctx);
    }
}

impl<O: Send + 'static> Cast<Drain> for LayerStage<O> {
    async fn handle_cast(&mut self, _: Drain, ctx: &mut Context<Self>) {
        if self.local.is_some() {
            self.finish(ctx);
        }
    }
}

impl<O: Send + 'static> Cast<Pull> for LayerStage<O> {
    async fn handle_cast(&mut self, _: Pull, ctx: &mut Context<Self>) {
        if let Some(local) = &mut self.local {
            local.pulling = false;
        }
        self.pull(ctx);
    }
}

impl<O: Send + 'static> LayerStage<O> {
    /// Reads the local source while downstream demand is unmet, at most [`PULL_BATCHES`]
    /// batches at a time, then sends itself [`Pull`] to go on after the messages that arrived
    /// meanwhile; finishes the stage once the source is exhausted.
    fn pull(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        let mut out = Vec::new();
        for _ in 0..PULL_BATCHES {
            let Some(local) = &mut self.local else { return };
            if self.finished || local.credit <= out.len() as i64 {
                break;
            }
            let Some(batch) = local.reader.next() else {
                self.flush_from(Some(None), out, ctx);
                self.finish(ctx);
                return;
            };
            self.process(batch, None, &mut out);
        }
        let Some(local) = &mut self.local else { return };
        local.credit -= out.len() as i64;
        let more = local.credit > 0 && !self.finished;
        if more {
            local.pulling = ctx.myself().cast(Pull).is_ok();
        }
        self.flush_from(Some(None), out, ctx);
    }

    /// A consumer cancelled. Once none is left, whoever read this flow is gone: the stage
    /// stops, and with it the stages feeding it.
    fn consumer_left(&mut self, ctx: &mut Context<Self>) {
        self.consumers -= 1;
        let closing = matches!(&self.state, State::Fixed(f) if f.closing.is_some());
        if self.consumers == 0 && (!self.finished || closing) {
            ctx.stop(Reason::Shutdown);
        }
    }
}
