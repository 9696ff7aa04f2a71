//! Subscription and producer options, validated once when they are used.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::OptionError;

/// The default `max_demand` of a subscription, as in GenStage.
pub const DEFAULT_MAX_DEMAND: usize = 1000;
/// The default buffer size of a producer, as in GenStage.
pub const DEFAULT_BUFFER_SIZE: usize = 10_000;
/// The largest `max_demand` a subscription may have: 2^30 events (about a billion) in flight
/// on one edge, far beyond what fits in memory for any event type, and small enough that
/// summing the demand of many subscriptions cannot overflow.
pub const MAX_DEMAND_LIMIT: usize = 1 << 30;

/// Identifies one subscription between a consumer and a producer (GenStage's subscription tag).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SubscriptionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// A subscription id made from a number, for testing dispatchers by hand.
    pub fn from_raw(raw: u64) -> Self {
        SubscriptionId(raw)
    }
}

impl fmt::Debug for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub#{}", self.0)
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a consumer does when its producer cancels the subscription or exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CancelMode {
    /// The consumer exits with the producer's reason, whatever it is (GenStage's default).
    #[default]
    Permanent,
    /// The consumer exits only if the reason is abnormal (not `Normal` or `Shutdown`).
    Transient,
    /// The consumer never exits because of this subscription.
    Temporary,
}

impl CancelMode {
    pub(crate) fn exits_on(self, reason: &crate::Reason) -> bool {
        match reason {
            crate::Reason::Rejected(_) => false,
            _ => match self {
                CancelMode::Permanent => true,
                CancelMode::Transient => !reason.is_normal(),
                CancelMode::Temporary => false,
            },
        }
    }
}

/// Whether a consumer asks for events itself or lets the stage do it.
///
/// Returned by the consumer side of `handle_subscribe`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SubscriptionMode {
    /// The stage asks `max_demand` at once and refills when the credit falls to `min_demand`.
    #[default]
    Automatic,
    /// Nothing is asked automatically: the consumer calls [`Context::ask`](crate::Context::ask).
    Manual,
}

/// Options of one subscription: `max_demand`, `min_demand` and the cancel mode.
///
/// Validated when the subscription is made: `max_demand` must be at least 1 and at most
/// [`MAX_DEMAND_LIMIT`], and `min_demand` less than `max_demand`. `min_demand` defaults to `max_demand / 2` (integer division).
///
/// # Examples
///
/// ```
/// use stage::{CancelMode, SubscribeOptions};
///
/// let opts = SubscribeOptions::new().max_demand(10).cancel(CancelMode::Transient);
/// assert_eq!(opts.limits(), Ok((10, 5)));
/// assert!(SubscribeOptions::new().max_demand(0).limits().is_err());
/// ```
#[derive(Clone, Default)]
pub struct SubscribeOptions {
    max_demand: Option<usize>,
    min_demand: Option<usize>,
    cancel: CancelMode,
    partition: Option<usize>,
    selector: Option<AnySelector>,
}

/// Keeps the events of a broadcast for which it returns `true` (GenStage's `selector`).
pub type Selector<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// A selector whose event type is checked when the subscription reaches the producer.
#[derive(Clone)]
struct AnySelector {
    selector: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl fmt::Debug for SubscribeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .field("cancel", &self.cancel)
            .field("partition", &self.partition)
            .field("selector", &self.selector.as_ref().map(|s| s.type_name))
            .finish()
    }
}

impl PartialEq for SubscribeOptions {
    fn eq(&self, other: &Self) -> bool {
        let same_selector = match (&self.selector, &other.selector) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.selector, &b.selector),
            _ => false,
        };
        self.max_demand == other.max_demand
            && self.min_demand == other.min_demand
            && self.cancel == other.cancel
            && self.partition == other.partition
            && same_selector
    }
}

impl Eq for SubscribeOptions {}

impl SubscribeOptions {
    /// The defaults: `max_demand` 1000, `min_demand` 500, permanent.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most events this consumer may have asked for and not yet received.
    pub fn max_demand(mut self, max: usize) -> Self {
        self.max_demand = Some(max);
        self
    }

    /// The credit at which the consumer asks again to refill to `max_demand`.
    pub fn min_demand(mut self, min: usize) -> Self {
        self.min_demand = Some(min);
        self
    }

    /// What the consumer does when this subscription ends.
    pub fn cancel(mut self, mode: CancelMode) -> Self {
        self.cancel = mode;
        self
    }

    /// The partition to receive from, for producers with a partitioning dispatcher.
    pub fn partition(mut self, partition: usize) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Receive only the events `selector` keeps, from a producer with a
    /// [`BroadcastDispatcher`](crate::BroadcastDispatcher). The events filtered out still count
    /// as received: the dispatcher gives their credit back.
    ///
    /// The event type is checked when the subscription reaches the producer: a selector over
    /// another type, or a selector for a dispatcher that does not broadcast, is refused with an
    /// [`OptionError`] naming `selector`.
    pub fn selector<T: 'static>(
        mut self,
        selector: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Self {
        let selector: Selector<T> = Arc::new(selector);
        self.selector = Some(AnySelector {
            selector: Arc::new(selector),
            type_name: std::any::type_name::<T>(),
        });
        self
    }

    /// The selector for events of type `T`, if one was given.
    ///
    /// # Errors
    ///
    /// [`OptionError`] naming `selector` when it was given for another event type.
    pub fn selector_for<T: 'static>(&self) -> Result<Option<Selector<T>>, OptionError> {
        let Some(any) = &self.selector else {
            return Ok(None);
        };
        match any.selector.downcast_ref::<Selector<T>>() {
            Some(selector) => Ok(Some(Arc::clone(selector))),
            None => Err(OptionError::new(
                "selector",
                format!(
                    "must take the producer's events ({})",
                    std::any::type_name::<T>()
                ),
                format_args!("a selector over {}", any.type_name),
            )),
        }
    }

    /// Whether a selector was given.
    pub fn has_selector(&self) -> bool {
        self.selector.is_some()
    }

    /// The cancel mode.
    pub fn cancel_mode(&self) -> CancelMode {
        self.cancel
    }

    /// The partition asked for, if any.
    pub fn partition_index(&self) -> Option<usize> {
        self.partition
    }

    /// `(max_demand, min_demand)` after defaults, or the rule the options break.
    ///
    /// # Errors
    ///
    /// [`OptionError`] naming `max_demand` when it is 0 or above [`MAX_DEMAND_LIMIT`], or
    /// `min_demand` when it is not less than `max_demand`.
    pub fn limits(&self) -> Result<(usize, usize), OptionError> {
        let max = self.max_demand.unwrap_or(DEFAULT_MAX_DEMAND);
        if max == 0 {
            return Err(OptionError::new("max_demand", "must be at least 1", max));
        }
        if max > MAX_DEMAND_LIMIT {
            let rule = format!("must be at most {MAX_DEMAND_LIMIT} (2^30)");
            return Err(OptionError::new("max_demand", rule, max));
        }
        let min = self.min_demand.unwrap_or(max / 2);
        if min >= max {
            return Err(OptionError::new(
                "min_demand",
                format!("must be less than max_demand ({max})"),
                min,
            ));
        }
        Ok((max, min))
    }
}

/// Which events a full producer buffer keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Keep the oldest events: new events that do not fit are dropped.
    First,
    /// Keep the newest events: the oldest are dropped to make room (GenStage's default).
    #[default]
    Last,
}

/// How a producer treats demand (GenStage's `demand: :forward | :accumulate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DemandMode {
    /// Demand is passed to `handle_demand` as it arrives.
    #[default]
    Forward,
    /// Demand and emitted events are logged and replayed when the mode goes back to `Forward`
    /// (useful to subscribe every consumer of a broadcast before anything flows).
    Accumulate,
}

/// The capacity of a producer's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferSize {
    /// At most this many events. `Bounded(0)` means no buffer: events that cannot be
    /// dispatched at once are dropped and counted.
    Bounded(usize),
    /// No limit (the default for producer-consumers).
    Unbounded,
}

impl From<usize> for BufferSize {
    fn from(n: usize) -> Self {
        BufferSize::Bounded(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_genstage() {
        assert_eq!(SubscribeOptions::new().limits(), Ok((1000, 500)));
        assert_eq!(SubscribeOptions::new().max_demand(1).limits(), Ok((1, 0)));
        assert_eq!(SubscribeOptions::new().max_demand(7).limits(), Ok((7, 3)));
    }

    #[test]
    fn invalid_limits_name_the_option() {
        let err = SubscribeOptions::new().max_demand(0).limits().unwrap_err();
        assert_eq!(err.option, "max_demand");
        let err = SubscribeOptions::new()
            .min_demand(2000)
            .limits()
            .unwrap_err();
        assert_eq!(err.option, "min_demand");
        assert!(
            err.to_string().contains("less than max_demand (1000)"),
            "{err}"
        );
        let err = SubscribeOptions::new()
            .max_demand(10)
            .min_demand(10)
            .limits()
            .unwrap_err();
        assert_eq!(err.option, "min_demand");
        let err = SubscribeOptions::new()
            .max_demand(usize::MAX)
            .limits()
            .unwrap_err();
        assert_eq!(err.option, "max_demand");
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(
            SubscribeOptions::new()
                .max_demand(MAX_DEMAND_LIMIT)
                .limits()
                .is_ok()
        );
    }

    #[test]
    fn cancel_modes() {
        use crate::Reason;
        assert!(CancelMode::Permanent.exits_on(&Reason::Normal));
        assert!(!CancelMode::Transient.exits_on(&Reason::Normal));
        assert!(!CancelMode::Transient.exits_on(&Reason::Shutdown));
        assert!(CancelMode::Transient.exits_on(&Reason::error("boom")));
        assert!(!CancelMode::Temporary.exits_on(&Reason::error("boom")));
        assert!(!CancelMode::Permanent.exits_on(&Reason::Rejected("x".into())));
    }
}
