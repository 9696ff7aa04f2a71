//! What a supervisor's handle can fail with.

use std::sync::Arc;

use super::ChildId;

/// Why [`SupervisorHandle::start_child`](super::SupervisorHandle::start_child) did not start a
/// child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartChildError {
    /// The supervisor is not running.
    #[error("the supervisor is not running")]
    Closed,
    /// The supervisor is shutting down: it waits for its running children and starts no more.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// The child function panicked when called (GenStage's start function raising).
    #[error("the child panicked while starting: {0}")]
    Panicked(Arc<str>),
}

/// Why [`SupervisorHandle::terminate_child`](super::SupervisorHandle::terminate_child) did not
/// terminate a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TerminateChildError {
    /// The supervisor has no such child (it has ended, or was never started).
    #[error("no child {0}")]
    NotFound(ChildId),
    /// The supervisor is not running.
    #[error("the supervisor is not running")]
    Closed,
}
