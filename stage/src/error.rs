//! Exit reasons and the errors returned at the edges of the API.

use std::fmt;
use std::sync::Arc;

/// Why a stage stopped, or why a subscription was cancelled.
///
/// GenStage's exit reasons are arbitrary terms; here they are a small closed set. The
/// [`is_normal`](Reason::is_normal) class (`Normal` and `Shutdown`) decides what a
/// [`CancelMode::Transient`](crate::CancelMode::Transient) subscriber does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The stage finished its work (a finite producer ran out of events, or it was asked to stop).
    Normal,
    /// The stage was shut down from outside.
    Shutdown,
    /// A handler panicked; the message is the panic's payload when it was a string.
    Panic(Arc<str>),
    /// The peer was not running when the subscription was made or used.
    NoProc,
    /// A message named a subscription the receiver does not know.
    UnknownSubscription,
    /// The producer refused the subscription (for example an invalid option for its dispatcher).
    /// A refused subscription never stops the consumer, whatever its cancel mode.
    Rejected(Arc<str>),
    /// Any other reason given by user code.
    Error(Arc<str>),
}

impl Reason {
    /// A user-defined abnormal reason.
    pub fn error(message: impl Into<Arc<str>>) -> Self {
        Reason::Error(message.into())
    }

    /// `Normal` and `Shutdown` are normal: transient subscribers survive them.
    pub fn is_normal(&self) -> bool {
        matches!(self, Reason::Normal | Reason::Shutdown)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("normal"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::Panic(msg) => write!(f, "panicked: {msg}"),
            Reason::NoProc => f.write_str("no such stage (it is not running)"),
            Reason::UnknownSubscription => f.write_str("unknown subscription"),
            Reason::Rejected(msg) => write!(f, "subscription rejected: {msg}"),
            Reason::Error(msg) => f.write_str(msg),
        }
    }
}

/// An option that breaks its rule. The message names the option, the rule and the value given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid option `{option}`: {rule}, got {value}")]
pub struct OptionError {
    /// The option's name, as its builder method spells it (`max_demand`, `buffer_size`, ...).
    pub option: &'static str,
    /// The rule the value breaks.
    pub rule: String,
    /// The value that was given.
    pub value: String,
}

impl OptionError {
    /// An error for `option`, which breaks `rule` with `value`.
    pub fn new(option: &'static str, rule: impl Into<String>, value: impl fmt::Debug) -> Self {
        OptionError {
            option,
            rule: rule.into(),
            value: format!("{value:?}"),
        }
    }
}

/// Why a subscription could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The subscription options are invalid.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The producer is not running.
    #[error("the producer is not running")]
    ProducerClosed,
    /// The consumer is not running.
    #[error("the consumer is not running")]
    ConsumerClosed,
    /// The consumer is shutting down: it takes no new subscriptions, which would keep it from
    /// ever stopping.
    #[error("the consumer is shutting down")]
    ShuttingDown,
    /// The producer's dispatcher refused the subscription.
    #[error("the producer rejected the subscription: {0}")]
    Rejected(Arc<str>),
}

/// Why a call, cast or other request to a stage did not get through.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The stage is not running (it exited before or while handling the request).
    #[error("the stage is not running")]
    Closed,
    /// The stage handled the call but dropped its [`ReplyTo`](crate::ReplyTo) without replying.
    #[error("the stage dropped the call without replying")]
    NoReply,
}

/// Why a stage could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// An option of the stage or of one of its initial subscriptions is invalid.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The producer of an initial subscription refuses its options (for example a partition
    /// its dispatcher does not have).
    #[error("the producer refuses the subscription: {0}")]
    Refused(SubscribeError),
    /// A producer named in `subscribe_to` with a permanent or transient cancel mode is not running.
    #[error("a producer to subscribe to is not running")]
    ProducerClosed,
    /// There is no tokio runtime to run the stage on.
    #[error("stages must be started from within a tokio runtime")]
    NoRuntime,
}

/// How a subscription ended (GenStage's `{:cancel, reason}` and `{:down, reason}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// The other side cancelled the subscription; it may still be running.
    Cancelled(Reason),
    /// The other side exited.
    Down(Reason),
}

impl Cancel {
    /// The reason given.
    pub fn reason(&self) -> &Reason {
        match self {
            Cancel::Cancelled(reason) | Cancel::Down(reason) => reason,
        }
    }

    /// Takes the reason out.
    pub fn into_reason(self) -> Reason {
        match self {
            Cancel::Cancelled(reason) | Cancel::Down(reason) => reason,
        }
    }

    /// Whether the other side exited.
    pub fn is_down(&self) -> bool {
        matches!(self, Cancel::Down(_))
    }
}

impl fmt::Display for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cancel::Cancelled(reason) => write!(f, "cancelled: {reason}"),
            Cancel::Down(reason) => write!(f, "down: {reason}"),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Arc::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Arc::from(s.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}
