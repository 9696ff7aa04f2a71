//! What a trigger tells `on_trigger`: which partition, which window, which trigger.

/// Passed to `on_trigger` and friends each time a trigger fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The index of the stage (partition) that fired, from 0.
    pub partition: usize,
    /// How many stages the layer has.
    pub partitions: usize,
    /// The window the trigger fired for.
    pub window: Window,
    /// Which trigger fired.
    pub name: TriggerName,
}

/// The window a trigger fired for (Flow's `{type, window_id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Window {
    /// The global window: one per stage, for the whole input.
    Global,
}

impl Window {
    /// A number identifying the window within its stage, in firing order.
    pub fn id(&self) -> u64 {
        match self {
            Window::Global => 0,
        }
    }
}

/// Which trigger fired (Flow's trigger name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TriggerName {
    /// The window is complete: for the global window, every upstream has finished.
    Done,
}

impl Trigger {
    /// Whether this is the window's last trigger.
    pub fn is_done(&self) -> bool {
        self.name == TriggerName::Done
    }
}
