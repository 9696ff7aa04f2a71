//! What a supervisor tells about its children: counts while it runs, each failure as it
//! happens, and a final report once it has exited.

use std::fmt;
use std::sync::Arc;

use super::ChildId;
use crate::error::Reason;

/// A snapshot of a supervisor's children, from
/// [`SupervisorHandle::count_children`](super::SupervisorHandle::count_children) while it runs
/// and in its [`SupervisorReport`] once it has exited (GenStage's `count_children`, plus
/// counters since the start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Children {
    /// Children whose task is running.
    pub active: usize,
    /// Children waiting to be started again after a failed restart. They keep their demand slot.
    pub restarting: usize,
    /// Children started, from events or
    /// [`SupervisorHandle::start_child`](super::SupervisorHandle::start_child) (restarts not
    /// counted).
    pub started: u64,
    /// Child runs that returned `Ok`.
    pub completed: u64,
    /// Child runs that returned `Err` or panicked, and child functions that panicked when called.
    pub failed: u64,
    /// Children started again after a failure.
    pub restarted: u64,
    /// Children aborted because the supervisor stopped before they ended: still running (or
    /// waiting to restart) when its [`shutdown`](super::ConsumerSupervisor::shutdown) grace ran
    /// out, or when the supervisor itself panicked. Children ended with
    /// [`terminate_child`](super::SupervisorHandle::terminate_child) are not counted.
    pub cancelled: u64,
}

/// How a supervisor ended, from
/// [`SupervisorHandle::join_report`](super::SupervisorHandle::join_report).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorReport {
    /// Why it stopped: the reason of the producer whose end stopped it, [`Reason::Shutdown`]
    /// after [`SupervisorHandle::shutdown`](super::SupervisorHandle::shutdown), the reason
    /// given to [`stop`](super::SupervisorHandle::stop), and so on.
    pub reason: Reason,
    /// Its children's counters at the end. None is left running: `active` and `restarting`
    /// are 0, and children it had to abort are counted in `cancelled`.
    pub children: Children,
}

/// A child that did not succeed, passed to the
/// [`on_failure`](super::ConsumerSupervisor::on_failure) callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildFailure {
    /// The child. A restarted child keeps its id, so a child that fails again is reported
    /// again under the same id.
    pub child: ChildId,
    /// What went wrong.
    pub error: ChildError,
    /// Whether the supervisor is starting the child again ([`Restart::Transient`], within the
    /// restart intensity).
    ///
    /// [`Restart::Transient`]: super::Restart::Transient
    pub restarting: bool,
}

/// Why a child did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The child's future returned this error (its `Display` text).
    #[error("{0}")]
    Err(Arc<str>),
    /// The child panicked, in its future or when the child function was called (the panic's
    /// message when it was a string).
    #[error("panicked: {0}")]
    Panic(Arc<str>),
    /// The child was still running when the supervisor's shutdown grace ran out, and was
    /// aborted.
    #[error("cancelled at the end of the shutdown grace")]
    Cancelled,
}

/// The failure callback, boxed.
pub(super) struct OnFailure(pub(super) Box<dyn FnMut(ChildFailure) + Send>);

impl fmt::Debug for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnFailure")
    }
}
