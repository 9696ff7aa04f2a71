//! The error a flow returns.

use std::fmt;

use stage::{OptionError, Reason, StartError};

/// Why a flow could not be built or did not finish.
///
/// One pointer wide; [`kind`](Error::kind) tells what happened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<ErrorKind>);

/// What went wrong in a flow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An option breaks its rule.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A stage could not be started.
    #[error("a flow stage could not be started: {0}")]
    Start(#[from] StartError),
    /// A stage of the flow failed (a closure panicked, or a stage it reads from failed).
    #[error("the flow failed: {0}")]
    Failed(Reason),
    /// The operators were combined in a way that cannot run.
    #[error("invalid flow: {0}")]
    Misuse(String),
    /// A blocking finisher was called from inside a tokio runtime.
    #[error("a blocking finisher cannot run inside a tokio runtime: use the async form")]
    BlockingInRuntime,
    /// The flow was stopped with [`FlowHandle::abort`](crate::FlowHandle::abort): its stages
    /// stopped without finishing their work.
    #[error("the flow was aborted")]
    Aborted,
    /// The runtime for a blocking finisher could not be built.
    #[error("could not build a runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Takes the kind out.
    pub fn into_kind(self) -> ErrorKind {
        *self.0
    }

    pub(crate) fn misuse(message: impl fmt::Display) -> Self {
        ErrorKind::Misuse(message.to_string()).into()
    }
}

impl<E: Into<ErrorKind>> From<E> for Error {
    fn from(kind: E) -> Self {
        Error(Box::new(kind.into()))
    }
}
