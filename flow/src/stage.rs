//! The stage every layer of a flow runs: packets in, its windows' logic, events out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use stage::demand::Demand;
use stage::{
    Cancel, Context, Packet, Peer, Producer, ProducerConsumer, Reason, SubscribeOptions,
    SubscriptionId, SubscriptionMode,
};

use crate::logic::{Factory, Logic, Position};
use crate::source::{Chunks, Reader};
use crate::trigger::{Trigger, TriggerName, WindowKind};
use crate::window::{Custom, StageKind, StageWindow, Step};

type TriggerState = Option<Box<dyn std::any::Any + Send>>;

/// Makes the [`Trigger`]s of one stage.
#[derive(Clone, Copy)]
struct Triggers {
    pos: Position,
    kind: WindowKind,
    /// Fixed windows report their start in ms.
    scale: u64,
}

impl Triggers {
    fn make(&self, window: u64, name: TriggerName) -> Trigger {
        Trigger {
            partition: self.pos.index,
            partitions: self.pos.count,
            kind: self.kind,
            window: window * self.scale,
            name,
        }
    }
}

/// Feeds a batch to one window's logic, splitting it where `trigger_every` or a custom
/// trigger fires (Flow rules T1, T4).
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

/// Sends a stage a [`Control`] message; `false` once the stage is gone.
pub(crate) type Me<O> = Arc<dyn Fn(Control<O>) -> bool + Send + Sync>;

/// What a flow (and its timers) tell its stages.
pub(crate) enum Control<O: Send + 'static> {
    /// The stage's way to message itself, for its timers and its local source.
    Me(Me<O>),
    /// The initial subscriptions are made (finish at once if there are none).
    Started,
    /// Timer `i` fired: 0 is the periodic window, `1 + k` is `trigger_periodically` number `k`.
    Tick(usize),
    /// A fixed window's allowed lateness is over.
    LatenessOver(u64),
    /// Read on from the local source.
    Pull,
}

impl<O: Send + 'static> std::fmt::Debug for Control<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Me(_) => f.write_str("Me"),
            Control::Started => f.write_str("Started"),
            Control::Tick(i) => write!(f, "Tick({i})"),
            Control::LatenessOver(w) => write!(f, "LatenessOver({w})"),
            Control::Pull => f.write_str("Pull"),
        }
    }
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

/// Fixed windows (Flow rules W-F2 to W-F7).
struct Fixed<O> {
    held: BTreeMap<u64, Held<O>>,
    /// Each input's most recent window.
    latest: HashMap<Input, u64>,
    /// The lowest window not closed yet.
    all: Option<u64>,
    /// Windows past their watermark, waiting for their lateness to end.
    in_lateness: std::collections::BTreeSet<u64>,
}

/// Where a batch came from: a subscription, or (`None`) the stage's local source.
type Input = Option<SubscriptionId>;

/// How many batches a stage reads from its local source before it lets its other messages
/// (timers, cancellations) in: it goes on by sending itself [`Control::Pull`].
const PULL_BATCHES: usize = 16;

/// A source the stage reads itself (it then runs as a producer, with no subscriptions).
struct Local {
    reader: Box<dyn Reader>,
    /// Events downstream asked for and not yet emitted (negative: emitted ahead, buffered).
    credit: i64,
    /// A [`Control::Pull`] is on its way.
    pulling: bool,
}

enum State<O> {
    Single(Current<O>),
    Fixed(Fixed<O>),
}

/// One stage of a layer. It subscribes to its inputs in manual mode and counts demand itself,
/// exactly as an automatic consumer would (batches of `max - min`, refill at `min`), and runs
/// its windows' logic. A stage with a local source runs as a producer instead: it reads
/// batches of `max` events from the source while its consumers' demand is unmet.
pub(crate) struct FlowStage<O: Send + 'static> {
    pos: Position,
    max: usize,
    min: usize,
    demands: HashMap<SubscriptionId, Demand>,
    consumers: usize,
    started: bool,
    finished: bool,
    factory: Factory<O>,
    window: StageWindow,
    state: State<O>,
    local: Option<Local>,
    me: Option<Me<O>>,
    timers: Vec<tokio::task::JoinHandle<()>>,
}

impl<O: Send + 'static> Drop for FlowStage<O> {
    fn drop(&mut self) {
        for t in &self.timers {
            t.abort();
        }
    }
}

fn append<O>(out: &mut Vec<O>, mut more: Vec<O>) {
    if out.is_empty() {
        std::mem::swap(out, &mut more);
    } else {
        out.append(&mut more);
    }
}

impl<O: Send + 'static> FlowStage<O> {
    pub(crate) fn new(
        pos: Position,
        max: usize,
        min: usize,
        window: StageWindow,
        factory: Factory<O>,
    ) -> Self {
        let state = match window.kind {
            StageKind::Fixed { .. } => State::Fixed(Fixed {
                held: BTreeMap::new(),
                latest: HashMap::new(),
                all: None,
                in_lateness: Default::default(),
            }),
            _ => State::Single(Current {
                id: 0,
                logic: factory(pos),
                count: 0,
                since: 0,
                state: None,
            }),
        };
        FlowStage {
            pos,
            max,
            min,
            demands: HashMap::new(),
            consumers: 0,
            started: false,
            finished: false,
            factory,
            window,
            state,
            local: None,
            me: None,
            timers: Vec::new(),
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

    fn kind(&self) -> WindowKind {
        match self.window.kind {
            StageKind::Global => WindowKind::Global,
            StageKind::Count(_) => WindowKind::Count,
            StageKind::Periodic(_) => WindowKind::Periodic,
            StageKind::Fixed { .. } => WindowKind::Fixed,
        }
    }

    fn triggers(&self) -> Triggers {
        Triggers {
            pos: self.pos,
            kind: self.kind(),
            scale: match self.window.kind {
                StageKind::Fixed { duration_ms, .. } => duration_ms,
                _ => 1,
            },
        }
    }

    fn trigger(&self, window: u64, name: TriggerName) -> Trigger {
        self.triggers().make(window, name)
    }

    /// The inputs are done: every window fires `Done` (Flow rules R5, W-C1, W-P1, W-F7).
    fn finish(&mut self, ctx: &mut Context<O>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Fixed(empty_fixed())) {
            State::Single(mut current) => {
                let done = self.trigger(current.id, TriggerName::Done);
                append(&mut out, current.logic.trigger(&done));
            }
            State::Fixed(mut fixed) => {
                if let (Some(&low), Some(&high)) =
                    (fixed.held.keys().next(), fixed.held.keys().next_back())
                {
                    for id in low..=high {
                        let mut logic = match fixed.held.remove(&id) {
                            Some(held) => held.logic,
                            None => (self.factory)(self.pos),
                        };
                        let done = self.trigger(id, TriggerName::Done);
                        append(&mut out, logic.trigger(&done));
                    }
                }
            }
        }
        for t in self.timers.drain(..) {
            t.abort();
        }
        ctx.emit(out);
        ctx.finish();
    }

    /// Cuts one packet into batches of at most `max - min`, processing each and asking for
    /// what it used.
    fn cut(&mut self, packet: Packet, id: SubscriptionId, ctx: &mut Context<O>, out: &mut Vec<O>) {
        let Some(&demand) = self.demands.get(&id) else {
            self.process(packet, Some(id), out);
            return;
        };
        let mut demand = demand;
        let mut message = demand.message(packet.len());
        let mut rest = Some(packet);
        while let Some(batch) = demand.next_batch(&mut message) {
            let Some(mut chunk) = rest.take() else {
                break;
            };
            if batch.len < chunk.len() {
                rest = Some(chunk.split_off(batch.len));
            }
            self.process(chunk, Some(id), out);
            ctx.ask(id, batch.ask);
        }
        if let Some(d) = self.demands.get_mut(&id) {
            *d = demand;
        }
    }

    /// One batch of raw input, into its window(s).
    fn process(&mut self, batch: Packet, sub: Input, out: &mut Vec<O>) {
        match &self.window.kind {
            StageKind::Global | StageKind::Periodic(_) => self.feed_current(batch, None, out),
            StageKind::Count(n) => {
                let n = *n;
                self.feed_current(batch, Some(n), out)
            }
            StageKind::Fixed { split, .. } => {
                let runs = split(batch);
                for (window, run) in runs {
                    self.feed_fixed(sub, window, run, out);
                }
                self.watermark(out);
            }
        }
    }

    /// Feeds the current window, starting the next count window after its `n`-th event
    /// (Flow rule W-C1).
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
        let fresh = (self.factory)(self.pos);
        let State::Single(current) = &mut self.state else {
            return;
        };
        let id = current.id;
        let mut old = std::mem::replace(&mut current.logic, fresh);
        current.id += 1;
        current.count = 0;
        current.since = 0;
        current.state = None;
        let done = self.trigger(id, TriggerName::Done);
        append(out, old.trigger(&done));
    }

    /// A run of events of fixed window `window` from input `sub` (rule W-F3).
    fn feed_fixed(&mut self, sub: Input, window: u64, run: Packet, out: &mut Vec<O>) {
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        let latest = fixed.latest.get(&sub).copied();
        fixed
            .latest
            .insert(sub, latest.map_or(window, |l| l.max(window)));
        if !fixed.held.contains_key(&window) {
            let open = latest.is_none_or(|l| window >= l) && fixed.all.is_none_or(|a| window >= a);
            if !open {
                if let StageKind::Fixed {
                    late: Some(late), ..
                } = &self.window.kind
                {
                    late(run);
                }
                return;
            }
            let logic = (self.factory)(self.pos);
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

    /// Closes every fixed window all upstream producers have moved past (rules W-F4, W-F5,
    /// W-F6): `Done` (or `Watermark` and a timer, with lateness), gaps included.
    fn watermark(&mut self, out: &mut Vec<O>) {
        let StageKind::Fixed { lateness, .. } = self.window.kind else {
            return;
        };
        let State::Fixed(fixed) = &mut self.state else {
            return;
        };
        let local = self.local.is_some();
        let inputs = || {
            let subscriptions = self.demands.keys().copied().map(Some);
            local.then_some(None).into_iter().chain(subscriptions)
        };
        if inputs().next().is_none() || inputs().any(|s| !fixed.latest.contains_key(&s)) {
            return;
        }
        let Some(min) = inputs().filter_map(|s| fixed.latest.get(&s)).min().copied() else {
            return;
        };
        let Some(from) = fixed.all.or_else(|| fixed.held.keys().next().copied()) else {
            return;
        };
        if from >= min {
            return;
        }
        fixed.all = Some(min);
        for id in from..min {
            let State::Fixed(fixed) = &mut self.state else {
                return;
            };
            if fixed.in_lateness.contains(&id) {
                continue;
            }
            if lateness.is_zero() {
                let mut logic = match fixed.held.remove(&id) {
                    Some(held) => held.logic,
                    None => (self.factory)(self.pos),
                };
                let done = self.trigger(id, TriggerName::Done);
                append(out, logic.trigger(&done));
            } else {
                let (factory, pos) = (&self.factory, self.pos);
                fixed.held.entry(id).or_insert_with(|| Held {
                    logic: factory(pos),
                    since: 0,
                    state: None,
                });
                fixed.in_lateness.insert(id);
                let mark = self.trigger(id, TriggerName::Watermark);
                let State::Fixed(fixed) = &mut self.state else {
                    return;
                };
                let held = fixed.held.get_mut(&id).expect("held");
                append(out, held.logic.trigger(&mark));
                self.after(lateness, Control::LatenessOver(id));
            }
        }
    }

    /// Sends the stage `msg` after `delay` (processing time).
    fn after(&mut self, delay: Duration, msg: Control<O>) {
        if let Some(me) = self.me.clone() {
            self.timers.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                me(msg);
            }));
        }
    }

    fn start_timers(&mut self) {
        let Some(me) = self.me.clone() else { return };
        let mut periods = Vec::new();
        if let StageKind::Periodic(d) = self.window.kind {
            periods.push((0, d));
        }
        for (k, d) in self.window.periodically.iter().enumerate() {
            periods.push((k + 1, *d));
        }
        for (i, period) in periods {
            let me = me.clone();
            self.timers.push(tokio::spawn(async move {
                let mut interval =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    interval.tick().await;
                    if !me(Control::Tick(i)) {
                        return;
                    }
                }
            }));
        }
    }

    fn tick(&mut self, timer: usize, out: &mut Vec<O>) {
        if self.finished {
            return;
        }
        if timer == 0 {
            self.next_window(out);
            return;
        }
        let Some(&period) = self.window.periodically.get(timer - 1) else {
            return;
        };
        let name = TriggerName::Periodically(period);
        match &self.state {
            State::Single(current) => {
                let trigger = self.trigger(current.id, name);
                let State::Single(current) = &mut self.state else {
                    return;
                };
                append(out, current.logic.trigger(&trigger));
            }
            State::Fixed(fixed) => {
                // Every window from the lowest held to the highest, gaps included: a gap
                // window is opened (fresh) and kept, as upstream does (rule T2).
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
                        logic: factory(pos),
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

fn empty_fixed<O>() -> Fixed<O> {
    Fixed {
        held: BTreeMap::new(),
        latest: HashMap::new(),
        all: None,
        in_lateness: Default::default(),
    }
}

impl<O: Send + 'static> ProducerConsumer for FlowStage<O> {
    type In = Packet;
    type Out = O;
    type Call = ();
    type Reply = ();
    type Msg = Control<O>;

    async fn handle_subscribe(
        &mut self,
        peer: Peer,
        id: SubscriptionId,
        _: &SubscribeOptions,
        ctx: &mut Context<O>,
    ) -> SubscriptionMode {
        match peer {
            Peer::Producer => {
                self.demands.insert(id, Demand::new(self.max, self.min));
                ctx.ask(id, self.max);
                SubscriptionMode::Manual
            }
            Peer::Consumer => {
                self.consumers += 1;
                SubscriptionMode::Automatic
            }
        }
    }

    async fn handle_events(
        &mut self,
        packets: Vec<Packet>,
        id: SubscriptionId,
        ctx: &mut Context<O>,
    ) -> Vec<O> {
        let mut out = Vec::new();
        for packet in packets {
            self.cut(packet, id, ctx, &mut out);
        }
        out
    }

    async fn handle_cancel(
        &mut self,
        peer: Peer,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<O>,
    ) {
        match peer {
            Peer::Producer => {
                if self.demands.remove(&id).is_none() {
                    return;
                }
                // A producer that was gone when we subscribed (or asked) has finished as far as
                // this stage is concerned; if it failed, the flow reports it from its own exit.
                if !cancel.reason.is_normal() && cancel.reason != Reason::NoProc {
                    ctx.stop(cancel.reason);
                    return;
                }
                if let State::Fixed(fixed) = &mut self.state {
                    // A producer that finished leaves the watermark (rule W-F4).
                    fixed.latest.remove(&Some(id));
                }
                if self.demands.is_empty() && self.started {
                    self.finish(ctx);
                } else {
                    let mut out = Vec::new();
                    self.watermark(&mut out);
                    ctx.emit(out);
                }
            }
            Peer::Consumer => self.consumer_left(ctx),
        }
    }

    async fn handle_cast(&mut self, control: Control<O>, ctx: &mut Context<O>) {
        self.control(control, ctx);
    }
}

/// A stage with a local source: no subscriptions, it reads the source as its consumers ask.
impl<O: Send + 'static> Producer for FlowStage<O> {
    type Out = O;
    type Call = ();
    type Reply = ();
    type Msg = Control<O>;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<O>) -> Vec<O> {
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
        _: &mut Context<O>,
    ) {
        self.consumers += 1;
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<O>) {
        self.consumer_left(ctx);
    }

    async fn handle_cast(&mut self, control: Control<O>, ctx: &mut Context<O>) {
        self.control(control, ctx);
    }
}

impl<O: Send + 'static> FlowStage<O> {
    fn control(&mut self, control: Control<O>, ctx: &mut Context<O>) {
        let mut out = Vec::new();
        match control {
            Control::Me(me) => {
                self.me = Some(me);
                self.start_timers();
                if self
                    .local
                    .as_ref()
                    .is_some_and(|l| l.credit > 0 && !l.pulling)
                {
                    self.pull(ctx);
                }
            }
            Control::Started => {
                self.started = true;
                if self.demands.is_empty() && self.local.is_none() {
                    self.finish(ctx);
                }
            }
            Control::Tick(timer) => self.tick(timer, &mut out),
            Control::LatenessOver(window) => self.lateness_over(window, &mut out),
            Control::Pull => {
                if let Some(local) = &mut self.local {
                    local.pulling = false;
                }
                self.pull(ctx);
            }
        }
        ctx.emit(out);
    }

    /// Reads the local source while downstream demand is unmet, at most [`PULL_BATCHES`]
    /// batches at a time, then sends itself [`Control::Pull`] to go on after the messages
    /// that arrived meanwhile; finishes the stage once the source is exhausted.
    fn pull(&mut self, ctx: &mut Context<O>) {
        let mut out = Vec::new();
        for _ in 0..PULL_BATCHES {
            let Some(local) = &mut self.local else { return };
            if self.finished || local.credit <= out.len() as i64 {
                break;
            }
            let Some(batch) = local.reader.next() else {
                ctx.emit(out);
                self.finish(ctx);
                return;
            };
            self.process(batch, None, &mut out);
        }
        let Some(local) = &mut self.local else { return };
        local.credit -= out.len() as i64;
        ctx.emit(out);
        // Without `me` yet, the `Me` message is on its way and pulls when it arrives.
        if let (true, false, Some(me)) = (local.credit > 0, self.finished, &self.me) {
            local.pulling = me(Control::Pull);
        }
    }

    /// A consumer cancelled. Once none is left, whoever read this flow is gone: the stage
    /// stops, and with it the stages feeding it.
    fn consumer_left(&mut self, ctx: &mut Context<O>) {
        self.consumers -= 1;
        if self.consumers == 0 && !self.finished {
            ctx.stop(Reason::Shutdown);
        }
    }
}
