//! The producer-consumer trait.

use std::future::Future;

use crate::Reason;
use crate::context::{Cancel, Context, Peer, ReplyTo};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};

/// A stage in the middle: it consumes events from upstream and emits events downstream.
///
/// It pulls from upstream only while its own consumers have unmet demand (GenStage §2.7):
/// messages from upstream wait in its inbox, unprocessed and unasked-for, while downstream asks
/// for nothing. Its buffer is unbounded by default, since it only ever holds what one upstream
/// batch turned into.
///
/// # Examples
///
/// ```
/// use stage::{Context, ProducerConsumer, SubscriptionId};
///
/// /// Doubles every number.
/// struct Doubler;
///
/// impl ProducerConsumer for Doubler {
///     type In = u64;
///     type Out = u64;
///     type Call = ();
///     type Reply = ();
///     type Msg = ();
///
///     async fn handle_events(
///         &mut self,
///         events: Vec<u64>,
///         _: SubscriptionId,
///         _: &mut Context<u64>,
///     ) -> Vec<u64> {
///         events.into_iter().map(|x| x * 2).collect()
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures::StreamExt;
/// use stage::SubscribeOptions;
///
/// let numbers = stage::from_iter(1..=3u64).start().unwrap();
/// let doubler = stage::producer_consumer(Doubler)
///     .subscribe_to(&numbers, SubscribeOptions::new())
///     .start()
///     .unwrap();
/// let got: Vec<u64> = stage::stream([(&doubler, SubscribeOptions::new())]).unwrap().collect().await;
/// assert_eq!(got, [2, 4, 6]);
/// # }
/// ```
pub trait ProducerConsumer: Send + Sized + 'static {
    /// The events this stage receives.
    type In: Send + 'static;
    /// The events this stage emits.
    type Out: Send + 'static;
    /// Requests handled by [`handle_call`](ProducerConsumer::handle_call).
    type Call: Send + 'static;
    /// Answers to those requests.
    type Reply: Send + 'static;
    /// Messages handled by [`handle_cast`](ProducerConsumer::handle_cast) and
    /// [`handle_info`](ProducerConsumer::handle_info).
    type Msg: Send + 'static;

    /// A batch of events arrived on `subscription`; return the events to emit (any number).
    ///
    /// # Back-pressure
    ///
    /// The refill ask for this batch goes upstream after this returns and its output has been
    /// dispatched.
    fn handle_events(
        &mut self,
        events: Vec<Self::In>,
        subscription: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = Vec<Self::Out>> + Send;

    /// A subscription was made, to a producer (`peer` is [`Peer::Producer`]; the mode returned
    /// applies) or from a consumer (the mode is ignored). The default is automatic.
    fn handle_subscribe(
        &mut self,
        peer: Peer,
        subscription: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        let _ = (peer, subscription, opts, ctx);
        async { SubscriptionMode::Automatic }
    }

    /// A subscription ended, on either side. The default does nothing.
    fn handle_cancel(
        &mut self,
        peer: Peer,
        cancel: Cancel,
        subscription: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (peer, cancel, subscription, ctx);
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

    /// An info message from a handle, delivered in order with the events queued before it.
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
