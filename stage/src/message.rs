//! Messages a stage takes from outside, one trait per message type.
//!
//! A stage that takes no messages implements none of these, and its handle offers no `call`,
//! `cast` or `info`: sending it one does not compile. A stage that takes several kinds of
//! request implements [`Call`] once per request type, each with its own reply type, so a reply
//! never has to be matched against the answers to other requests.

use std::future::Future;

use crate::context::{Context, ReplyTo};

/// A stage that answers requests of type `M` (GenStage's `handle_call`), through
/// [`StageHandle::call`](crate::StageHandle::call).
///
/// # Examples
///
/// ```
/// use stage::{Call, Consumer, Context, ReplyTo, SubscriptionId};
///
/// /// Counts what it receives.
/// #[derive(Default)]
/// struct Counter(usize);
///
/// /// Asks a [`Counter`] how many events it has seen.
/// struct HowMany;
///
/// impl Consumer for Counter {
///     type In = u64;
///
///     async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
///         self.0 += events.len();
///     }
/// }
///
/// impl Call<HowMany> for Counter {
///     type Reply = usize;
///
///     async fn handle_call(&mut self, _: HowMany, reply: ReplyTo<usize>, _: &mut Context<Self>) {
///         reply.send(self.0);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let counter = stage::consumer(Counter::default()).start().unwrap();
/// assert_eq!(counter.call(HowMany).await, Ok(0));
/// # }
/// ```
pub trait Call<M>: Sized + Send + 'static {
    /// The answer to an `M`.
    type Reply: Send + 'static;

    /// Handles the request. Reply with [`ReplyTo::send`] now, with [`Context::reply`] once the
    /// events this handler emits are dispatched, or later from another handler (keep the
    /// [`ReplyTo`]). Dropping it without replying fails the call with
    /// [`CallError::NoReply`](crate::CallError::NoReply).
    fn handle_call(
        &mut self,
        request: M,
        reply: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send;
}

/// A stage that takes messages of type `M` without answering (GenStage's `handle_cast`),
/// through [`StageHandle::cast`](crate::StageHandle::cast). They are handled in the order
/// they arrive, at once.
pub trait Cast<M>: Sized + Send + 'static {
    /// Handles the message.
    fn handle_cast(&mut self, msg: M, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send;
}

/// A stage that takes info messages of type `M` (GenStage's `handle_info`): from its timers
/// ([`Context::send_after`]), which run as soon as they fire, and from
/// [`StageHandle::info`](crate::StageHandle::info), which a stage with a producer side runs
/// only once the events it held when the message arrived have been dispatched (GenStage's
/// `async_info`).
pub trait Info<M>: Sized + Send + 'static {
    /// Handles the message.
    fn handle_info(&mut self, msg: M, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send;
}
