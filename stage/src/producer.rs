//! The producer trait.

use std::future::Future;

use crate::Reason;
use crate::context::{Cancel, Context, ReplyTo};
use crate::options::{SubscribeOptions, SubscriptionId};

/// A stage that emits events when its consumers ask for them.
///
/// The one required handler is [`handle_demand`](Producer::handle_demand). Events a handler
/// returns or emits go to the producer's dispatcher; those no consumer can take yet wait in the
/// producer's bounded buffer. `Call`, `Reply` and `Msg` type the messages the stage can be sent
/// from outside through its handle (use `()` when it takes none).
///
/// # Examples
///
/// ```
/// use stage::{Context, Producer};
///
/// /// Counts up from `next`, as many numbers as are asked for.
/// struct Counter { next: u64 }
///
/// impl Producer for Counter {
///     type Out = u64;
///     type Call = ();
///     type Reply = ();
///     type Msg = ();
///
///     async fn handle_demand(&mut self, demand: usize, _: &mut Context<u64>) -> Vec<u64> {
///         let start = self.next;
///         self.next += demand as u64;
///         (start..self.next).collect()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
///
/// let counter = stage::producer(Counter { next: 0 }).start().unwrap();
/// let first: Vec<u64> = stage::stream([(&counter, Default::default())]).unwrap().take(3).collect().await;
/// assert_eq!(first, [0, 1, 2]);
/// # }
/// ```
pub trait Producer: Send + Sized + 'static {
    /// The events this producer emits.
    type Out: Send + 'static;
    /// Requests handled by [`handle_call`](Producer::handle_call).
    type Call: Send + 'static;
    /// Answers to those requests.
    type Reply: Send + 'static;
    /// Messages handled by [`handle_cast`](Producer::handle_cast) and
    /// [`handle_info`](Producer::handle_info).
    type Msg: Send + 'static;

    /// Consumers asked for `demand` more events than the buffer could give them.
    ///
    /// Called once per ask (asks are not summed), never with 0, and not while the producer
    /// accumulates demand. Return up to `demand` events; returning fewer is fine, but the
    /// producer must remember the rest: consumers will not ask again until they have received
    /// most of what they asked for. Events beyond the demand are buffered.
    fn handle_demand(
        &mut self,
        demand: usize,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = Vec<Self::Out>> + Send;

    /// A consumer subscribed. The default does nothing.
    fn handle_subscribe(
        &mut self,
        subscription: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (subscription, opts, ctx);
        async {}
    }

    /// A consumer cancelled or exited. The default does nothing: a producer never stops because
    /// a consumer left; call [`Context::stop`] here to do so.
    fn handle_cancel(
        &mut self,
        cancel: Cancel,
        subscription: SubscriptionId,
        ctx: &mut Context<Self::Out>,
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
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (request, reply, ctx);
        tracing::warn!("stage received a call but does not implement handle_call");
        async {}
    }

    /// A cast from a handle. The default ignores it.
    fn handle_cast(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, ctx);
        tracing::warn!("stage received a cast but does not implement handle_cast");
        async {}
    }

    /// An info message from a handle, delivered after the events buffered when it was sent.
    /// The default ignores it.
    fn handle_info(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (msg, ctx);
        tracing::warn!("stage received an info message but does not implement handle_info");
        async {}
    }

    /// The buffer dropped `count` events. Return `false` to silence the default warning.
    fn format_discarded(&mut self, count: usize) -> bool {
        let _ = count;
        true
    }

    /// The stage is stopping with `reason` (not called after a panic).
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }
}
