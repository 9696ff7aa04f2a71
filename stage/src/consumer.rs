//! The consumer trait.

use std::future::Future;

use crate::Reason;
use crate::context::{Cancel, Context, ReplyTo};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};

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
/// use stage::{CancelMode, Consumer, Context, ReplyTo, SubscribeOptions, SubscriptionId};
///
/// /// Adds up what it receives; a call reads the sum.
/// struct Sum(u64);
///
/// impl Consumer for Sum {
///     type In = u64;
///     type Call = ();
///     type Reply = u64;
///     type Msg = ();
///
///     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context) {
///         self.0 += events.iter().sum::<u64>();
///     }
///
///     async fn handle_call(&mut self, _: (), reply: ReplyTo<u64>, _: &mut Context) {
///         reply.send(self.0);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let numbers = stage::from_iter(1..=100u64).start().unwrap();
/// // Transient: the consumer outlives the producer's normal end.
/// let opts = SubscribeOptions::new().max_demand(10).cancel(CancelMode::Transient);
/// let sum = stage::consumer(Sum(0)).subscribe_to(&numbers, opts).start().unwrap();
/// numbers.join().await;
/// assert_eq!(sum.call(()).await, Ok(5050));
/// # }
/// ```
pub trait Consumer: Send + Sized + 'static {
    /// The events this consumer receives.
    type In: Send + 'static;
    /// Requests handled by [`handle_call`](Consumer::handle_call).
    type Call: Send + 'static;
    /// Answers to those requests.
    type Reply: Send + 'static;
    /// Messages handled by [`handle_cast`](Consumer::handle_cast) and
    /// [`handle_info`](Consumer::handle_info).
    type Msg: Send + 'static;

    /// A batch of events arrived on `subscription`. Never empty.
    ///
    /// # Back-pressure
    ///
    /// In automatic mode the refill ask for this batch is sent only after this returns.
    fn handle_events(
        &mut self,
        events: Vec<Self::In>,
        subscription: SubscriptionId,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send;

    /// The stage subscribed to a producer. Return [`SubscriptionMode::Manual`] to ask for events
    /// yourself with [`Context::ask`]. The default is automatic.
    fn handle_subscribe(
        &mut self,
        subscription: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        let _ = (subscription, opts, ctx);
        async { SubscriptionMode::Automatic }
    }

    /// A subscription ended. Called before the cancel mode is applied. The default does nothing.
    fn handle_cancel(
        &mut self,
        cancel: Cancel,
        subscription: SubscriptionId,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send {
        let _ = (cancel, subscription, ctx);
        async {}
    }

    /// A call from a handle. The default drops `reply`, so the caller gets
    /// [`CallError::NoReply`](crate::CallError::NoReply).
    fn handle_call(
        &mut self,
        request: Self::Call,
        reply: ReplyTo<Self::Reply>,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send {
        let _ = (request, reply, ctx);
        tracing::warn!("stage received a call but does not implement handle_call");
        async {}
    }

    /// A cast from a handle. The default ignores it.
    fn handle_cast(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, ctx);
        tracing::warn!("stage received a cast but does not implement handle_cast");
        async {}
    }

    /// An info message from a handle. The default ignores it.
    fn handle_info(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, ctx);
        tracing::warn!("stage received an info message but does not implement handle_info");
        async {}
    }

    /// The stage is stopping with `reason` (not called after a panic).
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }
}
