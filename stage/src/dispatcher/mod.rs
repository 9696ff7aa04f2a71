//! Dispatchers decide which consumer gets which events.
//!
//! A dispatcher is a pure state machine owned by a producer. It keeps the demand of each
//! subscribed consumer, hands out batches of events up to that demand and returns the events it
//! could not place (the leftovers, which go to the producer's buffer). It never sends anything
//! itself: every method writes what should happen into an [`Outbox`] (batches for consumers,
//! new upstream demand, infos it no longer holds back), which the producer then carries out.
//!
//! | dispatcher | who gets an event | upstream demand |
//! |---|---|---|
//! | [`DemandDispatcher`] (default) | the consumer with the most outstanding demand | the sum of the asks |
//! | [`BroadcastDispatcher`] | every consumer (that its selector keeps) | the least any consumer asked |
//! | [`PartitionDispatcher`] | the consumer of the event's partition | the sum of the asks |

mod broadcast;
mod demand;
mod partition;

pub use broadcast::BroadcastDispatcher;
pub use demand::DemandDispatcher;
pub use partition::{BoxedHash, MAX_PARTITIONS, PartitionDispatcher};

use std::fmt;

use crate::error::{OptionError, SubscribeError};
use crate::options::{SubscribeOptions, SubscriptionId};

/// Routes a producer's events to its consumers according to their demand.
///
/// Every method is required, so a wrapper around a dispatcher (one that checks or counts what
/// it sends, say) cannot silently lose a behaviour by forgetting to forward a default method.
/// Effects go into the [`Outbox`]; a dispatcher never calls out.
pub trait Dispatcher<T>: Send + 'static {
    /// The options this dispatcher accepts whatever its state, checked before a subscription is
    /// even sent (so that [`Builder::start`](crate::ProducerBuilder::start) can refuse bad
    /// options at once).
    fn contract(&self) -> Contract;

    /// A consumer subscribed. Refuses options that do not fit this dispatcher (its
    /// [`contract`](Dispatcher::contract), and whatever depends on its state, such as a
    /// partition already taken).
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Option`] or [`SubscribeError::Rejected`] when the options do not fit.
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<T>,
    ) -> Result<(), SubscribeError>;

    /// A consumer asked for `n` more events: record it, send what the dispatcher holds for it,
    /// and add the new upstream demand to `out`.
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<T>);

    /// A consumer left (or is gone). `returned` are events it had received and never handled.
    /// Returns the events to put back at the front of the producer's buffer, to go to the
    /// other consumers; the dispatcher may instead keep them (a partition's queue) or discard
    /// them (a broadcast: every other consumer has its copy), counting them in
    /// [`DispatcherState::dropped`].
    ///
    /// Called with an unknown `id` too: a consumer may be forgotten after a failed send and
    /// still return events with its exit.
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, out: &mut Outbox<T>) -> Vec<T>;

    /// Sends as many of `events` as the consumers' demand allows (at most one batch per
    /// consumer) and returns the rest, in order.
    fn dispatch(&mut self, events: Vec<T>, out: &mut Outbox<T>) -> Vec<T>;

    /// How many events [`dispatch`](Dispatcher::dispatch) would take now.
    fn capacity(&self) -> usize;

    /// An info message is due. Return `true` to hold it until the events the dispatcher holds
    /// now have gone out, then [`Outbox::release`] its `token`. Held infos are released in
    /// the order they were held.
    fn hold(&mut self, token: u64) -> bool;

    /// What the dispatcher holds and has done, for [`Counters`](crate::Counters).
    fn state(&self) -> DispatcherState;
}

/// What a dispatcher wants its producer to do, collected while it runs.
///
/// The producer carries it out after each call, and keeps the one outbox (and its allocation)
/// for the whole life of the stage.
pub struct Outbox<T> {
    sends: Vec<(SubscriptionId, Vec<T>)>,
    demand: usize,
    released: Vec<u64>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            sends: Vec::new(),
            demand: 0,
            released: Vec::new(),
        }
    }
}

impl<T> fmt::Debug for Outbox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sends: Vec<_> = self.sends.iter().map(|(id, e)| (*id, e.len())).collect();
        f.debug_struct("Outbox")
            .field("sends", &sends)
            .field("demand", &self.demand)
            .field("released", &self.released)
            .finish()
    }
}

impl<T> Outbox<T> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `events` to consumer `to` (nothing if `events` is empty).
    pub fn send(&mut self, to: SubscriptionId, events: Vec<T>) {
        if !events.is_empty() {
            self.sends.push((to, events));
        }
    }

    /// Asks the producer for `n` more events.
    pub fn demand(&mut self, n: usize) {
        self.demand = self.demand.saturating_add(n);
    }

    /// Lets a held info (see [`Dispatcher::hold`]) be delivered.
    pub fn release(&mut self, token: u64) {
        self.released.push(token);
    }

    /// The batches to send so far, in order.
    pub fn sends(&self) -> &[(SubscriptionId, Vec<T>)] {
        &self.sends
    }

    /// The batches to send, in order, emptying them from the outbox.
    pub fn take_sends(&mut self) -> Vec<(SubscriptionId, Vec<T>)> {
        std::mem::take(&mut self.sends)
    }

    /// The batches to send, drained in place (the outbox keeps its allocation).
    pub fn drain_sends(&mut self) -> std::vec::Drain<'_, (SubscriptionId, Vec<T>)> {
        self.sends.drain(..)
    }

    /// The upstream demand collected, resetting it.
    pub fn take_demand(&mut self) -> usize {
        std::mem::take(&mut self.demand)
    }

    /// The released info tokens, in order, emptying them from the outbox.
    pub fn take_released(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.released)
    }

    pub(crate) fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    /// Whether upstream demand waits to be taken.
    pub(crate) fn has_demand(&self) -> bool {
        self.demand > 0
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.demand == 0 && self.released.is_empty()
    }
}

/// A snapshot of a dispatcher, from [`Dispatcher::state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatcherState {
    /// Each consumer's outstanding demand.
    pub consumers: Vec<(SubscriptionId, usize)>,
    /// Events the dispatcher holds itself (partition queues).
    pub queued: usize,
    /// Of `queued`, the events held for consumers that have left (a partition whose consumer
    /// is gone): they go out only if a new consumer takes its place. (A partition that never
    /// had a consumer is waiting for its first, not stranded.)
    pub stranded: usize,
    /// Events the dispatcher dropped (by its hash, from a full queue, or copies a leaving
    /// broadcast consumer never handled).
    pub dropped: u64,
}

impl DispatcherState {
    /// A state with these consumers and nothing queued or dropped.
    pub fn with_consumers(consumers: Vec<(SubscriptionId, usize)>) -> Self {
        DispatcherState {
            consumers,
            ..DispatcherState::default()
        }
    }
}

/// The options a dispatcher accepts, whatever its state: checked when a subscription is made,
/// before it reaches the producer, so bad options fail fast with an error that names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Contract {
    /// Plain subscriptions only: no `partition`, no `selector` (the demand dispatcher).
    Plain {
        /// The dispatcher's name, for error messages.
        dispatcher: &'static str,
    },
    /// Subscriptions may have a `selector` (the broadcast dispatcher), no `partition`.
    Selectors {
        /// The dispatcher's name, for error messages.
        dispatcher: &'static str,
    },
    /// Every subscription names one of `partitions` partitions, no `selector`.
    Partitions {
        /// The dispatcher's name, for error messages.
        dispatcher: &'static str,
        /// How many partitions there are.
        partitions: usize,
    },
    /// Anything: the dispatcher checks options itself when the subscription arrives.
    Any,
}

impl Contract {
    /// Checks `opts` for a producer of `T`s.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Option`] naming `partition` or `selector`.
    ///
    /// # Examples
    ///
    /// ```
    /// use stage::{Contract, SubscribeOptions};
    ///
    /// let c = Contract::Partitions { dispatcher: "PartitionDispatcher", partitions: 2 };
    /// assert!(c.check::<u32>(&SubscribeOptions::new().partition(1)).is_ok());
    /// assert!(c.check::<u32>(&SubscribeOptions::new().partition(2)).is_err());
    /// assert!(c.check::<u32>(&SubscribeOptions::new()).is_err());
    /// ```
    pub fn check<T: 'static>(&self, opts: &SubscribeOptions) -> Result<(), SubscribeError> {
        let (dispatcher, partitions, selectors) = match *self {
            Contract::Any => return Ok(()),
            Contract::Plain { dispatcher } => (dispatcher, None, false),
            Contract::Selectors { dispatcher } => (dispatcher, None, true),
            Contract::Partitions {
                dispatcher,
                partitions,
            } => (dispatcher, Some(partitions), false),
        };
        match (partitions, opts.partition_index()) {
            (None, Some(p)) => {
                let rule =
                    format!("is only for a PartitionDispatcher, this producer has a {dispatcher}");
                return Err(OptionError::new("partition", rule, p).into());
            }
            (Some(count), None) => {
                let rule = format!("is required by a {dispatcher} (one of 0..{count})");
                return Err(OptionError::new("partition", rule, "none").into());
            }
            (Some(count), Some(p)) if p >= count => {
                let rule = format!("must be one of 0..{count}");
                return Err(OptionError::new("partition", rule, p).into());
            }
            _ => {}
        }
        if opts.has_selector() {
            if !selectors {
                let rule =
                    format!("is only for a BroadcastDispatcher, this producer has a {dispatcher}");
                return Err(OptionError::new("selector", rule, "a selector").into());
            }
            opts.selector_for::<T>()?;
        }
        Ok(())
    }
}

impl<T: Send + 'static> Dispatcher<T> for Box<dyn Dispatcher<T>> {
    fn contract(&self) -> Contract {
        (**self).contract()
    }
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<T>,
    ) -> Result<(), SubscribeError> {
        (**self).subscribe(id, opts, out)
    }
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<T>) {
        (**self).ask(id, n, out)
    }
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        (**self).cancel(id, returned, out)
    }
    fn dispatch(&mut self, events: Vec<T>, out: &mut Outbox<T>) -> Vec<T> {
        (**self).dispatch(events, out)
    }
    fn capacity(&self) -> usize {
        (**self).capacity()
    }
    fn hold(&mut self, token: u64) -> bool {
        (**self).hold(token)
    }
    fn state(&self) -> DispatcherState {
        (**self).state()
    }
}
