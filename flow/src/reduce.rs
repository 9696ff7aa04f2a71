//! What a reduced layer emits: `Reduced` and its `emit_*` / `on_trigger`.

use std::fmt;
use std::sync::Arc;

use crate::error::Error;
use crate::flow::{Flow, Layered};
use crate::logic::Reduce;
use crate::plan::Op;
use crate::trigger::Trigger;

/// A layer whose events are being folded into an accumulator, waiting to be told what to emit.
///
/// Made by [`Flow::reduce`], [`Flow::group_by`] and [`Flow::group_by_key`]. It has no mappers
/// and no second reduce, so those mistakes do not compile; choose what each trigger emits with
/// [`on_trigger`](Reduced::on_trigger) or an `emit_*` method to get a [`Flow`] back.
#[must_use = "flows do nothing unless run"]
pub struct Reduced<T, A, F> {
    layer: Result<Layered<T>, Error>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    reduce_op: F,
}

impl<T, A, F> fmt::Debug for Reduced<T, A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reduced").finish_non_exhaustive()
    }
}

impl<T, A, F> Reduced<T, A, F>
where
    T: Send + 'static,
    A: Send + 'static,
    F: Fn(&mut A, T) + Send + Sync + 'static,
{
    pub(crate) fn new(
        layer: Result<Layered<T>, Error>,
        init: Arc<dyn Fn() -> A + Send + Sync>,
        reduce_op: F,
    ) -> Self {
        Reduced {
            layer,
            init,
            reduce_op,
        }
    }

    /// Decides what each trigger emits: `on_trigger` gets the accumulator (change it to carry
    /// on from something else, e.g. `std::mem::take` to restart from empty) and the
    /// [`Trigger`], and returns the events to emit.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::Flow;
    ///
    /// let got = Flow::from_iter(1..=4)
    ///     .stages(2)
    ///     .reduce(|| 0, |sum, x| *sum += x)
    ///     .on_trigger(|sum, trigger| vec![(trigger.partition, *sum)])
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(got.iter().map(|(_, s)| s).sum::<i32>(), 10);
    /// ```
    pub fn on_trigger<E, G>(self, on_trigger: G) -> Flow<E>
    where
        E: Send + 'static,
        G: Fn(&mut A, &Trigger) -> Vec<E> + Send + Sync + 'static,
    {
        self.on_trigger_as(Op::OnTrigger, on_trigger)
    }

    fn on_trigger_as<E, G>(self, op: Op, on_trigger: G) -> Flow<E>
    where
        E: Send + 'static,
        G: Fn(&mut A, &Trigger) -> Vec<E> + Send + Sync + 'static,
    {
        let mut layered = match self.layer {
            Ok(layered) if layered.layer.reduced => {
                return Flow::failed(Error::misuse(
                    "cannot reduce a flow again in the same layer after a reduce (partition or departition first)",
                ));
            }
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        let reduce_op = self.reduce_op;
        let fold = Arc::new(move |acc: &mut A, e: T, _: &mut Vec<E>| reduce_op(acc, e));
        let logic = Reduce::factory(
            Arc::clone(&layered.layer.logic),
            self.init,
            fold,
            Arc::new(on_trigger),
        );
        layered
            .plan
            .node_mut(layered.layer.node)
            .ops
            .push(Op::Reduce);
        layered.with_logic(op, logic, true).into_flow()
    }

    /// Each trigger emits the accumulator's items (Flow's default, `emit(:events)`); the
    /// accumulator carries on (cloned), except at `Done`, where it is moved out.
    ///
    /// # Examples
    ///
    /// ```
    /// let letters = flow::Flow::from_iter(["ab", "ba"])
    ///     .stages(1)
    ///     .reduce(std::collections::BTreeSet::new, |set, w: &str| set.extend(w.chars()))
    ///     .emit_events()
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(letters, ['a', 'b']);
    /// ```
    pub fn emit_events(self) -> Flow<A::Item>
    where
        A: IntoIterator + Clone + Default,
        A::Item: Send + 'static,
    {
        self.on_trigger_as(Op::EmitEvents, move |acc: &mut A, trigger: &Trigger| {
            if trigger.is_done() {
                std::mem::take(acc).into_iter().collect()
            } else {
                acc.clone().into_iter().collect()
            }
        })
    }

    /// Each trigger emits the accumulator itself (`emit(:state)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let state = flow::Flow::from_iter(1..=3).stages(1).reduce(Vec::new, |v, x| v.push(x)).emit_state();
    /// assert_eq!(state.collect_blocking().unwrap(), [vec![1, 2, 3]]);
    /// ```
    pub fn emit_state(self) -> Flow<A>
    where
        A: Clone + Default,
    {
        self.on_trigger_as(Op::EmitState, move |acc: &mut A, trigger: &Trigger| {
            if trigger.is_done() {
                vec![std::mem::take(acc)]
            } else {
                vec![acc.clone()]
            }
        })
    }

    /// Triggers emit nothing (`emit(:nothing)`): the reduce is for its side effects.
    ///
    /// # Examples
    ///
    /// ```
    /// let got = flow::Flow::from_iter(1..=3).reduce(|| 0, |s, x| *s += x).emit_nothing();
    /// assert!(got.collect_blocking().unwrap().is_empty());
    /// ```
    pub fn emit_nothing(self) -> Flow<A> {
        self.on_trigger_as(Op::EmitNothing, |_: &mut A, _: &Trigger| Vec::new())
    }
}

impl<T: Send + 'static> Flow<T> {
    /// Like [`reduce`](Flow::reduce), but `reduce_op` may also emit events at once (pushing
    /// them to its third argument). At each trigger the accumulator's items are emitted too,
    /// unless [`on_trigger`](EmitReduced::on_trigger) says otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let got = flow::Flow::from_iter(1..=3)
    ///     .stages(1)
    ///     .emit_and_reduce(Vec::new, |seen: &mut Vec<i32>, x, out: &mut Vec<i32>| {
    ///         out.push(x * 10);
    ///         seen.insert(0, x);
    ///     })
    ///     .emit_events()
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(got, [10, 20, 30, 3, 2, 1]);
    /// ```
    pub fn emit_and_reduce<A, E, I, F>(self, init: I, reduce_op: F) -> EmitReduced<T, A, E, F>
    where
        A: Send + 'static,
        E: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        F: Fn(&mut A, T, &mut Vec<E>) + Send + Sync + 'static,
    {
        EmitReduced {
            layer: self.into_layered(),
            init: Arc::new(init),
            reduce_op,
            _out: std::marker::PhantomData,
        }
    }
}

/// A layer that reduces and emits as it goes. Made by [`Flow::emit_and_reduce`].
#[must_use = "flows do nothing unless run"]
pub struct EmitReduced<T, A, E, F> {
    layer: Result<Layered<T>, Error>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    reduce_op: F,
    _out: std::marker::PhantomData<fn() -> E>,
}

impl<T, A, E, F> fmt::Debug for EmitReduced<T, A, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmitReduced").finish_non_exhaustive()
    }
}

impl<T, A, E, F> EmitReduced<T, A, E, F>
where
    T: Send + 'static,
    A: Send + 'static,
    E: Send + 'static,
    F: Fn(&mut A, T, &mut Vec<E>) + Send + Sync + 'static,
{
    /// What each trigger emits, as for [`Reduced::on_trigger`].
    pub fn on_trigger<G>(self, on_trigger: G) -> Flow<E>
    where
        G: Fn(&mut A, &Trigger) -> Vec<E> + Send + Sync + 'static,
    {
        self.on_trigger_as(Op::OnTrigger, on_trigger)
    }

    fn on_trigger_as<G>(self, op: Op, on_trigger: G) -> Flow<E>
    where
        G: Fn(&mut A, &Trigger) -> Vec<E> + Send + Sync + 'static,
    {
        let mut layered = match self.layer {
            Ok(layered) if layered.layer.reduced => {
                return Flow::failed(Error::misuse(
                    "cannot reduce a flow again in the same layer after a reduce",
                ));
            }
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        let logic = Reduce::factory(
            Arc::clone(&layered.layer.logic),
            self.init,
            Arc::new(self.reduce_op),
            Arc::new(on_trigger),
        );
        layered
            .plan
            .node_mut(layered.layer.node)
            .ops
            .push(Op::EmitAndReduce);
        layered.with_logic(op, logic, true).into_flow()
    }

    /// Triggers emit the accumulator's items too (the default).
    pub fn emit_events(self) -> Flow<E>
    where
        A: IntoIterator<Item = E> + Clone + Default,
    {
        self.on_trigger_as(Op::EmitEvents, move |acc: &mut A, trigger: &Trigger| {
            if trigger.is_done() {
                std::mem::take(acc).into_iter().collect()
            } else {
                acc.clone().into_iter().collect()
            }
        })
    }

    /// Triggers emit nothing: only what `reduce_op` emits goes out.
    pub fn emit_nothing(self) -> Flow<E> {
        self.on_trigger_as(Op::EmitNothing, |_: &mut A, _: &Trigger| Vec::new())
    }
}
