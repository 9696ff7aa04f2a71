//! Windows and their triggers, as values.

/// How a layer's reducer splits its input over time, and when it emits (Flow's `Window`).
///
/// For now the global window (the whole input is one window, which emits when its inputs are
/// done), with an optional count trigger.
///
/// # Examples
///
/// ```
/// use flow::{Flow, TriggerName, Window};
///
/// // A running total every 10 events, then the final one.
/// let totals = Flow::from_iter(1..=30)
///     .stages(1)
///     .window(Window::global().trigger_every(10))
///     .reduce(|| 0, |sum, x| *sum += x)
///     .on_trigger(|sum, trigger| match trigger.name {
///         TriggerName::Done => vec![("done", *sum)],
///         _ => vec![("every", *sum)],
///     })
///     .collect_blocking()
///     .unwrap();
/// assert_eq!(totals, [("every", 55), ("every", 210), ("every", 465), ("done", 465)]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub(crate) every: Option<usize>,
}

impl Window {
    /// The global window: the whole input of a stage.
    pub fn global() -> Self {
        Window::default()
    }

    /// Fires a [`TriggerName::Every`](crate::TriggerName::Every) trigger each time `n` more
    /// events have entered a stage (counted before the layer's mappers, per stage; batches are
    /// split so that it fires right after the `n`-th). `n` must be at least 1 (checked when
    /// the flow starts).
    pub fn trigger_every(mut self, n: usize) -> Self {
        self.every = Some(n);
        self
    }
}
