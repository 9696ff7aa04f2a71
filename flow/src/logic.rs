//! What one stage of a layer does with its input: the fused mappers, the reducer and the
//! trigger handling, as a chain of [`Logic`] boxes called once per batch.
//!
//! Each link is generic over its closure, so the per-event loops are monomorphised; only the
//! hop from one link to the next is a virtual call, once per batch.

use std::collections::HashSet;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use stage::Packet;

use crate::trigger::Trigger;

/// One stage's processing: raw input batches in, events out.
pub(crate) trait Logic<O>: Send {
    /// A batch of the layer's input.
    fn process(&mut self, batch: Packet) -> Vec<O>;
    /// A trigger fired: what to emit for it.
    fn trigger(&mut self, trigger: &Trigger) -> Vec<O>;
    /// The logic was made for `window` (as [`Trigger::window`] reports it), before any
    /// batch: once per window, never per event.
    fn start(&mut self, _window: u64) {}
}

/// Where a stage sits in its layer, given to factories and triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

/// Makes the logic of each stage (and, with windows, of each window of a stage).
pub(crate) type Factory<O> = Arc<dyn Fn(Position) -> Box<dyn Logic<O>> + Send + Sync>;

/// The first link of a layer: the layer's input events, as they arrive.
pub(crate) struct Input<T>(PhantomData<fn() -> T>);

impl<T> Input<T> {
    pub(crate) fn factory() -> Factory<T>
    where
        T: Send + 'static,
    {
        Arc::new(|_| Box::new(Input::<T>(PhantomData)))
    }
}

impl<T: Send + 'static> Logic<T> for Input<T> {
    fn process(&mut self, batch: Packet) -> Vec<T> {
        match batch.downcast::<T>() {
            Ok(events) => events,
            Err(batch) => unreachable!(
                "flow wiring: expected {}, got {batch:?}",
                std::any::type_name::<T>()
            ),
        }
    }
    fn trigger(&mut self, _: &Trigger) -> Vec<T> {
        Vec::new()
    }
}

/// A batch-to-batch transformation after another link (every mapper).
pub(crate) struct Then<T, R, Op> {
    inner: Box<dyn Logic<T>>,
    op: Op,
    _out: PhantomData<fn() -> R>,
}

impl<T, R, Op> Then<T, R, Op>
where
    T: Send + 'static,
    R: Send + 'static,
    Op: FnMut(Vec<T>) -> Vec<R> + Send + 'static,
{
    /// Chains `make_op()` (one per stage) after what `inner` makes.
    pub(crate) fn factory(
        inner: Factory<T>,
        make_op: impl Fn() -> Op + Send + Sync + 'static,
    ) -> Factory<R> {
        Arc::new(move |pos| {
            Box::new(Then {
                inner: inner(pos),
                op: make_op(),
                _out: PhantomData,
            })
        })
    }
}

impl<T, R, Op> Logic<R> for Then<T, R, Op>
where
    T: Send + 'static,
    R: Send + 'static,
    Op: FnMut(Vec<T>) -> Vec<R> + Send + 'static,
{
    fn process(&mut self, batch: Packet) -> Vec<R> {
        let events = self.inner.process(batch);
        if events.is_empty() {
            return Vec::new();
        }
        (self.op)(events)
    }
    fn trigger(&mut self, trigger: &Trigger) -> Vec<R> {
        let events = self.inner.trigger(trigger);
        if events.is_empty() {
            return Vec::new();
        }
        (self.op)(events)
    }
}

/// Drops events whose key was already seen in this stage (and window).
pub(crate) fn uniq_op<T, K, F>(key: Arc<F>) -> impl FnMut(Vec<T>) -> Vec<T> + Send + 'static
where
    T: Send + 'static,
    K: Hash + Eq + Send + 'static,
    F: Fn(&T) -> K + Send + Sync + 'static,
{
    let mut seen: HashSet<K, ahash::RandomState> = HashSet::default();
    move |mut events| {
        events.retain(|e| seen.insert(key(e)));
        events
    }
}

/// Folds every event into an accumulator; triggers decide what it emits.
pub(crate) struct Reduce<T, A, E, F, G> {
    inner: Box<dyn Logic<T>>,
    acc: A,
    reduce_op: Arc<F>,
    on_trigger: Arc<G>,
    _out: PhantomData<fn() -> E>,
}

impl<T, A, E, F, G> Reduce<T, A, E, F, G>
where
    T: Send + 'static,
    A: Send + 'static,
    E: Send + 'static,
    F: Fn(&mut A, T, &mut Vec<E>) + Send + Sync + 'static,
    G: Fn(&mut A, &Trigger) -> Vec<E> + Send + Sync + 'static,
{
    pub(crate) fn factory(
        inner: Factory<T>,
        init: Arc<dyn Fn() -> A + Send + Sync>,
        reduce_op: Arc<F>,
        on_trigger: Arc<G>,
    ) -> Factory<E> {
        Arc::new(move |pos| {
            Box::new(Reduce {
                inner: inner(pos),
                acc: init(),
                reduce_op: Arc::clone(&reduce_op),
                on_trigger: Arc::clone(&on_trigger),
                _out: PhantomData,
            })
        })
    }

    fn fold(&mut self, events: Vec<T>) -> Vec<E> {
        let mut out = Vec::new();
        for e in events {
            (self.reduce_op)(&mut self.acc, e, &mut out);
        }
        out
    }
}

impl<T, A, E, F, G> Logic<E> for Reduce<T, A, E, F, G>
where
    T: Send + 'static,
    A: Send + 'static,
    E: Send + 'static,
    F: Fn(&mut A, T, &mut Vec<E>) + Send + Sync + 'static,
    G: Fn(&mut A, &Trigger) -> Vec<E> + Send + Sync + 'static,
{
    fn process(&mut self, batch: Packet) -> Vec<E> {
        let events = self.inner.process(batch);
        self.fold(events)
    }
    fn trigger(&mut self, trigger: &Trigger) -> Vec<E> {
        let pending = self.inner.trigger(trigger);
        let mut out = self.fold(pending);
        out.extend((self.on_trigger)(&mut self.acc, trigger));
        out
    }
}

/// Keeps the `n` first events in `cmp` order of everything the stage emits, and emits them as
/// one sorted list at each trigger (then starts over).
pub(crate) struct TopN<T, C> {
    inner: Box<dyn Logic<T>>,
    n: usize,
    cmp: Arc<C>,
    held: Vec<T>,
}

impl<T, C> TopN<T, C>
where
    T: Send + 'static,
    C: Fn(&T, &T) -> std::cmp::Ordering + Send + Sync + 'static,
{
    pub(crate) fn factory(inner: Factory<T>, n: usize, cmp: Arc<C>) -> Factory<Vec<T>> {
        Arc::new(move |pos| {
            Box::new(TopN {
                inner: inner(pos),
                n,
                cmp: Arc::clone(&cmp),
                held: Vec::new(),
            })
        })
    }

    fn keep(&mut self, events: Vec<T>) {
        self.held.extend(events);
        if self.held.len() > self.n.max(16).saturating_mul(2) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        let cmp = &*self.cmp;
        if self.held.len() > self.n {
            // Stable, so equal events keep their arrival order.
            self.held.sort_by(cmp);
            self.held.truncate(self.n);
        }
    }
}

impl<T, C> Logic<Vec<T>> for TopN<T, C>
where
    T: Send + 'static,
    C: Fn(&T, &T) -> std::cmp::Ordering + Send + Sync + 'static,
{
    fn process(&mut self, batch: Packet) -> Vec<Vec<T>> {
        let events = self.inner.process(batch);
        self.keep(events);
        Vec::new()
    }
    fn trigger(&mut self, trigger: &Trigger) -> Vec<Vec<T>> {
        let events = self.inner.trigger(trigger);
        self.keep(events);
        self.trim();
        let cmp = &*self.cmp;
        self.held.sort_by(cmp);
        vec![std::mem::take(&mut self.held)]
    }
}

/// One partition's output on its way to a departition stage.
#[derive(Debug)]
pub(crate) struct Tagged<T> {
    pub(crate) partition: usize,
    pub(crate) window: u64,
    pub(crate) done: bool,
    pub(crate) items: Vec<T>,
}

/// Tags a partition's output with where it comes from.
pub(crate) struct Tag<T> {
    inner: Box<dyn Logic<T>>,
    partition: usize,
    /// The window this logic was made for: what `process` emits belongs to it.
    window: u64,
}

impl<T: Send + 'static> Tag<T> {
    pub(crate) fn factory(inner: Factory<T>) -> Factory<Tagged<T>> {
        Arc::new(move |pos: Position| {
            Box::new(Tag {
                inner: inner(pos),
                partition: pos.index,
                window: 0,
            })
        })
    }
}

impl<T: Send + 'static> Logic<Tagged<T>> for Tag<T> {
    fn process(&mut self, batch: Packet) -> Vec<Tagged<T>> {
        let items = self.inner.process(batch);
        if items.is_empty() {
            return Vec::new();
        }
        vec![Tagged {
            partition: self.partition,
            window: self.window,
            done: false,
            items,
        }]
    }
    fn start(&mut self, window: u64) {
        self.window = window;
        self.inner.start(window);
    }
    fn trigger(&mut self, trigger: &Trigger) -> Vec<Tagged<T>> {
        // A trigger's whole output is one unit, even when empty (upstream may split it and run `done` twice).
        vec![Tagged {
            partition: self.partition,
            window: trigger.window,
            done: trigger.is_done(),
            items: self.inner.trigger(trigger),
        }]
    }
}

/// The single stage of a departition: merges each window's partition outputs.
pub(crate) struct Departition<T, A, R, M, D> {
    partitions: usize,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    merge: Arc<M>,
    done: Arc<D>,
    windows: std::collections::BTreeMap<u64, (HashSet<usize>, A)>,
    _types: PhantomData<fn(T) -> R>,
}

impl<T, A, R, M, D> Departition<T, A, R, M, D>
where
    T: Send + 'static,
    A: Send + 'static,
    R: Send + 'static,
    M: Fn(&mut A, Vec<T>) + Send + Sync + 'static,
    D: Fn(A, u64) -> R + Send + Sync + 'static,
{
    pub(crate) fn factory(
        partitions: usize,
        init: Arc<dyn Fn() -> A + Send + Sync>,
        merge: Arc<M>,
        done: Arc<D>,
    ) -> Factory<R> {
        Arc::new(move |_| {
            Box::new(Departition {
                partitions,
                init: Arc::clone(&init),
                merge: Arc::clone(&merge),
                done: Arc::clone(&done),
                windows: std::collections::BTreeMap::new(),
                _types: PhantomData,
            })
        })
    }
}

impl<T, A, R, M, D> Logic<R> for Departition<T, A, R, M, D>
where
    T: Send + 'static,
    A: Send + 'static,
    R: Send + 'static,
    M: Fn(&mut A, Vec<T>) + Send + Sync + 'static,
    D: Fn(A, u64) -> R + Send + Sync + 'static,
{
    fn process(&mut self, batch: Packet) -> Vec<R> {
        let Ok(tagged) = batch.downcast::<Tagged<T>>() else {
            unreachable!("flow wiring: a departition receives tagged events");
        };
        let mut out = Vec::new();
        for t in tagged {
            let (pending, acc) = self
                .windows
                .entry(t.window)
                .or_insert_with(|| ((0..self.partitions).collect(), (self.init)()));
            (self.merge)(acc, t.items);
            if t.done {
                pending.remove(&t.partition);
                if pending.is_empty() {
                    let (_, acc) = self.windows.remove(&t.window).expect("just seen");
                    out.push((self.done)(acc, t.window));
                }
            }
        }
        out
    }
    fn trigger(&mut self, trigger: &Trigger) -> Vec<R> {
        if !trigger.is_done() {
            return Vec::new();
        }
        // Windows some partition never completed come out at the end, in window order.
        std::mem::take(&mut self.windows)
            .into_iter()
            .map(|(window, (_, acc))| (self.done)(acc, window))
            .collect()
    }
}
