//! The producer trait.

use std::future::Future;

use crate::context::Context;
use crate::error::{Cancel, Reason};
use crate::options::{SubscribeOptions, SubscriptionId};

/// A stage that emits events when its consumers ask for them.
///
/// The one handler that matters is [`handle_demand`](Producer::handle_demand). Events a
/// handler returns or emits ([`Context::emit`]) go to the producer's dispatcher; those no
/// consumer can take yet wait in the producer's bounded buffer.
///
/// A type that implements both `Producer` and [`Consumer`](crate::Consumer) is a
/// *producer-consumer* when started with [`producer_consumer`](crate::producer_consumer): it
/// emits from [`Consumer::handle_events`](crate::Consumer::handle_events) through
/// [`Context::emit`], and this trait's handlers are its producer side (its consumers
/// subscribing and leaving). A producer-consumer pulls from upstream only while its own
/// consumers have unmet demand, so `handle_demand` is never called for it.
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
///
///     async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<u64> {
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

    /// Consumers asked for `demand` more events than the buffer could give them.
    ///
    /// Called once per ask (asks from different consumers are not summed), never with 0, and
    /// not while the producer accumulates demand. Return up to `demand` events; returning
    /// fewer is fine, but the producer must remember the rest: consumers will not ask again
    /// until they have received most of what they asked for. Events beyond the demand are
    /// buffered, and the buffered surplus is subtracted from the next demand.
    ///
    /// The default emits nothing: right for producers fed by messages (which emit from
    /// [`Cast`](crate::Cast) or [`Info`](crate::Info) handlers) and for producer-consumers,
    /// for which it is never called.
    fn handle_demand(
        &mut self,
        demand: usize,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Vec<Self::Out>> + Send {
        let _ = (demand, ctx);
        async { Vec::new() }
    }

    /// A consumer subscribed. The default does nothing.
    fn handle_subscribe(
        &mut self,
        subscription: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<Self>,
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
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (cancel, subscription, ctx);
        async {}
    }

    /// Runs once, when the stage has started (for a producer-consumer, after its initial
    /// subscriptions are made and its consumer side's `handle_start`), before it handles
    /// anything else. The default does nothing.
    fn handle_start(&mut self, ctx: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// The buffer dropped `count` events. Return `false` to silence the default warning.
    fn format_discarded(&mut self, count: usize) -> bool {
        let _ = count;
        true
    }

    /// The stage is stopping with `reason` (not called after a panic). A panic here makes the
    /// exit reason [`Reason::Panic`].
    fn terminate(&mut self, reason: &Reason) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }
}
