//! Dispatchers decide which consumer gets which events.
//!
//! A dispatcher is a pure state machine owned by a producer. It keeps the demand of each
//! subscribed consumer, hands out batches of events up to that demand and returns the events it
//! could not place (the leftovers, which go to the producer's buffer). It never sees more than
//! one batch at a time and never sends anything itself: it calls `send` once per consumer per
//! batch.
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
pub use partition::{BoxedHash, PartitionDispatcher};

use crate::error::{OptionError, SubscribeError};
use crate::options::{SubscribeOptions, SubscriptionId};

/// Routes a producer's events to its consumers according to their demand.
///
/// Every method returns the *new upstream demand* where GenStage's dispatchers do: how many
/// more events the producer should produce because of this change.
pub trait Dispatcher<T>: Send + 'static {
    /// A consumer subscribed. Returns the new upstream demand, or refuses the subscription.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Rejected`] when the options do not fit this dispatcher.
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
    ) -> Result<usize, SubscribeError>;

    /// A consumer left. Returns the new upstream demand.
    fn cancel(&mut self, id: SubscriptionId) -> usize;

    /// A consumer asked for `n` more events. Returns the new upstream demand.
    fn ask(&mut self, id: SubscriptionId, n: usize) -> usize;

    /// How many events [`dispatch`](Dispatcher::dispatch) would place now.
    fn demand(&self) -> usize;

    /// Sends as many of `events` as the consumers' demand allows, calling `send` at most once
    /// per consumer, and returns the rest in order.
    fn dispatch(&mut self, events: Vec<T>, send: &mut dyn FnMut(SubscriptionId, Vec<T>)) -> Vec<T>;

    /// The outstanding demand of each consumer, for [`Counters`](crate::Counters).
    fn demands(&self) -> Vec<(SubscriptionId, usize)>;

    /// Sends events the dispatcher holds itself as far as demand now allows. Called after
    /// every ask. The default holds nothing.
    fn flush(&mut self, send: &mut dyn FnMut(SubscriptionId, Vec<T>)) {
        let _ = send;
    }

    /// Upstream demand that arose while dispatching (a broadcast selector giving credit back),
    /// taken once.
    fn take_demand(&mut self) -> usize {
        0
    }

    /// Events the dispatcher holds itself (partition queues), for [`Counters`](crate::Counters).
    fn queued(&self) -> usize {
        0
    }

    /// Events the dispatcher has dropped (by the user's hash, or from a full partition queue).
    fn dropped(&self) -> u64 {
        0
    }

    /// Whether the events in the producer's buffer were already counted in the upstream
    /// demand this dispatcher returned. Then draining them does not reduce what the producer
    /// is asked for next. The default, `false`, suits dispatchers whose buffered events are
    /// surplus produced beyond demand.
    fn buffered_were_requested(&self) -> bool {
        false
    }

    /// An info message is due. Return `true` to hold it until the events the dispatcher holds
    /// now have gone out; [`released`](Dispatcher::released) then gives its `token` back.
    /// Held infos are released in the order they were held. The default holds nothing.
    fn hold(&mut self, token: u64) -> bool {
        let _ = token;
        false
    }

    /// The tokens of held infos that may now be delivered, in order.
    fn released(&mut self) -> Vec<u64> {
        Vec::new()
    }
}

/// Refuses options meant for another dispatcher.
pub(crate) fn refuse_foreign_options(
    opts: &SubscribeOptions,
    dispatcher: &str,
    partition: bool,
    selector: bool,
) -> Result<(), SubscribeError> {
    if !partition {
        if let Some(p) = opts.partition_index() {
            let rule =
                format!("is only for a PartitionDispatcher, this producer has a {dispatcher}");
            return Err(OptionError::new("partition", rule, p).into());
        }
    }
    if !selector && opts.has_selector() {
        let rule = format!("is only for a BroadcastDispatcher, this producer has a {dispatcher}");
        return Err(OptionError::new("selector", rule, "a selector").into());
    }
    Ok(())
}

impl<T: Send + 'static> Dispatcher<T> for Box<dyn Dispatcher<T>> {
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
    ) -> Result<usize, SubscribeError> {
        (**self).subscribe(id, opts)
    }
    fn cancel(&mut self, id: SubscriptionId) -> usize {
        (**self).cancel(id)
    }
    fn ask(&mut self, id: SubscriptionId, n: usize) -> usize {
        (**self).ask(id, n)
    }
    fn demand(&self) -> usize {
        (**self).demand()
    }
    fn dispatch(&mut self, events: Vec<T>, send: &mut dyn FnMut(SubscriptionId, Vec<T>)) -> Vec<T> {
        (**self).dispatch(events, send)
    }
    fn demands(&self) -> Vec<(SubscriptionId, usize)> {
        (**self).demands()
    }
    fn flush(&mut self, send: &mut dyn FnMut(SubscriptionId, Vec<T>)) {
        (**self).flush(send)
    }
    fn take_demand(&mut self) -> usize {
        (**self).take_demand()
    }
    fn queued(&self) -> usize {
        (**self).queued()
    }
    fn dropped(&self) -> u64 {
        (**self).dropped()
    }
    fn hold(&mut self, token: u64) -> bool {
        (**self).hold(token)
    }
    fn buffered_were_requested(&self) -> bool {
        (**self).buffered_were_requested()
    }
    fn released(&mut self) -> Vec<u64> {
        (**self).released()
    }
}
