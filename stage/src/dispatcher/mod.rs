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

mod demand;

pub use demand::DemandDispatcher;

use crate::error::SubscribeError;
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
}
