//! The consumer trait.

use std::any::Any;
use std::future::Future;

use crate::context::Context;
use crate::error::{Cancel, Reason};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};
use crate::packet::Packet;

/// A stage that receives events from one or more producers, asking for them as it goes.
///
/// The one required handler is [`handle_events`](Consumer::handle_events). In automatic mode
/// (the default) the stage asks each producer for `max_demand` events on subscribing, cuts each
/// message it receives into batches of at most `max_demand - min_demand`, and after handling a
/// batch asks for enough to refill to `max_demand` whenever the outstanding credit has fallen
/// to `min_demand`.
///
/// # Examples
///
/// ```
/// use stage::{Consumer, Context, SubscriptionId};
///
/// /// Prints the size of every batch.
/// struct Printer;
///
/// impl Consumer for Printer {
///     type In = u64;
///
///     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
///         println!("got {} events", events.len());
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let numbers = stage::from_iter(1..=100u64).start().unwrap();
/// let printer = stage::consumer(Printer).subscribe_to(&numbers, Default::default()).start().unwrap();
/// // The producer finishes, and its (permanent) consumer stops with it.
/// assert_eq!(printer.join().await, stage::Reason::Normal);
/// # }
/// ```
pub trait Consumer: Send + Sized + 'static {
    /// The events this consumer receives.
    type In: Send + 'static;

    /// A batch of events arrived on `subscription`. Never empty.
    ///
    /// # Back-pressure
    ///
    /// In automatic mode the refill ask for this batch is sent only after this returns (and,
    /// for a producer-consumer, after what it emitted has been dispatched).
    fn handle_events(
        &mut self,
        events: Vec<Self::In>,
        subscription: SubscriptionId,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send;

    /// A batch arrived as one type-erased packet (for consumers of [`Packet`]s, subscribed to
    /// producers seen through [`ProducerRef::erase`](crate::ProducerRef::erase)). Never empty.
    /// The default unwraps it for [`handle_events`](Consumer::handle_events).
    fn handle_packet(
        &mut self,
        packet: Packet,
        subscription: SubscriptionId,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let wrapped: Box<dyn Any + Send> = Box::new(vec![packet]);
            match wrapped.downcast::<Vec<Self::In>>() {
                Ok(events) => self.handle_events(*events, subscription, ctx).await,
                Err(_) => unreachable!("only consumers of packets are sent packets"),
            }
        }
    }

    /// The stage subscribed to a producer. Return [`SubscriptionMode::Manual`] to ask for events
    /// yourself with [`Context::ask`]. The default is automatic.
    fn handle_subscribe(
        &mut self,
        subscription: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        let _ = (subscription, opts, ctx);
        async { SubscriptionMode::Automatic }
    }

    /// A subscription ended. Called before the cancel mode is applied. The default does nothing.
    fn handle_cancel(
        &mut self,
        cancel: Cancel,
        subscription: SubscriptionId,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (cancel, subscription, ctx);
        async {}
    }

    /// Runs once, after the stage's initial subscriptions (those given to `subscribe_to` before
    /// it started) are made and before it handles its first events or messages. The default
    /// does nothing.
    fn handle_start(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// The stage is stopping with `reason` (not called after a panic). A panic here makes the
    /// exit reason [`Reason::Panic`].
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }
}
