//! Why a message or a batch failed, and what should become of it.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a message (or a whole batch) failed, and what the handler would like done with it.
///
/// Handlers return it as their error; any error converts into one with `?` (its message becomes
/// the reason), and so do strings. The [`Action`] says what happens next: by default the
/// stage's retry policy decides, then the dead-letter sink, then a plain rejection
/// (`docs/semantics.md`, *Ingest: failures and outcomes*).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ingest::{Action, Failure};
///
/// fn parse(line: &str) -> Result<u32, Failure> {
///     Ok(line.trim().parse::<u32>()?)
/// }
/// assert_eq!(parse("12"), Ok(12));
/// assert_eq!(parse("x").unwrap_err().reason(), "invalid digit found in string");
///
/// let later = Failure::new("busy").retry_after(Duration::from_secs(1));
/// assert_eq!(later.action(), &Action::Retry { after: Some(Duration::from_secs(1)) });
/// let rejected: Failure = "bookings-closed".into();
/// assert_eq!(rejected.clone().nack(false).action(), &Action::Nack { requeue: false });
/// ```
#[derive(Clone)]
pub struct Failure {
    reason: Arc<str>,
    action: Action,
    panicked: bool,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

/// What a failure asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Whatever the stage does with failures: retry under its retry policy while attempts are
    /// left, then dead-letter if the pipeline has a dead-letter sink, else reject
    /// ([`Outcome::Nack`](crate::Outcome::Nack) without requeue).
    #[default]
    Default,
    /// Try again: in the pipeline, after `after` (or the policy's backoff when `None`), if the
    /// stage has a retry policy with attempts left; otherwise the source is asked to redeliver
    /// ([`Outcome::Retry`](crate::Outcome::Retry)).
    Retry {
        /// How long to wait; `None` means the retry policy's backoff.
        after: Option<Duration>,
    },
    /// Reject, and ask the source to deliver it again (`requeue`) or not.
    Nack {
        /// Whether the source should deliver the message again.
        requeue: bool,
    },
    /// Give up on the message: to the dead-letter sink if there is one, and the source is told
    /// ([`Outcome::DeadLetter`](crate::Outcome::DeadLetter)).
    DeadLetter,
}

impl Failure {
    /// A failure with this reason and the default action.
    pub fn new(reason: impl fmt::Display) -> Self {
        Failure {
            reason: Arc::from(reason.to_string()),
            action: Action::Default,
            panicked: false,
            source: None,
        }
    }

    /// A failure for a panic with this message.
    pub(crate) fn panic(message: &str) -> Self {
        Failure {
            reason: Arc::from(format!("panicked: {message}")),
            action: Action::Default,
            panicked: true,
            source: None,
        }
    }

    /// Asks for a retry after the retry policy's backoff.
    pub fn retry(mut self) -> Self {
        self.action = Action::Retry { after: None };
        self
    }

    /// Asks for a retry after `after`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.action = Action::Retry { after: Some(after) };
        self
    }

    /// Asks for the message to be rejected, redelivered by its source or not.
    pub fn nack(mut self, requeue: bool) -> Self {
        self.action = Action::Nack { requeue };
        self
    }

    /// Asks for the message to be dead-lettered.
    pub fn dead_letter(mut self) -> Self {
        self.action = Action::DeadLetter;
        self
    }

    /// Replaces the action.
    pub fn with_action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    /// Why the message failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The reason, shared.
    pub fn reason_arc(&self) -> Arc<str> {
        Arc::clone(&self.reason)
    }

    /// What the failure asks for.
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// Whether the failure is a caught panic.
    pub fn is_panic(&self) -> bool {
        self.panicked
    }

    /// The error the failure was made from, if it was made from one.
    pub fn source(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E> From<E> for Failure
where
    E: Into<Box<dyn Error + Send + Sync>>,
{
    fn from(error: E) -> Self {
        let error: Box<dyn Error + Send + Sync> = error.into();
        Failure {
            reason: Arc::from(error.to_string()),
            action: Action::Default,
            panicked: false,
            source: Some(Arc::from(error)),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("reason", &self.reason)
            .field("action", &self.action)
            .field("panicked", &self.panicked)
            .finish()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Failures are equal when their reasons, actions and panic flags are (the source error is not
/// compared).
impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason
            && self.action == other.action
            && self.panicked == other.panicked
    }
}
