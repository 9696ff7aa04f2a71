//! What a trigger tells `on_trigger`: which partition, which window, which trigger.

use std::time::Duration;

/// Passed to `on_trigger` and friends each time a trigger fires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The index of the stage (partition) that fired, from 0.
    pub partition: usize,
    /// How many stages the layer has.
    pub partitions: usize,
    /// The sort of window the trigger fired for.
    pub window_type: WindowType,
    /// The window: 0 for the global window, the window's index (from 0) for count and
    /// periodic windows, the window's start in milliseconds for fixed windows.
    pub window: u64,
    /// Which trigger fired.
    pub name: TriggerName,
}

/// What sort of window a trigger fired for (Flow's window `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WindowType {
    /// The global window.
    Global,
    /// A count window.
    Count,
    /// A periodic (processing-time) window.
    Periodic,
    /// A fixed (event-time) window.
    Fixed,
}

/// Which trigger fired (Flow's trigger name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TriggerName {
    /// The window's last trigger: after it, a count or periodic window starts over from a
    /// fresh accumulator, a fixed window is forgotten, and the global window's stage stops.
    Done,
    /// `n` more events entered the window ([`Window::trigger_every`](crate::Window::trigger_every)).
    Every(usize),
    /// The period of [`Window::trigger_periodically`](crate::Window::trigger_periodically) passed.
    Periodically(Duration),
    /// A custom trigger ([`Window::trigger`](crate::Window::trigger)) fired with this name.
    Custom(String),
    /// A fixed window's watermark passed while it still accepts late events
    /// ([`Window::allowed_lateness`](crate::Window::allowed_lateness)).
    Watermark,
}

impl Trigger {
    /// Whether this is the window's last trigger.
    pub fn is_done(&self) -> bool {
        self.name == TriggerName::Done
    }
}
