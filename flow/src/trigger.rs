//! What a trigger tells `on_trigger`: which partition, which window, which trigger.

/// Passed to `on_trigger` and friends each time a trigger fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The index of the stage (partition) that fired, from 0.
    pub partition: usize,
    /// How many stages the layer has.
    pub partitions: usize,
    /// The kind of window the trigger fired for.
    pub kind: WindowKind,
    /// The window's id within its stage (0 for the global window).
    pub window: u64,
    /// Which trigger fired.
    pub name: TriggerName,
}

/// The kind of a window (Flow's window `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WindowKind {
    /// The global window: one per stage, for the whole input.
    Global,
}

/// Which trigger fired (Flow's trigger name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TriggerName {
    /// The window is complete: for the global window, every upstream has finished. The
    /// window's last trigger.
    Done,
    /// `n` more events entered the stage ([`Window::trigger_every`](crate::Window::trigger_every)).
    Every(usize),
}

impl Trigger {
    /// Whether this is the window's last trigger.
    pub fn is_done(&self) -> bool {
        self.name == TriggerName::Done
    }
}
